"""Crashes, pauses, lost quorum and shutdown, each on a cluster of its own."""

import contextlib
import os
import signal
import subprocess
import time

import pytest

import cluster as ck


def read_linearizable(c, i, rel, want, timeout=10.0):
    """Read rel on node i.  An error (say, no leader known yet after a
    restart) is retried until the deadline; an answer is final and must be
    want (None: the file must not exist)."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.cat(i, rel, timeout=10)
        if r.ok:
            assert want is not None, (
                "node %d reads %s that was removed: %r" % (i, rel, r))
            assert r.out == want, "node %d reads %s as %r, want %r" % (
                i, rel, r.out, want)
            return
        if "No such file" in r.errtext:
            assert want is None, "node %d: %s missing: %r" % (i, rel, r)
            return
        assert time.monotonic() < deadline, "node %d: reading %s: %r" % (
            i, rel, r)
        time.sleep(0.1)


def test_kill9_leader_new_leader_within_5s_and_restarted_node_catches_up(
        cluster):
    c = cluster
    old = c.wait_leader()
    assert c.sh(old, "echo before > gone-later && echo keep > kept").ok

    c.kill(old)
    t0 = time.monotonic()
    new = c.wait_leader(timeout=5.0)
    elapsed = time.monotonic() - t0
    assert new != old
    assert elapsed < 5.0, "new leader after %.2f s" % elapsed

    survivors = c.live_ids()
    written = {}
    for n in range(6):
        i = survivors[n % 2]
        r = c.sh(i, "mkdir -p while-down && echo w%d > while-down/f%d" %
                 (n, n))
        assert r.ok, r
        written["while-down/f%d" % n] = b"w%d\n" % n
    assert c.sh(survivors[1], "rm gone-later").ok
    r = c.cli("set", "while-down/cli", "via-cli", nodes=survivors)
    assert r.ok, r
    written["while-down/cli"] = b"via-cli"
    written["kept"] = b"keep\n"

    # The mount of the killed daemon is dead until the node starts again.
    r = ck.run(["stat", c.nodes[old].mount], timeout=10)
    assert not r.timed_out, r

    c.restart(old)
    assert len(ck.mounts_at(c.nodes[old].mount)) == 1, (
        "mounts stacked at %s: %r" % (c.nodes[old].mount,
                                      ck.mounts_at(c.nodes[old].mount)))
    r = ck.run(["stat", c.nodes[old].mount], timeout=10)
    assert r.ok, r
    for rel, want in sorted(written.items()):
        read_linearizable(c, old, rel, want)
    read_linearizable(c, old, "gone-later", None)
    r = c.sh(old, "ls while-down")
    assert r.ok and sorted(r.text.split()) == sorted(
        ["cli"] + ["f%d" % n for n in range(6)]), r

    r = c.sh(old, "echo back > after-restart")
    assert r.ok, r
    for i in c.ids():
        assert c.read(i, "after-restart") == b"back\n"
    c.wait_leader(timeout=5)


def test_a_crashed_nodes_mount_fails_writes_until_restart_clears_it(cluster):
    c = cluster
    leader = c.wait_leader()
    victim = c.followers(leader)[0]
    nd = c.nodes[victim]
    assert c.sh(leader, "echo s > stale").ok
    c.kill(victim)
    # The mount stays, dead: a write fails instead of landing in the folder
    # beneath it, where it would replicate nothing.
    r = ck.run(["stat", nd.mount], timeout=10)
    assert not r.ok and "not connected" in r.errtext, r
    assert ck.mounts_at(nd.mount), "the dead mount vanished"
    r = c.sh(victim, "echo important > shadow")
    assert r.rc != 0 and not r.timed_out, r

    c.restart(victim)
    assert len(ck.mounts_at(nd.mount)) == 1, ck.mounts_at(nd.mount)
    assert not c.exists(victim, "shadow")
    read_linearizable(c, victim, "stale", b"s\n")
    assert c.sh(victim, "echo t > stale").ok
    assert c.read(leader, "stale") == b"t\n"


def test_kill9_all_three_then_restart_keeps_every_acknowledged_write(
        cluster):
    c = cluster
    c.wait_leader()
    acked = {}
    for n in range(25):
        key = "persist/cli%02d" % n
        r = c.cli("set", key, "cli-value-%d" % n, nodes=[1 + n % 3])
        assert r.ok, r
        acked[key] = b"cli-value-%d" % n
    for n in range(25):
        key = "persist/m%02d" % n
        r = c.sh(1 + n % 3, "echo mount-value-%d > %s" % (n, key))
        assert r.ok, r
        acked[key] = b"mount-value-%d\n" % n

    for i in c.ids():
        c.kill(i)
    c.start()
    c.wait_leader(timeout=10)

    for key, want in sorted(acked.items()):
        r = c.cli("get", key)
        assert r.ok and r.out == want, (key, r)
    r = c.cli("ls", "persist")
    assert r.ok and r.text.splitlines() == sorted(acked), r
    for i in c.ids():
        for key, want in sorted(acked.items()):
            read_linearizable(c, i, key, want)


@pytest.mark.parametrize("survivor_role", ["leader", "follower"])
def test_no_quorum_writes_fail_within_15s_and_reads_do_not_hang(
        cluster, survivor_role):
    c = cluster
    leader = c.wait_leader()
    s = leader if survivor_role == "leader" else c.followers(leader)[0]
    assert c.sh(s, "echo keep > existing").ok
    assert c.sh(s, "for d in 0 1 2 3 4 5; do mkdir d$d && echo $d > d$d/f; "
             "done").ok
    for i in c.ids():
        if i != s:
            c.kill(i)

    for cmd in ("echo x > new-file", "echo x > existing"):
        r = c.sh(s, cmd, timeout=30)
        assert not r.timed_out and r.elapsed < 15.0, (
            "`%s` with no quorum did not return within 15 s: %r" % (cmd, r))
        assert r.rc != 0, "`%s` with no quorum succeeded: %r" % (cmd, r)

    r = c.cat(s, "existing", timeout=30)
    assert not r.timed_out and r.elapsed < 15.0, r
    if r.ok:
        assert r.out == b"keep\n", r

    r = c.cli("set", "noquorum", "v", nodes=[s], timeout=30)
    assert r.rc == 3 and r.elapsed < 15.0, r
    assert r.err.strip(), r
    r = c.cli("get", "noquorum", nodes=[s], timeout=30)
    assert not r.timed_out and r.elapsed < 15.0, r
    assert r.rc == 3, r

    # Concurrent requests on a node long without a leader fail together
    # and at once: the kernel sends some of them one at a time, so each
    # waiting for a leader would add up.
    r = c.sh(s, "for d in 0 1 2 3 4 5; do cat d$d/f 2>/dev/null & done; "
             "wait; cat existing >/dev/null; echo done", timeout=30)
    assert r.text.strip() == "done" and r.elapsed < 3.0, r
    r = c.sh(s, "echo x > existing", timeout=30)
    assert r.rc != 0 and r.elapsed < 1.0, r
    assert b"Read-only file system" in r.err, r

    # Quorum back: the cluster works again and the file holds one of the
    # two values (a write that timed out may still have committed).
    for i in c.ids():
        if i != s:
            c.restart(i)
    c.wait_leader(timeout=10)
    r = c.sh(s, "echo again > existing")
    assert r.ok, r
    for i in c.ids():
        read_linearizable(c, i, "existing", b"again\n")


def test_status_with_a_node_down_shows_it_unreachable_and_exits_0(cluster):
    c = cluster
    leader = c.wait_leader()
    down = c.followers(leader)[0]
    c.kill(down)
    r = c.cli("status")
    assert r.rc == 0 and not r.timed_out, r
    lines = r.text.splitlines()
    assert len(lines) == 3, r
    rows = {int(l.split()[0]): l.split() for l in lines}
    assert rows[down] == [str(down), c.nodes[down].addr, "unreachable"], r
    for i in c.ids():
        if i != down:
            assert len(rows[i]) == 7, r
            assert rows[i][1] == c.nodes[i].addr
            assert int(rows[i][6]) == leader, r
    assert rows[leader][2] == "leader", r


def test_sigstop_leader_others_take_over_and_it_rejoins_after_sigcont(
        cluster):
    c = cluster
    old = c.wait_leader()
    assert c.sh(old, "echo v1 > paused").ok
    c.stop(old)
    new = c.wait_leader(timeout=5.0)
    assert new != old
    r = c.sh(new, "echo v2 > paused")
    assert r.ok, r
    c.cont(old)
    # The deposed leader must not answer from its old state.
    read_linearizable(c, old, "paused", b"v2\n")
    c.wait_leader(timeout=5.0)
    r = c.sh(old, "echo v3 > paused")
    assert r.ok, r
    for i in c.ids():
        assert c.read(i, "paused") == b"v3\n"


def test_sigterm_and_sigint_exit_0_and_unmount(cluster):
    c = cluster
    leader = c.wait_leader()
    order = c.followers(leader) + [leader]
    sigs = [signal.SIGTERM, signal.SIGTERM, signal.SIGINT]
    for i, sig in zip(order, sigs):
        rc = c.terminate(i, sig=sig, timeout=10)
        assert rc == 0, "node %d after %s: exit status %r" % (i, sig.name,
                                                             rc)
        assert ck.mounts_at(c.nodes[i].mount) == [], (
            "node %d left its mount after %s" % (i, sig.name))


@contextlib.contextmanager
def _on_tmpfs(c, size_mib):
    """Start c with each data folder on a tmpfs of its own, of size_mib;
    at the end stop the nodes and take the tmpfs away."""
    mounted = []
    try:
        for i in c.ids():
            os.makedirs(c.nodes[i].data, exist_ok=True)
            r = ck.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % size_mib,
                        "tmpfs", c.nodes[i].data], timeout=10)
            if not r.ok:
                pytest.skip("cannot mount a tmpfs here: %s" %
                            r.errtext.strip())
            mounted.append(c.nodes[i].data)
        c.start()
        yield
    finally:
        for i in c.ids():
            if c.nodes[i].running():
                c.kill(i)
        for p in mounted:
            ck.run(["umount", "-l", p], timeout=10)


def test_leader_with_a_full_disk_hands_over_and_recovers(new_cluster):
    """Each data folder on a small tmpfs; filling the leader's makes it
    hand leadership to a follower, so the CLI keeps working, and freeing
    the space lets it catch up with nothing lost."""
    c = new_cluster
    with _on_tmpfs(c, 48):
        old = c.wait_leader(timeout=10)
        assert c.cli("set", "disk/before", "1").ok
        filler = os.path.join(c.nodes[old].data, "filler")
        ck.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M", "count=64"],
               timeout=30)

        deadline = time.monotonic() + 15
        acked = []
        n = 0
        while time.monotonic() < deadline and len(acked) < 5:
            n += 1
            r = c.cli("--timeout-ms", "3000", "set", "disk/k%d" % n, str(n))
            if r.ok:
                acked.append(n)
        assert len(acked) >= 5, "writes failed with the leader's disk full"
        new = c.wait_leader(timeout=5, among=c.followers(old))
        assert new != old
        # The full node's own mount says why it cannot take writes.
        r = c.sh(old, "echo x > disk/on-full-node", timeout=10)
        assert not r.ok and r.elapsed < 3, r
        assert b"No space left" in r.err, r

        os.remove(filler)
        last = "disk/k%d" % acked[-1]
        deadline = time.monotonic() + 20
        while not (c.cat(old, last, timeout=5).ok
                   and c.cat(old, last).out == str(acked[-1]).encode()):
            assert time.monotonic() < deadline, (
                "node %d did not catch up after the space was freed" % old)
            time.sleep(0.2)
        for k in acked:
            assert c.read(old, "disk/k%d" % k) == str(k).encode()
        assert c.read(old, "disk/before") == b"1"


def _rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def _metric(c, i, name):
    for line in c.read(i, ".ikada/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("node %d has no metric %s" % (i, name))


HOLD_OPEN = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.write(fd, b"kept")
print("ready", flush=True)
sys.stdin.readline()
size = os.fstat(fd).st_size
os.pwrite(fd, b"more", 4)
sys.stdout.write(repr((size, os.pread(fd, 100, 0))))
"""


def test_follower_with_a_full_disk_stays_bounded_and_recovers(new_cluster):
    """A follower whose disk is full while 4 MiB values keep coming holds
    a bounded amount of them in memory, and once the space is back it
    catches up, however far behind it fell.  A file removed while open on
    it stays usable through its descriptor meanwhile."""
    c = new_cluster
    holder = None
    with _on_tmpfs(c, 384):
        try:
            leader = c.wait_leader(timeout=10)
            full = c.followers(leader)[0]
            assert c.cli("set", "kept", "").ok
            holder = subprocess.Popen(
                ["/usr/bin/python3", "-c", HOLD_OPEN,
                 c.nodes[full].path("kept")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert holder.stdout.readline() == b"ready\n"
            assert c.cli("del", "kept").ok
            ck.wait_until(lambda: not c.exists(full, "kept"), timeout=10,
                          what="the removal on node %d" % full)
            filler = os.path.join(c.nodes[full].data, "filler")
            ck.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M",
                    "count=1024"], timeout=30)

            value = os.urandom(4 << 20)
            written = 0
            deadline = time.monotonic() + 60
            while written < 160 and time.monotonic() < deadline:
                r = c.cli("--timeout-ms", "5000", "set",
                          "big/k%d" % (written % 8), "-", input=value)
                assert r.ok, r
                written += 1
            assert written >= 100, "only %d values written in 60 s" % written
            rss = _rss_mib(c.nodes[full].proc.pid)
            assert rss < 320, (
                "node %d holds %d MiB after %d MiB it could not store" %
                (full, rss, written * 4))
            assert _metric(c, full, "ikada_appends_dropped_total") > 0
            out, _ = holder.communicate(b"go\n", timeout=10)
            assert out == repr((4, b"keptmore")).encode(), out

            os.remove(filler)
            assert c.cli("set", "big/last", "done").ok
            deadline = time.monotonic() + 40
            while not (c.cat(full, "big/last", timeout=5).ok):
                assert time.monotonic() < deadline, (
                    "node %d did not catch up after the space was freed:\n%s" %
                    (full, c.log_tail(full)))
                time.sleep(0.2)
            assert c.sha256(full, "big/k0") == c.sha256(leader, "big/k0")
        finally:
            if holder is not None and holder.poll() is None:
                holder.kill()
                holder.wait(timeout=10)


def test_node_behind_a_compacted_log_catches_up_with_room_for_one_snapshot(
        new_cluster):
    """A leader whose disk filled falls behind while large values move
    the log past it; once space is back it needs a snapshot, and the new
    leader, with room for about one more snapshot file, makes one."""
    c = new_cluster
    with _on_tmpfs(c, 256):
        old = c.wait_leader(timeout=10)
        assert c.cli("set", "before", "1").ok
        filler = os.path.join(c.nodes[old].data, "filler")
        ck.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M",
                "count=1024"], timeout=30)
        for n in range(40):
            r = c.cli("--timeout-ms", "5000", "set", "big/k%d" % (n % 12),
                      "-", input=os.urandom(4 << 20), timeout=20)
            assert r.ok, r
        new = c.wait_leader(timeout=5, among=c.followers(old))

        os.remove(filler)
        assert c.cli("set", "after", "done").ok
        deadline = time.monotonic() + 25
        while not c.cat(old, "after", timeout=5).ok:
            assert time.monotonic() < deadline, (
                "node %d did not catch up:\n%s" % (old, c.log_tail(new)))
            time.sleep(0.2)
        for k in range(12):
            assert c.sha256(old, "big/k%d" % k) == \
                c.sha256(new, "big/k%d" % k), k


def test_writes_right_after_the_leader_is_paused_follow_the_new_leader(
        cluster):
    """A request already sent to a leader that then stops answering
    (SIGSTOP) goes to the next leader: the CLI and a follower's mount
    succeed within the default 5 s timeout, and apply once."""
    c = cluster
    old = c.wait_leader()
    f = c.followers(old)[0]
    assert c.sh(f, "echo 0 > paused-appends").ok
    c.stop(old)
    try:
        t0 = time.monotonic()
        mnt = c.sh(f, "echo once >> paused-appends", timeout=15)
        cli = c.cli("set", "paused/cli", "v", nodes=[old] + c.followers(old))
        took = time.monotonic() - t0
        assert mnt.ok, mnt
        # A new leader is elected within about two election timeouts (1 s
        # each); waiting for the request's own 5 s timeout is too long.
        assert mnt.elapsed < 4, mnt
        assert cli.ok, cli
        assert took < 10, "took %.1f s" % took
        new = c.wait_leader(timeout=5, among=c.followers(old))
        assert c.cli("get", "paused/cli").text == "v"
        assert c.read(new, "paused-appends") == b"0\nonce\n"
    finally:
        c.cont(old)
    c.wait_leader(timeout=10)
    assert c.read(old, "paused-appends") == b"0\nonce\n"


APPEND_WHEN_TOLD = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
print("open", flush=True)
sys.stdin.readline()
os.write(fd, b"once\\n")
os.close(fd)
"""


def test_write_whose_entry_a_new_leader_replaced_is_proposed_again(cluster):
    """The leader appends a write through its own mount while both
    followers are down, then freezes; the followers come back and elect a
    leader whose entries replace that one.  Once the old leader hears of
    it, the write is proposed again to the new leader: it succeeds, and
    applies once."""
    c = cluster
    old = c.wait_leader()
    f1, f2 = c.followers(old)
    assert c.sh(old, "echo 0 > replaced").ok
    # The file is open before the followers go, so that the write needs no
    # lookup, which would wait for a quorum.
    p = subprocess.Popen(
        ["/usr/bin/python3", "-c", APPEND_WHEN_TOLD,
         c.nodes[old].path("replaced")], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        assert p.stdout.readline() == b"open\n"
        # Killed, not frozen: a frozen follower would still find the
        # entry in its socket buffer.
        c.kill(f1)
        c.kill(f2)
        p.stdin.write(b"go\n")
        p.stdin.flush()
        time.sleep(0.3)
        c.stop(old)
        try:
            c.start_node(f1, wait=False)
            c.start_node(f2, wait=False)
            new = c.wait_leader(timeout=10, among=[f1, f2])
            assert c.cli("set", "replaced-meanwhile", "1",
                         nodes=[f1, f2]).ok
        finally:
            c.cont(old)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)
    assert p.returncode == 0, err
    assert c.read(new, "replaced") == b"0\nonce\n"
    assert c.read(old, "replaced") == b"0\nonce\n"
    replaced = [line for line in c.read(old, ".ikada/metrics").splitlines()
                if line.startswith(b"ikada_proposals_replaced_total ")]
    assert replaced and int(replaced[0].split()[1]) >= 1, replaced
