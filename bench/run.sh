#!/usr/bin/env bash
# Reproduces the Performance table of the README: installs the baselines if
# missing (Debian: nats-server, ejabberd; util-linux for taskset/prlimit),
# builds confabd and confab-bench in release, and runs every scenario with
# the server (and each baseline) pinned to CPU 0 and the load generator to
# CPU 1. Prints the table with targets and writes the figures as JSON to
# $CARGO_TARGET_DIR/bench-results.json (bench/results.{txt,json} hold the
# published run).
#
#   bench/run.sh            # everything (about 15 minutes)
#   bench/run.sh --quick    # a first look (about 5 minutes)
#   bench/run.sh --only dm,group --systems confab,relay   # a subset
#
# Extra arguments go to `confab-bench all`. Set CARGO_TARGET_DIR to build
# elsewhere (default: target/, release profile).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v taskset >/dev/null || need+=(util-linux)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
[ -x /usr/sbin/ejabberdctl ] || need+=(ejabberd)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    # ejabberd's package starts a system instance; the bench runs its own.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p confab-server -p confab-bench

mode=all
args=("$@")
for a in "$@"; do
    case "$a" in --only|--systems) mode=run ;; esac
done

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# Highest priority (when allowed), so other work on a shared machine
# disturbs the figures as little as possible; children inherit it.
nice_cmd=()
if nice -n -20 true 2>/dev/null; then nice_cmd=(nice -n -20); fi
"${nice_cmd[@]}" "$CARGO_TARGET_DIR/release/confab-bench" "$mode" --pin --target --json "$CARGO_TARGET_DIR/bench-results.json" "${args[@]}"
