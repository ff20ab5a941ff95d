//! [`Value`], the box a context keeps one variable's value in: type-erased,
//! reference-counted, and one pointer wide.
//!
//! It is an `Arc<dyn Any>` cut down to what a context needs. The handle is a
//! thin pointer to a header (a strong count and a per-type vtable) followed by
//! the value, so a map entry is the id and one pointer, and a read that knows
//! the type goes straight from the handle to the value: no vtable load to find
//! the value's offset, as a fat `Arc<dyn _>` needs. There is no weak count, so
//! dropping a shared handle is one atomic operation, not two, and dropping the
//! only one is none. Small boxes take their memory from the thread's spare
//! blocks (`spare`).
//!
//! **Invariant:** the strong count is the number of live handles, and the box
//! is freed exactly once, by the last handle (the one that finds the count at
//! one, or takes it to zero), after every other handle's last access (release
//! decrement, then an acquire load: the protocol of `std::sync::Arc`). The
//! vtable is the one of the type the box was made with, so a checked downcast
//! is sound, and an unchecked one is sound whenever the caller knows that
//! type.

use std::alloc::Layout;
use std::any::TypeId;
use std::ptr::{self, NonNull};

use crate::refcount;
use crate::spare;
use crate::sync::AtomicUsize;

/// What every box starts with, whatever the value's type.
#[repr(C)]
struct Header {
    strong: AtomicUsize,
    vtable: &'static VTable,
}

/// A box: the header, then the value (`repr(C)`, so a pointer to the box is a
/// pointer to its header).
#[repr(C)]
struct Boxed<T> {
    header: Header,
    value: T,
}

/// What a handle that has forgotten `T` still needs to know about it.
struct VTable {
    type_id: fn() -> TypeId,
    /// Frees a box whose count has reached zero.
    free: unsafe fn(NonNull<Header>),
}

struct VTableOf<T>(std::marker::PhantomData<T>);

impl<T: 'static> VTableOf<T> {
    const VTABLE: VTable = VTable {
        type_id: TypeId::of::<T>,
        free: free::<T>,
    };
}

/// The size class of a `Boxed<T>` (see `spare`), or `None` for a box too big
/// to recycle, which lives in a plain `Box`.
const fn class<T>() -> Option<usize> {
    spare::class_of(Layout::new::<Boxed<T>>())
}

/// # Safety
///
/// `ptr` must come from `Value::new::<T>` and have no live handle left.
unsafe fn free<T>(ptr: NonNull<Header>) {
    // SAFETY: as for this function.
    unsafe { free_in::<T>(ptr, spare::lists) }
}

/// `free`, given how to reach this thread's spare lists (asked only for a
/// box that goes back to them).
///
/// # Safety
///
/// As for [`free`].
#[inline]
unsafe fn free_in<T>(ptr: NonNull<Header>, lists: impl FnOnce() -> &'static spare::Lists) {
    let boxed = ptr.cast::<Boxed<T>>();
    match const { class::<T>() } {
        None => {
            // SAFETY: the box was made by `Box::new` (`Value::new`) and
            // nobody else can reach it any more.
            drop(unsafe { Box::from_raw(boxed.as_ptr()) });
        }
        Some(class) => {
            /// Gives the block back also if the value's `drop` panics.
            struct GiveBack(&'static spare::Lists, usize, NonNull<u8>);
            impl Drop for GiveBack {
                #[inline]
                fn drop(&mut self) {
                    // SAFETY: the block came from `spare::alloc(_, self.1)`
                    // (`Value::new`) and its value is dropped by now.
                    unsafe { spare::free(self.0, self.1, self.2) };
                }
            }
            let _give_back = GiveBack(lists(), class, boxed.cast());
            // SAFETY: `Value::new` wrote a `Boxed<T>` there, and nobody else
            // can reach it any more.
            unsafe { ptr::drop_in_place(boxed.as_ptr()) };
        }
    }
}

/// A shared, type-erased value (tests at the end of this file).
pub struct Value {
    ptr: NonNull<Header>,
}

// SAFETY: a `Value` is made only from `T: Send + Sync` (`Value::new`), hands
// out only `&T`, and drops `T` on whichever thread lets go of it last, as
// `Arc<T>` does, which is `Send + Sync` for such `T`.
unsafe impl Send for Value {}
// SAFETY: as above.
unsafe impl Sync for Value {}

impl Value {
    /// Boxes `value`.
    pub fn new<T: Send + Sync + 'static>(value: T) -> Value {
        Value::new_in(value, spare::lists)
    }

    /// `new`, given how to reach this thread's spare lists (asked only for
    /// a box small enough to come from them). A caller that holds them
    /// already spares a thread-local access that does not always inline.
    #[inline]
    pub(crate) fn new_in<T: Send + Sync + 'static>(
        value: T,
        lists: impl FnOnce() -> &'static spare::Lists,
    ) -> Value {
        let boxed = Boxed {
            header: Header {
                strong: AtomicUsize::new(1),
                vtable: &VTableOf::<T>::VTABLE,
            },
            value,
        };
        let ptr = match const { class::<T>() } {
            None => NonNull::from(Box::leak(Box::new(boxed))),
            Some(class) => {
                let block = spare::alloc(lists(), class).cast::<Boxed<T>>();
                // SAFETY: a block of the class is big and aligned enough for
                // a `Boxed<T>` (`spare::class_of`), and nobody else has it.
                unsafe { block.as_ptr().write(boxed) };
                block
            }
        };
        Value { ptr: ptr.cast() }
    }

    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: this handle keeps the box alive.
        unsafe { self.ptr.as_ref() }
    }

    /// The value, if it is a `T`.
    #[inline]
    pub fn downcast<T: 'static>(&self) -> Option<&T> {
        if (self.header().vtable.type_id)() == TypeId::of::<T>() {
            // SAFETY: just checked.
            Some(unsafe { self.downcast_unchecked() })
        } else {
            None
        }
    }

    /// The value as a `T`, unchecked (checked in debug builds).
    ///
    /// # Safety
    ///
    /// The value must be a `T`. Within this crate that holds for any value a
    /// context stores under a variable's id: only that variable writes under
    /// its id, and it writes its own `T` (see `var`).
    #[inline]
    pub(crate) unsafe fn downcast_unchecked<T: 'static>(&self) -> &T {
        debug_assert!((self.header().vtable.type_id)() == TypeId::of::<T>());
        // SAFETY: the box is a `Boxed<T>` (caller), kept alive by this handle,
        // and only ever read through shared references.
        unsafe { &(*self.ptr.cast::<Boxed<T>>().as_ptr()).value }
    }

    /// The box, without giving up this handle.
    #[inline]
    pub(crate) fn as_raw(&self) -> NonNull<()> {
        self.ptr.cast()
    }

    /// A handle to the box at `raw` that does not own a count (so dropping
    /// it does nothing).
    ///
    /// # Safety
    ///
    /// `raw` must come from [`as_raw`](Value::as_raw) of a handle that stays
    /// alive while the result is used.
    #[inline]
    pub(crate) unsafe fn borrow_raw(raw: NonNull<()>) -> std::mem::ManuallyDrop<Value> {
        std::mem::ManuallyDrop::new(Value { ptr: raw.cast() })
    }

    /// Whether both handles are to the same box (not merely equal values).
    #[inline]
    pub fn ptr_eq(a: &Value, b: &Value) -> bool {
        a.ptr == b.ptr
    }
}

impl Clone for Value {
    #[inline]
    fn clone(&self) -> Value {
        refcount::retain(&self.header().strong);
        Value { ptr: self.ptr }
    }
}

impl Value {
    /// Whether this handle is the last: if so, the box is to be freed now.
    #[inline]
    fn release(&self) -> bool {
        refcount::release(&self.header().strong)
    }

    /// Drops this handle, knowing the value's type: the same as `drop`, but
    /// the box is freed by a direct (inlinable) call rather than through the
    /// vtable, which a `reset` notices.
    ///
    /// # Safety
    ///
    /// The value must be a `T`.
    #[inline]
    pub(crate) unsafe fn drop_as<T: 'static>(self) {
        // SAFETY: as for this function.
        unsafe { self.drop_as_in::<T>(spare::lists) }
    }

    /// `drop_as`, given how to reach this thread's spare lists (see
    /// [`new_in`](Value::new_in)).
    ///
    /// # Safety
    ///
    /// The value must be a `T`.
    #[inline]
    pub(crate) unsafe fn drop_as_in<T: 'static>(
        self,
        lists: impl FnOnce() -> &'static spare::Lists,
    ) {
        let this = std::mem::ManuallyDrop::new(self);
        if this.release() {
            debug_assert!((this.header().vtable.type_id)() == TypeId::of::<T>());
            // SAFETY: this was the last handle, and the value is a `T`
            // (caller).
            unsafe { free_in::<T>(this.ptr, lists) }
        }
    }
}

impl Drop for Value {
    #[inline]
    fn drop(&mut self) {
        if self.release() {
            let free = self.header().vtable.free;
            // SAFETY: this was the last handle, and the vtable is the one of
            // the box's own type.
            unsafe { free(self.ptr) }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::Value;
    use crate::counted::{Counted, Counter};
    use crate::{Context, ContextVar};

    #[test]
    fn handles_share_one_box_and_downcast_only_to_its_type() {
        let a = Value::new(7u64);
        let b = a.clone();
        assert!(Value::ptr_eq(&a, &b));
        assert!(!Value::ptr_eq(&a, &Value::new(7u64)), "equal, not the same");
        assert_eq!(b.downcast::<u64>(), Some(&7));
        assert_eq!(b.downcast::<u32>(), None);
        // SAFETY: `a` was made from a `u64`.
        assert_eq!(unsafe { *a.downcast_unchecked::<u64>() }, 7);
    }

    #[test]
    fn the_last_handle_drops_the_value_on_whichever_thread_it_is() {
        let live = Counter::new();
        let a = Value::new(Counted::new(&live));
        let handles: Vec<Value> = (0..4).map(|_| a.clone()).collect();
        drop(a);
        let threads: Vec<_> = handles
            .into_iter()
            .map(|h| std::thread::spawn(move || drop(h)))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(live.live(), 0, "dropped once, not leaked");
        // `drop_as` frees through the direct path, with the same count.
        let b = Value::new(Counted::new(&live));
        let c = b.clone();
        // SAFETY: both are handles to a `Counted`.
        unsafe { b.drop_as::<Counted>() };
        assert_eq!(live.live(), 1, "`c` still holds it");
        // SAFETY: as above.
        unsafe { c.drop_as::<Counted>() };
        assert_eq!(live.live(), 0);
    }

    /// A value whose `Drop` panics still gives its box back, directly
    /// and through a reset.
    #[test]
    fn a_value_whose_drop_panics_gives_its_memory_back() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("bomb");
            }
        }
        // Directly: the box's block goes back although `drop` panics.
        for _ in 0..20 {
            let value = Value::new(Bomb);
            assert!(catch_unwind(AssertUnwindSafe(|| drop(value))).is_err());
        }
        // Through a variable's `reset`, which drops the removed value.
        let var: ContextVar<Bomb> = ContextVar::new("bomb");
        let ctx = Context::new();
        ctx.run(|| {
            for _ in 0..20 {
                let token = var.set(Bomb);
                let reset = catch_unwind(AssertUnwindSafe(|| var.reset(token)));
                assert!(reset.is_err(), "the removed value's drop panicked");
                assert!(var.with(|v| v.is_none()), "and it was removed");
            }
        });
        assert!(ctx.is_empty());
        // Miri checks that each box's memory was given back.
    }
}
