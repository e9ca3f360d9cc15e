"""Tests of the linearizability checker on small histories whose answer is
known, and on larger generated ones."""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402
from checker import Op  # noqa: E402


def R(start, end, value, outcome="ok", key="k"):
    return Op(key, "read", start, end, outcome, value=value)


def W(start, end, value, outcome="ok", key="k"):
    return Op(key, "write", start, end, outcome, value=value)


def C(start, end, expect, value, result, outcome="ok", key="k"):
    return Op(key, "cas", start, end, outcome, value=value, expect=expect,
              result=result)


def lin(*ops):
    return bool(checker.check(list(ops)))


def test_empty_and_sequential():
    assert lin()
    assert lin(R(0, 1, None))
    assert lin(W(0, 1, "a"), R(2, 3, "a"), W(4, 5, "b"), R(6, 7, "b"))
    assert not lin(R(0, 1, "a"))
    assert not lin(W(0, 1, "a"), R(2, 3, None))
    assert not lin(W(0, 1, "a"), W(2, 3, "b"), R(4, 5, "a"))


def test_concurrent_read_sees_old_or_new():
    assert lin(W(0, 1, "a"), W(2, 5, "b"), R(3, 4, "a"))
    assert lin(W(0, 1, "a"), W(2, 5, "b"), R(3, 4, "b"))
    assert not lin(W(0, 1, "a"), W(2, 5, "b"), R(3, 4, "c"))


def test_no_new_then_old():
    # Once a read saw the new value, a later read cannot see the old one,
    # even while the write is still in flight.
    assert not lin(W(0, 1, "a"), W(2, 10, "b"), R(3, 4, "b"), R(5, 6, "a"))
    assert lin(W(0, 1, "a"), W(2, 10, "b"), R(3, 4, "a"), R(5, 6, "b"))


def test_touching_operations_are_concurrent():
    assert lin(W(0, 1, "a"), R(1, 2, None))


def test_failed_operations_impose_nothing():
    assert lin(W(0, 1, "a", outcome="fail"), R(2, 3, None))
    assert not lin(W(0, 1, "a", outcome="fail"), R(2, 3, "a"))
    assert lin(W(0, 1, "a"), R(2, 3, "zzz", outcome="fail"))


def test_unknown_write_may_apply_late_or_never():
    inf = float("inf")
    assert lin(W(0, 1, "a", outcome="unknown"), R(5, 6, "a"))
    assert lin(W(0, 1, "a", outcome="unknown"), R(5, 6, None))
    assert lin(W(0, inf, "a", outcome="unknown"), R(5, 6, None),
               R(7, 8, "a"))
    # It takes effect once: the value cannot come back after an overwrite.
    assert not lin(W(0, 1, "a", outcome="unknown"), R(2, 3, "a"),
                   W(4, 5, "b"), R(6, 7, "a"))
    assert lin(W(0, 1, "a", outcome="unknown"), W(4, 5, "b"), R(6, 7, "a"))
    # ...and not before it started.
    assert not lin(R(0, 1, "a"), W(2, 3, "a", outcome="unknown"))


def test_cas():
    assert lin(C(0, 1, None, "a", True), R(2, 3, "a"))
    assert not lin(C(0, 1, None, "a", False), R(2, 3, None))
    assert lin(W(0, 1, "x"), C(2, 3, None, "a", False), R(4, 5, "x"))
    # Two concurrent swaps from the same value cannot both succeed.
    assert not lin(W(0, 1, "x"), C(2, 5, "x", "a", True),
                   C(2, 5, "x", "b", True))
    assert lin(W(0, 1, "x"), C(2, 5, "x", "a", True),
               C(2, 5, "x", "b", False), R(6, 7, "a"))
    assert lin(W(0, 1, "x"), C(2, 5, "x", "a", True),
               C(2, 5, "a", "b", True), R(6, 7, "b"))
    assert not lin(W(0, 1, "x"), C(2, 5, "x", "a", True),
                   C(2, 5, "x", "b", False), R(6, 7, "b"))
    # An unknown swap applies only when the value matched.
    assert lin(W(0, 1, "x"), C(2, 3, "x", "a", None, outcome="unknown"),
               R(4, 5, "a"))
    assert not lin(W(0, 1, "y"), C(2, 3, "x", "a", None, outcome="unknown"),
                   R(4, 5, "a"))


def test_keys_are_independent():
    ops = [W(0, 1, "a", key="k1"), R(2, 3, "a", key="k1"),
           W(0, 1, "a", key="k2"), R(2, 3, "b", key="k2")]
    r = checker.check(ops)
    assert not r and r.key == "k2"
    assert checker.check(ops[:2])


def generate(seed, n_clients=5, n_ops=300, unknown=0.1):
    """A history of a real register: each operation takes effect at a
    random moment between its start and end, so it is linearizable."""
    rng = random.Random(seed)
    t = [0.0] * n_clients
    pending = []
    for i in range(n_ops):
        c = rng.randrange(n_clients)
        start = t[c] + rng.random()
        point = start + rng.random() * 2
        end = point + rng.random() * 2
        t[c] = end
        kind = rng.choice(["read", "write", "cas"])
        value = "v%d" % i
        pending.append((point, start, end, kind, value,
                        rng.choice([None, "v%d" % rng.randrange(i + 1)])))
    pending.sort()
    state = None
    ops = []
    for point, start, end, kind, value, expect in pending:
        outcome = "unknown" if rng.random() < unknown else "ok"
        if kind == "read":
            ops.append(R(start, end, state, outcome=outcome))
        elif kind == "write":
            state = value
            ops.append(W(start, end, value, outcome=outcome))
        else:
            swapped = state == expect
            if swapped:
                state = value
            ops.append(C(start, end, expect, value, swapped,
                         outcome=outcome))
    return ops


def test_generated_histories_pass():
    for seed in range(20):
        r = checker.check(generate(seed))
        assert r, (seed, r)


def test_generated_histories_with_a_wrong_read_fail():
    failed = 0
    for seed in range(20):
        ops = generate(seed, unknown=0.0)
        reads = [op for op in ops if op.kind == "read" and op.value]
        victim = random.Random(seed).choice(reads)
        victim.value = "never-written"
        failed += not checker.check(ops)
    assert failed == 20


def test_lost_acknowledged_write_is_caught():
    # A write acknowledged before a read starts must be seen (or a later
    # value): reading the value before it means the write was lost.
    ops = generate(3, unknown=0.0)
    last_end = max(op.end for op in ops)
    ops.append(W(last_end + 1, last_end + 2, "final"))
    ops.append(R(last_end + 3, last_end + 4, "final"))
    assert checker.check(ops)
    ops[-1].value = None
    assert not checker.check(ops)
