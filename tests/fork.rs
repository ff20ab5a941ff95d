//! A fork's identity: its child is a context of its own, so a merge happens
//! only where the fork was made, and tokens and guards cross the fork only
//! as `Fork`'s docs say (a parent's token resets in the child; a child's
//! token resets in the parent once the merge applied that variable).
//!
//! Pure core, so it also runs under Miri (`.ci/miri`).

use contextvars::{Context, ContextVar, Fork, MergeError, ResetError};

static A: ContextVar<u32> = ContextVar::new("a");
static B: ContextVar<u32> = ContextVar::new("b");

#[test]
fn a_fork_cannot_be_merged_inside_a_sibling_forks_child() {
    Context::new().run(|| {
        let mut first = Fork::new();
        let mut second = Fork::new();
        first.run(|| A.set(1));
        let err = second.run(|| first.merge()).unwrap_err();
        assert!(matches!(err, MergeError::DifferentContext { .. }), "{err}");
        assert_eq!(second.context().get(&A), None, "the sibling got the value");
        assert_eq!(A.get().ok(), None);
        // Where it was made, it merges.
        err.into_fork().merge().unwrap();
        assert_eq!(A.get(), Ok(1));
    });
}

#[test]
fn an_inner_fork_cannot_be_merged_into_the_outer_forks_parent() {
    Context::new().run(|| {
        let mut outer = Fork::new();
        let inner = outer.run(|| {
            let mut inner = Fork::new();
            inner.run(|| A.set(2));
            inner
        });
        let err = inner.merge().unwrap_err();
        assert!(matches!(err, MergeError::DifferentContext { .. }), "{err}");
        assert!(A.get().is_err(), "merged past its own parent");
        // In the outer fork's child, where it was made, it merges.
        let inner = err.into_fork();
        outer.run(move || inner.merge()).unwrap();
        assert_eq!(outer.context().get(&A), Some(2));
    });
}

#[test]
fn a_token_of_an_unmerged_child_does_not_erase_what_the_parent_set() {
    Context::new().run(|| {
        let mut fork = Fork::new();
        let token = fork.run(|| A.set(1));
        A.set(5); // the parent sets it after the fork
        let err = A.reset(token).unwrap_err();
        assert!(matches!(err, ResetError::DifferentContext { .. }), "{err}");
        assert_eq!(
            A.get(),
            Ok(5),
            "the child's token erased the parent's value"
        );
    });
}

#[test]
fn a_guard_of_an_unmerged_child_dropped_in_the_parent_changes_nothing() {
    Context::new().run(|| {
        let mut fork = Fork::new();
        let guard = fork.run(|| A.set_scoped(1));
        A.set(5);
        drop(guard); // warns: it belongs to the child
        assert_eq!(
            A.get(),
            Ok(5),
            "the child's guard erased the parent's value"
        );
        assert_eq!(fork.context().get(&A), Some(1));
    });
}

#[test]
fn a_childs_token_resets_in_the_parent_once_the_merge_applied_its_variable() {
    Context::new().run(|| {
        A.set(1);
        let mut fork = Fork::new();
        let (a_token, b_token) = fork.run(|| (A.set(2), B.set(7)));
        // Before the merge: refused, and nothing changes.
        let failed = A.try_reset(a_token).unwrap_err();
        assert!(matches!(
            failed.error(),
            ResetError::DifferentContext { .. }
        ));
        let a_token = failed.into_token();
        assert_eq!(A.get(), Ok(1));
        let changes = fork.merge().unwrap();
        assert_eq!(changes.set, ["a", "b"]);
        assert_eq!((A.get(), B.get()), (Ok(2), Ok(7)));
        // After it: each resets to what the child's `set` replaced.
        A.reset(a_token).unwrap();
        assert_eq!(A.get(), Ok(1));
        B.reset(b_token).unwrap();
        assert!(B.get().is_err());
    });
}

#[test]
fn a_childs_token_is_refused_after_a_failed_merge_and_accepted_after_an_overwriting_one() {
    Context::new().run(|| {
        A.set(1);
        let mut fork = Fork::new();
        let token = fork.run(|| A.set(2));
        A.set(6); // the parent moves `a` on: the merge conflicts
        let err = fork.merge().unwrap_err();
        assert!(matches!(err, MergeError::Conflict { .. }), "{err}");
        // A failed merge applies nothing: the child's token stays refused.
        let failed = A.try_reset(token).unwrap_err();
        assert!(matches!(
            failed.error(),
            ResetError::DifferentContext { .. }
        ));
        assert_eq!(A.get(), Ok(6));
        err.into_fork().merge_overwriting().unwrap();
        assert_eq!(A.get(), Ok(2));
        A.reset(failed.into_token()).unwrap();
        assert_eq!(A.get(), Ok(1), "what the child's `set` replaced");
    });
}

#[test]
fn a_parents_token_resets_in_the_child_and_the_merge_applies_the_removal() {
    Context::new().run(|| {
        let token = A.set(1);
        let mut fork = Fork::new();
        fork.run(|| A.reset(token)).unwrap();
        assert_eq!(fork.context().get(&A), None);
        assert_eq!(A.get(), Ok(1));
        let changes = fork.merge().unwrap();
        assert_eq!(changes.removed, ["a"]);
        assert!(A.get().is_err());
    });
}

#[test]
fn tokens_of_a_sibling_fork_do_not_reset_in_another_forks_child() {
    Context::new().run(|| {
        let mut first = Fork::new();
        let mut second = Fork::new();
        let token = first.run(|| A.set(1));
        second.run(|| A.set(2));
        let err = second.run(|| A.reset(token)).unwrap_err();
        assert!(matches!(err, ResetError::DifferentContext { .. }), "{err}");
        assert_eq!(second.context().get(&A), Some(2));
    });
}

#[test]
fn a_fork_and_its_merge_errors_show_what_they_hold() {
    Context::new().run(|| {
        let mut fork = Fork::new();
        fork.run(|| A.set(1));
        let child = format!("{:?}", fork.context());
        assert!(child.contains(r#""a""#), "{child}");
        assert_eq!(
            format!("{fork:?}"),
            format!("Fork {{ child: {child}, .. }}")
        );

        let refused = Context::new().run(|| fork.merge()).unwrap_err();
        assert_eq!(format!("{refused:?}"), "DifferentContext { .. }");
        let mut fork = refused.into_fork();
        assert_eq!(fork.changed(), ["a"]);

        A.set(2); // the parent changed it too
        let conflict = fork.merge().unwrap_err();
        assert_eq!(format!("{conflict:?}"), r#"Conflict { vars: ["a"], .. }"#);
        let shown = conflict.to_string();
        assert!(shown.contains("`a`"), "{shown}");
        assert!(
            shown.contains("merge_overwriting"),
            "says what to do: {shown}"
        );
        assert_eq!(A.get(), Ok(2), "nothing was applied");
    });
}

/// Panics when dropped, after noting `A`'s value where it is dropped.
struct PanicsOnDrop(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        self.0
            .store(A.get_or(0), std::sync::atomic::Ordering::SeqCst);
        panic!("a value of the fork's child panics when dropped");
    }
}

static PANICKY: ContextVar<PanicsOnDrop> = ContextVar::new("panicky");

/// A fork dropped unmerged drops its child's values inside the child (where
/// they read defaults: the values are taken out first), not in the
/// dropper's context, and lets go of everything it holds even when one of
/// them panics (under Miri, a leak of the fork's link or of a node fails
/// the run).
#[test]
fn a_fork_dropped_unmerged_drops_its_childs_values_in_the_child_even_past_a_panic() {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut fork = Fork::new();
    fork.run(|| {
        A.set(7);
        PANICKY.set(PanicsOnDrop(seen.clone()));
    });
    A.set(1);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(fork)));
    assert!(
        dropped.is_err(),
        "the destructor's panic goes on to the dropper"
    );
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "dropped in the emptied child, not the caller's context (1)"
    );
    assert_eq!(A.get(), Ok(1), "the caller's context is untouched");
}
