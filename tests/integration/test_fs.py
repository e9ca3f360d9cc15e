"""File operations through the mounts of a healthy cluster: a change made on
one node's mount is visible on every other mount right after.

File contents are compared at once (reads are linearizable).  Attributes
seen through a mount that already looked the file up (mode, mtime, size from
stat) may come from the kernel's attribute cache, which the file system may
keep for up to a second, so those are compared within a bounded wait.
"""

import hashlib
import json
import random
import sys
import time

import cluster as ck

ATTR_CACHE_S = 3.0


def attr_everywhere(c, rel, fmt, want, nodes=None):
    """Every node's stat of rel prints want, within the cache bound."""
    for i in nodes or c.ids():
        deadline = time.monotonic() + ATTR_CACHE_S
        while True:
            got = c.stat(i, rel, fmt)
            if got == want:
                break
            assert time.monotonic() < deadline, (
                "stat -c '%s' %s on node %d: %r, want %r" %
                (fmt, rel, i, got, want))
            time.sleep(0.05)


def test_echo_on_one_mount_then_cat_on_the_others_at_once(shared):
    c = shared
    r = c.sh(1, "echo Alice > name")
    assert r.ok, r
    assert c.read(2, "name") == b"Alice\n"
    assert c.read(3, "name") == b"Alice\n"
    assert c.read(1, "name") == b"Alice\n"


def test_write_through_a_follower_mount(shared):
    c = shared
    leader = c.wait_leader()
    for f in c.followers(leader):
        r = c.sh(f, "echo from-follower-%d > follower-%d" % (f, f))
        assert r.ok, r
        for i in c.ids():
            assert c.read(i, "follower-%d" % f) == b"from-follower-%d\n" % f


def test_nested_directories_made_on_one_node_listed_on_others(shared):
    c = shared
    assert c.sh(1, "mkdir -p nest/a/b/c").ok
    r = c.sh(2, "echo deep > nest/a/b/c/f")
    assert r.ok, r
    assert c.read(3, "nest/a/b/c/f") == b"deep\n"
    for i in c.ids():
        assert c.sh(i, "ls nest").text.split() == ["a"]
        assert c.sh(i, "ls nest/a/b").text.split() == ["c"]
        assert c.sh(i, "ls nest/a/b/c").text.split() == ["f"]
        assert c.stat(i, "nest/a/b", "%F") == "directory"
        assert c.stat(i, "nest/a/b/c/f", "%F %s") == "regular file 5"
    r = c.sh(3, "find nest | sort")
    assert r.text.split() == [
        "nest", "nest/a", "nest/a/b", "nest/a/b/c", "nest/a/b/c/f"
    ]


def test_overwrite_with_shorter_content(shared):
    c = shared
    assert c.sh(1, "echo a-rather-long-first-value > ow").ok
    assert c.read(2, "ow") == b"a-rather-long-first-value\n"
    r = c.sh(2, "echo x > ow")
    assert r.ok, r
    for i in c.ids():
        assert c.read(i, "ow") == b"x\n"
    attr_everywhere(c, "ow", "%s", "2")


def test_append_on_the_same_and_on_other_mounts(shared):
    c = shared
    assert c.sh(1, "echo one > ap").ok
    assert c.sh(1, "echo two >> ap").ok
    assert c.read(2, "ap") == b"one\ntwo\n"
    # Node 2 has just read the file; node 3 appends; then node 2 appends
    # again, which must land after node 3's line whatever size node 2's
    # kernel had cached.
    assert c.sh(3, "echo three >> ap").ok
    assert c.sh(2, "echo four >> ap").ok
    for i in c.ids():
        assert c.read(i, "ap") == b"one\ntwo\nthree\nfour\n", "node %d" % i


def test_rm_file_and_rmdir(shared):
    c = shared
    assert c.sh(1, "mkdir -p rmd/sub && echo v > rmd/sub/f && echo w > "
                "rmf").ok
    assert c.read(3, "rmf") == b"w\n"
    r = c.sh(2, "rm rmf")
    assert r.ok, r
    for i in c.ids():
        assert not c.exists(i, "rmf"), "rmf still on node %d" % i

    r = c.sh(3, "rmdir rmd/sub")
    assert r.rc != 0 and not r.timed_out, "rmdir of a non-empty dir: %r" % r
    assert c.read(1, "rmd/sub/f") == b"v\n"

    assert c.sh(3, "rm rmd/sub/f").ok
    r = c.sh(1, "rmdir rmd/sub")
    assert r.ok, r
    for i in c.ids():
        assert not c.exists(i, "rmd/sub"), "rmd/sub still on node %d" % i
        assert c.sh(i, "ls -A rmd").text == ""
    assert c.sh(2, "rmdir rmd").ok
    for i in c.ids():
        assert not c.exists(i, "rmd")


def test_mv_rename_and_over_an_existing_file(shared):
    c = shared
    assert c.sh(1, "echo a > mv-src").ok
    r = c.sh(2, "mv mv-src mv-dst")
    assert r.ok, r
    for i in c.ids():
        assert not c.exists(i, "mv-src")
        assert c.read(i, "mv-dst") == b"a\n"

    assert c.sh(3, "echo b > mv-other").ok
    r = c.sh(1, "mv mv-other mv-dst")
    assert r.ok, r
    for i in c.ids():
        assert not c.exists(i, "mv-other")
        assert c.read(i, "mv-dst") == b"b\n", "node %d" % i


def test_open_file_stays_readable_after_another_node_removes_it(shared):
    c = shared
    assert c.sh(1, "echo keep > held").ok
    code = ("import os, sys\n"
            "f = open(sys.argv[1], 'rb')\n"
            "os.remove(sys.argv[2])\n"
            "assert not os.path.exists(sys.argv[1])\n"
            "sys.stdout.write(f.read().decode())\n")
    r = ck.run([sys.executable, "-c", code, c.nodes[2].path("held"),
                c.nodes[1].path("held")], timeout=30)
    assert r.ok, r
    assert r.text == "keep\n"


def test_cat_of_an_open_file_after_removal_or_rename_over_it(shared):
    """cat stats its input first: the descriptor must answer with the
    attributes the file had, not ESTALE, once the file is gone."""
    c = shared
    assert c.sh(1, "echo old > gone && echo keep > kept").ok
    m1 = c.nodes[1].path()
    r = c.sh(2, "exec 7< gone 8< kept && echo new > %s/tmp-kept && "
             "mv %s/tmp-kept %s/kept && rm %s/gone && cat <&7 && cat <&8" %
             (m1, m1, m1, m1))
    assert r.ok, r
    assert r.text == "old\nkeep\n", r


def test_open_file_rewritten_elsewhere_reads_one_version(shared):
    c = shared
    assert c.sh(1, "printf AAAAAAAAAA > torn").ok
    r = c.sh(2, "exec 6< torn && printf BBBBBBBBBBBBBBB > %s/torn && "
             "cat <&6" % c.nodes[1].path())
    assert r.ok, r
    assert r.text == "AAAAAAAAAA", r


def test_reader_of_an_open_file_sees_what_is_appended_later(shared):
    """As tail -f does: read to the end, another node appends, the same
    descriptor reads the new bytes."""
    c = shared
    assert c.sh(1, "echo one > grows").ok
    code = ("import subprocess, sys, time\n"
            "f = open(sys.argv[1], 'rb')\n"
            "assert f.read() == b'one\\n'\n"
            "subprocess.run(['sh', '-c', 'echo two >> ' + sys.argv[2]],"
            " check=True)\n"
            "got = b''\n"
            "deadline = time.monotonic() + 5\n"
            "while got != b'two\\n' and time.monotonic() < deadline:\n"
            "    got += f.read()\n"
            "    time.sleep(0.05)\n"
            "sys.stdout.write(got.decode())\n")
    r = ck.run([sys.executable, "-c", code, c.nodes[2].path("grows"),
                c.nodes[1].path("grows")], timeout=30)
    assert r.ok, r
    assert r.text == "two\n", r


def test_rename_over_a_file_never_hides_it_from_readers(shared):
    """A reader that opens the name while another node renames new
    versions over it reads one whole version each time."""
    c = shared
    assert c.sh(1, "echo v0 > swap").ok
    r = ck.run([sys.executable, "-c", READ_LOOP, c.nodes[2].path("swap"),
                c.nodes[1].path("swap"), "300"], timeout=120)
    assert r.ok, r
    counts = json.loads(r.text)
    assert counts["bad"] == [], counts
    # An open races with a rename applied between the kernel's lookup of
    # the name and the open of the inode it found; the kernel looks the
    # name up again once, so only two such races in a row reach the
    # reader, as ESTALE.
    assert counts["stale"] <= 3, counts


READ_LOOP = r"""
import errno, json, os, sys, threading
path, wpath, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
stop = threading.Event()
def write():
    i = 0
    while not stop.is_set():
        i += 1
        with open(wpath + ".tmp", "w") as f:
            f.write("w%d\n" % i)
        os.rename(wpath + ".tmp", wpath)
t = threading.Thread(target=write)
t.start()
counts = {"ok": 0, "stale": 0, "bad": []}
try:
    for _ in range(n):
        try:
            with open(path, "rb") as f:
                data = f.read()
            if not data.endswith(b"\n") or len(data) < 3:
                counts["bad"].append(repr(data))
            else:
                counts["ok"] += 1
        except OSError as e:
            if e.errno == errno.ESTALE:
                counts["stale"] += 1
            else:
                counts["bad"].append(repr(e))
finally:
    stop.set()
    t.join()
print(json.dumps(counts))
"""


def test_mv_a_directory_with_files(shared):
    c = shared
    assert c.sh(1, "mkdir -p mvdir/in && echo 1 > mvdir/f1 && "
                "echo 2 > mvdir/in/f2").ok
    r = c.sh(2, "mv mvdir mvdir2")
    assert r.ok, r
    for i in c.ids():
        assert not c.exists(i, "mvdir")
        assert c.read(i, "mvdir2/f1") == b"1\n"
        assert c.read(i, "mvdir2/in/f2") == b"2\n"


def test_truncate_shrinks_and_extends_with_zeros(shared):
    c = shared
    assert c.sh(1, "printf 0123456789 > tr").ok
    assert c.sh(2, "truncate -s 4 tr").ok
    for i in c.ids():
        assert c.read(i, "tr") == b"0123"
    assert c.sh(3, "truncate -s 8 tr").ok
    for i in c.ids():
        assert c.read(i, "tr") == b"0123\0\0\0\0"
    attr_everywhere(c, "tr", "%s", "8")


def test_chmod_is_seen_on_every_node(shared):
    c = shared
    assert c.sh(1, "echo m > cm && chmod 600 cm").ok
    attr_everywhere(c, "cm", "%a", "600")
    assert c.sh(2, "chmod 751 cm").ok
    attr_everywhere(c, "cm", "%a", "751")


def test_touch_d_sets_the_same_mtime_everywhere(shared):
    c = shared
    assert c.sh(1, "echo t > td").ok
    r = c.sh(2, "touch -d '2001-02-03 04:05:06 UTC' td")
    assert r.ok, r
    attr_everywhere(c, "td", "%Y", "981173106")
    r = c.sh(3, "touch -d '@1234567890' td-new")
    assert r.ok, r
    attr_everywhere(c, "td-new", "%Y %s", "1234567890 0")


def test_stat_sizes_match_the_bytes_written(shared):
    c = shared
    sizes = [0, 1, 4095, 4096, 4097, 70000]
    for n, size in enumerate(sizes):
        src = 1 + n % 3
        r = c.write(src, "sz-%d" % size, b"z" * size)
        assert r.ok, r
    for size in sizes:
        attr_everywhere(c, "sz-%d" % size, "%s", str(size))
        for i in c.ids():
            assert len(c.read(i, "sz-%d" % size)) == size


def test_one_mib_file_by_cp_and_dd_identical_on_every_mount(shared, tmp_path):
    c = shared
    src = tmp_path / "src.bin"
    src.write_bytes(random.Random(7).randbytes(1 << 20))
    want = hashlib.sha256(src.read_bytes()).hexdigest()

    r = ck.run(["cp", str(src), c.nodes[1].path("big-cp")], timeout=30)
    assert r.ok, r
    r = ck.run(["dd", "if=%s" % src, "of=%s" % c.nodes[2].path("big-dd"),
                "bs=4k", "conv=fsync"], timeout=30)
    assert r.ok, r
    for i in c.ids():
        assert c.sha256(i, "big-cp") == want, "big-cp on node %d" % i
        assert c.sha256(i, "big-dd") == want, "big-dd on node %d" % i
        assert c.stat(i, "big-cp", "%s") == str(1 << 20)


def test_mount_and_cli_see_the_same_keys(shared):
    c = shared
    assert c.sh(2, "mkdir -p both && echo via-mount > both/m").ok
    r = c.cli("get", "both/m")
    assert r.ok and r.out == b"via-mount\n", r
    r = c.cli("set", "both/c", "via-cli")
    assert r.ok, r
    for i in c.ids():
        assert c.read(i, "both/c") == b"via-cli"
    r = c.cli("ls", "both")
    assert r.ok and r.text.split() == ["both/c", "both/m"], r


WRITE_AT = r"""
import errno, os, sys
path, offset, size, trunc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    sys.argv[4] == "trunc"
step = "open"
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if trunc else 0))
    step = "write"
    data = b"y" * size
    done = 0
    while done < size:
        done += os.pwrite(fd, data[done:], offset + done)
    step = "fsync"
    os.fsync(fd)
    step = "close"
    os.close(fd)
except OSError as e:
    print(step, errno.errorcode.get(e.errno, e.errno))
    sys.exit(1)
print("ok")
"""


def write_at(c, i, rel, offset, size, trunc=False):
    return ck.run([sys.executable, "-c", WRITE_AT, c.nodes[i].path(rel),
                   str(offset), str(size), "trunc" if trunc else "keep"],
                  timeout=30)


def test_write_past_4mib_gets_efbig_and_leaves_the_file_unchanged(shared):
    c = shared
    assert c.sh(1, "echo keep > big-limit").ok

    r = write_at(c, 2, "big-limit", ck.MAX_VALUE_BYTES, 1)
    assert r.rc == 1 and "EFBIG" in r.text, r
    r = c.sh(3, "truncate -s %d big-limit" % (ck.MAX_VALUE_BYTES + 1))
    assert r.rc != 0 and not r.timed_out, r
    assert "too large" in r.errtext.lower(), r
    for i in c.ids():
        assert c.read(i, "big-limit") == b"keep\n", "node %d" % i


def test_dd_past_4mib_fails_with_file_too_large(shared):
    c = shared
    assert c.sh(1, "echo keep > big-dd").ok
    r = ck.run(["dd", "if=/dev/zero", "of=%s" % c.nodes[2].path("big-dd"),
                "bs=1M", "count=5", "conv=notrunc"], timeout=30)
    assert r.rc != 0 and not r.timed_out, r
    assert "too large" in r.errtext.lower(), r
    # The writes below the limit may have taken effect (as on a local file
    # system) or not at all; either way every node agrees.
    digests = {c.sha256(i, "big-dd") for i in c.ids()}
    assert len(digests) == 1
    allowed = {hashlib.sha256(b"keep\n").hexdigest(),
               hashlib.sha256(b"\0" * ck.MAX_VALUE_BYTES).hexdigest()}
    assert digests <= allowed


def test_file_of_exactly_4mib_through_the_mount_is_allowed(shared):
    c = shared
    r = write_at(c, 1, "big-exact", 0, ck.MAX_VALUE_BYTES, trunc=True)
    assert r.ok and r.text.strip() == "ok", r
    want = hashlib.sha256(b"y" * ck.MAX_VALUE_BYTES).hexdigest()
    for i in c.ids():
        assert c.sha256(i, "big-exact") == want
    attr_everywhere(c, "big-exact", "%s", str(ck.MAX_VALUE_BYTES))


def test_links_fifos_and_device_nodes_are_refused_as_not_permitted(shared):
    c = shared
    assert c.sh(1, "echo t > nodes-target").ok
    for cmd in ("ln -s nodes-target nodes-sym", "ln nodes-target nodes-hard",
                "mkfifo nodes-fifo", "mknod nodes-dev c 1 3"):
        r = c.sh(1, cmd)
        assert r.rc != 0 and b"Operation not permitted" in r.err, r
    r = c.sh(1, "ls nodes-sym nodes-hard nodes-fifo nodes-dev")
    assert r.rc != 0 and r.out == b"", r


def test_tar_of_a_whole_mount_succeeds(shared, tmp_path):
    """.ikada entries keep their times, so tar does not see them change
    while it reads them.  (metrics is left out: tar's own reads move its
    counters, so its size may change between tar's stat and its read.)"""
    c = shared
    assert c.sh(1, "mkdir -p tarred && echo a > tarred/a").ok
    archive = str(tmp_path / "all.tar")
    r = ck.run(["tar", "cf", archive, "--exclude=./.ikada/metrics", "-C",
                c.nodes[2].mount, "."], timeout=60)
    assert r.ok, r
    r = ck.run(["tar", "tf", archive], timeout=30)
    assert "./tarred/a" in r.text.splitlines(), r
    assert "./.ikada/leader" in r.text.splitlines(), r


TEMPFILE = """
import os, sys, tempfile
f = tempfile.TemporaryFile(dir=sys.argv[1])
f.write(b"x" * 10000)
f.flush()
f.seek(0)
assert f.read() == b"x" * 10000
f.truncate(5)
f.seek(0, 2)
f.write(b"yz")
f.seek(0)
sys.stdout.write(repr((f.read(), os.fstat(f.fileno()).st_size)))
"""

UNLINKED_ELSEWHERE = """
import os, stat, subprocess, sys
a, b = sys.argv[1], sys.argv[2]
fd = os.open(a + "/orphan", os.O_RDWR | os.O_APPEND)
os.write(fd, b"one\\n")
subprocess.run(["rm", b + "/orphan"], check=True)
os.write(fd, b"two\\n")
os.fchmod(fd, 0o600)
os.utime(fd, (1, 2))
st = os.fstat(fd)
sys.stdout.write(repr((os.pread(fd, 100, 0), st.st_size,
                       oct(stat.S_IMODE(st.st_mode)), int(st.st_mtime),
                       os.path.exists(a + "/orphan"))))
os.close(fd)
"""


UNLINKED_WHILE_WRITING = """
import os, subprocess, sys, threading
a, b, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for n in range(rounds):
    name = "racing%d" % n
    with open(a + "/" + name, "wb"):
        pass
    fd = os.open(a + "/" + name, os.O_RDWR | os.O_APPEND)
    errors = []
    def writer():
        for i in range(150):
            for op in ("write", "read", "truncate"):
                try:
                    if op == "write":
                        os.write(fd, b"%04d\\n" % i)
                    elif op == "read":
                        os.pread(fd, 5, 0)
                    else:
                        os.ftruncate(fd, 5 * (i + 1))
                except OSError as e:
                    errors.append((i, op, e.strerror))
                    return
    t = threading.Thread(target=writer)
    t.start()
    subprocess.run(["rm", b + "/" + name], check=True)
    t.join(60)
    assert not t.is_alive(), "a write hung"
    assert not errors, "round %d: a write or read failed: %r" % (n, errors)
    want = b"".join(b"%04d\\n" % i for i in range(150))
    got = os.pread(fd, 10000, 0)
    assert got == want, "round %d: %r" % (n, got[:60])
    os.close(fd)
print("ok")
"""


def test_writes_and_reads_racing_a_removal_on_another_node_all_succeed(
        shared):
    """Writes, reads and truncations through a descriptor go on without an
    error when another node removes the file while they are in flight:
    those ordered after the removal go to this node's kept copy."""
    c = shared
    assert c.sh(1, "mkdir -p racing").ok
    r = ck.run(["/usr/bin/python3", "-c", UNLINKED_WHILE_WRITING,
                c.nodes[1].path("racing"), c.nodes[2].path("racing"), "8"],
               timeout=120)
    assert r.ok and r.text.strip() == "ok", r
    for i in c.ids():
        r = c.sh(i, "ls -A racing")
        assert r.ok and r.out == b"", r


def test_an_open_file_stays_writable_once_unlinked_here_or_elsewhere(shared):
    """POSIX keeps an unlinked file usable through its descriptors: an
    anonymous temporary file, and a file another node removes while it is
    open for writing.  Nothing of it shows up under any name after."""
    c = shared
    assert c.sh(1, "mkdir -p orphans").ok
    r = ck.run(["/usr/bin/python3", "-c", TEMPFILE,
                c.nodes[1].path("orphans")], timeout=30)
    assert r.ok, r
    assert r.text == repr((b"xxxxxyz", 7)), r

    assert c.sh(1, "echo zero > orphans/orphan").ok
    r = ck.run(["/usr/bin/python3", "-c", UNLINKED_ELSEWHERE,
                c.nodes[1].path("orphans"), c.nodes[2].path("orphans")],
               timeout=30)
    assert r.ok, r
    assert r.text == repr((b"zero\none\ntwo\n", 13, "0o600", 2, False)), r
    for i in c.ids():
        r = c.sh(i, "ls -A orphans")
        assert r.ok and r.out == b"", r
