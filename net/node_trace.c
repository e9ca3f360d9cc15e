/* Spans of replicated commands, kept in a ring by log index (see
 * node_trace.h). */

#include "node_trace.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Traced entries in flight at once; a newer one in the same slot ends the
 * older one's spans as abandoned.  At a few hundred entries a second
 * sampled at 10 %, entries live for milliseconds: 64 is ample. */
#define NT_SLOTS 64

_Static_assert(NT_SLOTS == 64, "busy slots are the bits of a uint64_t");

struct nt_entry
{
    raft_index_t index; /* 0: the slot is free */
    uint64_t since_ms;
    bool leader;        /* proposed here, rather than received */
    bool apply_started; /* "raft.apply" was begun (it may have ended) */
    struct ikd_trace_ctx remote; /* a follower's parent: the leader's span */
    struct ikd_span propose;     /* leader only */
    struct ikd_span append;      /* durable here */
    struct ikd_span commit;      /* leader only */
    struct ikd_span apply;
    /* Leader only: replicate[k] is peers[k]'s, begun when peers[k] != 0;
     * the peers in use come first. */
    raft_id_t peers[IKD_MAX_NODES];
    struct ikd_span replicate[IKD_MAX_NODES];
};

struct node_trace
{
    uint64_t busy; /* bit i: ring[i] holds an entry */
    struct nt_entry ring[NT_SLOTS];
};

/* The next busy slot among those whose bits are set in *mask, clearing
 * its bit; NULL when none is left. */
static struct nt_entry *next_busy(struct node_trace *t, uint64_t *mask)
{
    int i;

    if (*mask == 0) {
        return NULL;
    }
    i = __builtin_ctzll(*mask);
    *mask &= *mask - 1;
    return &t->ring[i];
}

static void slot_set(struct node_trace *t, const struct nt_entry *e, bool on)
{
    uint64_t bit = UINT64_C(1) << (e - t->ring);
    t->busy = on ? t->busy | bit : t->busy & ~bit;
}

struct node_trace *node_trace_new(void)
{
    if (!ikd_tracer_enabled()) {
        return NULL;
    }
    return calloc(1, sizeof(struct node_trace));
}

static bool entry_open(const struct nt_entry *e)
{
    bool open = e->propose.recording || e->append.recording ||
                e->commit.recording || e->apply.recording;
    for (size_t k = 0; k < IKD_MAX_NODES && e->peers[k] != 0 && !open; k++) {
        open = e->replicate[k].recording;
    }
    return open;
}

static void end_if_open(struct ikd_span *s, const char *error)
{
    if (s->recording) {
        if (error != NULL) {
            ikd_span_set_error(s, error);
        }
        ikd_span_end(s);
    }
}

/* End every open span of e (with error, when given) and free its slot. */
static void entry_close(struct node_trace *t,
                        struct nt_entry *e,
                        const char *error)
{
    for (size_t k = 0; k < IKD_MAX_NODES && e->peers[k] != 0; k++) {
        end_if_open(&e->replicate[k], error);
    }
    end_if_open(&e->append, error);
    end_if_open(&e->commit, error);
    end_if_open(&e->apply, error);
    end_if_open(&e->propose, error);
    e->index = 0;
    slot_set(t, e, false);
}

/* Free e's slot once it was applied and nothing in it is open.  A
 * follower's entry waits, durable, for the commit that starts its apply
 * span. */
static void entry_maybe_done(struct node_trace *t, struct nt_entry *e)
{
    if (e->index != 0 && e->apply_started && !entry_open(e)) {
        e->index = 0;
        slot_set(t, e, false);
    }
}

/* The slot for index, emptied for a new entry. */
static struct nt_entry *entry_claim(struct node_trace *t,
                                    raft_index_t index,
                                    uint64_t now_ms)
{
    struct nt_entry *e = &t->ring[index % NT_SLOTS];

    if (e->index != 0) {
        entry_close(t, e, "abandoned");
    }
    /* Field by field: the spans are most of an entry, and a span that
     * does not record is never read further. */
    e->leader = false;
    e->apply_started = false;
    memset(&e->remote, 0, sizeof(e->remote));
    e->propose.recording = false;
    e->append.recording = false;
    e->commit.recording = false;
    e->apply.recording = false;
    memset(e->peers, 0, sizeof(e->peers));
    e->index = index;
    e->since_ms = now_ms;
    slot_set(t, e, true);
    return e;
}

void node_trace_free(struct node_trace *t)
{
    if (t == NULL) {
        return;
    }
    uint64_t mask = t->busy;
    for (struct nt_entry *e; (e = next_busy(t, &mask)) != NULL;) {
        entry_close(t, e, "abandoned");
    }
    free(t);
}

void node_trace_proposed(struct node_trace *t,
                         raft_index_t index,
                         const struct ikd_trace_ctx *parent,
                         uint64_t now_ms)
{
    struct nt_entry *e;

    if (t == NULL || !ikd_trace_ctx_valid(parent) || !parent->sampled) {
        return;
    }
    e = entry_claim(t, index, now_ms);
    e->leader = true;
    ikd_span_begin(&e->propose, "raft.propose", IKD_SPAN_INTERNAL, parent);
    ikd_span_set_int(&e->propose, "raft.index", (int64_t)index);
    ikd_span_begin(&e->append, "raft.append", IKD_SPAN_INTERNAL,
                   &e->propose.ctx);
    ikd_span_begin(&e->commit, "raft.commit", IKD_SPAN_INTERNAL,
                   &e->propose.ctx);
}

/* The replicate span of peer in e, begun on first use. */
static struct ikd_span *replicate_span(struct nt_entry *e, raft_id_t peer)
{
    size_t k;

    for (k = 0; k < IKD_MAX_NODES && e->peers[k] != 0; k++) {
        if (e->peers[k] == peer) {
            return &e->replicate[k];
        }
    }
    if (k == IKD_MAX_NODES || !e->propose.recording) {
        return NULL;
    }
    e->peers[k] = peer;
    ikd_span_begin(&e->replicate[k], "raft.replicate", IKD_SPAN_CLIENT,
                   &e->propose.ctx);
    ikd_span_set_int(&e->replicate[k], "raft.index", (int64_t)e->index);
    ikd_span_set_int(&e->replicate[k], "raft.peer", (int64_t)peer);
    return &e->replicate[k];
}

size_t node_trace_outgoing(struct node_trace *t,
                           raft_id_t peer,
                           raft_index_t first,
                           raft_index_t last,
                           struct net_trace_ref *out)
{
    size_t n = 0;

    if (t == NULL || t->busy == 0 || first > last) {
        return 0;
    }
    if (last - first >= NT_SLOTS) {
        first = last - NT_SLOTS + 1;
    }
    for (raft_index_t i = first; i <= last && n < NET_MAX_TRACE_REFS; i++) {
        struct nt_entry *e = &t->ring[i % NT_SLOTS];
        struct ikd_span *s;

        if (e->index != i || !e->leader) {
            continue;
        }
        s = replicate_span(e, peer);
        if (s != NULL && s->recording) {
            out[n].index = i;
            out[n].ctx = s->ctx;
            n++;
        }
    }
    return n;
}

void node_trace_received(struct node_trace *t,
                         const struct net_trace_ref *refs,
                         size_t n,
                         uint64_t now_ms)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct nt_entry *e = &t->ring[refs[i].index % NT_SLOTS];

        if (refs[i].index == 0 || !refs[i].ctx.sampled ||
            (e->index == refs[i].index &&
             (e->leader || memcmp(e->remote.span_id, refs[i].ctx.span_id,
                                  sizeof(e->remote.span_id)) == 0))) {
            continue; /* a resend, or an entry of this node's own */
        }
        e = entry_claim(t, refs[i].index, now_ms);
        e->remote = refs[i].ctx;
        ikd_span_begin(&e->append, "raft.follower_append", IKD_SPAN_SERVER,
                       &e->remote);
        ikd_span_set_int(&e->append, "raft.index", (int64_t)e->index);
    }
}

void node_trace_persisted(struct node_trace *t, raft_index_t index)
{
    if (t == NULL || t->busy == 0) {
        return;
    }
    uint64_t mask = t->busy;
    for (struct nt_entry *e; (e = next_busy(t, &mask)) != NULL;) {
        if (e->index != 0 && e->index <= index) {
            end_if_open(&e->append, NULL);
            entry_maybe_done(t, e);
        }
    }
}

void node_trace_committed(struct node_trace *t, raft_index_t commit)
{
    if (t == NULL || t->busy == 0) {
        return;
    }
    uint64_t mask = t->busy;
    for (struct nt_entry *e; (e = next_busy(t, &mask)) != NULL;) {
        if (e->index == 0 || e->index > commit || e->apply_started) {
            continue;
        }
        end_if_open(&e->commit, NULL);
        e->apply_started = true;
        ikd_span_begin(&e->apply, "raft.apply", IKD_SPAN_INTERNAL,
                       e->leader ? &e->propose.ctx : &e->remote);
        ikd_span_set_int(&e->apply, "raft.index", (int64_t)e->index);
    }
}

void node_trace_applied(struct node_trace *t, raft_index_t index)
{
    if (t == NULL || t->busy == 0) {
        return;
    }
    uint64_t mask = t->busy;
    for (struct nt_entry *e; (e = next_busy(t, &mask)) != NULL;) {
        if (e->index != 0 && e->index <= index && e->apply_started) {
            end_if_open(&e->apply, NULL);
            end_if_open(&e->propose, NULL);
            entry_maybe_done(t, e);
        }
    }
}

void node_trace_matched(struct node_trace *t, const struct raft *r)
{
    if (t == NULL || t->busy == 0) {
        return;
    }
    uint64_t mask = t->busy;
    for (struct nt_entry *e; (e = next_busy(t, &mask)) != NULL;) {
        if (e->index == 0 || !e->leader) {
            continue;
        }
        for (size_t k = 0; k < IKD_MAX_NODES && e->peers[k] != 0; k++) {
            if (e->replicate[k].recording &&
                raft_match_index(r, e->peers[k]) >= e->index) {
                ikd_span_end(&e->replicate[k]);
            }
        }
        entry_maybe_done(t, e);
    }
}

void node_trace_expire(struct node_trace *t,
                       uint64_t now_ms,
                       uint64_t max_age_ms)
{
    if (t == NULL || t->busy == 0) {
        return;
    }
    uint64_t mask = t->busy;
    for (struct nt_entry *e; (e = next_busy(t, &mask)) != NULL;) {
        if (e->index != 0 && now_ms - e->since_ms > max_age_ms) {
            entry_close(t, e, "abandoned");
        }
    }
}
