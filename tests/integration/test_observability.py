"""Metrics (.ikada/metrics and --metrics-addr) and OTLP traces, with real
nodes and a local OTLP/HTTP receiver that decodes what it is sent."""

import http.server
import json
import re
import socket
import threading
import urllib.error
import urllib.request

import pytest

import cluster as ck

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
    return parse_metrics(c.cat(i, ".ikada/metrics"))


def value(metrics, name, labels=""):
    assert (name, labels) in metrics, (name, labels, sorted(metrics)[:20])
    return metrics[(name, labels)]


def test_ikada_metrics_file_parses_and_moves_with_writes(cluster):
    c = cluster
    leader = c.wait_leader()
    before = metrics_of(c, leader)
    assert value(before, "ikada_role", '{role="leader"}') == 1
    assert value(before, "ikada_term") == int(c.cat(leader, ".ikada/term"))

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


class Receiver(http.server.BaseHTTPRequestHandler):
    """Keeps every OTLP/JSON export body it is sent."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.posts.append((self.path, self.headers, body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def otlp():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    srv.lock = threading.Lock()
    srv.posts = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def spans_by_trace(srv):
    """{trace_id: [(node_id, span)]} from everything received."""
    out = {}
    with srv.lock:
        posts = list(srv.posts)
    for path, _, body in posts:
        assert path == "/v1/traces", path
        doc = json.loads(body)
        for rs in doc["resourceSpans"]:
            attrs = {a["key"]: a["value"].get("stringValue")
                     for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    out.setdefault(s["traceId"], []).append(
                        (attrs.get("service.instance.id"), s))
    return out


def test_echo_through_a_follower_mount_is_one_trace_across_nodes(
        request, otlp):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT":
            "http://127.0.0.1:%d" % otlp.server_address[1],
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "ikada-test",
    }
    c = ck.Cluster(name=request.node.name, env=env)
    try:
        c.start()
        leader = c.wait_leader(timeout=10)
        follower = c.followers(leader)[0]
        assert c.sh(follower, "echo traced > traced-file").ok

        def one_trace_on_two_nodes():
            for spans in spans_by_trace(otlp).values():
                names = {s["name"] for _, s in spans}
                nodes = {n for n, _ in spans}
                if any(n.startswith("fs.") for n in names) and \
                        len(nodes) >= 2 and str(leader) in nodes:
                    return spans
            return None

        ck.wait_until(lambda: one_trace_on_two_nodes() is not None,
                      timeout=10, what="a trace with spans of two nodes")
        spans = one_trace_on_two_nodes()
        ids = {s["spanId"] for _, s in spans}
        roots = [s for _, s in spans if "parentSpanId" not in s]
        assert len(roots) == 1, roots
        for _, s in spans:
            assert "parentSpanId" not in s or s["parentSpanId"] in ids, s
            assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"])
        names = {s["name"] for _, s in spans}
        assert "raft.commit" in names and "kv.apply" in names, names
        with otlp.lock:
            _, headers, _ = otlp.posts[0]
        assert headers["Content-Type"] == "application/json"
    finally:
        c.close()
