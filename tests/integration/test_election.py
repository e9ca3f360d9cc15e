"""Start-up: a leader is elected quickly and every mount's .ikada/ files tell
the same, well-formed story."""

import json
import subprocess
import time

import cluster as ck


def test_leader_within_5s_of_start_and_every_mount_agrees(new_cluster):
    c = new_cluster
    t0 = time.monotonic()
    c.start(wait=False)
    leader = c.wait_leader(timeout=5.0)
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, "leader after %.2f s" % elapsed

    expected = "%d %s" % (leader, c.nodes[leader].addr)
    for i in c.ids():
        assert c.ikada(i, "leader") == expected, "node %d" % i


def test_ikada_files_show_one_leader_and_consistent_state(cluster):
    c = cluster
    leader = c.wait_leader()

    roles = {i: c.ikada(i, "role") for i in c.ids()}
    assert sorted(roles.values()) == ["follower", "follower", "leader"], roles
    assert roles[leader] == "leader"

    terms = {}
    for i in c.ids():
        assert c.ikada(i, "id") == str(i)
        assert c.ikada(i, "leader") == "%d %s" % (leader,
                                                   c.nodes[leader].addr)
        # applied is read before commit: commit never goes down, so the
        # pair read this way must satisfy applied <= commit.
        applied = int(c.ikada(i, "applied"))
        commit = int(c.ikada(i, "commit"))
        assert 0 <= applied <= commit, (i, applied, commit)
        terms[i] = int(c.ikada(i, "term"))
        assert terms[i] >= 1
    assert len(set(terms.values())) == 1, terms

    want_members = ["%d %s voter" % (i, c.nodes[i].addr) for i in c.ids()]
    for i in c.ids():
        members = c.ikada(i, "members").splitlines()
        assert sorted(m.strip() for m in members) == sorted(want_members)


def test_ikada_file_sizes_match_their_content(cluster):
    """Tools that trust st_size (tail, wc -c, tar) see the real content."""
    c = cluster
    c.wait_leader()
    for name in ("id", "term", "members", "status"):
        content = c.read(1, ".ikada/" + name)
        assert c.stat(1, ".ikada/" + name, "%s") == str(len(content))
    r = c.sh(1, "tail -n1 .ikada/members")
    assert r.ok, r
    assert r.text.strip() == c.read(1, ".ikada/members").decode(
    ).splitlines()[-1].strip()
    r = c.sh(1, "wc -c < .ikada/id")
    assert r.text.strip() == "2", r


def test_ikada_status_is_json_with_all_fields(cluster):
    c = cluster
    leader = c.wait_leader()
    for i in c.ids():
        text = c.ikada(i, "status")
        assert text is not None, "no .ikada/status on node %d" % i
        st = json.loads(text)
        assert isinstance(st, dict)
        for field in ("id", "leader", "term", "role", "commit", "applied",
                      "members"):
            assert field in st, "status of node %d lacks %r: %s" % (
                i, field, text)
        assert str(st["id"]) == str(i)
        assert st["role"] == ("leader" if i == leader else "follower")
        assert int(st["term"]) >= 1
        assert 0 <= int(st["applied"]) <= int(st["commit"])
        assert str(leader) in json.dumps(st["leader"])
        members = json.dumps(st["members"])
        for j in c.ids():
            assert c.nodes[j].addr in members


def test_ikada_folder_is_read_only(cluster):
    c = cluster
    for i in c.ids():
        r = c.sh(i, "echo 7 > .ikada/id")
        assert r.rc != 0 and not r.timed_out, r
        r = c.sh(i, "touch .ikada/new-file")
        assert r.rc != 0 and not r.timed_out, r
        assert c.ikada(i, "id") == str(i)
    assert ck.mounts_at(c.nodes[1].mount)


WRITE_LOOP = """
import os, subprocess, sys, time
d, seconds = sys.argv[1], float(sys.argv[2])
errors = []
appended = 0
fd = os.open(d + "/appended", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    n += 1
    for _ in range(4):
        try:
            os.write(fd, b"x\\n")
            appended += 1
        except OSError as e:
            errors.append("append: " + e.strerror)
    r = subprocess.run(["sh", "-c", "echo %d > %s/echoed" % (n, d)],
                       capture_output=True, timeout=20)
    if r.returncode != 0:
        errors.append("echo: " + r.stderr.decode().strip())
os.close(fd)
print(appended, n, repr(errors))
"""


def test_transfer_moves_leadership_while_every_mount_keeps_writing(cluster):
    """`ikada transfer` moves the lead at once, and writes through every
    mount meanwhile wait for the new leader rather than fail."""
    c = cluster
    first = c.wait_leader()
    for i in c.ids():
        assert c.sh(i, "mkdir -p moving%d" % i).ok
    writers = {
        i: subprocess.Popen(
            ["/usr/bin/python3", "-c", WRITE_LOOP,
             c.nodes[i].path("moving%d" % i), "8"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in c.ids()}
    try:
        leaders = [first]
        time.sleep(0.5)
        for _ in range(6):
            r = c.cli("transfer", timeout=15)
            assert r.ok, r
            leaders.append(c.wait_leader(timeout=5))
            assert leaders[-1] != leaders[-2], leaders
            time.sleep(0.8)
        outs = {i: w.communicate(timeout=60) for i, w in writers.items()}
    finally:
        for w in writers.values():
            if w.poll() is None:
                w.kill()
                w.wait()
    for i, (out, err) in outs.items():
        assert writers[i].returncode == 0, err
        appended, rounds, errors = out.decode().split(" ", 2)
        assert errors.strip() == "[]", "node %d: %s" % (i, errors)
        assert int(rounds) > 10, out
        # Every acknowledged append is there, once, on every node.
        for j in c.ids():
            assert c.read(j, "moving%d/appended" % i) == \
                b"x\n" * int(appended), "node %d's file on node %d" % (i, j)
