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

#include <arpa/inet.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "../kv/cmd.h"
#include "../kv/orphan.h"
#include "../kv/snapshot.h"
#include "../kv/store.h"
#include "metrics.h"
#include "node_trace.h"
#include "trace.h"

#define NODE_MOD "node"
/* One storage job writes at most this many bytes of log entries, and
 * applies at most as many, but at least one entry each: a large backlog
 * (a follower catching up, a disk that had filled) goes in several
 * transactions, none of which needs much more memory or free space. */
#define NODE_JOB_MAX_BYTES (16u << 20)

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
    char *install_path; /* owned; the snapshot file to install, if any */
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
    /* A proposal the leader refused without appending it (IKD_EBUSY: a
     * leadership transfer, or too much uncommitted) is asked again from
     * retry_ms on; refused is what the deadline answers if it never got
     * in. */
    uint64_t retry_ms;
    int refused;
    bool hold; /* NODE_PROPOSE_HOLD */
    /* A proposal's command, kept until the outcome is known: an entry that
     * a newer leader replaced is proposed again. */
    uint8_t *cmd;
    size_t cmd_len;
    node_propose_cb propose_cb;
    node_read_cb read_cb;
    void *arg;
    /* A sampled proposal's "node.propose" span, else NULL. */
    struct ikd_span *span;
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
    struct ikd_span *span; /* "ikada.request" when sampled, else NULL */
};

/* A membership request from a client, answered once the configuration
 * it asked for is committed (Raft 4), or at its deadline. */
struct member_req
{
    struct member_req *next;
    uint64_t conn_id;
    uint64_t req_id;
    uint8_t op; /* NET_OP_MEMBER_ADD or NET_OP_MEMBER_REMOVE */
    raft_id_t id;
    char addr[IKD_MAX_ADDR_BYTES];
    uint64_t deadline_ms;
};

/* Counters and histograms behind node_metrics_render(); loop thread. */
struct node_stats
{
    uint64_t elections;      /* times this node became a candidate */
    uint64_t leader_changes; /* times the known leader changed */
    uint64_t proposals_ok;
    uint64_t proposals_failed;
    uint64_t proposals_lost; /* entries a newer leader replaced */
    uint64_t reads_ok;
    uint64_t reads_failed;
    uint64_t storage_writes;
    uint64_t storage_failures;
    uint64_t appends_dropped; /* entries refused while storage fails */
    uint64_t entries_persisted;
    uint64_t entries_applied;
    uint64_t compactions;
    uint64_t snapshots_created;
    uint64_t snapshots_sent;
    uint64_t snapshots_failed;
    uint64_t snapshots_installed;
    struct ikd_hist proposal_latency;
    struct ikd_hist read_latency;
    struct ikd_hist storage_latency;
    struct ikd_hist loop_stall;
    uint64_t stall_max_ns;
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
    /* Fires every NODE_STALL_PROBE_MS to measure how late the loop is. */
    uv_timer_t stall_timer;
    uint64_t stall_due_ns;

    struct job *running;
    /* The error of the latest storage job when it failed, 0 once one
     * succeeded: while the disk is full, for one, nothing can be applied
     * here, so this node refuses new commands at once. */
    int storage_rv;
    uv_work_t ckpt_work; /* kv_store_checkpoint() beside the jobs */
    bool ckpt_running;
    /* Frames of the WAL in the database after the latest checkpoint, 0
     * once a job copied the rest and started the WAL over. */
    int ckpt_copied;
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
    /* Last index applied; durable once a batch that syncs followed. */
    raft_index_t applied;

    /* Snapshots and compaction (see "snapshots" below). */
    raft_index_t snap_index; /* latest durable snapshot point */
    bool pend_compact;
    raft_index_t pend_compact_to;
    raft_term_t pend_compact_term;
    raft_index_t pend_snap_index;
    raft_term_t pend_snap_term;
    char *pend_install_path;
    raft_index_t pend_install_index;
    raft_term_t pend_install_term;
    bool out_creating;
    bool out_ready;
    uint64_t out_retry_ms; /* after a failure, no new try before this */
    struct kv_snapshot_info out_info;
    struct snap_send *senders[IKD_MAX_NODES]; /* in any slot */
    /* Snapshot transfers that failed in a row, by peer (in any slot): the
     * next one to that peer waits, longer after each failure, so that a
     * follower whose disk is full is not sent the whole file again and
     * again. */
    struct snap_retry
    {
        raft_id_t peer; /* 0: free */
        unsigned fails;
        uint64_t not_before_ms;
    } snap_retry[IKD_MAX_NODES];
    struct snap_recv *recv;
    char *recv_path;     /* a received file the core may take */
    unsigned snap_async; /* snapshot work and file requests in flight */

    /* The state machine, which tells orphans of the removed files that
     * the file system has open for writing. */
    struct kv_sm sm;
    struct kv_orphans *orphans;

    enum raft_role role;
    raft_id_t leader;
    uint64_t leaderless_since_ms; /* when leader last became 0 */

    /* The latest configuration the core reported; cfg.peers holds its
     * servers and this node (self, its own listening address). */
    struct raft_membership members;
    struct net_peer self;
    struct member_req *member_reqs;

    struct waiter waiters; /* list head */
    uint64_t next_id;
    struct remote_read *remote_reads;

    bool stopping;
    bool transport_closed;
    void (*stop_cb)(void *arg);
    void *stop_arg;
    unsigned open_handles;

    struct node_stats stats;
    struct node_trace *trace; /* NULL when the tracer is off */
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
    if (w->span != NULL) {
        if (status < 0) {
            ikd_span_set_error(w->span, ikd_strerror(status));
        }
        ikd_span_end(w->span);
        free(w->span);
    }
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
static void node_sync_members(struct node *n);
static void member_reqs_check(struct node *n);
static void member_reqs_fail(struct node *n, int status);
static void job_start(struct node *n);
static void node_maybe_finish_stop(struct node *n);
static void maybe_compact(struct node *n);
static void maybe_checkpoint(struct node *n);
static void compact_done(struct node *n, const struct job *j);
static void install_done(struct node *n, const struct job *j);
static void on_snapshot_taken(struct node *n, const struct raft_update *u);
static void snapshot_send_start(struct node *n,
                                raft_id_t peer,
                                raft_index_t need);
static void senders_tick(struct node *n);
static void recv_tick(struct node *n);
struct snap_send;
struct snap_recv;

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
    free(j->install_path);
    free_entries(j->log_entries, j->n_log);
    free_entries(j->apply_entries, j->n_apply);
    free(j->results);
    msgs_drop(&j->after);
    free(j);
}

static bool pending_has_work(const struct node *n)
{
    return n->pend_hard || n->pend_log_from != 0 ||
           n->commit > n->apply_queued || n->pend_compact ||
           n->pend_install_path != NULL;
}

/* The last index from..to holding at most max_bytes of entry data, but
 * at least from itself. */
static raft_index_t bytes_end(const struct node *n,
                              raft_index_t from,
                              raft_index_t to,
                              size_t max_bytes)
{
    size_t bytes = raft_entry_at(n->raft, from)->len;
    raft_index_t end = from;

    while (end < to) {
        size_t len = raft_entry_at(n->raft, end + 1)->len;
        if (bytes + len > max_bytes) {
            break;
        }
        bytes += len;
        end++;
    }
    return end;
}

/* Returns whether the job holds the whole pending log. */
static int job_fill_log(struct node *n, struct job *j, bool *whole)
{
    raft_index_t last = raft_last_index(n->raft);
    j->batch.log_from = n->pend_log_from;
    *whole = true;
    if (n->pend_log_from <= last) {
        raft_index_t end =
            bytes_end(n, n->pend_log_from, last, NODE_JOB_MAX_BYTES);
        int rv =
            copy_entries(n, n->pend_log_from, end, &j->log_entries, &j->n_log);
        if (rv != 0) {
            return rv;
        }
        j->persist_index = end;
        j->persist_term = raft_entry_at(n->raft, end)->term;
        *whole = end == last;
    }
    j->batch.entries = j->log_entries;
    j->batch.n_entries = j->n_log;
    return 0;
}

/* Applies committed entries up to at most to. */
static int job_fill_apply(struct node *n, struct job *j, raft_index_t to)
{
    raft_index_t from = n->apply_queued + 1;
    to = bytes_end(n, from, to, NODE_JOB_MAX_BYTES);
    int rv = copy_entries(n, from, to, &j->apply_entries, &j->n_apply);
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
    if (n->pend_install_path != NULL) {
        j->install_path = n->pend_install_path;
        j->batch.install_path = j->install_path;
        j->batch.install_index = n->pend_install_index;
        j->batch.install_term = n->pend_install_term;
    }
    if (n->pend_compact) {
        j->batch.compact_to = n->pend_compact_to;
        j->batch.compact_term = n->pend_compact_term;
        j->batch.snap_index = n->pend_snap_index;
        j->batch.snap_term = n->pend_snap_term;
    }
    j->batch.finish_checkpoint =
        !n->ckpt_running && kv_store_wants_finish(n->store, n->ckpt_copied);
    j->batch.hard_state = n->pend_hard;
    j->batch.term = n->pend_term;
    j->batch.vote = n->pend_vote;
    bool whole = true;
    if (n->pend_log_from != 0 && job_fill_log(n, j, &whole) != 0) {
        goto err;
    }
    /* Entries are applied no further than the log this job or an earlier
     * one makes durable. */
    raft_index_t apply_to = n->commit;
    if (!whole && apply_to > j->persist_index) {
        apply_to = j->persist_index;
    }
    if (apply_to > n->apply_queued && job_fill_apply(n, j, apply_to) != 0) {
        goto err;
    }

    if (j->batch.finish_checkpoint) {
        n->ckpt_copied = 0;
    }
    n->pend_hard = false;
    n->pend_log_from = whole ? 0 : j->persist_index + 1;
    if (j->n_apply > 0) {
        n->apply_queued = j->batch.apply_from + j->n_apply - 1;
    }
    if (whole) {
        /* Messages may depend on the whole log handed out so far. */
        j->after = n->pend_msgs;
        n->pend_msgs = (struct msg_list){0};
    }

    n->pend_install_path = NULL;
    n->pend_compact = false;
    return j;

err:
    j->install_path = NULL; /* still pending */
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
                /* A newer leader replaced the entry, so it was never
                 * committed (Raft 5.4): proposing it again cannot apply
                 * it twice.  The waiter's deadline still holds. */
                w->stage = W_NEED_LEADER;
                w->id = ++n->next_id;
                n->stats.proposals_lost++;
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

/* A leader that cannot write its log or apply anything keeps the cluster
 * from serving clients while the followers could: with a majority of
 * healthy disks it hands leadership to the most up-to-date follower
 * (Raft 3.10), whose log the AppendEntries kept current.  The transfer
 * is tried again at each failed retry until it goes through. */
static void maybe_hand_over(struct node *n)
{
    if (raft_role(n->raft) != RAFT_LEADER ||
        raft_transfer_target(n->raft) != 0) {
        return;
    }
    if (raft_transfer(n->raft, 0) == 0) {
        IKD_WARN(NODE_MOD,
                 "storage fails while leading -> hand leadership to the "
                 "most up-to-date follower");
        process_updates(n);
    }
}

static void job_failed(struct node *n, struct job *j)
{
    /* The transaction rolled back: nothing of the job is durable, and the
     * messages that depend on it must not leave.  Put its work back into
     * the pending batch and try again later: a full disk may get space. */
    if (j->install_path != NULL &&
        (j->rv == IKD_ECORRUPT || j->rv == -ENOENT)) {
        /* The core already took the snapshot's state, and retrying cannot
         * help.  What is durable is consistent: a restart resumes from it
         * and fetches a new snapshot. */
        IKD_ERROR(NODE_MOD,
                  "snapshot install failed: %s -> exit, to restart from the "
                  "durable state",
                  ikd_strerror(j->rv));
        exit(EXIT_FAILURE);
    }
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
    if (j->install_path != NULL && n->pend_install_path == NULL) {
        n->pend_install_path = j->install_path;
        n->pend_install_index = j->batch.install_index;
        n->pend_install_term = j->batch.install_term;
        n->apply_queued = j->batch.install_index;
        j->install_path = NULL;
    }
    msgs_drop(&j->after);
    job_free(j);
    if (!n->retry_scheduled) {
        n->retry_scheduled = true;
        uv_timer_start(&n->retry_timer, retry_timer_cb, 1000, 0);
    }
    maybe_hand_over(n);
}

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
        n->storage_rv = j->rv;
        job_failed(n, j);
        return;
    }
    n->storage_rv = 0;
    n->stats.storage_writes++;
    n->stats.entries_persisted += j->n_log;
    n->stats.entries_applied += j->n_apply;
    ikd_hist_observe(&n->stats.storage_latency, j->write_ns);

    if (j->install_path != NULL) {
        n->applied = j->batch.install_index;
        raft_applied(n->raft, n->applied);
        install_done(n, j);
    }
    if (j->persist_index != 0) {
        raft_persisted(n->raft, j->persist_index, j->persist_term);
        node_trace_persisted(n->trace, j->persist_index);
    }
    if (j->n_apply > 0) {
        n->applied = j->batch.apply_from + j->n_apply - 1;
        raft_applied(n->raft, n->applied);
        node_trace_applied(n->trace, n->applied);
        job_complete_waiters(n, j);
    }
    if (j->batch.compact_to != 0) {
        compact_done(n, j);
    }
    maybe_compact(n);
    maybe_checkpoint(n);
    msgs_send(n, &j->after);
    job_free(j);
    waiters_poke(n);
    process_updates(n);
    job_start(n);
}

static void ckpt_work_cb(uv_work_t *work)
{
    struct node *n = work->data;
    int rv = kv_store_checkpoint(n->store, &n->ckpt_copied);

    if (rv != 0) {
        IKD_WARN(NODE_MOD, "WAL checkpoint failed: %s -> retry later",
                 ikd_strerror(rv));
    }
}

static void ckpt_after_cb(uv_work_t *work, int status)
{
    struct node *n = work->data;

    (void)status;
    n->ckpt_running = false;
    node_maybe_finish_stop(n);
}

/* Copy the WAL back into the database on a worker of its own once it grew
 * large, so that no commit of a job waits for it.  The few frames written
 * during the copy are copied by the next job, which then starts the WAL
 * over: see kv_store_checkpoint(). */
static void maybe_checkpoint(struct node *n)
{
    if (n->ckpt_running || n->stopping ||
        !kv_store_wants_checkpoint(n->store) ||
        kv_store_wants_finish(n->store, n->ckpt_copied)) {
        return;
    }
    n->ckpt_work.data = n;
    n->ckpt_running = true;
    int rv = uv_queue_work(n->loop, &n->ckpt_work, ckpt_work_cb, ckpt_after_cb);
    assert(rv == 0);
    (void)rv;
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
    if (rm->type == RAFT_MSG_APPEND || rm->type == RAFT_MSG_TIMEOUT_NOW) {
        /* Depends only on the leader's durable term: see raft.h.  A
         * leader whose disk fails can still hand leadership over. */
        struct net_trace_ref refs[NET_MAX_TRACE_REFS];
        struct net_msg m = {.kind = NET_RAFT, .raft = *rm, .traces = refs};

        if (rm->type == RAFT_MSG_APPEND) {
            raft_index_t first = rm->append.prev_index + 1;
            m.n_traces =
                node_trace_outgoing(n->trace, rm->to, first,
                                    first + rm->append.n_entries - 1, refs);
        }
        net_send_peer(n->transport, rm->to, &m);
        return;
    }
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

/* Whether a forwarded command may be sent again: one that carries a
 * client session is applied at most once, whichever leader gets it. */
static bool cmd_resendable(const struct waiter *w)
{
    struct kv_cmd c;

    return w->cmd != NULL && kv_cmd_decode(w->cmd, w->cmd_len, &c) == 0 &&
           c.session != 0;
}

/* A new leader: requests that an earlier leader never answered (it may be
 * paused or cut off) go to the new one, under new ids so that a late
 * answer of the old one is ignored.  Reads are always safe to ask again,
 * commands when they carry a session. */
static void waiters_resend(struct node *n)
{
    for (struct waiter *w = n->waiters.next; w != &n->waiters; w = w->next) {
        if (w->stage == W_FORWARDED && (w->is_read || cmd_resendable(w))) {
            w->id = ++n->next_id;
            w->stage = W_NEED_LEADER;
        }
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
    bool new_leader = u->leader != 0 && u->leader != n->leader;
    if (u->leader == 0 && n->leader != 0) {
        n->leaderless_since_ms = now_ms(n);
    }
    n->role = u->role;
    n->leader = u->leader;
    if (new_leader) {
        waiters_resend(n);
    }
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
    if (u->membership_changed) {
        node_sync_members(n);
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
    if (u->snapshot_index != 0) {
        on_snapshot_taken(n, u);
    }
    for (size_t i = 0; i < u->n_msgs; i++) {
        if (u->msgs[i].type == RAFT_MSG_SNAPSHOT) {
            snapshot_send_start(n, u->msgs[i].to, u->msgs[i].snapshot.index);
        } else {
            send_or_hold(n, &u->msgs[i]);
        }
    }
    assert(u->commit >= n->commit);
    if (u->commit > n->commit) {
        node_trace_committed(n->trace, u->commit);
    }
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
        node_trace_matched(n->trace, n->raft);
        waiters_poke(n);
        job_start(n);
        member_reqs_check(n);
    }
}

/* ---- waiters moving through their stages ---- */

static void forward_proposal(struct node *n, struct waiter *w)
{
    struct net_msg m = {.kind = NET_FORWARD};
    m.forward.req_id = w->id;
    m.forward.cmd = w->cmd;
    m.forward.cmd_len = w->cmd_len;
    if (w->span != NULL) {
        m.forward.trace = w->span->ctx;
    }
    if (net_send_peer(n->transport, n->leader, &m) != 0) {
        return; /* not connected: try again at the next poke */
    }
    w->stage = W_FORWARDED;
}

/* The leader refused w's command for now, appending nothing: ask again
 * a tick later, wherever the lead is then, until the deadline. */
static void waiter_hold(struct node *n, struct waiter *w, int status)
{
    w->stage = W_NEED_LEADER;
    w->refused = status;
    w->retry_ms = now_ms(n) + n->tick_ms;
    /* A leader answered just now: give up early only once none is known
     * for as long as a new request would wait for one. */
    w->leader_deadline_ms = now_ms(n) + 2 * n->cfg.election_timeout_ms;
}

static void propose_locally(struct node *n, struct waiter *w)
{
    raft_index_t index;
    raft_term_t term;
    int rv = raft_propose(n->raft, RAFT_ENTRY_COMMAND, w->cmd, w->cmd_len,
                          &index, &term);
    if (rv == IKD_EBUSY && w->hold) {
        waiter_hold(n, w, rv);
        return;
    }
    if (rv != 0) {
        waiter_finish(w, rv, 0);
        return;
    }
    if (w->span != NULL) {
        node_trace_proposed(n->trace, index, &w->span->ctx, now_ms(n));
    }
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
    m.read_index.term = raft_term(n->raft);
    if (net_send_peer(n->transport, n->leader, &m) == 0) {
        w->stage = W_FORWARDED;
    }
}

/* Whether this node's disk refuses writes (full, or failing), so that it
 * can neither store nor apply entries until an operator acts. */
static bool storage_failing(const struct node *n)
{
    return n->storage_rv == -ENOSPC || n->storage_rv == -EIO;
}

/* The bytes of entry data in the log past what is durable. */
static size_t unpersisted_bytes(const struct node *n)
{
    raft_index_t last = raft_last_index(n->raft);
    raft_index_t i = raft_persisted_index(n->raft) + 1;
    size_t bytes = 0;

    if (i < raft_first_index(n->raft)) {
        i = raft_first_index(n->raft);
    }
    for (; i <= last; i++) {
        bytes += raft_entry_at(n->raft, i)->len;
    }
    return bytes;
}

static void waiter_advance(struct node *n, struct waiter *w)
{
    if (w->stage == W_NEED_LEADER && n->leader != 0 &&
        now_ms(n) >= w->retry_ms) {
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
    } else if (w->is_read && w->stage == W_APPLY && storage_failing(n)) {
        /* Nothing more gets applied here until the disk works again. */
        waiter_finish(w, n->storage_rv, 0);
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
    w->leader_deadline_ms =
        (n->leader == 0 ? n->leaderless_since_ms : now_ms(n)) +
        2 * n->cfg.election_timeout_ms;
    return w;
}

/* Without a leader for two election timeouts, this node most likely sits
 * in a minority: a new request fails at once, as each waiting its turn
 * (the kernel sends some lookups one at a time) would add up. */
static bool long_leaderless(const struct node *n)
{
    return n->leader == 0 && now_ms(n) - n->leaderless_since_ms >=
                                 2 * (uint64_t)n->cfg.election_timeout_ms;
}

/* The span of a proposal made on behalf of parent: only when parent is
 * sampled, so that an untraced request allocates nothing more. */
static int waiter_trace(struct waiter *w, const struct ikd_trace_ctx *parent)
{
    if (parent == NULL || !parent->sampled || !ikd_tracer_enabled()) {
        return 0;
    }
    w->span = malloc(sizeof(*w->span));
    if (w->span == NULL) {
        return -ENOMEM;
    }
    ikd_span_begin(w->span, "node.propose", IKD_SPAN_INTERNAL, parent);
    ikd_span_set_int(w->span, "raft.node", (int64_t)w->node->cfg.id);
    return 0;
}

int node_propose(struct node *n,
                 const uint8_t *cmd,
                 size_t len,
                 node_propose_cb cb,
                 void *arg)
{
    return node_propose_traced(n, cmd, len, NULL, NODE_PROPOSE_HOLD, cb, arg);
}

int node_propose_traced(struct node *n,
                        const uint8_t *cmd,
                        size_t len,
                        const struct ikd_trace_ctx *parent,
                        unsigned flags,
                        node_propose_cb cb,
                        void *arg)
{
    if (n->stopping) {
        return IKD_ESHUTDOWN;
    }
    if (storage_failing(n)) {
        return n->storage_rv;
    }
    if (long_leaderless(n)) {
        return IKD_ENOLEADER;
    }
    struct waiter *w = waiter_new(n, false);
    if (w == NULL) {
        return -ENOMEM;
    }
    /* On the leader the entry's own spans cover the whole wait; a span of
     * the waiter would only repeat "raft.propose". */
    bool local = n->leader == n->cfg.id;
    if (!local && waiter_trace(w, parent) != 0) {
        free(w);
        return -ENOMEM;
    }
    w->cmd = malloc(len > 0 ? len : 1);
    if (w->cmd == NULL) {
        free(w->span);
        free(w);
        return -ENOMEM;
    }
    memcpy(w->cmd, cmd, len);
    w->cmd_len = len;
    w->propose_cb = cb;
    w->hold = (flags & NODE_PROPOSE_HOLD) != 0;
    w->arg = arg;
    if (local) {
        /* Fail at once rather than calling back before returning. */
        int rv = raft_propose(n->raft, RAFT_ENTRY_COMMAND, cmd, len, &w->index,
                              &w->term);
        if (rv == IKD_EBUSY && w->hold) {
            waiter_hold(n, w, rv);
        } else if (rv != 0) {
            free(w->cmd);
            free(w);
            return rv;
        } else {
            node_trace_proposed(n->trace, w->index, parent, now_ms(n));
            w->stage = W_APPLY;
        }
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
    if (long_leaderless(n)) {
        return IKD_ENOLEADER;
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
            /* Without a leader, or refused by it, nothing was proposed:
             * the change certainly did not happen.  Otherwise its outcome
             * is unknown. */
            int status = w->stage != W_NEED_LEADER           ? IKD_ETIMEDOUT
                         : n->leader != 0 && w->refused != 0 ? w->refused
                                                             : IKD_ENOLEADER;
            waiter_finish(w, status, 0);
        }
        w = next;
    }
}

#define NODE_STALL_PROBE_MS 10

static void stall_cb(uv_timer_t *t)
{
    struct node *n = t->data;
    uint64_t now = uv_hrtime();
    uint64_t late = now > n->stall_due_ns ? now - n->stall_due_ns : 0;

    ikd_hist_observe(&n->stats.loop_stall, late);
    if (late > n->stats.stall_max_ns) {
        n->stats.stall_max_ns = late;
    }
    n->stall_due_ns = now + NODE_STALL_PROBE_MS * 1000000ull;
}

static void tick_cb(uv_timer_t *t)
{
    struct node *n = t->data;
    raft_tick(n->raft);
    senders_tick(n);
    recv_tick(n);
    waiters_expire(n);
    node_trace_expire(n->trace, now_ms(n), 2ull * n->cfg.request_timeout_ms);
    waiters_poke(n);
    process_updates(n);
    member_reqs_check(n);
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
    if (m.forward_resp.status == 0) {
        node_trace_proposed(n->trace, m.forward_resp.index, &f->trace,
                            now_ms(n));
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
    if (r->status == IKD_EBUSY && w->hold) {
        w->id = ++n->next_id;
        waiter_hold(n, w, r->status);
        return;
    }
    if (r->status != 0) {
        waiter_finish(w, r->status, 0);
        return;
    }
    w->stage = W_APPLY;
    w->index = r->index;
    w->term = r->term;
}

static void on_read_index(struct node *n,
                          uint64_t conn_id,
                          raft_id_t from,
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
    int rv = raft_read_index_from(n->raft, rr->ctx, from, r->term);
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
    if (c->span != NULL) {
        ikd_span_end(c->span);
        free(c->span);
    }
    free(c->key);
    free(c);
}

/* The request's span, child of the client's when it sent one; kept only
 * when sampled. */
static void client_req_trace(struct node *n,
                             struct client_req *c,
                             const struct net_client_req *r)
{
    struct ikd_span s;

    if (!ikd_tracer_enabled()) {
        return;
    }
    ikd_span_begin(&s, "ikada.request", IKD_SPAN_SERVER, &r->trace);
    if (!s.recording) {
        return;
    }
    ikd_span_set_str(&s, "ikada.op", net_op_name(r->op));
    ikd_span_set_int(&s, "raft.node", (int64_t)n->cfg.id);
    c->span = malloc(sizeof(*c->span));
    if (c->span != NULL) {
        *c->span = s;
    }
}

static void client_propose_cb(void *arg, int status, uint64_t value)
{
    struct client_req *c = arg;
    if (status < 0 && c->span != NULL) {
        ikd_span_set_error(c->span, ikd_strerror(status));
    }
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
    resp.snapshot = n->snap_index;
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
        rv = node_propose_traced(n, cmd, len,
                                 c->span != NULL ? &c->span->ctx : NULL, 0,
                                 client_propose_cb, c);
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

/* ---- membership (Raft 4) ---- */

/* How long the leader holds a membership request before it answers
 * IKD_ETIMEDOUT; shorter than a client's default timeout, so that the
 * client asks again (a repeat is harmless) and keeps waiting. */
#define NODE_MEMBER_WAIT_MS 2000

/* "HOST:PORT" into p's host and port: 0 or -EINVAL. */
static int parse_host_port(const char *addr, size_t len, struct net_peer *p)
{
    const char *colon = memrchr(addr, ':', len);
    struct in_addr in;
    unsigned long port = 0;
    size_t hlen;
    size_t i;

    if (colon == NULL) {
        return -EINVAL;
    }
    hlen = (size_t)(colon - addr);
    if (hlen == 0 || hlen >= sizeof(p->host) || hlen + 1 == len) {
        return -EINVAL;
    }
    for (i = hlen + 1; i < len; i++) {
        if (addr[i] < '0' || addr[i] > '9' || port > 65535) {
            return -EINVAL;
        }
        port = port * 10 + (unsigned long)(addr[i] - '0');
    }
    if (port == 0 || port > 65535) {
        return -EINVAL;
    }
    memcpy(p->host, addr, hlen);
    p->host[hlen] = 0;
    p->port = (uint16_t)port;
    /* Servers listen on numeric IPv4 addresses (as --cluster requires). */
    if (inet_pton(AF_INET, p->host, &in) != 1) {
        return -EINVAL;
    }
    return 0;
}

/* Follow the core's latest configuration: the peers to link to are its
 * servers, and this node at its own address. */
static void node_sync_members(struct node *n)
{
    const struct raft_membership *m = raft_membership(n->raft, NULL);
    struct node_config *c = &n->cfg;
    int rv;

    n->members = *m;
    c->n_peers = 0;
    for (size_t i = 0; i < m->n; i++) {
        const struct raft_server *sv = &m->servers[i];
        struct net_peer p = {.id = sv->id};

        if (sv->id == c->id) {
            c->peers[c->n_peers++] = n->self;
        } else if (parse_host_port(sv->addr, strlen(sv->addr), &p) == 0) {
            c->peers[c->n_peers++] = p;
        } else {
            IKD_WARN(NODE_MOD, "server %u has address \"%s\" -> not linked",
                     sv->id, sv->addr);
        }
    }
    if (raft_membership_find(m, c->id) == NULL && c->n_peers < IKD_MAX_NODES) {
        c->peers[c->n_peers++] = n->self;
    }
    if (n->transport != NULL) {
        rv = net_transport_set_peers(n->transport, c->peers, c->n_peers);
        if (rv != 0) {
            IKD_WARN(NODE_MOD, "peer links not all updated: %s",
                     ikd_strerror(rv));
        }
    }
}

/* Whether the configuration that q asks for is committed. */
static bool member_req_done(struct node *n, const struct member_req *q)
{
    raft_index_t index;
    const struct raft_membership *m = raft_membership(n->raft, &index);
    const struct raft_server *sv = raft_membership_find(m, q->id);

    if (index > raft_commit(n->raft)) {
        return false;
    }
    return q->op == NET_OP_MEMBER_ADD ? sv != NULL && sv->voter : sv == NULL;
}

static void member_reqs_check(struct node *n)
{
    struct member_req **pp = &n->member_reqs;
    uint64_t now = now_ms(n);

    while (*pp != NULL) {
        struct member_req *q = *pp;
        int status = 1;

        if (member_req_done(n, q)) {
            status = 0;
        } else if (n->role != RAFT_LEADER) {
            status = n->leader != 0 ? IKD_ENOTLEADER : IKD_ENOLEADER;
        } else if (now >= q->deadline_ms) {
            status = IKD_ETIMEDOUT;
        }
        if (status == 1) {
            pp = &q->next;
            continue;
        }
        IKD_INFO(NODE_MOD, "membership %s of %u -> answered: %s",
                 q->op == NET_OP_MEMBER_ADD ? "add" : "remove", q->id,
                 ikd_strerror(status));
        *pp = q->next;
        client_reply_status(n, q->conn_id, q->req_id, status, 0);
        free(q);
    }
}

static void member_reqs_fail(struct node *n, int status)
{
    while (n->member_reqs != NULL) {
        struct member_req *q = n->member_reqs;

        n->member_reqs = q->next;
        client_reply_status(n, q->conn_id, q->req_id, status, 0);
        free(q);
    }
}

/* key is "ID HOST:PORT" (add) or "ID" (remove). */
static int member_req_parse(const struct net_client_req *r,
                            struct member_req *q)
{
    size_t i = 0;
    uint64_t id = 0;
    struct net_peer p;

    while (i < r->key_len && r->key[i] >= '0' && r->key[i] <= '9') {
        id = id * 10 + (uint64_t)(r->key[i++] - '0');
        if (id > UINT32_MAX) {
            return -EINVAL;
        }
    }
    if (i == 0 || id == 0) {
        return -EINVAL;
    }
    q->id = (raft_id_t)id;
    if (r->op == NET_OP_MEMBER_REMOVE) {
        return i == r->key_len ? 0 : -EINVAL;
    }
    if (i >= r->key_len || r->key[i] != ' ' ||
        r->key_len - i - 1 >= sizeof(q->addr) ||
        parse_host_port(r->key + i + 1, r->key_len - i - 1, &p) != 0) {
        return -EINVAL;
    }
    memcpy(q->addr, r->key + i + 1, r->key_len - i - 1);
    q->addr[r->key_len - i - 1] = 0;
    return 0;
}

static void client_member_change(struct node *n,
                                 uint64_t conn_id,
                                 const struct net_client_req *r)
{
    struct member_req *q = calloc(1, sizeof(*q));
    int rv = q == NULL ? -ENOMEM : member_req_parse(r, q);

    if (rv == 0) {
        rv = raft_change(
            n->raft,
            r->op == NET_OP_MEMBER_ADD ? RAFT_CHANGE_ADD : RAFT_CHANGE_REMOVE,
            q->id, q->addr);
    }
    IKD_INFO(NODE_MOD, "membership %s of %u asked -> %s",
             r->op == NET_OP_MEMBER_ADD ? "add" : "remove",
             q != NULL ? q->id : 0, rv == 1 ? "already so" : ikd_strerror(rv));
    if (rv != 0) {
        client_reply_status(n, conn_id, r->req_id, rv == 1 ? 0 : rv, 0);
        free(q);
        process_updates(n);
        return;
    }
    q->conn_id = conn_id;
    q->req_id = r->req_id;
    q->op = r->op;
    q->deadline_ms = now_ms(n) + NODE_MEMBER_WAIT_MS;
    q->next = n->member_reqs;
    n->member_reqs = q;
    process_updates(n);
}

static void client_member_list(struct node *n,
                               uint64_t conn_id,
                               uint64_t req_id)
{
    struct net_client_resp resp = {.req_id = req_id};
    char text[IKD_MAX_NODES * (IKD_MAX_ADDR_BYTES + 24)];
    size_t len = node_members_text(n, text, sizeof(text));

    resp.data = (const uint8_t *)text;
    resp.data_len = len;
    client_reply(n, conn_id, &resp);
}

const struct raft_membership *node_get_members(struct node *n)
{
    return &n->members;
}

size_t node_members_text(struct node *n, char *buf, size_t cap)
{
    const struct raft_server *by_id[IKD_MAX_NODES];
    size_t count = n->members.n < IKD_MAX_NODES ? n->members.n : IKD_MAX_NODES;
    size_t len = 0;

    /* In id order: the configuration keeps servers in the order they
     * were added. */
    for (size_t i = 0; i < count; i++) {
        size_t j = i;

        while (j > 0 && by_id[j - 1]->id > n->members.servers[i].id) {
            by_id[j] = by_id[j - 1];
            j--;
        }
        by_id[j] = &n->members.servers[i];
    }
    for (size_t i = 0; i < count && len < cap; i++) {
        const struct raft_server *sv = by_id[i];
        int k = snprintf(buf + len, cap - len, "%u %s %s\n", sv->id, sv->addr,
                         sv->voter ? "voter" : "learner");

        len += k > 0 ? (size_t)k : 0;
    }
    return len < cap ? len : cap;
}

static void on_client_req(struct node *n,
                          uint64_t conn_id,
                          const struct net_client_req *r)
{
    if (r->op == NET_OP_STATUS) {
        client_status(n, conn_id, r->req_id);
        return;
    }
    if (r->op == NET_OP_MEMBER_LIST &&
        r->key_len == strlen(NET_MEMBER_LIST_LOCAL) &&
        memcmp(r->key, NET_MEMBER_LIST_LOCAL, r->key_len) == 0) {
        client_member_list(n, conn_id, r->req_id);
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
    if (r->op == NET_OP_MEMBER_LIST) {
        client_member_list(n, conn_id, r->req_id);
        return;
    }
    if (r->op == NET_OP_MEMBER_ADD || r->op == NET_OP_MEMBER_REMOVE) {
        client_member_change(n, conn_id, r);
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
    client_req_trace(n, c, r);
    int rv = client_start(n, c, r);
    if (rv != 0) {
        client_reply_status(n, conn_id, r->req_id, rv, 0);
        client_req_free(c);
    }
}

/* ---- snapshots (Raft 7) ----
 *
 * The state machine's tables are themselves the durable snapshot: the log
 * is compacted behind the applied index, keeping a trail for followers
 * that are a little behind.  A follower that needs compacted entries gets
 * a snapshot file (kv/snapshot.h), made on a worker thread from a
 * consistent read and streamed one chunk at a time; the follower writes
 * it to its data folder, checks it, and installs it in one transaction
 * with the rest of a storage job.  Files: DIR/snap-out.db (the leader's
 * latest), DIR/snap-in.db (one being received), DIR/snap-<index>.db
 * (received, waiting for its install); all are removed at start. */

#define SNAP_OUT_NAME "snap-out.db"
#define SNAP_IN_NAME "snap-in.db"
/* An unanswered chunk is sent again after this long. */
#define SNAP_ACK_TIMEOUT_MS 2000
/* A follower that has the whole file but has not reported the install
 * after this long is given up, and the core asks again: it may have
 * crashed before the install was durable. */
#define SNAP_INSTALL_TIMEOUT_MS 20000
/* A transfer that made no progress for this long is dropped. */
#define SNAP_IDLE_TIMEOUT_MS 30000
/* After a failed transfer, the next one to the same follower waits this
 * long, doubled for each further failure in a row, up to the most. */
#define SNAP_RETRY_MIN_MS 200
#define SNAP_RETRY_MAX_MS 10000

_Static_assert(SNAP_RETRY_MAX_MS < SNAP_IDLE_TIMEOUT_MS,
               "a sender waiting to retry must not look idle");

/* The retry record of peer, made when missing (NULL when full). */
static struct snap_retry *snap_retry_of(struct node *n, raft_id_t peer)
{
    struct snap_retry *free_slot = NULL;

    for (size_t i = 0; i < IKD_MAX_NODES; i++) {
        if (n->snap_retry[i].peer == peer) {
            return &n->snap_retry[i];
        }
        if (n->snap_retry[i].peer == 0 && free_slot == NULL) {
            free_slot = &n->snap_retry[i];
        }
    }
    if (free_slot != NULL) {
        *free_slot = (struct snap_retry){.peer = peer};
    }
    return free_slot;
}

static void snap_retry_failed(struct node *n, raft_id_t peer)
{
    struct snap_retry *r = snap_retry_of(n, peer);
    uint64_t delay = SNAP_RETRY_MIN_MS;

    if (r == NULL) {
        return;
    }
    for (unsigned i = 0; i < r->fails && delay < SNAP_RETRY_MAX_MS; i++) {
        delay *= 2;
    }
    r->fails++;
    r->not_before_ms =
        now_ms(n) + (delay < SNAP_RETRY_MAX_MS ? delay : SNAP_RETRY_MAX_MS);
}

/* Whether a transfer to peer may start now. */
static bool snap_retry_due(struct node *n, raft_id_t peer)
{
    for (size_t i = 0; i < IKD_MAX_NODES; i++) {
        if (n->snap_retry[i].peer == peer) {
            return now_ms(n) >= n->snap_retry[i].not_before_ms;
        }
    }
    return true;
}

static void snap_retry_clear(struct node *n, raft_id_t peer)
{
    for (size_t i = 0; i < IKD_MAX_NODES; i++) {
        if (n->snap_retry[i].peer == peer) {
            n->snap_retry[i].peer = 0;
        }
    }
}

static int data_path(const struct node *n, const char *name, char **out)
{
    return asprintf(out, "%s/%s", n->data_dir, name) < 0 ? -ENOMEM : 0;
}

static void remove_snapshot_files(struct node *n)
{
    DIR *d = opendir(n->data_dir);
    struct dirent *e;

    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "snap-", 5) == 0) {
            char *path;
            if (data_path(n, e->d_name, &path) == 0) {
                unlink(path);
                free(path);
            }
        }
    }
    closedir(d);
}

static raft_term_t term_of(const struct node *n, raft_index_t index)
{
    const struct raft_entry *e = raft_entry_at(n->raft, index);

    if (e != NULL) {
        return e->term;
    }
    return index + 1 == raft_first_index(n->raft) ? raft_prev_term(n->raft) : 0;
}

/* Plan a compaction once the log holds threshold entries past the latest
 * snapshot point; it goes into the next storage job. */
/* The highest index at or below the applied one such that the entries
 * after it up to the applied one hold more than keep bytes; 0 when all
 * of them together hold no more. */
static raft_index_t trailing_bytes_point(const struct node *n, uint64_t keep)
{
    raft_index_t first = raft_first_index(n->raft);
    uint64_t sum = 0;

    for (raft_index_t i = n->applied; i >= first && i > 0; i--) {
        sum += raft_entry_at(n->raft, i)->len;
        if (sum > keep) {
            return i;
        }
    }
    return 0;
}

static void maybe_compact(struct node *n)
{
    raft_index_t to;
    bool by_count = n->applied >= n->snap_index + n->cfg.snapshot_threshold;
    bool by_bytes = n->cfg.snapshot_bytes != 0 &&
                    raft_log_bytes(n->raft) > n->cfg.snapshot_bytes;

    if (n->pend_compact || n->pend_install_path != NULL ||
        (!by_count && !by_bytes) || n->applied <= n->snap_index) {
        return;
    }
    to = n->applied > n->cfg.snapshot_trailing
             ? n->applied - n->cfg.snapshot_trailing
             : 0;
    if (by_bytes) {
        raft_index_t point = trailing_bytes_point(n, n->cfg.snapshot_bytes / 4);

        to = point > to ? point : to;
    }
    if (to < raft_first_index(n->raft) || to > raft_persisted_index(n->raft)) {
        return;
    }
    n->pend_compact = true;
    n->pend_compact_to = to;
    n->pend_compact_term = term_of(n, to);
    n->pend_snap_index = n->applied;
    n->pend_snap_term = term_of(n, n->applied);
}

static void compact_done(struct node *n, const struct job *j)
{
    raft_index_t to = j->batch.compact_to;

    if (raft_compact(n->raft, to) != 0) {
        IKD_WARN(NODE_MOD, "compaction to index=%llu refused by the core",
                 (unsigned long long)to);
    }
    n->snap_index = j->batch.snap_index;
    n->stats.compactions++;
    IKD_INFO(NODE_MOD,
             "snapshot point index=%llu -> log compacted up to %llu, "
             "kept from %llu",
             (unsigned long long)n->snap_index, (unsigned long long)to,
             (unsigned long long)raft_first_index(n->raft));
}

/* A proposal applied through a snapshot has no result of its own here:
 * its outcome is unknown to this node (a retry with its session learns
 * it). */
static void install_done(struct node *n, const struct job *j)
{
    raft_index_t index = j->batch.install_index;

    n->snap_index = index;
    n->stats.snapshots_installed++;
    for (struct waiter *w = n->waiters.next; w != &n->waiters;) {
        struct waiter *next = w->next;
        if (!w->is_read && w->stage == W_APPLY && w->index <= index) {
            waiter_finish(w, IKD_ETIMEDOUT, 0);
        }
        w = next;
    }
    unlink(j->batch.install_path);
    IKD_INFO(NODE_MOD, "snapshot index=%llu term=%llu installed",
             (unsigned long long)index,
             (unsigned long long)j->batch.install_term);
}

/* -- the leader's side -- */

struct snap_send
{
    struct node *node;
    raft_id_t peer;
    raft_index_t need; /* the snapshot must reach this index */
    bool have_file;
    int fd;
    struct net_snap_id id;
    uint64_t offset;   /* the next byte to send */
    bool reading;      /* a read of the file is in flight */
    bool awaiting_ack; /* a chunk is on its way */
    bool done;         /* the follower has every byte */
    bool closing;      /* freed once the read in flight ends */
    uint64_t sent_ms;
    uint64_t progress_ms;
    uv_fs_t req;
    uint8_t *buf;
};

/* The slot of peer's sender, else a free slot for one. */
static struct snap_send **sender_slot(struct node *n, raft_id_t peer)
{
    struct snap_send **free_slot = NULL;

    for (size_t i = 0; i < IKD_MAX_NODES; i++) {
        if (n->senders[i] != NULL && n->senders[i]->peer == peer) {
            return &n->senders[i];
        }
        if (n->senders[i] == NULL && free_slot == NULL) {
            free_slot = &n->senders[i];
        }
    }
    return free_slot;
}

static void sender_free(struct snap_send *s)
{
    if (s->fd >= 0) {
        close(s->fd);
    }
    free(s->buf);
    free(s);
}

/* Detach s from its node and free it once no read is in flight. */
static void sender_stop(struct node *n, struct snap_send *s, bool failed)
{
    struct snap_send **slot = sender_slot(n, s->peer);

    if (slot != NULL && *slot == s) {
        *slot = NULL;
    }
    if (failed) {
        n->stats.snapshots_failed++;
        snap_retry_failed(n, s->peer);
        raft_snapshot_failed(n->raft, s->peer);
    }
    if (s->reading) {
        s->closing = true;
    } else {
        sender_free(s);
    }
}

static void sender_send_next(struct snap_send *s);

static void sender_read_cb(uv_fs_t *req)
{
    struct snap_send *s = req->data;
    struct node *n = s->node;
    ssize_t got = req->result;

    uv_fs_req_cleanup(req);
    s->reading = false;
    n->snap_async--;
    if (s->closing) {
        sender_free(s);
        node_maybe_finish_stop(n);
        return;
    }
    if (got <= 0) {
        IKD_WARN(NODE_MOD, "snapshot to %u: reading the file failed: %s",
                 s->peer, got < 0 ? uv_strerror((int)got) : "short file");
        sender_stop(n, s, true);
        return;
    }
    struct net_msg m = {.kind = NET_SNAP_CHUNK};
    m.snap_chunk.id = s->id;
    m.snap_chunk.offset = s->offset;
    m.snap_chunk.data = s->buf;
    m.snap_chunk.len = (size_t)got;
    m.snap_chunk.crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), s->buf, (uInt)got);
    s->awaiting_ack = true;
    s->sent_ms = now_ms(n);
    (void)net_send_peer(n->transport, s->peer, &m);
}

static void sender_send_next(struct snap_send *s)
{
    struct node *n = s->node;
    uint64_t left = s->id.size_bytes - s->offset;
    size_t len =
        left < IKD_SNAP_CHUNK_BYTES ? (size_t)left : IKD_SNAP_CHUNK_BYTES;

    if (!s->have_file || s->reading || s->awaiting_ack || s->done ||
        n->stopping) {
        return;
    }
    s->req.data = s;
    uv_buf_t b = uv_buf_init((char *)s->buf, (unsigned)len);
    if (uv_fs_read(n->loop, &s->req, s->fd, &b, 1, (int64_t)s->offset,
                   sender_read_cb) == 0) {
        s->reading = true;
        n->snap_async++;
    }
}

/* Point s at the leader's current snapshot file and start streaming. */
static void sender_open(struct node *n, struct snap_send *s)
{
    char *path;

    if (data_path(n, SNAP_OUT_NAME, &path) != 0) {
        return;
    }
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (s->fd < 0) {
        IKD_WARN(NODE_MOD, "snapshot to %u: cannot open the file: %s", s->peer,
                 strerror(errno));
        sender_stop(n, s, true);
        return;
    }
    s->have_file = true;
    s->id.term = raft_term(n->raft);
    s->id.index = n->out_info.index;
    s->id.snap_term = n->out_info.term;
    s->id.size_bytes = n->out_info.size_bytes;
    s->id.crc = n->out_info.crc;
    s->progress_ms = now_ms(n);
    IKD_INFO(NODE_MOD,
             "follower %u needs a snapshot -> send index=%llu, %llu bytes",
             s->peer, (unsigned long long)s->id.index,
             (unsigned long long)s->id.size_bytes);
    sender_send_next(s);
}

struct snap_create
{
    uv_work_t work;
    struct node *node;
    char *tmp_path;
    char *path;
    struct kv_snapshot_info info;
    int rv;
    uint64_t took_ns;
};

static const struct kv_sm node_sm = {.ops = &kv_fsm_ops, .ctx = NULL};

static void create_work_cb(uv_work_t *work)
{
    struct snap_create *c = work->data;
    uint64_t start = uv_hrtime();

    /* The file this one replaces is too old for any follower that still
     * needs one, and senders read it through descriptors of their own:
     * its space is better free before the new file needs as much. */
    unlink(c->path);
    c->rv =
        kv_snapshot_create(c->node->data_dir, &node_sm, c->tmp_path, &c->info);
    if (c->rv == 0 && rename(c->tmp_path, c->path) != 0) {
        c->rv = -errno;
        unlink(c->tmp_path);
    }
    c->took_ns = uv_hrtime() - start;
}

static void snapshot_file_ensure(struct node *n, raft_index_t need);

/* Senders waiting for a file start once it is there; after a failed
 * attempt, the next one comes a little later (senders_tick). */
static void senders_start_waiting(struct node *n)
{
    for (size_t i = 0; i < IKD_MAX_NODES; i++) {
        struct snap_send *s = n->senders[i];
        if (s == NULL || s->have_file) {
            continue;
        }
        if (n->out_ready && n->out_info.index >= s->need) {
            if (snap_retry_due(n, s->peer)) {
                sender_open(n, s);
            }
        } else if (now_ms(n) >= n->out_retry_ms) {
            snapshot_file_ensure(n, s->need);
        }
    }
}

static void create_after_cb(uv_work_t *work, int status)
{
    struct snap_create *c = work->data;
    struct node *n = c->node;

    n->out_creating = false;
    n->snap_async--;
    if (status == 0 && c->rv == 0 && !n->stopping) {
        n->out_ready = true;
        n->out_info = c->info;
        n->stats.snapshots_created++;
        IKD_INFO(NODE_MOD, "snapshot index=%llu made: %llu bytes in %.1f ms",
                 (unsigned long long)c->info.index,
                 (unsigned long long)c->info.size_bytes,
                 (double)c->took_ns / 1e6);
    } else if (!n->stopping) {
        n->out_ready = false;
        n->out_retry_ms = now_ms(n) + 1000;
        IKD_WARN(NODE_MOD, "making a snapshot failed: %s -> retry in 1 s",
                 ikd_strerror(c->rv != 0 ? c->rv : status));
    }
    free(c->tmp_path);
    free(c->path);
    free(c);
    if (n->stopping) {
        node_maybe_finish_stop(n);
        return;
    }
    senders_start_waiting(n);
}

/* Make a new snapshot file unless the current one is recent enough. */
static void snapshot_file_ensure(struct node *n, raft_index_t need)
{
    struct snap_create *c;

    if (n->out_creating || now_ms(n) < n->out_retry_ms ||
        (n->out_ready && n->out_info.index >= need &&
         n->out_info.index + 1 >= raft_first_index(n->raft))) {
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || data_path(n, SNAP_OUT_NAME ".tmp", &c->tmp_path) != 0 ||
        data_path(n, SNAP_OUT_NAME, &c->path) != 0) {
        if (c != NULL) {
            free(c->tmp_path);
            free(c);
        }
        return;
    }
    c->node = n;
    c->work.data = c;
    /* Senders keep their open file; new ones wait for the new file. */
    n->out_ready = false;
    if (uv_queue_work(n->loop, &c->work, create_work_cb, create_after_cb) !=
        0) {
        free(c->tmp_path);
        free(c->path);
        free(c);
        return;
    }
    n->out_creating = true;
    n->snap_async++;
}

/* The core asks for a snapshot to peer (RAFT_MSG_SNAPSHOT). */
static void snapshot_send_start(struct node *n,
                                raft_id_t peer,
                                raft_index_t need)
{
    struct snap_send **slot = sender_slot(n, peer);
    struct snap_send *s;

    if (slot == NULL) {
        return;
    }
    if (*slot != NULL) {
        sender_stop(n, *slot, false);
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->buf = malloc(IKD_SNAP_CHUNK_BYTES)) == NULL) {
        free(s);
        raft_snapshot_failed(n->raft, peer);
        return;
    }
    s->node = n;
    s->peer = peer;
    s->need = need;
    s->fd = -1;
    /* Idle from now on, while the file is made or a retry waits. */
    s->progress_ms = now_ms(n);
    *slot = s;
    n->stats.snapshots_sent++;
    snapshot_file_ensure(n, need);
    if (n->out_ready && n->out_info.index >= need && snap_retry_due(n, peer)) {
        sender_open(n, s);
    }
}

static bool snap_id_equal(const struct net_snap_id *a,
                          const struct net_snap_id *b)
{
    return a->term == b->term && a->index == b->index &&
           a->snap_term == b->snap_term && a->size_bytes == b->size_bytes &&
           a->crc == b->crc;
}

static void on_snap_ack(struct node *n,
                        raft_id_t from,
                        const struct net_snap_ack *a)
{
    struct snap_send **slot = sender_slot(n, from);
    struct snap_send *s = slot != NULL ? *slot : NULL;

    if (s == NULL || !s->have_file || !snap_id_equal(&s->id, &a->id)) {
        return;
    }
    if (a->status != 0) {
        IKD_WARN(NODE_MOD, "follower %u refused the snapshot: %s -> stop", from,
                 ikd_strerror(a->status));
        sender_stop(n, s, true);
        return;
    }
    s->awaiting_ack = false;
    if (a->next_offset != s->offset) {
        s->progress_ms = now_ms(n);
    }
    s->offset = a->next_offset;
    if (s->offset == s->id.size_bytes) {
        if (!s->done) {
            s->done = true;
            s->progress_ms = now_ms(n);
            snap_retry_clear(n, from);
        }
        return;
    }
    sender_send_next(s);
}

/* Every tick: resend what went unanswered, drop what is no longer
 * needed. */
static void senders_tick(struct node *n)
{
    uint64_t now = now_ms(n);

    for (size_t i = 0; i < IKD_MAX_NODES; i++) {
        struct snap_send *s = n->senders[i];
        if (s == NULL) {
            continue;
        }
        if (!raft_snapshot_pending(n->raft, s->peer) ||
            (s->have_file && s->id.term != raft_term(n->raft))) {
            sender_stop(n, s, false);
        } else if (now - s->progress_ms >
                   (s->done ? SNAP_INSTALL_TIMEOUT_MS : SNAP_IDLE_TIMEOUT_MS)) {
            IKD_WARN(NODE_MOD, "snapshot to %u made no progress -> give up",
                     s->peer);
            sender_stop(n, s, true);
        } else if (s->awaiting_ack && now - s->sent_ms > SNAP_ACK_TIMEOUT_MS) {
            s->awaiting_ack = false;
            sender_send_next(s);
        }
    }
    if (!n->out_creating) {
        senders_start_waiting(n);
    }
}

/* -- the follower's side -- */

struct snap_recv
{
    struct node *node;
    raft_id_t leader;
    struct net_snap_id id;
    int fd;
    uint64_t received;
    uLong crc;
    bool writing;
    bool complete;
    bool closing;
    uint64_t last_ms;
    uv_fs_t req;
    uint8_t *buf;
    size_t len;
};

static void send_snap_ack(struct node *n,
                          raft_id_t to,
                          const struct net_snap_id *id,
                          uint64_t next,
                          int status)
{
    struct net_msg m = {.kind = NET_SNAP_ACK};
    m.snap_ack.id = *id;
    m.snap_ack.next_offset = next;
    m.snap_ack.status = status;
    (void)net_send_peer(n->transport, to, &m);
}

static void recv_free(struct snap_recv *r)
{
    if (r->fd >= 0) {
        close(r->fd);
    }
    free(r->buf);
    free(r);
}

/* Drop the transfer and its file; freed once no write is in flight. */
static void recv_discard(struct node *n)
{
    struct snap_recv *r = n->recv;
    char *path;

    if (r == NULL) {
        return;
    }
    n->recv = NULL;
    if (data_path(n, SNAP_IN_NAME, &path) == 0) {
        unlink(path);
        free(path);
    }
    if (r->writing) {
        r->closing = true;
    } else {
        recv_free(r);
    }
}

/* The whole file is here and checked: move it aside and hand it to the
 * core, which decides whether to take its state. */
/* Point m at the configuration the snapshot file holds (Raft 7), if it
 * holds one that decodes. */
static void snapshot_membership(const char *path,
                                struct raft_msg *m,
                                struct raft_membership *members)
{
    uint8_t buf[RAFT_MEMBERSHIP_MAX_BYTES];
    raft_index_t index = 0;
    size_t len = 0;
    bool found = false;
    int rv = kv_snapshot_conf(path, &found, &index, buf, sizeof(buf), &len);

    if (rv == 0 && found) {
        rv = raft_membership_decode(buf, len, members);
    }
    if (rv != 0) {
        IKD_WARN(NODE_MOD, "snapshot %s configuration unreadable: %s", path,
                 ikd_strerror(rv));
    }
    if (rv == 0 && found) {
        m->snapshot.membership = members;
        m->snapshot.membership_index = index;
    }
}

static void recv_complete(struct node *n, struct snap_recv *r)
{
    char name[64];
    char *in_path = NULL;
    char *path = NULL;
    struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT};
    struct raft_membership members;

    snprintf(name, sizeof(name), "snap-%llu.db",
             (unsigned long long)r->id.index);
    if (data_path(n, SNAP_IN_NAME, &in_path) != 0 ||
        data_path(n, name, &path) != 0 || rename(in_path, path) != 0) {
        free(in_path);
        free(path);
        send_snap_ack(n, r->leader, &r->id, r->received, -EIO);
        recv_discard(n);
        return;
    }
    free(in_path);
    send_snap_ack(n, r->leader, &r->id, r->received, 0);
    m.from = r->leader;
    m.to = n->cfg.id;
    m.term = r->id.term;
    m.snapshot.index = r->id.index;
    m.snapshot.term = r->id.snap_term;
    snapshot_membership(path, &m, &members);
    n->recv_path = path;
    recv_free(r);
    n->recv = NULL;
    (void)raft_step(n->raft, &m);
    process_updates(n);
    /* Not taken (stale, or not ahead of commit): nothing to install. */
    if (n->recv_path != NULL) {
        unlink(n->recv_path);
        free(n->recv_path);
        n->recv_path = NULL;
    }
}

static void recv_fsync_cb(uv_fs_t *req)
{
    struct snap_recv *r = req->data;
    struct node *n = r->node;
    ssize_t rv = req->result;

    uv_fs_req_cleanup(req);
    r->writing = false;
    n->snap_async--;
    if (r->closing || n->stopping) {
        recv_free(r);
        node_maybe_finish_stop(n);
        return;
    }
    if (rv < 0) {
        send_snap_ack(n, r->leader, &r->id, r->received, (int)rv);
        recv_discard(n);
        return;
    }
    recv_complete(n, r);
}

static void recv_write_cb(uv_fs_t *req)
{
    struct snap_recv *r = req->data;
    struct node *n = r->node;
    ssize_t wrote = req->result;

    uv_fs_req_cleanup(req);
    r->writing = false;
    n->snap_async--;
    if (r->closing || n->stopping) {
        recv_free(r);
        node_maybe_finish_stop(n);
        return;
    }
    if (wrote != (ssize_t)r->len) {
        /* A regular file written short has filled the disk. */
        int err = wrote < 0 ? (int)wrote : -ENOSPC;

        IKD_WARN(NODE_MOD, "snapshot: writing the file failed: %s -> drop it",
                 ikd_strerror(err));
        /* Until a storage job succeeds, requests here fail at once with
         * the disk's error rather than wait for a state that cannot
         * arrive. */
        n->storage_rv = err;
        send_snap_ack(n, r->leader, &r->id, r->received, err);
        recv_discard(n);
        return;
    }
    r->crc = crc32(r->crc, r->buf, (uInt)r->len);
    r->received += r->len;
    r->last_ms = now_ms(n);
    if (r->received < r->id.size_bytes) {
        send_snap_ack(n, r->leader, &r->id, r->received, 0);
        return;
    }
    if ((uint32_t)r->crc != r->id.crc) {
        IKD_WARN(NODE_MOD, "snapshot index=%llu: checksum mismatch -> drop it",
                 (unsigned long long)r->id.index);
        send_snap_ack(n, r->leader, &r->id, r->received, IKD_ECORRUPT);
        recv_discard(n);
        return;
    }
    r->req.data = r;
    if (uv_fs_fsync(n->loop, &r->req, r->fd, recv_fsync_cb) == 0) {
        r->writing = true;
        n->snap_async++;
    }
}

static struct snap_recv *recv_begin(struct node *n,
                                    raft_id_t leader,
                                    const struct net_snap_id *id)
{
    struct snap_recv *r = calloc(1, sizeof(*r));
    char *path;

    if (r == NULL || (r->buf = malloc(IKD_SNAP_CHUNK_BYTES)) == NULL ||
        data_path(n, SNAP_IN_NAME, &path) != 0) {
        if (r != NULL) {
            free(r->buf);
            free(r);
        }
        return NULL;
    }
    r->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    free(path);
    if (r->fd < 0) {
        IKD_WARN(NODE_MOD, "snapshot: cannot create the file: %s",
                 strerror(errno));
        free(r->buf);
        free(r);
        return NULL;
    }
    r->node = n;
    r->leader = leader;
    r->id = *id;
    r->crc = crc32(0L, Z_NULL, 0);
    r->last_ms = now_ms(n);
    IKD_INFO(NODE_MOD,
             "leader %u sends a snapshot index=%llu term=%llu, %llu bytes "
             "-> receive it",
             leader, (unsigned long long)id->index,
             (unsigned long long)id->snap_term,
             (unsigned long long)id->size_bytes);
    return r;
}

static void on_snap_chunk(struct node *n,
                          raft_id_t from,
                          const struct net_snap_chunk *c)
{
    struct snap_recv *r = n->recv;

    if (c->id.term < raft_term(n->raft)) {
        send_snap_ack(n, from, &c->id, 0, IKD_ESTALE);
        return;
    }
    if (r != NULL && (r->leader != from || !snap_id_equal(&r->id, &c->id))) {
        if (r->writing) {
            return; /* answered once the write in flight ends */
        }
        recv_discard(n);
        r = NULL;
    }
    if (r == NULL) {
        if (c->offset != 0) {
            send_snap_ack(n, from, &c->id, 0, 0); /* start over */
            return;
        }
        r = n->recv = recv_begin(n, from, &c->id);
        if (r == NULL) {
            send_snap_ack(n, from, &c->id, 0, -EIO);
            return;
        }
    }
    if (r->writing) {
        return;
    }
    if (c->offset != r->received ||
        (uint32_t)crc32(crc32(0L, Z_NULL, 0), c->data, (uInt)c->len) !=
            c->crc ||
        c->len == 0) {
        send_snap_ack(n, from, &c->id, r->received, 0);
        return;
    }
    memcpy(r->buf, c->data, c->len);
    r->len = c->len;
    r->req.data = r;
    uv_buf_t b = uv_buf_init((char *)r->buf, (unsigned)r->len);
    if (uv_fs_write(n->loop, &r->req, r->fd, &b, 1, (int64_t)c->offset,
                    recv_write_cb) == 0) {
        r->writing = true;
        n->snap_async++;
    }
}

static void recv_tick(struct node *n)
{
    if (n->recv != NULL && !n->recv->writing &&
        now_ms(n) - n->recv->last_ms > SNAP_IDLE_TIMEOUT_MS) {
        IKD_WARN(NODE_MOD, "snapshot from %u stalled -> drop it",
                 n->recv->leader);
        recv_discard(n);
    }
}

/* The core took the state of the snapshot in n->recv_path: install it
 * with the next storage job, before anything else the core asked for. */
static void on_snapshot_taken(struct node *n, const struct raft_update *u)
{
    if (n->recv_path == NULL) {
        IKD_ERROR(NODE_MOD, "the core took a snapshot that is not here");
        return;
    }
    if (n->pend_install_path != NULL) {
        unlink(n->pend_install_path);
        free(n->pend_install_path);
    }
    n->pend_install_path = n->recv_path;
    n->recv_path = NULL;
    n->pend_install_index = u->snapshot_index;
    n->pend_install_term = u->snapshot_term;
    n->pend_compact = false;
    n->pend_log_from = u->log_dirty_from;
    n->apply_queued = u->snapshot_index;
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
    if (m->type == RAFT_MSG_APPEND && m->append.n_entries > 0 &&
        storage_failing(n) &&
        unpersisted_bytes(n) > IKD_MAX_UNCOMMITTED_BYTES) {
        /* Entries this node cannot store would pile up in memory and in
         * the next write, which then needs ever more free space.  Dropped
         * like a lost message: the leader sends them again once this node
         * answers. */
        n->stats.appends_dropped++;
        return;
    }
    int rv = raft_step(n->raft, m);
    if (m->type == RAFT_MSG_APPEND_RESP) {
        node_trace_matched(n->trace, n->raft);
    }
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
            if (m->n_traces > 0 && from_peer) {
                node_trace_received(n->trace, m->traces, m->n_traces,
                                    now_ms(n));
            }
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
                on_read_index(n, conn_id, from, &m->read_index);
            }
            break;
        case NET_READ_INDEX_RESP:
            on_read_index_resp(n, &m->read_index_resp);
            break;
        case NET_CLIENT_REQ:
            on_client_req(n, conn_id, &m->req);
            break;
        case NET_SNAP_CHUNK:
            if (from_peer) {
                on_snap_chunk(n, from, &m->snap_chunk);
            }
            break;
        case NET_SNAP_ACK:
            if (from_peer) {
                on_snap_ack(n, from, &m->snap_ack);
            }
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

static void peer_addr(const struct net_peer *p, struct raft_server *sv)
{
    snprintf(sv->addr, sizeof(sv->addr), "%s:%u", p->host, (unsigned)p->port);
}

/* The configuration to start from (Raft 4): the stored one; on a first
 * start with a cluster list, its servers as voters; none on a server that
 * joins (the leader's log brings it).  With recover, this server alone, as
 * of the end of its log, so that no entry in it can bring the lost
 * servers back.  A configuration made here is stored, so that it is known
 * after a restart and travels in snapshots. */
static int node_start_membership(struct node *n,
                                 const struct kv_state *st,
                                 struct raft_membership *m,
                                 raft_index_t *index)
{
    uint8_t buf[RAFT_MEMBERSHIP_MAX_BYTES];
    size_t len;
    int rv;

    memset(m, 0, sizeof(*m));
    *index = 0;
    if (n->cfg.recover) {
        m->n = 1;
        m->servers[0].id = n->cfg.id;
        m->servers[0].voter = true;
        peer_addr(&n->self, &m->servers[0]);
        *index = st->first_index + st->n_entries - 1;
        IKD_WARN(NODE_MOD,
                 "recovery asked -> this node alone is the cluster from its "
                 "own state at index=%llu; writes the lost majority may have "
                 "committed can be missing, and the other servers must not "
                 "return with their old data",
                 (unsigned long long)*index);
    } else if (st->has_conf) {
        *index = st->conf_index;
        rv = raft_membership_decode(st->conf_data, st->conf_len, m);
        return rv == 0 ? 0 : IKD_ECORRUPT;
    } else if (n->cfg.join) {
        return 0;
    } else {
        for (size_t i = 0; i < n->cfg.n_peers; i++) {
            m->servers[i].id = n->cfg.peers[i].id;
            m->servers[i].voter = true;
            peer_addr(&n->cfg.peers[i], &m->servers[i]);
        }
        m->n = n->cfg.n_peers;
    }
    rv = raft_membership_encode(m, buf, sizeof(buf), &len);
    if (rv == 0) {
        rv = kv_store_set_conf(n->store, *index, buf, len);
    }
    return rv;
}

static int node_make_raft(struct node *n, const struct kv_state *st)
{
    struct raft_config rc = {0};
    struct raft_membership m;
    int rv = node_start_membership(n, st, &m, &rc.membership_index);

    if (rv != 0) {
        return rv;
    }
    rc.id = n->cfg.id;
    rc.membership = &m;
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
    rv = raft_load(n->raft, st->term, st->vote, st->applied, st->first_index,
                   st->prev_term, st->entries, st->n_entries);
    if (rv == 0) {
        node_sync_members(n);
    }
    return rv;
}

static int node_open_storage(struct node *n)
{
    struct kv_state st = {0};
    int rv;

    n->orphans = kv_orphans_new();
    if (n->orphans == NULL) {
        return -ENOMEM;
    }
    n->sm = (struct kv_sm){.ops = &kv_fsm_ops, .ctx = n->orphans};
    rv = kv_store_open(n->data_dir, n->cfg.id, &n->sm, &n->store);
    if (rv != 0) {
        return rv;
    }
    rv = kv_store_load(n->store, &st);
    if (rv != 0) {
        return rv;
    }
    rv = node_make_raft(n, &st);
    if (rv == 0) {
        n->snap_index = st.snap_index;
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
    n->leaderless_since_ms = uv_now(loop);
    n->data_dir = strdup(cfg->data_dir);
    if (n->data_dir == NULL) {
        return -ENOMEM;
    }
    n->cfg.data_dir = n->data_dir;
    n->waiters.next = n->waiters.prev = &n->waiters;
    n->trace = node_trace_new();
    /* A joining server has no list to compare. */
    n->cluster_hash = cfg->join ? 0 : cluster_hash(cfg);
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (cfg->peers[i].id == cfg->id) {
            n->self = cfg->peers[i];
        }
    }
    if (n->self.id == 0) {
        return -EINVAL;
    }
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
    node_trace_free(n->trace);
    if (n->reader != NULL) {
        kv_reader_close(n->reader);
    }
    if (n->store != NULL) {
        kv_store_close(n->store);
    }
    kv_orphans_free(n->orphans);
    if (n->raft != NULL) {
        raft_free(n->raft);
    }
    msgs_drop(&n->pend_msgs);
    free(n->pend_install_path);
    free(n->recv_path);
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
    if ((rv == -ENOSPC || rv == -EIO) && n->store == NULL) {
        /* The database could not be opened.  Snapshot files are only ever
         * temporary, and one left behind may be what fills the disk. */
        kv_orphans_free(n->orphans);
        n->orphans = NULL;
        remove_snapshot_files(n);
        rv = node_open_storage(n);
    }
    if (rv == 0) {
        remove_snapshot_files(n);
    }
    if (rv == 0) {
        rv = net_transport_start(loop, cfg->id, n->cfg.peers, n->cfg.n_peers,
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
    uv_timer_init(loop, &n->stall_timer);
    n->stall_timer.data = n;
    n->stall_due_ns = uv_hrtime() + NODE_STALL_PROBE_MS * 1000000ull;
    uv_timer_start(&n->stall_timer, stall_cb, NODE_STALL_PROBE_MS,
                   NODE_STALL_PROBE_MS);
    *out = n;
    return 0;
}

static void node_maybe_finish_stop(struct node *n)
{
    if (n->open_handles > 0 || !n->transport_closed || n->running != NULL ||
        n->snap_async > 0 || n->ckpt_running) {
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
    for (size_t i = 0; i < IKD_MAX_NODES; i++) {
        if (n->senders[i] != NULL) {
            sender_stop(n, n->senders[i], false);
        }
    }
    member_reqs_fail(n, IKD_ESHUTDOWN);
    recv_discard(n);
    n->open_handles = 3;
    uv_close((uv_handle_t *)&n->stall_timer, handle_closed_cb);
    uv_close((uv_handle_t *)&n->tick_timer, handle_closed_cb);
    uv_close((uv_handle_t *)&n->retry_timer, handle_closed_cb);
    net_transport_stop(n->transport, transport_stopped_cb, n);
}

struct kv_orphans *node_orphans(struct node *n)
{
    return n->orphans;
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
    out->snapshot = n->snap_index;
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
    ikd_metric_family(b, "ikada_first_log_index", "gauge",
                      "Index of the first entry kept after compaction.");
    ikd_metric_u64(b, "ikada_first_log_index", "", raft_first_index(n->raft));
    ikd_metric_family(b, "ikada_log_bytes", "gauge",
                      "Bytes of entry data the log holds.");
    ikd_metric_u64(b, "ikada_log_bytes", "", raft_log_bytes(n->raft));
    ikd_metric_family(b, "ikada_snapshot_index", "gauge",
                      "Latest snapshot point: compaction or install.");
    ikd_metric_u64(b, "ikada_snapshot_index", "", n->snap_index);
    ikd_metric_family(b, "ikada_loop_stall_max_seconds", "gauge",
                      "Longest delay of the event loop since start.");
    ikd_buf_printf(b, "ikada_loop_stall_max_seconds %.6f\n",
                   (double)n->stats.stall_max_ns / 1e9);
    ikd_metric_family(b, "ikada_loop_stall_seconds", "histogram",
                      "How late a 10 ms timer of the event loop fired.");
    ikd_metric_hist(b, "ikada_loop_stall_seconds", &n->stats.loop_stall);
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
    metrics_counter(b, "ikada_proposals_replaced_total",
                    "Entries of proposals that a newer leader replaced, "
                    "proposed again.",
                    st->proposals_lost);
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
    metrics_counter(b, "ikada_appends_dropped_total",
                    "AppendEntries with entries dropped because storage "
                    "fails and the unstored log is full.",
                    st->appends_dropped);
    ikd_metric_family(b, "ikada_storage_write_seconds", "histogram",
                      "Time of one durable transaction, fsync included.");
    ikd_metric_hist(b, "ikada_storage_write_seconds", &st->storage_latency);
    metrics_counter(b, "ikada_entries_persisted_total", "Log entries written.",
                    st->entries_persisted);
    metrics_counter(b, "ikada_entries_applied_total",
                    "Log entries applied to the state machine.",
                    st->entries_applied);
    metrics_counter(b, "ikada_compactions_total",
                    "Times the log was compacted behind a snapshot point.",
                    n->stats.compactions);
    metrics_counter(b, "ikada_snapshots_created_total",
                    "Snapshot files made to send to followers.",
                    n->stats.snapshots_created);
    metrics_counter(b, "ikada_snapshots_sent_total",
                    "Snapshot transfers started to followers.",
                    n->stats.snapshots_sent);
    metrics_counter(b, "ikada_snapshots_failed_total",
                    "Snapshot transfers given up.", n->stats.snapshots_failed);
    metrics_counter(b, "ikada_snapshots_installed_total",
                    "Snapshots received and installed.",
                    n->stats.snapshots_installed);
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
