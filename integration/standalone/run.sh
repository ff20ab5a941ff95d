#!/usr/bin/env bash
# Instructions (callgrind) and wall time per operation of the standalone
# crate (src/main.rs), for one or more checkouts of `contextvars`:
#
#   bash integration/standalone/run.sh                  # this checkout
#   bash integration/standalone/run.sh /path/to/other . # another checkout, then this one
#   bash integration/standalone/run.sh --check          # CI: fmt, clippy, each operation once
#
# Each checkout is built from a temporary copy of this crate whose
# `contextvars` dependency points at it (nothing is written into the
# checkouts), in its own target directory under
# ${CARGO_TARGET_DIR:-<repo>/target}/standalone-<label>. Instructions per
# operation are (total at 2N - total at N) / N with N = CALLGRIND_N
# (default 1,000,000): the difference cancels start-up. Wall time: ROUNDS
# rounds (default 5); in each, every operation of every checkout, in turn
# (so the checkouts alternate), prints the median of REPEATS (default 9)
# timed loops of TIME_N (default 2,000,000) operations; the table shows the
# median over the rounds and the range. OPS restricts the operations
# (space-separated names; `contextvars-standalone list` prints them all).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target_base=${CARGO_TARGET_DIR:-$repo/target}
CALLGRIND_N=${CALLGRIND_N:-1000000}
TIME_N=${TIME_N:-2000000}
REPEATS=${REPEATS:-9}
ROUNDS=${ROUNDS:-5}

check=false
if [ "${1:-}" = --check ]; then
    check=true
    shift
fi
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=("$repo")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

labels=()
bins=()
for d in "${dirs[@]}"; do
    d=$(cd "$d" && pwd)
    label=$(git -C "$d" rev-parse --short HEAD 2>/dev/null || basename "$d")
    if ! git -C "$d" diff --quiet HEAD -- src build.rs 2>/dev/null; then
        label="$label+changes"
    fi
    copy="$work/$label"
    mkdir -p "$copy"
    cp -r "$here/Cargo.toml" "$here/src" "$copy/"
    [ -f "$here/Cargo.lock" ] && cp "$here/Cargo.lock" "$copy/"
    sed -i "s|^contextvars = { path = \"../..\" }|contextvars = { path = \"$d\" }|" "$copy/Cargo.toml"
    grep -q "path = \"$d\"" "$copy/Cargo.toml" || { echo "could not point $copy at $d" >&2; exit 1; }
    features=()
    if grep -rqE 'pub fn sync_scope<' "$d/src"; then
        features=(--features sync_scope_name)
    fi
    echo "building $label ($d) ${features[*]}" >&2
    CARGO_TARGET_DIR="$target_base/standalone-$label" \
        cargo build --quiet --release --manifest-path "$copy/Cargo.toml" "${features[@]}"
    labels+=("$label")
    bins+=("$target_base/standalone-$label/release/contextvars-standalone")
    if $check; then
        (cd "$copy" && cargo fmt --check)
        CARGO_TARGET_DIR="$target_base/standalone-$label" \
            cargo clippy --quiet --release --manifest-path "$copy/Cargo.toml" "${features[@]}" -- -D warnings
        for op in $("${bins[-1]}" list); do
            "${bins[-1]}" "$op" 1000
            "${bins[-1]}" "$op" 1000 time 1 >/dev/null
        done
        echo "$label: every operation runs" >&2
    fi
done
$check && exit 0

if ! command -v valgrind >/dev/null; then
    echo "valgrind is missing: apt-get install -y valgrind" >&2
    exit 1
fi

ops=${OPS:-$("${bins[0]}" list)}

# Instructions: callgrind's total at N and at 2N.
refs() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 |
        sed -n 's/.*refs: *\([0-9,]*\).*/\1/p' | tr -d ,
}
declare -A instr
for i in "${!bins[@]}"; do
    for op in $ops; do
        a=$(refs "${bins[$i]}" "$op" "$CALLGRIND_N")
        b=$(refs "${bins[$i]}" "$op" $((2 * CALLGRIND_N)))
        instr[$i,$op]=$(awk -v a="$a" -v b="$b" -v n="$CALLGRIND_N" 'BEGIN { printf "%.1f", (b - a) / n }')
        echo "  ${labels[$i]} $op: ${instr[$i,$op]} instructions" >&2
    done
done

# Wall time, the checkouts alternating within each round.
declare -A times
for round in $(seq "$ROUNDS"); do
    echo "time round $round of $ROUNDS" >&2
    for op in $ops; do
        for i in "${!bins[@]}"; do
            times[$i,$op]+="$("${bins[$i]}" "$op" "$TIME_N" time "$REPEATS") "
        done
    done
done

summary() { # median (min–max) of the numbers given
    tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2f ns (%.2f–%.2f)", m, v[1], v[NR] }'
}

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(rustc --version), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
header="| operation |"
rule="|---|"
for l in "${labels[@]}"; do
    header+=" $l instructions | $l time |"
    rule+="--:|--:|"
done
echo "$header"
echo "$rule"
for op in $ops; do
    row="| \`$op\` |"
    for i in "${!bins[@]}"; do
        row+=" ${instr[$i,$op]} | $(echo "${times[$i,$op]}" | summary) |"
    done
    echo "$row"
done
