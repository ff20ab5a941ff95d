// A variable is invariant in its value type: a variable of a function over
// any lifetime cannot be used as one of a function over `'static` only.
// (If it could, a `set` through the wider type would store a function that
// keeps its `&'static` argument, and reads of the original variable would
// hand it a short-lived borrow: a use after free.)
use contextvars::ContextVar;

static V: ContextVar<for<'a> fn(&'a String) -> usize> = ContextVar::new("v");

fn widen(
    v: &'static ContextVar<for<'a> fn(&'a String) -> usize>,
) -> &'static ContextVar<fn(&'static String) -> usize> {
    v
}

fn main() {
    let _wide = widen(&V);
}
