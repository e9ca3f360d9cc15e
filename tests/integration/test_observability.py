"""Metrics (.ikada/metrics and --metrics-addr) with real nodes."""

import re
import socket
import urllib.error
import urllib.request

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
