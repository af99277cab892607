#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time.
#
#   fuzz/run.sh SECONDS [TARGET...]      (default: every target)
#
# Needs the nightly toolchain (AddressSanitizer); installs cargo-fuzz when
# it is missing. Without nightly it says so and exits 0, so CI without
# nightly still passes. Prints one summary line per target and exits
# non-zero when any target found something (a crash, a panic, a broken
# invariant, a timeout or an out-of-memory), leaving the reproducer in
# fuzz/artifacts/<target>/.
#
# Environment:
#   FUZZ_SANITIZER   address (default) or none (faster, finds panics only)
#   FUZZ_JOBS        cargo build jobs (default: cargo's own)
#   FUZZ_NICE        niceness of build and runs (default 10)
#
# Inputs the runs discover go to fuzz/target/corpus/<target>/ (ignored by
# git, kept between local runs, fresh in CI); the committed seeds in
# fuzz/corpus/<target>/ are only read.
set -uo pipefail

secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")"
sanitizer=${FUZZ_SANITIZER:-address}
nice=(nice -n "${FUZZ_NICE:-10}")
jobs=()
[ -n "${FUZZ_JOBS:-}" ] && jobs=(--jobs "$FUZZ_JOBS")

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain; fuzzing skipped"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    t0=$(date +%s)
    if ! "${nice[@]}" cargo install cargo-fuzz --locked; then
        echo "fuzz: cannot install cargo-fuzz; fuzzing skipped"
        exit 0
    fi
    echo "fuzz: cargo-fuzz installed in $(($(date +%s) - t0)) s"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

mkdir -p target/logs target/corpus
t0=$(date +%s)
# `cargo fuzz build` takes one target, or none for all of them.
if [ $# -eq 0 ]; then
    build=("")
else
    build=("${targets[@]}")
fi
for t in "${build[@]}"; do
    if ! "${nice[@]}" cargo +nightly fuzz build -s "$sanitizer" "${jobs[@]}" $t >target/logs/build.log 2>&1; then
        tail -n 30 target/logs/build.log
        echo "fuzz: build failed"
        exit 1
    fi
done
echo "fuzz: built ${targets[*]} in $(($(date +%s) - t0)) s (sanitizer: $sanitizer)"

# Per-target libFuzzer options. The whole-server target needs room (it
# holds a store and a runtime) and time (an input may log in: Argon2). It
# keeps state across inputs by design, so most inputs allocate more than
# they free, and libFuzzer's leak check would then scan the whole heap
# after each of them (half the throughput, and what it finds is reachable
# anyway); printing each newly covered function symbolizes it, which is
# slow in a binary this size.
options() {
    case "$1" in
        server_e2e) echo "-rss_limit_mb=4096 -timeout=60 -max_len=8192 -detect_leaks=0 -print_funcs=0" ;;
        *) echo "-timeout=10" ;;
    esac
}

failed=0
for t in "${targets[@]}"; do
    scratch=target/corpus/$t
    mkdir -p "$scratch" "artifacts/$t"
    stamp=target/logs/$t.started
    touch "$stamp"
    before=$(find "artifacts/$t" -type f | wc -l)
    log=target/logs/$t.log
    # shellcheck disable=SC2046 # options are words
    # server_e2e: also no leak check at exit, when the store's memtables
    # (freed through crossbeam's epoch GC, which never runs then) are
    # still live in a thread libFuzzer does not wait for.
    asan=${ASAN_OPTIONS:-}
    [ "$t" = server_e2e ] && asan="${asan:+$asan:}detect_leaks=0"
    ASAN_OPTIONS=$asan "${nice[@]}" cargo +nightly fuzz run -s "$sanitizer" "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 $(options "$t") >"$log" 2>&1
    status=$?
    after=$(find "artifacts/$t" -type f | wc -l)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    corpus=$(($(find "$scratch" -type f | wc -l) + $(find "corpus/$t" -type f | wc -l)))
    crashes=$((after - before))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # a finding whose reproducer libFuzzer could not write
    fi
    echo "fuzz: $t: runs=${runs:-?} time=${took:-?}s exec/s=${rate:-?} corpus=$corpus rss=${rss:-?}MB crashes=$crashes"
    if [ "$crashes" -ne 0 ]; then
        failed=1
        echo "fuzz: $t FOUND SOMETHING (exit $status); log: fuzz/$log; reproducers:"
        find "artifacts/$t" -type f -newer "$stamp" | sed 's/^/    fuzz\//'
        grep -m 5 -E "panicked|ERROR|SUMMARY|invariant" "$log" | sed 's/^/    /'
    fi
done
exit "$failed"
