"""A linearizability checker for histories of registers.

The model is one register per key holding a value or None (absent), with
three operations:

  read()          -> the value seen
  write(v)        the register becomes v
  cas(old, new)   when the register holds old (None: absent) it becomes
                  new and the result is True; otherwise it is unchanged and
                  the result is False

Every operation of a history has a start and an end time and an outcome:

  "ok"       it took effect exactly once, between start and end, with the
             result recorded
  "fail"     it certainly did not take effect (it imposes nothing)
  "unknown"  it may have taken effect once, at any moment after its start,
             or never (a timeout): its end is at infinity and its result is
             unknown

Linearizability is local (Herlihy and Wing, 1990): a history of several
registers is linearizable exactly when the history of each one is, so each
key is checked on its own.  A key's history is searched as Wing and Gong
(1993) describe, with the memoisation of Lowe (2017): take, in time order,
a call whose operation can be linearized next, and backtrack when a
return is reached whose operation was not; a pair (set of linearized
operations, register value) already explored is never explored again.
An unknown operation has no return, so the search succeeds once every
operation with a return is linearized: the unknown ones left over are
those that never took effect.
"""

import math


class Op:
    """One operation of a history."""

    __slots__ = ("key", "kind", "value", "expect", "result", "start",
                 "end", "outcome", "client", "via", "note")

    def __init__(self, key, kind, start, end, outcome, value=None,
                 expect=None, result=None, client=None, via=None,
                 note=None):
        assert kind in ("read", "write", "cas"), kind
        assert outcome in ("ok", "fail", "unknown"), outcome
        self.key = key
        self.kind = kind
        self.value = value  # read: the value seen; write, cas: the new one
        self.expect = expect  # cas: the value expected
        self.result = result  # cas: True when it swapped
        self.start = start
        self.end = end
        self.outcome = outcome
        self.client = client
        self.via = via
        self.note = note

    def to_json(self):
        return {s: getattr(self, s) for s in self.__slots__}

    @classmethod
    def from_json(cls, d):
        return cls(**d)

    def __repr__(self):
        if self.kind == "read":
            what = "read()=%r" % (self.value, )
        elif self.kind == "write":
            what = "write(%r)" % (self.value, )
        else:
            what = "cas(%r, %r)=%r" % (self.expect, self.value, self.result)
        return "<%s %s %s [%.3f, %.3f] %s>" % (self.client, self.key, what,
                                               self.start, self.end,
                                               self.outcome)


def step(state, op):
    """Apply op to a register holding state: (allowed, new state)."""
    if op.kind == "read":
        return state == op.value, state
    if op.kind == "write":
        return True, op.value
    if op.outcome == "unknown":
        # Its result is unknown: whatever the register held decides it.
        return True, op.value if state == op.expect else state
    if op.result:
        return state == op.expect, op.value
    return state != op.expect, state


def _returns(op):
    """Whether op has a return: an unknown outcome ends at infinity."""
    return op.outcome == "ok" and not math.isinf(op.end)


class _Entry:
    __slots__ = ("op", "index", "is_call", "match", "prev", "next")

    def __init__(self, op, index, is_call):
        self.op = op
        self.index = index
        self.is_call = is_call
        self.match = None  # the call's return entry, None when unknown
        self.prev = None
        self.next = None


def _build(ops):
    """The doubly linked list of calls and returns in time order, behind a
    head sentinel.  At equal times calls come first: two operations that
    merely touch count as concurrent, the permissive reading."""
    events = []
    for i, op in enumerate(ops):
        events.append((op.start, 0, i, True))
        if _returns(op):
            events.append((op.end, 1, i, False))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(None, -1, False)
    calls = {}
    last = head
    for _, _, i, is_call in events:
        e = _Entry(ops[i], i, is_call)
        if is_call:
            calls[i] = e
        else:
            calls[i].match = e
        e.prev = last
        last.next = e
        last = e
    return head


def _lift(e):
    e.prev.next = e.next
    if e.next is not None:
        e.next.prev = e.prev
    m = e.match
    if m is not None:
        m.prev.next = m.next
        if m.next is not None:
            m.next.prev = m.prev


def _unlift(e):
    m = e.match
    if m is not None:
        m.prev.next = m
        if m.next is not None:
            m.next.prev = m
    e.prev.next = e
    if e.next is not None:
        e.next.prev = e


class Result:
    def __init__(self, ok, key=None, ops=(), explored=0, reason=""):
        self.ok = ok
        self.key = key
        self.ops = list(ops)
        self.explored = explored
        self.reason = reason

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return "<Result ok=%s key=%r explored=%d %s>" % (
            self.ok, self.key, self.explored, self.reason)


def check_register(ops, initial=None, max_explored=5_000_000):
    """Whether the history ops of one register is linearizable."""
    ops = [op for op in ops if op.outcome != "fail"]
    # A read whose outcome is unknown saw nothing: it constrains nothing.
    ops = [op for op in ops if not (op.kind == "read" and op.outcome != "ok")]
    head = _build(ops)
    returns_left = sum(1 for op in ops if _returns(op))
    state = initial
    linearized = 0
    cache = set()
    stack = []
    explored = 0
    deepest = -1  # the most operations linearized before a dead end
    stuck = None  # the operation that could not be placed there
    entry = head.next
    while returns_left > 0:
        assert entry is not None, "a return is always ahead"
        explored += 1
        if explored > max_explored:
            return Result(False, ops=ops, explored=explored,
                          reason="search limit reached")
        if entry.is_call:
            allowed, new_state = step(state, entry.op)
            bit = 1 << entry.index
            if allowed and (linearized | bit, new_state) not in cache:
                cache.add((linearized | bit, new_state))
                stack.append((entry, state))
                state = new_state
                linearized |= bit
                if entry.match is not None:
                    returns_left -= 1
                _lift(entry)
                entry = head.next
            else:
                entry = entry.next
            continue
        # A return whose operation no order so far could place.
        if len(stack) > deepest:
            deepest, stuck = len(stack), entry.op
        if not stack:
            return Result(
                False, ops=ops, explored=explored,
                reason="at best %d of %d operations linearized, then no "
                "order places %r" % (deepest, len(ops), stuck))
        entry, state = stack.pop()
        linearized &= ~(1 << entry.index)
        if entry.match is not None:
            returns_left += 1
        _unlift(entry)
        entry = entry.next
    return Result(True, ops=ops, explored=explored)


def check(ops, initial=None):
    """Check a history of many keys, each its own register; the first
    failing key's Result, or a passing Result."""
    by_key = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    explored = 0
    for key in sorted(by_key, key=str):
        r = check_register(by_key[key], initial=initial)
        explored += r.explored
        if not r.ok:
            r.key = key
            return r
    return Result(True, explored=explored)
