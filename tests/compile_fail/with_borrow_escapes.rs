// The reference `with` hands out lives only for the closure: the value may be
// replaced (and dropped) by a later `set`.
use contextvars::ContextVar;

static NAME: ContextVar<String> = ContextVar::new("name");

fn main() {
    NAME.set("ada".to_string());
    let escaped: Option<&String> = NAME.with(|v| v);
    NAME.set("grace".to_string());
    println!("{escaped:?}");
}
