// A value that is not `Send` (an `Rc`) cannot be stored in a context: a
// context, and so its values, can move to and be read from other threads.
use std::rc::Rc;

use contextvars::ContextVar;

fn main() {
    let var: ContextVar<Rc<u32>> = ContextVar::new("rc");
    let _token = var.set(Rc::new(1));
}
