"""Fixtures for the end-to-end tests.

- `cluster`: a fresh three-node cluster, started, mounted and with a leader.
- `new_cluster`: a fresh three-node cluster that is not started yet.
- `shared`: one three-node cluster for the whole session, for tests that
  only add keys under their own names; nodes that died are restarted.

When a test fails, the tails of the logs of every cluster it used are added
to the failure report and the cluster's folder is kept.
"""

import os

import pytest

import cluster as ck


def _need_binaries():
    for path in (ck.SERVER, ck.CLI):
        if not os.access(path, os.X_OK):
            pytest.fail("%s is missing: build first (ninja -C %s) or set "
                        "IKADA_BUILD" % (path, ck.BUILD))


def _remember(item, c):
    clusters = getattr(item, "_ikada_clusters", None)
    if clusters is None:
        clusters = []
        item._ikada_clusters = clusters
    if c not in clusters:
        clusters.append(c)


def _failed(item):
    return any(
        getattr(item, "rep_" + when, None) is not None
        and getattr(item, "rep_" + when).failed
        for when in ("setup", "call", "teardown"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        for c in getattr(item, "_ikada_clusters", []):
            rep.sections.append(("ikada logs (%s)" % rep.when,
                                 c.logs_report()))


@pytest.fixture
def new_cluster(request):
    _need_binaries()
    c = ck.Cluster(name=request.node.name)
    _remember(request.node, c)
    yield c
    c.close(keep=_failed(request.node))


@pytest.fixture
def cluster(new_cluster):
    new_cluster.start()
    new_cluster.wait_leader(timeout=10)
    return new_cluster


@pytest.fixture(scope="session")
def _shared_cluster(request):
    _need_binaries()
    c = ck.Cluster(name="shared")
    c.failures = 0
    try:
        c.start()
        c.wait_leader(timeout=10)
    except BaseException:
        c.close(keep=True)
        raise
    yield c
    c.close(keep=c.failures > 0)


@pytest.fixture
def shared(request, _shared_cluster):
    c = _shared_cluster
    _remember(request.node, c)
    for i in c.ids():
        if not c.nodes[i].running():
            c.restart(i)
    c.wait_leader(timeout=10)
    yield c
    if _failed(request.node):
        c.failures += 1
    dead = [i for i in c.ids() if not c.nodes[i].running()]
    if dead:
        c.failures += 1
        pytest.fail("node(s) %r of the shared cluster exited during the "
                    "test" % dead)


def pytest_report_header(config):
    return "ikada build: %s" % ck.BUILD
