/* The Raft core: leader election, log replication, commitment and
 * ReadIndex as a pure state machine (see raft.h for the contract). */

#include "raft.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Messages carrying entries that a follower in replicate mode may have in
 * flight before the leader waits for acknowledgements. */
#define RAFT_MAX_INFLIGHT 64

/* Longest log line the core formats. */
#define RAFT_LOG_LINE_BYTES 256

_Static_assert(RAFT_MAX_INFLIGHT >= 1, "the window must hold a message");

/* What the leader knows about one follower (Raft 5.3).  Touched only while
 * this node leads, except vote_granted, which the candidate uses. */
struct raft_progress
{
    raft_id_t id;
    /* Next entry to send; match is the highest index known replicated and
     * never decreases within a term. */
    raft_index_t next;
    raft_index_t match;
    /* Probe mode: one AppendEntries per heartbeat until one succeeds.
     * Replicate mode: pipeline, advancing next when sending. */
    bool replicate;
    bool probe_sent;
    /* Send at least one AppendEntries at the next flush (heartbeat, new
     * commit index, new read round). */
    bool need_send;
    /* Answered since the last quorum check (Raft 6.2). */
    bool active;
    bool vote_granted;
    /* Highest read round the follower echoed in this term (Raft 6.4). */
    uint64_t read_acked;
    /* Waiting for a snapshot (Raft 7): entries are not sent, only
     * heartbeats, until the follower shows it holds snapshot_index. */
    bool snapshotting;
    raft_index_t snapshot_index;
    /* Last index of each message with entries in flight, oldest first. */
    raft_index_t inflight[RAFT_MAX_INFLIGHT];
    size_t inflight_head;
    size_t n_inflight;
};

struct raft_pending_read
{
    uint64_t ctx;
    uint64_t seq; /* the round it waits for; 0 until one starts */
    raft_index_t index;
};

struct raft
{
    struct raft_config cfg;

    /* Durable state (Raft Figure 2): term never decreases; at most one
     * vote per term.  Changes are handed out as hard state. */
    raft_term_t term;
    raft_id_t vote;

    /* The log: entries[i] has index first_index + i; each owns its data.
     * Entries before first_index were compacted (Raft 7); prev_term is the
     * term of entry first_index - 1, which the consistency check of the
     * next AppendEntries needs. */
    struct raft_entry *entries;
    size_t n_entries;
    size_t cap_entries;
    raft_index_t first_index;
    raft_term_t prev_term;
    size_t log_bytes; /* the data of every entry held */

    /* commit never decreases and never passes the last index; applied
     * never passes commit; persisted is the durable prefix of the log. */
    raft_index_t commit;
    raft_index_t applied;
    raft_index_t persisted;

    enum raft_role role;
    raft_id_t leader;
    unsigned election_elapsed;
    unsigned election_timeout;
    unsigned heartbeat_elapsed;
    unsigned quorum_elapsed;
    uint64_t rng;
    /* Asking for pre-votes for term + 1 (Raft 9.6); the role stays
     * follower and the term does not move until a majority agrees. */
    bool prevoting;

    /* Leadership transfer (Raft 3.10): the target, 0 when none; ticks since
     * it began; whether TimeoutNow went out. */
    raft_id_t transfer_target;
    unsigned transfer_elapsed;
    bool timeout_now_sent;

    /* While leading: bytes of the entries after commit. */
    size_t uncommitted_bytes;

    /* Configurations (Raft 4.1): conf is the latest in the log, committed
     * or not, from the entry at conf_index (or base when the log holds
     * none after base_index).  base is committed and survives compaction:
     * it is the configuration as of base_index.  conf_changed asks the
     * next update to report conf. */
    struct raft_membership conf;
    raft_index_t conf_index;
    struct raft_membership base;
    raft_index_t base_index;
    bool conf_changed;
    /* While leading: the learner to promote once it caught up (Raft
     * 4.2.1), 0 when none; leaving is set once this leader, removed by a
     * committed configuration, began to hand over. */
    raft_id_t promote_id;
    bool leaving;

    /* One slot per server of conf, in its order; self_slot is this node,
     * IKD_MAX_NODES when it is not in conf. */
    struct raft_progress progress[IKD_MAX_NODES];
    size_t self_slot;

    /* ReadIndex (Raft 6.4): read_seq counts rounds ever started;
     * round_seq is the round in flight, 0 when none. */
    uint64_t read_seq;
    uint64_t round_seq;
    struct raft_pending_read *pending;
    size_t n_pending;
    size_t cap_pending;
    struct raft_read *ready;
    size_t n_ready;
    size_t cap_ready;
    bool ready_taken;

    /* Outgoing messages; handed out (taken) by raft_get_update(). */
    struct raft_msg *out;
    size_t n_out;
    size_t cap_out;
    bool out_taken;

    /* What the next update reports. */
    raft_index_t snapshot_index;
    raft_term_t snapshot_term;
    bool hard_state_changed;
    raft_index_t dirty_from;
    raft_index_t reported_commit;
    enum raft_role reported_role;
    raft_id_t reported_leader;
};

/* ---- Small helpers ---------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void raft_logf(struct raft *r,
                                                            int level,
                                                            const char *fmt,
                                                            ...)
{
    char line[RAFT_LOG_LINE_BYTES];
    va_list ap;

    if (r->cfg.log_cb == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    r->cfg.log_cb(r->cfg.log_ctx, level, line);
}

/* splitmix64: small, fast, and deterministic for a given seed. */
static uint64_t raft_random(struct raft *r)
{
    uint64_t z = (r->rng += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static int grow_array(void **array, size_t *cap, size_t need, size_t size)
{
    size_t new_cap;
    void *p;

    if (need <= *cap) {
        return 0;
    }
    new_cap = *cap == 0 ? 16 : *cap;
    while (new_cap < need) {
        new_cap *= 2;
    }
    p = realloc(*array, new_cap * size);
    if (p == NULL) {
        return -ENOMEM;
    }
    *array = p;
    *cap = new_cap;
    return 0;
}

static bool slot_votes(const struct raft *r, size_t i)
{
    return r->conf.servers[i].voter;
}

static bool self_votes(const struct raft *r)
{
    return r->self_slot < r->conf.n && slot_votes(r, r->self_slot);
}

/* Raft 4.2.2: a server that its latest configuration removed may still be
 * needed to elect a leader until that configuration commits (its log may
 * be the only up-to-date one), so it campaigns without counting its own
 * vote.  Learners never campaign. */
static bool may_campaign(const struct raft *r)
{
    return self_votes(r) || (r->self_slot >= r->conf.n && r->conf.n > 0 &&
                             r->conf_index > r->commit);
}

static size_t count_voters(const struct raft *r)
{
    size_t i;
    size_t n = 0;

    for (i = 0; i < r->conf.n; i++) {
        n += slot_votes(r, i) ? 1 : 0;
    }
    return n;
}

/* Raft 4.2.1: majorities are of voters only; learners never count. */
static size_t quorum(const struct raft *r)
{
    return count_voters(r) / 2 + 1;
}

static raft_index_t last_index(const struct raft *r)
{
    return r->first_index + r->n_entries - 1;
}

/* The term of the entry at index: 0 for index 0, the remembered term for
 * the last compacted entry, and 0 for indexes that are not in the log
 * (compacted earlier or beyond the end). */
static raft_term_t term_at(const struct raft *r, raft_index_t index)
{
    if (index + 1 == r->first_index) {
        return r->prev_term;
    }
    if (index < r->first_index || index > last_index(r)) {
        return 0;
    }
    return r->entries[index - r->first_index].term;
}

static raft_term_t last_term(const struct raft *r)
{
    return term_at(r, last_index(r));
}

static struct raft_progress *progress_of(struct raft *r, raft_id_t id)
{
    size_t i;

    for (i = 0; i < r->conf.n; i++) {
        if (r->progress[i].id == id) {
            return &r->progress[i];
        }
    }
    return NULL;
}

static bool is_self(const struct raft *r, const struct raft_progress *pr)
{
    return pr->id == r->cfg.id;
}

static void reset_election_timer(struct raft *r)
{
    unsigned span = r->cfg.election_ticks;

    r->election_elapsed = 0;
    r->election_timeout = span + (unsigned)(raft_random(r) % span);
    assert(r->election_timeout >= span && r->election_timeout < 2 * span);
}

static struct raft_msg *push_msg(struct raft *r,
                                 enum raft_msg_type type,
                                 raft_id_t to)
{
    struct raft_msg *m;

    if (r->out_taken) {
        r->n_out = 0;
        r->out_taken = false;
    }
    /* Out of memory drops the message, which Raft tolerates like any
     * message lost on the network. */
    if (grow_array((void **)&r->out, &r->cap_out, r->n_out + 1,
                   sizeof(*r->out)) != 0) {
        return NULL;
    }
    m = &r->out[r->n_out++];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->from = r->cfg.id;
    m->to = to;
    m->term = r->term;
    return m;
}

/* ---- Configurations --------------------------------------------------- */

#define RAFT_MEMBERSHIP_VERSION 1

static bool membership_is_valid(const struct raft_membership *m)
{
    size_t i;
    size_t j;

    if (m->n > IKD_MAX_NODES) {
        return false;
    }
    for (i = 0; i < m->n; i++) {
        if (m->servers[i].id == 0 ||
            memchr(m->servers[i].addr, 0, IKD_MAX_ADDR_BYTES) == NULL) {
            return false;
        }
        for (j = 0; j < i; j++) {
            if (m->servers[j].id == m->servers[i].id) {
                return false;
            }
        }
    }
    return true;
}

int raft_membership_encode(const struct raft_membership *m,
                           uint8_t *buf,
                           size_t cap,
                           size_t *len)
{
    size_t pos = 2;
    size_t i;

    if (!membership_is_valid(m) || cap < 2) {
        return -EINVAL;
    }
    buf[0] = RAFT_MEMBERSHIP_VERSION;
    buf[1] = (uint8_t)m->n;
    for (i = 0; i < m->n; i++) {
        const struct raft_server *sv = &m->servers[i];
        size_t alen = strlen(sv->addr);

        if (pos + 6 + alen > cap) {
            return -EINVAL;
        }
        buf[pos++] = (uint8_t)(sv->id >> 24);
        buf[pos++] = (uint8_t)(sv->id >> 16);
        buf[pos++] = (uint8_t)(sv->id >> 8);
        buf[pos++] = (uint8_t)sv->id;
        buf[pos++] = sv->voter ? 1 : 0;
        buf[pos++] = (uint8_t)alen;
        memcpy(buf + pos, sv->addr, alen);
        pos += alen;
    }
    *len = pos;
    return 0;
}

int raft_membership_decode(const uint8_t *data,
                           size_t len,
                           struct raft_membership *m)
{
    size_t pos = 2;
    size_t i;

    memset(m, 0, sizeof(*m));
    if (data == NULL || len < 2 || data[0] != RAFT_MEMBERSHIP_VERSION ||
        data[1] > IKD_MAX_NODES) {
        return IKD_EMALFORMED;
    }
    m->n = data[1];
    for (i = 0; i < m->n; i++) {
        struct raft_server *sv = &m->servers[i];
        size_t alen;

        if (pos + 6 > len) {
            return IKD_EMALFORMED;
        }
        sv->id = (raft_id_t)data[pos] << 24 | (raft_id_t)data[pos + 1] << 16 |
                 (raft_id_t)data[pos + 2] << 8 | (raft_id_t)data[pos + 3];
        if (data[pos + 4] > 1) {
            return IKD_EMALFORMED;
        }
        sv->voter = data[pos + 4] == 1;
        alen = data[pos + 5];
        pos += 6;
        if (alen >= IKD_MAX_ADDR_BYTES || pos + alen > len) {
            return IKD_EMALFORMED;
        }
        memcpy(sv->addr, data + pos, alen);
        pos += alen;
    }
    if (pos != len || !membership_is_valid(m)) {
        return IKD_EMALFORMED;
    }
    return 0;
}

const struct raft_server *raft_membership_find(const struct raft_membership *m,
                                               raft_id_t id)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        if (m->servers[i].id == id) {
            return &m->servers[i];
        }
    }
    return NULL;
}

static void reset_progress(struct raft *r, struct raft_progress *pr);
static void stop_transfer(struct raft *r, const char *why);

static void log_membership(struct raft *r, raft_index_t index)
{
    char ids[RAFT_LOG_LINE_BYTES / 2];
    size_t pos = 0;
    size_t i;

    ids[0] = 0;
    for (i = 0; i < r->conf.n && pos < sizeof(ids); i++) {
        int k = snprintf(ids + pos, sizeof(ids) - pos, "%s%" PRIu32 "%s",
                         i == 0 ? "" : ",", r->conf.servers[i].id,
                         r->conf.servers[i].voter ? "" : "(learner)");
        pos += k > 0 ? (size_t)k : 0;
    }
    raft_logf(r, IKD_LOG_INFO,
              "configuration at index=%" PRIu64 " commit=%" PRIu64
              " servers=%s -> use it",
              index, r->commit, ids);
}

/* Make m the configuration in use.  Progress of servers that stay is
 * kept; a new server starts as if this node had just become leader. */
static void set_membership(struct raft *r,
                           const struct raft_membership *m,
                           raft_index_t index)
{
    struct raft_progress old[IKD_MAX_NODES];
    size_t n_old = r->conf.n;
    size_t i;
    size_t j;

    assert(membership_is_valid(m));
    memcpy(old, r->progress, sizeof(old));
    r->conf = *m;
    r->conf_index = index;
    r->conf_changed = true;
    r->self_slot = IKD_MAX_NODES;
    for (i = 0; i < m->n; i++) {
        struct raft_progress *pr = &r->progress[i];

        for (j = 0; j < n_old && old[j].id != m->servers[i].id; j++) {
        }
        if (j < n_old) {
            *pr = old[j];
        } else {
            memset(pr, 0, sizeof(*pr));
            pr->id = m->servers[i].id;
            reset_progress(r, pr);
        }
        if (pr->id == r->cfg.id) {
            r->self_slot = i;
        }
    }
    if (r->transfer_target != 0 &&
        (raft_membership_find(m, r->transfer_target) == NULL ||
         !raft_membership_find(m, r->transfer_target)->voter)) {
        stop_transfer(r, "target left the voters");
    }
    if (r->promote_id != 0 && raft_membership_find(m, r->promote_id) == NULL) {
        r->promote_id = 0;
    }
    log_membership(r, index);
}

/* Find the latest configuration again after entries were removed or the
 * base moved: the last configuration entry after base_index, else base. */
static void refresh_membership(struct raft *r)
{
    struct raft_membership m;
    raft_index_t i;

    for (i = r->first_index + r->n_entries - 1;
         i >= r->first_index && i > r->base_index; i--) {
        const struct raft_entry *e = &r->entries[i - r->first_index];

        if (e->type == RAFT_ENTRY_CONFIG &&
            raft_membership_decode(e->data, e->len, &m) == 0) {
            if (i != r->conf_index) {
                set_membership(r, &m, i);
            }
            return;
        }
    }
    if (r->conf_index != r->base_index) {
        set_membership(r, &r->base, r->base_index);
    }
}

/* A change is in progress while the latest configuration is not
 * committed (Raft 4.1: the next one waits for it) or a learner is being
 * caught up for promotion. */
static bool conf_changing(const struct raft *r)
{
    return r->conf_index > r->commit || r->promote_id != 0;
}

/* ---- The log ---------------------------------------------------------- */

static void mark_dirty(struct raft *r, raft_index_t from)
{
    assert(from >= r->first_index);
    if (r->dirty_from == 0 || from < r->dirty_from) {
        r->dirty_from = from;
    }
}

/* Free the data of an entry leaving the log. */
static void drop_entry(struct raft *r, struct raft_entry *e)
{
    assert(r->log_bytes >= e->len);
    r->log_bytes -= e->len;
    free(e->data);
    e->data = NULL;
}

static int log_append(struct raft *r,
                      raft_term_t term,
                      uint8_t type,
                      const void *data,
                      size_t len)
{
    struct raft_entry *e;
    uint8_t *copy = NULL;

    assert(term >= last_term(r) && term <= r->term);
    assert(len <= UINT32_MAX);
    if (grow_array((void **)&r->entries, &r->cap_entries, r->n_entries + 1,
                   sizeof(*r->entries)) != 0) {
        return -ENOMEM;
    }
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL) {
            return -ENOMEM;
        }
        memcpy(copy, data, len);
    }
    e = &r->entries[r->n_entries++];
    e->term = term;
    e->type = type;
    e->len = (uint32_t)len;
    e->data = copy;
    r->log_bytes += len;
    mark_dirty(r, last_index(r));
    /* Raft 4.1: a configuration takes effect as soon as it is in the log,
     * so that the servers it adds count without waiting for commitment.
     * Callers checked that it decodes. */
    if (type == RAFT_ENTRY_CONFIG) {
        struct raft_membership m;

        if (raft_membership_decode(copy, len, &m) == 0) {
            set_membership(r, &m, last_index(r));
        }
    }
    return 0;
}

/* Drop the entries from index on.  Raft 5.3: only entries that conflict
 * with the leader's are removed, and committed entries never conflict
 * (Raft 5.4), so a truncation at or below commit is a bug. */
static void log_truncate(struct raft *r, raft_index_t index)
{
    raft_index_t last = last_index(r);
    raft_index_t i;

    assert(index > r->commit);
    assert(index >= r->first_index && index <= last);
    raft_logf(r, IKD_LOG_INFO,
              "log conflict at index=%" PRIu64 ", term=%" PRIu64
              " -> truncate entries %" PRIu64 "..%" PRIu64,
              index, r->term, index, last);
    for (i = index; i <= last; i++) {
        drop_entry(r, &r->entries[i - r->first_index]);
    }
    r->n_entries = (size_t)(index - r->first_index);
    if (r->persisted >= index) {
        r->persisted = index - 1;
    }
    mark_dirty(r, index);
    /* Raft 4.1: a removed configuration entry no longer counts; the one
     * before it applies again. */
    if (r->conf_index >= index) {
        refresh_membership(r);
    }
}

static void set_commit(struct raft *r, raft_index_t commit)
{
    raft_index_t i;

    assert(commit >= r->commit);
    assert(commit <= last_index(r));
    if (r->role == RAFT_LEADER) {
        for (i = r->commit + 1; i <= commit; i++) {
            assert(r->uncommitted_bytes >= r->entries[i - r->first_index].len);
            r->uncommitted_bytes -= r->entries[i - r->first_index].len;
        }
    }
    r->commit = commit;
}

static size_t bytes_after(const struct raft *r, raft_index_t index)
{
    size_t bytes = 0;
    raft_index_t i;

    for (i = index + 1; i <= last_index(r); i++) {
        bytes += r->entries[i - r->first_index].len;
    }
    return bytes;
}

/* ---- Roles ------------------------------------------------------------ */

static void set_term(struct raft *r, raft_term_t term)
{
    assert(term >= r->term);
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->hard_state_changed = true;
    }
}

static void set_leader(struct raft *r, raft_id_t leader)
{
    if (leader == r->leader) {
        return;
    }
    if (leader != 0) {
        raft_logf(r, IKD_LOG_INFO,
                  "leader learned: leader=%" PRIu32 ", term=%" PRIu64, leader,
                  r->term);
    } else {
        raft_logf(r, IKD_LOG_INFO,
                  "leader lost: leader=%" PRIu32 ", term=%" PRIu64, r->leader,
                  r->term);
    }
    r->leader = leader;
}

/* Reads that did not complete cannot be answered by a node that no longer
 * leads: they are dropped and the caller times out or retries. */
static void drop_pending_reads(struct raft *r)
{
    if (r->n_pending > 0) {
        raft_logf(r, IKD_LOG_DEBUG,
                  "leadership lost with reads=%zu pending -> drop them",
                  r->n_pending);
    }
    r->n_pending = 0;
    r->round_seq = 0;
}

static void stop_transfer(struct raft *r, const char *why)
{
    if (r->transfer_target != 0) {
        raft_logf(r, IKD_LOG_INFO,
                  "leadership transfer to=%" PRIu32 " %s -> stop it",
                  r->transfer_target, why);
    }
    r->transfer_target = 0;
    r->transfer_elapsed = 0;
    r->timeout_now_sent = false;
}

static void become_follower(struct raft *r,
                            raft_term_t term,
                            raft_id_t leader,
                            const char *why)
{
    enum raft_role old = r->role;

    set_term(r, term);
    if (old == RAFT_LEADER) {
        drop_pending_reads(r);
        stop_transfer(r, "ended by a role change");
    }
    r->prevoting = false;
    r->role = RAFT_FOLLOWER;
    set_leader(r, leader);
    reset_election_timer(r);
    if (old != RAFT_FOLLOWER) {
        raft_logf(r, IKD_LOG_INFO,
                  "role change: %s, term=%" PRIu64 " -> follower", why,
                  r->term);
    }
}

static void reset_progress(struct raft *r, struct raft_progress *pr)
{
    pr->next = last_index(r) + 1;
    pr->match = 0;
    pr->replicate = false;
    pr->probe_sent = false;
    pr->need_send = true;
    pr->active = false;
    pr->read_acked = 0;
    pr->snapshotting = false;
    pr->inflight_head = 0;
    pr->n_inflight = 0;
}

static void become_leader(struct raft *r)
{
    size_t i;

    assert(r->role == RAFT_CANDIDATE && r->vote == r->cfg.id);
    r->role = RAFT_LEADER;
    r->prevoting = false;
    set_leader(r, r->cfg.id);
    assert(r->transfer_target == 0); /* cleared when leadership ends */
    r->uncommitted_bytes = bytes_after(r, r->commit);
    r->heartbeat_elapsed = 0;
    r->quorum_elapsed = 0;
    r->round_seq = 0;
    r->promote_id = 0;
    r->leaving = false;
    for (i = 0; i < r->conf.n; i++) {
        reset_progress(r, &r->progress[i]);
    }
    raft_logf(r, IKD_LOG_INFO,
              "role change: won election, term=%" PRIu64 " -> leader", r->term);

    /* Raft 5.4.2 and 6.4: an entry of the new term lets the leader commit
     * what earlier leaders left and learn its commit index for reads. */
    if (log_append(r, r->term, RAFT_ENTRY_NOOP, NULL, 0) != 0) {
        become_follower(r, r->term, 0, "no memory for the leader's entry");
    }
}

static size_t count_votes(const struct raft *r)
{
    size_t i;
    size_t n = 0;

    for (i = 0; i < r->conf.n; i++) {
        n += slot_votes(r, i) && r->progress[i].vote_granted ? 1 : 0;
    }
    return n;
}

static void request_votes(struct raft *r,
                          enum raft_msg_type type,
                          raft_term_t term,
                          bool transfer)
{
    size_t i;
    struct raft_msg *m;

    for (i = 0; i < r->conf.n; i++) {
        if (i == r->self_slot || !slot_votes(r, i)) {
            continue;
        }
        m = push_msg(r, type, r->progress[i].id);
        if (m != NULL) {
            m->term = term;
            m->vote.last_index = last_index(r);
            m->vote.last_term = last_term(r);
            m->vote.transfer = transfer;
        }
    }
}

static void reset_votes(struct raft *r)
{
    size_t i;

    for (i = 0; i < r->conf.n; i++) {
        r->progress[i].vote_granted = i == r->self_slot;
    }
}

/* Raft 5.2: a new term, a vote for self, and a request to every peer.
 * transfer marks an election the leader asked for (Raft 3.10). */
static void campaign(struct raft *r, bool transfer)
{
    set_term(r, r->term + 1);
    r->vote = r->cfg.id;
    r->hard_state_changed = true;
    r->role = RAFT_CANDIDATE;
    r->prevoting = false;
    set_leader(r, 0);
    reset_election_timer(r);
    raft_logf(r, IKD_LOG_INFO, "role change: %s, term=%" PRIu64 " -> candidate",
              transfer ? "asked to take over" : "election timeout", r->term);

    reset_votes(r);
    if (count_votes(r) >= quorum(r)) {
        become_leader(r);
        return;
    }
    request_votes(r, RAFT_MSG_VOTE, r->term, transfer);
}

/* Raft 9.6: ask whether a majority would vote for this node in the next
 * term before moving to it, so that a node that cannot win (cut off, or
 * behind) never raises the term and disrupts the cluster. */
static void pre_campaign(struct raft *r)
{
    r->prevoting = true;
    set_leader(r, 0);
    reset_election_timer(r);
    raft_logf(r, IKD_LOG_INFO,
              "election timeout, term=%" PRIu64 " -> ask for pre-votes",
              r->term);
    reset_votes(r);
    if (count_votes(r) >= quorum(r)) {
        campaign(r, false);
        return;
    }
    request_votes(r, RAFT_MSG_PREVOTE, r->term + 1, false);
}

/* ---- Leader: replication ---------------------------------------------- */

static bool inflight_full(const struct raft_progress *pr)
{
    return pr->n_inflight >= RAFT_MAX_INFLIGHT;
}

static void inflight_add(struct raft_progress *pr, raft_index_t last)
{
    size_t slot;

    assert(!inflight_full(pr));
    slot = (pr->inflight_head + pr->n_inflight) % RAFT_MAX_INFLIGHT;
    pr->inflight[slot] = last;
    pr->n_inflight++;
}

static void inflight_free_to(struct raft_progress *pr, raft_index_t index)
{
    while (pr->n_inflight > 0 && pr->inflight[pr->inflight_head] <= index) {
        pr->inflight_head = (pr->inflight_head + 1) % RAFT_MAX_INFLIGHT;
        pr->n_inflight--;
    }
}

static void enter_probe(struct raft_progress *pr)
{
    pr->replicate = false;
    pr->probe_sent = false;
    pr->inflight_head = 0;
    pr->n_inflight = 0;
}

/* How many entries from index fit into one message: at most
 * max_append_entries and about max_append_bytes, but at least one. */
static size_t batch_size(const struct raft *r, raft_index_t index)
{
    raft_index_t last = last_index(r);
    size_t n = 0;
    size_t bytes = 0;
    size_t len;

    while (index + n <= last && n < r->cfg.max_append_entries) {
        len = r->entries[index + n - r->first_index].len;
        if (n > 0 && bytes + len > r->cfg.max_append_bytes) {
            break;
        }
        bytes += len;
        n++;
    }
    return n;
}

/* The follower needs entries before the start of the log: ask the caller
 * for a snapshot, once (Raft 7). */
static void request_snapshot(struct raft *r, struct raft_progress *pr)
{
    struct raft_msg *m = push_msg(r, RAFT_MSG_SNAPSHOT, pr->id);

    if (m == NULL) {
        return;
    }
    m->snapshot.index = r->first_index - 1;
    m->snapshot.term = r->prev_term;
    enter_probe(pr);
    pr->snapshotting = true;
    pr->snapshot_index = m->snapshot.index;
    raft_logf(r, IKD_LOG_INFO,
              "follower=%" PRIu32 " needs index=%" PRIu64
              " before the log start=%" PRIu64 " -> send a snapshot",
              pr->id, pr->next, r->first_index);
}

/* While a snapshot is on its way, heartbeats keep the follower from
 * campaigning.  Their consistency check sits at the start of the log,
 * which the follower matches only once it has the snapshot or already
 * held those entries; then its success ends the wait. */
static void send_heartbeat_at_start(struct raft *r, struct raft_progress *pr)
{
    struct raft_msg *m = push_msg(r, RAFT_MSG_APPEND, pr->id);

    if (m == NULL) {
        return;
    }
    m->append.prev_index = r->first_index - 1;
    m->append.prev_term = r->prev_term;
    m->append.commit = r->commit;
    m->append.read_seq = r->read_seq;
}

/* Queue an AppendEntries from pr->next; with_entries false sends an empty
 * one (heartbeat).  Entry pointers are filled in by raft_get_update().
 * Returns false when nothing could be queued. */
static bool send_append(struct raft *r,
                        struct raft_progress *pr,
                        bool with_entries)
{
    raft_index_t prev = pr->next - 1;
    size_t n = with_entries ? batch_size(r, pr->next) : 0;
    struct raft_msg *m;

    assert(r->role == RAFT_LEADER && !is_self(r, pr));
    assert(pr->next >= r->first_index && !pr->snapshotting);
    m = push_msg(r, RAFT_MSG_APPEND, pr->id);
    if (m == NULL) {
        return false;
    }
    m->append.prev_index = prev;
    m->append.prev_term = term_at(r, prev);
    m->append.commit = r->commit;
    m->append.read_seq = r->read_seq;
    m->append.n_entries = n;
    if (pr->replicate && n > 0) {
        pr->next += n;
        inflight_add(pr, prev + n);
    }
    if (!pr->replicate) {
        pr->probe_sent = true;
    }
    return true;
}

static bool peer_wants_send(const struct raft *r,
                            const struct raft_progress *pr)
{
    if (pr->need_send) {
        return true;
    }
    if (pr->snapshotting) {
        return false;
    }
    if (pr->next < r->first_index) {
        return pr->replicate || !pr->probe_sent;
    }
    if (pr->next > last_index(r)) {
        return false;
    }
    return pr->replicate ? !inflight_full(pr) : !pr->probe_sent;
}

/* Send what each follower is due.  Run when an update is taken, so that
 * proposals made since the previous update share one message. */
static void flush_peer(struct raft *r, struct raft_progress *pr)
{
    bool sent = false;

    if (pr->next < r->first_index || pr->snapshotting) {
        if (!pr->snapshotting && (pr->replicate || !pr->probe_sent)) {
            request_snapshot(r, pr);
        }
        if (pr->need_send) {
            send_heartbeat_at_start(r, pr);
        }
        pr->need_send = false;
        return;
    }
    if (pr->replicate) {
        while (pr->next <= last_index(r) && !inflight_full(pr)) {
            if (!send_append(r, pr, true)) {
                break;
            }
            sent = true;
        }
    } else if (!pr->probe_sent && pr->next <= last_index(r)) {
        sent = send_append(r, pr, true);
    }
    if (pr->need_send && !sent) {
        (void)send_append(r, pr, false);
    }
    pr->need_send = false;
}

static void flush(struct raft *r)
{
    size_t i;

    for (i = 0; i < r->conf.n; i++) {
        if (i != r->self_slot) {
            flush_peer(r, &r->progress[i]);
        }
    }
}

static void broadcast_soon(struct raft *r)
{
    size_t i;

    for (i = 0; i < r->conf.n; i++) {
        r->progress[i].need_send = i != r->self_slot;
    }
}

/* ---- Leader: reads ---------------------------------------------------- */

static int push_ready(struct raft *r, uint64_t ctx, raft_index_t index)
{
    if (r->ready_taken) {
        r->n_ready = 0;
        r->ready_taken = false;
    }
    if (grow_array((void **)&r->ready, &r->cap_ready, r->n_ready + 1,
                   sizeof(*r->ready)) != 0) {
        return -ENOMEM;
    }
    r->ready[r->n_ready].ctx = ctx;
    r->ready[r->n_ready].index = index;
    r->n_ready++;
    return 0;
}

static void start_read_round(struct raft *r);
static void maybe_send_timeout_now(struct raft *r);

/* A round completes when a majority, self included, echoed its sequence
 * number in this term: the leader still led after the reads arrived. */
static void check_read_round(struct raft *r)
{
    size_t i;
    size_t n = 0;
    size_t kept = 0;

    if (r->round_seq == 0) {
        return;
    }
    for (i = 0; i < r->conf.n; i++) {
        if (slot_votes(r, i) &&
            (i == r->self_slot || r->progress[i].read_acked >= r->round_seq)) {
            n++;
        }
    }
    if (n < quorum(r)) {
        return;
    }
    for (i = 0; i < r->n_pending; i++) {
        struct raft_pending_read *p = &r->pending[i];

        if (p->seq == r->round_seq) {
            assert(p->index <= r->commit);
            (void)push_ready(r, p->ctx, p->index);
        } else {
            r->pending[kept++] = *p;
        }
    }
    r->n_pending = kept;
    r->round_seq = 0;
    start_read_round(r);
}

/* Raft 6.4: the read index is the commit index once the leader committed
 * an entry of its own term; before that the commit index may be stale. */
static void start_read_round(struct raft *r)
{
    size_t i;
    bool queued = false;

    if (r->role != RAFT_LEADER || r->round_seq != 0 ||
        term_at(r, r->commit) != r->term) {
        return;
    }
    for (i = 0; i < r->n_pending; i++) {
        if (r->pending[i].seq == 0) {
            queued = true;
        }
    }
    if (!queued) {
        return;
    }
    r->round_seq = ++r->read_seq;
    for (i = 0; i < r->n_pending; i++) {
        if (r->pending[i].seq == 0) {
            r->pending[i].seq = r->round_seq;
            r->pending[i].index = r->commit;
        }
    }
    broadcast_soon(r);
    check_read_round(r);
}

/* ---- Leader: transfer ------------------------------------------------- */

/* Raft 3.10: once the target's log matches the leader's, tell it to
 * campaign; proposals are refused meanwhile, so the log stops growing. */
static void maybe_send_timeout_now(struct raft *r)
{
    struct raft_progress *pr = progress_of(r, r->transfer_target);
    struct raft_msg *m;

    assert(r->role == RAFT_LEADER && pr != NULL && !is_self(r, pr));
    if (r->timeout_now_sent) {
        return;
    }
    if (pr->match != last_index(r)) {
        pr->need_send = true;
        return;
    }
    m = push_msg(r, RAFT_MSG_TIMEOUT_NOW, pr->id);
    if (m != NULL) {
        r->timeout_now_sent = true;
        raft_logf(r, IKD_LOG_INFO,
                  "transfer target=%" PRIu32 " caught up at index=%" PRIu64
                  " -> send timeout-now",
                  pr->id, pr->match);
    }
}

/* The follower whose log matches the most; the lowest slot wins ties. */
static raft_id_t best_transfer_target(const struct raft *r)
{
    raft_id_t best = 0;
    raft_index_t best_match = 0;
    size_t i;

    for (i = 0; i < r->conf.n; i++) {
        const struct raft_progress *pr = &r->progress[i];

        if (i != r->self_slot && slot_votes(r, i) &&
            (best == 0 || pr->match > best_match)) {
            best = pr->id;
            best_match = pr->match;
        }
    }
    return best;
}

/* ---- Leader: commitment ----------------------------------------------- */

static void maybe_leave(struct raft *r);
static void maybe_promote(struct raft *r);

static int cmp_index_desc(const void *a, const void *b)
{
    raft_index_t x = *(const raft_index_t *)a;
    raft_index_t y = *(const raft_index_t *)b;

    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Raft 5.4.2: commit the largest index a majority stores, but only if its
 * entry is of the current term; counting replicas of an older term's entry
 * is unsafe (Figure 8).  The leader counts its own log only as far as it
 * is durable (Raft 10.2.1). */
static void maybe_advance_commit(struct raft *r)
{
    raft_index_t match[IKD_MAX_NODES];
    raft_index_t n;
    size_t n_match = 0;
    size_t i;

    assert(r->role == RAFT_LEADER);
    /* Raft 4.2.2: a leader that the latest configuration removed still
     * replicates, but does not count itself. */
    for (i = 0; i < r->conf.n; i++) {
        if (slot_votes(r, i)) {
            match[n_match++] =
                i == r->self_slot ? r->persisted : r->progress[i].match;
        }
    }
    if (n_match == 0) {
        return;
    }
    qsort(match, n_match, sizeof(match[0]), cmp_index_desc);
    n = match[quorum(r) - 1];
    if (n <= r->commit || term_at(r, n) != r->term) {
        return;
    }
    set_commit(r, n);
    maybe_leave(r);
    if (r->role != RAFT_LEADER) {
        return;
    }
    /* Followers learn the new commit at once: they apply and serve reads
     * without waiting for the next heartbeat. */
    broadcast_soon(r);
    start_read_round(r);
}

static void on_append_success(struct raft *r,
                              struct raft_progress *pr,
                              raft_index_t index)
{
    if (index > last_index(r)) {
        raft_logf(r, IKD_LOG_WARN,
                  "append reply from=%" PRIu32 " index=%" PRIu64
                  " beyond the log -> ignore",
                  pr->id, index);
        return;
    }
    inflight_free_to(pr, index);
    if (pr->snapshotting) {
        raft_logf(r, IKD_LOG_INFO,
                  "follower=%" PRIu32 " matches index=%" PRIu64
                  " -> snapshot done, replicate",
                  pr->id, index);
        pr->snapshotting = false;
        enter_probe(pr);
    }
    if (index > pr->match) {
        pr->match = index;
    }
    if (pr->next <= index) {
        pr->next = index + 1;
    }
    if (!pr->replicate) {
        pr->replicate = true;
        pr->next = pr->match + 1;
    }
    maybe_advance_commit(r);
    if (r->role == RAFT_LEADER && r->transfer_target == pr->id) {
        maybe_send_timeout_now(r);
    }
    maybe_promote(r);
}

/* The largest index <= index whose term is <= term (Raft 5.3, backing up
 * a whole term per round trip instead of one entry). */
static raft_index_t find_conflict_hint(const struct raft *r,
                                       raft_index_t index,
                                       raft_term_t term,
                                       raft_index_t floor)
{
    if (index > last_index(r)) {
        index = last_index(r);
    }
    while (index > floor && index >= r->first_index &&
           term_at(r, index) > term) {
        index--;
    }
    return index;
}

static void on_append_reject(struct raft *r,
                             struct raft_progress *pr,
                             const struct raft_msg *m)
{
    raft_index_t rejected = m->append_resp.index;
    raft_index_t next;

    /* While a snapshot is on its way, rejected heartbeats are expected;
     * but a follower whose log reaches the snapshot's index has it (its
     * success reply may have been lost, and the log start moved on since),
     * so probe from there. */
    if (pr->snapshotting) {
        if (m->append_resp.hint_index < pr->snapshot_index) {
            return;
        }
        raft_logf(r, IKD_LOG_INFO,
                  "follower=%" PRIu32 " holds index=%" PRIu64
                  " -> snapshot done, probe",
                  pr->id, m->append_resp.hint_index);
        pr->snapshotting = false;
        pr->next = m->append_resp.hint_index + 1;
        enter_probe(pr);
        return;
    }
    /* Replies to messages sent before the last back-up are stale. */
    if (rejected <= pr->match || (!pr->replicate && rejected != pr->next - 1) ||
        rejected >= pr->next) {
        return;
    }
    next = find_conflict_hint(r, m->append_resp.hint_index,
                              m->append_resp.hint_term, pr->match) +
           1;
    if (next > rejected) {
        next = rejected;
    }
    if (next <= pr->match) {
        next = pr->match + 1;
    }
    raft_logf(r, IKD_LOG_DEBUG,
              "append rejected by=%" PRIu32 " at=%" PRIu64
              " -> probe from=%" PRIu64,
              pr->id, rejected, next);
    pr->next = next;
    enter_probe(pr);
}

static void handle_append_resp(struct raft *r, const struct raft_msg *m)
{
    struct raft_progress *pr = progress_of(r, m->from);

    if (r->role != RAFT_LEADER || pr == NULL) {
        return;
    }
    /* Any reply of this term shows the follower accepts this leader. */
    pr->active = true;
    if (m->append_resp.read_seq > pr->read_acked &&
        m->append_resp.read_seq <= r->read_seq) {
        pr->read_acked = m->append_resp.read_seq;
    }
    if (m->append_resp.success) {
        on_append_success(r, pr, m->append_resp.index);
    } else {
        on_append_reject(r, pr, m);
    }
    check_read_round(r);
}

/* ---- Leader: membership changes (Raft 4) ------------------------------- */

static int append_config(struct raft *r, const struct raft_membership *m)
{
    uint8_t buf[RAFT_MEMBERSHIP_MAX_BYTES];
    size_t len;
    int rv;

    assert(r->role == RAFT_LEADER && !conf_changing(r));
    rv = raft_membership_encode(m, buf, sizeof(buf), &len);
    if (rv != 0) {
        return rv;
    }
    rv = log_append(r, r->term, RAFT_ENTRY_CONFIG, buf, len);
    if (rv != 0) {
        return rv;
    }
    r->uncommitted_bytes += len;
    return 0;
}

/* Raft 4.2.1: a new server gets the log without a vote, and becomes a
 * voter only once it holds every committed entry and is at most a message
 * behind the leader's log; a voter that still had to
 * fetch the whole log would leave the cluster unable to commit meanwhile.
 * The entry that made it a learner must be committed first (one change at
 * a time). */
static void maybe_promote(struct raft *r)
{
    struct raft_membership next;
    struct raft_progress *pr;
    raft_index_t behind;
    size_t i;

    if (r->role != RAFT_LEADER || r->promote_id == 0 ||
        r->conf_index > r->commit || r->transfer_target != 0) {
        return;
    }
    pr = progress_of(r, r->promote_id);
    assert(pr != NULL); /* set_membership() clears promote_id */
    behind = last_index(r) - pr->match;
    if (pr->snapshotting || pr->match < r->commit ||
        behind > r->cfg.max_append_entries) {
        return;
    }
    next = r->conf;
    for (i = 0; i < next.n; i++) {
        if (next.servers[i].id == r->promote_id) {
            next.servers[i].voter = true;
        }
    }
    raft_logf(r, IKD_LOG_INFO,
              "learner=%" PRIu32 " caught up to index=%" PRIu64 " of %" PRIu64
              " -> make it a voter",
              pr->id, pr->match, last_index(r));
    r->promote_id = 0;
    if (append_config(r, &next) != 0) {
        r->promote_id = pr->id; /* try again at the next reply */
    }
}

/* Raft 4.2.2: once a configuration without this leader is committed it
 * no longer leads: it hands over to the most up-to-date voter, or steps
 * down when there is none or the hand-over times out. */
static void maybe_leave(struct raft *r)
{
    raft_id_t target;

    if (r->role != RAFT_LEADER || self_votes(r) || r->conf_index > r->commit ||
        r->leaving) {
        return;
    }
    r->leaving = true;
    target = best_transfer_target(r);
    if (target == 0) {
        become_follower(r, r->term, 0, "removed, no voter to hand over to");
        return;
    }
    raft_logf(r, IKD_LOG_INFO,
              "removed by the configuration at index=%" PRIu64
              " -> hand leadership to=%" PRIu32,
              r->conf_index, target);
    r->transfer_target = target;
    r->transfer_elapsed = 0;
    r->timeout_now_sent = false;
    maybe_send_timeout_now(r);
}

static int change_add(struct raft *r, raft_id_t id, const char *addr)
{
    const struct raft_server *sv = raft_membership_find(&r->conf, id);
    struct raft_membership next;
    struct raft_server *added;
    int rv;

    if (addr == NULL || addr[0] == 0 || strlen(addr) >= IKD_MAX_ADDR_BYTES ||
        (sv != NULL && strcmp(sv->addr, addr) != 0)) {
        return -EINVAL;
    }
    /* Two servers at one address would be one process under two ids. */
    for (size_t i = 0; i < r->conf.n; i++) {
        if (r->conf.servers[i].id != id &&
            strcmp(r->conf.servers[i].addr, addr) == 0) {
            return -EINVAL;
        }
    }
    if (sv != NULL && sv->voter) {
        return r->conf_index <= r->commit ? 1 : 0;
    }
    if (sv != NULL) {
        /* A learner: promote it, unless another server is in the way. */
        if (r->promote_id != 0 && r->promote_id != id) {
            return IKD_ECHANGING;
        }
        r->promote_id = id;
        maybe_promote(r);
        return 0;
    }
    if (conf_changing(r)) {
        return IKD_ECHANGING;
    }
    if (r->conf.n == IKD_MAX_NODES) {
        return IKD_ELIMIT;
    }
    next = r->conf;
    added = &next.servers[next.n++];
    memset(added, 0, sizeof(*added));
    added->id = id;
    memcpy(added->addr, addr, strlen(addr) + 1);
    rv = append_config(r, &next);
    if (rv == 0) {
        r->promote_id = id;
    }
    return rv;
}

static int change_remove(struct raft *r, raft_id_t id)
{
    const struct raft_server *sv = raft_membership_find(&r->conf, id);
    struct raft_membership next;
    size_t i;

    if (sv == NULL) {
        return r->conf_index <= r->commit ? 1 : 0;
    }
    /* Removing the learner that waits for promotion ends that wait. */
    if (r->conf_index > r->commit ||
        (r->promote_id != 0 && r->promote_id != id)) {
        return IKD_ECHANGING;
    }
    if (sv->voter && count_voters(r) == 1) {
        return -EINVAL;
    }
    next.n = 0;
    for (i = 0; i < r->conf.n; i++) {
        if (r->conf.servers[i].id != id) {
            next.servers[next.n++] = r->conf.servers[i];
        }
    }
    r->promote_id = 0;
    return append_config(r, &next);
}

int raft_change(struct raft *r,
                enum raft_change_type type,
                raft_id_t id,
                const char *addr)
{
    int rv;

    if (r->role != RAFT_LEADER) {
        return IKD_ENOTLEADER;
    }
    if (id == 0 || (type != RAFT_CHANGE_ADD && type != RAFT_CHANGE_REMOVE)) {
        return -EINVAL;
    }
    if (r->transfer_target != 0 || r->leaving) {
        return IKD_EBUSY;
    }
    rv = type == RAFT_CHANGE_ADD ? change_add(r, id, addr)
                                 : change_remove(r, id);
    raft_logf(r, IKD_LOG_INFO,
              "membership change %s id=%" PRIu32 " asked -> %s",
              type == RAFT_CHANGE_ADD ? "add" : "remove", id,
              rv == 1 ? "already so" : ikd_strerror(rv));
    return rv;
}

const struct raft_membership *raft_membership(const struct raft *r,
                                              raft_index_t *index)
{
    if (index != NULL) {
        *index = r->conf_index;
    }
    return &r->conf;
}

raft_id_t raft_catching_up(const struct raft *r)
{
    return r->role == RAFT_LEADER ? r->promote_id : 0;
}

/* ---- Follower: AppendEntries ------------------------------------------ */

/* Every configuration entry must decode: the log's configuration comes
 * from them. */
static bool entry_is_valid(const struct raft_entry *e)
{
    struct raft_membership m;

    return e->type != RAFT_ENTRY_CONFIG ||
           raft_membership_decode(e->data, e->len, &m) == 0;
}

/* Incoming entries must form a valid log suffix: terms never go down and
 * none is newer than the message. */
static bool append_is_valid(const struct raft_msg *m)
{
    raft_term_t prev = m->append.prev_term;
    size_t i;

    if (m->append.n_entries > 0 && m->append.entries == NULL) {
        return false;
    }
    for (i = 0; i < m->append.n_entries; i++) {
        const struct raft_entry *e = &m->append.entries[i];

        if (e->term < prev || e->term > m->term ||
            (e->len > 0 && e->data == NULL) || !entry_is_valid(e)) {
            return false;
        }
        prev = e->term;
    }
    return true;
}

static void reply_reject(struct raft *r,
                         const struct raft_msg *m,
                         struct raft_msg *resp)
{
    raft_index_t prev = m->append.prev_index;
    raft_index_t hint;

    resp->append_resp.success = false;
    resp->append_resp.index = prev;
    if (prev > last_index(r)) {
        hint = last_index(r);
    } else {
        /* Entries up to commit match every leader's, so the search stops
         * there. */
        hint = find_conflict_hint(r, prev, m->append.prev_term, r->commit);
    }
    resp->append_resp.hint_index = hint;
    resp->append_resp.hint_term = term_at(r, hint);
}

/* Raft 5.3: keep matching entries, replace from the first conflict on.  A
 * stale or reordered message whose entries all match changes nothing. */
static int append_entries(struct raft *r,
                          raft_index_t prev,
                          const struct raft_entry *entries,
                          size_t n)
{
    raft_index_t index;
    size_t i;
    int rv;

    for (i = 0; i < n; i++) {
        index = prev + 1 + i;
        if (index <= last_index(r)) {
            if (term_at(r, index) == entries[i].term) {
                continue;
            }
            log_truncate(r, index);
        }
        if (entries[i].term < last_term(r)) {
            return IKD_EMALFORMED; /* would make terms go down */
        }
        rv = log_append(r, entries[i].term, entries[i].type, entries[i].data,
                        entries[i].len);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* Match and store the message's entries; on success *verified is the last
 * index known to equal the leader's log.  Returns 1 when prev does not
 * match. */
static int accept_entries(struct raft *r,
                          const struct raft_msg *m,
                          raft_index_t *verified)
{
    raft_index_t prev = m->append.prev_index;
    const struct raft_entry *entries = m->append.entries;
    size_t n = m->append.n_entries;
    size_t skip;

    /* Committed entries equal the leader's (Raft 5.4.1): skip them, and
     * treat the commit index as a matching prev. */
    if (prev < r->commit) {
        skip = r->commit - prev < n ? (size_t)(r->commit - prev) : n;
        prev += skip;
        entries += skip;
        n -= skip;
    } else if (prev > last_index(r) ||
               (prev > r->commit && term_at(r, prev) != m->append.prev_term)) {
        return 1;
    }
    *verified = prev + n;
    return append_entries(r, prev, entries, n);
}

static int handle_append(struct raft *r, const struct raft_msg *m)
{
    struct raft_msg *resp;
    raft_index_t verified = 0;
    int rv;

    if (r->role == RAFT_LEADER) {
        raft_logf(r, IKD_LOG_ERROR,
                  "append from=%" PRIu32 " in own term=%" PRIu64 " -> ignore",
                  m->from, r->term);
        return IKD_EMALFORMED;
    }
    if (r->role == RAFT_CANDIDATE) {
        become_follower(r, m->term, m->from, "append from leader");
    }
    set_leader(r, m->from);
    reset_election_timer(r);
    r->prevoting = false;

    rv = accept_entries(r, m, &verified);
    if (rv < 0) {
        return rv;
    }
    resp = push_msg(r, RAFT_MSG_APPEND_RESP, m->from);
    if (resp == NULL) {
        return -ENOMEM;
    }
    resp->append_resp.read_seq = m->append.read_seq;
    if (rv == 1) {
        reply_reject(r, m, resp);
        return 0;
    }
    /* Only what this message verified may be committed here: entries past
     * it could still be replaced. */
    if (m->append.commit > r->commit && verified > r->commit) {
        set_commit(r,
                   m->append.commit < verified ? m->append.commit : verified);
    }
    resp->append_resp.success = true;
    resp->append_resp.index = verified;
    return 0;
}

/* ---- Follower: snapshots ---------------------------------------------- */

/* Take the state of a snapshot whose last entry is (index, term) (Raft 7):
 * a log entry that matches it keeps the entries after it, which may still
 * be right; any other log is discarded, since it cannot match. */
static void restore_snapshot(struct raft *r,
                             raft_index_t index,
                             raft_term_t term)
{
    bool keep = index <= last_index(r) && term_at(r, index) == term;
    size_t drop = keep ? (size_t)(index + 1 - r->first_index) : r->n_entries;
    size_t i;

    assert(index > r->commit);
    raft_logf(r, IKD_LOG_INFO,
              "snapshot index=%" PRIu64 " term=%" PRIu64
              " above commit=%" PRIu64 " -> install it, %s the log after it",
              index, term, r->commit, keep ? "keep" : "drop");
    for (i = 0; i < drop; i++) {
        drop_entry(r, &r->entries[i]);
    }
    r->n_entries -= drop;
    if (r->n_entries > 0) {
        memmove(r->entries, r->entries + drop,
                r->n_entries * sizeof(*r->entries));
    }
    r->first_index = index + 1;
    r->prev_term = term;
    r->commit = index;
    r->applied = index;
    r->persisted = index;
    /* Everything after the snapshot is rewritten behind it, so that the
     * durable log and this one agree whatever was pending. */
    r->dirty_from = index + 1;
    r->snapshot_index = index;
    r->snapshot_term = term;
}

static int handle_snapshot(struct raft *r, const struct raft_msg *m)
{
    struct raft_msg *resp;

    if (r->role == RAFT_LEADER) {
        return IKD_EMALFORMED; /* two leaders in one term */
    }
    if (r->role == RAFT_CANDIDATE) {
        become_follower(r, m->term, m->from, "snapshot from leader");
    }
    set_leader(r, m->from);
    reset_election_timer(r);
    r->prevoting = false;

    resp = push_msg(r, RAFT_MSG_APPEND_RESP, m->from);
    if (resp == NULL) {
        return -ENOMEM;
    }
    resp->append_resp.success = true;
    /* A snapshot that is not ahead of commit brings nothing: committed
     * entries equal the leader's (Raft 5.4), so report those instead. */
    if (m->snapshot.index <= r->commit) {
        resp->append_resp.index = r->commit;
        return 0;
    }
    restore_snapshot(r, m->snapshot.index, m->snapshot.term);
    /* Raft 7: the snapshot's configuration replaces the compacted ones. */
    if (m->snapshot.membership != NULL) {
        r->base = *m->snapshot.membership;
        r->base_index = m->snapshot.membership_index;
    }
    refresh_membership(r);
    resp->append_resp.index = m->snapshot.index;
    return 0;
}

/* ---- Votes ------------------------------------------------------------ */

/* Raft 5.4.1: vote only for a log at least as up to date as ours, so that
 * every committed entry is in the winner's log. */
static bool log_up_to_date(const struct raft *r, const struct raft_msg *m)
{
    return m->vote.last_term > last_term(r) ||
           (m->vote.last_term == last_term(r) &&
            m->vote.last_index >= last_index(r));
}

/* Raft 4.2.3: a leader, or a follower that heard from its leader within
 * the minimum election timeout, believes the leader is alive and refuses
 * to help replace it. */
static bool in_lease(const struct raft *r)
{
    if (r->role == RAFT_LEADER) {
        return true;
    }
    return r->role == RAFT_FOLLOWER && r->leader != 0 &&
           r->election_elapsed < r->cfg.election_ticks;
}

/* Raft 9.6: grant when a real vote in m->term would be granted on the
 * log, the leader seems gone, and m->term is ahead; nothing is stored. */
static void handle_prevote(struct raft *r, const struct raft_msg *m)
{
    struct raft_msg *resp;
    bool grant = m->term > r->term && !in_lease(r) && log_up_to_date(r, m);

    resp = push_msg(r, RAFT_MSG_PREVOTE_RESP, m->from);
    if (resp == NULL) {
        return;
    }
    resp->term = grant ? m->term : r->term;
    resp->vote_resp.granted = grant;
    raft_logf(r, IKD_LOG_DEBUG,
              "pre-vote request from=%" PRIu32 " term=%" PRIu64 " -> %s",
              m->from, m->term, grant ? "grant" : "refuse");
}

static void handle_prevote_resp(struct raft *r, const struct raft_msg *m)
{
    struct raft_progress *pr = progress_of(r, m->from);

    if (!m->vote_resp.granted) {
        /* A refusal from a newer term: this node is behind. */
        if (m->term > r->term) {
            become_follower(r, m->term, 0, "pre-vote refused in newer term");
        }
        return;
    }
    if (!r->prevoting || r->role == RAFT_LEADER || m->term != r->term + 1 ||
        pr == NULL) {
        return;
    }
    pr->vote_granted = true;
    if (count_votes(r) >= quorum(r)) {
        raft_logf(r, IKD_LOG_INFO,
                  "pre-votes from a majority for term=%" PRIu64 " -> campaign",
                  m->term);
        campaign(r, false);
    }
}

/* Raft 3.10: the leader asks this node to take over at once. */
static void handle_timeout_now(struct raft *r, const struct raft_msg *m)
{
    if (r->role != RAFT_FOLLOWER || !may_campaign(r)) {
        return;
    }
    raft_logf(r, IKD_LOG_INFO,
              "timeout-now from=%" PRIu32 " term=%" PRIu64 " -> campaign",
              m->from, r->term);
    campaign(r, true);
}

static void handle_vote(struct raft *r, const struct raft_msg *m)
{
    struct raft_msg *resp;
    bool up_to_date = log_up_to_date(r, m);
    bool free_vote = r->vote == 0 || r->vote == m->from;

    resp = push_msg(r, RAFT_MSG_VOTE_RESP, m->from);
    if (resp == NULL) {
        return;
    }
    if (!free_vote || !up_to_date || r->role != RAFT_FOLLOWER) {
        raft_logf(r, IKD_LOG_DEBUG,
                  "vote request from=%" PRIu32 " term=%" PRIu64
                  " voted=%" PRIu32 " up_to_date=%d -> reject",
                  m->from, m->term, r->vote, up_to_date);
        return;
    }
    /* Raft 5.2: one vote per term.  The caller makes it durable before
     * sending the reply. */
    assert(r->vote == 0 || r->vote == m->from);
    if (r->vote == 0) {
        r->vote = m->from;
        r->hard_state_changed = true;
        raft_logf(r, IKD_LOG_INFO,
                  "vote request from=%" PRIu32 " term=%" PRIu64
                  " log up to date -> vote granted",
                  m->from, m->term);
    }
    reset_election_timer(r);
    resp->vote_resp.granted = true;
}

static void handle_vote_resp(struct raft *r, const struct raft_msg *m)
{
    struct raft_progress *pr = progress_of(r, m->from);

    if (r->role != RAFT_CANDIDATE || !m->vote_resp.granted || pr == NULL) {
        return;
    }
    pr->vote_granted = true;
    if (count_votes(r) >= quorum(r)) {
        become_leader(r);
    }
}

/* ---- Entry points ----------------------------------------------------- */

static bool config_is_valid(const struct raft_config *cfg)
{
    size_t i;
    size_t j;
    bool has_self = false;

    if (cfg->id == 0 || cfg->election_ticks == 0 || cfg->heartbeat_ticks == 0 ||
        cfg->election_ticks > UINT32_MAX / 2) {
        return false;
    }
    if (cfg->membership != NULL) {
        return membership_is_valid(cfg->membership);
    }
    if (cfg->n_voters == 0 || cfg->n_voters > IKD_MAX_NODES) {
        return false;
    }
    for (i = 0; i < cfg->n_voters; i++) {
        if (cfg->voters[i] == 0) {
            return false;
        }
        for (j = 0; j < i; j++) {
            if (cfg->voters[j] == cfg->voters[i]) {
                return false;
            }
        }
        has_self = has_self || cfg->voters[i] == cfg->id;
    }
    return has_self;
}

struct raft *raft_new(const struct raft_config *cfg)
{
    struct raft *r;
    size_t i;

    if (!config_is_valid(cfg)) {
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return NULL;
    }
    r->cfg = *cfg;
    if (r->cfg.max_append_entries == 0) {
        r->cfg.max_append_entries = IKD_MAX_APPEND_ENTRIES;
    }
    if (r->cfg.max_append_bytes == 0) {
        r->cfg.max_append_bytes = IKD_MAX_APPEND_BYTES;
    }
    if (r->cfg.max_uncommitted_entries == 0) {
        r->cfg.max_uncommitted_entries = IKD_MAX_UNCOMMITTED_ENTRIES;
    }
    if (r->cfg.max_uncommitted_bytes == 0) {
        r->cfg.max_uncommitted_bytes = IKD_MAX_UNCOMMITTED_BYTES;
    }
    /* Mixing in the id keeps nodes given the same seed apart. */
    r->rng = cfg->seed ^ ((uint64_t)cfg->id * UINT64_C(0x9e3779b97f4a7c15));
    r->first_index = 1;
    r->role = RAFT_FOLLOWER;
    r->reported_role = RAFT_FOLLOWER;
    if (cfg->membership != NULL) {
        r->base = *cfg->membership;
        r->base_index = cfg->membership_index;
    } else {
        r->base.n = cfg->n_voters;
        for (i = 0; i < cfg->n_voters; i++) {
            r->base.servers[i].id = cfg->voters[i];
            r->base.servers[i].voter = true;
        }
    }
    r->cfg.membership = NULL; /* not kept: it belongs to the caller */
    set_membership(r, &r->base, r->base_index);
    r->conf_changed = false;
    reset_election_timer(r);
    return r;
}

static void free_entries(struct raft *r)
{
    size_t i;

    for (i = 0; i < r->n_entries; i++) {
        drop_entry(r, &r->entries[i]);
    }
    r->n_entries = 0;
}

void raft_free(struct raft *r)
{
    if (r == NULL) {
        return;
    }
    free_entries(r);
    free(r->entries);
    free(r->pending);
    free(r->ready);
    free(r->out);
    free(r);
}

static int load_check(raft_term_t term,
                      raft_index_t applied,
                      raft_index_t first_index,
                      raft_term_t prev_term,
                      const struct raft_entry *entries,
                      size_t n_entries)
{
    raft_term_t prev = prev_term;
    size_t i;

    if (first_index == 0 || applied + 1 < first_index ||
        applied > first_index + n_entries - 1 || prev_term > term ||
        (first_index == 1) != (prev_term == 0)) {
        return IKD_ECORRUPT;
    }
    for (i = 0; i < n_entries; i++) {
        if (entries[i].term < prev || entries[i].term > term ||
            (entries[i].len > 0 && entries[i].data == NULL) ||
            !entry_is_valid(&entries[i])) {
            return IKD_ECORRUPT;
        }
        prev = entries[i].term;
    }
    return 0;
}

int raft_load(struct raft *r,
              raft_term_t term,
              raft_id_t vote,
              raft_index_t applied,
              raft_index_t first_index,
              raft_term_t prev_term,
              const struct raft_entry *entries,
              size_t n_entries)
{
    size_t i;
    int rv;

    assert(r->n_entries == 0 && r->term == 0);
    rv = load_check(term, applied, first_index, prev_term, entries, n_entries);
    if (rv != 0) {
        return rv;
    }
    r->term = term;
    r->vote = vote;
    r->first_index = first_index;
    r->prev_term = prev_term;
    for (i = 0; i < n_entries; i++) {
        rv = log_append(r, entries[i].term, entries[i].type, entries[i].data,
                        entries[i].len);
        if (rv != 0) {
            free_entries(r);
            return rv;
        }
    }
    /* Loaded entries are durable already. */
    r->dirty_from = 0;
    r->persisted = last_index(r);
    r->commit = applied;
    r->applied = applied;
    refresh_membership(r);
    r->conf_changed = false; /* the caller reads it with raft_membership() */
    r->reported_commit = applied;
    return 0;
}

/* Raft 6.2: a leader that has not heard from a majority for an election
 * timeout steps down, so that clients learn there is no usable leader. */
static void check_quorum(struct raft *r)
{
    size_t i;
    size_t active = 1;

    for (i = 0; i < r->conf.n; i++) {
        if (i != r->self_slot) {
            active += slot_votes(r, i) && r->progress[i].active ? 1 : 0;
            r->progress[i].active = false;
        }
    }
    active -= self_votes(r) ? 0 : 1;
    if (active < quorum(r)) {
        become_follower(r, r->term, 0, "no reply from a majority");
    }
}

static void tick_leader(struct raft *r)
{
    size_t i;

    if (++r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        broadcast_soon(r);
        for (i = 0; i < r->conf.n; i++) {
            r->progress[i].probe_sent = false;
        }
    }
    if (r->transfer_target != 0 &&
        ++r->transfer_elapsed >= r->cfg.election_ticks) {
        stop_transfer(r, "timed out");
        if (r->leaving) {
            become_follower(r, r->term, 0, "removed, hand-over timed out");
            return;
        }
    }
    maybe_promote(r);
    if (++r->quorum_elapsed >= r->cfg.election_ticks) {
        r->quorum_elapsed = 0;
        check_quorum(r);
    }
}

void raft_tick(struct raft *r)
{
    if (r->role == RAFT_LEADER) {
        tick_leader(r);
        return;
    }
    if (++r->election_elapsed >= r->election_timeout && !may_campaign(r)) {
        /* Raft 4.2.1, 4.2.3: learners and removed servers do not
         * campaign; they only stop believing in a leader they no longer
         * hear. */
        set_leader(r, 0);
        reset_election_timer(r);
        return;
    }
    if (r->election_elapsed >= r->election_timeout) {
        if (r->cfg.disable_prevote) {
            campaign(r, false);
        } else {
            pre_campaign(r);
        }
    }
}

/* Raft 5.1: a higher term in any message makes this node a follower of
 * that term; a lower term marks the message stale. */
static bool step_term(struct raft *r, const struct raft_msg *m)
{
    raft_id_t leader =
        m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT ? m->from
                                                                   : 0;

    if (m->term > r->term) {
        raft_logf(r, IKD_LOG_INFO,
                  "message from=%" PRIu32 " with term=%" PRIu64
                  " above term=%" PRIu64 " -> follow it",
                  m->from, m->term, r->term);
        become_follower(r, m->term, leader, "newer term");
        return true;
    }
    if (m->term == r->term) {
        return true;
    }
    /* Tell a stale leader or candidate about the newer term; the reply's
     * success and granted stay false. */
    if (m->type == RAFT_MSG_APPEND) {
        (void)push_msg(r, RAFT_MSG_APPEND_RESP, m->from);
    } else if (m->type == RAFT_MSG_VOTE) {
        (void)push_msg(r, RAFT_MSG_VOTE_RESP, m->from);
    }
    return false;
}

/* Checked before anything else, so that a bad message cannot even move
 * the term. */
static bool msg_is_valid(struct raft *r, const struct raft_msg *m)
{
    if (m->to != r->cfg.id || m->from == r->cfg.id || m->from == 0) {
        return false;
    }
    /* Raft 4.1: requests are handled whatever the configuration says: a
     * leader may be unknown here (this server is being added and has no
     * configuration yet, or the leader removed itself and hands over), and
     * a candidate may be in a configuration this server has not seen.
     * Removed servers are kept out by pre-vote and by ignoring votes while
     * a leader is heard (Raft 4.2.3); replies from servers outside the
     * configuration are ignored by their handlers. */
    switch (m->type) {
        case RAFT_MSG_VOTE:
        case RAFT_MSG_VOTE_RESP:
        case RAFT_MSG_APPEND_RESP:
        case RAFT_MSG_PREVOTE:
        case RAFT_MSG_PREVOTE_RESP:
        case RAFT_MSG_TIMEOUT_NOW:
            return true;
        case RAFT_MSG_APPEND:
            return append_is_valid(m);
        case RAFT_MSG_SNAPSHOT:
            return m->snapshot.index > 0 && m->snapshot.term > 0 &&
                   m->snapshot.term <= m->term;
    }
    return false;
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
    if (!msg_is_valid(r, m)) {
        return IKD_EMALFORMED;
    }
    /* Pre-votes never move the term (Raft 9.6). */
    if (m->type == RAFT_MSG_PREVOTE) {
        handle_prevote(r, m);
        return 0;
    }
    if (m->type == RAFT_MSG_PREVOTE_RESP) {
        handle_prevote_resp(r, m);
        return 0;
    }
    /* Raft 4.2.3: a vote request in a newer term does not even raise the
     * term of a node that still hears from its leader. */
    if (m->type == RAFT_MSG_VOTE && m->term > r->term && !m->vote.transfer &&
        in_lease(r)) {
        raft_logf(r, IKD_LOG_DEBUG,
                  "vote request from=%" PRIu32 " term=%" PRIu64
                  " while the leader is alive -> ignore",
                  m->from, m->term);
        return 0;
    }
    if (!step_term(r, m)) {
        return 0;
    }
    switch (m->type) {
        case RAFT_MSG_PREVOTE:
        case RAFT_MSG_PREVOTE_RESP:
            return 0; /* handled above */
        case RAFT_MSG_TIMEOUT_NOW:
            handle_timeout_now(r, m);
            return 0;
        case RAFT_MSG_VOTE:
            handle_vote(r, m);
            return 0;
        case RAFT_MSG_VOTE_RESP:
            handle_vote_resp(r, m);
            return 0;
        case RAFT_MSG_APPEND:
            return handle_append(r, m);
        case RAFT_MSG_APPEND_RESP:
            handle_append_resp(r, m);
            return 0;
        case RAFT_MSG_SNAPSHOT:
            return handle_snapshot(r, m);
    }
    return IKD_EMALFORMED;
}

/* Caps the leader's log past commit, so that a leader that cannot commit
 * (followers slow or gone) does not grow its memory without bound. */
static bool uncommitted_full(const struct raft *r, size_t len)
{
    raft_index_t pending = last_index(r) - r->commit;

    if (pending == 0) {
        return false;
    }
    return pending >= r->cfg.max_uncommitted_entries ||
           r->uncommitted_bytes + len > r->cfg.max_uncommitted_bytes;
}

int raft_propose(struct raft *r,
                 uint8_t type,
                 const void *data,
                 size_t len,
                 raft_index_t *index,
                 raft_term_t *term)
{
    int rv;

    if (r->role != RAFT_LEADER) {
        return IKD_ENOTLEADER;
    }
    if (len > IKD_MAX_COMMAND_BYTES) {
        return IKD_ELIMIT;
    }
    if (type != RAFT_ENTRY_NOOP && type != RAFT_ENTRY_COMMAND) {
        return -EINVAL;
    }
    if (r->transfer_target != 0 || uncommitted_full(r, len)) {
        return IKD_EBUSY;
    }
    rv = log_append(r, r->term, type, data, len);
    if (rv != 0) {
        return rv;
    }
    r->uncommitted_bytes += len;
    *index = last_index(r);
    *term = r->term;
    return 0;
}

int raft_transfer(struct raft *r, raft_id_t target)
{
    if (r->role != RAFT_LEADER) {
        return IKD_ENOTLEADER;
    }
    if (target == r->cfg.id) {
        return 0;
    }
    if (target == 0) {
        target = best_transfer_target(r);
    }
    if (target == 0 || progress_of(r, target) == NULL ||
        !raft_membership_find(&r->conf, target)->voter) {
        return -EINVAL;
    }
    r->transfer_target = target;
    r->transfer_elapsed = 0;
    r->timeout_now_sent = false;
    raft_logf(r, IKD_LOG_INFO,
              "leadership transfer asked to=%" PRIu32 " term=%" PRIu64
              " -> hold proposals, catch it up",
              target, r->term);
    maybe_send_timeout_now(r);
    return 0;
}

raft_id_t raft_transfer_target(const struct raft *r)
{
    return r->transfer_target;
}

int raft_read_index(struct raft *r, uint64_t ctx)
{
    struct raft_pending_read *p;

    if (r->role != RAFT_LEADER) {
        return IKD_ENOTLEADER;
    }
    if (grow_array((void **)&r->pending, &r->cap_pending, r->n_pending + 1,
                   sizeof(*r->pending)) != 0) {
        return -ENOMEM;
    }
    p = &r->pending[r->n_pending++];
    p->ctx = ctx;
    p->seq = 0;
    p->index = 0;
    start_read_round(r);
    return 0;
}

int raft_read_index_from(struct raft *r,
                         uint64_t ctx,
                         raft_id_t from,
                         raft_term_t from_term)
{
    size_t i;

    if (r->role != RAFT_LEADER) {
        return IKD_ENOTLEADER;
    }
    /* Raft 6.4 with the asking follower as the round: it was in this
     * term when it asked, after the read began, so it had voted in no
     * later term; with this leader, still in this term, that makes a
     * majority that no newer leader could have been elected without.
     * Only where two voters are a majority. */
    if (from_term == r->term && from != r->cfg.id && self_votes(r) &&
        quorum(r) <= 2 && term_at(r, r->commit) == r->term) {
        for (i = 0; i < r->conf.n; i++) {
            if (r->conf.servers[i].id == from && slot_votes(r, i)) {
                return push_ready(r, ctx, r->commit);
            }
        }
    }
    return raft_read_index(r, ctx);
}

bool raft_has_update(const struct raft *r)
{
    size_t i;

    if ((!r->out_taken && r->n_out > 0) || r->hard_state_changed ||
        r->dirty_from != 0 || r->snapshot_index != 0 || r->conf_changed ||
        r->commit != r->reported_commit ||
        (!r->ready_taken && r->n_ready > 0) || r->role != r->reported_role ||
        r->leader != r->reported_leader) {
        return true;
    }
    if (r->role != RAFT_LEADER) {
        return false;
    }
    for (i = 0; i < r->conf.n; i++) {
        if (i != r->self_slot && peer_wants_send(r, &r->progress[i])) {
            return true;
        }
    }
    return false;
}

/* Point the entries of outgoing AppendEntries into the log. */
static void resolve_entries(struct raft *r)
{
    size_t i;

    for (i = 0; i < r->n_out; i++) {
        struct raft_msg *m = &r->out[i];
        raft_index_t first = m->append.prev_index + 1;

        if (m->type != RAFT_MSG_APPEND || m->append.n_entries == 0) {
            continue;
        }
        assert(first >= r->first_index &&
               first + m->append.n_entries - 1 <= last_index(r));
        m->append.entries = &r->entries[first - r->first_index];
    }
}

void raft_get_update(struct raft *r, struct raft_update *u)
{
    if (r->out_taken) {
        r->n_out = 0;
        r->out_taken = false;
    }
    if (r->ready_taken) {
        r->n_ready = 0;
        r->ready_taken = false;
    }
    if (r->role == RAFT_LEADER) {
        flush(r);
    }
    resolve_entries(r);

    memset(u, 0, sizeof(*u));
    u->hard_state_changed = r->hard_state_changed;
    u->term = r->term;
    u->vote = r->vote;
    u->log_dirty_from = r->dirty_from;
    u->msgs = r->out;
    u->n_msgs = r->n_out;
    u->commit = r->commit;
    u->reads = r->ready;
    u->n_reads = r->n_ready;
    u->snapshot_index = r->snapshot_index;
    u->snapshot_term = r->snapshot_term;
    u->membership_changed = r->conf_changed;
    u->soft_state_changed =
        r->role != r->reported_role || r->leader != r->reported_leader;
    u->role = r->role;
    u->leader = r->leader;

    r->out_taken = true;
    r->ready_taken = true;
    r->hard_state_changed = false;
    r->dirty_from = 0;
    r->snapshot_index = 0;
    r->snapshot_term = 0;
    r->conf_changed = false;
    r->reported_commit = r->commit;
    r->reported_role = r->role;
    r->reported_leader = r->leader;
}

void raft_persisted(struct raft *r, raft_index_t index, raft_term_t term)
{
    if (index < r->first_index || index > last_index(r) ||
        term_at(r, index) != term || index <= r->persisted) {
        return;
    }
    r->persisted = index;
    if (r->role == RAFT_LEADER) {
        maybe_advance_commit(r);
    }
}

static void keep_base_at(struct raft *r, raft_index_t index)
{
    struct raft_membership m;
    raft_index_t i;

    for (i = index; i >= r->first_index && i > r->base_index; i--) {
        const struct raft_entry *e = &r->entries[i - r->first_index];

        if (e->type == RAFT_ENTRY_CONFIG &&
            raft_membership_decode(e->data, e->len, &m) == 0) {
            r->base = m;
            r->base_index = i;
            return;
        }
    }
}

int raft_compact(struct raft *r, raft_index_t index)
{
    size_t drop;
    size_t i;

    if (index > r->applied || index > r->persisted || index > last_index(r)) {
        return -EINVAL;
    }
    if (index < r->first_index) {
        return 0;
    }
    /* Raft 7: only applied entries go; their effect lives in the state
     * machine, and the term of the last one stays for the consistency
     * check.  The configuration as of index becomes the base, since its
     * entry may be among those dropped. */
    drop = (size_t)(index + 1 - r->first_index);
    keep_base_at(r, index);
    r->prev_term = term_at(r, index);
    for (i = 0; i < drop; i++) {
        drop_entry(r, &r->entries[i]);
    }
    r->n_entries -= drop;
    if (r->n_entries > 0) {
        memmove(r->entries, r->entries + drop,
                r->n_entries * sizeof(*r->entries));
    }
    r->first_index = index + 1;
    if (r->dirty_from != 0 && r->dirty_from < r->first_index) {
        r->dirty_from = r->first_index;
    }
    assert(r->commit >= index && r->first_index == index + 1);
    return 0;
}

void raft_snapshot_failed(struct raft *r, raft_id_t id)
{
    struct raft_progress *pr = progress_of(r, id);

    if (r->role != RAFT_LEADER || pr == NULL || is_self(r, pr) ||
        !pr->snapshotting) {
        return;
    }
    raft_logf(r, IKD_LOG_INFO,
              "snapshot to follower=%" PRIu32 " failed -> ask again later", id);
    pr->snapshotting = false;
    enter_probe(pr);
    pr->probe_sent = true; /* until the next heartbeat */
}

bool raft_snapshot_pending(const struct raft *r, raft_id_t id)
{
    size_t i;

    if (r->role != RAFT_LEADER) {
        return false;
    }
    for (i = 0; i < r->conf.n; i++) {
        if (r->progress[i].id == id) {
            return r->progress[i].snapshotting;
        }
    }
    return false;
}

void raft_applied(struct raft *r, raft_index_t index)
{
    assert(index <= r->commit);
    if (index > r->applied) {
        r->applied = index;
    }
}

raft_id_t raft_id(const struct raft *r)
{
    return r->cfg.id;
}

enum raft_role raft_role(const struct raft *r)
{
    return r->role;
}

raft_term_t raft_term(const struct raft *r)
{
    return r->term;
}

raft_id_t raft_leader(const struct raft *r)
{
    return r->leader;
}

raft_index_t raft_commit(const struct raft *r)
{
    return r->commit;
}

raft_index_t raft_applied_index(const struct raft *r)
{
    return r->applied;
}

raft_index_t raft_persisted_index(const struct raft *r)
{
    return r->persisted;
}

raft_index_t raft_first_index(const struct raft *r)
{
    return r->first_index;
}

size_t raft_log_bytes(const struct raft *r)
{
    return r->log_bytes;
}

raft_term_t raft_prev_term(const struct raft *r)
{
    return r->prev_term;
}

raft_index_t raft_last_index(const struct raft *r)
{
    return last_index(r);
}

raft_index_t raft_match_index(const struct raft *r, raft_id_t id)
{
    if (r->role != RAFT_LEADER) {
        return 0;
    }
    for (size_t i = 0; i < r->conf.n; i++) {
        if (r->progress[i].id == id) {
            return r->progress[i].match;
        }
    }
    return 0;
}

const struct raft_entry *raft_entry_at(const struct raft *r, raft_index_t index)
{
    if (index < r->first_index || index > last_index(r)) {
        return NULL;
    }
    return &r->entries[index - r->first_index];
}
