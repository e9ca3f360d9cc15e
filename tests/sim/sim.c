/* A deterministic simulated cluster for the pure Raft core.
 *
 * Three, five or seven cores run in one process on a simulated clock.  The
 * network delays, drops, duplicates and reorders messages and can be cut
 * along any set of one-way links; disks finish writes after a delay and a
 * crash loses every write that raft_persisted() was not yet told about.
 * After every event the safety properties of Raft are checked; after the
 * faults heal, a leader must appear and commit within a bounded time.
 *
 *   sim                         the default run (named scenarios and
 *                               IKADA_SIM_SCHEDULES or 10000 schedules)
 *   sim --schedules N           N random schedules
 *   sim --seed S                only schedule S (to replay a failure)
 *   sim --verbose               print each schedule's summary
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
#define SIM_TRACE_LINES 80
#define SIM_TRACE_BYTES 200
/* After healing, a leader that every node follows must commit a new entry
 * everywhere within this many ticks. */
#ifndef SIM_LIVENESS_TICKS
#define SIM_LIVENESS_TICKS 400
#endif

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
} totals;

/* One message in flight. */
struct flight
{
    uint64_t due;
    uint64_t order; /* ties between equal due times */
    struct raft_msg m;
};

/* A write the disk has not finished: hard state, log suffix, and the
 * messages that must wait for it (raft.h, durability rule). */
struct write_job
{
    uint64_t due;
    bool hard;
    raft_term_t term;
    raft_id_t vote;
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

    /* The disk: what survives a crash. */
    raft_term_t d_term;
    raft_id_t d_vote;
    struct raft_entry *d_log; /* index i + 1 */
    size_t d_n;
    raft_index_t d_applied;

    struct write_job *jobs;
    size_t n_jobs;

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

    raft_id_t *leader_of_term;
    struct raft_entry *committed; /* every index any node committed */
    size_t n_committed;
    struct raft_entry *applied; /* every index any node applied */
    size_t n_applied;
    struct proposal *props;
    size_t n_props;
    raft_index_t read_floor[SIM_MAX_READS];
    uint64_t n_reads;

    char trace[SIM_TRACE_LINES][SIM_TRACE_BYTES];
    size_t n_trace;
};

/* ---- Failure and trace -------------------------------------------------- */

static struct sim *current;
static const char *scenario; /* the named scenario running, if any */

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
                " commit=%" PRIu64 " applied=%" PRIu64 " last=%" PRIu64
                " transfer=%" PRIu32 "\n",
                i + 1, raft_role_name(raft_role(r)), raft_term(r),
                raft_leader(r), raft_commit(r), raft_applied_index(r),
                raft_last_index(r), raft_transfer_target(r));
        fprintf(stderr,
                "    durable: last=%zu persisted=%" PRIu64
                " writes pending=%zu\n",
                s->nodes[i].d_n, raft_persisted_index(r), s->nodes[i].n_jobs);
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

/* Every committed index has one entry, whoever committed it. */
static void note_committed(struct sim *s,
                           struct raft *r,
                           raft_index_t from,
                           raft_index_t commit)
{
    raft_index_t i;

    for (i = from; i <= commit; i++) {
        const struct raft_entry *e = raft_entry_at(r, i);

        CHECK(e != NULL);
        if (i <= s->n_committed) {
            CHECK(entry_equal(e, &s->committed[i - 1]));
            continue;
        }
        s->committed = xrealloc(s->committed, (size_t)i * sizeof(*e));
        entry_copy(&s->committed[i - 1], e);
        s->n_committed = (size_t)i;
    }
}

/* Leader Completeness (Raft 5.4): a leader holds every committed entry. */
static void check_leader_complete(struct sim *s, struct raft *r)
{
    raft_index_t i;

    for (i = 1; i <= s->n_committed; i++) {
        const struct raft_entry *e = raft_entry_at(r, i);

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
 * walk starts above the lower commit index. */
static void check_pair(struct raft *ra, struct raft *rb)
{
    raft_index_t floor = min_index(raft_commit(ra), raft_commit(rb));
    raft_index_t top = min_index(raft_last_index(ra), raft_last_index(rb));
    raft_index_t i;

    while (top > floor &&
           raft_entry_at(ra, top)->term != raft_entry_at(rb, top)->term) {
        top--;
    }
    for (i = top; i > floor; i--) {
        CHECK(entry_equal(raft_entry_at(ra, i), raft_entry_at(rb, i)));
    }
}

static void check_all(struct sim *s)
{
    size_t a;
    size_t b;

    for (a = 0; a < s->n; a++) {
        for (b = a + 1; b < s->n; b++) {
            if ((s->nodes[a].log_changed || s->nodes[b].log_changed) &&
                s->nodes[a].r != NULL && s->nodes[b].r != NULL) {
                check_pair(s->nodes[a].r, s->nodes[b].r);
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

/* Apply what is committed and durable here; no two nodes apply different
 * entries at one index. */
static void apply_ready(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    raft_index_t upto = raft_commit(sn->r);
    raft_index_t i;

    if (raft_persisted_index(sn->r) < upto) {
        upto = raft_persisted_index(sn->r);
    }
    for (i = sn->d_applied + 1; i <= upto; i++) {
        const struct raft_entry *e = raft_entry_at(sn->r, i);

        CHECK(e != NULL);
        if (i <= s->n_applied) {
            CHECK(entry_equal(e, &s->applied[i - 1]));
        } else {
            CHECK(i == s->n_applied + 1);
            s->applied = xrealloc(s->applied, (size_t)i * sizeof(*e));
            entry_copy(&s->applied[i - 1], e);
            s->n_applied = (size_t)i;
        }
        note_proposal_applied(s, raft_id(sn->r), i, e);
    }
    if (upto > sn->d_applied) {
        sn->d_applied = upto;
        raft_applied(sn->r, upto);
    }
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

static void disk_write(struct sim_node *sn, const struct write_job *j)
{
    size_t i;

    if (j->hard) {
        CHECK(j->term >= sn->d_term);
        sn->d_term = j->term;
        sn->d_vote = j->vote;
    }
    if (j->from == 0) {
        return;
    }
    CHECK(j->from > sn->d_applied && j->from <= sn->d_n + 1);
    for (i = (size_t)j->from; i <= sn->d_n; i++) {
        free(sn->d_log[i - 1].data);
    }
    sn->d_n = (size_t)j->from - 1;
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
    disk_write(sn, &j);
    if (j.from != 0 && sn->d_n > 0) {
        raft_persisted(sn->r, sn->d_n, sn->d_log[sn->d_n - 1].term);
    }
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
    if (u->log_dirty_from != 0) {
        if (j->from == 0 || u->log_dirty_from < j->from) {
            j->from = u->log_dirty_from;
        }
        job_copy_log(j, sn->r);
    }
    j->msgs =
        xrealloc(j->msgs, (j->n_msgs + u->n_msgs) * sizeof(struct raft_msg));
    for (k = 0; k < u->n_msgs; k++) {
        if (u->msgs[k].type == RAFT_MSG_APPEND) {
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
    cfg.seed = s->seed * 1000003 + sn->incarnation;
    sn->r = raft_new(&cfg);
    CHECK(sn->r != NULL);
    CHECK(raft_load(sn->r, sn->d_term, sn->d_vote, sn->d_applied, 1, 0,
                    sn->d_log, sn->d_n) == 0);
    sn->seen_commit = sn->d_applied;
    sn->next_tick = s->now + 1 + sim_below(s, SIM_UNITS_PER_TICK);
    sn->log_changed = true;
    trace(s, "node %zu starts term=%" PRIu64 " last=%zu applied=%" PRIu64,
          idx + 1, sn->d_term, sn->d_n, sn->d_applied);
}

static void node_crash(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    size_t i;

    for (i = 0; i < sn->n_jobs; i++) {
        job_free(&sn->jobs[i]);
    }
    sn->n_jobs = 0;
    raft_free(sn->r);
    sn->r = NULL;
    sn->incarnation++;
    trace(s, "node %zu crashes: durable term=%" PRIu64 " last=%zu", idx + 1,
          sn->d_term, sn->d_n);
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
    s->leader_of_term = calloc(SIM_MAX_TERMS, sizeof(raft_id_t));
    CHECK(s->leader_of_term != NULL);
    for (i = 0; i < n; i++) {
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
    free(s->leader_of_term);
    entries_free(s->committed, s->n_committed);
    entries_free(s->applied, s->n_applied);
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

/* One unit of simulated time: disks finish, nodes tick, messages due are
 * delivered; the invariants are checked after each of these events. */
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
            apply_ready(s, i);
            process(s, i);
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
    } else if (p < 63 && (l = find_leader(s)) != NULL) {
        raft_id_t to = sim_chance(s, 50) ? 0 : (raft_id_t)other;

        trace(s, "node %" PRIu32 " asked to transfer to %" PRIu32, raft_id(l),
              to);
        CHECK(raft_transfer(l, to) == 0 || s->n == 1);
        process(s, raft_id(l) - 1);
        totals.faults[F_TRANSFER]++;
    }
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

        if (r == NULL || raft_leader(r) != raft_id(l) ||
            raft_commit(r) < index || raft_applied_index(r) < index) {
            return false;
        }
    }
    return true;
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
    for (i = 0; i < s->n_props; i++) {
        struct proposal *p = &s->props[i];
        const struct raft_entry *e = raft_entry_at(l, p->index);

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
    fault_ticks = 100 + sim_below(&s, 150);
    for (tick = 0; tick < fault_ticks; tick++) {
        if (sim_chance(&s, 12)) {
            random_fault(&s);
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
        } else {
            fprintf(stderr,
                    "usage: sim [--schedules N] [--seed S] [--verbose]\n");
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
        scenario = "transfer";
        scenario_transfer();
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
    for (a = 0; a < F_KINDS; a++) {
        printf("  %s: %" PRIu64 "\n", fault_names[a], totals.faults[a]);
    }
    /* A run that injected nothing or committed nothing proved nothing. */
    if (!one_seed && schedules >= 100 &&
        (totals.acked < schedules || totals.faults[F_CRASH] == 0 ||
         totals.faults[F_TRANSFER] == 0 || totals.reads == 0)) {
        fprintf(stderr, "sim: the schedules exercised too little\n");
        return 1;
    }
    return 0;
}
