"""Metrics (.ikada/metrics and --metrics-addr) and traces (OTLP/HTTP to a
local receiver) with real nodes."""

import os
import re
import socket
import statistics
import time
import urllib.error
import urllib.request

import pytest

import cluster as ck
import otlp

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|\+Inf|NaN)$')


def parse_metrics(text):
    """{(name, labels): value} from Prometheus text; fails on a bad line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a Prometheus sample: %r" % line
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def metrics_of(c, i):
    return parse_metrics(c.read(i, ".ikada/metrics").decode())


def value(metrics, name, labels=""):
    assert (name, labels) in metrics, (name, labels, sorted(metrics)[:20])
    return metrics[(name, labels)]


def test_ikada_metrics_file_parses_and_moves_with_writes(cluster):
    c = cluster
    leader = c.wait_leader()
    before = metrics_of(c, leader)
    assert value(before, "ikada_role", '{role="leader"}') == 1
    assert value(before, "ikada_term") == int(c.read(leader, ".ikada/term"))

    for k in range(5):
        assert c.sh(leader, "echo %d > metric-%d" % (k, k)).ok
    after = metrics_of(c, leader)
    assert (value(after, "ikada_proposals_total", '{result="ok"}') >=
            value(before, "ikada_proposals_total", '{result="ok"}') + 5)
    assert (value(after, "ikada_proposal_seconds_count") >=
            value(before, "ikada_proposal_seconds_count") + 5)
    assert (value(after, "ikada_storage_write_seconds_count") >
            value(before, "ikada_storage_write_seconds_count"))
    assert value(after, "ikada_commit_index") >= value(
        before, "ikada_commit_index") + 5
    for f in c.followers(leader):
        assert value(after, "ikada_peer_match_index",
                     '{peer="%d"}' % f) > 0

    follower = c.followers(leader)[0]
    fm = metrics_of(c, follower)
    assert value(fm, "ikada_role", '{role="follower"}') == 1
    assert value(fm, "ikada_leader_id") == leader


class MetricsCluster(ck.Cluster):
    """Each node also serves metrics over HTTP on a port of its own."""

    def __init__(self, **kw):
        super().__init__(**kw)
        ports = ck.free_ports(len(self.nodes))
        self.metrics_ports = dict(zip(self.ids(), ports))

    def server_argv(self, i):
        return super().server_argv(i) + [
            "--metrics-addr", "127.0.0.1:%d" % self.metrics_ports[i]]


def http_get(port, path):
    try:
        with urllib.request.urlopen(
                "http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, None, e.read()


def test_metrics_over_http_on_every_node(request):
    c = MetricsCluster(name=request.node.name)
    try:
        c.start()
        leader = c.wait_leader(timeout=10)
        assert c.sh(leader, "echo x > over-http").ok
        for i in c.ids():
            status, ctype, body = http_get(c.metrics_ports[i], "/metrics")
            assert status == 200, (i, status, body)
            assert ctype.startswith("text/plain"), ctype
            m = parse_metrics(body.decode())
            assert value(m, "ikada_applied_index") >= 1
        status, _, _ = http_get(c.metrics_ports[leader], "/other")
        assert status == 404
    finally:
        c.close()


def test_metrics_addr_in_use_or_malformed_exits_2(request, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = ck.free_ports(1)[0]
    base = [ck.SERVER, "--id", "1", "--cluster", "1=127.0.0.1:%d" % port,
            "--data", str(tmp_path / "d")]
    try:
        for addr in ("127.0.0.1:%d" % busy.getsockname()[1], "nohost",
                     "127.0.0.1:99999"):
            r = ck.run(base + ["--metrics-addr", addr], timeout=10)
            assert r.rc == 2, (addr, r)
            assert len(r.err.strip().splitlines()) == 1, r
            assert b"metrics" in r.err, r
        assert not (tmp_path / "d" / "ikada.db").exists()
    finally:
        busy.close()


# ----- traces ---------------------------------------------------------------

def trace_env(endpoint, **more):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "ikada-it",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=it,team=raft",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-ikada-test=yes",
    }
    env.update(more)
    return env


@pytest.fixture
def receiver():
    r = otlp.Receiver()
    yield r
    r.close()


def check_tree(spans):
    """One root; every other span's parent is in the trace and began no
    later than its child; ids are unique.  Returns the root."""
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans), "span ids repeat: %r" % spans
    roots = [s for s in spans if s.parent_id is None]
    assert len(roots) == 1, "roots: %r" % roots
    for s in spans:
        assert s.end >= s.start, s
        if s.parent_id is None:
            continue
        assert s.parent_id in by_id, "parent of %r is missing" % s
        parent = by_id[s.parent_id]
        # One machine, one clock; a millisecond for its steps.
        assert s.start >= parent.start - 1000000, (parent, s)
    return roots[0]


def parents_arrived(spans):
    """Spans arrive in batches from each node: a child may come first."""
    ids = {s.span_id for s in spans}
    return all(s.parent_id is None or s.parent_id in ids for s in spans)


def settled(receiver, trace_id, leader, followers):
    """The spans of trace_id once every node's part arrived, else None."""
    spans = receiver.trace(trace_id)
    names = {}
    for s in spans:
        names.setdefault(s.name, set()).add(s.node)
    need = {
        "fs.open": set(), "fs.create": set(), "fs.write": set(),
        "raft.propose": {str(leader)}, "raft.append": {str(leader)},
        "raft.commit": {str(leader)}, "raft.replicate": {str(leader)},
        "raft.follower_append": {str(f) for f in followers},
        "raft.apply": {str(i) for i in [leader] + followers},
    }
    for name, nodes in need.items():
        if name not in names or not nodes <= names[name]:
            return None
    return spans if parents_arrived(spans) else None


def test_follower_write_is_one_trace_across_nodes(request, receiver):
    c = ck.Cluster(name=request.node.name, env=trace_env(receiver.endpoint))
    try:
        c.start()
        leader = c.wait_leader(timeout=10)
        followers = c.followers(leader)
        f = followers[0]
        assert c.sh(f, "echo x > traced").ok
        assert c.read(leader, "traced") == b"x\n"

        def opened(spans):
            return [s for s in spans if s.name == "fs.open" and
                    s.attrs.get("fs.name") == "traced"]
        root = receiver.wait(opened, what="fs.open of traced")[0]
        assert root.node == str(f)
        spans = receiver.wait(
            lambda _: settled(receiver, root.trace_id, leader, followers),
            what="every node's spans of trace %s" % root.trace_id)

        assert check_tree(spans) is root
        # Everything the follower's mount did for this file is in it.
        fs_spans = [s for s in receiver.snapshot() if s.node == str(f) and
                    s.name in ("fs.create", "fs.write")]
        assert {s.trace_id for s in fs_spans} == {root.trace_id}, fs_spans
        # Two proposals (create, write), each through the leader and
        # replicated to both followers.
        count = {}
        for s in spans:
            count[s.name] = count.get(s.name, 0) + 1
        assert count["raft.propose"] == 2, count
        assert count["raft.replicate"] == 4, count
        peers = {s.attrs["raft.peer"] for s in spans
                 if s.name == "raft.replicate"}
        assert peers == set(followers)
        # A follower's append hangs under the leader's replicate span to
        # that very follower.
        by_id = {s.span_id: s for s in spans}
        for s in spans:
            if s.name == "raft.follower_append":
                parent = by_id[s.parent_id]
                assert parent.name == "raft.replicate"
                assert str(parent.attrs["raft.peer"]) == s.node
                assert parent.node == str(leader)
        # The resource tells the nodes apart and carries the variables.
        assert {s.node for s in spans} == {str(i) for i in c.ids()}
        for s in spans:
            assert s.resource["service.name"] == "ikada-it"
            assert s.resource["deployment.environment"] == "it"
            assert s.resource["team"] == "raft"
        assert all(h.get("x-ikada-test") == "yes" for h in receiver.headers)
        assert all(s.status == 0 for s in spans), spans

        # Overwriting: open(O_TRUNC) truncates, then the write; one trace.
        seen = {s.trace_id for s in receiver.snapshot()}
        assert c.sh(f, "echo y > traced").ok

        def overwrite(spans):
            new = [s for s in spans if s.trace_id not in seen and
                   s.node == str(f) and s.name == "fs.open"]
            if not new:
                return None
            spans = receiver.trace(new[0].trace_id)
            names = {s.name for s in spans}
            return new[0] if {"fs.setattr", "fs.write", "raft.propose",
                              "raft.follower_append"} <= names and \
                parents_arrived(spans) else None
        root = receiver.wait(overwrite, what="the overwrite's trace")
        check_tree(receiver.trace(root.trace_id))
    finally:
        c.close()


def test_client_command_joins_the_nodes_trace(request, receiver):
    c = ck.Cluster(name=request.node.name, env=trace_env(receiver.endpoint))
    try:
        c.start()
        leader = c.wait_leader(timeout=10)
        env = dict(c.env)
        r = ck.run([ck.CLI, "--cluster", c.cli_cluster(), "set", "k", "v"],
                   env=env)
        assert r.ok, r
        roots = receiver.wait(
            lambda spans: [s for s in spans if s.name == "ikada.client"],
            what="the client's span")
        assert len(roots) == 1
        root = roots[0]
        assert root.node is None  # the client has no node id
        assert root.attrs["ikada.op"] == "propose"

        def full(_):
            spans = receiver.trace(root.trace_id)
            names = {s.name for s in spans}
            return spans if {"ikada.request", "raft.propose",
                             "raft.follower_append"} <= names and \
                parents_arrived(spans) else None
        spans = receiver.wait(full, what="the nodes' spans of the set")
        assert check_tree(spans) is root
        request_span = [s for s in spans if s.name == "ikada.request"][0]
        assert request_span.parent_id == root.span_id
        assert request_span.node == str(leader)
    finally:
        c.close()


def test_sampler_off_and_sdk_disabled_export_nothing(request, receiver):
    for extra in ({"OTEL_TRACES_SAMPLER": "always_off"},
                  {"OTEL_SDK_DISABLED": "true"}):
        c = ck.Cluster(name=request.node.name,
                       env=trace_env(receiver.endpoint, **extra))
        try:
            c.start()
            leader = c.wait_leader(timeout=10)
            for k in range(3):
                assert c.sh(c.followers(leader)[0], "echo %d > q%d" %
                            (k, k)).ok
        finally:
            c.close()  # stopping flushes what is queued
    assert receiver.snapshot() == []


def test_malformed_tracing_variables_exit_2(tmp_path):
    port = ck.free_ports(1)[0]
    base = [ck.SERVER, "--id", "1", "--cluster", "1=127.0.0.1:%d" % port,
            "--data", str(tmp_path / "d")]
    for bad in ({"OTEL_TRACES_SAMPLER": "sometimes"},
                {"OTEL_TRACES_SAMPLER": "traceidratio",
                 "OTEL_TRACES_SAMPLER_ARG": "1.5"},
                {"OTEL_EXPORTER_OTLP_HEADERS": "no-equals-sign"}):
        env = dict(trace_env("http://127.0.0.1:9"), **bad)
        r = ck.run(base, timeout=10, env=dict(os.environ, **env))
        assert r.rc == 2, (bad, r)
        assert len(r.err.strip().splitlines()) == 1, r
        assert b"OTEL_" in r.err, r
    assert not (tmp_path / "d" / "ikada.db").exists()


def write_latencies(c, node, n, prefix):
    out = []
    for k in range(n):
        r = c.sh(node, "echo %d > %s%d" % (k, prefix, k), timeout=10)
        assert r.ok, r
        out.append(r.elapsed)
    return out


@pytest.mark.parametrize("collector", ["refused", "hanging"])
def test_dead_collector_neither_slows_nor_breaks_writes(request, collector):
    hole = otlp.Blackhole()
    if collector == "refused":
        endpoint = "http://127.0.0.1:%d" % ck.free_ports(1)[0]
    else:
        endpoint = hole.endpoint
    env = trace_env(endpoint, OTEL_BSP_MAX_QUEUE_SIZE="16",
                    OTEL_BSP_MAX_EXPORT_BATCH_SIZE="8",
                    OTEL_EXPORTER_OTLP_TIMEOUT="3000")
    plain = ck.Cluster(name=request.node.name + "-plain")
    dead = ck.Cluster(name=request.node.name + "-dead", env=env)
    try:
        plain.start()
        dead.start()
        pl = plain.wait_leader(timeout=10)
        dl = dead.wait_leader(timeout=10)
        pf, df = plain.followers(pl)[0], dead.followers(dl)[0]
        base, slow = [], []
        for rnd in range(3):  # alternate, as the machine drifts
            base += write_latencies(plain, pf, 20, "w%d-" % rnd)
            slow += write_latencies(dead, df, 20, "w%d-" % rnd)
        b, s = statistics.median(base), statistics.median(slow)
        assert s <= 1.5 * b + 0.010, (collector, b, s)
        assert max(slow) < 2.0, (collector, max(slow))
        # The spans were counted as dropped, on the leader at least.
        dropped = 0
        for _ in range(100):
            m = metrics_of(dead, dl)
            dropped = value(m, "ikada_spans_dropped_total")
            if dropped > 0:
                break
            time.sleep(0.1)
        assert dropped > 0
        assert value(m, "ikada_spans_exported_total") == 0
        assert dead.read(df, "w2-19") == b"19\n"
    finally:
        plain.close()
        dead.close()
        hole.close()
