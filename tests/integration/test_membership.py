"""Membership changes (Raft 4) on real processes: servers join with
--join and `ikada member add`, leave with `ikada member remove`, while a
client keeps writing and every acknowledged write is checked at the end."""

import re
import signal
import threading
import time

import pytest

import cluster as ck
import conftest

MEMBER_TIMEOUT_S = 30.0


class Writer:
    """Writes w/N = vN one at a time through the command line client until
    stopped; remembers which writes were acknowledged and when."""

    def __init__(self, c, ids):
        self.c = c
        self.ids = list(ids)
        self.acked = {}
        self.times = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        n = 0
        while not self._stop.is_set():
            n += 1
            r = self.c.cli("--timeout-ms", "3000", "set", "w/%d" % n,
                           "v%d" % n, nodes=list(self.ids), timeout=10)
            time.sleep(0.01)
            if r.ok:
                self.acked[n] = "v%d" % n
                self.times.append(time.monotonic())
            else:
                self.failures += 1

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive(), "the writer did not stop"

    def longest_gap(self, since, until=None):
        """The longest time without an acknowledged write in [since,
        until]."""
        until = until if until is not None else time.monotonic()
        ts = [since] + [t for t in self.times if since <= t <= until]
        ts.append(until)
        return max(b - a for a, b in zip(ts, ts[1:]))

    def check(self, i):
        """Every acknowledged write reads back on node i's mount."""
        r = self.c.sh(i, 'for f in w/*; do printf "%s=" "$f"; cat "$f"; '
                      'echo; done', timeout=60)
        assert r.ok, r
        seen = dict(line.split("=", 1) for line in r.text.splitlines())
        for n, v in self.acked.items():
            assert seen.get("w/%d" % n) == v, (
                "node %d: acknowledged write w/%d=%s reads %r" %
                (i, n, v, seen.get("w/%d" % n)))


def members(c, i):
    """Node i's .ikada/members as {id: (addr, role)}."""
    text = c.ikada(i, "members")
    assert text is not None, "no .ikada/members on node %d" % i
    out = {}
    for line in text.splitlines():
        nid, addr, role = line.split()
        out[int(nid)] = (addr, role)
    return out


def want_members(c, voters, learners=()):
    w = {i: (c.nodes[i].addr, "voter") for i in voters}
    w.update({i: (c.nodes[i].addr, "learner") for i in learners})
    return w


def wait_members(c, ids, voters, learners=(), timeout=15.0):
    want = want_members(c, voters, learners)
    ck.wait_until(lambda: all(members(c, i) == want for i in ids), timeout,
                  what="members %r on nodes %r" % (want, ids))


def member(c, *args, nodes=None, timeout_ms=20000):
    return c.cli("--timeout-ms", str(timeout_ms), "member", *args,
                 nodes=nodes, timeout=timeout_ms / 1000.0 + 10)


def join(c):
    """Start a new server with --join; returns its id."""
    nid = c.add_node()
    c.start_node(nid)
    return nid


def test_grow_3_to_5_and_shrink_to_3_while_writing(cluster):
    c = cluster
    w = Writer(c, c.ids()).start()
    ck.wait_until(lambda: len(w.acked) >= 5, 10, what="first writes")
    t0 = time.monotonic()
    to_voter = []
    for _ in range(2):
        nid = join(c)
        start = time.monotonic()
        r = member(c, "add", str(nid), c.nodes[nid].addr, nodes=[1, 2, 3])
        assert r.ok, r
        to_voter.append(time.monotonic() - start)
        w.ids.append(nid)
        # A repeat of a change already made succeeds at once.
        assert member(c, "add", str(nid), c.nodes[nid].addr).ok
    wait_members(c, c.ids(), voters=[1, 2, 3, 4, 5])
    gap_grow = w.longest_gap(t0)
    r = member(c, "list")
    assert r.ok, r
    assert sorted(r.text.splitlines()) == sorted(
        "%d %s voter" % (i, c.nodes[i].addr) for i in c.ids())
    # `ikada status` shows every member, also those not in --cluster.
    r = c.cli("status", nodes=[1, 2, 3])
    assert r.ok, r
    rows = [line.split() for line in r.text.splitlines()]
    assert [(int(x[0]), x[1]) for x in rows] == [
        (i, c.nodes[i].addr) for i in range(1, 6)], r.text
    assert sum(x[2] == "leader" for x in rows) == 1, r.text

    # The new voters count: with two of the original three stopped, the
    # five-node cluster still has a majority.
    # (The client is pointed away from the frozen nodes: a connection to
    # one would hold it until its timeout.)
    w.ids[:] = [3, 4, 5]
    c.stop(1)
    c.stop(2)
    n = len(w.acked)
    ck.wait_until(lambda: len(w.acked) >= n + 3, 20,
                  what="writes with 3 of 5 voters")
    # Members that do not answer are named by their own ids.
    r = c.cli("status", nodes=[3, 4, 5])
    assert r.ok, r
    rows = [line.split() for line in r.text.splitlines()]
    assert rows[:2] == [["1", c.nodes[1].addr, "unreachable"],
                        ["2", c.nodes[2].addr, "unreachable"]], r.text
    assert [int(x[0]) for x in rows[2:]] == [3, 4, 5], r.text
    c.cont(1)
    c.cont(2)
    w.ids[:] = [1, 2, 3]

    t1 = time.monotonic()
    for nid in (4, 5):
        r = member(c, "remove", str(nid), nodes=[1, 2, 3])
        assert r.ok, r
        assert member(c, "remove", str(nid), nodes=[1, 2, 3]).ok
    wait_members(c, [1, 2, 3], voters=[1, 2, 3])
    gap_shrink = w.longest_gap(t1)
    n = len(w.acked)
    ck.wait_until(lambda: len(w.acked) >= n + 3, 15, what="writes after")
    w.stop()
    print("membership: add to voter %s s; longest gap between writes while "
          "growing %.3f s, while shrinking %.3f s; %d writes, %d failed" %
          (["%.3f" % t for t in to_voter], gap_grow, gap_shrink,
           len(w.acked), w.failures))
    assert gap_grow < 5 and gap_shrink < 5
    for i in (1, 2, 3):
        w.check(i)
    # Removed servers neither lead nor disturb: the term stays put.
    term = int(c.ikada(1, "term"))
    time.sleep(3 * ck.ELECTION_TIMEOUT_MS / 1000.0)
    assert int(c.ikada(1, "term")) == term


def test_replace_every_server_once_while_writing(cluster):
    """A rolling replacement: for each original server, a fresh one with
    an empty data folder joins, then the original is removed and stopped.
    The cluster ends on three servers it never started with, and keeps
    every acknowledged write."""
    c = cluster
    w = Writer(c, c.ids()).start()
    ck.wait_until(lambda: len(w.acked) >= 5, 10, what="first writes")
    current = [1, 2, 3]
    gaps = []
    for old in (1, 2, 3):
        t0 = time.monotonic()
        nid = join(c)
        r = member(c, "add", str(nid), c.nodes[nid].addr, nodes=current)
        assert r.ok, r
        current.append(nid)
        w.ids[:] = current
        r = member(c, "remove", str(old), nodes=current)
        assert r.ok, r
        current.remove(old)
        w.ids[:] = current
        wait_members(c, current, voters=current)
        assert c.terminate(old) == 0
        n = len(w.acked)
        ck.wait_until(lambda: len(w.acked) >= n + 3, 20,
                      what="writes after replacing %d" % old)
        gaps.append(w.longest_gap(t0))
    w.stop()
    assert current == [4, 5, 6]
    print("replace every server: longest gap between writes %s s; %d "
          "writes, %d failed" % (["%.3f" % g for g in gaps], len(w.acked),
                                 w.failures))
    assert max(gaps) < 5
    for i in current:
        w.check(i)


def test_remove_leader_hands_over_and_cluster_goes_on(cluster):
    c = cluster
    old = c.wait_leader()
    rest = [i for i in c.ids() if i != old]
    w = Writer(c, rest).start()
    ck.wait_until(lambda: len(w.acked) >= 5, 10, what="first writes")
    t0 = time.monotonic()
    r = member(c, "remove", str(old))
    assert r.ok, r
    new = c.wait_leader(among=rest, timeout=10)
    assert new != old
    n = len(w.acked)
    ck.wait_until(lambda: len(w.acked) >= n + 5, 15, what="writes after")
    ck.wait_until(lambda: c.ikada(old, "role") == "follower", 10,
                  what="the removed leader stepping down")
    wait_members(c, rest, voters=rest)
    gap = w.longest_gap(t0)
    term = int(c.ikada(new, "term"))
    time.sleep(3 * ck.ELECTION_TIMEOUT_MS / 1000.0)
    assert int(c.ikada(new, "term")) == term, "the removed server disturbed"
    assert c.wait_leader(among=rest) == new
    w.stop()
    print("remove leader: longest gap between writes %.3f s; %d writes, %d "
          "failed" % (gap, len(w.acked), w.failures))
    for i in rest:
        w.check(i)
    # A removed server restarted with its data stays out.
    assert c.terminate(old) == 0
    c.restart(old)
    time.sleep(3 * ck.ELECTION_TIMEOUT_MS / 1000.0)
    assert int(c.ikada(new, "term")) == term
    assert members(c, old) == want_members(c, rest)


def test_add_then_kill_mid_catch_up(cluster):
    c = cluster
    big = b"x" * (256 * 1024)
    for k in range(16):
        assert c.write(1, "big%d" % k, big).ok
    w = Writer(c, c.ids()).start()
    ck.wait_until(lambda: len(w.acked) >= 3, 10, what="first writes")
    nid = join(c)
    # Frozen, the new server cannot catch up: the add stays a learner.
    c.stop(nid)
    r = member(c, "add", str(nid), c.nodes[nid].addr, timeout_ms=3000)
    assert r.rc == 3, r
    r = member(c, "list")
    assert r.ok and "%d %s learner" % (nid, c.nodes[nid].addr) in r.text, r
    c.cont(nid)
    c.kill(nid)
    # A learner never counts: writes go on without it.
    n = len(w.acked)
    ck.wait_until(lambda: len(w.acked) >= n + 5, 15, what="writes")
    # Another change is refused while the learner waits for promotion.
    other = c.add_node()
    r = member(c, "add", str(other), c.nodes[other].addr, timeout_ms=3000)
    assert r.rc == 3 and "in progress" in r.errtext, r
    r = member(c, "remove", str(nid))
    assert r.ok, r
    wait_members(c, [1, 2, 3], voters=[1, 2, 3])
    w.stop()
    for i in (1, 2, 3):
        w.check(i)


def test_member_survives_restart_and_joined_node_restarts(cluster):
    c = cluster
    nid = join(c)
    assert member(c, "add", str(nid), c.nodes[nid].addr, nodes=[1]).ok
    assert c.sh(1, "echo after-join > j").ok
    for i in c.ids():
        assert c.terminate(i) == 0
    for i in c.ids():
        c.restart(i, wait=False)
    for i in c.ids():
        c.wait_mounted(i)
    c.wait_leader(timeout=15)
    wait_members(c, c.ids(), voters=[1, 2, 3, nid])
    ck.wait_until(lambda: c.cat(nid, "j").out == b"after-join\n", 10,
                  what="the joined node reading")


def test_recover_from_lost_majority_with_one_node(cluster):
    c = cluster
    assert c.sh(1, "echo before > r").ok
    c.wait_leader()
    c.kill(2)
    c.kill(3)
    assert c.terminate(1) == 0
    argv = c.server_argv(1) + ["--recover"]
    nd = c.nodes[1]
    with open(nd.log, "ab") as log:
        nd.proc = ck.subprocess.Popen(argv, stdin=ck.subprocess.DEVNULL,
                                      stdout=log, stderr=log, env=c.env,
                                      start_new_session=True)
    c.wait_mounted(1)
    assert c.wait_leader(among=[1], timeout=10) == 1
    assert c.read(1, "r") == b"before\n"
    assert c.sh(1, "echo after > r2").ok
    assert re.search(r"recovery asked", c.log_tail(1, 200))
    assert members(c, 1) == want_members(c, [1])
    # Restarted normally, it keeps the recovered configuration.
    assert c.terminate(1) == 0
    c.restart(1)
    assert c.wait_leader(among=[1], timeout=10) == 1
    assert members(c, 1) == want_members(c, [1])
    assert c.kill(1, sig=signal.SIGKILL) is not None


@pytest.fixture
def snap_cluster(request):
    """Three nodes that compact their logs after a few entries, so that a
    new server must catch up from a snapshot."""
    c = ck.Cluster(name=request.node.name, extra_args=[
        "--snapshot-threshold", "20", "--snapshot-trailing", "5"])
    conftest._remember(request.node, c)
    c.start()
    c.wait_leader(timeout=10)
    yield c
    c.close(keep=conftest._failed(request.node))


def test_new_server_catches_up_from_a_snapshot(snap_cluster):
    c = snap_cluster
    for k in range(60):
        r = c.cli("set", "s/%d" % k, "v%d" % k)
        assert r.ok, r
    big = bytes(range(256)) * 1024
    for k in range(40):
        assert c.write(1, "big%d" % k, big).ok
    nid = join(c)
    start = time.monotonic()
    r = member(c, "add", str(nid), c.nodes[nid].addr, nodes=[1, 2, 3])
    assert r.ok, r
    print("add to voter through a snapshot of 10 MiB: %.3f s" %
          (time.monotonic() - start))
    assert "install it" in c.log_tail(nid, 400), "no snapshot was installed"
    assert c.read(nid, "s/0") == b"v0"
    assert c.read(nid, "s/59") == b"v59"
    assert c.read(nid, "big39") == big
    wait_members(c, c.ids(), voters=[1, 2, 3, nid])
    # Its configuration came with the snapshot and the log after it, and
    # is stored: a restart keeps it.
    assert c.terminate(nid) == 0
    c.restart(nid)
    wait_members(c, [nid], voters=[1, 2, 3, nid])


def test_member_requests_refused_with_exit_2(cluster):
    c = cluster
    for args in (("add", "9", "nowhere:1"), ("add", "9", "127.0.0.1"),
                 ("add", "2", "127.0.0.1:1"), ("remove", "x"), ("frob",),
                 ("add", "0", "127.0.0.1:1")):
        r = member(c, *args, timeout_ms=3000)
        assert r.rc == 2 and len(r.errtext.splitlines()) == 1, (args, r)
    r = member(c, "list")
    assert r.ok and len(r.text.splitlines()) == 3, r
