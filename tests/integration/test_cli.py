"""The ikada command line client against a healthy cluster."""

import hashlib
import os
import random

import pytest

import cluster as ck


def test_set_get_del_ls_through_each_node(shared):
    c = shared
    for i in c.ids():
        key = "cli-each/k%d" % i
        r = c.cli("set", key, "value-%d" % i, nodes=[i])
        assert r.ok, r
        for j in c.ids():
            r = c.cli("get", key, nodes=[j])
            assert r.ok and r.out == b"value-%d" % i, (i, j, r)
    for i in c.ids():
        r = c.cli("ls", "cli-each", nodes=[i])
        assert r.ok, r
        assert r.text.splitlines() == ["cli-each/k1", "cli-each/k2",
                                       "cli-each/k3"], r
    for i in c.ids():
        key = "cli-each/k%d" % i
        r = c.cli("del", key, nodes=[1 + i % 3])
        assert r.ok, r
        r = c.cli("get", key, nodes=[1 + (i + 1) % 3])
        assert r.rc == 1 and not r.timed_out, r
        assert not c.exists(i, key)
    r = c.cli("ls", "cli-each")
    assert r.ok and r.out == b"", r


def test_set_overwrites_and_ls_is_sorted_without_leading_slash(shared):
    c = shared
    for key in ("clils/z", "clils/a", "clils/b/c", "clils/b/a"):
        assert c.cli("set", key, "1").ok
    assert c.cli("set", "clils/a", "2").ok
    assert c.cli("get", "clils/a").out == b"2"
    r = c.cli("ls", "clils")
    assert r.ok, r
    assert r.text.splitlines() == ["clils/a", "clils/b/a", "clils/b/c",
                                   "clils/z"]
    r = c.cli("ls")
    assert r.ok, r
    keys = r.text.splitlines()
    assert keys == sorted(keys)
    assert "clils/b/c" in keys
    assert not any(k.startswith("/") for k in keys)


def test_ls_prefix_is_a_folder_or_a_key(shared):
    c = shared
    for key in ("lsp/d1.txt", "lsp/d1/x", "lsp/d1x", "lsp/d1/y/z"):
        assert c.cli("set", key, "1").ok
    for prefix in ("lsp/d1", "lsp/d1/"):
        r = c.cli("ls", prefix)
        assert r.ok and r.text.splitlines() == ["lsp/d1/x", "lsp/d1/y/z"], r
    r = c.cli("ls", "lsp/d1.txt")
    assert r.ok and r.text.splitlines() == ["lsp/d1.txt"], r
    r = c.cli("ls", "lsp/d")
    assert r.ok and r.text == "", r


def test_get_of_a_missing_key_exits_1(shared):
    r = shared.cli("get", "no/such/key")
    assert r.rc == 1 and not r.timed_out, r
    assert r.out == b""


def test_del_of_a_missing_key_exits_1(shared):
    r = shared.cli("del", "no/such/key")
    assert r.rc == 1 and not r.timed_out, r


def test_set_from_stdin_round_trips_binary_bytes(shared):
    c = shared
    data = bytes(range(256)) * 64 + b"\0\0\n\0" + random.Random(3).randbytes(
        10000) + b"\0"
    r = c.cli("set", "bin/blob", "-", input=data)
    assert r.ok, r
    for i in c.ids():
        r = c.cli("get", "bin/blob", nodes=[i])
        assert r.ok, r
        assert r.out == data, "get through node %d differs" % i
        assert c.read(i, "bin/blob") == data
    r = c.cli("set", "bin/empty", "-", input=b"")
    assert r.ok, r
    r = c.cli("get", "bin/empty")
    assert r.ok and r.out == b"", r


def parse_status(text):
    rows = {}
    for line in text.splitlines():
        f = line.split()
        rows[int(f[0])] = f
    return rows


def test_status_prints_one_line_a_node_with_one_leader(shared):
    c = shared
    leader = c.wait_leader()
    r = c.cli("status")
    assert r.ok, r
    lines = r.text.splitlines()
    assert len(lines) == 3, r
    rows = parse_status(r.text)
    assert sorted(rows) == [1, 2, 3]
    for i, f in rows.items():
        assert len(f) == 7, "line for node %d: %r" % (i, f)
        _, addr, role, term, commit, applied, lid = f
        assert addr == c.nodes[i].addr
        assert role == ("leader" if i == leader else "follower"), f
        assert int(term) >= 1
        assert int(applied) <= int(commit)
        assert int(lid) == leader, f
    assert [f[2] for f in rows.values()].count("leader") == 1


def test_status_lists_every_server_whichever_nodes_are_named(cluster):
    c = cluster
    leader = c.wait_leader()
    follower = c.followers(leader)[0]
    other = [i for i in c.ids() if i not in (leader, follower)][0]

    # Only a follower named: the others come from its configuration.
    r = c.cli("status", nodes=[follower])
    assert r.ok, r
    rows = parse_status(r.text)
    assert sorted(rows) == [1, 2, 3], r
    for i, f in rows.items():
        assert f[1] == c.nodes[i].addr, r
    assert rows[leader][2] == "leader", r

    # No leader anywhere: the node named answers for the configuration,
    # and the silent servers keep their own ids.
    c.kill(leader)
    c.kill(other)
    r = c.cli("status", nodes=[follower, other])
    assert r.rc == 0, r
    rows = parse_status(r.text)
    assert sorted(rows) == [1, 2, 3], r
    assert rows[other][1:] == [c.nodes[other].addr, "unreachable"], r
    assert rows[leader][1:] == [c.nodes[leader].addr, "unreachable"], r
    assert rows[follower][2] in ("follower", "candidate"), r


def test_cas_sets_only_over_the_expected_value_and_reads_stdin(shared):
    c = shared
    assert c.cli("cas", "--absent", "cas-k", "one").ok
    r = c.cli("cas", "--absent", "cas-k", "two")
    assert r.rc == 1 and r.err.strip(), r
    r = c.cli("cas", "cas-k", "nope", "two")
    assert r.rc == 1 and r.err.strip(), r
    value = bytes(range(256)) * 4
    r = c.cli("cas", "cas-k", "one", "-", input=value)
    assert r.ok, r
    assert c.cli("get", "cas-k").out == value


def test_output_that_cannot_be_written_is_a_failure(shared):
    c = shared
    assert c.cli("set", "full-out", "v").ok
    for args in (("get", "full-out"), ("ls",), ("status",),
                 ("member", "list")):
        argv = [ck.CLI, "--cluster", c.cli_cluster()] + list(args)
        r = ck.run(["sh", "-c", '"$0" "$@" > /dev/full'] + argv, timeout=30)
        assert r.rc == 3 and not r.timed_out, (args, r)
        assert r.err.strip(), (args, r)
    r = ck.run(["sh", "-c", '"$0" inspect "$1" > /dev/full', ck.CLI,
                c.nodes[1].data], timeout=30)
    assert r.rc == 3 and r.err.strip(), r
    # A closed standard output must not become the connection to a node.
    argv = [ck.CLI, "--cluster", c.cli_cluster(), "get", "full-out"]
    r = ck.run(["sh", "-c", '"$0" "$@" >&-'] + argv, timeout=30)
    assert r.rc == 3 and r.err.strip(), r


@pytest.mark.parametrize("key", [
    "", "a//b", "../x", "a/../b", "./a", "a/.", ".", "..", "/abs", "a/",
    "x" * 256, "d/" * 2048 + "f"
], ids=["empty", "empty-component", "dotdot-first", "dotdot-middle",
        "dot-first", "dot-last", "dot", "dotdot", "leading-slash",
        "trailing-slash", "component-256", "path-over-4096"])
def test_invalid_key_exits_2_and_changes_nothing(shared, key):
    c = shared
    before = c.cli("ls")
    assert before.ok, before
    r = c.cli("set", key, "v")
    assert r.rc == 2 and not r.timed_out, r
    assert r.err.strip(), "no message: %r" % r
    r = c.cli("get", key)
    assert r.rc == 2 and not r.timed_out, r
    r = c.cli("del", key)
    assert r.rc == 2 and not r.timed_out, r
    after = c.cli("ls")
    assert after.ok and after.out == before.out


def test_set_of_a_folder_exits_2_and_changes_nothing(shared):
    c = shared
    assert c.cli("set", "afolder/inside", "v").ok
    r = c.cli("set", "afolder", "v")
    assert r.rc == 2 and not r.timed_out, r
    assert b"folder" in r.err, r
    assert c.cli("get", "afolder/inside").out == b"v"


def test_longest_valid_component_is_accepted(shared):
    c = shared
    key = "long/" + "n" * 255
    r = c.cli("set", key, "ok")
    assert r.ok, r
    assert c.cli("get", key).out == b"ok"
    assert c.read(2, key) == b"ok"


def test_value_of_exactly_4mib_is_accepted(shared):
    c = shared
    data = random.Random(11).randbytes(ck.MAX_VALUE_BYTES)
    r = c.cli("set", "limit/exact", "-", input=data, timeout=60)
    assert r.ok, r
    r = c.cli("get", "limit/exact", timeout=60)
    assert r.ok and r.out == data, "%r" % r
    want = hashlib.sha256(data).hexdigest()
    for i in c.ids():
        assert c.sha256(i, "limit/exact") == want


def test_value_over_4mib_exits_2_and_changes_nothing(shared):
    c = shared
    assert c.cli("set", "limit/over", "original").ok
    data = b"o" * (ck.MAX_VALUE_BYTES + 1)
    r = c.cli("set", "limit/over", "-", input=data, timeout=60)
    assert r.rc == 2 and not r.timed_out, r
    assert r.err.strip(), r
    r = c.cli("set", "limit/new-over", "-", input=data, timeout=60)
    assert r.rc == 2 and not r.timed_out, r
    assert c.cli("get", "limit/over").out == b"original"
    r = c.cli("get", "limit/new-over")
    assert r.rc == 1, r


def test_help_exits_0_and_usage_errors_exit_2(shared):
    c = shared
    r = ck.run([ck.CLI, "--help"])
    assert r.rc == 0, r
    assert b"status" in r.out and b"set" in r.out, r
    for args in (["frobnicate"], ["get"], ["set", "k"], ["del"],
                 ["get", "a", "b"], ["--no-such-flag", "status"]):
        r = c.cli(*args)
        assert r.rc == 2 and not r.timed_out, (args, r)
        assert r.err.strip(), (args, r)
    for cluster in ("bogus", "127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:"):
        r = ck.run([ck.CLI, "--cluster", cluster, "get", "k"], timeout=10)
        assert r.rc == 2 and r.elapsed < 2, (cluster, r)


def test_cluster_from_environment_variable(shared):
    c = shared
    env = dict(os.environ)
    env["IKADA_CLUSTER"] = c.cli_cluster([2])
    r = ck.run([ck.CLI, "set", "envvar/k", "from-env"], env=env)
    assert r.ok, r
    r = ck.run([ck.CLI, "get", "envvar/k"], env=env)
    assert r.ok and r.out == b"from-env", r
