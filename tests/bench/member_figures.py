#!/usr/bin/python3
"""Figures of membership changes on a local cluster.  Not part of
scripts/test.

  1. About M MiB of state (default 100) in a three-node cluster; a new
     server joins with --join and `ikada member add` runs until it is a
     voter: how long that takes, and the longest gap between acknowledged
     writes of a client that writes one key at a time meanwhile.
  2. The same writer while the leader removes itself
     (`ikada member remove LEADER`).

Usage: /usr/bin/python3 tests/bench/member_figures.py [--state-mib M]
"""

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import cluster as ck  # noqa: E402


class Writer(threading.Thread):
    """One CLI write after another; remembers when each was acknowledged."""

    def __init__(self, c):
        super().__init__(daemon=True)
        self.c = c
        self.times = []
        self.failed = 0
        self.stop_ev = threading.Event()

    def run(self):
        n = 0
        while not self.stop_ev.is_set():
            n += 1
            r = self.c.cli("--timeout-ms", "5000", "set", "fig/w%d" % n, "v",
                           timeout=15)
            if r.ok:
                self.times.append(time.monotonic())
            else:
                self.failed += 1

    def longest_gap(self, since, until):
        ts = [since] + [t for t in self.times if since <= t <= until] + [until]
        return max(b - a for a, b in zip(ts, ts[1:]))

    def finish(self):
        self.stop_ev.set()
        self.join(timeout=30)


def member(c, *args):
    return c.cli("--timeout-ms", "600000", "member", *args, timeout=700)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-mib", type=int, default=100)
    a = ap.parse_args()
    c = ck.Cluster(name="member-figures", extra_args=[
        "--snapshot-threshold", "1000", "--snapshot-trailing", "100"])
    try:
        c.start()
        c.wait_leader(timeout=15)
        keys = a.state_mib * 16
        r = c.cli("--timeout-ms", "600000", "bench", "--clients", "16",
                  "--ops", str(keys), "--keys", str(keys), "--value-bytes",
                  "65536", timeout=900)
        assert r.ok, r
        print("state: %d keys of 64 KiB (%d MiB)" % (keys, a.state_mib))

        w = Writer(c)
        w.start()
        time.sleep(1)
        nid = c.add_node()
        c.start_node(nid)
        t0 = time.monotonic()
        r = member(c, "add", str(nid), c.nodes[nid].addr)
        t1 = time.monotonic()
        assert r.ok, r
        time.sleep(1)
        print("member add to voter: %.2f s; longest gap between writes "
              "meanwhile: %.3f s (%d writes, %d failed)" %
              (t1 - t0, w.longest_gap(t0, t1), len(w.times), w.failed))

        leader = c.wait_leader(timeout=15)
        t0 = time.monotonic()
        r = member(c, "remove", str(leader))
        assert r.ok, r
        c.wait_leader(timeout=15, among=[i for i in c.ids() if i != leader])
        t1 = time.monotonic()
        time.sleep(1)
        w.finish()
        print("remove the leader: %.2f s; longest gap between writes: "
              "%.3f s (%d failed writes in all)" %
              (t1 - t0, w.longest_gap(t0, t1 + 1), w.failed))
    finally:
        c.close()


if __name__ == "__main__":
    main()
