"""ikada-server refuses bad input at once: exit status 2, a one-line message,
nothing written."""

import os
import signal
import socket

import pytest

import cluster as ck


@pytest.fixture
def setup(tmp_path):
    if not os.access(ck.SERVER, os.X_OK):
        pytest.fail("%s is missing" % ck.SERVER)
    ports = ck.free_ports(3)
    spec = ",".join("%d=127.0.0.1:%d" % (i + 1, p) for i, p in
                    enumerate(ports))
    return tmp_path, ports, spec


def message_lines(r):
    return [l for l in (r.text + r.errtext).splitlines() if l.strip()]


def assert_refused(r, data, mount):
    assert not r.timed_out, r
    assert r.rc == 2, r
    assert len(message_lines(r)) == 1, "want a one-line message: %r" % r
    assert not os.path.exists(data) or os.listdir(data) == [], (
        "something was written to %s: %r" % (data, os.listdir(data)))
    assert ck.mounts_at(mount) == []


def test_help_exits_0_with_usage_on_stdout():
    r = ck.run([ck.SERVER, "--help"])
    assert r.rc == 0, r
    for flag in (b"--id", b"--cluster", b"--data", b"--mount", b"--listen",
                 b"--join", b"--recover"):
        assert flag in r.out, r


BAD = {
    "unknown-flag": lambda a: a + ["--no-such-flag"],
    "unknown-flag-with-value": lambda a: a + ["--frobnicate", "3"],
    "missing-id": lambda a: a[2:],
    "id-not-a-number": lambda a: ["--id", "one"] + a[2:],
    "id-zero": lambda a: ["--id", "0"] + a[2:],
    "id-not-in-cluster": lambda a: ["--id", "4"] + a[2:],
    "missing-cluster": lambda a: a[:2] + a[4:],
    "cluster-without-port": lambda a: a[:3] + ["1=127.0.0.1"] + a[4:],
    "cluster-garbage": lambda a: a[:3] + ["garbage"] + a[4:],
    "cluster-port-out-of-range": lambda a: a[:3] + [
        "1=127.0.0.1:99999"] + a[4:],
    "cluster-duplicate-id": lambda a: a[:3] + [
        a[3].split(",")[0] + "," + a[3].split(",")[0]] + a[4:],
    "missing-data": lambda a: a[:4] + a[6:],
    "flag-without-value": lambda a: a + ["--heartbeat-ms"],
    "election-timeout-not-a-number": lambda a: a + [
        "--election-timeout-ms", "soon"],
    "cluster-and-listen": lambda a: a + [
        "--listen", a[3].split(",")[0].split("=")[1], "--join", "127.0.0.1:1"],
    "listen-without-join": lambda a: a[:2] + [
        "--listen", a[3].split(",")[0].split("=")[1]] + a[4:],
    "join-garbage": lambda a: a[:2] + [
        "--listen", a[3].split(",")[0].split("=")[1], "--join",
        "nowhere"] + a[4:],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_flags_exit_2_with_one_line(setup, case):
    tmp, ports, spec = setup
    data, mount = str(tmp / "data"), str(tmp / "mnt")
    good = ["--id", "1", "--cluster", spec, "--data", data, "--mount", mount]
    r = ck.run([ck.SERVER] + BAD[case](good), timeout=5)
    if r.timed_out:
        ck.run(["fusermount3", "-u", "-z", mount])
    assert_refused(r, data, mount)


def test_port_in_use_exits_2_with_one_line(setup):
    tmp, ports, spec = setup
    data, mount = str(tmp / "data"), str(tmp / "mnt")
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", ports[0]))
        holder.listen(4)
        r = ck.run([ck.SERVER, "--id", "1", "--cluster", spec, "--data",
                    data, "--mount", mount], timeout=10)
    finally:
        holder.close()
    if r.timed_out:
        ck.run(["fusermount3", "-u", "-z", mount])
    assert_refused(r, data, mount)


def test_unusable_data_folder_exits_2_with_one_line(setup):
    tmp, ports, spec = setup
    data, mount = str(tmp / "a-file"), str(tmp / "mnt")
    with open(data, "w") as f:
        f.write("not a folder\n")
    r = ck.run([ck.SERVER, "--id", "1", "--cluster", spec, "--data", data,
                "--mount", mount], timeout=10)
    if r.timed_out:
        ck.run(["fusermount3", "-u", "-z", mount])
    assert not r.timed_out and r.rc == 2, r
    assert len(message_lines(r)) == 1, r
    with open(data) as f:
        assert f.read() == "not a folder\n"


def test_unusable_mount_point_exits_2_with_one_line_and_writes_nothing(
        setup):
    tmp, ports, spec = setup
    data = str(tmp / "data")
    blocker = str(tmp / "a-file")
    with open(blocker, "w") as f:
        f.write("not a folder\n")
    for mount in (blocker, blocker + "/mnt", "/proc/ikada-no-such-mount"):
        r = ck.run([ck.SERVER, "--id", "1", "--cluster", spec, "--data",
                    data, "--mount", mount], timeout=10)
        if r.timed_out:
            ck.run(["fusermount3", "-u", "-z", mount])
        assert not r.timed_out and r.rc == 2, r
        assert len(message_lines(r)) == 1, r
        assert b"--mount" in r.err, r
        assert not os.path.exists(data), "wrote %s for %s" % (data, mount)


def test_data_folder_of_another_node_exits_2_and_is_left_unchanged(setup):
    tmp, ports, spec = setup
    data = str(tmp / "data")
    c = ck.Cluster(n=3, name="other-id")
    try:
        # Node 1 alone initializes its folder (it cannot win an election).
        c.start_node(1)
        assert c.terminate(1) == 0
        data = c.nodes[1].data
        before = ck.tree_digest(data)
        assert len(before) > 1, "node 1 wrote nothing to %s" % data

        mount = os.path.join(c.root, "m-other")
        r = ck.run([ck.SERVER, "--id", "2", "--cluster", c.spec, "--data",
                    data, "--mount", mount], timeout=10)
        if r.timed_out:
            ck.run(["fusermount3", "-u", "-z", mount])
        assert not r.timed_out and r.rc == 2, r
        assert len(message_lines(r)) == 1, r
        assert ck.tree_digest(data) == before
        assert ck.mounts_at(mount) == []
    except BaseException:
        print(c.logs_report())
        c.close(keep=True)
        raise
    c.close()


def test_restart_with_its_own_data_folder_works(setup):
    c = ck.Cluster(n=3, name="own-id")
    try:
        c.start_node(1)
        assert c.terminate(1, sig=signal.SIGTERM) == 0
        c.start_node(1)
        assert c.ikada(1, "id") == "1"
    except BaseException:
        print(c.logs_report())
        c.close(keep=True)
        raise
    c.close()


def test_a_running_servers_mount_and_data_folder_are_refused(setup):
    tmp, ports, spec = setup
    c = ck.Cluster(n=3, name="in-use")
    try:
        c.start()
        c.wait_leader()
        assert c.write(1, "f", b"kept\n").ok

        # Another server, with its own port and data folder, on node 1's
        # mount point: refused, and node 1 keeps its mount.
        other = str(tmp / "other-data")
        r = ck.run([ck.SERVER, "--id", "1", "--cluster",
                    "1=127.0.0.1:%d" % ports[0], "--data", other,
                    "--mount", c.nodes[1].mount], timeout=10)
        assert not r.timed_out and r.rc == 2, r
        assert len(message_lines(r)) == 1, r
        assert b"--mount" in r.err and b"running server" in r.err, r
        assert not os.path.exists(other), "wrote %s" % other
        assert c.read(1, "f") == b"kept\n"
        # The same mount point named through a link, or with "/.".
        link = str(tmp / "link")
        os.symlink(c.nodes[1].mount, link)
        for mount in (link, c.nodes[1].mount + "/."):
            r = ck.run([ck.SERVER, "--id", "1", "--cluster",
                        "1=127.0.0.1:%d" % ports[0], "--data", other,
                        "--mount", mount], timeout=10)
            assert not r.timed_out and r.rc == 2, r
            assert b"running server" in r.err, r
        assert len(ck.mounts_at(c.nodes[1].mount)) == 1
        assert c.read(1, "f") == b"kept\n"

        # The same while node 1 is stopped and cannot answer.
        c.stop(1)
        r = ck.run([ck.SERVER, "--id", "1", "--cluster",
                    "1=127.0.0.1:%d" % ports[0], "--data", other,
                    "--mount", c.nodes[1].mount], timeout=10)
        c.cont(1)
        assert not r.timed_out and r.rc == 2, r
        assert b"running server" in r.err, r
        assert c.read(1, "f") == b"kept\n"

        # A second server on node 2's data folder: refused before it
        # touches the log, and node 2 keeps serving.
        mount = str(tmp / "other-mount")
        r = ck.run([ck.SERVER, "--id", "2", "--cluster",
                    "2=127.0.0.1:%d" % ports[1], "--data",
                    c.nodes[2].data, "--mount", mount], timeout=10)
        assert not r.timed_out and r.rc == 2, r
        assert len(message_lines(r)) == 1, r
        assert b"--data" in r.err and b"in use" in r.err, r
        assert ck.mounts_at(mount) == []
        assert c.write(2, "g", b"after\n").ok
        assert c.read(3, "g") == b"after\n"

        # Refused for its data folder, a start leaves a dead mount alone:
        # clearing it would let writes land in the folder beneath.
        c.kill(3)
        r = ck.run([ck.SERVER, "--id", "2", "--cluster",
                    "2=127.0.0.1:%d" % ports[1], "--data",
                    c.nodes[2].data, "--mount", c.nodes[3].mount], timeout=10)
        assert not r.timed_out and r.rc == 2, r
        assert len(message_lines(r)) == 1, r
        r = ck.run(["stat", c.nodes[3].mount], timeout=10)
        assert not r.ok and "not connected" in r.errtext, r
    except BaseException:
        print(c.logs_report())
        c.close(keep=True)
        raise
    c.close()
