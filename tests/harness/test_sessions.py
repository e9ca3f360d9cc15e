"""End-to-end tests of exactly-once commands, compare-and-set and
stale-allowed reads, with real nodes on 127.0.0.2-4 (so that the clients,
on 127.0.0.1, can be cut off apart from the peers)."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, HERE)

import cluster as ck  # noqa: E402
import harness  # noqa: E402

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def need_binaries():
    for path in (ck.SERVER, ck.CLI):
        if not os.access(path, os.X_OK):
            pytest.fail("%s is missing: build first or set IKADA_BUILD" %
                        path)


@pytest.fixture
def cl(request):
    need_binaries()
    c = ck.Cluster(name=request.node.name, hosts=HOSTS)
    yield c
    c.close()


@pytest.fixture
def net(cl):
    if not harness.iptables_usable():
        pytest.skip("iptables is not usable (root and netfilter needed)")
    n = harness.Net(cl)
    n.setup()
    yield n
    n.teardown()


def test_cas_exit_status(cl):
    cl.start()
    cl.wait_leader()
    assert cl.cli("cas", "--absent", "k", "one").ok
    r = cl.cli("cas", "--absent", "k", "two")
    assert r.rc == 1 and "expected value" in r.errtext, r
    assert cl.cli("cas", "k", "one", "two").ok
    r = cl.cli("cas", "k", "one", "three")
    assert r.rc == 1, r
    assert cl.cli("get", "k").out == b"two"
    assert cl.cli("cas", "k").rc == 2
    assert cl.cli("cas", "bad//key", "a", "b").rc == 2


def test_local_read_is_fast_and_may_be_stale(cl, net):
    cl.start()
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    assert cl.cli("set", "k", "old").ok
    ck.wait_until(lambda: cl.cli("get", "--local", "k",
                                 nodes=[follower]).out == b"old", 10,
                  what="the follower applying k")
    for j in cl.ids():
        if j != follower:
            net.cut(follower, j)
    assert cl.cli("set", "k", "new", nodes=[leader]).ok
    # The cut-off follower still answers, with what it has.
    r = cl.cli("get", "--local", "k", nodes=[follower])
    assert r.ok and r.out == b"old", r
    # A linearizable read never returns the stale value.
    r = cl.cli("get", "k", nodes=[follower], timeout=10)
    assert not r.ok or r.out == b"new", r
    net.heal()
    ck.wait_until(lambda: cl.cli("get", "--local", "k",
                                 nodes=[follower]).out == b"new", 10,
                  what="the follower catching up")


def test_mount_reads_flag(cl, net):
    cl.extra_args = ["--mount-reads", "local"]
    cl.start()
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    assert cl.write(leader, "f", b"old").ok
    ck.wait_until(lambda: cl.cat(follower, "f").out == b"old", 10,
                  what="the follower's mount showing f")
    for j in cl.ids():
        if j != follower:
            net.cut(follower, j)
    assert cl.write(leader, "f", b"new").ok
    # Local mount reads answer at once, from the follower's stale state.
    r = cl.cat(follower, "f", timeout=5)
    assert r.ok and r.out == b"old", r
    net.heal()


def test_mount_reads_flag_refuses_a_bad_mode(cl):
    r = ck.run(cl.server_argv(1) + ["--mount-reads", "sometimes"])
    assert r.rc == 2 and "--mount-reads" in r.errtext, r


def test_retry_after_lost_reply_applies_once(cl, net):
    """The leader applies a compare-and-set but its reply is lost; the
    client then loses the connection (the leader dies and the client's
    next retransmission meets a reset; the dead leader's kernel would
    otherwise still deliver the reply) and retries the same command on the
    next leader, which must answer with the stored result (done) instead of
    applying it again (a mismatch)."""
    cl.start()
    leader = cl.wait_leader()
    assert cl.cli("set", "k", "v1").ok
    net.drop_replies(leader)
    spec = ",".join(cl.nodes[i].addr for i in [leader] + cl.followers(leader))
    proc = subprocess.Popen(
        [ck.CLI, "--cluster", spec, "--timeout-ms", "15000", "cas", "k",
         "v1", "v2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    f = cl.followers(leader)[0]
    ck.wait_until(lambda: cl.cli("get", "--local", "k",
                                 nodes=[f]).out == b"v2", 10,
                  what="the swap applied on a follower")
    assert proc.poll() is None, "the client got a reply it should not have"
    cl.kill(leader)
    net.reset_requests(leader)
    out, err = proc.communicate(timeout=30)
    net.heal()
    assert proc.returncode == 0, (proc.returncode, err)
    assert cl.cli("get", "k").out == b"v2"
    # The retry reached the log too, and was answered, not applied.
    r = ck.run([ck.CLI, "inspect", cl.nodes[f].data], timeout=30)
    assert r.text.count('cas key="k"') == 2, r
