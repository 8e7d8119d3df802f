#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 45) on the stable
# toolchain (`-s none`: no sanitizer, which would need nightly), installing
# cargo-fuzz first if this machine lacks it. A crash fails the run and
# leaves its input in fuzz/artifacts/TARGET/: copy it to
# fuzz/regressions/TARGET/ with the fix, so the replay test keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-45}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
for target in $(cargo fuzz list); do
    echo "fuzz: $target for ${secs}s" >&2
    cargo fuzz run "$target" -s none -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
        | grep -E '^(Done|stat::number_of_executed_units)|panicked|SUMMARY|artifact' >&2 || true
    if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
        echo "fuzz: $target crashed; see fuzz/artifacts/$target" >&2
        exit 1
    fi
done
