//! The request's span follows its parallel work: a `par_iter` inside a
//! request whose every log line, on whichever rayon thread, sits under the
//! request's span — with `contextvars::tracing::carry_spans(true)`, once.
//!
//! ```sh
//! cargo run --features tracing,rayon --example span_carrying
//! ```
//!
//! Without the switch, the lines logged on rayon's threads lose the span
//! (tracing's spans are per thread); the example prints both runs.

#[cfg(all(feature = "tracing", feature = "rayon"))]
fn main() {
    use contextvars::ContextVar;
    use contextvars::rayon::ParallelIteratorExt;
    use contextvars::tracing::ContextFormat;
    use rayon::prelude::*;

    static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

    tracing_subscriber::fmt()
        .event_format(
            ContextFormat::new(tracing_subscriber::fmt::format().without_time())
                .with_var(&REQUEST_ID),
        )
        .init();

    let handle = |id: u64| {
        let span = tracing::info_span!("request", id);
        let _entered = span.enter();
        REQUEST_ID.set(id);
        let sizes: Vec<usize> = ["a.png", "b.png", "c.png", "d.png"]
            .into_par_iter()
            .map_in_current_context(|image| {
                tracing::info!(image, thread = ?std::thread::current().id(), "resized");
                image.len()
            })
            .collect();
        tracing::info!(total = sizes.iter().sum::<usize>(), "done");
    };

    println!("-- carry_spans off: the request id follows (a context variable), the span does not");
    contextvars::Context::new().run(|| handle(1));
    println!("-- carry_spans(true): every line under request{{id=2}}");
    contextvars::tracing::carry_spans(true);
    contextvars::Context::new().run(|| handle(2));
}

#[cfg(not(all(feature = "tracing", feature = "rayon")))]
fn main() {
    println!("run with: cargo run --features tracing,rayon --example span_carrying");
}
