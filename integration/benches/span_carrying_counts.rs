//! Per-poll instruction counts of span carrying, for callgrind (load does
//! not move them, where `span_carrying`'s times move by up to 2×): one task
//! that returns `Pending` `SPAN_POLLS` times, spawned from inside a span
//! and awaited on a current-thread runtime, in the mode `SPAN_MODE`:
//!
//! - `off`, `on`, `instrument`: `contextvars::tokio::spawn`, carrying off,
//!   on, and off with `tracing::Instrument` (the peer);
//! - `hooks_off`, `hooks_on`, `hooks_instrument` (`--cfg tokio_unstable`):
//!   plain `tokio::spawn` on a runtime built with `isolate_tasks()`;
//! - `spawn_peer`, `spawn_off`: `SPAN_POLLS` no-op tasks instead, each
//!   spawned and awaited, with what `contextvars::tokio::spawn` spawned
//!   before span carrying existed (`tokio::spawn(fut.in_current_context())`)
//!   and with the helper, carrying off: the cost of the switch when off.
//!
//! The difference of two counts (say 11,000 and 1,000 polls) divided by
//! their difference is the cost of a poll. Without `SPAN_MODE` (as `cargo
//! bench` runs it) it runs every mode once, briefly.
//!
//! ```sh
//! RUSTFLAGS="--cfg tokio_unstable" cargo bench -p contextvars-integration --bench span_carrying_counts --no-run
//! SPAN_MODE=hooks_on SPAN_POLLS=11000 valgrind --tool=callgrind target/release/deps/span_carrying_counts-*
//! ```

use contextvars::prelude::*;
use contextvars::tracing::carry_spans;
use tracing::Instrument;

#[path = "common/spin.rs"]
#[allow(dead_code, reason = "the timed loop is the other benchmarks'")]
mod spin;
use spin::Spin;

fn run(mode: &str, polls: u32) {
    let hooked = mode.starts_with("hooks_");
    let mut builder = tokio::runtime::Builder::new_current_thread();
    if hooked {
        #[cfg(tokio_unstable)]
        {
            use contextvars::tokio::BuilderExt;
            builder.isolate_tasks();
        }
        #[cfg(not(tokio_unstable))]
        panic!("{mode} needs RUSTFLAGS=\"--cfg tokio_unstable\"");
    }
    let rt = builder.build().expect("a tokio runtime");
    carry_spans(mode.ends_with("on"));
    let spin = Spin { left: polls };
    rt.block_on(
        async move {
            match mode {
                "off" | "on" => contextvars::tokio::spawn(spin).await,
                "instrument" => contextvars::tokio::spawn(spin.in_current_span()).await,
                "hooks_off" | "hooks_on" => tokio::spawn(spin).await,
                "hooks_instrument" => tokio::spawn(spin.in_current_span()).await,
                "spawn_peer" => {
                    for _ in 0..polls {
                        tokio::spawn(async {}.in_current_context()).await.unwrap();
                    }
                    Ok(())
                }
                "spawn_off" => {
                    for _ in 0..polls {
                        contextvars::tokio::spawn(async {}).await.unwrap();
                    }
                    Ok(())
                }
                other => panic!("unknown SPAN_MODE {other:?}"),
            }
            .expect("the task completes")
        }
        .instrument(tracing::info_span!("request", id = 7)),
    );
    carry_spans(false);
}

fn main() {
    // A real subscriber: spans are registered, entered and exited.
    tracing::subscriber::set_global_default(tracing_subscriber::registry())
        .expect("the only subscriber of this benchmark");
    match std::env::var("SPAN_MODE") {
        Ok(mode) => {
            let polls = std::env::var("SPAN_POLLS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000);
            run(&mode, polls);
        }
        Err(_) => {
            let mut modes = vec!["off", "on", "instrument", "spawn_peer", "spawn_off"];
            if cfg!(tokio_unstable) {
                modes.extend(["hooks_off", "hooks_on", "hooks_instrument"]);
            }
            for mode in modes {
                run(mode, 10);
            }
        }
    }
}
