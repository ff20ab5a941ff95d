// `reset` takes the token by value: Python's "Token has already been used
// once" is a compile error here.
use contextvars::ContextVar;

static N: ContextVar<u32> = ContextVar::new("n");

fn main() {
    let token = N.set(1);
    N.reset(token).unwrap();
    N.reset(token).unwrap();
}
