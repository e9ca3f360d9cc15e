#!/usr/bin/python3
"""What tracing costs: `ikada bench` put throughput on a local three-node
cluster with tracing off and with tracing on (OTLP/HTTP to a local
receiver that accepts without decoding, sampling 10 % of the traces),
alternating, a fresh cluster each run.  Prints every run, the medians and
their ratio; rounds run off-on and on-off in turn.  Not part of
scripts/test.

Usage: IKADA_BUILD=build-release /usr/bin/python3 tests/bench/trace_overhead.py
       [--rounds 3] [--duration-s 5] [--clients 64] [--ratio 0.1]
"""

import argparse
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import cluster as ck  # noqa: E402
import otlp  # noqa: E402


def run_once(traced, args, receiver):
    env = {"OTEL_SDK_DISABLED": "true"}
    if traced:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(args.ratio),
        }
    c = ck.Cluster(name="trace-overhead", env=env)
    try:
        c.start()
        c.wait_leader(timeout=15)
        pids = ",".join(str(c.nodes[i].proc.pid) for i in c.ids())
        common = ["--timeout-ms", "20000", "bench", "--clients",
                  str(args.clients), "--mix", "put", "--server-pids", pids]
        warm = c.cli(*common, "--duration-s", "1", timeout=120)
        if not warm.ok:
            sys.exit("warm-up failed: %r" % warm)
        r = c.cli(*common, "--duration-s", str(args.duration_s),
                  timeout=600)
        if not r.ok:
            sys.exit("bench failed: %r" % r)
        text = r.out.decode()
        ops = float(re.search(r"ops_per_s=([0-9.]+)", text).group(1))
        cpu = re.search(r"server_cpu_us_per_op=([0-9.]+)", text)
        return ops, float(cpu.group(1)) if cpu else float("nan")
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration-s", type=int, default=5)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--ratio", type=float, default=0.1)
    args = ap.parse_args()

    receiver = otlp.Receiver(decode=False)
    runs = {False: [], True: []}
    try:
        for rnd in range(args.rounds):
            # off-on, then on-off: a drift of the machine's speed within a
            # round weighs on both sides alike.
            for traced in ((False, True) if rnd % 2 == 0 else (True, False)):
                ops, cpu = run_once(traced, args, receiver)
                runs[traced].append((ops, cpu))
                print("round %d tracing=%s ops_per_s=%.0f "
                      "server_cpu_us_per_op=%.1f" % (
                          rnd + 1, "on" if traced else "off", ops, cpu),
                      flush=True)
    finally:
        receiver.close()
    off = statistics.median(o for o, _ in runs[False])
    on = statistics.median(o for o, _ in runs[True])
    off_cpu = statistics.median(c for _, c in runs[False])
    on_cpu = statistics.median(c for _, c in runs[True])
    print("median ops_per_s off=%.0f on=%.0f ratio=%.3f (cost %.1f %%)" % (
        off, on, on / off, 100 * (1 - on / off)))
    print("median server_cpu_us_per_op off=%.1f on=%.1f" % (off_cpu, on_cpu))
    print("export requests received: %d" % receiver.requests)


if __name__ == "__main__":
    main()
