/* The spans of replicated commands: for each traced log entry, what the
 * leader and each follower did with it.
 *
 * On the leader an entry gets "raft.propose" (from the proposal until it
 * is applied here), with children "raft.append" (until durable here),
 * "raft.commit" (until committed), "raft.apply" (until applied here) and
 * one "raft.replicate" per follower (from the first AppendEntries holding
 * it until the follower matches it).  Each replicate span's context
 * travels in the AppendEntries, and the follower hangs "raft.follower_append"
 * (until durable there) and "raft.apply" (until applied there) under it.
 *
 * Entries are kept in a fixed ring by index, allocated once when the
 * tracer is on; without a tracer node_trace_new() gives NULL and every
 * call below returns at once.  Loop thread only. */

#ifndef NET_NODE_TRACE_H
#define NET_NODE_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "../raft/raft.h"
#include "msg.h"
#include "trace.h"

struct node_trace;

/* NULL when the tracer is off or memory is short: tracing is then
 * skipped, nothing else changes. */
struct node_trace *node_trace_new(void);
/* Ends what is still open, as abandoned. */
void node_trace_free(struct node_trace *t);

/* The leader appended a command at index on behalf of parent (a sampled
 * context; nothing is traced otherwise). */
void node_trace_proposed(struct node_trace *t,
                         raft_index_t index,
                         const struct ikd_trace_ctx *parent,
                         uint64_t now_ms);

/* An AppendEntries to peer carries entries [first, last]: starts the
 * replicate spans not started yet and writes into out (room for
 * NET_MAX_TRACE_REFS) the contexts to send with it.  Returns their
 * count. */
size_t node_trace_outgoing(struct node_trace *t,
                           raft_id_t peer,
                           raft_index_t first,
                           raft_index_t last,
                           struct net_trace_ref *out);

/* A follower got these contexts with an AppendEntries. */
void node_trace_received(struct node_trace *t,
                         const struct net_trace_ref *refs,
                         size_t n,
                         uint64_t now_ms);

/* Progress of this node: its log is durable up to index; the commit
 * index it knows; its state machine applied up to index. */
void node_trace_persisted(struct node_trace *t, raft_index_t index);
void node_trace_committed(struct node_trace *t, raft_index_t commit);
void node_trace_applied(struct node_trace *t, raft_index_t index);

/* On the leader: end the replicate spans of followers that now match. */
void node_trace_matched(struct node_trace *t, const struct raft *r);

/* End, as abandoned, what has been open for longer than max_age_ms (an
 * entry overwritten or never committed). */
void node_trace_expire(struct node_trace *t,
                       uint64_t now_ms,
                       uint64_t max_age_ms);

#endif /* NET_NODE_TRACE_H */
