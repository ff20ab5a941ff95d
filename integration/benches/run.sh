#!/usr/bin/env bash
# Reproduces BENCHMARKS.md in one command:
#
#     bash integration/benches/run.sh
#
# 1. criterion benchmarks `core` and `async` (every feature, so
#    `contextvars::tokio::spawn` is measured when it exists);
# 2. CPython's `contextvars` through benches/cpython.py (skipped, with a
#    note, when there is no python3);
# 3. the 1,000,000-context memory count (examples/memory.rs);
# 4. benches/report.py: the tables in BENCHMARKS.md and benches/chart.svg.
#
# Short measurements by default (the whole run takes a few minutes on two
# cores, most of it compiling). On a quiet machine, longer ones give steadier
# medians: BENCH_MEASURE_MS=3000 BENCH_WARMUP_MS=1000 bash integration/benches/run.sh
# Arguments go to criterion (e.g. a filter: bash integration/benches/run.sh '^get/').
# Honours CARGO_TARGET_DIR; results land in $CARGO_TARGET_DIR/criterion and
# $CARGO_TARGET_DIR/bench-results.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export BENCH_MEASURE_MS="${BENCH_MEASURE_MS:-1000}"
export BENCH_WARMUP_MS="${BENCH_WARMUP_MS:-300}"
results="$CARGO_TARGET_DIR/bench-results"
mkdir -p "$results"
# Results of an earlier run (or of a benchmark since removed) must not mix
# with this one's; a filtered run only replaces what it measures.
if [ $# -eq 0 ]; then
    rm -rf "$CARGO_TARGET_DIR/criterion"
fi
rm -f "$results"/*.json

python=""
if command -v python3 >/dev/null 2>&1 && python3 -c 'import contextvars, timeit, json' 2>/dev/null; then
    python=python3
fi

echo "::: criterion: integration/benches/core.rs, integration/benches/async.rs"
cargo bench -p contextvars-integration --all-features --bench core --bench async -- "$@"

if [ -n "$python" ]; then
    echo "::: CPython contextvars: benches/cpython.py"
    quick=()
    if [ "$BENCH_MEASURE_MS" -lt 1000 ]; then quick=(--quick); fi
    "$python" integration/benches/cpython.py "${quick[@]}" >"$results/cpython.json"
else
    echo "::: no python3: skipping the CPython comparison"
fi

echo "::: memory: 1,000,000 contexts (examples/memory.rs)"
cargo run --release -p contextvars --example memory >"$results/memory.json"
cat "$results/memory.json"

if [ -n "$python" ]; then
    echo "::: report: BENCHMARKS.md, benches/chart.svg"
    "$python" integration/benches/report.py --target-dir "$CARGO_TARGET_DIR" --results "$results"
else
    echo "::: no python3: BENCHMARKS.md and benches/chart.svg not regenerated"
    echo "    (criterion's results are in $CARGO_TARGET_DIR/criterion)"
fi
