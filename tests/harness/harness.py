"""A fault-injection harness for Ikada with a linearizability check.

Real ikada-server processes run on 127.0.0.1, 127.0.0.2, 127.0.0.3 (...),
each with its mount.  Client threads read, write and compare-and-set a few
keys through the command line client and through the mounts, and write
keys of their own once each, while a schedule of faults runs: SIGKILL and
restart, SIGSTOP and SIGCONT, and network partitions made with iptables
(one node cut off, the leader in a minority, a bridge, a majority ring,
one-way cuts and one-way loss).  Every operation is recorded with its start,
end and outcome; at the end the history is checked for linearizability
(checker.py) and every acknowledged write of a key of its own must be there.

Partitions use a chain of their own, jumped to from OUTPUT, whose rules
match only this cluster's addresses and ports; the chain is removed at the
end whatever happens, and chains left by a harness that died are removed at
the start.  Clients of the harness connect from 127.0.0.1, so a cut between
node 1 and another node also cuts the harness's command line clients off
that node: they then go through the others.

On failure the history, the schedule and the nodes' logs are kept in a
folder whose path is printed.
"""

import argparse
import atexit
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, HERE)

import checker  # noqa: E402
import cluster as ck  # noqa: E402

KEYS = ["h/r0", "h/r1", "h/r2"]
CHAIN_PREFIX = "IKADA-H"
CLI_TIMEOUT_MS = 3000
OP_TIMEOUT_S = 8.0
FAULT_LENGTH_S = 5.0
RECOVER_S = 4.0


def log(msg):
    sys.stdout.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


# ----- network faults --------------------------------------------------------


def iptables(*args, check=True):
    r = subprocess.run(["iptables", "-w", "5"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("iptables %s: %s" %
                           (" ".join(args), r.stderr.decode().strip()))
    return r


def iptables_usable():
    try:
        return iptables("-L", "OUTPUT", "-n", check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def remove_chain(chain):
    """Unhook and delete chain; quiet when it is gone already."""
    while iptables("-D", "OUTPUT", "-j", chain, check=False).returncode == 0:
        pass
    iptables("-F", chain, check=False)
    iptables("-X", chain, check=False)


def remove_stale_chains():
    """Remove chains of harness runs whose process is gone."""
    r = iptables("-S", check=False)
    for m in re.finditer(r"^-N (%s(\d+))$" % CHAIN_PREFIX,
                         r.stdout.decode(), re.M):
        if not os.path.exists("/proc/%s" % m.group(2)):
            remove_chain(m.group(1))


class Net:
    """Packet drops between this cluster's nodes, in one chain."""

    def __init__(self, cl):
        self.cl = cl
        self.chain = "%s%d" % (CHAIN_PREFIX, os.getpid())
        self.ports = ",".join(str(nd.port) for nd in cl.nodes.values())
        self.active = False

    def setup(self):
        remove_stale_chains()
        remove_chain(self.chain)
        iptables("-N", self.chain)
        self.active = True
        iptables("-I", "OUTPUT", "-j", self.chain)

    def drop(self, a, b, probability=None):
        """Drop what node a sends to node b (some of it with a
        probability)."""
        rule = [
            "-A", self.chain, "-s", self.cl.nodes[a].host, "-d",
            self.cl.nodes[b].host, "-p", "tcp", "-m", "multiport", "--ports",
            self.ports
        ]
        if probability is not None:
            rule += [
                "-m", "statistic", "--mode", "random", "--probability",
                "%.2f" % probability
            ]
        iptables(*(rule + ["-j", "DROP"]))

    def drop_replies(self, a, client_host="127.0.0.1"):
        """Drop what node a sends back on connections clients made to it
        from client_host (not its peers, when they live elsewhere)."""
        # Connections still open and resets pass: the SYN-ACK and RST.
        iptables("-A", self.chain, "-s", self.cl.nodes[a].host, "-d",
                 client_host, "-p", "tcp", "--sport",
                 str(self.cl.nodes[a].port), "--tcp-flags", "SYN,RST",
                 "NONE", "-j", "DROP")

    def reset_requests(self, a, client_host="127.0.0.1"):
        """Answer what clients on client_host send to node a with a TCP
        reset, as a host that lost the connection would."""
        iptables("-A", self.chain, "-s", client_host, "-d",
                 self.cl.nodes[a].host, "-p", "tcp", "--dport",
                 str(self.cl.nodes[a].port), "-j", "REJECT", "--reject-with",
                 "tcp-reset")

    def cut(self, a, b):
        self.drop(a, b)
        self.drop(b, a)

    def heal(self):
        if self.active:
            iptables("-F", self.chain)

    def teardown(self):
        if self.active:
            remove_chain(self.chain)
            self.active = False


# ----- the cluster's view ----------------------------------------------------


def find_leader(cl):
    """The id a majority of answering nodes name as leader, or None."""
    r = ck.run([ck.CLI, "--cluster", cl.cli_cluster(), "status"], timeout=8)
    votes = {}
    for line in r.text.splitlines():
        f = line.split()
        if len(f) == 7 and f[6].isdigit() and f[6] != "0":
            votes[int(f[6])] = votes.get(int(f[6]), 0) + 1
    if not votes:
        return None
    lid, n = max(votes.items(), key=lambda kv: kv[1])
    return lid if n * 2 > len(cl.nodes) else None


# ----- faults ----------------------------------------------------------------


class Faults:
    """Each fault starts, lasts a while, and is healed; run() records what
    happened for the report."""

    def __init__(self, cl, net, rng, length_s):
        self.cl = cl
        self.net = net
        self.rng = rng
        self.length_s = length_s
        self.down = set()  # nodes whose mount must not be used
        self.lock = threading.Lock()
        self.done = []

    def pick(self, target):
        if target == "leader":
            lid = find_leader(self.cl)
            if lid is not None:
                return lid
        return self.rng.choice(self.cl.ids())

    def others(self, i):
        return [j for j in self.cl.ids() if j != i]

    def set_down(self, ids):
        with self.lock:
            self.down = set(ids)

    def kill(self, target):
        i = self.pick(target)
        self.set_down([i])
        self.cl.kill(i)
        time.sleep(self.length_s)
        self.cl.restart(i, timeout=30)
        self.set_down([])
        return "SIGKILL node %d, restart" % i

    def pause(self, target):
        i = self.pick(target)
        self.set_down([i])
        self.cl.stop(i)
        time.sleep(self.length_s)
        self.cl.cont(i)
        self.set_down([])
        return "SIGSTOP node %d, SIGCONT" % i

    def isolate(self, target):
        i = self.pick(target)
        for j in self.others(i):
            self.net.cut(i, j)
        self.hold()
        return "node %d cut off%s" % (
            i, " (the leader: a minority)" if target == "leader" else "")

    def bridge(self, target):
        b = self.pick(target)
        rest = self.others(b)
        half = len(rest) // 2
        for x in rest[:half]:
            for y in rest[half:]:
                self.net.cut(x, y)
        self.hold()
        return "bridge: only node %d links %s and %s" % (b, rest[:half],
                                                          rest[half:])

    def ring(self, target):
        ids = self.cl.ids()
        n = len(ids)
        for a in range(n):
            for b in range(a + 1, n):
                if min(b - a, n - (b - a)) > 1:
                    self.net.cut(ids[a], ids[b])
        self.hold()
        return "majority ring: each node sees its two neighbours"

    def one_way(self, target):
        i = self.pick(target)
        j = self.rng.choice(self.others(i))
        self.net.drop(i, j)
        self.hold()
        return "one-way cut: node %d -> node %d dropped" % (i, j)

    def lossy(self, target):
        i = self.pick(target)
        j = self.rng.choice(self.others(i))
        self.net.drop(i, j, probability=0.5)
        self.hold()
        return "one-way loss: half of node %d -> node %d dropped" % (i, j)

    def hold(self):
        time.sleep(self.length_s)
        self.net.heal()

    def run(self, name, target):
        start = time.monotonic()
        what = getattr(self, name)(target)
        self.done.append({
            "fault": name,
            "target": target,
            "what": what,
            "start": start,
            "end": time.monotonic()
        })
        log("fault: %s" % what)


NET_FAULTS = ("isolate", "bridge", "ring", "one_way", "lossy")


def schedule(rng, n_nodes, long_run, net_ok, duration_s):
    """The list of (fault, target) to run, in order."""
    base = [("kill", "any"), ("kill", "leader"), ("pause", "any"),
            ("pause", "leader"), ("isolate", "any"), ("isolate", "leader"),
            ("bridge", "any"), ("one_way", "leader"), ("lossy", "leader")]
    if n_nodes >= 5:
        base.append(("ring", "any"))
    if not net_ok:
        base = [f for f in base if f[0] not in NET_FAULTS]
    if not long_run:
        return base
    out = list(base)
    per_fault = FAULT_LENGTH_S + RECOVER_S + 2
    while len(out) * per_fault < duration_s:
        out.append(rng.choice(base))
    return out


# ----- clients ---------------------------------------------------------------


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.acked = {}  # own key -> value, writes acknowledged
        self.counts = {}

    def add(self, op):
        with self.lock:
            self.ops.append(op)
            k = "%s %s %s" % (op.via.split(":")[0], op.kind, op.outcome)
            self.counts[k] = self.counts.get(k, 0) + 1

    def ack(self, key, value):
        with self.lock:
            self.acked[key] = value


# Children that use a mount first open its root and check that it is a
# mount: a daemon killed meanwhile is unmounted lazily, and a path through
# the mount point would then reach the empty folder below (ENOENT, or a
# write that lands there).  Through the root's descriptor, a dead mount
# answers ENOTCONN instead.
OPEN_MOUNT = r"""
import os, sys
def open_mount(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        below = os.stat(os.path.dirname(os.path.abspath(path)))
        if os.fstat(fd).st_dev == below.st_dev:
            sys.exit(3)
        return fd
    except OSError as e:
        print(e, file=sys.stderr)
        sys.exit(3)
"""

# Exit 10: the key was not touched; 11: the rename failed (unknown).
WRITE_VIA_MOUNT = OPEN_MOUNT + r"""
root = open_mount(sys.argv[1])
tmp, dst, value = sys.argv[2], sys.argv[3], sys.argv[4]
try:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644,
                 dir_fd=root)
    os.write(fd, value.encode())
    os.fsync(fd)
    os.close(fd)
except OSError as e:
    print(e, file=sys.stderr)
    sys.exit(10)
if dst == "-":
    sys.exit(0)
try:
    os.rename(tmp, dst, src_dir_fd=root, dst_dir_fd=root)
except OSError as e:
    print(e, file=sys.stderr)
    sys.exit(11)
"""

# The open(2) alone decides "absent": a later error (the file replaced by
# a rename while open) leaves the outcome unknown.  Python's open() would
# also fstat, whose error could not be told apart.
READ_VIA_MOUNT = OPEN_MOUNT + r"""
root = open_mount(sys.argv[1])
try:
    fd = os.open(sys.argv[2], os.O_RDONLY, dir_fd=root)
except FileNotFoundError:
    sys.exit(1)
except OSError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
data = b""
try:
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
except OSError as e:
    print("read:", e, file=sys.stderr)
    sys.exit(3)
sys.stdout.buffer.write(data)
"""


class Client(threading.Thread):
    def __init__(self, cid, cl, faults, history, stop, rng):
        super().__init__(name="client-%d" % cid, daemon=True)
        self.cid = cid
        self.cl = cl
        self.faults = faults
        self.history = history
        self.stop_ev = stop
        self.rng = rng
        self.n = 0
        self.error = None

    def cli(self, *args):
        ids = self.cl.ids()
        k = self.rng.randrange(len(ids))
        ids = ids[k:] + ids[:k]
        argv = [
            ck.CLI, "--cluster",
            self.cl.cli_cluster(ids), "--timeout-ms",
            str(CLI_TIMEOUT_MS)
        ] + list(args)
        return ck.run(argv, timeout=OP_TIMEOUT_S)

    def mount_node(self):
        with self.faults.lock:
            up = [i for i in self.cl.ids() if i not in self.faults.down]
        return self.rng.choice(up) if up else None

    def record(self, key, kind, t0, outcome, via, **kw):
        self.history.add(
            checker.Op(key, kind, t0, time.monotonic(), outcome,
                       client=self.cid, via=via, **kw))

    def read(self, key):
        i = self.mount_node()
        t0 = time.monotonic()
        if i is None or self.rng.random() < 0.5:
            r = self.cli("get", key)
            if r.rc in (0, 1) and not r.timed_out:
                value = r.text if r.rc == 0 else None
                self.record(key, "read", t0, "ok", "cli", value=value)
            else:
                self.record(key, "read", t0, "unknown", "cli",
                            note=r.errtext.strip()[:200])
            return
        r = ck.run(
            [sys.executable, "-c", READ_VIA_MOUNT, self.cl.nodes[i].mount,
             key],
            timeout=OP_TIMEOUT_S)
        via = "mount:%d" % i
        if r.ok:
            self.record(key, "read", t0, "ok", via, value=r.text)
        elif not r.timed_out and r.rc == 1:
            self.record(key, "read", t0, "ok", via, value=None)
        else:
            self.record(key, "read", t0, "unknown", via,
                        note=r.errtext.strip()[:200])

    def write(self, key, value):
        i = self.mount_node()
        t0 = time.monotonic()
        if i is None or self.rng.random() < 0.5:
            r = self.cli("set", key, value)
            outcome = "ok" if r.ok else "unknown"
            self.record(key, "write", t0, outcome, "cli", value=value,
                        note=r.errtext.strip()[:200] or None)
            return
        tmp = "h/tmp/c%d-%d" % (self.cid, self.n)
        r = ck.run([
            sys.executable, "-c", WRITE_VIA_MOUNT, self.cl.nodes[i].mount,
            tmp, key, value
        ], timeout=OP_TIMEOUT_S)
        # Before the rename nothing touched the key: a certain failure.
        outcome = ("ok" if r.ok else "fail" if r.rc == 10
                   and not r.timed_out else "unknown")
        self.record(key, "write", t0, outcome, "mount:%d" % i, value=value,
                    note=r.errtext.strip()[:200] or None)

    def cas(self, key, value):
        expect = self.rng.choice(self.recent.get(key, [None]))
        t0 = time.monotonic()
        if expect is None:
            r = self.cli("cas", "--absent", key, value)
        else:
            r = self.cli("cas", key, expect, value)
        if r.rc in (0, 1) and not r.timed_out:
            self.record(key, "cas", t0, "ok", "cli", value=value,
                        expect=expect, result=r.rc == 0)
        else:
            self.record(key, "cas", t0, "unknown", "cli", value=value,
                        expect=expect, note=r.errtext.strip()[:200])

    def own(self):
        """Write a key of this client's own once; remember it if
        acknowledged."""
        key = "h/own/c%d-%d" % (self.cid, self.n)
        value = "own-%d-%d" % (self.cid, self.n)
        i = self.mount_node()
        if i is None or self.rng.random() < 0.5:
            r = self.cli("set", key, value)
        else:
            r = ck.run([
                sys.executable, "-c", WRITE_VIA_MOUNT,
                self.cl.nodes[i].mount, key, "-", value
            ], timeout=OP_TIMEOUT_S)
        if r.ok:
            self.history.ack(key, value)

    def run(self):
        self.recent = {}
        try:
            while not self.stop_ev.is_set():
                self.n += 1
                key = self.rng.choice(KEYS)
                value = "c%d-%d" % (self.cid, self.n)
                x = self.rng.random()
                if x < 0.4:
                    self.read(key)
                elif x < 0.65:
                    self.write(key, value)
                    self.recent.setdefault(key, []).append(value)
                elif x < 0.9:
                    self.cas(key, value)
                else:
                    self.own()
                with self.history.lock:
                    seen = [
                        op.value for op in self.history.ops[-20:]
                        if op.key == key and op.kind == "read"
                        and op.outcome == "ok"
                    ]
                if seen:
                    self.recent[key] = (self.recent.get(key, []) +
                                        seen)[-8:]
        except Exception as e:  # reported by the main thread
            self.error = e


# ----- the run ---------------------------------------------------------------


def check_acked(cl, history):
    """Every acknowledged write of a client's own key, on every node."""
    missing = []
    code = ("import json, os, sys\n"
            "root = sys.argv[1]\n"
            "out = {}\n"
            "d = os.path.join(root, 'h', 'own')\n"
            "for n in (os.listdir(d) if os.path.isdir(d) else []):\n"
            "    with open(os.path.join(d, n)) as f:\n"
            "        out['h/own/' + n] = f.read()\n"
            "print(json.dumps(out))\n")
    for i in cl.ids():
        found = None
        for _ in range(20):
            r = ck.run([sys.executable, "-c", code, cl.nodes[i].path()],
                       timeout=30)
            if r.ok:
                found = json.loads(r.text)
                break
            time.sleep(0.5)
        if found is None:
            missing.append("node %d: cannot read its mount" % i)
            continue
        for key, value in sorted(history.acked.items()):
            if found.get(key) != value:
                missing.append("node %d: %s is %r, acknowledged %r" %
                               (i, key, found.get(key), value))
    return missing


def keep_evidence(cl, history, faults, plan, args, reason):
    base = args.out or os.environ.get("IKADA_HARNESS_OUT") or "/tmp"
    folder = os.path.join(
        base, "ikada-harness-%s-%d" % (time.strftime("%Y%m%d-%H%M%S"),
                                       os.getpid()))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "history.json"), "w") as f:
        json.dump([op.to_json() for op in history.ops], f, indent=0,
                  default=str)
    with open(os.path.join(folder, "schedule.json"), "w") as f:
        json.dump({
            "seed": args.seed,
            "plan": plan,
            "done": faults.done if faults else [],
            "acked": history.acked
        }, f, indent=1)
    with open(os.path.join(folder, "reason.txt"), "w") as f:
        f.write(reason + "\n")
    for i, nd in cl.nodes.items():
        if os.path.exists(nd.log):
            shutil.copy(nd.log, os.path.join(folder, "node%d.log" % i))
    return folder


def report(history, faults, elapsed, result):
    log("ran %.0f s: %d operations, %d faults, %d own keys acknowledged" %
        (elapsed, len(history.ops), len(faults.done), len(history.acked)))
    for k in sorted(history.counts):
        log("  %-22s %d" % (k, history.counts[k]))
    if result is not None:
        log("checker explored %d states" % result.explored)


def run(args):
    rng = random.Random(args.seed)
    hosts = ["127.0.0.%d" % (i + 1) for i in range(args.nodes)]
    extra = ["--mount-reads", args.mount_reads]
    cl = ck.Cluster(n=args.nodes, name="harness", hosts=hosts,
                    extra_args=extra)
    net = Net(cl)
    net_ok = iptables_usable()
    if not net_ok:
        log("iptables is not usable here (root and netfilter needed): "
            "partitions are left out")
    atexit.register(net.teardown)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    history = History()
    faults = None
    plan = schedule(rng, args.nodes, args.long, net_ok, args.duration)
    reason = None
    result = None
    start = time.monotonic()
    try:
        if net_ok:
            net.setup()
        cl.start(timeout=30)
        cl.wait_leader(timeout=30)
        r = ck.run([ck.CLI, "--cluster", cl.cli_cluster(), "set",
                    "h/tmp/.keep", ""], timeout=30)
        assert r.ok, "cannot write: %r" % (r, )
        r = ck.run([ck.CLI, "--cluster", cl.cli_cluster(), "set",
                    "h/own/.keep", ""], timeout=30)
        assert r.ok, "cannot write: %r" % (r, )
        log("cluster up: %s; schedule: %s" %
            (cl.spec, ", ".join("%s(%s)" % f for f in plan)))
        faults = Faults(cl, net, rng, FAULT_LENGTH_S)
        stop = threading.Event()
        clients = [
            Client(c, cl, faults, history, stop,
                   random.Random(rng.random())) for c in range(args.clients)
        ]
        for c in clients:
            c.start()
        time.sleep(RECOVER_S)
        for name, target in plan:
            faults.run(name, target)
            time.sleep(RECOVER_S)
        stop.set()
        for c in clients:
            c.join(timeout=OP_TIMEOUT_S * 3)
            if c.error is not None:
                raise c.error
        net.heal()
        cl.wait_leader(timeout=30)
        result = checker.check(history.ops)
        if not result:
            reason = "not linearizable: key %s: %s" % (result.key,
                                                       result.reason)
        else:
            missing = check_acked(cl, history)
            if missing:
                reason = "acknowledged writes missing:\n" + "\n".join(
                    missing[:50])
    except Exception as e:
        reason = "harness error: %r" % (e, )
    except BaseException:
        net.teardown()
        cl.close(keep=True)
        raise
    finally:
        net.teardown()
    report(history, faults or Faults(cl, net, rng, 0),
           time.monotonic() - start, result)
    if reason is not None:
        folder = keep_evidence(cl, history, faults, plan, args, reason)
        cl.close(keep=True)
        log("FAILED: %s" % reason)
        log("history, schedule and node logs kept in %s" % folder)
        return 1
    cl.close()
    log("PASSED: history linearizable, every acknowledged write found")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--long", action="store_true",
                   help="a long random schedule (--duration seconds)")
    p.add_argument("--duration", type=float, default=600,
                   help="length of a --long schedule in seconds")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--mount-reads", choices=("linearizable", "local"),
                   default="linearizable",
                   help="the servers' mount read mode (local reads may be "
                   "stale: the checker should then fail)")
    p.add_argument("--out", default=None,
                   help="where a failure's evidence goes (default /tmp)")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if args.nodes < 3 or args.nodes > 9:
        p.error("--nodes must be 3 to 9")
    log("seed %d" % args.seed)
    for path in (ck.SERVER, ck.CLI):
        if not os.access(path, os.X_OK):
            log("%s is missing: build first or set IKADA_BUILD" % path)
            return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
