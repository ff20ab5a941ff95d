// The closure form ends its scope when the closure returns: a future it
// returns would run without the value.
use contextvars::ContextVar;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

async fn handle() -> u64 {
    REQUEST_ID.get().unwrap()
}

fn main() {
    let _ = REQUEST_ID.sync_scope(7, || async { REQUEST_ID.get() });
    let _ = REQUEST_ID.sync_scope(7, handle);
}
