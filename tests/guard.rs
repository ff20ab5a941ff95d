//! `SetGuard`: what a guard shows of the value its `set` replaced, through
//! `old_value` and `Debug`, before it is dropped or defused.

use contextvars::{Context, ContextVar};

#[test]
fn a_guard_shows_the_value_its_set_replaced() {
    static LEVEL: ContextVar<u32> = ContextVar::new("level");
    Context::new().run(|| {
        let first = LEVEL.set_scoped(1);
        assert_eq!(first.old_value(), None, "nothing was set before");
        assert_eq!(
            format!("{first:?}"),
            r#"SetGuard { var: "level", old_value: None }"#
        );
        let second = LEVEL.set_scoped(2);
        assert_eq!(second.old_value(), Some(&1));
        assert_eq!(
            format!("{second:?}"),
            r#"SetGuard { var: "level", old_value: Some(1) }"#
        );
        drop(second);
        assert_eq!(LEVEL.get(), Ok(1));
        // Defused, the token keeps what the guard showed.
        let token = first.into_token();
        assert_eq!(token.old_value(), None);
        LEVEL.reset(token).unwrap();
        assert!(LEVEL.get().is_err());
    });
}
