//! tokio's runtime task hooks, used to give every task of a runtime (plain
//! `tokio::spawn`, library spawns, `JoinSet`) its own copy of its spawner's
//! context, with `--cfg tokio_unstable` (see
//! [`BuilderExt::isolate_tasks`](super::BuilderExt::isolate_tasks)).
//!
//! The spawn hook copies the current context on the spawning thread and
//! files it under the task's id; the poll hooks enter it around each poll
//! (by pointer: tokio calls "before" and "after" as two functions, so the
//! previous context waits on a per-thread stack meanwhile); the terminate
//! hook drops it. The copy is *private*: nothing else can reach it, so
//! entering takes no flag and writes take no lock, as for an owned
//! `InContext`.
//!
//! With [`carry_spans`](crate::tracing::carry_spans) on, the spawn hook also
//! files the tracing span current at the spawn (and, with feature
//! `opentelemetry`, OpenTelemetry's current `Context`); the before-poll
//! hook enters it after the task's context, the after-poll hook exits it
//! before leaving the context, and it goes with the context when the task
//! ends: every poll of a plain `tokio::spawn` task sits under the span it
//! was spawned in, as `tracing::Instrument` would put it. The hooks see a
//! task's id, never its future, so the span cannot wrap the future as
//! `Instrument` does; entering it from the hooks is sound because tokio
//! calls the before- and after-poll hooks on the polling thread right
//! around each poll, also one whose future panics (tokio catches that
//! inside the poll). What the hooks cannot give is the span around a drop
//! that happens outside a poll: a task idle at runtime shutdown drops its
//! future without the span (and without its context, see
//! [`isolate_tasks`](super::BuilderExt::isolate_tasks)). A task spawned
//! with this crate's helpers carries its span itself, drop included; the
//! spawn hook then files no second one (and none for `spawn_detached`).
//!
//! ```
//! use contextvars::ContextVar;
//! use contextvars::tokio::BuilderExt;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! let rt = tokio::runtime::Builder::new_current_thread().isolate_tasks().build().unwrap();
//! rt.block_on(async {
//!     REQUEST_ID.set(1);
//!     // A plain `tokio::spawn`: the hooks give the task a copy of its spawner's context.
//!     let seen = tokio::spawn(async {
//!         let inherited = REQUEST_ID.get();
//!         REQUEST_ID.set(2);
//!         inherited
//!     });
//!     assert_eq!(seen.await.unwrap(), Ok(1));
//!     assert_eq!(REQUEST_ID.get(), Ok(1));
//! });
//! ```
//!
//! **Invariant:** a filed context is dropped only when it is not current on
//! any thread: the terminate hook drops it at once unless its task is being
//! polled on the calling thread, and then the after-poll hook drops it once
//! it has left it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ::tokio::runtime::TaskMeta;
use ::tokio::task::Id;

use crate::carry::{self, Carried, Split};
use crate::context::{Context, Entered, enter_raw, inherited_map, leave_raw};

/// Shards of the registry: spawns, polls and terminations of different
/// tasks mostly take different locks (task ids are sequential, so
/// consecutive tasks land in consecutive shards).
const SHARDS: usize = 64;

type Contexts = HashMap<Id, Box<Filed>, BuildHasherDefault<IdHasher>>;

/// What the spawn hook files for one task: its context, and the span (and
/// OpenTelemetry context) current at the spawn when
/// [`carry_spans`](crate::tracing::carry_spans) is on.
struct Filed {
    ctx: Context,
    carried: Option<Carried>,
}

/// One shard, on its own cache line so that two workers polling tasks of
/// neighbouring shards do not contend on one line.
#[repr(align(64))]
struct Shard(Mutex<Contexts>);

/// Every hooked task's context, by task id (ids are unique process-wide,
/// so one registry serves every runtime).
static REGISTRY: [Shard; SHARDS] =
    [const { Shard(Mutex::new(HashMap::with_hasher(BuildHasherDefault::new()))) }; SHARDS];

/// `Id` hashes as one `u64`; spread it (the map's probe tags use the high
/// bits) and keep the low bits for the shard.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).rotate_left(5);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn shard(id: Id) -> MutexGuard<'static, Contexts> {
    let mut h = IdHasher::default();
    std::hash::Hash::hash(&id, &mut h);
    REGISTRY[h.0 as usize % SHARDS]
        .0
        .lock()
        // Nothing user-supplied runs under these locks (contexts are
        // dropped after the guard), so a poisoned shard is consistent.
        .unwrap_or_else(PoisonError::into_inner)
}

/// A poll in progress on this thread.
struct PollEntry {
    task: Id,
    /// What was current before the poll, restored after it.
    prev: Entered,
    /// The carried span, entered after the context and exited before it.
    span: Option<Split>,
    /// The task's context, handed over by the terminate hook when the task
    /// ends inside this poll; dropped once the poll has left it.
    owned: Option<Box<Filed>>,
}

thread_local! {
    /// Polls in progress on this thread, innermost last (they nest only
    /// when a task drives another runtime inside `block_in_place`).
    static POLLS: RefCell<Vec<PollEntry>> = const { RefCell::new(Vec::new()) };
}

/// The spawn hook: files a copy of the current context for the new task.
///
/// tokio calls it on the spawning thread, synchronously inside
/// `tokio::spawn` (also `Handle::spawn`, `JoinSet::spawn`, and a
/// `LocalRuntime`'s `spawn_local`), before the task can be polled. It is not
/// called for `spawn_blocking` jobs or `LocalSet` tasks.
///
/// Call it from your own `on_task_spawn` hook when you install one (tokio
/// keeps only the last hook of each kind):
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use contextvars::tokio::{hooks, BuilderExt};
///
/// static SPAWNED: AtomicUsize = AtomicUsize::new(0);
///
/// let rt = tokio::runtime::Builder::new_current_thread()
///     .isolate_tasks()
///     // Replaces the spawn hook `isolate_tasks` installed: chain it.
///     .on_task_spawn(|meta| {
///         hooks::on_task_spawn(meta);
///         SPAWNED.fetch_add(1, Ordering::Relaxed);
///     })
///     .build()
///     .unwrap();
/// rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
/// assert_eq!(SPAWNED.load(Ordering::Relaxed), 1);
/// # }
/// ```
pub fn on_task_spawn(meta: &TaskMeta<'_>) {
    let filed = Box::new(Filed {
        ctx: Context::from_map(inherited_map(), true),
        carried: carry::capture_for_hook(),
    });
    let replaced = shard(meta.id()).insert(meta.id(), filed);
    drop(replaced); // none: task ids are never reused
}

/// The before-poll hook: enters the task's context (if the spawn hook filed
/// one), until [`on_after_task_poll`].
///
/// tokio calls it on the worker thread that is about to poll the task.
/// Call it first in your own `on_before_task_poll` hook, so that your hook
/// already runs in the task's context.
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// use contextvars::tokio::hooks;
///
/// let rt = tokio::runtime::Builder::new_multi_thread()
///     .on_task_spawn(hooks::on_task_spawn)
///     .on_before_task_poll(|meta| {
///         hooks::on_before_task_poll(meta);
///         // ... your hook, inside the task's context
///     })
///     .on_after_task_poll(|meta| {
///         // ... your hook, still inside the task's context
///         hooks::on_after_task_poll(meta);
///     })
///     .on_task_terminate(hooks::on_task_terminate)
///     .build()
///     .unwrap();
/// # drop(rt);
/// # }
/// ```
pub fn on_before_task_poll(meta: &TaskMeta<'_>) {
    let id = meta.id();
    let filed: *const Filed = match shard(id).get(&id) {
        Some(filed) => &**filed,
        // Spawned before the hooks were chained in, or its spawn hook was
        // replaced: it runs in the worker's context, where the misuse check
        // watches its writes.
        None => return,
    };
    // SAFETY: the box stays filed until this task's terminate hook, which
    // tokio calls only from the thread that holds the task (this one, until
    // the poll ends) or for a task not being polled; and when it comes
    // during this poll, it moves the box into this frame instead of dropping
    // it (`on_task_terminate`). The context is private: no other handle to
    // it exists. Enter and leave nest, because tokio calls the after-poll
    // hook on this thread right after this poll.
    let filed = unsafe { &*filed };
    // SAFETY: as above.
    let prev = unsafe { enter_raw(&filed.ctx) };
    // Entered after the context, so that a subscriber's `enter` already
    // runs in it; what leaving needs is kept in the entry (the filed box
    // may be handed over, or gone, by the after-poll hook).
    let span = filed.carried.as_ref().map(Carried::enter_split);
    POLLS.with(|polls| {
        polls.borrow_mut().push(PollEntry {
            task: id,
            prev,
            span,
            owned: None,
        })
    });
}

/// The after-poll hook: leaves the task's context entered by
/// [`on_before_task_poll`] and restores the previous one; drops the
/// context if the task ended in this poll.
///
/// tokio calls it on the same thread, right after the poll. Call it last in
/// your own `on_after_task_poll` hook (see [`on_before_task_poll`]).
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// let rt = tokio::runtime::Builder::new_current_thread()
///     .on_after_task_poll(contextvars::tokio::hooks::on_after_task_poll)
///     .build()
///     .unwrap();
/// # drop(rt);
/// # }
/// ```
pub fn on_after_task_poll(meta: &TaskMeta<'_>) {
    let id = meta.id();
    let frame = POLLS.with(|polls| {
        let mut polls = polls.borrow_mut();
        match polls.last() {
            Some(top) if top.task == id => polls.pop(),
            // The before-poll hook found no context for this task.
            _ => None,
        }
    });
    if let Some(frame) = frame {
        if let Some(span) = frame.span {
            span.exit();
        }
        // SAFETY: `prev` is what the matching `enter_raw` returned on this
        // thread, and it is alive: it was current when the poll began, and
        // a current context outlives every context entered over it.
        unsafe { leave_raw(frame.prev) };
        // Dropped here, after the guard on `POLLS` and no longer current. A
        // value's `Drop` that panics must not unwind out of a tokio hook
        // (that takes the worker, and the process, down); tokio treats a
        // panic while dropping a task's future the same way.
        // The carried span goes with it: not kept alive past the task.
        if let Some(filed) = frame.owned {
            let _ = crate::report::contain(|| drop(filed));
        }
    }
}

/// The terminate hook: drops the task's context, after the task's future
/// has been dropped (for a task that ends inside a poll, when that poll
/// ends: just after its `JoinHandle` may already have returned).
///
/// tokio calls it when a task completes, panics, or is cancelled (abort,
/// `JoinSet` drop, runtime shutdown), after dropping the future, on the
/// thread that dropped it: inside the last poll for a task that finished or
/// was aborted while the runtime ran (then the context is dropped when that
/// poll ends), outside any poll at runtime shutdown. It is also called for
/// `spawn_blocking` jobs, which have no filed context. Call it from your own
/// `on_task_terminate` hook, in any order.
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// let rt = tokio::runtime::Builder::new_current_thread()
///     .on_task_terminate(contextvars::tokio::hooks::on_task_terminate)
///     .build()
///     .unwrap();
/// # drop(rt);
/// # }
/// ```
pub fn on_task_terminate(meta: &TaskMeta<'_>) {
    let id = meta.id();
    let Some(filed) = shard(id).remove(&id) else {
        return;
    };
    // Ending inside its own poll on this thread: the context is current
    // here, so the after-poll hook drops it once it has left it. (If this
    // thread's poll stack is gone, no poll is in progress on it.)
    let polled_here = POLLS
        .try_with(|polls| polls.borrow().iter().rposition(|frame| frame.task == id))
        .ok()
        .flatten();
    match polled_here {
        Some(i) => POLLS.with(|polls| polls.borrow_mut()[i].owned = Some(filed)),
        None => drop(filed),
    }
}
