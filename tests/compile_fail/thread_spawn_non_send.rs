// `contextvars::thread::spawn` keeps `std::thread::spawn`'s bounds.
use std::rc::Rc;

fn main() {
    let rc = Rc::new(1);
    contextvars::thread::spawn(move || *rc);
}
