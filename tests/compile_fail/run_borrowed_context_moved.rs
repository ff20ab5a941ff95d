// A context cannot be moved or dropped while `run` borrows it (the
// thread's current-context pointer relies on this).
use contextvars::Context;

fn main() {
    let ctx = Context::new();
    ctx.run(|| {
        drop(ctx);
    });
}
