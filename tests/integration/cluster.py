"""A harness for Ikada's end-to-end tests: real ikada-server processes on
loopback, each with a real FUSE mount, driven only through subprocesses.

Every file operation on a mount runs in a child process with a timeout: a
FUSE request to a stopped or dead daemon can block the caller, and the test
process itself must never be the one that blocks.  Every wait is a loop with
a deadline.
"""

import errno
import hashlib
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("IKADA_BUILD", os.path.join(REPO, "build"))
SERVER = os.path.join(BUILD, "ikada-server")
CLI = os.path.join(BUILD, "ikada")

ELECTION_TIMEOUT_MS = 1000
HEARTBEAT_MS = 100
MAX_VALUE_BYTES = 4 * 1024 * 1024

# Ports are picked below the kernel's ephemeral range (32768-60999), so that
# outgoing connections never take a port between our check and the bind, and
# away from 1111-1113 where a user's own cluster may run.
PORT_LOW, PORT_HIGH = 10000, 30000
_taken_ports = set()

# Children that survived SIGKILL for a while (stuck in the kernel); they are
# killed again at teardown.
_abandoned = []


class Result:
    """What a finished (or timed out) child process did."""

    def __init__(self, argv, rc, out, err, elapsed, timed_out):
        self.argv = argv
        self.rc = rc
        self.out = out
        self.err = err
        self.elapsed = elapsed
        self.timed_out = timed_out

    @property
    def ok(self):
        return self.rc == 0 and not self.timed_out

    @property
    def text(self):
        return self.out.decode(errors="replace")

    @property
    def errtext(self):
        return self.err.decode(errors="replace")

    def __repr__(self):
        def short(b):
            s = b.decode(errors="replace")
            return s if len(s) < 600 else s[:300] + " [...] " + s[-300:]

        what = "TIMED OUT" if self.timed_out else "rc=%s" % self.rc
        return "<%s %s after %.2fs stdout=%r stderr=%r>" % (
            " ".join(shlex.quote(a) for a in self.argv)[:300], what,
            self.elapsed, short(self.out), short(self.err))


def run(argv, timeout=10.0, input=None, env=None):
    """Run argv in its own session; kill the whole session at the deadline.

    Never takes a cwd on a mount: Popen's chdir would block this process
    before the child could be killed."""
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE if input is not None else
        subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            _abandoned.append(proc)
            out, err = b"", b"(child did not die within 5 s of SIGKILL)"
    elapsed = time.monotonic() - start
    rc = proc.returncode
    return Result(list(argv), rc, out or b"", err or b"", elapsed, timed_out)


def sh(cmd, cwd=None, timeout=10.0, input=None):
    """Run a shell command line, in cwd (changed into by the shell)."""
    if cwd is not None:
        cmd = "cd %s || exit 125\n%s" % (shlex.quote(cwd), cmd)
    return run(["sh", "-c", cmd], timeout=timeout, input=input)


def _killpg(pid, sig):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_abandoned():
    for p in _abandoned[:]:
        _killpg(p.pid, signal.SIGKILL)
        try:
            p.wait(timeout=1)
            _abandoned.remove(p)
        except subprocess.TimeoutExpired:
            pass


def port_is_free(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n):
    ports = []
    rng = random.Random(os.getpid() ^ time.time_ns())
    while len(ports) < n:
        p = rng.randrange(PORT_LOW, PORT_HIGH)
        if p in _taken_ports or not port_is_free(p):
            continue
        _taken_ports.add(p)
        ports.append(p)
    return ports


def _unescape_mountinfo(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 4].isdigit() and i + 4 <= len(s):
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounts_at(path):
    """File system types mounted exactly at path, bottom first (reading
    mountinfo never touches the FUSE file systems themselves)."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if _unescape_mountinfo(fields[4]) == path:
                found.append(fields[sep + 1])
    return found


def mounts_under(path):
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = _unescape_mountinfo(line.split()[4])
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return found


def tree_digest(root):
    """Names, sizes and content hashes of every file below root."""
    digest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        digest[rel + "/"] = "dir"
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                data = f.read()
            digest[os.path.join(rel, name)] = (
                len(data), hashlib.sha256(data).hexdigest())
    return digest


def process_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def children(pid):
    """Pids of the live children of pid (read from /proc)."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(name))
    return kids


class Node:
    def __init__(self, cluster, nid, port, host="127.0.0.1"):
        self.cluster = cluster
        self.id = nid
        self.host = host
        self.port = port
        self.data = os.path.join(cluster.root, "n%d" % nid)
        self.mount = os.path.join(cluster.root, "m%d" % nid)
        self.log = os.path.join(cluster.root, "n%d.log" % nid)
        self.proc = None
        self.stopped = False
        self.started_at = None
        # Started with --listen/--join instead of --cluster: it waits to be
        # added with `ikada member add`.
        self.joiner = False

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def live(self):
        """Running and not stopped: its mount can be used."""
        return self.running() and not self.stopped

    def path(self, rel=""):
        return os.path.join(self.mount, rel) if rel else self.mount


class Cluster:
    """N ikada-server processes on loopback with their own data folders,
    mounts and logs below one temporary folder.  hosts gives each node's
    address in id order (default: all on 127.0.0.1)."""

    def __init__(self, n=3, name="cluster", extra_args=(), env=None,
                 hosts=None):
        base = os.environ.get("IKADA_TEST_TMP") or None
        safe = "".join(c if c.isalnum() else "-" for c in name)[:40]
        self.root = tempfile.mkdtemp(prefix="ikada-it-%s-" % safe, dir=base)
        self.extra_args = list(extra_args)
        self.env = dict(os.environ)
        if os.environ.get("IKADA_TEST_LOG"):
            self.env["IKADA_LOG"] = os.environ["IKADA_TEST_LOG"]
        if env:
            self.env.update(env)
        ports = free_ports(n)
        hosts = list(hosts) if hosts is not None else ["127.0.0.1"] * n
        assert len(hosts) == n, "one host a node"
        self.nodes = {
            i + 1: Node(self, i + 1, ports[i], hosts[i])
            for i in range(n)
        }
        self.spec = ",".join(
            "%d=%s" % (i, nd.addr) for i, nd in self.nodes.items())
        self.closed = False

    # ----- processes -------------------------------------------------------

    def ids(self):
        return sorted(self.nodes)

    def live_ids(self):
        return [i for i in self.ids() if self.nodes[i].live()]

    def add_node(self, host="127.0.0.1"):
        """A new node (not started) that joins the running cluster; returns
        its id."""
        nid = max(self.nodes) + 1
        nd = Node(self, nid, free_ports(1)[0], host)
        nd.joiner = True
        self.nodes[nid] = nd
        return nid

    def server_argv(self, i):
        nd = self.nodes[i]
        if nd.joiner:
            join = ",".join(self.nodes[j].addr for j in self.ids()
                            if not self.nodes[j].joiner)
            return [
                SERVER, "--id", str(i), "--listen", nd.addr, "--join", join,
                "--data", nd.data, "--mount", nd.mount,
                "--election-timeout-ms", str(ELECTION_TIMEOUT_MS),
                "--heartbeat-ms", str(HEARTBEAT_MS)
            ] + self.extra_args
        return [
            SERVER, "--id", str(i), "--cluster", self.spec, "--data",
            nd.data, "--mount", nd.mount, "--election-timeout-ms",
            str(ELECTION_TIMEOUT_MS), "--heartbeat-ms", str(HEARTBEAT_MS)
        ] + self.extra_args

    def start(self, wait=True, timeout=15.0):
        for i in self.ids():
            self.start_node(i, wait=False)
        if wait:
            for i in self.ids():
                self.wait_mounted(i, timeout=timeout)

    def start_node(self, i, wait=True, timeout=15.0):
        nd = self.nodes[i]
        assert not nd.running(), "node %d is already running" % i
        with open(nd.log, "ab") as log:
            log.write(b"==== harness: starting node %d at %s: %s\n" % (
                i, time.strftime("%H:%M:%S").encode(), " ".join(
                    self.server_argv(i)).encode()))
            log.flush()
            nd.proc = subprocess.Popen(self.server_argv(i),
                                       stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=log, env=self.env,
                                       start_new_session=True)
        nd.stopped = False
        nd.started_at = time.monotonic()
        if wait:
            self.wait_mounted(i, timeout=timeout)

    def wait_mounted(self, i, timeout=15.0):
        """Until node i's mount answers .ikada/id with its own id."""
        nd = self.nodes[i]
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if not nd.running():
                raise AssertionError(
                    "node %d exited with status %s before its mount worked;"
                    " log tail:\n%s" % (i, nd.proc.returncode if nd.proc
                                        else None, self.log_tail(i)))
            last = self.cat(i, ".ikada/id", timeout=3)
            if last.ok and last.text.strip() == str(i):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    "node %d: mount %s not working after %.0f s: %r" %
                    (i, nd.mount, timeout, last))
            time.sleep(0.05)

    def kill(self, i, sig=signal.SIGKILL, timeout=10.0):
        """Send sig; for SIGKILL also reap the process."""
        nd = self.nodes[i]
        assert nd.proc is not None
        _killpg(nd.proc.pid, sig)
        if sig == signal.SIGKILL:
            nd.proc.wait(timeout=timeout)
            nd.stopped = False
        return nd.proc.returncode

    def stop(self, i, timeout=5.0):
        """SIGSTOP node i and wait until the kernel shows it stopped."""
        nd = self.nodes[i]
        nd.stopped = True
        os.kill(nd.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while process_state(nd.proc.pid) not in ("T", "t"):
            assert time.monotonic() < deadline, "node %d did not stop" % i
            time.sleep(0.01)

    def cont(self, i):
        nd = self.nodes[i]
        os.kill(nd.proc.pid, signal.SIGCONT)
        nd.stopped = False

    def terminate(self, i, sig=signal.SIGTERM, timeout=10.0):
        """Send sig and wait for the exit; returns the exit status, or None
        when the node is still running at the deadline."""
        nd = self.nodes[i]
        os.kill(nd.proc.pid, sig)
        try:
            return nd.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def restart(self, i, wait=True, timeout=15.0):
        self.start_node(i, wait=wait, timeout=timeout)

    # ----- observing -------------------------------------------------------

    def ikada(self, i, name, timeout=5.0):
        """The stripped text of M/.ikada/NAME on node i, or None."""
        r = self.cat(i, ".ikada/" + name, timeout=timeout)
        return r.text.strip() if r.ok else None

    def leader_seen_by(self, i):
        text = self.ikada(i, "leader", timeout=3)
        if text is None or text == "none" or not text:
            return None
        try:
            return int(text.split()[0])
        except ValueError:
            return None

    def wait_leader(self, timeout=10.0, among=None):
        """Until every live node (or every node in among) names the same
        leader, which is live itself and says its role is leader."""
        deadline = time.monotonic() + timeout
        views = {}
        while True:
            ids = among if among is not None else self.live_ids()
            views = {i: self.leader_seen_by(i) for i in ids}
            vals = set(views.values())
            if len(vals) == 1:
                lid = vals.pop()
                if (lid is not None and lid in self.nodes
                        and self.nodes[lid].live()
                        and self.ikada(lid, "role", timeout=3) == "leader"):
                    return lid
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no agreed leader within %.1f s; leader seen by each "
                    "live node: %r" % (timeout, views))
            time.sleep(0.05)

    def followers(self, leader):
        return [i for i in self.live_ids() if i != leader]

    def status_json(self, i):
        text = self.ikada(i, "status")
        return json.loads(text) if text is not None else None

    # ----- file operations on mounts (always in child processes) ------------

    def sh(self, i, cmd, timeout=10.0, input=None):
        """Run a shell command line inside node i's mount."""
        return sh(cmd, cwd=self.nodes[i].mount, timeout=timeout, input=input)

    def cat(self, i, rel, timeout=10.0):
        return run(["cat", "--", self.nodes[i].path(rel)], timeout=timeout)

    def read(self, i, rel, timeout=10.0):
        r = self.cat(i, rel, timeout=timeout)
        assert r.ok, "reading %s on node %d failed: %r" % (rel, i, r)
        return r.out

    def write(self, i, rel, data, timeout=10.0):
        """Write bytes with `cat > f` (which reports errors from close)."""
        return run(["sh", "-c", 'cat > "$1"', "sh",
                    self.nodes[i].path(rel)], timeout=timeout, input=data)

    def stat(self, i, rel, fmt, timeout=10.0):
        r = run(["stat", "-c", fmt, "--", self.nodes[i].path(rel)],
                timeout=timeout)
        assert r.ok, "stat %s on node %d failed: %r" % (rel, i, r)
        return r.text.strip()

    def exists(self, i, rel, timeout=10.0):
        """True/False from lstat in a child; fails on any other error."""
        code = ("import os,sys\n"
                "try:\n os.lstat(sys.argv[1]); print('yes')\n"
                "except FileNotFoundError: print('no')\n")
        r = run([sys.executable, "-c", code, self.nodes[i].path(rel)],
                timeout=timeout)
        assert r.ok, "lstat %s on node %d failed: %r" % (rel, i, r)
        return r.text.strip() == "yes"

    def sha256(self, i, rel, timeout=30.0):
        r = run(["sha256sum", "--", self.nodes[i].path(rel)], timeout=timeout)
        assert r.ok, "sha256sum %s on node %d failed: %r" % (rel, i, r)
        return r.text.split()[0]

    # ----- the command line client ------------------------------------------

    def cli_cluster(self, nodes=None):
        ids = nodes if nodes is not None else self.ids()
        return ",".join(self.nodes[i].addr for i in ids)

    def cli(self, *args, nodes=None, input=None, timeout=30.0):
        argv = [CLI, "--cluster", self.cli_cluster(nodes)] + list(args)
        return run(argv, timeout=timeout, input=input)

    # ----- logs and teardown ---------------------------------------------

    def log_tail(self, i, lines=40):
        try:
            with open(self.nodes[i].log, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                data = f.read().decode(errors="replace")
        except OSError as e:
            return "(no log: %s)" % e
        return "\n".join(data.splitlines()[-lines:])

    def logs_report(self, lines=40):
        parts = ["cluster folder: %s" % self.root]
        for i, nd in self.nodes.items():
            state = ("running" if nd.running() else "exited %s" %
                     (nd.proc.returncode if nd.proc else "(never started)"))
            if nd.stopped:
                state += ", stopped"
            parts.append("---- node %d (%s, %s) last %d lines of %s ----" %
                         (i, nd.addr, state, lines, nd.log))
            parts.append(self.log_tail(i, lines))
        return "\n".join(parts)

    def close(self, keep=False):
        """Kill every process, lazily unmount every mount, and remove the
        folder unless keep is set (or a mount could not be cleared)."""
        if self.closed:
            return
        self.closed = True
        for nd in self.nodes.values():
            if nd.proc is not None and nd.proc.poll() is None:
                _killpg(nd.proc.pid, signal.SIGKILL)
                try:
                    nd.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        kill_abandoned()
        for nd in self.nodes.values():
            for _ in range(4):
                if not mounts_at(nd.mount):
                    break
                run(["fusermount3", "-u", "-z", nd.mount], timeout=10)
        if keep or mounts_under(self.root):
            sys.stderr.write("ikada test cluster kept at %s\n" % self.root)
            return
        run(["rm", "-rf", "--one-file-system", self.root], timeout=60)


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.1f s" %
                                 (what, timeout))
        time.sleep(interval)


def errno_name(text):
    """The errno symbol a child printed, for messages."""
    for name in errno.errorcode.values():
        if name in text:
            return name
    return None
