"""A small OTLP/HTTP receiver for the tests: it decodes the JSON encoding
of ExportTraceServiceRequest and keeps every span with its resource."""

import http.server
import json
import os
import socket
import threading
import time


class Span:
    def __init__(self, resource, raw):
        self.resource = resource
        self.trace_id = raw["traceId"]
        self.span_id = raw["spanId"]
        self.parent_id = raw.get("parentSpanId") or None
        self.name = raw["name"]
        self.kind = raw.get("kind")
        self.start = int(raw["startTimeUnixNano"])
        self.end = int(raw["endTimeUnixNano"])
        self.attrs = {a["key"]: _value(a["value"])
                      for a in raw.get("attributes", [])}
        self.status = raw.get("status", {}).get("code", 0)

    @property
    def node(self):
        return self.resource.get("service.instance.id")

    def __repr__(self):
        return "<%s node=%s span=%s parent=%s>" % (
            self.name, self.node, self.span_id, self.parent_id)


def _value(v):
    if "intValue" in v:
        return int(v["intValue"])
    if "stringValue" in v:
        return v["stringValue"]
    return v


class Receiver:
    """Listens on 127.0.0.1:<free port> until close().  With decode=False
    it only counts the requests, for measurements that should not pay for
    decoding; with nice, its threads run at that nice value, as a collector
    on another machine would not take the nodes' cores."""

    def __init__(self, decode=True, nice=None):
        self.decode = decode
        self.nice = nice
        self.spans = []
        self.headers = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                receiver._lower_priority()
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = (self.path == "/v1/traces" and self.headers.get(
                    "Content-Type", "").startswith("application/json"))
                if ok and receiver.decode:
                    receiver._take(dict(self.headers), json.loads(body))
                elif ok:
                    with receiver.lock:
                        receiver.requests += 1
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.port = self.server.server_address[1]
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def _lower_priority(self):
        if self.nice is not None:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           self.nice)

    def _take(self, headers, doc):
        spans = []
        for rs in doc["resourceSpans"]:
            resource = {a["key"]: _value(a["value"])
                        for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                spans += [Span(resource, s) for s in ss["spans"]]
        with self.lock:
            self.requests += 1
            self.headers.append(headers)
            self.spans += spans

    def snapshot(self):
        with self.lock:
            return list(self.spans)

    def trace(self, trace_id):
        return [s for s in self.snapshot() if s.trace_id == trace_id]

    def wait(self, pred, timeout=10.0, what="spans"):
        """Until pred(spans) is true; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred(self.snapshot())
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError("no %s within %.1f s; got %r" % (
                    what, timeout, self.snapshot()[-40:]))
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Blackhole:
    """A port that takes connections into its backlog and never answers:
    a collector that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = "http://127.0.0.1:%d" % self.sock.getsockname()[1]

    def close(self):
        self.sock.close()
