//! Channels that carry the sender's context.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use contextvars::channel::{Envelope, mpsc};
use contextvars::{Context, ContextVar};

static REQUEST: ContextVar<u64> = ContextVar::new("chan_request");

#[test]
fn std_channel_messages_are_handled_in_their_senders_contexts_across_threads() {
    let (tx, rx) = mpsc::channel::<u32>();
    let producers: Vec<_> = (1..=3)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                REQUEST.set(p);
                tx.send(p as u32).unwrap();
                REQUEST.set(p + 100); // later changes do not travel
            })
        })
        .collect();
    drop(tx);
    producers.into_iter().for_each(|p| p.join().unwrap());
    REQUEST.set(0);
    let mut seen: Vec<(u32, u64)> = rx
        .iter()
        .map(|e| {
            e.run(|n| {
                let seen = (n, REQUEST.get().unwrap());
                REQUEST.set(999); // a handler's write stays in its envelope
                seen
            })
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(REQUEST.get(), Ok(0), "the receiver's context is untouched");
}

#[test]
fn a_panicking_handler_restores_the_receivers_context() {
    let (tx, rx) = mpsc::sync_channel::<u32>(1);
    Context::new().run(|| {
        REQUEST.set(5);
        tx.send(1).unwrap();
    });
    REQUEST.set(7);
    let envelope = rx.recv().unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        envelope.run(|_| panic!("handler failed"))
    }));
    assert!(r.is_err());
    assert_eq!(REQUEST.get(), Ok(7));
}

#[test]
fn an_envelope_dropped_unopened_drops_its_message_in_the_senders_context() {
    struct Probe(Arc<AtomicUsize>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0
                .store(REQUEST.get().unwrap_or(0) as usize, Ordering::SeqCst);
        }
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    Context::new().run(|| {
        REQUEST.set(11);
        tx.send(Probe(seen.clone())).unwrap();
    });
    drop(rx.recv().unwrap());
    assert_eq!(seen.load(Ordering::SeqCst), 11);
}

#[test]
fn a_failed_send_gives_the_message_back() {
    let (tx, rx) = mpsc::channel::<String>();
    drop(rx);
    assert_eq!(tx.send("lost?".into()).unwrap_err().0, "lost?");
}

#[test]
fn envelope_parts_and_context() {
    let e = Context::new().run(|| {
        REQUEST.set(3);
        Envelope::new(1u8)
    });
    assert_eq!(e.context().get(&REQUEST), Some(3));
    let (ctx, msg) = e.into_parts();
    assert_eq!((ctx.get(&REQUEST), msg), (Some(3), 1));
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_channels_carry_context_across_tasks_and_worker_threads() {
    use contextvars::channel::tokio::{channel, unbounded_channel};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = channel::<u32>(4);
        let (utx, mut urx) = unbounded_channel::<u32>();
        for p in 1..=4u64 {
            let tx = tx.clone();
            let utx = utx.clone();
            contextvars::tokio::spawn(async move {
                REQUEST.set(p);
                tx.send(p as u32).await.unwrap();
                utx.send(p as u32 * 10).unwrap();
            });
        }
        drop((tx, utx));
        let consumer = contextvars::tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(e) = rx.recv().await {
                seen.push(
                    e.run_async(|n| async move {
                        tokio::task::yield_now().await;
                        (n, REQUEST.get().unwrap())
                    })
                    .await,
                );
            }
            while let Some(e) = urx.recv().await {
                seen.push(e.run(|n| (n, REQUEST.get().unwrap())));
            }
            seen.sort();
            seen
        });
        assert_eq!(
            consumer.await.unwrap(),
            [
                (1, 1),
                (2, 2),
                (3, 3),
                (4, 4),
                (10, 1),
                (20, 2),
                (30, 3),
                (40, 4)
            ]
        );
    });
}

#[test]
fn a_message_carries_the_inherited_context_as_a_wrapped_callback_does() {
    static TRANSACTION: ContextVar<u64> = ContextVar::new("transaction").not_inherited();
    static USER: ContextVar<&'static str> = ContextVar::new("user");
    std::thread::spawn(|| {
        TRANSACTION.set(7);
        USER.set("ada");
        let (tx, rx) = contextvars::channel::mpsc::channel();
        tx.send(()).unwrap();
        let wrapped = contextvars::wrap(|| (TRANSACTION.get().ok(), USER.get().ok()));
        let received = std::thread::spawn(move || {
            rx.recv()
                .unwrap()
                .run(|()| (TRANSACTION.get().ok(), USER.get().ok()))
        })
        .join()
        .unwrap();
        assert_eq!(
            received,
            (None, Some("ada")),
            "the transaction crossed the channel"
        );
        assert_eq!(received, wrapped());
    })
    .join()
    .unwrap();
}

#[test]
fn an_envelope_shows_its_context_and_message() {
    let e = Context::new().run(|| {
        REQUEST.set(3);
        Envelope::new(1u8)
    });
    assert_eq!(e.message(), &1);
    let ctx = format!("{:?}", e.context());
    assert!(ctx.contains(r#""chan_request""#), "{ctx}");
    assert_eq!(
        format!("{e:?}"),
        format!("Envelope {{ ctx: {ctx}, msg: Some(1) }}")
    );
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_try_send_carries_the_context_and_gives_the_message_back() {
    use contextvars::channel::tokio::{TrySendError, channel};
    let (tx, mut rx) = channel::<u32>(1);
    Context::new().run(|| {
        REQUEST.set(21);
        tx.try_send(1).unwrap();
    });
    assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
    let e = rx.try_recv().unwrap();
    assert_eq!(e.run(|n| (n, REQUEST.get().ok())), (1, Some(21)));
    drop(rx);
    assert!(matches!(tx.try_send(3), Err(TrySendError::Closed(3))));
}
