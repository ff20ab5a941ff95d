//! Generators with their own layer of context (PEP 568): `isolated()`
//! iterators and streams.

use std::panic::{AssertUnwindSafe, catch_unwind};

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, ResetError, Token};

/// An iterator driven by a script of steps, one per resumption.
fn scripted<'a>(mut steps: Vec<Box<dyn FnMut() -> u32 + 'a>>) -> impl Iterator<Item = u32> + 'a {
    steps.reverse();
    std::iter::from_fn(move || steps.pop().map(|mut f| f()))
}

#[test]
fn sets_persist_across_resumptions_and_never_reach_the_caller() {
    static V: ContextVar<u32> = ContextVar::with_default("v", 0);
    Context::new().run(|| {
        let mut generator = scripted(vec![
            Box::new(|| {
                V.set(1);
                V.get().unwrap()
            }),
            Box::new(|| V.get().unwrap()),
            Box::new(|| {
                V.set(V.get().unwrap() + 1);
                V.get().unwrap()
            }),
        ])
        .isolated();
        assert_eq!(generator.next(), Some(1));
        assert_eq!(V.get(), Ok(0), "the caller never sees the generator's set");
        assert_eq!(
            generator.next(),
            Some(1),
            "the generator's own set persisted"
        );
        assert_eq!(generator.next(), Some(2));
        assert_eq!(V.get(), Ok(0));
        assert_eq!(generator.next(), None);
    });
}

#[test]
fn each_resumption_sees_the_callers_current_values() {
    static CALLER: ContextVar<&str> = ContextVar::new("caller");
    static OWN: ContextVar<&str> = ContextVar::new("own");
    Context::new().run(|| {
        CALLER.set("a");
        let mut generator =
            std::iter::repeat_with(|| (CALLER.get().ok(), OWN.get().ok())).isolated();
        assert_eq!(generator.next(), Some((Some("a"), None)));
        CALLER.set("b");
        OWN.set("caller's own");
        assert_eq!(generator.next(), Some((Some("b"), Some("caller's own"))));
    });
}

#[test]
fn the_generators_value_wins_over_the_callers_later_change() {
    static V: ContextVar<&str> = ContextVar::new("v");
    Context::new().run(|| {
        V.set("caller-1");
        let mut first = true;
        let mut generator = std::iter::repeat_with(move || {
            if std::mem::take(&mut first) {
                V.set("generator");
            }
            V.get().unwrap()
        })
        .isolated();
        assert_eq!(generator.next(), Some("generator"));
        V.set("caller-2");
        assert_eq!(
            generator.next(),
            Some("generator"),
            "the generator's own layer is on top"
        );
        assert_eq!(V.get(), Ok("caller-2"));
    });
}

#[test]
fn a_token_from_one_resumption_resets_in_a_later_one_and_falls_through() {
    static V: ContextVar<&str> = ContextVar::new("v");
    Context::new().run(|| {
        V.set("caller-1");
        let mut token: Option<Token<&str>> = None;
        let mut step = 0;
        let mut generator = std::iter::from_fn(|| {
            step += 1;
            match step {
                1 => {
                    let t = V.set("generator");
                    // The caller's value is not the generator's own: the
                    // token records "no value", as PEP 568 would.
                    assert_eq!(t.old_value(), None);
                    token = Some(t);
                    Some(V.get().unwrap())
                }
                2 => {
                    V.reset(token.take().unwrap()).unwrap();
                    // Falls through to the caller's *current* value.
                    Some(V.get().unwrap())
                }
                _ => Some(V.get().unwrap()),
            }
        })
        .isolated();
        assert_eq!(generator.next(), Some("generator"));
        V.set("caller-2");
        assert_eq!(generator.next(), Some("caller-2"));
        V.set("caller-3");
        assert_eq!(
            generator.next(),
            Some("caller-3"),
            "nothing of the generator's own is left"
        );
    });
}

#[test]
fn a_generator_token_over_its_own_value_restores_that_value() {
    static V: ContextVar<u32> = ContextVar::new("v");
    let mut step = 0;
    let mut token = None;
    let mut generator = std::iter::from_fn(|| {
        step += 1;
        match step {
            1 => {
                V.set(1);
                token = Some(V.set(2));
                assert_eq!(token.as_ref().unwrap().old_value(), Some(&1));
            }
            2 => V.reset(token.take().unwrap()).unwrap(),
            _ => {}
        }
        V.get().ok()
    })
    .isolated();
    assert_eq!(generator.next(), Some(2));
    assert_eq!(generator.next(), Some(1));
    assert!(V.get().is_err());
}

#[test]
fn a_callers_token_is_refused_inside_the_generator_and_vice_versa() {
    static V: ContextVar<u32> = ContextVar::new("v");
    Context::new().run(|| {
        let caller_token = V.set(1);
        let mut slot = Some(caller_token);
        let mut generator = std::iter::from_fn(|| {
            let t = slot.take()?;
            let err = V.reset(t).unwrap_err();
            assert_eq!(err, ResetError::DifferentContext { var: "v" });
            Some(V.set(2))
        })
        .isolated();
        let generator_token = generator.next().unwrap();
        assert_eq!(V.get(), Ok(1), "the failed reset changed nothing");
        assert_eq!(
            V.reset(generator_token),
            Err(ResetError::DifferentContext { var: "v" })
        );
    });
}

#[test]
fn a_panicking_resumption_leaves_the_caller_and_the_layer_intact() {
    static V: ContextVar<u32> = ContextVar::new("v");
    Context::new().run(|| {
        V.set(1);
        let mut step = 0;
        let mut generator = std::iter::from_fn(|| {
            step += 1;
            match step {
                1 => V.set(10),
                2 => {
                    V.set(20);
                    panic!("in resumption");
                }
                _ => return Some(V.get().unwrap()),
            };
            Some(V.get().unwrap())
        })
        .isolated();
        assert_eq!(generator.next(), Some(10));
        assert!(catch_unwind(AssertUnwindSafe(|| generator.next())).is_err());
        assert_eq!(V.get(), Ok(1), "the caller's context is current again");
        assert_eq!(
            generator.next(),
            Some(10),
            "the panicking resumption's set was dropped"
        );
    });
}

#[cfg(feature = "futures")]
#[test]
fn isolated_streams_keep_their_own_layer() {
    use futures::StreamExt as _;
    static V: ContextVar<u32> = ContextVar::with_default("v", 0);
    static CALLER: ContextVar<u32> = ContextVar::with_default("caller", 0);
    futures::executor::block_on(
        async {
            let stream = futures::stream::unfold((), |()| async {
                let n = V.get().unwrap() + 1;
                V.set(n);
                Some(((n, CALLER.get().unwrap()), ()))
            });
            let mut stream = std::pin::pin!(contextvars::stream::StreamExt::isolated(stream));
            assert_eq!(stream.next().await, Some((1, 0)));
            CALLER.set(5);
            assert_eq!(
                stream.next().await,
                Some((2, 5)),
                "own value persists, caller's change seen"
            );
            assert_eq!(V.get(), Ok(0));
        }
        .in_current_context(),
    );
}

/// An isolated iterator reports the size hint and `Debug` of the one it
/// wraps.
#[test]
fn isolated_iterators_pass_on_size_hint_and_debug() {
    let mut generator = [1, 2, 3].into_iter().isolated();
    assert_eq!(generator.size_hint(), (3, Some(3)));
    assert_eq!(generator.next(), Some(1));
    assert_eq!(generator.size_hint(), (2, Some(2)));
    assert_eq!(
        format!("{generator:?}"),
        "Isolated { iter: IntoIter([2, 3]), .. }"
    );
    let filtered = [1, 2, 3].into_iter().filter(|_| true).isolated();
    assert_eq!(filtered.size_hint(), (0, Some(3)));
}

/// An isolated stream reports the size hint of the one it wraps, and names
/// itself in `Debug`.
#[cfg(feature = "futures")]
#[test]
fn isolated_streams_pass_on_size_hint_and_debug() {
    use contextvars::stream::StreamExt as _;
    use futures::Stream as _;
    let stream = futures::stream::iter([1, 2, 3]).isolated();
    assert_eq!(stream.size_hint(), (3, Some(3)));
    assert_eq!(format!("{stream:?}"), "IsolatedStream { .. }");
    let unbounded = futures::stream::repeat(1).isolated();
    assert_eq!(unbounded.size_hint(), (usize::MAX, None));
}
