/* The node: drives the Raft core from one libuv loop.
 *
 * Durable work goes through a pipeline of at most one storage job at a
 * time, run on libuv's thread pool.  While a job runs, what the core asks
 * for accumulates in the pending batch; when the job ends the pending batch
 * becomes the next job, so a burst of proposals costs one transaction and
 * one fsync.  A job persists term and vote, the changed tail of the log,
 * and applies committed entries, all in one transaction (kv/store.h).
 *
 * Messages other than AppendEntries may promise something about durable
 * state (a granted vote, an acknowledged entry), so they leave only after
 * the job holding that state has finished.
 *
 * Requests (proposals and linearizable reads, from the file system or from
 * clients) wait in a list of waiters, each with a deadline. */

#include "node.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../kv/cmd.h"
#include "../kv/store.h"
#include "metrics.h"
#include "trace.h"

#define NODE_MOD "node"

/* Messages held until a job is durable.  Only messages without entries
 * are held (see send_or_hold), so a copy of the struct owns nothing. */
struct msg_list
{
    struct raft_msg *items;
    size_t n;
    size_t cap;
};

/* A unit of durable work; see the file comment. */
struct job
{
    uv_work_t work;
    struct node *node;
    struct kv_batch batch;
    struct raft_entry *log_entries; /* owned copies */
    size_t n_log;
    struct raft_entry *apply_entries; /* owned copies */
    size_t n_apply;
    struct kv_sm_result *results;
    raft_index_t persist_index; /* 0 when the log is not touched */
    raft_term_t persist_term;
    struct msg_list after; /* sent once the job is durable */
    int rv;
    uint64_t write_ns; /* time the transaction took, on the worker */
};

enum waiter_stage {
    W_NEED_LEADER, /* no leader known yet */
    W_FORWARDED,   /* sent to the leader, waiting for its answer */
    W_READ_INDEX,  /* waiting for this leader's read round */
    W_APPLY,       /* waiting for the local state machine to reach index */
};

struct waiter
{
    struct waiter *prev;
    struct waiter *next;
    struct node *node;
    uint64_t start_ns; /* uv_hrtime() when the request came */
    uint64_t id;       /* req_id towards the leader, ctx for raft_read_index */
    bool is_read;
    enum waiter_stage stage;
    raft_index_t index;
    raft_term_t term; /* a proposal's entry term, checked at apply */
    uint64_t deadline_ms;
    /* Without a leader for this long, give up early: the cluster is most
     * likely without a quorum, and a quick EROFS serves better than a long
     * wait. */
    uint64_t leader_deadline_ms;
    uint8_t *cmd; /* a proposal's command, until it is appended */
    size_t cmd_len;
    node_propose_cb propose_cb;
    node_read_cb read_cb;
    void *arg;
};

/* A read round asked for by a follower, answered when the core is done. */
struct remote_read
{
    struct remote_read *next;
    uint64_t ctx;
    uint64_t conn_id;
    uint64_t req_id;
};

/* A client request waiting on a proposal or a read barrier. */
struct client_req
{
    struct node *node;
    uint64_t conn_id;
    uint64_t req_id;
    uint8_t op;
    char *key;
    size_t key_len;
};

/* Counters and histograms behind node_metrics_render(); loop thread. */
struct node_stats
{
    uint64_t elections;      /* times this node became a candidate */
    uint64_t leader_changes; /* times the known leader changed */
    uint64_t proposals_ok;
    uint64_t proposals_failed;
    uint64_t reads_ok;
    uint64_t reads_failed;
    uint64_t storage_writes;
    uint64_t storage_failures;
    uint64_t entries_persisted;
    uint64_t entries_applied;
    struct ikd_hist proposal_latency;
    struct ikd_hist read_latency;
    struct ikd_hist storage_latency;
};

struct node
{
    uv_loop_t *loop;
    struct node_config cfg;
    char *data_dir;
    uint64_t cluster_hash;
    struct raft *raft;
    struct net_transport *transport;
    struct kv_store *store; /* touched only by the running job's thread */
    struct kv_reader *reader;
    uv_timer_t tick_timer;
    unsigned tick_ms;

    struct job *running;
    bool retry_scheduled;
    uv_timer_t retry_timer;

    /* The pending batch. */
    bool pend_hard;
    raft_term_t pend_term;
    raft_id_t pend_vote;
    raft_index_t pend_log_from;
    struct msg_list pend_msgs;
    raft_index_t commit;       /* latest commit the core reported */
    raft_index_t apply_queued; /* last index handed to a job to apply */
    raft_index_t applied;      /* last index applied and durable */

    enum raft_role role;
    raft_id_t leader;

    struct waiter waiters; /* list head */
    uint64_t next_id;
    struct remote_read *remote_reads;

    bool stopping;
    bool transport_closed;
    void (*stop_cb)(void *arg);
    void *stop_arg;
    unsigned open_handles;

    struct node_stats stats;
};

static uint64_t now_ms(const struct node *n)
{
    return uv_now(n->loop);
}

/* ---- held messages ---- */

static int msgs_push(struct msg_list *l, const struct raft_msg *m)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct raft_msg *items = realloc(l->items, cap * sizeof(*items));
        if (items == NULL) {
            return -ENOMEM;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = *m;
    return 0;
}

static void msgs_send(struct node *n, struct msg_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        struct net_msg m = {.kind = NET_RAFT, .raft = l->items[i]};
        net_send_peer(n->transport, m.raft.to, &m);
    }
    free(l->items);
    *l = (struct msg_list){0};
}

static void msgs_drop(struct msg_list *l)
{
    free(l->items);
    *l = (struct msg_list){0};
}

/* ---- waiters ---- */

static void waiter_link(struct node *n, struct waiter *w)
{
    w->next = &n->waiters;
    w->prev = n->waiters.prev;
    n->waiters.prev->next = w;
    n->waiters.prev = w;
}

static void waiter_count(struct waiter *w, int status)
{
    struct node_stats *st = &w->node->stats;
    uint64_t ns = uv_hrtime() - w->start_ns;

    if (w->is_read) {
        ikd_hist_observe(&st->read_latency, ns);
        *(status >= 0 ? &st->reads_ok : &st->reads_failed) += 1;
    } else {
        ikd_hist_observe(&st->proposal_latency, ns);
        *(status >= 0 ? &st->proposals_ok : &st->proposals_failed) += 1;
    }
}

static void waiter_finish(struct waiter *w, int status, uint64_t value)
{
    waiter_count(w, status);
    w->prev->next = w->next;
    w->next->prev = w->prev;
    if (w->is_read) {
        w->read_cb(w->arg, status);
    } else {
        w->propose_cb(w->arg, status, value);
    }
    free(w->cmd);
    free(w);
}

static struct waiter *waiter_find(struct node *n, uint64_t id)
{
    for (struct waiter *w = n->waiters.next; w != &n->waiters; w = w->next) {
        if (w->id == id) {
            return w;
        }
    }
    return NULL;
}

static const struct net_peer *peer_by_id(const struct node *n, raft_id_t id)
{
    for (size_t i = 0; i < n->cfg.n_peers; i++) {
        if (n->cfg.peers[i].id == id) {
            return &n->cfg.peers[i];
        }
    }
    return NULL;
}

static void waiter_advance(struct node *n, struct waiter *w);

/* Move every waiter that can make progress now: called after a leader
 * change and after anything was applied. */
static void waiters_poke(struct node *n)
{
    struct waiter *w = n->waiters.next;
    while (w != &n->waiters) {
        struct waiter *next = w->next;
        waiter_advance(n, w);
        w = next;
    }
}

/* ---- the storage pipeline ---- */

static void process_updates(struct node *n);
static void job_start(struct node *n);

static int copy_entries(struct node *n,
                        raft_index_t from,
                        raft_index_t to,
                        struct raft_entry **out,
                        size_t *n_out)
{
    size_t count = (size_t)(to - from + 1);
    struct raft_entry *e = calloc(count, sizeof(*e));
    if (e == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        const struct raft_entry *src = raft_entry_at(n->raft, from + i);
        assert(src != NULL);
        e[i] = *src;
        e[i].data = NULL;
        if (src->len > 0) {
            e[i].data = malloc(src->len);
            if (e[i].data == NULL) {
                *out = e;
                *n_out = i;
                return -ENOMEM;
            }
            memcpy(e[i].data, src->data, src->len);
        }
    }
    *out = e;
    *n_out = count;
    return 0;
}

static void free_entries(struct raft_entry *e, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(e[i].data);
    }
    free(e);
}

static void job_free(struct job *j)
{
    free_entries(j->log_entries, j->n_log);
    free_entries(j->apply_entries, j->n_apply);
    free(j->results);
    msgs_drop(&j->after);
    free(j);
}

static bool pending_has_work(const struct node *n)
{
    return n->pend_hard || n->pend_log_from != 0 || n->commit > n->apply_queued;
}

static int job_fill_log(struct node *n, struct job *j)
{
    raft_index_t last = raft_last_index(n->raft);
    j->batch.log_from = n->pend_log_from;
    if (n->pend_log_from <= last) {
        int rv =
            copy_entries(n, n->pend_log_from, last, &j->log_entries, &j->n_log);
        if (rv != 0) {
            return rv;
        }
        j->persist_index = last;
        j->persist_term = raft_entry_at(n->raft, last)->term;
    }
    j->batch.entries = j->log_entries;
    j->batch.n_entries = j->n_log;
    return 0;
}

static int job_fill_apply(struct node *n, struct job *j)
{
    raft_index_t from = n->apply_queued + 1;
    int rv = copy_entries(n, from, n->commit, &j->apply_entries, &j->n_apply);
    if (rv != 0) {
        return rv;
    }
    j->results = calloc(j->n_apply, sizeof(*j->results));
    if (j->results == NULL) {
        return -ENOMEM;
    }
    j->batch.apply_from = from;
    j->batch.apply = j->apply_entries;
    j->batch.n_apply = j->n_apply;
    j->batch.results = j->results;
    return 0;
}

/* Turn the pending batch into a job.  On failure the pending batch is left
 * as it was, to be tried again. */
static struct job *job_build(struct node *n)
{
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return NULL;
    }
    j->node = n;
    j->batch.hard_state = n->pend_hard;
    j->batch.term = n->pend_term;
    j->batch.vote = n->pend_vote;
    if (n->pend_log_from != 0 && job_fill_log(n, j) != 0) {
        goto err;
    }
    if (n->commit > n->apply_queued && job_fill_apply(n, j) != 0) {
        goto err;
    }

    n->pend_hard = false;
    n->pend_log_from = 0;
    if (j->n_apply > 0) {
        n->apply_queued = n->commit;
    }
    j->after = n->pend_msgs;
    n->pend_msgs = (struct msg_list){0};
    return j;

err:
    job_free(j);
    return NULL;
}

static void job_work_cb(uv_work_t *work)
{
    struct job *j = work->data;
    uint64_t start = uv_hrtime();
    j->rv = kv_store_write(j->node->store, &j->batch);
    j->write_ns = uv_hrtime() - start;
}

static void job_complete_waiters(struct node *n, struct job *j)
{
    for (struct waiter *w = n->waiters.next; w != &n->waiters;) {
        struct waiter *next = w->next;
        if (!w->is_read && w->stage == W_APPLY && j->n_apply > 0 &&
            w->index >= j->batch.apply_from &&
            w->index < j->batch.apply_from + j->n_apply) {
            size_t i = (size_t)(w->index - j->batch.apply_from);
            if (j->apply_entries[i].term != w->term) {
                waiter_finish(w, IKD_ELOST, 0);
            } else {
                waiter_finish(w, j->results[i].status, j->results[i].value);
            }
        }
        w = next;
    }
}

static void retry_timer_cb(uv_timer_t *t)
{
    struct node *n = t->data;
    n->retry_scheduled = false;
    if (n->running == NULL && !n->stopping) {
        job_start(n);
    }
}

static void job_failed(struct node *n, struct job *j)
{
    /* The transaction rolled back: nothing of the job is durable, and the
     * messages that depend on it must not leave.  Put its work back into
     * the pending batch and try again later: a full disk may get space. */
    IKD_ERROR(NODE_MOD, "storage write failed: %s -> retry in 1 s",
              ikd_strerror(j->rv));
    if (j->batch.hard_state && !n->pend_hard) {
        n->pend_hard = true;
        n->pend_term = j->batch.term;
        n->pend_vote = j->batch.vote;
    }
    if (j->batch.log_from != 0 &&
        (n->pend_log_from == 0 || j->batch.log_from < n->pend_log_from)) {
        n->pend_log_from = j->batch.log_from;
    }
    if (j->n_apply > 0) {
        n->apply_queued = j->batch.apply_from - 1;
    }
    msgs_drop(&j->after);
    job_free(j);
    if (!n->retry_scheduled) {
        n->retry_scheduled = true;
        uv_timer_start(&n->retry_timer, retry_timer_cb, 1000, 0);
    }
}

static void node_maybe_finish_stop(struct node *n);

static void job_after_cb(uv_work_t *work, int status)
{
    struct job *j = work->data;
    struct node *n = j->node;
    assert(n->running == j);
    n->running = NULL;
    if (status != 0 && j->rv == 0) {
        j->rv = status;
    }
    if (n->stopping) {
        job_free(j);
        node_maybe_finish_stop(n);
        return;
    }
    if (j->rv != 0) {
        n->stats.storage_failures++;
        job_failed(n, j);
        return;
    }
    n->stats.storage_writes++;
    n->stats.entries_persisted += j->n_log;
    n->stats.entries_applied += j->n_apply;
    ikd_hist_observe(&n->stats.storage_latency, j->write_ns);

    if (j->persist_index != 0) {
        raft_persisted(n->raft, j->persist_index, j->persist_term);
    }
    if (j->n_apply > 0) {
        n->applied = j->batch.apply_from + j->n_apply - 1;
        raft_applied(n->raft, n->applied);
        job_complete_waiters(n, j);
    }
    msgs_send(n, &j->after);
    job_free(j);
    waiters_poke(n);
    process_updates(n);
    job_start(n);
}

static void job_start(struct node *n)
{
    if (n->running != NULL || n->stopping || n->retry_scheduled) {
        return;
    }
    if (!pending_has_work(n)) {
        /* Nothing to make durable: messages held behind an earlier job can
         * leave now. */
        msgs_send(n, &n->pend_msgs);
        return;
    }
    struct job *j = job_build(n);
    if (j == NULL) {
        IKD_ERROR(NODE_MOD, "out of memory building a storage job");
        return;
    }
    j->work.data = j;
    n->running = j;
    int rv = uv_queue_work(n->loop, &j->work, job_work_cb, job_after_cb);
    assert(rv == 0);
    (void)rv;
}

/* ---- the core's updates ---- */

static void send_or_hold(struct node *n, const struct raft_msg *rm)
{
    if (rm->type == RAFT_MSG_APPEND) {
        /* Depends only on the leader's durable term: see raft.h. */
        struct net_msg m = {.kind = NET_RAFT, .raft = *rm};
        net_send_peer(n->transport, rm->to, &m);
        return;
    }
    assert(rm->type != RAFT_MSG_APPEND);
    if (msgs_push(&n->pend_msgs, rm) != 0) {
        IKD_WARN(NODE_MOD,
                 "out of memory holding a message to %u -> "
                 "dropped",
                 rm->to);
    }
}

static void send_read_index_resp(struct node *n,
                                 uint64_t conn_id,
                                 uint64_t req_id,
                                 int status,
                                 raft_index_t index);

static void remote_reads_fail(struct node *n, int status)
{
    while (n->remote_reads != NULL) {
        struct remote_read *rr = n->remote_reads;
        n->remote_reads = rr->next;
        send_read_index_resp(n, rr->conn_id, rr->req_id, status, 0);
        free(rr);
    }
}

static void on_soft_state(struct node *n, const struct raft_update *u)
{
    if (u->role != n->role) {
        IKD_INFO(NODE_MOD, "role %s -> %s", raft_role_name(n->role),
                 raft_role_name(u->role));
        n->stats.elections += u->role == RAFT_CANDIDATE;
    }
    if (u->leader != n->leader) {
        n->stats.leader_changes += u->leader != 0;
        if (u->leader != 0) {
            IKD_INFO(NODE_MOD, "leader is now %u", u->leader);
        } else {
            IKD_INFO(NODE_MOD, "leader %u lost", n->leader);
        }
    }
    bool lost_lead = n->role == RAFT_LEADER && u->role != RAFT_LEADER;
    n->role = u->role;
    n->leader = u->leader;
    if (lost_lead) {
        remote_reads_fail(n, IKD_ENOTLEADER);
        /* The core dropped its read rounds: ask again, wherever the lead
         * is now. */
        for (struct waiter *w = n->waiters.next; w != &n->waiters;
             w = w->next) {
            if (w->stage == W_READ_INDEX) {
                w->stage = W_NEED_LEADER;
            }
        }
    }
}

static void send_read_index_resp(struct node *n,
                                 uint64_t conn_id,
                                 uint64_t req_id,
                                 int status,
                                 raft_index_t index)
{
    struct net_msg m = {.kind = NET_READ_INDEX_RESP};
    m.read_index_resp.req_id = req_id;
    m.read_index_resp.status = status;
    m.read_index_resp.index = index;
    net_send_conn(n->transport, conn_id, &m);
}

static void on_read_ready(struct node *n, const struct raft_read *r)
{
    struct remote_read **pp = &n->remote_reads;
    while (*pp != NULL) {
        struct remote_read *rr = *pp;
        if (rr->ctx == r->ctx) {
            send_read_index_resp(n, rr->conn_id, rr->req_id, 0, r->index);
            *pp = rr->next;
            free(rr);
            return;
        }
        pp = &rr->next;
    }
    struct waiter *w = waiter_find(n, r->ctx);
    if (w != NULL && w->stage == W_READ_INDEX) {
        w->stage = W_APPLY;
        w->index = r->index;
    }
}

static void process_update(struct node *n, const struct raft_update *u)
{
    if (u->soft_state_changed) {
        on_soft_state(n, u);
    }
    if (u->hard_state_changed) {
        n->pend_hard = true;
        n->pend_term = u->term;
        n->pend_vote = u->vote;
    }
    ikd_log_term = raft_term(n->raft);
    if (u->log_dirty_from != 0 &&
        (n->pend_log_from == 0 || u->log_dirty_from < n->pend_log_from)) {
        n->pend_log_from = u->log_dirty_from;
    }
    for (size_t i = 0; i < u->n_msgs; i++) {
        send_or_hold(n, &u->msgs[i]);
    }
    assert(u->commit >= n->commit);
    n->commit = u->commit;
    for (size_t i = 0; i < u->n_reads; i++) {
        on_read_ready(n, &u->reads[i]);
    }
}

static void process_updates(struct node *n)
{
    bool changed = false;
    while (raft_has_update(n->raft)) {
        struct raft_update u;
        raft_get_update(n->raft, &u);
        process_update(n, &u);
        changed = true;
    }
    if (changed) {
        waiters_poke(n);
        job_start(n);
    }
}

/* ---- waiters moving through their stages ---- */

static void forward_proposal(struct node *n, struct waiter *w)
{
    struct net_msg m = {.kind = NET_FORWARD};
    m.forward.req_id = w->id;
    m.forward.cmd = w->cmd;
    m.forward.cmd_len = w->cmd_len;
    if (net_send_peer(n->transport, n->leader, &m) != 0) {
        return; /* not connected: try again at the next poke */
    }
    w->stage = W_FORWARDED;
}

static void propose_locally(struct node *n, struct waiter *w)
{
    raft_index_t index;
    raft_term_t term;
    int rv = raft_propose(n->raft, RAFT_ENTRY_COMMAND, w->cmd, w->cmd_len,
                          &index, &term);
    if (rv != 0) {
        waiter_finish(w, rv, 0);
        return;
    }
    free(w->cmd);
    w->cmd = NULL;
    w->stage = W_APPLY;
    w->index = index;
    w->term = term;
}

static void read_index_locally(struct node *n, struct waiter *w)
{
    if (raft_read_index(n->raft, w->id) == 0) {
        w->stage = W_READ_INDEX;
    }
}

static void read_index_remote(struct node *n, struct waiter *w)
{
    struct net_msg m = {.kind = NET_READ_INDEX};
    m.read_index.req_id = w->id;
    if (net_send_peer(n->transport, n->leader, &m) == 0) {
        w->stage = W_FORWARDED;
    }
}

static void waiter_advance(struct node *n, struct waiter *w)
{
    if (w->stage == W_NEED_LEADER && n->leader != 0) {
        bool local = n->leader == n->cfg.id;
        if (w->is_read) {
            local ? read_index_locally(n, w) : read_index_remote(n, w);
        } else {
            local ? propose_locally(n, w) : forward_proposal(n, w);
        }
        return;
    }
    if (w->is_read && w->stage == W_APPLY && n->applied >= w->index) {
        waiter_finish(w, 0, 0);
    }
}

static struct waiter *waiter_new(struct node *n, bool is_read)
{
    struct waiter *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }
    w->id = ++n->next_id;
    w->node = n;
    w->start_ns = uv_hrtime();
    w->is_read = is_read;
    w->stage = W_NEED_LEADER;
    w->deadline_ms = now_ms(n) + n->cfg.request_timeout_ms;
    w->leader_deadline_ms = now_ms(n) + 2 * n->cfg.election_timeout_ms;
    return w;
}

int node_propose(struct node *n,
                 const uint8_t *cmd,
                 size_t len,
                 node_propose_cb cb,
                 void *arg)
{
    if (n->stopping) {
        return IKD_ESHUTDOWN;
    }
    struct waiter *w = waiter_new(n, false);
    if (w == NULL) {
        return -ENOMEM;
    }
    w->cmd = malloc(len > 0 ? len : 1);
    if (w->cmd == NULL) {
        free(w);
        return -ENOMEM;
    }
    memcpy(w->cmd, cmd, len);
    w->cmd_len = len;
    w->propose_cb = cb;
    w->arg = arg;
    if (n->leader == n->cfg.id) {
        /* Fail at once rather than calling back before returning. */
        int rv = raft_propose(n->raft, RAFT_ENTRY_COMMAND, cmd, len, &w->index,
                              &w->term);
        if (rv != 0) {
            free(w->cmd);
            free(w);
            return rv;
        }
        free(w->cmd);
        w->cmd = NULL;
        w->stage = W_APPLY;
    }
    waiter_link(n, w);
    waiter_advance(n, w);
    process_updates(n);
    return 0;
}

int node_read_barrier(struct node *n, node_read_cb cb, void *arg)
{
    if (n->stopping) {
        return IKD_ESHUTDOWN;
    }
    struct waiter *w = waiter_new(n, true);
    if (w == NULL) {
        return -ENOMEM;
    }
    w->read_cb = cb;
    w->arg = arg;
    waiter_link(n, w);
    waiter_advance(n, w);
    process_updates(n);
    return 0;
}

static void waiters_expire(struct node *n)
{
    uint64_t now = now_ms(n);
    struct waiter *w = n->waiters.next;
    while (w != &n->waiters) {
        struct waiter *next = w->next;
        bool leaderless =
            w->stage == W_NEED_LEADER && now >= w->leader_deadline_ms;
        if (now >= w->deadline_ms || leaderless) {
            /* Without a leader nothing was proposed: the change certainly
             * did not happen.  Otherwise its outcome is unknown. */
            int status =
                w->stage == W_NEED_LEADER ? IKD_ENOLEADER : IKD_ETIMEDOUT;
            waiter_finish(w, status, 0);
        }
        w = next;
    }
}

static void tick_cb(uv_timer_t *t)
{
    struct node *n = t->data;
    raft_tick(n->raft);
    waiters_expire(n);
    waiters_poke(n);
    process_updates(n);
}

/* ---- messages from peers ---- */

static void on_forward(struct node *n,
                       uint64_t conn_id,
                       const struct net_forward *f)
{
    struct net_msg m = {.kind = NET_FORWARD_RESP};
    struct kv_cmd cmd;
    m.forward_resp.req_id = f->req_id;
    if (kv_cmd_decode(f->cmd, f->cmd_len, &cmd) != 0) {
        m.forward_resp.status = IKD_EMALFORMED;
    } else {
        m.forward_resp.status =
            raft_propose(n->raft, RAFT_ENTRY_COMMAND, f->cmd, f->cmd_len,
                         &m.forward_resp.index, &m.forward_resp.term);
    }
    net_send_conn(n->transport, conn_id, &m);
    process_updates(n);
}

static void on_forward_resp(struct node *n, const struct net_forward_resp *r)
{
    struct waiter *w = waiter_find(n, r->req_id);
    if (w == NULL || w->is_read || w->stage != W_FORWARDED) {
        return;
    }
    if (r->status == IKD_ENOTLEADER) {
        /* The leader moved before it got the command: nothing was
         * appended, so asking the next leader cannot apply it twice. */
        w->stage = W_NEED_LEADER;
        return;
    }
    if (r->status != 0) {
        waiter_finish(w, r->status, 0);
        return;
    }
    free(w->cmd);
    w->cmd = NULL;
    w->stage = W_APPLY;
    w->index = r->index;
    w->term = r->term;
}

static void on_read_index(struct node *n,
                          uint64_t conn_id,
                          const struct net_read_index *r)
{
    struct remote_read *rr = calloc(1, sizeof(*rr));
    if (rr == NULL) {
        send_read_index_resp(n, conn_id, r->req_id, -ENOMEM, 0);
        return;
    }
    rr->ctx = ++n->next_id;
    rr->conn_id = conn_id;
    rr->req_id = r->req_id;
    int rv = raft_read_index(n->raft, rr->ctx);
    if (rv != 0) {
        send_read_index_resp(n, conn_id, r->req_id, rv, 0);
        free(rr);
        return;
    }
    rr->next = n->remote_reads;
    n->remote_reads = rr;
    process_updates(n);
}

static void on_read_index_resp(struct node *n,
                               const struct net_read_index_resp *r)
{
    struct waiter *w = waiter_find(n, r->req_id);
    if (w == NULL || !w->is_read || w->stage != W_FORWARDED) {
        return;
    }
    if (r->status != 0) {
        w->stage = W_NEED_LEADER;
        return;
    }
    w->stage = W_APPLY;
    w->index = r->index;
    waiter_advance(n, w);
}

/* ---- client requests ---- */

static void client_reply(struct node *n,
                         uint64_t conn_id,
                         struct net_client_resp *resp)
{
    struct net_msg m = {.kind = NET_CLIENT_RESP};
    const struct net_peer *leader = peer_by_id(n, n->leader);
    char addr[80] = "";
    if (resp->status == IKD_ENOTLEADER && leader != NULL) {
        snprintf(addr, sizeof(addr), "%s:%u", leader->host, leader->port);
        resp->leader_id = leader->id;
    }
    resp->leader_addr = addr;
    resp->leader_addr_len = strlen(addr);
    m.resp = *resp;
    net_send_conn(n->transport, conn_id, &m);
}

static void client_reply_status(struct node *n,
                                uint64_t conn_id,
                                uint64_t req_id,
                                int status,
                                uint64_t value)
{
    struct net_client_resp resp = {
        .req_id = req_id, .status = status, .value = value};
    client_reply(n, conn_id, &resp);
}

static void client_req_free(struct client_req *c)
{
    free(c->key);
    free(c);
}

static void client_propose_cb(void *arg, int status, uint64_t value)
{
    struct client_req *c = arg;
    if (status != IKD_ESHUTDOWN) {
        client_reply_status(c->node, c->conn_id, c->req_id, status, value);
    }
    client_req_free(c);
}

struct list_buf
{
    uint8_t *data;
    size_t len;
    size_t cap;
};

static int list_collect_cb(void *arg, const char *key, size_t len)
{
    struct list_buf *b = arg;
    if (b->len + len + 1 > b->cap) {
        size_t cap = (b->cap + len + 1) * 2;
        uint8_t *data = realloc(b->data, cap);
        if (data == NULL) {
            return -ENOMEM;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, key, len);
    b->data[b->len + len] = 0;
    b->len += len + 1;
    return 0;
}

static void client_serve_read(struct node *n, struct client_req *c)
{
    struct net_client_resp resp = {.req_id = c->req_id};
    uint8_t *value = NULL;
    size_t len = 0;
    if (c->op == NET_OP_LIST) {
        struct list_buf b = {0};
        resp.status =
            kv_reader_list(n->reader, c->key, c->key_len, list_collect_cb, &b);
        value = b.data;
        len = b.len;
    } else {
        resp.status =
            kv_reader_get(n->reader, c->key, c->key_len, &value, &len);
    }
    resp.data = value;
    resp.data_len = len;
    client_reply(n, c->conn_id, &resp);
    free(value);
}

static void client_read_cb(void *arg, int status)
{
    struct client_req *c = arg;
    if (status == 0) {
        client_serve_read(c->node, c);
    } else if (status != IKD_ESHUTDOWN) {
        client_reply_status(c->node, c->conn_id, c->req_id, status, 0);
    }
    client_req_free(c);
}

/* Check a client's command and bound it by this node's value limit, so
 * that the state machine refuses an oversized value the same way on every
 * node.  Returns a newly encoded command or a negative code. */
static int client_check_cmd(struct node *n,
                            const struct net_client_req *r,
                            uint8_t **out,
                            size_t *out_len)
{
    struct kv_cmd cmd;
    if (kv_cmd_decode(r->cmd, r->cmd_len, &cmd) != 0) {
        return IKD_EMALFORMED;
    }
    if (cmd.op != KV_OP_PUT && cmd.op != KV_OP_DEL && cmd.op != KV_OP_CAS) {
        return -EINVAL;
    }
    int rv = kv_key_check(cmd.path, cmd.path_len);
    if (rv != 0) {
        return rv;
    }
    if (cmd.data_len > n->cfg.max_value_bytes ||
        cmd.expect_len > n->cfg.max_value_bytes) {
        return -EFBIG;
    }
    if (cmd.max_bytes > n->cfg.max_value_bytes) {
        cmd.max_bytes = n->cfg.max_value_bytes;
    }
    /* The leader's clock, not the client's, goes into the log: sessions
     * expire by the time the log carries (kv/cmd.h). */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    cmd.time_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    return kv_cmd_encode(&cmd, out, out_len);
}

static void client_status(struct node *n, uint64_t conn_id, uint64_t req_id)
{
    struct net_client_resp resp = {.req_id = req_id};
    resp.id = n->cfg.id;
    resp.role = (uint8_t)n->role;
    resp.term = raft_term(n->raft);
    resp.commit = raft_commit(n->raft);
    resp.applied = n->applied;
    resp.leader_id = n->leader;
    client_reply(n, conn_id, &resp);
}

static int client_start(struct node *n,
                        struct client_req *c,
                        const struct net_client_req *r)
{
    if (r->op == NET_OP_PROPOSE) {
        uint8_t *cmd;
        size_t len;
        int rv = client_check_cmd(n, r, &cmd, &len);
        if (rv != 0) {
            return rv;
        }
        rv = node_propose(n, cmd, len, client_propose_cb, c);
        free(cmd);
        return rv;
    }
    c->key = malloc(r->key_len + 1);
    if (c->key == NULL) {
        return -ENOMEM;
    }
    memcpy(c->key, r->key, r->key_len);
    c->key[r->key_len] = 0;
    c->key_len = r->key_len;
    if (r->op == NET_OP_GET_LOCAL) {
        client_serve_read(n, c);
        client_req_free(c);
        return 0;
    }
    return node_read_barrier(n, client_read_cb, c);
}

/* Start a leadership transfer (Raft 3.10) and answer at once: 0 when it
 * started, -EINVAL for an id that is not a voter.  The client watches the
 * leader change. */
static void client_transfer(struct node *n,
                            uint64_t conn_id,
                            const struct net_client_req *r)
{
    raft_id_t target = 0;
    int rv = 0;

    for (size_t i = 0; i < r->key_len && rv == 0; i++) {
        if (r->key[i] < '0' || r->key[i] > '9' || target > UINT32_MAX / 10) {
            rv = -EINVAL;
        } else {
            target = target * 10 + (raft_id_t)(r->key[i] - '0');
        }
    }
    if (rv == 0) {
        rv = raft_transfer(n->raft, target);
    }
    IKD_INFO(NODE_MOD, "transfer asked target=%u -> %s", (unsigned)target,
             ikd_strerror(rv));
    client_reply_status(n, conn_id, r->req_id, rv, 0);
    process_updates(n);
}

static void on_client_req(struct node *n,
                          uint64_t conn_id,
                          const struct net_client_req *r)
{
    if (r->op == NET_OP_STATUS) {
        client_status(n, conn_id, r->req_id);
        return;
    }
    if (r->op != NET_OP_GET_LOCAL && n->role != RAFT_LEADER) {
        int status = n->leader != 0 ? IKD_ENOTLEADER : IKD_ENOLEADER;
        client_reply_status(n, conn_id, r->req_id, status, 0);
        return;
    }
    if (r->op == NET_OP_TRANSFER) {
        client_transfer(n, conn_id, r);
        return;
    }
    struct client_req *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        client_reply_status(n, conn_id, r->req_id, -ENOMEM, 0);
        return;
    }
    c->node = n;
    c->conn_id = conn_id;
    c->req_id = r->req_id;
    c->op = r->op;
    int rv = client_start(n, c, r);
    if (rv != 0) {
        client_reply_status(n, conn_id, r->req_id, rv, 0);
        client_req_free(c);
    }
}

/* ---- transport callbacks ---- */

static void on_raft_msg(struct node *n,
                        raft_id_t from,
                        const struct raft_msg *m)
{
    if (from == 0 || m->from != from || m->to != n->cfg.id) {
        IKD_DEBUG(NODE_MOD, "raft message from %u names %u -> %u: dropped",
                  from, m->from, m->to);
        return;
    }
    int rv = raft_step(n->raft, m);
    if (rv != 0) {
        IKD_DEBUG(NODE_MOD, "raft message from %u refused: %s", from,
                  ikd_strerror(rv));
    }
    process_updates(n);
}

static void transport_msg_cb(void *ctx,
                             uint64_t conn_id,
                             raft_id_t from,
                             const struct net_msg *m)
{
    struct node *n = ctx;
    if (n->stopping) {
        return;
    }
    bool from_peer = from != 0;
    switch (m->kind) {
        case NET_RAFT:
            on_raft_msg(n, from, &m->raft);
            break;
        case NET_FORWARD:
            if (from_peer) {
                on_forward(n, conn_id, &m->forward);
            }
            break;
        case NET_FORWARD_RESP:
            on_forward_resp(n, &m->forward_resp);
            break;
        case NET_READ_INDEX:
            if (from_peer) {
                on_read_index(n, conn_id, &m->read_index);
            }
            break;
        case NET_READ_INDEX_RESP:
            on_read_index_resp(n, &m->read_index_resp);
            break;
        case NET_CLIENT_REQ:
            on_client_req(n, conn_id, &m->req);
            break;
        default:
            IKD_DEBUG(NODE_MOD, "unexpected message kind %u on conn %llu",
                      m->kind, (unsigned long long)conn_id);
            break;
    }
}

static void transport_close_cb(void *ctx, uint64_t conn_id)
{
    struct node *n = ctx;
    /* A follower's read round that can no longer be answered is simply
     * dropped when it completes (net_send_conn fails).  Proposals and reads
     * forwarded on a lost connection wait until their deadline. */
    (void)n;
    (void)conn_id;
}

/* ---- start and stop ---- */

static void raft_log_cb(void *ctx, int level, const char *text)
{
    (void)ctx;
    IKD_LOG(level, "raft", "%s", text);
}

static uint64_t cluster_hash(const struct node_config *cfg)
{
    /* FNV-1a over "id=host:port," in the order given: nodes started with
     * different member lists refuse to talk. */
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        char item[96];
        int len = snprintf(item, sizeof(item), "%u=%s:%u,", cfg->peers[i].id,
                           cfg->peers[i].host, cfg->peers[i].port);
        for (int k = 0; k < len; k++) {
            h ^= (uint8_t)item[k];
            h *= 1099511628211ull;
        }
    }
    return h;
}

static int node_make_raft(struct node *n, const struct kv_state *st)
{
    struct raft_config rc = {0};
    rc.id = n->cfg.id;
    rc.n_voters = n->cfg.n_peers;
    for (size_t i = 0; i < n->cfg.n_peers; i++) {
        rc.voters[i] = n->cfg.peers[i].id;
    }
    rc.heartbeat_ticks = n->cfg.heartbeat_ms / n->tick_ms;
    rc.election_ticks = n->cfg.election_timeout_ms / n->tick_ms;
    rc.seed = (uint64_t)uv_hrtime() ^ ((uint64_t)n->cfg.id << 32);
    rc.max_append_entries = IKD_MAX_APPEND_ENTRIES;
    rc.max_append_bytes = IKD_MAX_APPEND_BYTES;
    rc.log_cb = raft_log_cb;
    n->raft = raft_new(&rc);
    if (n->raft == NULL) {
        return -ENOMEM;
    }
    return raft_load(n->raft, st->term, st->vote, st->applied, st->first_index,
                     st->prev_term, st->entries, st->n_entries);
}

static int node_open_storage(struct node *n)
{
    static const struct kv_sm sm = {.ops = &kv_fsm_ops, .ctx = NULL};
    struct kv_state st = {0};
    int rv = kv_store_open(n->data_dir, n->cfg.id, &sm, &n->store);
    if (rv != 0) {
        return rv;
    }
    rv = kv_store_load(n->store, &st);
    if (rv != 0) {
        return rv;
    }
    rv = node_make_raft(n, &st);
    if (rv == 0) {
        n->applied = st.applied;
        n->apply_queued = st.applied;
        n->commit = st.applied;
        ikd_log_term = st.term;
        IKD_INFO(
            NODE_MOD, "resumed term=%llu vote=%u applied=%llu log=%llu..%llu",
            (unsigned long long)st.term, st.vote,
            (unsigned long long)st.applied, (unsigned long long)st.first_index,
            (unsigned long long)(st.first_index + st.n_entries - 1));
    }
    kv_state_free(&st);
    if (rv != 0) {
        return rv;
    }
    return kv_reader_open(n->data_dir, &n->reader);
}

static int node_init(struct node *n,
                     uv_loop_t *loop,
                     const struct node_config *cfg)
{
    n->loop = loop;
    n->cfg = *cfg;
    n->data_dir = strdup(cfg->data_dir);
    if (n->data_dir == NULL) {
        return -ENOMEM;
    }
    n->cfg.data_dir = n->data_dir;
    n->waiters.next = n->waiters.prev = &n->waiters;
    n->cluster_hash = cluster_hash(cfg);
    n->tick_ms = cfg->heartbeat_ms / 10;
    if (n->tick_ms == 0) {
        n->tick_ms = 1;
    }
    if (n->tick_ms > 10) {
        n->tick_ms = 10;
    }
    return 0;
}

static void node_free(struct node *n)
{
    if (n->reader != NULL) {
        kv_reader_close(n->reader);
    }
    if (n->store != NULL) {
        kv_store_close(n->store);
    }
    if (n->raft != NULL) {
        raft_free(n->raft);
    }
    msgs_drop(&n->pend_msgs);
    while (n->remote_reads != NULL) {
        struct remote_read *rr = n->remote_reads;
        n->remote_reads = rr->next;
        free(rr);
    }
    free(n->data_dir);
    free(n);
}

int node_start(uv_loop_t *loop,
               const struct node_config *cfg,
               struct node **out)
{
    static const struct net_transport_cbs cbs = {
        .msg_cb = transport_msg_cb,
        .close_cb = transport_close_cb,
    };
    struct node *n = calloc(1, sizeof(*n));
    if (n == NULL) {
        return -ENOMEM;
    }
    int rv = node_init(n, loop, cfg);
    if (rv == 0) {
        rv = node_open_storage(n);
    }
    if (rv == 0) {
        rv = net_transport_start(loop, cfg->id, cfg->peers, cfg->n_peers,
                                 n->cluster_hash, &cbs, n, &n->transport);
    }
    if (rv != 0) {
        node_free(n);
        return rv;
    }

    uv_timer_init(loop, &n->tick_timer);
    n->tick_timer.data = n;
    uv_timer_init(loop, &n->retry_timer);
    n->retry_timer.data = n;
    uv_timer_start(&n->tick_timer, tick_cb, n->tick_ms, n->tick_ms);
    *out = n;
    return 0;
}

static void node_maybe_finish_stop(struct node *n)
{
    if (n->open_handles > 0 || !n->transport_closed || n->running != NULL) {
        return;
    }
    void (*cb)(void *arg) = n->stop_cb;
    void *arg = n->stop_arg;
    node_free(n);
    if (cb != NULL) {
        cb(arg);
    }
}

static void handle_closed_cb(uv_handle_t *h)
{
    struct node *n = h->data;
    n->open_handles--;
    node_maybe_finish_stop(n);
}

static void transport_stopped_cb(void *arg)
{
    struct node *n = arg;
    n->transport_closed = true;
    node_maybe_finish_stop(n);
}

void node_stop(struct node *n, void (*cb)(void *arg), void *arg)
{
    assert(!n->stopping);
    n->stopping = true;
    n->stop_cb = cb;
    n->stop_arg = arg;
    while (n->waiters.next != &n->waiters) {
        waiter_finish(n->waiters.next, IKD_ESHUTDOWN, 0);
    }
    n->open_handles = 2;
    uv_close((uv_handle_t *)&n->tick_timer, handle_closed_cb);
    uv_close((uv_handle_t *)&n->retry_timer, handle_closed_cb);
    net_transport_stop(n->transport, transport_stopped_cb, n);
}

struct kv_reader *node_reader(struct node *n)
{
    return n->reader;
}

void node_get_info(struct node *n, struct node_info *out)
{
    out->id = n->cfg.id;
    out->role = n->role;
    out->term = raft_term(n->raft);
    out->commit = raft_commit(n->raft);
    out->applied = n->applied;
    out->leader = n->leader;
}

const struct node_config *node_get_config(struct node *n)
{
    return &n->cfg;
}

static void metrics_state(struct node *n, struct ikd_buf *b)
{
    static const enum raft_role roles[] = {RAFT_FOLLOWER, RAFT_CANDIDATE,
                                           RAFT_LEADER};
    char labels[48];

    ikd_metric_family(b, "ikada_role", "gauge",
                      "1 for the role this node has now.");
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        snprintf(labels, sizeof(labels), "role=\"%s\"",
                 raft_role_name(roles[i]));
        ikd_metric_u64(b, "ikada_role", labels, n->role == roles[i]);
    }
    ikd_metric_family(b, "ikada_term", "gauge", "Current Raft term.");
    ikd_metric_u64(b, "ikada_term", "", raft_term(n->raft));
    ikd_metric_family(b, "ikada_leader_id", "gauge",
                      "Id of the known leader, 0 when none.");
    ikd_metric_u64(b, "ikada_leader_id", "", n->leader);
    ikd_metric_family(b, "ikada_commit_index", "gauge",
                      "Highest log index known committed.");
    ikd_metric_u64(b, "ikada_commit_index", "", raft_commit(n->raft));
    ikd_metric_family(b, "ikada_applied_index", "gauge",
                      "Highest log index applied and durable.");
    ikd_metric_u64(b, "ikada_applied_index", "", n->applied);
    ikd_metric_family(b, "ikada_last_log_index", "gauge",
                      "Index of the last entry in the log.");
    ikd_metric_u64(b, "ikada_last_log_index", "", raft_last_index(n->raft));
}

/* Replication of each follower, as the leader sees it. */
static void metrics_peers(struct node *n, struct ikd_buf *b)
{
    raft_index_t last = raft_last_index(n->raft);
    char labels[32];

    if (n->role != RAFT_LEADER) {
        return;
    }
    ikd_metric_family(b, "ikada_peer_match_index", "gauge",
                      "Highest index known replicated on the peer (leader).");
    for (size_t i = 0; i < n->cfg.n_peers; i++) {
        raft_id_t id = n->cfg.peers[i].id;
        if (id != n->cfg.id) {
            snprintf(labels, sizeof(labels), "peer=\"%u\"", (unsigned)id);
            ikd_metric_u64(b, "ikada_peer_match_index", labels,
                           raft_match_index(n->raft, id));
        }
    }
    ikd_metric_family(b, "ikada_peer_lag_entries", "gauge",
                      "Entries the peer is behind the leader's log.");
    for (size_t i = 0; i < n->cfg.n_peers; i++) {
        raft_id_t id = n->cfg.peers[i].id;
        if (id != n->cfg.id) {
            snprintf(labels, sizeof(labels), "peer=\"%u\"", (unsigned)id);
            ikd_metric_u64(b, "ikada_peer_lag_entries", labels,
                           last - raft_match_index(n->raft, id));
        }
    }
}

static void metrics_counter(struct ikd_buf *b,
                            const char *name,
                            const char *help,
                            uint64_t value)
{
    ikd_metric_family(b, name, "counter", help);
    ikd_metric_u64(b, name, "", value);
}

static void metrics_requests(struct node *n, struct ikd_buf *b)
{
    const struct node_stats *st = &n->stats;

    ikd_metric_family(b, "ikada_proposals_total", "counter",
                      "Proposals made through this node, by outcome.");
    ikd_metric_u64(b, "ikada_proposals_total", "result=\"ok\"",
                   st->proposals_ok);
    ikd_metric_u64(b, "ikada_proposals_total", "result=\"error\"",
                   st->proposals_failed);
    ikd_metric_family(b, "ikada_proposal_seconds", "histogram",
                      "From a proposal to its outcome on this node.");
    ikd_metric_hist(b, "ikada_proposal_seconds", &st->proposal_latency);
    ikd_metric_family(b, "ikada_reads_total", "counter",
                      "Linearizable read points asked, by outcome.");
    ikd_metric_u64(b, "ikada_reads_total", "result=\"ok\"", st->reads_ok);
    ikd_metric_u64(b, "ikada_reads_total", "result=\"error\"",
                   st->reads_failed);
    ikd_metric_family(b, "ikada_read_seconds", "histogram",
                      "From a read to its read point on this node.");
    ikd_metric_hist(b, "ikada_read_seconds", &st->read_latency);
}

static void metrics_storage(struct node *n, struct ikd_buf *b)
{
    const struct node_stats *st = &n->stats;

    metrics_counter(b, "ikada_storage_writes_total",
                    "Durable transactions (one fsync each).",
                    st->storage_writes);
    metrics_counter(b, "ikada_storage_failures_total",
                    "Transactions that failed and were retried.",
                    st->storage_failures);
    ikd_metric_family(b, "ikada_storage_write_seconds", "histogram",
                      "Time of one durable transaction, fsync included.");
    ikd_metric_hist(b, "ikada_storage_write_seconds", &st->storage_latency);
    metrics_counter(b, "ikada_entries_persisted_total", "Log entries written.",
                    st->entries_persisted);
    metrics_counter(b, "ikada_entries_applied_total",
                    "Log entries applied to the state machine.",
                    st->entries_applied);
    metrics_counter(b, "ikada_elections_total",
                    "Times this node became a candidate.", st->elections);
    metrics_counter(b, "ikada_leader_changes_total",
                    "Times a new leader became known.", st->leader_changes);
}

static void metrics_tracing(struct ikd_buf *b)
{
    struct ikd_trace_stats ts;

    ikd_tracer_stats(&ts);
    metrics_counter(b, "ikada_spans_exported_total",
                    "Trace spans the collector accepted.", ts.exported);
    metrics_counter(b, "ikada_spans_dropped_total",
                    "Trace spans lost to a full queue or a failed export.",
                    ts.dropped);
}

void node_metrics_render(struct node *n, struct ikd_buf *out)
{
    metrics_state(n, out);
    metrics_peers(n, out);
    metrics_requests(n, out);
    metrics_storage(n, out);
    metrics_tracing(out);
}
