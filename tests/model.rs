//! Model-based property test: random programs of `set`, `reset` (in and out
//! of order, with tokens of other variables and other contexts), `scope`,
//! `scope` whose body panics, reads of a context from another thread,
//! `copy_context`, `Context::copy`, nested `run` (and refused re-entry),
//! `wrap`, futures polled in a shared context or a copy, threads spawned with
//! a copy, and `isolated` generators with caller changes between
//! resumptions; forks (`Fork::new`, `run`, `merge`, `merge_overwriting`, in
//! and out of the fork's context, with conflicts, nested, with tokens
//! crossing them), `set_scoped` guards dropped in and out of order, in
//! another context and on another thread, variable and switch observers
//! installed and removed (hooks that read, write, `scope` and panic, and
//! another thread changing the observers meanwhile), channel messages, and
//! contexts dropped here or together with a copy on two threads at once —
//! run against a plain model (`tests/model/interp.rs`). Every read and every
//! observer notification is checked after every operation, and every value
//! is checked dropped, inside a context holding it; a divergence fails with
//! a shrunk program.
//!
//! The same interpreter replays the fuzzer's regression inputs
//! (`fuzz/regressions/ops/*`).

#[path = "model/interp.rs"]
mod interp;

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use interp::{Hook, MAX_DEPTH, OPS, Op, THREADS, VARS, decode, run_program};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRunner};

/// Programs share the global drop count, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Operations per `cargo test` run, across cases: under half the 1,000,000
/// of the programs without forks, guards, observers, channels or drop races,
/// whose operations cost about twice as much (threads meet, hooks run), so
/// that a run takes no longer than 1,000,000 operations without them.
const MIN_OPS: u64 = 450_000;

/// `MIN_OPS`, or `CONTEXTVARS_MODEL_OPS` when set: fewer operations for a
/// quick run (each mutant of `cargo mutants`, RELIABILITY.md).
fn min_ops() -> u64 {
    match std::env::var("CONTEXTVARS_MODEL_OPS") {
        Ok(ops) => ops
            .parse()
            .expect("CONTEXTVARS_MODEL_OPS: a number of operations"),
        Err(_) => MIN_OPS,
    }
}

/// The kinds of operation `CONTEXTVARS_MODEL_SKIP` (comma-separated) leaves
/// out of generated programs: `fork`, `guard`, `observe`, `churn`,
/// `channel`, `drop` (drop races), to see which checks a failure belongs to.
fn skipped(kind: &str) -> bool {
    std::env::var("CONTEXTVARS_MODEL_SKIP")
        .map(|list| list.split(',').any(|k| k.trim() == kind))
        .unwrap_or(false)
}

fn hook_strategy() -> impl Strategy<Value = Hook> {
    prop_oneof![
        Just(Hook::Plain),
        Just(Hook::Reads),
        Just(Hook::Writes),
        Just(Hook::Scopes),
        (0..4u8).prop_map(Hook::Panics),
    ]
}

/// `(weight, strategy)` pairs, without those of skipped kinds.
type Weighted = Vec<(u32, BoxedStrategy<Op>)>;

fn keep(ops: &mut Weighted, kind: &str, more: Weighted) {
    if !skipped(kind) {
        ops.extend(more);
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let var = 0..VARS.len();
    let mut leaves: Weighted = vec![
        (24, var.clone().prop_map(Op::Set).boxed()),
        (
            16,
            (0..64usize, var.clone())
                .prop_map(|(token, var)| Op::Reset { token, var })
                .boxed(),
        ),
        (4, Just(Op::Copy).boxed()),
        (4, Just(Op::New).boxed()),
        (4, (0..8usize).prop_map(Op::CopyOf).boxed()),
        (4, (0..8usize).prop_map(Op::ForeignRead).boxed()),
    ];
    keep(
        &mut leaves,
        "fork",
        vec![
            (2, Just(Op::ForkNew).boxed()),
            (
                2,
                (0..8usize, any::<bool>())
                    .prop_map(|(fork, overwrite)| Op::Merge { fork, overwrite })
                    .boxed(),
            ),
        ],
    );
    keep(
        &mut leaves,
        "guard",
        vec![
            (2, var.clone().prop_map(Op::Guard).boxed()),
            (
                2,
                (0..16usize, prop::bool::weighted(0.1))
                    .prop_map(|(guard, elsewhere)| Op::DropGuard { guard, elsewhere })
                    .boxed(),
            ),
        ],
    );
    keep(
        &mut leaves,
        "observe",
        vec![
            (
                1,
                (var.clone(), hook_strategy())
                    .prop_map(|(v, h)| Op::Observe(v, h))
                    .boxed(),
            ),
            (1, hook_strategy().prop_map(Op::OnSwitch).boxed()),
            (1, (0..8usize).prop_map(Op::Unobserve).boxed()),
        ],
    );
    keep(
        &mut leaves,
        "drop",
        // Mostly dropped here (cheap); one in five a race between threads
        // (each a round trip to other threads).
        vec![(
            1,
            prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)]
                .prop_map(Op::DropRace)
                .boxed(),
        )],
    );
    let leaf = prop::strategy::Union::new_weighted(leaves);
    leaf.prop_recursive(MAX_DEPTH as u32, 48, 6, move |inner| {
        let body = prop::collection::vec(inner, 0..6);
        let mut nodes: Weighted = vec![
            (
                2,
                (var.clone(), body.clone())
                    .prop_map(|(v, ops)| Op::Scope(v, ops))
                    .boxed(),
            ),
            (
                1,
                (var.clone(), body.clone())
                    .prop_map(|(v, ops)| Op::ScopePanic(v, ops))
                    .boxed(),
            ),
            (
                1,
                (var.clone(), body.clone())
                    .prop_map(|(v, ops)| Op::Borrow(v, ops))
                    .boxed(),
            ),
            (
                3,
                (0..8usize, body.clone())
                    .prop_map(|(i, ops)| Op::Run(i, ops))
                    .boxed(),
            ),
            (1, body.clone().prop_map(Op::Wrap).boxed()),
            (1, body.clone().prop_map(Op::Thread).boxed()),
            (
                1,
                (0..8usize, body.clone(), body.clone())
                    .prop_map(|(i, a, b)| Op::Poll(i, a, b))
                    .boxed(),
            ),
            (
                1,
                (body.clone(), body.clone())
                    .prop_map(|(a, b)| Op::PollCopy(a, b))
                    .boxed(),
            ),
            (
                2,
                prop::collection::vec((body.clone(), body.clone()), 1..4)
                    .prop_map(Op::Isolated)
                    .boxed(),
            ),
        ];
        keep(
            &mut nodes,
            "fork",
            vec![(
                3,
                (0..8usize, body.clone())
                    .prop_map(|(f, ops)| Op::ForkRun(f, ops))
                    .boxed(),
            )],
        );
        keep(
            &mut nodes,
            "churn",
            vec![(1, body.clone().prop_map(Op::Churn).boxed())],
        );
        keep(
            &mut nodes,
            "channel",
            vec![(1, body.prop_map(Op::Channel).boxed())],
        );
        prop::strategy::Union::new_weighted(nodes)
    })
}

#[test]
fn random_programs_match_the_model() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Under Miri: a few short programs. Otherwise batches until `MIN_OPS`
    // operations have run (about 1,000 programs).
    let (batch, min_ops, max_len) = if cfg!(miri) {
        (3, 0, 16)
    } else {
        (200, min_ops(), 120)
    };
    // Built once: a recursive strategy is not cheap to build.
    let programs_strategy = prop::collection::vec(op_strategy(), 1..max_len);
    let start = OPS.load(Ordering::Relaxed);
    let mut programs = 0;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: batch,
            failure_persistence: None,
            // ChaCha, the default, dominates the run time in a debug build.
            rng_algorithm: RngAlgorithm::XorShift,
            ..Config::default()
        });
        runner
            .run(&programs_strategy, |program| {
                run_program(&program);
                Ok(())
            })
            .unwrap();
        programs += batch;
        if OPS.load(Ordering::Relaxed) - start >= min_ops {
            break;
        }
    }
    let ops = OPS.load(Ordering::Relaxed) - start;
    let threads = THREADS.load(Ordering::Relaxed);
    println!("model test: {programs} programs, {ops} operations checked, {threads} threads");
}

/// Inputs the fuzzer found interesting (`fuzz/regressions/ops`), replayed.
#[test]
#[cfg_attr(miri, ignore = "reads files: Miri isolates the file system")]
#[cfg_attr(
    not(contextvars_fuzz_corpus),
    ignore = "no fuzz/regressions/ here (not in the published package): run from a git checkout"
)]
fn fuzz_regressions_match_the_model() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/ops");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        let program = decode(&std::fs::read(&path).unwrap());
        println!("{}: {} ops", path.display(), program.len());
        run_program(&program);
        replayed += 1;
    }
    assert!(replayed > 0, "no inputs in {}", dir.display());
    println!("replayed {replayed} fuzz regressions");
}

/// Hand-written programs for named cases, so they run on
/// every build regardless of what the generator draws.
#[test]
fn named_programs_match_the_model() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use Op::*;
    let programs: Vec<Vec<Op>> = vec![
        // Out-of-order resets: a, a, reset the first, then the second.
        vec![
            Set(0),
            Set(0),
            Reset { token: 0, var: 0 },
            Reset { token: 1, var: 0 },
        ],
        // A token of another variable.
        vec![
            Set(0),
            Reset { token: 0, var: 1 },
            Reset { token: 0, var: 0 },
        ],
        // A token from another context (a run), reset outside it and inside
        // a later run of the same context.
        vec![
            New,
            Run(1, vec![Set(1)]),
            Reset { token: 0, var: 1 },
            Run(1, vec![Set(2), Reset { token: 0, var: 1 }]),
        ],
        // Re-entry of the current context and of an outer one.
        vec![New, Run(1, vec![Run(1, vec![]), Run(0, vec![Set(0)])])],
        // A generator resetting its first token in a later resumption after
        // the caller changed the value under it.
        vec![
            Set(0),
            Isolated(vec![
                (vec![], vec![Set(0)]),
                (vec![Set(0)], vec![Reset { token: 2, var: 0 }]),
                (vec![Set(0)], vec![Reset { token: 0, var: 0 }]),
            ]),
        ],
        // A task polled in a shared context, with a copy taken between.
        vec![
            New,
            Poll(1, vec![Set(2)], vec![Set(2), CopyOf(1)]),
            CopyOf(1),
        ],
        vec![
            Set(1),
            PollCopy(vec![Set(1)], vec![Reset { token: 1, var: 1 }]),
        ],
        vec![
            Set(0),
            Thread(vec![Set(0), Reset { token: 0, var: 0 }, Wrap(vec![Set(2)])]),
        ],
    ];
    for program in &programs {
        run_program(program);
    }
}

/// Hand-written programs for forks, guards, observers, channels and drops,
/// each named after what it pins; every one runs, and the failures are
/// listed together.
#[test]
fn named_programs_of_forks_guards_observers_and_drops_match_the_model() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use Op::*;
    let merge = |fork| Merge {
        fork,
        overwrite: false,
    };
    let programs: Vec<(&str, Vec<Op>)> = vec![
        (
            "a merge inside a sibling fork's child is refused",
            vec![ForkNew, ForkNew, ForkRun(1, vec![merge(0)]), merge(0)],
        ),
        (
            "a merge in the outer fork's parent is refused",
            vec![
                ForkNew,
                ForkRun(0, vec![ForkNew, Set(0)]),
                merge(1),
                merge(0),
            ],
        ),
        (
            "a conflict applies nothing; merge_overwriting lets the child win",
            vec![
                Set(0),
                ForkNew,
                ForkRun(0, vec![Set(0), Set(1)]),
                Set(0),
                merge(0),
                Merge {
                    fork: 0,
                    overwrite: true,
                },
            ],
        ),
        (
            "a token made in the parent before the fork resets in the child",
            vec![
                Set(0),
                ForkNew,
                ForkRun(0, vec![Reset { token: 0, var: 0 }]),
                merge(0),
            ],
        ),
        (
            "a child's token resets in the parent only after the merge applied it",
            vec![
                ForkNew,
                ForkRun(0, vec![Set(1), Set(1)]),
                Set(1),
                Reset { token: 0, var: 1 },
                Merge {
                    fork: 0,
                    overwrite: true,
                },
                Reset { token: 1, var: 1 },
            ],
        ),
        (
            "a child's token of a variable the merge did not apply stays refused",
            vec![
                Set(1),
                ForkNew,
                ForkRun(0, vec![Set(1), Set(1), Reset { token: 1, var: 1 }]),
                merge(0),
                Reset { token: 2, var: 1 },
            ],
        ),
        (
            "nested forks merge step by step",
            vec![
                ForkNew,
                ForkRun(0, vec![ForkNew, ForkRun(1, vec![Set(2)]), merge(1)]),
                merge(0),
            ],
        ),
        (
            "guards dropped in and out of order",
            vec![
                Guard(0),
                Guard(0),
                Guard(0),
                DropGuard {
                    guard: 0,
                    elsewhere: false,
                },
                DropGuard {
                    guard: 2,
                    elsewhere: false,
                },
                DropGuard {
                    guard: 1,
                    elsewhere: false,
                },
            ],
        ),
        (
            "a guard dropped in another context changes nothing and does not panic",
            vec![
                New,
                Run(1, vec![Guard(1)]),
                DropGuard {
                    guard: 0,
                    elsewhere: false,
                },
                Guard(2),
                DropGuard {
                    guard: 1,
                    elsewhere: true,
                },
                Guard(0),
                ForkNew,
                ForkRun(0, vec![Guard(0)]),
            ],
        ),
        (
            "a guard made in a fork's child resets in the parent after the merge",
            vec![
                ForkNew,
                ForkRun(0, vec![Guard(3)]),
                merge(0),
                DropGuard {
                    guard: 0,
                    elsewhere: false,
                },
            ],
        ),
        (
            "observers see set, reset, scope and merge with the visible values",
            vec![
                Observe(0, Hook::Reads),
                Observe(0, Hook::Writes),
                Set(0),
                Reset { token: 0, var: 0 },
                Scope(0, vec![Set(0)]),
                ForkNew,
                ForkRun(0, vec![Set(0)]),
                merge(0),
            ],
        ),
        (
            "a set inside a generator reports the caller's value as previous",
            vec![
                Observe(1, Hook::Plain),
                Set(1),
                Isolated(vec![(vec![], vec![Set(1), Scope(1, vec![])])]),
            ],
        ),
        (
            "hooks that panic are switched off",
            vec![
                Observe(0, Hook::Panics(0)),
                OnSwitch(Hook::Panics(1)),
                Set(0),
                Set(0),
                New,
                Run(1, vec![Set(0)]),
                Run(1, vec![]),
            ],
        ),
        (
            "hooks that scope keep working while another thread changes the observers",
            vec![
                Observe(2, Hook::Scopes),
                OnSwitch(Hook::Scopes),
                Churn(vec![
                    Set(2),
                    Scope(2, vec![Set(1)]),
                    New,
                    Run(1, vec![Set(2)]),
                    Wrap(vec![Set(2)]),
                ]),
            ],
        ),
        (
            "a channel's message carries the sender's inherited context",
            vec![Set(3), Set(0), Channel(vec![Set(1), Set(3)])],
        ),
        (
            "a dropped context is not an observed switch, and hooks cannot refill it",
            vec![
                OnSwitch(Hook::Writes),
                DropRace(0),
                DropRace(1),
                DropRace(2),
            ],
        ),
        (
            "a context dropped while a borrow is open drops its values inside it",
            vec![Set(0), Borrow(0, vec![DropRace(0)])],
        ),
        (
            "a context and its copy dropped on two threads at once",
            // Under Miri a thread per drop, and Miri explores the
            // interleavings itself: a few races.
            std::iter::repeat_with(|| DropRace(1))
                .take(if cfg!(miri) { 2 } else { 200 })
                .collect(),
        ),
    ];
    let mut failed = Vec::new();
    for (name, program) in &programs {
        if std::panic::catch_unwind(|| run_program(program)).is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "failed: {failed:#?}");
}
