#!/usr/bin/python3
"""Figures of log compaction and snapshots on a local three-node cluster
with the default thresholds.  Not part of scripts/test.

  1. A follower is down while N entries (default 50,000) are committed; it
     is restarted and catches up: time to catch up, snapshots installed,
     and whether its files equal the leader's.
  2. Sustained overwrites of 1,000 keys: the size of each data folder
     after 10,000 and after 200,000 writes.
  3. About 100 MiB of state: a follower that must catch up from a snapshot
     of it; the longest event-loop stall on the leader and on the follower
     while the snapshot is made, sent and installed, and how long it took.

Usage: /usr/bin/python3 tests/bench/snapshot_figures.py [--entries N]
       [--overwrites N] [--state-mib M]
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import cluster as ck  # noqa: E402


def metrics(c, i):
    out = {}
    for line in c.read(i, ".ikada/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def bench(c, ops, nodes=None, value_bytes=64, keys=1000, clients=64):
    r = c.cli("--timeout-ms", "20000", "bench", "--clients", str(clients),
              "--ops", str(ops), "--value-bytes", str(value_bytes),
              "--keys", str(keys), "--mix", "put", nodes=nodes,
              timeout=1800)
    if not r.ok:
        sys.exit("bench failed: %r" % r)
    return r.out.decode().splitlines()[-1]


def stall_bound(before, after):
    """The smallest histogram bound that holds every loop stall between
    two readings of the metrics, in ms."""
    total = after["ikada_loop_stall_seconds_count"] - \
        before["ikada_loop_stall_seconds_count"]
    bounds = []
    for name, v in after.items():
        if name.startswith('ikada_loop_stall_seconds_bucket{le="'):
            le = name.split('"')[1]
            if le != "+Inf":
                bounds.append((float(le), v - before.get(name, 0)))
    for le, n in sorted(bounds):
        if n >= total:
            return le * 1e3
    return float("inf")


def applied(c, i):
    return int(c.read(i, ".ikada/applied"))


def catch_up(c, i, leader, timeout=600):
    target = applied(c, leader)
    start = time.monotonic()
    ck.wait_until(lambda: applied(c, i) >= target, timeout=timeout,
                  interval=0.02, what="node %d catching up" % i)
    return time.monotonic() - start


def du_bytes(path):
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[0])


def files_digest(c, i):
    return {k: v for k, v in ck.tree_digest(c.nodes[i].mount).items()
            if not k.startswith(".ikada")}


def follower_catch_up(entries):
    c = ck.Cluster(name="snap-catch-up")
    try:
        c.start()
        leader = c.wait_leader()
        away = c.followers(leader)[0]
        c.kill(away)
        live = [i for i in c.ids() if i != away]
        print("  %d puts while node %d is down: %s" % (
            entries, away, bench(c, entries, nodes=live)))
        c.start_node(away)
        took = catch_up(c, away, leader)
        m = metrics(c, away)
        print("  node %d caught up in %.2f s; snapshots installed: %d; "
              "files equal the leader's: %s" % (
                  away, took, m["ikada_snapshots_installed_total"],
                  files_digest(c, away) == files_digest(c, leader)))
    finally:
        c.close()


def data_folder_sizes(total):
    c = ck.Cluster(name="snap-sizes")
    try:
        c.start()
        c.wait_leader()
        done = 0
        for mark in (10000, total):
            bench(c, mark - done)
            done = mark
            leader = c.wait_leader()
            for i in c.ids():
                catch_up(c, i, leader)
            sizes = ", ".join("node %d %.1f MiB" % (
                i, du_bytes(c.nodes[i].data) / 2**20) for i in c.ids())
            print("  after %d overwrites of 1000 keys: %s" % (done, sizes))
    finally:
        c.close()


def big_state_stall(state_mib):
    c = ck.Cluster(name="snap-stall")
    try:
        c.start()
        leader = c.wait_leader()
        away = c.followers(leader)[0]
        c.kill(away)
        live = [i for i in c.ids() if i != away]
        bench(c, state_mib, nodes=live, value_bytes=1 << 20, keys=state_mib,
              clients=8)
        # Enough small entries to compact the log past the follower.
        bench(c, 13000, nodes=live, keys=100)
        lead_before = metrics(c, leader)
        c.start_node(away)
        away_before = metrics(c, away)
        took = catch_up(c, away, leader)
        m = metrics(c, away)
        lm = metrics(c, leader)
        print("  %d MiB of state: node %d caught up in %.2f s, snapshots "
              "installed %d, snapshot files made by the leader %d" % (
                  state_mib, away, took, m["ikada_snapshots_installed_total"],
                  lm["ikada_snapshots_created_total"]))
        print("  loop stalls while the snapshot was made, sent and "
              "installed: leader all <= %.1f ms, follower all <= %.1f ms "
              "(follower's longest since start %.1f ms)" % (
                  stall_bound(lead_before, lm), stall_bound(away_before, m),
                  m["ikada_loop_stall_max_seconds"] * 1e3))
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=50000)
    ap.add_argument("--overwrites", type=int, default=200000)
    ap.add_argument("--state-mib", type=int, default=100)
    a = ap.parse_args()
    print("1. a follower away while entries commit")
    follower_catch_up(a.entries)
    print("2. data folder size under sustained overwrites")
    data_folder_sizes(a.overwrites)
    print("3. event loop stalls around a snapshot of a large state")
    big_state_stall(a.state_mib)


if __name__ == "__main__":
    main()
