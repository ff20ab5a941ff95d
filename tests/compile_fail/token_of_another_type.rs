// A token of a `ContextVar<A>` cannot be handed to a `ContextVar<B>`: the
// type parameter is checked at compile time (`DifferentVar` is for two
// variables of the same type).
use contextvars::ContextVar;

static A: ContextVar<u32> = ContextVar::new("a");
static B: ContextVar<String> = ContextVar::new("b");

fn main() {
    let token = A.set(1);
    B.reset(token).unwrap();
}
