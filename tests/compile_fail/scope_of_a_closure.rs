// `scope` holds a value while a future runs; a closure that returns one
// (tokio's spelling of a scope, and the closure form's) is not a future.
use contextvars::ContextVar;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

async fn handle() -> u64 {
    REQUEST_ID.get().unwrap()
}

fn main() {
    let _ = REQUEST_ID.scope(7, || async { REQUEST_ID.get() });
    let _ = REQUEST_ID.scope(7, || handle());
}
