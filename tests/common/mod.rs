//! What the integration tests share: a log sink to assert on, and the
//! runtime the tests with servers and clients run on.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, OnceLock};

/// A `tracing-subscriber` writer that keeps everything written to it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// How many bytes were written so far: a mark for `since`.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// What was written after `mark` (a `len` taken earlier), as text.
    pub fn since(&self, mark: usize) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()[mark..]).into_owned()
    }
}

/// The log of the test binary's one global subscriber, which `subscriber`
/// builds around the writer it is given; installed by the first call, and
/// the same log for every later one. Work on other threads (a runtime's
/// workers, a server's) logs to it, which a thread's default subscriber
/// would not see.
pub fn global_log<S>(subscriber: impl FnOnce(Captured) -> S) -> &'static Captured
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        tracing::subscriber::set_global_default(subscriber(log.clone()))
            .expect("the one global subscriber of this test binary");
        log
    })
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `f` logs through `tracing` on this thread, as text.
///
/// tracing caches each callsite's interest process-wide, computed by the first
/// thread to reach it: a sibling test reaching a warning with no subscriber
/// can pin it to "never". Running `f` once, rebuilding the cache (now that
/// every callsite is registered), and capturing a second run avoids that.
pub fn logged(mut f: impl FnMut()) -> String {
    let buf = Captured::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        f();
        tracing::callsite::rebuild_interest_cache();
    });
    let buf = Captured::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, &mut f);
    buf.text()
}

/// A multi-thread runtime of two workers, with IO and timers: what tests
/// that run a server and its clients, or tasks across threads, need.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
