/* A running Ikada node: the Raft core, its storage worker, the transport
 * and the client protocol, all driven by one libuv loop.  Only the loop
 * thread calls these functions. */

#ifndef NET_NODE_H
#define NET_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "../kv/orphan.h"
#include "../kv/reader.h"
#include "../raft/raft.h"
#include "metrics.h"
#include "trace.h"
#include "transport.h"

struct node_config
{
    raft_id_t id;
    /* Includes this node.  At start: the cluster list (or this node alone
     * with join); once running, the servers of the latest configuration
     * and this node (node_get_config()). */
    struct net_peer peers[IKD_MAX_NODES];
    size_t n_peers;
    /* join: the server waits to be added and learns the configuration
     * from the leader; peers holds only itself.  recover: it becomes a
     * cluster of one from its own state (after a majority was lost). */
    bool join;
    bool recover;
    const char *data_dir;
    unsigned election_timeout_ms;
    unsigned heartbeat_ms;
    uint64_t max_value_bytes;
    /* How long a proposal or read may wait for its outcome. */
    unsigned request_timeout_ms;
    /* Compact the log once this many entries were applied since the last
     * snapshot point, keeping the latest snapshot_trailing of them for
     * followers that are a little behind (Raft 7). */
    uint64_t snapshot_threshold;
    uint64_t snapshot_trailing;
    /* Compact also once the log holds this many bytes of entries, keeping
     * at most a quarter of them behind the snapshot point: large values
     * must not pile up in memory and on disk until the count is reached.
     * 0: by count only. */
    uint64_t snapshot_bytes;
};

struct node;

/* Open the data folder, load the durable state, start listening and
 * connecting.  Returns 0; IKD_ENODEID, -EADDRINUSE, or another negative
 * code with nothing left running. */
int node_start(uv_loop_t *loop,
               const struct node_config *cfg,
               struct node **out);

/* Fail every pending request with IKD_ESHUTDOWN, stop the transport and
 * the worker; cb runs when all handles are closed and n is freed. */
void node_stop(struct node *n, void (*cb)(void *arg), void *arg);

/* Outcome of a proposal: status is the state machine's result (0 or a
 * negative errno such as -ENOENT) once the command is applied on this node,
 * or IKD_ENOLEADER (no leader known), IKD_ETIMEDOUT (outcome unknown),
 * IKD_ELOST (overwritten, not applied), IKD_ESHUTDOWN. */
typedef void (*node_propose_cb)(void *arg, int status, uint64_t value);

/* Propose an encoded struct kv_cmd (copied).  On a follower it goes to the
 * leader; either way cb runs once the command is applied here, or fails,
 * always within the request timeout.  Returns 0, or a negative code with no
 * callback.  While the leader takes no new entries for now (a leadership
 * transfer, too much uncommitted), the command waits and is offered again
 * every tick; IKD_EBUSY comes only if the request timeout passes first. */
int node_propose(struct node *n,
                 const uint8_t *cmd,
                 size_t len,
                 node_propose_cb cb,
                 void *arg);

/* The same, on behalf of a traced operation: when parent is a sampled
 * context, the proposal's spans, here, on the leader and on followers,
 * join its trace.  parent may be NULL.  Without NODE_PROPOSE_HOLD in
 * flags, IKD_EBUSY comes back at once instead of the wait: for a client
 * that asks again by itself, on a node of its choosing. */
enum { NODE_PROPOSE_HOLD = 1u << 0 };
int node_propose_traced(struct node *n,
                        const uint8_t *cmd,
                        size_t len,
                        const struct ikd_trace_ctx *parent,
                        unsigned flags,
                        node_propose_cb cb,
                        void *arg);

/* cb(arg, 0) once this node's state reflects every write that completed
 * before the call (a linearizable read point, Raft 6.4), or a negative code
 * as for proposals.  Returns 0, or a negative code with no callback. */
typedef void (*node_read_cb)(void *arg, int status);
int node_read_barrier(struct node *n, node_read_cb cb, void *arg);

/* The loop thread's read connection to the state. */
struct kv_reader *node_reader(struct node *n);

/* Copies of the removed files that the file system watches. */
struct kv_orphans *node_orphans(struct node *n);

struct node_info
{
    raft_id_t id;
    enum raft_role role;
    raft_term_t term;
    raft_index_t commit;
    raft_index_t applied;
    raft_id_t leader;      /* 0 when none is known */
    raft_index_t snapshot; /* latest snapshot point, 0 before the first */
};

void node_get_info(struct node *n, struct node_info *out);

/* Append the node's metrics in the Prometheus text format to out. */
void node_metrics_render(struct node *n, struct ikd_buf *out);
const struct node_config *node_get_config(struct node *n);

/* The latest configuration (Raft 4), committed or not; valid until the
 * loop runs again. */
const struct raft_membership *node_get_members(struct node *n);

/* The latest configuration as text, a line a server: "ID HOST:PORT ROLE\n"
 * with ROLE voter or learner.  Writes at most cap bytes to buf (no NUL)
 * and returns how many. */
size_t node_members_text(struct node *n, char *buf, size_t cap);

#endif /* NET_NODE_H */
