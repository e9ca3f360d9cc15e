#!/usr/bin/python3
"""Measure a local three-node Ikada cluster: time from start to the first
leader, then the latency of `echo $i > f` through the leader's mount and
through a follower's.

Usage: /usr/bin/python3 tests/integration/measure.py [--writes N] [--keep]

The writes run in one bash loop per mount that stamps each write with
$EPOCHREALTIME (no process is started between the two stamps), so a figure
is the time of open + write + close of one shell redirection.
"""

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster as ck  # noqa: E402

LOOP = r'''
cd "$1" || exit 1
for i in $(seq 1 "$2"); do
    s=$EPOCHREALTIME
    echo "$i" > f
    rc=$?
    e=$EPOCHREALTIME
    echo "$i $s $e $rc"
done
'''


def percentile(sorted_ms, p):
    """Nearest-rank percentile of an ascending list."""
    rank = math.ceil(p / 100.0 * len(sorted_ms))
    return sorted_ms[max(0, min(len(sorted_ms), rank) - 1)]


def write_loop(c, i, n):
    r = ck.run(["bash", "-c", LOOP, "bash", c.nodes[i].mount, str(n)],
               timeout=max(60.0, n * 2.0))
    if r.timed_out:
        raise SystemExit("writes through node %d timed out: %r" % (i, r))
    lat, failed = [], 0
    for line in r.text.splitlines():
        _, s, e, rc = line.split()
        if rc != "0":
            failed += 1
            continue
        lat.append((float(e.replace(",", ".")) -
                    float(s.replace(",", "."))) * 1000.0)
    return sorted(lat), failed, r


def report(label, lat, failed, n):
    if not lat:
        print("%-24s all %d writes failed" % (label, n))
        return
    print("%-24s n=%d failed=%d median=%.2f ms p99=%.2f ms min=%.2f ms "
          "max=%.2f ms" % (label, len(lat), failed, statistics.median(lat),
                           percentile(lat, 99), lat[0], lat[-1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writes", type=int, default=100)
    ap.add_argument("--keep", action="store_true",
                    help="keep the cluster folder and logs")
    args = ap.parse_args()
    for path in (ck.SERVER, ck.CLI):
        if not os.access(path, os.X_OK):
            raise SystemExit("%s is missing; build first" % path)

    c = ck.Cluster(name="measure")
    ok = False
    try:
        t0 = time.monotonic()
        c.start(wait=False)
        leader = c.wait_leader(timeout=30)
        t_leader = time.monotonic() - t0
        print("cluster folder: %s" % c.root)
        print("start to first agreed leader: %.2f s (leader node %d)" %
              (t_leader, leader))
        follower = c.followers(leader)[0]

        for label, i in (("leader mount (node %d)" % leader, leader),
                         ("follower mount (node %d)" % follower, follower)):
            lat, failed, r = write_loop(c, i, args.writes)
            report(label, lat, failed, args.writes)
            if failed:
                print("  first error: %s" % r.errtext.strip()[:200])
        got = c.read(follower, "f")
        print("last value read back through the leader's mount: %r" %
              c.read(leader, "f"))
        ok = got == b"%d\n" % args.writes
        if not ok:
            print("unexpected final value on the follower: %r" % got)
    finally:
        if not ok:
            print(c.logs_report(20))
        c.close(keep=args.keep or not ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
