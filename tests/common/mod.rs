//! What the integration tests share: a log sink to assert on.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

/// A `tracing-subscriber` writer that keeps everything written to it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
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
