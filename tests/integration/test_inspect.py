"""ikada inspect: a node's data folder read while it runs, and damage
found in a copy of it."""

import shutil
import sqlite3

import cluster as ck


def inspect(*args):
    return ck.run([ck.CLI, "inspect"] + list(args), timeout=30)


def test_inspect_a_running_node_decodes_its_log_and_finds_it_intact(
        cluster, tmp_path):
    c = cluster
    leader = c.wait_leader()
    assert c.cli("set", "insp/a", "hello").ok
    assert c.sh(leader, "mkdir -p insp/d && echo x > insp/d/f").ok
    assert c.sh(leader, "mv insp/d/f insp/d/g").ok

    r = inspect(c.nodes[leader].data)
    assert r.rc == 0, r
    out = r.text
    assert "result: intact" in out, out
    assert 'put key="insp/a" bytes=5' in out, out
    assert 'mkdir parent=' in out and 'name="d"' in out, out
    assert 'rename parent=' in out and 'to_name="g"' in out, out
    assert "FAIL" not in out, out
    # Values never appear, only their sizes.
    assert "hello" not in out, out

    r = inspect("--tail", "1", c.nodes[leader].data)
    assert r.rc == 0, r
    entries = r.text.split("log entries:\n")[1].split("checks:\n")[0]
    assert entries.count("\n") == 1 and "rename" in entries, r.text


def test_inspect_reports_damage_with_exit_1(cluster, tmp_path):
    c = cluster
    leader = c.wait_leader()
    assert c.sh(leader, "echo data > dmg").ok
    follower = c.followers(leader)[0]
    c.kill(follower)
    copy = str(tmp_path / "copy")
    shutil.copytree(c.nodes[follower].data, copy)

    db = sqlite3.connect(copy + "/ikada.db")
    last = db.execute("SELECT max(idx) FROM log").fetchone()[0]
    assert last >= 3
    db.execute("DELETE FROM log WHERE idx = ?", (last - 1,))
    db.execute("UPDATE inode SET size = size + 7 WHERE is_dir = 0")
    db.commit()
    db.close()

    r = inspect(copy)
    assert r.rc == 1, r
    assert "result: DAMAGED" in r.text, r.text
    assert "FAIL log has 1 gaps" in r.text, r.text
    assert "larger than their content" in r.text, r.text


def test_inspect_finds_files_grown_by_appends_intact(cluster):
    """Appends leave room in a file's stored content past its size;
    that is not damage."""
    c = cluster
    leader = c.wait_leader()
    assert c.sh(leader, "echo 1 > grown && echo 22 >> grown && "
                "echo 333 >> grown").ok
    r = inspect(c.nodes[leader].data)
    assert r.rc == 0, r
    assert "result: intact" in r.text, r.text


def test_inspect_refuses_a_folder_without_a_database(tmp_path):
    r = inspect(str(tmp_path))
    assert r.rc == 2 and b"no ikada.db" in r.err, r
    r = inspect()
    assert r.rc == 2 and b"inspect takes" in r.err, r
    r = inspect("--tail", "x", str(tmp_path))
    assert r.rc == 2, r
