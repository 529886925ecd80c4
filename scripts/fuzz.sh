#!/usr/bin/env bash
# Fuzzes lang-agent's parsers of untrusted input with cargo fuzz (libFuzzer).
#
#   scripts/fuzz.sh [SECONDS]      each target for SECONDS (default 20)
#   FUZZ_TARGETS="a b" scripts/fuzz.sh 300     only those targets
#
# Every target of fuzz/ (`cargo fuzz list`) runs from its seed corpus, fuzz/corpus/<target>/,
# which stays as committed: what the fuzzer learns goes to fuzz/target/corpus/<target>/ and is
# reused by the next run on this machine. Adding a target is its file in fuzz/fuzz_targets/, its
# [[bin]] in fuzz/Cargo.toml and a few seeds; this script picks it up.
#
# Works with the stable toolchain only: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass its -Z flags.
# No sanitizer (the code is safe Rust): what is hunted is panics (failed invariants), memory
# blow-ups (-rss_limit_mb) and hangs (-timeout). Exits non-zero when any target fails, after
# printing each failing input and how to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-20}"
# The version this script was written against; --locked builds it as released.
CARGO_FUZZ_VERSION=0.13.2

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io" >&2
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# The same flags for build and run, so that run does not build again. fuzz/Cargo.toml's dev
# profile is optimised (opt-level 1) with overflow checks and debug assertions on: it builds in
# about half the time of --release and runs as fast here.
build_flags=(--dev --sanitizer none)

cd fuzz
echo "==================== cargo fuzz build ===================="
cargo fuzz build "${build_flags[@]}"

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
failed=()
for target in "${targets[@]}"; do
    echo "==================== fuzz $target (${secs}s) ===================="
    work="target/corpus/$target"
    seeds="corpus/$target"
    mkdir -p "$work" "$seeds" "artifacts/$target"
    log="target/fuzz-$target.log"
    started="target/fuzz-$target.started"
    touch "$started"
    # New inputs are written to the first corpus directory only. libFuzzer's progress lines go
    # to the log; what is printed is the outcome.
    if cargo fuzz run "${build_flags[@]}" "$target" "$work" "$seeds" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^Done [0-9]+ runs' "$log" || true
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || true
    else
        failed+=("$target")
        # From the first sign of trouble: a panic, an OOM or a hang, with its stack.
        start="$(grep -n -m1 -E 'panicked at|ERROR: libFuzzer|ALARM:' "$log" | cut -d: -f1 || true)"
        sed -n "${start:-1},\$p" "$log" | head -n 80
        echo "fuzz.sh: the whole output is in fuzz/$log"
        artifact="$(find "artifacts/$target" -type f -newer "$started" | head -n1)"
        if [[ -n "$artifact" ]]; then
            echo "fuzz.sh: $target failed on fuzz/$artifact ($(wc -c <"$artifact") bytes), base64:"
            base64 -w0 "$artifact"
            echo
            echo "fuzz.sh: replay with: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_flags[*]} $target $artifact)"
            echo "fuzz.sh: then add the input as a unit test in src/fuzzing.rs and fix the cause."
        fi
    fi
done

if ((${#failed[@]})); then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${secs}s each, no failure"
