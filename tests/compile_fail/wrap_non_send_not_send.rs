// `wrap` is `Send` only when the wrapped closure is: a closure holding an
// `Rc` cannot be handed to another thread through it.
use std::rc::Rc;

fn main() {
    let rc = Rc::new(1);
    let job = contextvars::wrap(move || *rc);
    std::thread::spawn(job);
}
