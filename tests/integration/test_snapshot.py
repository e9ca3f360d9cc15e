"""Log compaction and snapshots with real nodes: a follower that was away
while the log was compacted past it catches up from a snapshot, a crash in
the middle of an install recovers, and a whole cluster restarts from
snapshot plus log."""

import os
import re
import select
import subprocess
import sys

import pytest

import cluster as ck
from conftest import _failed, _remember

# Small thresholds so that a few thousand writes compact the log often.
SNAP_ARGS = ["--snapshot-threshold", "200", "--snapshot-trailing", "20"]


@pytest.fixture
def snap_cluster(request):
    """A three-node cluster with small snapshot thresholds, not started;
    kept with its logs reported when the test fails."""
    c = ck.Cluster(name=request.node.name, extra_args=SNAP_ARGS)
    _remember(request.node, c)
    yield c
    c.close(keep=_failed(request.node))


def metrics(c, i):
    out = {}
    for line in c.read(i, ".ikada/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def bench_puts(c, ops, value_bytes=64, keys=1000, nodes=None, timeout=120):
    r = c.cli("--timeout-ms", "10000", "bench", "--clients", "32", "--ops",
              str(ops), "--value-bytes", str(value_bytes), "--keys",
              str(keys), "--mix", "put", nodes=nodes, timeout=timeout)
    assert r.ok, r
    m = re.search(rb"ops=(\d+)", r.out.splitlines()[-1])
    assert m and int(m.group(1)) == ops, r
    return r


def files_digest(c, i):
    """The replicated files of node i's mount, without its own .ikada/."""
    return {k: v for k, v in ck.tree_digest(c.nodes[i].mount).items()
            if not k.startswith(".ikada")}


def applied(c, i):
    return int(c.read(i, ".ikada/applied"))


def wait_caught_up(c, i, leader, timeout=60):
    target = applied(c, leader)
    ck.wait_until(lambda: applied(c, i) >= target, timeout=timeout,
                  what="node %d applied index %d" % (i, target))


def local_values(c, i, keys):
    out = {}
    for k in keys:
        r = c.cli("get", "--local", k, nodes=[i])
        assert r.rc in (0, 1), r
        out[k] = r.out if r.rc == 0 else None
    return out


def test_compaction_bounds_the_log_and_keeps_state(snap_cluster):
    c = snap_cluster
    c.start()
    leader = c.wait_leader()
    bench_puts(c, 3000)
    for i in c.ids():
        wait_caught_up(c, i, leader)
        m = metrics(c, i)
        assert m["ikada_compactions_total"] >= 1, (i, m)
        kept = m["ikada_last_log_index"] - m["ikada_first_log_index"] + 1
        # threshold + trailing + what came since the last compaction
        assert kept <= 200 + 20 + 100, (i, kept)
        st = c.status_json(i)
        assert st["snapshot"] >= 2000, st
    assert c.cli("get", "bench/7").ok


def test_large_values_compact_the_log_by_bytes(request):
    """Far below the entry count that compacts, a log of large values is
    compacted once it holds --snapshot-bytes, and a follower that missed
    them catches up from a snapshot."""
    limit = 2 << 20
    c = ck.Cluster(name=request.node.name,
                   extra_args=["--snapshot-bytes", str(limit)])
    _remember(request.node, c)
    c.start()
    leader = c.wait_leader()
    away = c.followers(leader)[0]
    c.kill(away)
    live = [i for i in c.ids() if i != away]
    value = os.urandom(256 << 10)
    for k in range(40):  # 10 MiB in 40 entries; the count limit is 10000
        r = c.cli("set", "big/%d" % (k % 5), "-", input=value, nodes=live)
        assert r.ok, r
    for i in live:
        m = metrics(c, i)
        assert m["ikada_compactions_total"] >= 1, (i, m)
        # What remains: at most the limit, plus what came since.
        assert m["ikada_log_bytes"] <= limit + (256 << 10), (i, m)
        assert c.status_json(i)["snapshot"] >= 20
    c.start_node(away)
    wait_caught_up(c, away, leader)
    assert metrics(c, away)["ikada_snapshots_installed_total"] >= 1
    for k in range(5):
        assert c.read(away, "big/%d" % k) == value
    c.close(keep=_failed(request.node))


def test_follower_away_catches_up_by_snapshot_and_shows_same_files(snap_cluster):
    c = snap_cluster
    c.start()
    leader = c.wait_leader()
    away = c.followers(leader)[0]
    for k in range(20):
        assert c.sh(leader, "mkdir -p d%d && echo v%d > d%d/f" %
                    (k % 4, k, k % 4)).ok
    c.kill(away)
    live = [i for i in c.ids() if i != away]
    bench_puts(c, 5000, nodes=live)
    assert c.sh(leader, "echo after > late-file").ok
    first = metrics(c, leader)["ikada_first_log_index"]
    assert first > 3000, first

    c.start_node(away)
    wait_caught_up(c, away, leader)
    m = metrics(c, away)
    assert m["ikada_snapshots_installed_total"] >= 1, m
    assert metrics(c, leader)["ikada_snapshots_sent_total"] >= 1
    assert c.read(away, "late-file") == b"after\n"
    assert files_digest(c, away) == files_digest(c, leader)
    # The node that caught up takes part in commits again.
    assert c.sh(away, "echo again > again-file").ok
    assert c.read(leader, "again-file") == b"again\n"


# Holds a descriptor open for writing on argv[1] and answers one line a
# command: "read" (the first 64 bytes, in hex), "write HEX" (at offset 0),
# "size".  The test process itself holds no descriptor on a mount whose
# node it stops: the subprocesses it starts meanwhile would flush it on
# exec, and wait for the stopped node.
HOLDER = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
print("open", flush=True)
for line in sys.stdin:
    cmd = line.split()
    try:
        if cmd[0] == "read":
            out = os.pread(fd, 64, 0).hex()
        elif cmd[0] == "write":
            out = str(os.pwrite(fd, bytes.fromhex(cmd[1]), 0))
        else:
            out = str(os.fstat(fd).st_size)
    except OSError as e:
        out = "error %d" % e.errno
    print(out, flush=True)
"""


class Holder:
    def __init__(self, path):
        self.p = subprocess.Popen([sys.executable, "-c", HOLDER, path],
                                  stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert self.answer() == "open"

    def answer(self, timeout=10):
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert ready, "the holder did not answer within %d s" % timeout
        return self.p.stdout.readline().strip()

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.answer()

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)


def test_a_file_open_for_writing_survives_a_snapshot_that_removes_it(
        snap_cluster):
    c = snap_cluster
    c.start()
    leader = c.wait_leader()
    away = c.followers(leader)[0]
    live = [i for i in c.ids() if i != away]
    assert c.write(leader, "held", b"original\n").ok
    ck.wait_until(lambda: c.exists(away, "held"), 10, what="held on %d" % away)
    h = Holder(c.nodes[away].path("held"))
    try:
        # The removal reaches the node only inside a snapshot: what the
        # leader sent before compacting fills the node's window first.
        c.stop(away)
        bench_puts(c, 1000, nodes=live)
        assert c.cli("del", "held", nodes=live).ok
        bench_puts(c, 1000, nodes=live)
        c.cont(away)
        wait_caught_up(c, away, leader)
        assert metrics(c, away)["ikada_snapshots_installed_total"] >= 1
        assert not c.exists(away, "held")
        assert h.ask("read") == b"original\n".hex()
        assert h.ask("write " + b"NEW".hex()) == "3"
        assert h.ask("read") == b"NEWginal\n".hex()
        assert h.ask("size") == "9"
    finally:
        h.close()


def test_kill_during_snapshot_install_converges(snap_cluster):
    c = snap_cluster
    c.start()
    leader = c.wait_leader()
    away = c.followers(leader)[0]
    c.kill(away)
    live = [i for i in c.ids() if i != away]
    # About 24 MiB of state, so that sending and installing take a
    # while.
    bench_puts(c, 400, value_bytes=60000, keys=400, nodes=live,
               timeout=300)
    bench_puts(c, 400, nodes=live)

    c.start_node(away, wait=False)
    data = c.nodes[away].data

    def receiving():
        names = os.listdir(data) if os.path.isdir(data) else []
        return any(n.startswith("snap-") for n in names)

    ck.wait_until(receiving, timeout=30, interval=0.01,
                  what="a snapshot arriving at node %d" % away)
    c.kill(away)
    c.start_node(away)
    wait_caught_up(c, away, leader, timeout=120)
    keys = ["bench/%d" % k for k in range(0, 400, 37)]
    assert local_values(c, away, keys) == local_values(c, leader, keys)


def test_restart_all_from_snapshot_and_log_gives_identical_state(snap_cluster):
    c = snap_cluster
    c.start()
    leader = c.wait_leader()
    bench_puts(c, 2500)
    for k in range(10):
        assert c.sh(leader, "echo %d > top-%d" % (k, k)).ok
    for i in c.ids():
        wait_caught_up(c, i, leader)
    for i in c.ids():
        c.kill(i)
    for i in c.ids():
        c.start_node(i, wait=False)
    for i in c.ids():
        c.wait_mounted(i)
    leader = c.wait_leader(timeout=15)
    assert c.sh(leader, "echo last > last-file").ok
    for i in c.ids():
        wait_caught_up(c, i, leader)
    keys = ["bench/%d" % k for k in range(0, 1000, 53)]
    want = local_values(c, leader, keys)
    assert all(v is not None for v in want.values())
    digest = files_digest(c, leader)
    for i in c.ids():
        assert metrics(c, i)["ikada_snapshot_index"] > 0
        assert local_values(c, i, keys) == want, i
        assert files_digest(c, i) == digest, i
