#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target (nightly, no sanitizer), replays the committed
# regression inputs (fuzz/regressions/<target>/: every crash ever found), then fuzzes each target
# briefly from the seed corpus. Skipped, saying so, when no nightly toolchain is installed.
# Usage: .ci/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
# grep without -q reads all of rustup's output (no SIGPIPE for pipefail to report)
if ! rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null; then
    echo "fuzz smoke skipped: no nightly toolchain (rustup toolchain list); the build and tests need stable only"
    exit 0
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked --quiet
fi
bash fuzz/seed_corpus.sh
cargo +nightly fuzz build -O --sanitizer none
for t in $(cargo +nightly fuzz list); do
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        echo "== $t: replaying $(ls fuzz/regressions/$t | wc -l) regression input(s)"
        cargo +nightly fuzz run -O --sanitizer none "$t" fuzz/regressions/$t/* -- -rss_limit_mb=2048
    fi
    echo "== $t: fuzzing ${secs}s"
    log=$(mktemp)
    rc=0
    # Every target under the same 2 GB memory limit as the regression replay (FUZZING.md); the
    # timeout is longer than the campaign's 10 s because CI machines are shared.
    cargo +nightly fuzz run -O --sanitizer none "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E '^stat::number_of_executed_units' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz target $t failed (exit $rc)" >&2
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz smoke: all targets ran without a crash or timeout"
