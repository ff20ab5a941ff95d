// Setting a non-`Sync` value (a `Cell`) in a local variable is refused too.
use std::cell::Cell;

use contextvars::ContextVar;

fn main() {
    let var: ContextVar<Cell<u32>> = ContextVar::new("cell");
    let _token = var.set(Cell::new(1));
}
