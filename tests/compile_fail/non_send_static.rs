// A `static` variable of a non-`Send` type does not compile: `ContextVar<T>`
// is `Sync` only for `T: Send + Sync`.
use std::rc::Rc;

use contextvars::ContextVar;

static RC: ContextVar<Rc<u32>> = ContextVar::new("rc");

fn main() {
    let _ = RC.name();
}
