// `Token::old_value` borrows from the token: it cannot outlive the `reset`
// that consumes the token.
use contextvars::ContextVar;

static NAME: ContextVar<String> = ContextVar::new("name");

fn main() {
    NAME.set("ada".to_string());
    let token = NAME.set("grace".to_string());
    let old = token.old_value();
    NAME.reset(token).unwrap();
    println!("{old:?}");
}
