#!/usr/bin/python3
"""What tracing costs: `ikada bench` put throughput on a local three-node
cluster with tracing off and with tracing on (OTLP/HTTP to a local
receiver that accepts without decoding, sampling 10 % of the traces),
alternating, a fresh cluster each run.  Prints every run, the medians and
their ratio; rounds run off-on and on-off in turn.  Not part of
scripts/test.

Usage: IKADA_BUILD=build-release /usr/bin/python3 tests/bench/trace_overhead.py
       [--rounds 3] [--duration-s 5] [--clients 64] [--ratio 0.1]
       [--baseline DIR]

With --baseline, both sides run with tracing off: the build in DIR (one
made before tracing existed, say) against this one, to show what tracing
costs when it is off.

receiver_cpu is the share of one core the local receiver took during a
run.  It runs on the same machine, which a real collector would not, so
its threads run at nice 19.
"""

import argparse
import os
import re
import resource
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import cluster as ck  # noqa: E402
import otlp  # noqa: E402


def own_cpu_s():
    """CPU time of this process: the receiver's threads, as the rest only
    waits for children."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_once(arm, args, receiver):
    label, build, traced = arm
    ck.SERVER = os.path.join(build, "ikada-server")
    ck.CLI = os.path.join(build, "ikada")
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
        before = own_cpu_s()
        r = c.cli(*common, "--duration-s", str(args.duration_s),
                  timeout=600)
        receiver_cpu = own_cpu_s() - before
        if not r.ok:
            sys.exit("bench failed: %r" % r)
        text = r.out.decode()
        ops = float(re.search(r"ops_per_s=([0-9.]+)", text).group(1))
        cpu = re.search(r"server_cpu_us_per_op=([0-9.]+)", text)
        return (ops, float(cpu.group(1)) if cpu else float("nan"),
                receiver_cpu / args.duration_s)
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration-s", type=int, default=5)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--baseline", metavar="DIR")
    args = ap.parse_args()
    arms = [("off", ck.BUILD, False), ("on", ck.BUILD, True)]
    if args.baseline:
        arms = [("base", os.path.abspath(args.baseline), False),
                ("off", ck.BUILD, False)]

    receiver = otlp.Receiver(decode=False, nice=19)
    runs = {arm[0]: [] for arm in arms}
    try:
        for rnd in range(args.rounds):
            # A-B, then B-A: a drift of the machine's speed within a round
            # weighs on both sides alike.
            for arm in arms if rnd % 2 == 0 else arms[::-1]:
                ops, cpu, rcpu = run_once(arm, args, receiver)
                runs[arm[0]].append((ops, cpu))
                print("round %d %s ops_per_s=%.0f server_cpu_us_per_op=%.1f "
                      "receiver_cpu=%.0f%%" % (rnd + 1, arm[0], ops, cpu,
                                                100 * rcpu), flush=True)
    finally:
        receiver.close()
    (a, _, _), (b, _, _) = arms
    ops_a = statistics.median(o for o, _ in runs[a])
    ops_b = statistics.median(o for o, _ in runs[b])
    cpu_a = statistics.median(c for _, c in runs[a])
    cpu_b = statistics.median(c for _, c in runs[b])
    print("median ops_per_s %s=%.0f %s=%.0f ratio=%.3f (cost %.1f %%)" % (
        a, ops_a, b, ops_b, ops_b / ops_a, 100 * (1 - ops_b / ops_a)))
    print("median server_cpu_us_per_op %s=%.1f %s=%.1f" % (a, cpu_a, b,
                                                           cpu_b))
    # Each round's two runs are close in time: their ratio is less exposed
    # to the machine's drift than the ratio of the medians.
    paired = statistics.median(
        rb[0] / ra[0] for ra, rb in zip(runs[a], runs[b]))
    print("median of the rounds' ratios %s/%s=%.3f (cost %.1f %%)" % (
        b, a, paired, 100 * (1 - paired)))
    print("export requests received: %d" % receiver.requests)


if __name__ == "__main__":
    main()
