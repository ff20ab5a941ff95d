//! The executor-agnostic promise on smol: a task spawned with a copy of the
//! spawner's context sees the spawner's value as of the spawn, across its own
//! suspensions, and its writes never reach the spawner. (The same checks for
//! tokio and futures' pools are in the crate's `tests/tasks.rs`; smol's
//! dependencies live in this package.)
#![cfg(feature = "futures")]

use contextvars::ContextVar;
use contextvars::prelude::*;

static V: ContextVar<u32> = ContextVar::new("v");

#[test]
fn works_on_smol() {
    V.set(10);
    let task = smol::spawn(
        async {
            let seen = V.get();
            // Suspend a few times, so the task is polled again later.
            for _ in 0..3 {
                smol::future::yield_now().await;
            }
            V.set(11);
            assert_eq!(V.get(), Ok(11), "its own write");
            seen
        }
        .in_current_context(),
    );
    V.set(12);
    assert_eq!(smol::block_on(task), Ok(10), "the value as of the spawn");
    assert_eq!(V.get(), Ok(12), "the task's write stayed in its copy");
}
