// A `Cell` is `Send` but not `Sync`: values are shared between threads that
// hold copies of one context, so a `Cell` cannot be a context value.
use std::cell::Cell;

use contextvars::ContextVar;

static CELL: ContextVar<Cell<u32>> = ContextVar::new("cell");

fn main() {
    let _token = CELL.set(Cell::new(1));
}
