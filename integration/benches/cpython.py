#!/usr/bin/env python3
"""CPython's `contextvars`, timed for the same operations as benches/core.rs.

Prints JSON: {"python": <version>, "results": {"<op>/cpython/<n>": ns, ...}},
where n is the number of variables in the current context and ns is the
time per operation in nanoseconds: the fastest of 7 timed runs (as timeit's
documentation advises; the median is less stable here), less the fastest
run of an empty `timeit` loop iteration, so the numbers are CPython's
operation alone, the reading most favourable to CPython.

Usage: python3 benches/cpython.py [--quick] > cpython.json
Standard library only.
"""

import contextvars
import json
import platform
import sys
import timeit

SIZES = (1, 10, 100, 1000)
REPEAT = 7


def noop():
    pass


def per_op(stmt, setup, env, target_s):
    """Seconds per execution of `stmt`: the fastest of REPEAT runs."""
    timer = timeit.Timer(stmt, setup, globals=env)
    number, took = timer.autorange()
    # autorange aims at 0.2 s per run; scale to the requested run length.
    number = max(1, int(number * target_s / max(took, 1e-9)))
    runs = timer.repeat(REPEAT, number)
    return min(runs) / number


def main():
    quick = "--quick" in sys.argv
    target_s = 0.05 if quick else 0.2

    target = contextvars.ContextVar("target")
    defaulted = contextvars.ContextVar("defaulted", default=7)
    missing = contextvars.ContextVar("missing")
    fillers = [contextvars.ContextVar("filler") for _ in range(max(SIZES))]

    env = {
        "T": target,
        "D": defaulted,
        "M": missing,
        "cc": contextvars.copy_context,
        "noop": noop,
    }
    # Locals bound in `setup` are fast locals inside timeit's inner function.
    setup = "t_ = T; d_ = D; m_ = M; cc_ = cc; noop_ = noop; other = cc()"
    stmts = {
        "get": "t_.get()",
        "get_default": "d_.get()",
        "get_missing": "try:\n    m_.get()\nexcept LookupError:\n    pass",
        "get_or": "t_.get(0)",
        "set_reset": "tok = t_.set(3); t_.reset(tok)",
        "set_reset_new": "tok = m_.set(3); m_.reset(tok)",
        "copy_context": "cc_()",
        "run_noop": "other.run(noop_)",
        # A C-level callable: `run` without a Python frame for the callee.
        "run_builtin": "other.run(tuple)",
    }

    results = {}
    for n in SIZES:
        ctx = contextvars.Context()

        def fill():
            target.set(1)
            for var in fillers[: n - 1]:
                var.set(2)

        ctx.run(fill)
        assert len(ctx) == n

        def measure():
            base = per_op("pass", setup, env, target_s)
            for op, stmt in stmts.items():
                t = per_op(stmt, setup, env, target_s) - base
                results[f"{op}/cpython/{n}"] = max(t, 0.0) * 1e9

        ctx.run(measure)

    print(
        json.dumps(
            {
                "python": platform.python_implementation()
                + " "
                + platform.python_version(),
                "results": results,
            },
            indent=1,
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
