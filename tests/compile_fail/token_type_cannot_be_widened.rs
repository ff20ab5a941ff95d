// A token is invariant in its value type, as its variable is: a token of a
// function over any lifetime cannot become one of a function over
// `'static` only.
use contextvars::{ContextVar, Token};

static V: ContextVar<for<'a> fn(&'a String) -> usize> = ContextVar::new("v");

fn widen(
    t: Token<for<'a> fn(&'a String) -> usize>,
) -> Token<fn(&'static String) -> usize> {
    t
}

fn len(s: &String) -> usize {
    s.len()
}

fn main() {
    let _wide = widen(V.set(len));
}
