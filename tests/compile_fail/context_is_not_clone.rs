// `Context` is not `Clone`: a copy is explicit (`copy()`), a shared handle is
// an `Arc<Context>`.
use contextvars::Context;

fn main() {
    let ctx = Context::new();
    let _other: Context = ctx.clone();
}
