/* A deterministic simulated cluster for the pure Raft core.
 *
 * Three, five or seven cores run in one process on a simulated clock.  The
 * network delays, drops, duplicates and reorders messages and can be cut
 * along any set of one-way links; disks finish writes after a delay and a
 * crash loses every write that raft_persisted() was not yet told about.
 * After every event the safety properties of Raft are checked; after the
 * faults heal, a leader must appear and commit within a bounded time.
 *
 * Each node's state machine is the sequence of entries it applied, kept as
 * its applied index, the term of that entry and a digest of the entries;
 * it is durable as soon as an entry is applied.  Nodes compact their logs
 * (Raft 7) whenever the applied part grows past a threshold and at random
 * points.  When a leader asks for a snapshot, the simulator streams the
 * leader's state machine to the follower with a delay, or loses it and
 * tells the leader; the follower replaces its state and durable log only
 * when the write of the update that took the snapshot completes.
 *
 * The core leaves its wait for a snapshot when the follower answers an
 * AppendEntries with success, or with a rejection whose hint shows that
 * its log reaches the snapshot's index.  A follower that crashes before
 * the snapshot is durable comes back with its old log and looks like one
 * whose snapshot is still on its way; so, as raft.h asks of a caller, the
 * leader's side here gives up on a delivered snapshot that was not
 * confirmed within SIM_SNAPSHOT_CONFIRM_TICKS and calls
 * raft_snapshot_failed(); --no-snapshot-timeout turns that off and shows
 * the stall.
 *
 *   sim                         the default run (named scenarios and
 *                               IKADA_SIM_SCHEDULES or 10000 schedules)
 *   sim --schedules N           N random schedules
 *   sim --seed S                only schedule S (to replay a failure)
 *   sim --verbose               print each schedule's summary
 *   sim --no-snapshot-timeout   never give up on a delivered snapshot
 *
 * A failure prints the seed and the last events, then exits 1. */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft.h"

#define SIM_MAX_NODES 7
#define SIM_UNITS_PER_TICK 10
#define SIM_ELECTION_TICKS 10
#define SIM_HEARTBEAT_TICKS 2
#define SIM_MAX_TERMS 100000
#define SIM_MAX_PROPOSALS 4096
#define SIM_MAX_READS 4096
#ifndef SIM_TRACE_LINES
#define SIM_TRACE_LINES 80
#endif
#define SIM_TRACE_BYTES 200
/* After healing, a leader that every node follows must commit a new entry
 * everywhere within this many ticks. */
#ifndef SIM_LIVENESS_TICKS
#define SIM_LIVENESS_TICKS 400
#endif

/* How long a leader's side waits for a delivered snapshot to show up as
 * the follower's success before it reports the snapshot failed. */
#define SIM_SNAPSHOT_CONFIRM_TICKS (2 * SIM_ELECTION_TICKS)

_Static_assert(SIM_MAX_NODES <= IKD_MAX_NODES, "the core must fit the sim");

/* ---- Records ------------------------------------------------------------ */

enum fault_kind {
    F_DROP,
    F_DUP,
    F_DELAY,
    F_SPLIT,
    F_ONE_WAY,
    F_RING,
    F_BRIDGE,
    F_ISOLATE,
    F_HEAL,
    F_CRASH,
    F_RESTART,
    F_TRANSFER,
    F_COMPACT,
    F_MEMBERSHIP,
    F_KINDS
};

static const char *const fault_names[F_KINDS] = {
    "dropped messages",
    "duplicated messages",
    "delayed messages",
    "symmetric splits",
    "one-way cuts",
    "majority rings",
    "bridge partitions",
    "isolations",
    "heals",
    "crashes",
    "restarts",
    "transfers",
    "random compactions",
    "membership changes asked",
};

static struct
{
    uint64_t schedules;
    uint64_t faults[F_KINDS];
    uint64_t steps;
    uint64_t acked;
    uint64_t lost;
    uint64_t busy;
    uint64_t elections;
    uint64_t transfers_done;
    uint64_t reads;
    uint64_t append_msgs;
    uint64_t append_entries;
    unsigned max_recovery_ticks;
    uint64_t max_recovery_seed;
    uint64_t group_commits;
    /* Raft 7: snapshots the leaders asked for and streamed, lost on the
     * way (the leader is told), abandoned because the leader crashed,
     * stepped into a follower without effect (stale or not ahead of its
     * commit), made durable, and lost to a crash before they were. */
    uint64_t snap_sent;
    uint64_t snap_failed;
    uint64_t snap_aborted;
    uint64_t snap_unneeded;
    uint64_t snap_installed;
    uint64_t snap_crashed;
    uint64_t snap_timeouts;
    uint64_t compactions;
    uint64_t compacted_entries;
    uint64_t compact_refused;
    /* Raft 4: changes a leader took, refused while one was in progress,
     * and configuration entries applied. */
    uint64_t conf_started;
    uint64_t conf_refused;
    uint64_t conf_applied;
} totals;

/* One message in flight. */
struct flight
{
    uint64_t due;
    uint64_t order; /* ties between equal due times */
    struct raft_msg m;
};

/* A state machine, or a snapshot of one: the last applied index, the term
 * of that entry, and a digest of every applied entry up to it. */
struct sm_state
{
    raft_index_t index;
    raft_term_t term;
    uint64_t digest;
    /* The configuration as of index (Raft 4), from the entry at
     * conf_index (0: the one the cluster started with); it travels with
     * snapshots and is what a restarted node starts from. */
    struct raft_membership conf;
    raft_index_t conf_index;
};

/* A snapshot on its way from a leader to a follower or, once delivered,
 * the leader's wait for the follower to confirm it (watch). */
struct stream
{
    uint64_t due;
    raft_id_t from;
    raft_id_t to;
    unsigned incarnation; /* the leader's, to notice it crashed */
    raft_term_t term;     /* the leader's term when it asked */
    uint64_t seq;         /* the leader's count of streams to `to` */
    bool lost;
    bool watch;
    struct sm_state snap;
};

/* A write the disk has not finished: hard state, an installed snapshot,
 * log suffix, and the messages that must wait for it (raft.h, durability
 * rule).  The write is atomic: a crash before it completes loses all. */
struct write_job
{
    uint64_t due;
    bool hard;
    raft_term_t term;
    raft_id_t vote;
    bool has_snap;
    struct sm_state snap;
    raft_index_t from; /* 0: the log is untouched */
    struct raft_entry *entries;
    size_t n_entries;
    struct raft_msg *msgs;
    size_t n_msgs;
};

struct sim_node
{
    struct raft *r; /* NULL while crashed */
    unsigned incarnation;
    uint64_t next_tick;
    /* Its vote and pre-vote requests are lost: scenarios pick who can
     * win an election. */
    bool mute;
    /* The log changed since the last Log Matching check. */
    bool log_changed;

    /* The disk: what survives a crash.  The log holds d_first and up;
     * d_prev_term is the term of entry d_first - 1.  The state machine is
     * written as each entry applies. */
    raft_term_t d_term;
    raft_id_t d_vote;
    struct raft_entry *d_log; /* index d_first + i */
    size_t d_n;
    raft_index_t d_first;
    raft_term_t d_prev_term;
    struct sm_state d_sm;

    struct write_job *jobs;
    size_t n_jobs;
    /* Jobs holding a snapshot the core took but the disk has not: the
     * core's log no longer has the entries the disk would apply next. */
    unsigned installs_pending;
    unsigned installs; /* completed, over every incarnation */
    /* The snapshot being stepped into the core, for the update that
     * reports taking it. */
    const struct sm_state *handed;
    /* As a leader: streams started to each node. */
    uint64_t stream_seq[SIM_MAX_NODES + 1];

    /* What this incarnation reported, to check it never goes down. */
    raft_index_t seen_commit;
};

struct proposal
{
    raft_id_t node;
    raft_index_t index;
    raft_term_t term;
    char data[32];
    bool acked;
};

struct sim
{
    size_t n;
    uint64_t seed;
    uint64_t rng;
    uint64_t now;
    uint64_t order;
    struct raft_config base; /* limits and flags shared by every node */
    struct sim_node nodes[SIM_MAX_NODES];

    struct flight *net;
    size_t n_net;
    size_t cap_net;
    bool cut[SIM_MAX_NODES + 1][SIM_MAX_NODES + 1];
    unsigned drop_pct;
    unsigned dup_pct;
    unsigned max_delay;

    struct stream *streams;
    size_t n_streams;
    unsigned snap_loss_pct;
    /* Crash now and then a follower that took a snapshot before the
     * snapshot is durable. */
    bool crash_installs;
    /* A node compacts once this many applied entries are in its log. */
    unsigned compact_every;

    raft_id_t *leader_of_term;
    struct raft_entry *committed; /* every index any node committed */
    /* committed_term[i - 1]: the term of the node that first saw index i
     * committed, which is the term of the leader that committed it. */
    raft_term_t *committed_term;
    size_t n_committed;
    struct raft_entry *applied; /* every index any node applied */
    uint64_t *digests;          /* digests[i - 1]: entries 1..i applied */
    size_t n_applied;
    struct proposal *props;
    size_t n_props;
    raft_index_t read_floor[SIM_MAX_READS];
    uint64_t n_reads;

    char trace[SIM_TRACE_LINES][SIM_TRACE_BYTES];
    size_t n_trace;
};

/* The last index of the durable log (d_first - 1 when it is empty). */
static raft_index_t d_last(const struct sim_node *sn)
{
    return sn->d_first + sn->d_n - 1;
}

/* ---- Failure and trace -------------------------------------------------- */

static struct sim *current;
static const char *scenario; /* the named scenario running, if any */
static bool snapshot_timeout = true;

__attribute__((format(printf, 2, 3))) static void trace(struct sim *s,
                                                        const char *fmt,
                                                        ...)
{
    char *line = s->trace[s->n_trace % SIM_TRACE_LINES];
    int len;
    va_list ap;

    len = snprintf(line, SIM_TRACE_BYTES, "t=%" PRIu64 " ", s->now);
    va_start(ap, fmt);
    vsnprintf(line + len, SIM_TRACE_BYTES - (size_t)len, fmt, ap);
    va_end(ap);
    s->n_trace++;
}

static void fail(const char *file, int line, const char *what)
{
    struct sim *s = current;
    size_t i;
    size_t first;

    fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
    if (s == NULL) {
        exit(1);
    }
    if (scenario != NULL) {
        fprintf(stderr, "scenario=%s seed=%" PRIu64 " time=%" PRIu64, scenario,
                s->seed, s->now);
    } else {
        fprintf(stderr,
                "seed=%" PRIu64 " nodes=%zu time=%" PRIu64
                " (replay: sim --seed %" PRIu64 ")",
                s->seed, s->n, s->now, s->seed);
    }
    fprintf(stderr, "\nlast events:\n");
    first = s->n_trace > SIM_TRACE_LINES ? s->n_trace - SIM_TRACE_LINES : 0;
    for (i = first; i < s->n_trace; i++) {
        fprintf(stderr, "  %s\n", s->trace[i % SIM_TRACE_LINES]);
    }
    for (i = 0; i < s->n; i++) {
        struct raft *r = s->nodes[i].r;

        if (r == NULL) {
            fprintf(stderr, "  node %zu: down\n", i + 1);
            continue;
        }
        fprintf(stderr,
                "  node %zu: %s term=%" PRIu64 " leader=%" PRIu32
                " commit=%" PRIu64 " applied=%" PRIu64 " first=%" PRIu64
                " last=%" PRIu64 " transfer=%" PRIu32 "\n",
                i + 1, raft_role_name(raft_role(r)), raft_term(r),
                raft_leader(r), raft_commit(r), raft_applied_index(r),
                raft_first_index(r), raft_last_index(r),
                raft_transfer_target(r));
        fprintf(stderr,
                "    durable: first=%" PRIu64 " last=%" PRIu64
                " applied=%" PRIu64 " persisted=%" PRIu64
                " writes pending=%zu installs pending=%u\n",
                s->nodes[i].d_first, d_last(&s->nodes[i]),
                s->nodes[i].d_sm.index, raft_persisted_index(r),
                s->nodes[i].n_jobs, s->nodes[i].installs_pending);
    }
    exit(1);
}

#define CHECK(cond)                          \
    do {                                     \
        if (!(cond)) {                       \
            fail(__FILE__, __LINE__, #cond); \
        }                                    \
    } while (0)

static void *xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size == 0 ? 1 : size);

    if (q == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return q;
}

/* ---- Randomness --------------------------------------------------------- */

static uint64_t sim_rand(struct sim *s)
{
    uint64_t z = (s->rng += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static unsigned sim_below(struct sim *s, unsigned n)
{
    return (unsigned)(sim_rand(s) % n);
}

static bool sim_chance(struct sim *s, unsigned pct)
{
    return sim_below(s, 100) < pct;
}

/* ---- Entries and messages ----------------------------------------------- */

static void entry_copy(struct raft_entry *dst, const struct raft_entry *src)
{
    *dst = *src;
    dst->data = NULL;
    if (src->len > 0) {
        dst->data = xrealloc(NULL, src->len);
        memcpy(dst->data, src->data, src->len);
    }
}

static bool entry_equal(const struct raft_entry *a, const struct raft_entry *b)
{
    return a->term == b->term && a->type == b->type && a->len == b->len &&
           (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* The digest of a state machine after it applied e at index, given its
 * digest before (FNV-1a over the entry, folded with splitmix). */
static uint64_t digest_add(uint64_t d,
                           raft_index_t index,
                           const struct raft_entry *e)
{
    uint32_t i;

    d ^= index * UINT64_C(0x9e3779b97f4a7c15) ^ e->term ^
         ((uint64_t)e->type << 56);
    d = (d ^ (d >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    for (i = 0; i < e->len; i++) {
        d = (d ^ e->data[i]) * UINT64_C(0x100000001b3);
    }
    return d ^ (d >> 31);
}

static void entries_free(struct raft_entry *e, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(e[i].data);
    }
    free(e);
}

static void msg_copy(struct raft_msg *dst, const struct raft_msg *src)
{
    size_t i;

    *dst = *src;
    if (src->type != RAFT_MSG_APPEND) {
        return;
    }
    dst->append.entries = NULL;
    if (src->append.n_entries > 0) {
        dst->append.entries =
            xrealloc(NULL, src->append.n_entries * sizeof(struct raft_entry));
        for (i = 0; i < src->append.n_entries; i++) {
            entry_copy(&dst->append.entries[i], &src->append.entries[i]);
        }
    }
}

static void msg_free(struct raft_msg *m)
{
    if (m->type == RAFT_MSG_APPEND) {
        entries_free(m->append.entries, m->append.n_entries);
    }
}

static const char *msg_name(enum raft_msg_type t)
{
    switch (t) {
        case RAFT_MSG_VOTE:
            return "vote";
        case RAFT_MSG_VOTE_RESP:
            return "vote-resp";
        case RAFT_MSG_APPEND:
            return "append";
        case RAFT_MSG_APPEND_RESP:
            return "append-resp";
        case RAFT_MSG_PREVOTE:
            return "prevote";
        case RAFT_MSG_PREVOTE_RESP:
            return "prevote-resp";
        case RAFT_MSG_TIMEOUT_NOW:
            return "timeout-now";
        case RAFT_MSG_SNAPSHOT:
            return "snapshot";
    }
    return "?";
}

static void trace_msg(struct sim *s, const char *what, const struct raft_msg *m)
{
    switch (m->type) {
        case RAFT_MSG_APPEND:
            trace(s,
                  "%s %s %" PRIu32 "->%" PRIu32 " term=%" PRIu64
                  " prev=%" PRIu64 "/%" PRIu64 " n=%zu commit=%" PRIu64,
                  what, msg_name(m->type), m->from, m->to, m->term,
                  m->append.prev_index, m->append.prev_term,
                  m->append.n_entries, m->append.commit);
            break;
        case RAFT_MSG_APPEND_RESP:
            trace(s,
                  "%s %s %" PRIu32 "->%" PRIu32 " term=%" PRIu64
                  " ok=%d index=%" PRIu64 " hint=%" PRIu64 "/%" PRIu64,
                  what, msg_name(m->type), m->from, m->to, m->term,
                  m->append_resp.success, m->append_resp.index,
                  m->append_resp.hint_index, m->append_resp.hint_term);
            break;
        case RAFT_MSG_VOTE_RESP:
        case RAFT_MSG_PREVOTE_RESP:
            trace(s, "%s %s %" PRIu32 "->%" PRIu32 " term=%" PRIu64 " ok=%d",
                  what, msg_name(m->type), m->from, m->to, m->term,
                  m->vote_resp.granted);
            break;
        case RAFT_MSG_SNAPSHOT:
            trace(s,
                  "%s %s %" PRIu32 "->%" PRIu32 " term=%" PRIu64
                  " snapshot=%" PRIu64 "/%" PRIu64,
                  what, msg_name(m->type), m->from, m->to, m->term,
                  m->snapshot.index, m->snapshot.term);
            break;
        default:
            trace(s,
                  "%s %s %" PRIu32 "->%" PRIu32 " term=%" PRIu64
                  " last=%" PRIu64 "/%" PRIu64,
                  what, msg_name(m->type), m->from, m->to, m->term,
                  m->vote.last_index, m->vote.last_term);
            break;
    }
}

/* ---- Network ------------------------------------------------------------ */

static void net_push(struct sim *s, const struct raft_msg *m, uint64_t due)
{
    struct flight *f;

    if (s->n_net == s->cap_net) {
        s->cap_net = s->cap_net == 0 ? 256 : 2 * s->cap_net;
        s->net = xrealloc(s->net, s->cap_net * sizeof(*s->net));
    }
    f = &s->net[s->n_net++];
    f->due = due;
    f->order = s->order++;
    msg_copy(&f->m, m);
}

static uint64_t net_delay(struct sim *s)
{
    uint64_t d = 1 + sim_below(s, s->max_delay);

    /* A few messages take much longer, which reorders them. */
    if (sim_chance(s, 2)) {
        d += sim_below(s, 8 * SIM_UNITS_PER_TICK);
        totals.faults[F_DELAY]++;
    }
    return d;
}

/* Flow control: an AppendEntries holds at most max_append_entries and
 * max_append_bytes, except that a single entry may be larger. */
static void check_append_caps(struct sim *s, const struct raft_msg *m)
{
    size_t bytes = 0;
    size_t i;

    if (m->type != RAFT_MSG_APPEND || m->append.n_entries == 0) {
        return;
    }
    CHECK(m->append.n_entries <= s->base.max_append_entries);
    for (i = 0; i < m->append.n_entries; i++) {
        bytes += m->append.entries[i].len;
    }
    CHECK(m->append.n_entries == 1 || bytes <= s->base.max_append_bytes);
    totals.append_msgs++;
    totals.append_entries += m->append.n_entries;
}

static void net_send(struct sim *s, const struct raft_msg *m)
{
    CHECK(m->from >= 1 && m->from <= s->n && m->to >= 1 && m->to <= s->n);
    CHECK(m->type != RAFT_MSG_SNAPSHOT); /* streamed, never on the wire */
    check_append_caps(s, m);
    if (s->cut[m->from][m->to]) {
        return;
    }
    if (s->nodes[m->from - 1].mute &&
        (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE)) {
        return;
    }
    if (s->drop_pct > 0 && sim_chance(s, s->drop_pct)) {
        totals.faults[F_DROP]++;
        return;
    }
    net_push(s, m, s->now + net_delay(s));
    if (s->dup_pct > 0 && sim_chance(s, s->dup_pct)) {
        totals.faults[F_DUP]++;
        net_push(s, m, s->now + net_delay(s));
    }
}

/* ---- Safety checks ------------------------------------------------------ */

/* Every committed index has one entry, whoever committed it.  A node that
 * took a snapshot commits entries it never held; another node committed
 * them first, and the snapshot's digest vouches for them. */
static void note_committed(struct sim *s,
                           struct raft *r,
                           raft_index_t from,
                           raft_index_t commit)
{
    raft_index_t i;

    for (i = from; i <= commit; i++) {
        const struct raft_entry *e = raft_entry_at(r, i);

        if (e == NULL) {
            CHECK(i < raft_first_index(r) && i <= s->n_committed);
            continue;
        }
        if (i <= s->n_committed) {
            CHECK(entry_equal(e, &s->committed[i - 1]));
            continue;
        }
        s->committed = xrealloc(s->committed, (size_t)i * sizeof(*e));
        s->committed_term =
            xrealloc(s->committed_term, (size_t)i * sizeof(*s->committed_term));
        entry_copy(&s->committed[i - 1], e);
        s->committed_term[i - 1] = raft_term(r);
        s->n_committed = (size_t)i;
    }
}

/* An entry of r's log, or for a compacted index, the committed entry
 * there: what r compacted it had applied, and the apply and snapshot
 * checks compared that with what every other node applied. */
static const struct raft_entry *entry_view(struct sim *s,
                                           struct raft *r,
                                           raft_index_t index)
{
    const struct raft_entry *e = raft_entry_at(r, index);

    if (e != NULL) {
        return e;
    }
    CHECK(index >= 1 && index < raft_first_index(r));
    CHECK(index <= raft_commit(r) && index <= s->n_committed);
    return &s->committed[index - 1];
}

/* Leader Completeness (Raft 5.4): a leader holds every entry committed in
 * its term or an earlier one, in its log or, for the compacted prefix, in
 * its state machine.  A leader of an older term can still win an election
 * with votes cast in that term after a newer leader committed entries; it
 * cannot commit anything, since a majority already moved past its term. */
static void check_leader_complete(struct sim *s, struct raft *r)
{
    raft_index_t first = raft_first_index(r);
    raft_index_t i;

    CHECK(first - 1 <= s->n_committed && first - 1 <= raft_applied_index(r));
    if (first > 1) {
        CHECK(raft_prev_term(r) == s->committed[first - 2].term);
    }
    for (i = first; i <= s->n_committed; i++) {
        const struct raft_entry *e = raft_entry_at(r, i);

        if (s->committed_term[i - 1] > raft_term(r)) {
            continue;
        }
        CHECK(e != NULL);
        CHECK(entry_equal(e, &s->committed[i - 1]));
    }
}

static raft_index_t min_index(raft_index_t a, raft_index_t b)
{
    return a < b ? a : b;
}

/* Log Matching (Raft 5.3): same index and term means the same prefix.
 * Committed prefixes are checked against s->committed already, so the
 * walk starts above the lower commit index.  A node compacts only below
 * its own commit, so above the floor at most one of the two may have
 * compacted an index; its committed entry stands in for the one dropped. */
static void check_pair(struct sim *s, struct raft *ra, struct raft *rb)
{
    raft_index_t floor = min_index(raft_commit(ra), raft_commit(rb));
    raft_index_t top = min_index(raft_last_index(ra), raft_last_index(rb));
    raft_index_t i;

    while (top > floor &&
           entry_view(s, ra, top)->term != entry_view(s, rb, top)->term) {
        top--;
    }
    for (i = top; i > floor; i--) {
        CHECK(entry_equal(entry_view(s, ra, i), entry_view(s, rb, i)));
    }
}

/* A log's terms never go down, also across the compacted prefix: an entry
 * kept after a snapshot or a compaction follows the term remembered for
 * the entry before it. */
static void check_log_start(struct raft *r)
{
    const struct raft_entry *e = raft_entry_at(r, raft_first_index(r));

    CHECK(raft_first_index(r) >= 1);
    CHECK(e == NULL || e->term >= raft_prev_term(r));
    CHECK((raft_first_index(r) == 1) == (raft_prev_term(r) == 0));
}

static void check_all(struct sim *s)
{
    size_t a;
    size_t b;

    for (a = 0; a < s->n; a++) {
        if (s->nodes[a].log_changed && s->nodes[a].r != NULL) {
            check_log_start(s->nodes[a].r);
        }
    }
    for (a = 0; a < s->n; a++) {
        for (b = a + 1; b < s->n; b++) {
            if ((s->nodes[a].log_changed || s->nodes[b].log_changed) &&
                s->nodes[a].r != NULL && s->nodes[b].r != NULL) {
                check_pair(s, s->nodes[a].r, s->nodes[b].r);
            }
        }
    }
    for (a = 0; a < s->n; a++) {
        s->nodes[a].log_changed = false;
    }
}

/* ---- Nodes: applying ---------------------------------------------------- */

static void note_proposal_applied(struct sim *s,
                                  raft_id_t id,
                                  raft_index_t index,
                                  const struct raft_entry *e)
{
    size_t i;

    for (i = 0; i < s->n_props; i++) {
        struct proposal *p = &s->props[i];

        if (p->node == id && p->index == index && p->term == e->term &&
            !p->acked) {
            CHECK(e->len == strlen(p->data) &&
                  memcmp(e->data, p->data, e->len) == 0);
            p->acked = true;
            totals.acked++;
        }
    }
}

/* Raft 7: drop the entries up to index from the durable log and from the
 * core; the state machine holds their effect.  The core must accept any
 * index the state machine applied from a durable log. */
static void node_compact(struct sim *s, size_t idx, raft_index_t index)
{
    struct sim_node *sn = &s->nodes[idx];
    size_t drop;
    size_t i;
    raft_term_t term;

    CHECK(sn->r != NULL && sn->installs_pending == 0);
    CHECK(raft_first_index(sn->r) == sn->d_first);
    if (index < sn->d_first) {
        return;
    }
    CHECK(index <= sn->d_sm.index && index <= d_last(sn));
    drop = (size_t)(index - sn->d_first + 1);
    term = sn->d_log[drop - 1].term;
    CHECK(entry_equal(raft_entry_at(sn->r, index), &sn->d_log[drop - 1]));
    CHECK(raft_compact(sn->r, index) == 0);
    CHECK(raft_first_index(sn->r) == index + 1);
    CHECK(raft_prev_term(sn->r) == term);

    for (i = 0; i < drop; i++) {
        free(sn->d_log[i].data);
    }
    sn->d_n -= drop;
    memmove(sn->d_log, sn->d_log + drop, sn->d_n * sizeof(*sn->d_log));
    sn->d_first = index + 1;
    sn->d_prev_term = term;
    totals.compactions++;
    totals.compacted_entries += drop;
    trace(s, "node %zu compacts to %" PRIu64 "/%" PRIu64 " applied=%" PRIu64,
          idx + 1, index, term, sn->d_sm.index);
}

/* Compact once more than compact_every applied entries sit in the log,
 * keeping a few of them so that followers close behind need no
 * snapshot. */
static void maybe_compact(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    raft_index_t keep;

    if (sn->installs_pending > 0 ||
        sn->d_sm.index < sn->d_first + s->compact_every) {
        return;
    }
    keep = sim_below(s, 5);
    node_compact(s, idx, sn->d_sm.index - keep);
}

/* Record entry index as applied somewhere, with the digest of the state
 * machine that applied every entry up to it. */
static void note_applied(struct sim *s,
                         raft_index_t index,
                         const struct raft_entry *e,
                         uint64_t digest)
{
    CHECK(index == s->n_applied + 1);
    s->applied = xrealloc(s->applied, (size_t)index * sizeof(*e));
    s->digests = xrealloc(s->digests, (size_t)index * sizeof(uint64_t));
    entry_copy(&s->applied[index - 1], e);
    s->digests[index - 1] = digest;
    s->n_applied = (size_t)index;
}

/* Apply what is committed and durable here; no two nodes apply different
 * entries at one index, so their digests agree index by index.  While a
 * snapshot waits for its write, the core's log starts past the state
 * machine, and nothing applies. */
static void apply_ready(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    raft_index_t from = sn->d_sm.index;
    /* What an update said is committed: the core's commit index may have
     * moved inside a call whose update was not collected yet. */
    raft_index_t upto = sn->seen_commit;
    raft_index_t i;

    if (sn->installs_pending > 0) {
        return;
    }
    if (raft_persisted_index(sn->r) < upto) {
        upto = raft_persisted_index(sn->r);
    }
    for (i = from + 1; i <= upto; i++) {
        const struct raft_entry *e = raft_entry_at(sn->r, i);

        CHECK(e != NULL);
        sn->d_sm.digest = digest_add(sn->d_sm.digest, i, e);
        sn->d_sm.index = i;
        sn->d_sm.term = e->term;
        if (e->type == RAFT_ENTRY_CONFIG) {
            CHECK(raft_membership_decode(e->data, e->len, &sn->d_sm.conf) == 0);
            sn->d_sm.conf_index = i;
            totals.conf_applied++;
        }
        if (i <= s->n_applied) {
            CHECK(entry_equal(e, &s->applied[i - 1]));
            CHECK(sn->d_sm.digest == s->digests[i - 1]);
        } else {
            note_applied(s, i, e, sn->d_sm.digest);
        }
        note_proposal_applied(s, raft_id(sn->r), i, e);
    }
    if (upto > from) {
        raft_applied(sn->r, upto);
    }
    maybe_compact(s, idx);
}

/* ---- Nodes: disk -------------------------------------------------------- */

static void job_free(struct write_job *j)
{
    size_t i;

    entries_free(j->entries, j->n_entries);
    for (i = 0; i < j->n_msgs; i++) {
        msg_free(&j->msgs[i]);
    }
    free(j->msgs);
}

/* Raft 7: the snapshot becomes the state machine and every stored entry
 * goes.  It must equal the state of every node that applied as far. */
static void disk_install(struct sim *s,
                         struct sim_node *sn,
                         const struct sm_state *snap)
{
    CHECK(snap->index > sn->d_sm.index && snap->index <= s->n_applied);
    CHECK(snap->digest == s->digests[snap->index - 1]);
    CHECK(snap->term == s->applied[snap->index - 1].term);
    sn->d_sm = *snap;
    entries_free(sn->d_log, sn->d_n);
    sn->d_log = NULL;
    sn->d_n = 0;
    sn->d_first = snap->index + 1;
    sn->d_prev_term = snap->term;
    CHECK(sn->installs_pending > 0);
    sn->installs_pending--;
    sn->installs++;
    totals.snap_installed++;
}

static void disk_write(struct sim *s,
                       struct sim_node *sn,
                       const struct write_job *j)
{
    size_t keep;
    size_t i;

    if (j->hard) {
        CHECK(j->term >= sn->d_term);
        sn->d_term = j->term;
        sn->d_vote = j->vote;
    }
    if (j->has_snap) {
        disk_install(s, sn, &j->snap);
        CHECK(j->from == sn->d_first);
    }
    if (j->from == 0) {
        return;
    }
    CHECK(j->from > sn->d_sm.index && j->from >= sn->d_first &&
          j->from <= d_last(sn) + 1);
    keep = (size_t)(j->from - sn->d_first);
    for (i = keep; i < sn->d_n; i++) {
        free(sn->d_log[i].data);
    }
    sn->d_n = keep;
    sn->d_log = xrealloc(sn->d_log,
                         (sn->d_n + j->n_entries) * sizeof(struct raft_entry));
    for (i = 0; i < j->n_entries; i++) {
        entry_copy(&sn->d_log[sn->d_n + i], &j->entries[i]);
    }
    sn->d_n += j->n_entries;
}

static void disk_complete(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    struct write_job j = sn->jobs[0];
    size_t i;

    memmove(&sn->jobs[0], &sn->jobs[1], (sn->n_jobs - 1) * sizeof(j));
    sn->n_jobs--;
    disk_write(s, sn, &j);
    if (j.has_snap) {
        trace(s, "node %zu snapshot %" PRIu64 "/%" PRIu64 " durable", idx + 1,
              j.snap.index, j.snap.term);
    }
    if (j.from != 0 && sn->d_n > 0) {
        raft_persisted(sn->r, d_last(sn), sn->d_log[sn->d_n - 1].term);
    }
    /* What follows may depend on the snapshot, which is now durable. */
    CHECK(!j.has_snap || sn->d_sm.index >= j.snap.index);
    for (i = 0; i < j.n_msgs; i++) {
        net_send(s, &j.msgs[i]);
    }
    job_free(&j);
}

/* ---- Nodes: updates ----------------------------------------------------- */

static void check_leader_unique(struct sim *s, struct raft *r)
{
    raft_term_t t = raft_term(r);

    CHECK(t < SIM_MAX_TERMS);
    CHECK(s->leader_of_term[t] == 0 || s->leader_of_term[t] == raft_id(r));
    if (s->leader_of_term[t] == 0) {
        totals.elections++;
        trace(s, "node %" PRIu32 " leads term %" PRIu64, raft_id(r), t);
        check_leader_complete(s, r);
    }
    s->leader_of_term[t] = raft_id(r);
}

/* The log suffix from j->from to the end, as the core holds it now. */
static void job_copy_log(struct write_job *j, struct raft *r)
{
    raft_index_t last = raft_last_index(r);
    raft_index_t i;

    entries_free(j->entries, j->n_entries);
    j->n_entries = (size_t)(last - j->from + 1);
    j->entries = xrealloc(NULL, j->n_entries * sizeof(struct raft_entry));
    for (i = j->from; i <= last; i++) {
        entry_copy(&j->entries[i - j->from], raft_entry_at(r, i));
    }
}

/* Raft 7: the leader's core asks for a snapshot of follower m->to.  The
 * leader streams its state machine as it is now, which covers at least
 * what the core compacted.  The request depends on nothing but the
 * leader's term, which is durable, so the stream starts at once. */
static void stream_start(struct sim *s, size_t idx, const struct raft_msg *m)
{
    struct sim_node *sn = &s->nodes[idx];
    struct stream *st;

    CHECK(m->from == idx + 1 && m->to >= 1 && m->to <= s->n);
    CHECK(raft_role(sn->r) == RAFT_LEADER && m->term == raft_term(sn->r));
    CHECK(raft_snapshot_pending(sn->r, m->to));
    CHECK(m->snapshot.index + 1 == raft_first_index(sn->r) &&
          m->snapshot.term == raft_prev_term(sn->r));
    CHECK(m->snapshot.index >= 1 && sn->d_sm.index >= m->snapshot.index);
    CHECK(sn->d_sm.index > m->snapshot.index ||
          sn->d_sm.term == m->snapshot.term);
    s->streams = xrealloc(s->streams, (s->n_streams + 1) * sizeof(*st));
    st = &s->streams[s->n_streams++];
    st->due = s->now + 5 + sim_below(s, 6 * SIM_UNITS_PER_TICK);
    st->from = m->from;
    st->to = m->to;
    st->incarnation = sn->incarnation;
    st->term = m->term;
    st->seq = ++sn->stream_seq[m->to];
    st->lost = s->snap_loss_pct > 0 && sim_chance(s, s->snap_loss_pct);
    st->watch = false;
    st->snap = sn->d_sm;
    totals.snap_sent++;
    trace(s,
          "node %zu streams snapshot %" PRIu64 "/%" PRIu64 " to %" PRIu32
          " (asked for %" PRIu64 ")%s",
          idx + 1, st->snap.index, st->snap.term, st->to, m->snapshot.index,
          st->lost ? ", will be lost" : "");
}

/* The update took a snapshot: the write replaces the state machine and
 * the whole log, so whatever log the job held before is moot. */
static void job_add_snapshot(struct sim_node *sn,
                             struct write_job *j,
                             const struct raft_update *u)
{
    CHECK(sn->handed != NULL);
    CHECK(u->snapshot_index == sn->handed->index &&
          u->snapshot_term == sn->handed->term);
    CHECK(u->log_dirty_from == u->snapshot_index + 1);
    CHECK(u->commit >= u->snapshot_index);
    CHECK(raft_first_index(sn->r) == u->snapshot_index + 1);
    if (!j->has_snap) {
        sn->installs_pending++;
    }
    j->has_snap = true;
    j->snap = *sn->handed;
    j->from = u->log_dirty_from;
    sn->handed = NULL;
}

/* Writes finish in order.  Like the real storage, the disk commits as a
 * group whatever arrived while the write in progress ran: a write that
 * has not started absorbs the next update. */
static void queue_job(struct sim *s, size_t idx, const struct raft_update *u)
{
    struct sim_node *sn = &s->nodes[idx];
    struct write_job *j;
    size_t k;

    if (sn->n_jobs >= 2) {
        j = &sn->jobs[sn->n_jobs - 1];
        totals.group_commits++;
    } else {
        sn->jobs = xrealloc(sn->jobs, (sn->n_jobs + 1) * sizeof(*sn->jobs));
        j = &sn->jobs[sn->n_jobs++];
        memset(j, 0, sizeof(*j));
        j->due =
            (sn->n_jobs > 1 ? sn->jobs[0].due : s->now) + 1 + sim_below(s, 4);
    }
    if (u->hard_state_changed) {
        j->hard = true;
        j->term = u->term;
        j->vote = u->vote;
    }
    if (u->snapshot_index != 0) {
        job_add_snapshot(sn, j, u);
    } else if (u->log_dirty_from != 0 &&
               (j->from == 0 || u->log_dirty_from < j->from)) {
        j->from = u->log_dirty_from;
    }
    CHECK(!j->has_snap || j->from == j->snap.index + 1);
    if (u->log_dirty_from != 0) {
        job_copy_log(j, sn->r);
    }
    j->msgs =
        xrealloc(j->msgs, (j->n_msgs + u->n_msgs) * sizeof(struct raft_msg));
    for (k = 0; k < u->n_msgs; k++) {
        /* Replies to a snapshot wait for it to be durable. */
        CHECK(u->snapshot_index == 0 || u->msgs[k].type != RAFT_MSG_APPEND);
        if (u->msgs[k].type == RAFT_MSG_SNAPSHOT) {
            stream_start(s, idx, &u->msgs[k]);
        } else if (u->msgs[k].type == RAFT_MSG_APPEND) {
            net_send(s, &u->msgs[k]);
        } else {
            msg_copy(&j->msgs[j->n_msgs++], &u->msgs[k]);
        }
    }
}

static void check_reads(struct sim *s, const struct raft_update *u)
{
    size_t i;

    /* Linearizability: a read sees every write committed anywhere before
     * it was asked for. */
    for (i = 0; i < u->n_reads; i++) {
        CHECK(u->reads[i].ctx < s->n_reads);
        CHECK(u->reads[i].index >= s->read_floor[u->reads[i].ctx]);
        totals.reads++;
    }
}

static void process(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    struct raft_update u;
    int rounds;

    for (rounds = 0; raft_has_update(sn->r); rounds++) {
        CHECK(rounds < 100);
        raft_get_update(sn->r, &u);
        if (u.soft_state_changed) {
            trace(s, "node %zu now %s term=%" PRIu64 " leader=%" PRIu32,
                  idx + 1, raft_role_name(u.role), u.term, u.leader);
        }
        if (u.role == RAFT_LEADER) {
            check_leader_unique(s, sn->r);
        }
        CHECK(u.commit >= sn->seen_commit);
        note_committed(s, sn->r, sn->seen_commit + 1, u.commit);
        sn->seen_commit = u.commit;
        if (u.log_dirty_from != 0) {
            sn->log_changed = true;
        }
        check_reads(s, &u);
        if (u.hard_state_changed || u.log_dirty_from != 0 || u.n_msgs > 0) {
            queue_job(s, idx, &u);
        }
        apply_ready(s, idx);
    }
}

/* ---- Nodes: life -------------------------------------------------------- */

static void node_start(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    struct raft_config cfg = s->base;
    size_t i;

    cfg.id = (raft_id_t)(idx + 1);
    cfg.n_voters = s->n;
    for (i = 0; i < s->n; i++) {
        cfg.voters[i] = (raft_id_t)(i + 1);
    }
    /* The durable configuration, once there is one (scenarios that write
     * the disk by hand start from the voters above). */
    if (sn->d_sm.conf.n > 0) {
        cfg.membership = &sn->d_sm.conf;
        cfg.membership_index = sn->d_sm.conf_index;
    }
    cfg.seed = s->seed * 1000003 + sn->incarnation;
    sn->r = raft_new(&cfg);
    CHECK(sn->r != NULL);
    CHECK(raft_load(sn->r, sn->d_term, sn->d_vote, sn->d_sm.index, sn->d_first,
                    sn->d_prev_term, sn->d_log, sn->d_n) == 0);
    CHECK(raft_first_index(sn->r) == sn->d_first &&
          raft_prev_term(sn->r) == sn->d_prev_term &&
          raft_last_index(sn->r) == d_last(sn));
    sn->seen_commit = sn->d_sm.index;
    sn->next_tick = s->now + 1 + sim_below(s, SIM_UNITS_PER_TICK);
    sn->log_changed = true;
    trace(s,
          "node %zu starts term=%" PRIu64 " first=%" PRIu64 " last=%" PRIu64
          " applied=%" PRIu64,
          idx + 1, sn->d_term, sn->d_first, d_last(sn), sn->d_sm.index);
}

static void node_crash(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    size_t i;

    for (i = 0; i < sn->n_jobs; i++) {
        job_free(&sn->jobs[i]);
    }
    sn->n_jobs = 0;
    totals.snap_crashed += sn->installs_pending;
    sn->installs_pending = 0;
    raft_free(sn->r);
    sn->r = NULL;
    sn->incarnation++;
    trace(s, "node %zu crashes: durable term=%" PRIu64 " last=%" PRIu64,
          idx + 1, sn->d_term, d_last(sn));
}

static void sim_init(struct sim *s,
                     size_t n,
                     uint64_t seed,
                     const struct raft_config *base)
{
    size_t i;

    memset(s, 0, sizeof(*s));
    current = s;
    s->n = n;
    s->seed = seed;
    s->rng = seed;
    s->max_delay = 2 * SIM_UNITS_PER_TICK;
    s->base = *base;
    s->compact_every = 16;
    s->leader_of_term = calloc(SIM_MAX_TERMS, sizeof(raft_id_t));
    CHECK(s->leader_of_term != NULL);
    for (i = 0; i < n; i++) {
        struct raft_server *sv = &s->nodes[0].d_sm.conf.servers[i];

        sv->id = (raft_id_t)(i + 1);
        sv->voter = true;
        snprintf(sv->addr, sizeof(sv->addr), "sim:%zu", i + 1);
    }
    s->nodes[0].d_sm.conf.n = n;
    for (i = 0; i < n; i++) {
        s->nodes[i].d_sm.conf = s->nodes[0].d_sm.conf;
        s->nodes[i].d_first = 1;
        node_start(s, i);
    }
}

static void sim_free(struct sim *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        if (s->nodes[i].r != NULL) {
            node_crash(s, i);
        }
        free(s->nodes[i].jobs);
        entries_free(s->nodes[i].d_log, s->nodes[i].d_n);
    }
    for (i = 0; i < s->n_net; i++) {
        msg_free(&s->net[i].m);
    }
    free(s->net);
    free(s->streams);
    free(s->leader_of_term);
    entries_free(s->committed, s->n_committed);
    free(s->committed_term);
    entries_free(s->applied, s->n_applied);
    free(s->digests);
    free(s->props);
    current = NULL;
}

static struct raft_config default_base(void)
{
    struct raft_config c;

    memset(&c, 0, sizeof(c));
    c.election_ticks = SIM_ELECTION_TICKS;
    c.heartbeat_ticks = SIM_HEARTBEAT_TICKS;
    c.max_append_entries = 4;
    c.max_append_bytes = 64;
    c.max_uncommitted_entries = 64;
    return c;
}

/* ---- Time --------------------------------------------------------------- */

/* The next message due, picking at random among equal due times. */
static size_t net_next_due(struct sim *s)
{
    size_t best = s->n_net;
    size_t i;

    for (i = 0; i < s->n_net; i++) {
        if (s->net[i].due <= s->now &&
            (best == s->n_net || s->net[i].order < s->net[best].order)) {
            best = i;
        }
    }
    return best;
}

static void deliver(struct sim *s, size_t k)
{
    struct raft_msg m = s->net[k].m;
    size_t to = m.to - 1;

    s->net[k] = s->net[--s->n_net];
    if (s->nodes[to].r != NULL && !s->cut[m.from][m.to]) {
        trace_msg(s, "recv", &m);
        CHECK(raft_step(s->nodes[to].r, &m) == 0);
        process(s, to);
        check_all(s);
    }
    msg_free(&m);
}

/* The follower's core takes a snapshot from a current leader that is
 * ahead of its commit; any other changes nothing (Raft 7). */
static void stream_deliver(struct sim *s, const struct stream *st)
{
    struct sim_node *sn = &s->nodes[st->to - 1];
    raft_term_t term = raft_term(sn->r);
    raft_index_t commit = raft_commit(sn->r);
    struct raft_msg m;
    bool takes = st->term >= term && st->snap.index > commit;

    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_SNAPSHOT;
    m.from = st->from;
    m.to = st->to;
    m.term = st->term;
    m.snapshot.index = st->snap.index;
    m.snapshot.term = st->snap.term;
    m.snapshot.membership = &st->snap.conf;
    m.snapshot.membership_index = st->snap.conf_index;
    trace_msg(s, "recv", &m);
    sn->handed = &st->snap;
    CHECK(raft_step(sn->r, &m) == 0);
    process(s, st->to - 1);
    CHECK(takes == (sn->handed == NULL));
    sn->handed = NULL;
    if (takes) {
        CHECK(raft_first_index(sn->r) == st->snap.index + 1);
        CHECK(raft_prev_term(sn->r) == st->snap.term);
    } else {
        totals.snap_unneeded++;
    }
    check_all(s);
    /* Now and then the follower dies before the snapshot is durable: it
     * must come back with its old state machine and log. */
    if (takes && s->crash_installs && sim_chance(s, 5)) {
        node_crash(s, st->to - 1);
        totals.faults[F_CRASH]++;
    }
}

/* A delivered snapshot that the leader still waits for, with no newer
 * stream to that follower since: the confirmation was lost, or the
 * follower lost the snapshot in a crash.  Give up so the core asks
 * again (see the top comment). */
static void watch_end(struct sim *s, const struct stream *st)
{
    struct sim_node *leader = &s->nodes[st->from - 1];

    if (leader->r == NULL || leader->incarnation != st->incarnation ||
        leader->stream_seq[st->to] != st->seq ||
        raft_role(leader->r) != RAFT_LEADER ||
        raft_term(leader->r) != st->term ||
        !raft_snapshot_pending(leader->r, st->to)) {
        return;
    }
    totals.snap_timeouts++;
    trace(s, "snapshot %" PRIu64 " %" PRIu32 "->%" PRIu32 " unconfirmed",
          st->snap.index, st->from, st->to);
    raft_snapshot_failed(leader->r, st->to);
    process(s, st->from - 1);
    check_all(s);
}

/* A snapshot stream ends.  It fails when it was lost or the follower is
 * down or cut off, and the leader's core is told; a leader that crashed
 * meanwhile abandoned it.  A delivered one is watched until confirmed. */
static void stream_end(struct sim *s, size_t k)
{
    struct stream st = s->streams[k];
    struct sim_node *leader = &s->nodes[st.from - 1];

    s->streams[k] = s->streams[--s->n_streams];
    if (st.watch) {
        watch_end(s, &st);
        return;
    }
    if (leader->r == NULL || leader->incarnation != st.incarnation) {
        totals.snap_aborted++;
        trace(s, "snapshot %" PRIu64 " %" PRIu32 "->%" PRIu32 " abandoned",
              st.snap.index, st.from, st.to);
        return;
    }
    if (st.lost || s->nodes[st.to - 1].r == NULL || s->cut[st.from][st.to]) {
        totals.snap_failed++;
        trace(s, "snapshot %" PRIu64 " %" PRIu32 "->%" PRIu32 " failed",
              st.snap.index, st.from, st.to);
        raft_snapshot_failed(leader->r, st.to);
        process(s, st.from - 1);
        check_all(s);
        return;
    }
    stream_deliver(s, &st);
    if (snapshot_timeout) {
        st.watch = true;
        st.due = s->now + SIM_SNAPSHOT_CONFIRM_TICKS * SIM_UNITS_PER_TICK;
        s->streams = xrealloc(s->streams, (s->n_streams + 1) * sizeof(st));
        s->streams[s->n_streams++] = st;
    }
}

/* One unit of simulated time: disks finish, nodes tick, messages and
 * snapshots due are delivered; the invariants are checked after each of
 * these events. */
static void sim_step(struct sim *s)
{
    size_t i;
    size_t k;

    s->now++;
    totals.steps++;
    for (i = 0; i < s->n; i++) {
        struct sim_node *sn = &s->nodes[i];

        while (sn->r != NULL && sn->n_jobs > 0 && sn->jobs[0].due <= s->now) {
            disk_complete(s, i);
            /* A leader that is the only voter commits on its own disk
             * write: the update reports that before anything applies. */
            process(s, i);
            apply_ready(s, i);
            check_all(s);
        }
        if (sn->r != NULL && sn->next_tick <= s->now) {
            sn->next_tick += SIM_UNITS_PER_TICK;
            raft_tick(sn->r);
            process(s, i);
            check_all(s);
        }
    }
    while ((k = net_next_due(s)) < s->n_net) {
        deliver(s, k);
    }
    for (k = 0; k < s->n_streams;) {
        if (s->streams[k].due <= s->now) {
            stream_end(s, k);
        } else {
            k++;
        }
    }
}

static void run_ticks(struct sim *s, unsigned ticks)
{
    unsigned i;

    for (i = 0; i < ticks * SIM_UNITS_PER_TICK; i++) {
        sim_step(s);
    }
}

/* ---- Clients ------------------------------------------------------------ */

static struct raft *find_leader(struct sim *s)
{
    struct raft *best = NULL;
    size_t i;

    for (i = 0; i < s->n; i++) {
        struct raft *r = s->nodes[i].r;

        if (r != NULL && raft_role(r) == RAFT_LEADER &&
            (best == NULL || raft_term(r) > raft_term(best))) {
            best = r;
        }
    }
    return best;
}

/* Propose on r; returns the raft_propose result. */
static int propose(struct sim *s, struct raft *r)
{
    struct proposal *p;
    int rv;

    if (s->n_props == SIM_MAX_PROPOSALS) {
        return IKD_ELIMIT;
    }
    s->props = xrealloc(s->props, (s->n_props + 1) * sizeof(*s->props));
    p = &s->props[s->n_props];
    memset(p, 0, sizeof(*p));
    snprintf(p->data, sizeof(p->data), "p%zu.%" PRIu64, s->n_props, s->seed);
    p->node = raft_id(r);
    rv = raft_propose(r, RAFT_ENTRY_COMMAND, p->data, strlen(p->data),
                      &p->index, &p->term);
    if (rv == IKD_EBUSY) {
        totals.busy++;
    }
    if (rv != 0) {
        return rv;
    }
    trace(s, "node %" PRIu32 " proposes %s at %" PRIu64 "/%" PRIu64, p->node,
          p->data, p->index, p->term);
    s->n_props++;
    process(s, raft_id(r) - 1);
    check_all(s);
    return 0;
}

static void client_step(struct sim *s)
{
    size_t i;

    /* Clients talk to any node that believes it leads, stale or not. */
    for (i = 0; i < s->n; i++) {
        struct raft *r = s->nodes[i].r;

        if (r == NULL || raft_role(r) != RAFT_LEADER) {
            continue;
        }
        if (sim_chance(s, 30)) {
            int rv = propose(s, r);

            CHECK(rv == 0 || rv == IKD_EBUSY || rv == IKD_ELIMIT);
        }
        if (sim_chance(s, 10) && s->n_reads < SIM_MAX_READS) {
            s->read_floor[s->n_reads] = (raft_index_t)s->n_committed;
            CHECK(raft_read_index(r, s->n_reads) == 0);
            s->n_reads++;
            process(s, i);
        }
    }
}

/* ---- Faults ------------------------------------------------------------- */

static void heal(struct sim *s)
{
    memset(s->cut, 0, sizeof(s->cut));
    s->drop_pct = 0;
    s->dup_pct = 0;
    trace(s, "network heals");
}

static void cut_both(struct sim *s, size_t a, size_t b)
{
    s->cut[a][b] = true;
    s->cut[b][a] = true;
}

static void isolate(struct sim *s, size_t id)
{
    size_t j;

    for (j = 1; j <= s->n; j++) {
        if (j != id) {
            cut_both(s, id, j);
        }
    }
    trace(s, "node %zu isolated", id);
}

/* Two random sides with no link between them. */
static void split(struct sim *s)
{
    bool side[SIM_MAX_NODES + 1];
    size_t a;
    size_t b;

    for (a = 1; a <= s->n; a++) {
        side[a] = sim_chance(s, 50);
    }
    for (a = 1; a <= s->n; a++) {
        for (b = 1; b <= s->n; b++) {
            if (side[a] != side[b]) {
                s->cut[a][b] = true;
            }
        }
    }
    trace(s, "network split in two");
}

/* Node i hears only from its ring neighbours, enough of them that each
 * node sees a majority, but a different one. */
static void ring(struct sim *s)
{
    size_t reach = (s->n / 2 + 1) / 2;
    size_t a;
    size_t b;

    for (a = 0; a < s->n; a++) {
        for (b = 0; b < s->n; b++) {
            size_t d = a > b ? a - b : b - a;

            if (d > s->n - d) {
                d = s->n - d;
            }
            s->cut[a + 1][b + 1] = d > reach;
        }
    }
    trace(s, "network becomes a ring, reach=%zu", reach);
}

/* Two sides that only a bridge node links. */
static void bridge(struct sim *s)
{
    size_t mid = 1 + sim_below(s, (unsigned)s->n);
    size_t a;
    size_t b;

    for (a = 1; a <= s->n; a++) {
        for (b = 1; b <= s->n; b++) {
            if (a != mid && b != mid && (a % 2) != (b % 2)) {
                s->cut[a][b] = true;
            }
        }
    }
    trace(s, "network bridged by node %zu", mid);
}

/* Whether raft_transfer(l, to) must start: to is a voter other than l,
 * or with to 0, some other voter exists (a transfer to l itself is a
 * no-op that succeeds). */
static bool transfer_possible(struct raft *l, raft_id_t to)
{
    const struct raft_membership *m = raft_membership(l, NULL);
    size_t i;

    if (to == raft_id(l)) {
        return true;
    }
    for (i = 0; i < m->n; i++) {
        if (m->servers[i].voter && m->servers[i].id != raft_id(l) &&
            (to == 0 || m->servers[i].id == to)) {
            return true;
        }
    }
    return false;
}

/* Raft 4: the leader adds id (as a learner, or promotes it) when it is
 * not a voter, else removes it, now and then itself.  A change refused
 * while another is in progress is the only expected refusal, apart from
 * removing the last voter and a leader handing over. */
static void change_membership(struct sim *s, struct raft *l, raft_id_t id)
{
    const struct raft_server *sv =
        raft_membership_find(raft_membership(l, NULL), id);
    bool add = sv == NULL || !sv->voter;
    char addr[16];
    int rv;

    snprintf(addr, sizeof(addr), "sim:%" PRIu32, id);
    rv = raft_change(l, add ? RAFT_CHANGE_ADD : RAFT_CHANGE_REMOVE, id, addr);
    trace(s, "node %" PRIu32 " asked to %s %" PRIu32 " -> %d", raft_id(l),
          add ? "add" : "remove", id, rv);
    CHECK(rv == 0 || rv == 1 || rv == IKD_ECHANGING || rv == IKD_EBUSY ||
          (rv == -EINVAL && !add));
    if (rv == 0) {
        totals.conf_started++;
    } else if (rv == IKD_ECHANGING) {
        totals.conf_refused++;
    }
    process(s, raft_id(l) - 1);
    check_all(s);
}

static void random_fault(struct sim *s)
{
    size_t victim = 1 + sim_below(s, (unsigned)s->n);
    size_t other = 1 + sim_below(s, (unsigned)s->n);
    unsigned p = sim_below(s, 100);
    struct raft *l;

    if (p < 10) {
        heal(s);
        totals.faults[F_HEAL]++;
    } else if (p < 18) {
        split(s);
        totals.faults[F_SPLIT]++;
    } else if (p < 26 && victim != other) {
        s->cut[victim][other] = true;
        trace(s, "link %zu->%zu cut", victim, other);
        totals.faults[F_ONE_WAY]++;
    } else if (p < 31) {
        ring(s);
        totals.faults[F_RING]++;
    } else if (p < 36) {
        bridge(s);
        totals.faults[F_BRIDGE]++;
    } else if (p < 44) {
        isolate(s, victim);
        totals.faults[F_ISOLATE]++;
    } else if (p < 50) {
        s->drop_pct = sim_below(s, 30);
        s->dup_pct = sim_below(s, 10);
        trace(s, "drop=%u%% dup=%u%%", s->drop_pct, s->dup_pct);
    } else if (p < 58 && s->nodes[victim - 1].r != NULL) {
        node_crash(s, victim - 1);
        totals.faults[F_CRASH]++;
    } else if (p < 70 && p >= 63 && (l = find_leader(s)) != NULL) {
        change_membership(s, l, (raft_id_t)victim);
        totals.faults[F_MEMBERSHIP]++;
    } else if (p < 63 && (l = find_leader(s)) != NULL) {
        raft_id_t to = sim_chance(s, 50) ? 0 : (raft_id_t)other;

        trace(s, "node %" PRIu32 " asked to transfer to %" PRIu32, raft_id(l),
              to);
        CHECK(raft_transfer(l, to) == 0 || !transfer_possible(l, to));
        process(s, raft_id(l) - 1);
        totals.faults[F_TRANSFER]++;
    }
}

/* Compaction at a random point of a random node, and a compaction past
 * what the state machine applied, which the core must refuse. */
static void random_compact(struct sim *s)
{
    size_t idx = sim_below(s, (unsigned)s->n);
    struct sim_node *sn = &s->nodes[idx];
    raft_index_t first;
    raft_index_t bad;
    unsigned span;

    if (sn->r == NULL || sn->installs_pending > 0) {
        return;
    }
    first = raft_first_index(sn->r);
    bad = raft_applied_index(sn->r) + 1 + sim_below(s, 3);
    CHECK(raft_compact(sn->r, bad) == -EINVAL);
    CHECK(raft_first_index(sn->r) == first);
    totals.compact_refused++;
    if (sn->d_sm.index < sn->d_first) {
        return;
    }
    span = (unsigned)(sn->d_sm.index - sn->d_first + 1);
    node_compact(s, idx, sn->d_first + sim_below(s, span));
    totals.faults[F_COMPACT]++;
    process(s, idx);
    check_all(s);
}

static void restart_some(struct sim *s, unsigned pct)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        if (s->nodes[i].r == NULL && sim_chance(s, pct)) {
            node_start(s, i);
            process(s, i);
            totals.faults[F_RESTART]++;
        }
    }
}

/* ---- Liveness ----------------------------------------------------------- */

static bool all_follow_and_commit(struct sim *s,
                                  struct raft *l,
                                  raft_index_t index)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        struct raft *r = s->nodes[i].r;

        /* Servers the configuration removed no longer follow anyone. */
        if (raft_membership_find(raft_membership(l, NULL),
                                 (raft_id_t)(i + 1)) == NULL) {
            continue;
        }
        if (r == NULL || raft_leader(r) != raft_id(l) ||
            raft_commit(r) < index || raft_applied_index(r) < index ||
            s->nodes[i].d_sm.index < index) {
            return false;
        }
    }
    return true;
}

/* Every state machine equals the applied prefix of the same length. */
static void check_states(struct sim *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        const struct sm_state *sm = &s->nodes[i].d_sm;

        CHECK(sm->index <= s->n_applied);
        CHECK(sm->index == 0 || (sm->digest == s->digests[sm->index - 1] &&
                                 sm->term == s->applied[sm->index - 1].term));
    }
}

/* With faults gone, a leader appears that every node follows, and a new
 * entry commits and is applied everywhere within SIM_LIVENESS_TICKS.  Every
 * proposal is then decided: its entry is committed at its index, or another
 * entry is, or the final log ends before it. */
static void check_liveness(struct sim *s)
{
    struct raft *l = NULL;
    raft_term_t term = 0;
    raft_index_t index = 0;
    unsigned ticks;
    size_t i;
    bool done = false;

    heal(s);
    s->snap_loss_pct = 0;
    s->crash_installs = false;
    for (i = 0; i < s->n; i++) {
        s->nodes[i].mute = false;
        if (s->nodes[i].r == NULL) {
            node_start(s, i);
            process(s, i);
        }
    }
    for (ticks = 0; ticks < SIM_LIVENESS_TICKS && !done; ticks++) {
        run_ticks(s, 1);
        l = find_leader(s);
        if (l == NULL) {
            continue;
        }
        if (raft_term(l) != term) {
            int rv = propose(s, l);

            trace(s, "after healing: propose on node %" PRIu32 " -> %d",
                  raft_id(l), rv);
            if (rv == 0) {
                index = s->props[s->n_props - 1].index;
                term = raft_term(l);
            }
        }
        done = term == raft_term(l) && all_follow_and_commit(s, l, index);
    }
    CHECK(done);
    if (ticks > totals.max_recovery_ticks) {
        totals.max_recovery_ticks = ticks;
        totals.max_recovery_seed = s->seed;
    }
    check_states(s);
    for (i = 0; i < s->n_props; i++) {
        struct proposal *p = &s->props[i];
        const struct raft_entry *e =
            p->index <= raft_last_index(l) ? entry_view(s, l, p->index) : NULL;

        if (p->acked) {
            CHECK(e != NULL && e->term == p->term);
        } else if (p->index <= raft_commit(l) && e->term == p->term) {
            /* Committed after its proposer lost its role. */
            totals.acked++;
        } else {
            CHECK(p->index > raft_commit(l) || e->term != p->term);
            totals.lost++;
        }
    }
}

/* ---- Random schedules --------------------------------------------------- */

static void run_schedule(uint64_t seed, bool verbose)
{
    static const size_t sizes[] = {3, 5, 7};
    struct raft_config base = default_base();
    struct sim s;
    unsigned tick;
    unsigned fault_ticks;

    base.disable_prevote = seed % 8 == 7;
    /* Message caps from one entry per message to many. */
    base.max_append_entries = 1 + (size_t)(seed / 3 % 7);
    base.max_append_bytes = 16 + (size_t)(seed / 21 % 5) * 24;
    sim_init(&s, sizes[seed % 3], seed, &base);
    s.compact_every = 8 + sim_below(&s, 23);
    s.snap_loss_pct = sim_below(&s, 30);
    s.crash_installs = true;
    fault_ticks = 100 + sim_below(&s, 150);
    for (tick = 0; tick < fault_ticks; tick++) {
        if (sim_chance(&s, 12)) {
            random_fault(&s);
        }
        if (sim_chance(&s, 4)) {
            random_compact(&s);
        }
        restart_some(&s, 8);
        client_step(&s);
        run_ticks(&s, 1);
    }
    check_liveness(&s);
    if (verbose) {
        printf("seed=%" PRIu64 " nodes=%zu committed=%zu proposals=%zu\n", seed,
               s.n, s.n_committed, s.n_props);
    }
    totals.schedules++;
    sim_free(&s);
}

/* ---- Named scenarios ---------------------------------------------------- */

static void load_terms(struct sim *s,
                       size_t idx,
                       raft_term_t term,
                       const raft_term_t *terms,
                       size_t n)
{
    struct sim_node *sn = &s->nodes[idx];
    size_t i;

    sn->d_term = term;
    sn->d_log = xrealloc(NULL, (n + 1) * sizeof(struct raft_entry));
    for (i = 0; i < n; i++) {
        char data[32];
        int len = snprintf(data, sizeof(data), "n%zu i%zu t%" PRIu64, idx + 1,
                           i + 1, terms[i]);

        sn->d_log[i].term = terms[i];
        sn->d_log[i].type = RAFT_ENTRY_COMMAND;
        sn->d_log[i].len = (uint32_t)len;
        sn->d_log[i].data = xrealloc(NULL, (size_t)len);
        memcpy(sn->d_log[i].data, data, (size_t)len);
    }
    sn->d_n = n;
}

/* Entries with equal index and term get equal data across nodes. */
static void unify_data(struct sim *s)
{
    size_t a;
    size_t i;

    for (a = 0; a < s->n; a++) {
        struct sim_node *sn = &s->nodes[a];

        for (i = 0; i < sn->d_n; i++) {
            char data[32];
            int len = snprintf(data, sizeof(data), "i%zu t%" PRIu64, i + 1,
                               sn->d_log[i].term);

            free(sn->d_log[i].data);
            sn->d_log[i].len = (uint32_t)len;
            sn->d_log[i].data = xrealloc(NULL, (size_t)len);
            memcpy(sn->d_log[i].data, data, (size_t)len);
        }
    }
}

static void restart_all(struct sim *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        if (s->nodes[i].r != NULL) {
            node_crash(s, i);
        }
        node_start(s, i);
    }
}

static void wait_leader(struct sim *s, raft_id_t want, unsigned ticks)
{
    unsigned t;
    struct raft *l = NULL;

    for (t = 0; t < ticks; t++) {
        run_ticks(s, 1);
        l = find_leader(s);
        if (l != NULL && (want == 0 || raft_id(l) == want)) {
            return;
        }
    }
    CHECK(l != NULL && (want == 0 || raft_id(l) == want));
}

/* Raft Figure 7: a new leader in term 8 and six followers whose logs
 * miss, add or conflict with entries; it brings every log to its own. */
static void scenario_figure7(void)
{
    static const raft_term_t leader[] = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6};
    static const raft_term_t fa[] = {1, 1, 1, 4, 4, 5, 5, 6, 6};
    static const raft_term_t fb[] = {1, 1, 1, 4};
    static const raft_term_t fc[] = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6};
    static const raft_term_t fd[] = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7};
    static const raft_term_t fe[] = {1, 1, 1, 4, 4, 4, 4};
    static const raft_term_t ff[] = {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3};
    struct raft_config base = default_base();
    struct sim s;
    struct raft *l;
    size_t i;

    sim_init(&s, 7, 7007, &base);
    load_terms(&s, 0, 7, leader, 10);
    load_terms(&s, 1, 7, fa, 9);
    load_terms(&s, 2, 7, fb, 4);
    load_terms(&s, 3, 7, fc, 11);
    load_terms(&s, 4, 7, fd, 12);
    load_terms(&s, 5, 7, fe, 7);
    load_terms(&s, 6, 7, ff, 11);
    unify_data(&s);
    restart_all(&s);
    for (i = 1; i < 7; i++) {
        s.nodes[i].mute = true;
    }
    wait_leader(&s, 1, 100);
    l = s.nodes[0].r;
    CHECK(raft_term(l) == 8);
    CHECK(propose(&s, l) == 0);
    run_ticks(&s, 30);
    for (i = 0; i < 7; i++) {
        struct raft *r = s.nodes[i].r;

        CHECK(raft_last_index(r) == 12 && raft_commit(r) == 12);
        CHECK(raft_entry_at(r, 11)->term == 8);
        CHECK(raft_entry_at(r, 10)->term == 6);
    }
    check_liveness(&s);
    sim_free(&s);
    printf("scenario figure 7: every follower log repaired\n");
}

static bool holds(struct sim *s, size_t idx, raft_index_t index, raft_term_t t)
{
    const struct raft_entry *e = raft_entry_at(s->nodes[idx].r, index);

    return e != NULL && e->term == t;
}

/* Raft Figure 8: S1 leads again in a later term and copies its entry of
 * term 2 to a majority; that entry must not count as committed, because
 * S5, whose log ends in term 3, can still win and overwrite it.  One entry
 * per message, so that index 2 reaches S2 and S3 before the new leader's
 * own entry does. */
static void scenario_figure8(void)
{
    static const raft_term_t s1[] = {1, 2};
    static const raft_term_t s234[] = {1};
    static const raft_term_t s5[] = {1, 3};
    struct raft_config base = default_base();
    struct sim s;
    struct raft *l;
    size_t i;
    unsigned t;

    base.max_append_entries = 1;
    sim_init(&s, 5, 8008, &base);
    load_terms(&s, 0, 4, s1, 2);
    load_terms(&s, 1, 4, s234, 1);
    load_terms(&s, 2, 4, s234, 1);
    load_terms(&s, 3, 4, s234, 1);
    load_terms(&s, 4, 4, s5, 2);
    unify_data(&s);
    restart_all(&s);

    /* S1 wins without S5. */
    for (i = 1; i < 5; i++) {
        s.nodes[i].mute = true;
    }
    cut_both(&s, 1, 5);
    for (t = 0; t < 2000 && find_leader(&s) == NULL; t++) {
        sim_step(&s);
    }
    l = find_leader(&s);
    CHECK(l != NULL && raft_id(l) == 1);
    for (t = 0; t < 2000 && !(holds(&s, 1, 2, 2) && holds(&s, 2, 2, 2)); t++) {
        sim_step(&s);
    }
    CHECK(holds(&s, 1, 2, 2) && holds(&s, 2, 2, 2));
    /* Nothing more leaves S1; the replies still come in. */
    for (i = 2; i <= 5; i++) {
        s.cut[1][i] = true;
    }
    run_ticks(&s, 5);
    /* Index 2 is on S1, S2 and S3, a majority, and S1 knows: it still must
     * not count as committed (Raft 5.4.2). */
    CHECK(raft_commit(l) < 2 && s.n_committed < 2);
    node_crash(&s, 0);

    /* S5 wins with S2, S3 and S4 and replaces index 2 everywhere. */
    heal(&s);
    isolate(&s, 1);
    for (i = 1; i < 5; i++) {
        s.nodes[i].mute = i != 4;
    }
    wait_leader(&s, 5, 200);
    run_ticks(&s, 20);
    for (i = 1; i < 5; i++) {
        CHECK(holds(&s, i, 2, 3));
    }
    check_liveness(&s);
    sim_free(&s);
    printf(
        "scenario figure 8: an old-term entry on a majority stayed "
        "uncommitted and was replaced\n");
}

/* A leader cut off from everyone keeps taking proposals: it stops at the
 * uncommitted cap, steps down after an election timeout (Raft 6.2), and
 * none of what it took survives the new leader. */
static void scenario_isolated_leader(void)
{
    struct raft_config base = default_base();
    struct sim s;
    struct raft *old;
    raft_id_t old_id;
    size_t first;
    size_t i;
    unsigned t;
    int busy = 0;
    int rv;

    base.max_uncommitted_entries = 8;
    sim_init(&s, 5, 9009, &base);
    wait_leader(&s, 0, 200);
    old = find_leader(&s);
    old_id = raft_id(old);
    isolate(&s, old_id);
    first = s.n_props;
    for (t = 0; t < 4 * SIM_ELECTION_TICKS; t++) {
        if (s.nodes[old_id - 1].r == old && raft_role(old) == RAFT_LEADER) {
            rv = propose(&s, old);
            CHECK(rv == 0 || rv == IKD_EBUSY);
            busy += rv == IKD_EBUSY;
        }
        run_ticks(&s, 1);
    }
    CHECK(busy > 0);
    CHECK(raft_role(old) != RAFT_LEADER);
    CHECK(raft_propose(old, RAFT_ENTRY_COMMAND, "x", 1, &(raft_index_t){0},
                       &(raft_term_t){0}) == IKD_ENOTLEADER);
    CHECK(find_leader(&s) != NULL);
    check_liveness(&s);
    for (i = first; i < s.n_props; i++) {
        CHECK(s.props[i].node != old_id || !s.props[i].acked);
    }
    sim_free(&s);
    printf(
        "scenario isolated leader: capped, stepped down, its proposals "
        "lost\n");
}

/* A follower cut off for fifty election timeouts returns: with pre-vote it
 * does not raise the term and the leader stays (Raft 9.6); without, it
 * deposes the leader. */
static bool rejoin_keeps_leader(bool prevote)
{
    struct raft_config base = default_base();
    struct sim s;
    struct raft *l;
    raft_id_t leader;
    raft_term_t term;
    size_t victim;
    bool kept;

    base.disable_prevote = !prevote;
    sim_init(&s, 5, 1010, &base);
    wait_leader(&s, 0, 200);
    l = find_leader(&s);
    leader = raft_id(l);
    term = raft_term(l);
    victim = leader % 5 + 1;
    isolate(&s, victim);
    run_ticks(&s, 50 * SIM_ELECTION_TICKS);
    CHECK(prevote == (raft_term(s.nodes[victim - 1].r) == term));

    /* First it reaches every node but the leader: the others, who hear
     * the leader, refuse it (Raft 4.2.3). */
    heal(&s);
    cut_both(&s, leader, victim);
    run_ticks(&s, 10 * SIM_ELECTION_TICKS);
    l = find_leader(&s);
    CHECK(l != NULL && raft_id(l) == leader && raft_term(l) == term);

    heal(&s);
    run_ticks(&s, 10 * SIM_ELECTION_TICKS);
    l = find_leader(&s);
    kept = l != NULL && raft_id(l) == leader && raft_term(l) == term;
    check_liveness(&s);
    sim_free(&s);
    return kept;
}

static void scenario_rejoin(void)
{
    CHECK(rejoin_keeps_leader(true));
    CHECK(!rejoin_keeps_leader(false));
    printf(
        "scenario rejoin after a long partition: leader kept with "
        "pre-vote, deposed without\n");
}

/* Leadership moves to a follower that lagged: the leader refuses
 * proposals meanwhile, catches it up, and the follower wins at once. */
static void scenario_transfer(void)
{
    struct raft_config base = default_base();
    struct sim s;
    struct raft *l;
    raft_id_t target;
    unsigned t;
    int i;

    sim_init(&s, 3, 1111, &base);
    wait_leader(&s, 0, 200);
    l = find_leader(&s);
    target = raft_id(l) % 3 + 1;
    s.cut[raft_id(l)][target] = true;
    for (i = 0; i < 20; i++) {
        CHECK(propose(&s, l) == 0);
        run_ticks(&s, 1);
    }
    heal(&s);
    CHECK(raft_transfer(l, 99) == -EINVAL);
    CHECK(raft_transfer(l, target) == 0);
    CHECK(propose(&s, l) == IKD_EBUSY);
    for (t = 0; t < 2 * SIM_ELECTION_TICKS; t++) {
        run_ticks(&s, 1);
        if (find_leader(&s) != NULL && raft_id(find_leader(&s)) == target) {
            break;
        }
    }
    CHECK(find_leader(&s) != NULL && raft_id(find_leader(&s)) == target);
    totals.transfers_done++;

    /* A transfer to a node that cannot answer stops after an election
     * timeout and proposals are taken again. */
    l = find_leader(&s);
    target = raft_id(l) % 3 + 1;
    isolate(&s, target);
    CHECK(raft_transfer(l, target) == 0);
    run_ticks(&s, SIM_ELECTION_TICKS + 1);
    CHECK(raft_transfer_target(l) == 0 && raft_role(l) == RAFT_LEADER);
    CHECK(propose(&s, l) == 0);
    check_liveness(&s);
    sim_free(&s);
    printf(
        "scenario transfer: lagging follower caught up and took over; "
        "stuck transfer abandoned\n");
}

/* Propose on the newest leader, if any, once a tick for ticks ticks. */
static void propose_for(struct sim *s, unsigned ticks)
{
    unsigned t;
    struct raft *l;

    for (t = 0; t < ticks; t++) {
        l = find_leader(s);
        if (l != NULL) {
            int rv = propose(s, l);

            CHECK(rv == 0 || rv == IKD_EBUSY);
        }
        run_ticks(s, 1);
    }
}

/* Raft 7: node victim misses so much that the leader compacts past the
 * end of its log.  Back, it must catch up through a snapshot and end with
 * the leader's state.  With crash, it is a follower that crashed, whose
 * log is a prefix of the leader's; otherwise it is the old leader, cut
 * off with entries nobody else has, which the snapshot throws away. */
static unsigned catch_up_by_snapshot(bool crash)
{
    struct raft_config base = default_base();
    struct sim s;
    struct raft *l;
    size_t victim;
    raft_index_t behind;
    size_t orphans;
    unsigned installs;
    unsigned t;
    size_t i;

    sim_init(&s, crash ? 3 : 5, crash ? 1212 : 1313, &base);
    s.compact_every = 8;
    wait_leader(&s, 0, 200);
    l = find_leader(&s);
    victim = crash ? raft_id(l) % 3 : raft_id(l) - 1;
    propose_for(&s, 5);
    orphans = s.n_props;
    if (crash) {
        node_crash(&s, victim);
    } else {
        isolate(&s, victim + 1);
        for (i = 0; i < 3; i++) {
            CHECK(propose(&s, s.nodes[victim].r) == 0);
        }
        for (t = 0; t < 200; t++) {
            run_ticks(&s, 1);
            l = find_leader(&s);
            if (l != NULL && raft_id(l) != victim + 1) {
                break;
            }
        }
        CHECK(l != NULL && raft_id(l) != victim + 1);
    }
    behind = d_last(&s.nodes[victim]);
    propose_for(&s, 60);
    l = find_leader(&s);
    CHECK(l != NULL && raft_first_index(l) > behind + 1);
    CHECK(s.nodes[victim].installs == 0);

    if (crash) {
        node_start(&s, victim);
        process(&s, victim);
    } else {
        heal(&s);
    }
    for (t = 0; t < 100 && s.nodes[victim].installs == 0; t++) {
        run_ticks(&s, 1);
    }
    installs = s.nodes[victim].installs;
    CHECK(installs > 0);
    check_liveness(&s);
    l = find_leader(&s);
    for (i = 0; i < s.n; i++) {
        const struct sm_state *a = &s.nodes[i].d_sm;
        const struct sm_state *b = &s.nodes[raft_id(l) - 1].d_sm;

        CHECK(a->index == b->index && a->digest == b->digest);
    }
    for (i = orphans; i < s.n_props; i++) {
        CHECK(s.props[i].node != victim + 1 || !s.props[i].acked);
    }
    sim_free(&s);
    return installs;
}

static void scenario_snapshot(void)
{
    unsigned crashed = catch_up_by_snapshot(true);
    unsigned cut_off = catch_up_by_snapshot(false);

    printf(
        "scenario snapshot catch-up: a restarted follower and a cut-off old "
        "leader caught up past the leader's log start (installs %u, %u)\n",
        crashed, cut_off);
}

/* Raft 4.2.3: a server removed while it was cut off never hears of its
 * removal and keeps asking for pre-votes once it is back; the servers
 * that hear their leader refuse it, so the leader keeps its term. */
static void scenario_removed_server(void)
{
    struct raft_config base = default_base();
    struct sim s;
    struct raft *l;
    raft_id_t leader;
    raft_term_t term;
    raft_index_t index;
    raft_id_t victim;
    unsigned t;

    sim_init(&s, 3, 2024, &base);
    wait_leader(&s, 0, 200);
    l = find_leader(&s);
    leader = raft_id(l);
    victim = leader % 3 + 1;
    isolate(&s, victim);
    CHECK(raft_change(l, RAFT_CHANGE_REMOVE, victim, NULL) == 0);
    raft_membership(l, &index);
    process(&s, leader - 1);
    for (t = 0; t < 200 && raft_commit(l) < index; t++) {
        run_ticks(&s, 1);
    }
    CHECK(raft_commit(l) >= index);
    term = raft_term(l);
    run_ticks(&s, 20 * SIM_ELECTION_TICKS);

    heal(&s);
    run_ticks(&s, 50 * SIM_ELECTION_TICKS);
    l = find_leader(&s);
    CHECK(l != NULL && raft_id(l) == leader && raft_term(l) == term);
    CHECK(raft_membership_find(raft_membership(s.nodes[victim - 1].r, NULL),
                               victim) != NULL);
    check_liveness(&s);
    sim_free(&s);
    printf(
        "scenario removed server: never told, it came back and the leader "
        "kept its term\n");
}

/* ---- Main --------------------------------------------------------------- */

static uint64_t parse_u64(const char *text)
{
    char *end;
    unsigned long long v = strtoull(text, &end, 10);

    if (*text == '\0' || *end != '\0') {
        fprintf(stderr, "sim: not a number: %s\n", text);
        exit(2);
    }
    return (uint64_t)v;
}

int main(int argc, char **argv)
{
    uint64_t schedules = 10000;
    uint64_t seed = 0;
    bool one_seed = false;
    bool verbose = false;
    const char *env = getenv("IKADA_SIM_SCHEDULES");
    struct timespec t0;
    struct timespec t1;
    uint64_t i;
    int a;

    if (env != NULL && *env != '\0') {
        schedules = parse_u64(env);
    }
    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--schedules") == 0 && a + 1 < argc) {
            schedules = parse_u64(argv[++a]);
        } else if (strcmp(argv[a], "--seed") == 0 && a + 1 < argc) {
            seed = parse_u64(argv[++a]);
            one_seed = true;
        } else if (strcmp(argv[a], "--verbose") == 0) {
            verbose = true;
        } else if (strcmp(argv[a], "--no-snapshot-timeout") == 0) {
            snapshot_timeout = false;
        } else {
            fprintf(stderr,
                    "usage: sim [--schedules N] [--seed S] [--verbose] "
                    "[--no-snapshot-timeout]\n");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (one_seed) {
        run_schedule(seed, true);
    } else {
        scenario = "figure7";
        scenario_figure7();
        scenario = "figure8";
        scenario_figure8();
        scenario = "isolated leader";
        scenario_isolated_leader();
        scenario = "rejoin";
        scenario_rejoin();
        scenario = "removed server";
        scenario_removed_server();
        scenario = "transfer";
        scenario_transfer();
        scenario = "snapshot";
        scenario_snapshot();
        scenario = NULL;
        for (i = 1; i <= schedules; i++) {
            run_schedule(i, verbose);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("schedules=%" PRIu64 " time=%.1fs steps=%" PRIu64
           " elections=%" PRIu64 " acked=%" PRIu64 " lost=%" PRIu64
           " busy=%" PRIu64 " reads=%" PRIu64 "\n",
           totals.schedules,
           (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
           totals.steps, totals.elections, totals.acked, totals.lost,
           totals.busy, totals.reads);
    printf("  longest recovery after healing: %u ticks, seed %" PRIu64
           " (bound %u, election timeout %u)\n",
           totals.max_recovery_ticks, totals.max_recovery_seed,
           SIM_LIVENESS_TICKS, SIM_ELECTION_TICKS);
    printf("  updates merged into a pending disk write: %" PRIu64 "\n",
           totals.group_commits);
    printf("  append messages with entries: %" PRIu64
           ", entries per message: "
           "%.2f\n",
           totals.append_msgs,
           totals.append_msgs == 0
               ? 0.0
               : (double)totals.append_entries / (double)totals.append_msgs);
    printf("  snapshots streamed: %" PRIu64 ", installed: %" PRIu64
           ", failed: %" PRIu64 ", abandoned by a crashed leader: %" PRIu64
           "\n",
           totals.snap_sent, totals.snap_installed, totals.snap_failed,
           totals.snap_aborted);
    printf("  snapshots not needed on arrival: %" PRIu64
           ", lost to a crash before durable: %" PRIu64
           ", unconfirmed and given up: %" PRIu64 "\n",
           totals.snap_unneeded, totals.snap_crashed, totals.snap_timeouts);
    printf("  compactions: %" PRIu64 " (entries dropped %" PRIu64
           "), refused past applied: %" PRIu64 "\n",
           totals.compactions, totals.compacted_entries,
           totals.compact_refused);
    printf("  membership changes started: %" PRIu64
           ", refused while one was in progress: %" PRIu64
           ", configuration entries applied: %" PRIu64 "\n",
           totals.conf_started, totals.conf_refused, totals.conf_applied);
    for (a = 0; a < F_KINDS; a++) {
        printf("  %s: %" PRIu64 "\n", fault_names[a], totals.faults[a]);
    }
    /* A run that injected nothing or committed nothing proved nothing. */
    if (!one_seed && schedules >= 100 &&
        (totals.acked < schedules || totals.faults[F_CRASH] == 0 ||
         totals.faults[F_TRANSFER] == 0 || totals.reads == 0 ||
         totals.snap_installed == 0 || totals.snap_failed == 0 ||
         totals.compactions == 0 || totals.conf_started == 0 ||
         totals.conf_refused == 0)) {
        fprintf(stderr, "sim: the schedules exercised too little\n");
        return 1;
    }
    return 0;
}
