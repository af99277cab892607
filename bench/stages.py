#!/usr/bin/env python3
"""Where the server's CPU goes, by stage, from a folded profile.

    perf script -i N.data | inferno-collapse-perf > N.folded
    bench/stages.py N.folded CPU_US_PER_MSG

N.data comes from `CONFAB_BENCH_PERF=DIR confab-bench run ...` (one file
per measured window: the steady state only); CPU_US_PER_MSG is that row's
cpu/msg. Each stack is put in the first stage (in the order below) whose
pattern one of its frames matches; the stage's share of the samples times
the CPU per message is its cost per message.
"""
import re
import sys

STAGES = [
    ("store, background: flush and compaction (fjall workers)", r"^fjall:worker"),
    ("store: fsync of the journal", r"fdatasync|fsync"),
    ("store: commit (batch into memtables and journal)", r"store::tx::Tx::commit"),
    ("store: memtable rotation and freeing", r"Db::bound_unflushed|rotate_memtable"),
    ("store: reads inside the write transaction", r"store::tx::Tx::get|Keyspace::get"),
    ("store: staging writes", r"store::tx::Tx::(put|append)|Tx>::append"),
    ("store: transaction logic, queue", r"^confab-writer"),
    ("TLS encrypt", r"TlsStream::encrypt|MessageEncrypter"),
    ("write syscalls (TCP send)", r"sys_sendto|sys_write|tcp_sendmsg"),
    ("read, decrypt (TCP receive, TLS)", r"TlsStream::poll_plain|sys_recvfrom|sys_read|tcp_recvmsg|MessageDecrypter"),
    ("decode and session machine", r"handle_input|decode_client_frame|FrameDecoder"),
    ("validate", r"validate::"),
    ("fan-out (hub, outbound queues)", r"Delivery>::deliver|Hub::push|OutboundQueue::(push|drain_into|recv_into)"),
    ("encode", r"encode_frame|encode_to_vec|encode_raw|ServerSession::(send|respond)"),
    ("hand-off to the writer", r"Writer::submit"),
    ("runtime, scheduling, other", r""),
]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    per_msg = float(sys.argv[2])
    pats = [(name, re.compile(p)) for name, p in STAGES]
    totals = {name: 0 for name, _ in STAGES}
    total = 0
    with open(sys.argv[1]) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            n = int(n)
            total += n
            frames = stack.split(";")
            for name, pat in pats:
                if any(pat.search(fr) for fr in frames):
                    totals[name] += n
                    break
    if total == 0:
        sys.exit("no samples")
    print(f"| stage | share of server CPU | µs per message |")
    print(f"|---|---|---|")
    for name, _ in STAGES:
        share = totals[name] / total
        print(f"| {name} | {100 * share:.1f} % | {share * per_msg:.2f} |")
    print(f"| **total** | 100 % | {per_msg:.2f} |")


if __name__ == "__main__":
    main()
