/* The Raft consensus algorithm as a pure state machine: no I/O, no clock.
 *
 * The caller drives a struct raft with raft_tick(), raft_step() (a message
 * arrived), raft_propose() and raft_read_index(), then collects what the core
 * wants done with raft_get_update(): state and log entries to make durable,
 * messages to send, entries that became committed and reads that became
 * safe to serve.  The caller reports durability back with raft_persisted()
 * and application with raft_applied().
 *
 * Durability rule for the caller: messages other than RAFT_MSG_APPEND and
 * RAFT_MSG_TIMEOUT_NOW may depend on the hard state and log handed out in
 * the same or an earlier update (a granted vote, a successful AppendEntries
 * reply), so they must not be sent before that state is durable.  Those two
 * depend only on the leader's term, which became durable while it was a
 * candidate, so they may be sent at once (Raft 10.2.1: the leader writes its
 * own log in parallel with replication and counts itself only once
 * raft_persisted() says its entries are durable). */

#ifndef RAFT_H
#define RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ikd.h"

typedef uint64_t raft_term_t;
typedef uint64_t raft_index_t;
typedef uint32_t raft_id_t; /* 0 means "none" */

enum raft_role { RAFT_FOLLOWER = 0, RAFT_CANDIDATE, RAFT_LEADER };

/* The name of a role as the contract prints it ("leader"...). */
const char *raft_role_name(enum raft_role role);

enum raft_entry_type {
    RAFT_ENTRY_NOOP = 0,    /* appended by a new leader (Raft 5.4.2, 6.4) */
    RAFT_ENTRY_COMMAND = 1, /* opaque bytes for the state machine */
    /* A whole configuration, encoded by raft_membership_encode().  It takes
     * effect on each server as soon as it is in the log, committed or not
     * (Raft 4.1). */
    RAFT_ENTRY_CONFIG = 2,
};

/* One server of a configuration.  Learners receive the log but neither
 * vote nor count for commitment (Raft 4.2.1). */
struct raft_server
{
    raft_id_t id;
    bool voter;
    char addr[IKD_MAX_ADDR_BYTES]; /* "HOST:PORT", NUL-terminated */
};

struct raft_membership
{
    size_t n;
    struct raft_server servers[IKD_MAX_NODES]; /* distinct, non-zero ids */
};

/* Configuration entry format, version 1 (all integers big-endian):
 *   u8 version (1), u8 n, then n times:
 *   u32 id, u8 voter (0 or 1), u8 addr_len, addr_len bytes (no NUL)
 * Encode into buf of cap bytes and store the length in *len: 0, or
 * -EINVAL for an invalid configuration or a buffer too small. */
#define RAFT_MEMBERSHIP_MAX_BYTES (2 + IKD_MAX_NODES * (6 + IKD_MAX_ADDR_BYTES))
int raft_membership_encode(const struct raft_membership *m,
                           uint8_t *buf,
                           size_t cap,
                           size_t *len);

/* Decode len bytes into *m: 0, or IKD_EMALFORMED for anything that is not
 * a valid configuration (duplicate or zero ids, bad lengths, no NUL room). */
int raft_membership_decode(const uint8_t *data,
                           size_t len,
                           struct raft_membership *m);

/* The server with id in m, or NULL. */
const struct raft_server *raft_membership_find(const struct raft_membership *m,
                                               raft_id_t id);

struct raft_entry
{
    raft_term_t term;
    uint8_t type; /* enum raft_entry_type */
    uint32_t len;
    uint8_t *data; /* len bytes; ownership depends on the function */
};

enum raft_msg_type {
    RAFT_MSG_VOTE = 1,    /* RequestVote */
    RAFT_MSG_VOTE_RESP,   /* its reply */
    RAFT_MSG_APPEND,      /* AppendEntries, also the heartbeat */
    RAFT_MSG_APPEND_RESP, /* its reply */
    /* Raft 9.6: "would you vote for me in term `term`?"; changes no state
     * on either side.  Payload as RAFT_MSG_VOTE; the reply carries the
     * request's term when granted, the voter's term when not. */
    RAFT_MSG_PREVOTE,
    RAFT_MSG_PREVOTE_RESP, /* payload as RAFT_MSG_VOTE_RESP */
    /* Raft 3.10: the leader tells an up-to-date follower to start an
     * election at once.  No payload. */
    RAFT_MSG_TIMEOUT_NOW,
    /* Raft 7.  From the core of a leader: the follower `to` needs entries
     * that the log no longer holds; the caller sends it a snapshot of the
     * state machine at an index of at least snapshot.index, and calls
     * raft_snapshot_failed() if it cannot, or if the follower does not
     * confirm it within a while after it was delivered (the follower may
     * have crashed before the snapshot was durable).  The core stops
     * waiting when the follower's log reaches snapshot.index.  Into the
     * core of a follower:
     * the caller holds a complete, verified snapshot from leader `from`
     * whose last entry is snapshot.index with snapshot.term.  Never on
     * the wire as such: the caller streams the snapshot its own way. */
    RAFT_MSG_SNAPSHOT,
};

struct raft_msg
{
    enum raft_msg_type type;
    raft_id_t from;
    raft_id_t to;
    raft_term_t term;
    union {
        struct
        {
            raft_index_t last_index;
            raft_term_t last_term;
            /* Set by a candidate that a leader asked to take over
             * (Raft 3.10): voters grant it even while they still hear
             * from that leader. */
            bool transfer;
        } vote;
        struct
        {
            bool granted;
        } vote_resp;
        struct
        {
            raft_index_t prev_index;
            raft_term_t prev_term;
            raft_index_t commit;
            /* The leader's read round; echoed in the reply so that the
             * leader knows which rounds a follower confirmed (Raft 6.4). */
            uint64_t read_seq;
            size_t n_entries;
            /* Borrowed: in a message from raft_get_update() they point into
             * the core's log; in a message given to raft_step() they belong
             * to the caller, and the core copies what it keeps. */
            struct raft_entry *entries;
        } append;
        struct
        {
            bool success;
            /* On success: the last index the follower now matches.
             * On failure: the prev_index that was rejected. */
            raft_index_t index;
            /* On failure, where the leader should look next (Raft 5.3,
             * backing up by term): the follower's last index if its log is
             * shorter than prev_index, else the largest index <= prev_index
             * whose term is <= prev_term, with that term in hint_term. */
            raft_index_t hint_index;
            raft_term_t hint_term;
            uint64_t read_seq;
        } append_resp;
        struct
        {
            raft_index_t index;
            raft_term_t term;
            /* Into a follower's core only: the configuration the snapshot
             * holds and the index of its entry (Raft 7: the latest
             * configuration travels with the state), borrowed for the
             * call.  NULL keeps the configuration the core knows. */
            const struct raft_membership *membership;
            raft_index_t membership_index;
        } snapshot;
    };
};

/* A read that became safe: once the state machine has applied `index`, a
 * read requested with `ctx` returns linearizable data (Raft 6.4). */
struct raft_read
{
    uint64_t ctx;
    raft_index_t index;
};

struct raft_config
{
    raft_id_t id;
    /* The configuration to start from when membership is NULL: voters
     * only, without addresses; it must include id. */
    size_t n_voters;
    raft_id_t voters[IKD_MAX_NODES];
    /* Otherwise the configuration as of entry membership_index (0 for one
     * given at bootstrap), copied; it may be empty or lack id, as on a
     * server that waits to be added.  Configuration entries in the log
     * after membership_index replace it. */
    const struct raft_membership *membership;
    raft_index_t membership_index;
    /* The election timeout is drawn afresh, uniformly from
     * [election_ticks, 2 * election_ticks), at every reset. */
    unsigned election_ticks;
    unsigned heartbeat_ticks;
    uint64_t seed; /* seeds the timeout generator: same seed, same run */
    /* Caps on one AppendEntries: 0 takes IKD_MAX_APPEND_ENTRIES and
     * IKD_MAX_APPEND_BYTES.  A message carries at least one entry. */
    size_t max_append_entries;
    size_t max_append_bytes;
    /* Caps on the leader's entries that are not committed yet: 0 takes
     * IKD_MAX_UNCOMMITTED_ENTRIES and IKD_MAX_UNCOMMITTED_BYTES.  A
     * proposal is accepted whatever its size when nothing is pending. */
    size_t max_uncommitted_entries;
    size_t max_uncommitted_bytes;
    /* Pre-vote (Raft 9.6) is on unless this is set: a node campaigns only
     * after a majority said it would vote for it, so a node that was cut
     * off does not depose a healthy leader when it returns. */
    bool disable_prevote;
    /* The core never prints: it formats a line and calls this, if set. */
    void (*log_cb)(void *ctx, int level, const char *text);
    void *log_ctx;
};

/* Everything the caller must act on, as of the call to raft_get_update().
 * Pointers stay valid until the next non-const call on the core. */
struct raft_update
{
    /* Persist term and vote before sending non-APPEND messages. */
    bool hard_state_changed;
    raft_term_t term;
    raft_id_t vote;

    /* Entries with index >= log_dirty_from changed (were appended, or
     * replaced after a conflict): the durable log must drop its entries from
     * log_dirty_from on and store the core's entries from there to
     * raft_last_index().  0 when the log did not change. */
    raft_index_t log_dirty_from;

    struct raft_msg *msgs;
    size_t n_msgs;

    /* Entries up to commit are committed; the caller applies every entry
     * after the last one it applied, in order, up to here.  Never
     * decreases. */
    raft_index_t commit;

    struct raft_read *reads;
    size_t n_reads;

    /* Non-zero when the core took the state of a snapshot (Raft 7): the
     * caller must first make the snapshot it handed in durable as the
     * state machine's state at snapshot_index, drop every stored log
     * entry, then store the log from log_dirty_from (snapshot_index + 1)
     * as usual; commit is at least snapshot_index. */
    raft_index_t snapshot_index;
    raft_term_t snapshot_term;

    /* The latest configuration changed (raft_membership() tells it). */
    bool membership_changed;

    /* Role or known leader changed since the previous update. */
    bool soft_state_changed;
    enum raft_role role;
    raft_id_t leader;
};

struct raft; /* defined in raft.c; allocate with raft_new() */

/* Allocate a core from cfg, in the follower role with an empty log.
 * Returns NULL when out of memory or cfg is invalid. */
struct raft *raft_new(const struct raft_config *cfg);
void raft_free(struct raft *r);

/* Restore durable state read at start, before any other call: the hard
 * state, the index the state machine has applied (everything up to it is
 * committed), and the log entries first_index... (the core copies them),
 * where prev_term is the term of entry first_index - 1 (0 when
 * first_index is 1; entries before first_index were compacted away).
 * Returns 0, or IKD_ECORRUPT if the entries contradict themselves
 * (terms going down), applied is past the end of the log, or compacted
 * entries were never applied. */
int raft_load(struct raft *r,
              raft_term_t term,
              raft_id_t vote,
              raft_index_t applied,
              raft_index_t first_index,
              raft_term_t prev_term,
              const struct raft_entry *entries,
              size_t n_entries);

/* One unit of time passed: heartbeats and election timeouts count ticks.
 * A leader that heard no reply from a majority during an election timeout
 * steps down to follower with no known leader (Raft 6.2), so callers learn
 * that writes cannot commit.  A follower whose election timeout passes
 * first asks for pre-votes (Raft 9.6) and campaigns only once a majority
 * would grant them.  A follower that heard from a leader within the
 * minimum election timeout, and a leader, refuse votes and pre-votes
 * (Raft 4.2.3), unless the candidate was asked to take over. */
void raft_tick(struct raft *r);

/* A message from a peer.  Returns 0, or IKD_EMALFORMED for a message that
 * is not addressed to this node or names an unknown sender. */
int raft_step(struct raft *r, const struct raft_msg *m);

/* Append a new entry to the leader's log (the core copies data).
 * On success stores its index and term.  Returns IKD_ENOTLEADER when not
 * the leader, IKD_ELIMIT when len exceeds what one message can carry,
 * IKD_EBUSY when the uncommitted entries reached their cap or leadership
 * is being transferred (retry later, possibly on another leader). */
int raft_propose(struct raft *r,
                 uint8_t type,
                 const void *data,
                 size_t len,
                 raft_index_t *index,
                 raft_term_t *term);

/* Ask for a linearizable read point (Raft 6.4).  The leader notes its commit
 * index, confirms with a round of heartbeats that it still leads, and then
 * reports {ctx, index} in an update.  Reads asked for while a round is under
 * way share the next round.  Returns IKD_ENOTLEADER when not the leader; a
 * leader that loses its role drops pending reads (the caller times out or
 * retries). */
int raft_read_index(struct raft *r, uint64_t ctx);

/* The same for a read that voter from asked for while in from_term: where
 * the two of them are a majority and from_term is the current term, the
 * request itself confirms the leadership and the read point is reported
 * at once, without a round. */
int raft_read_index_from(struct raft *r,
                         uint64_t ctx,
                         raft_id_t from,
                         raft_term_t from_term);

/* Hand leadership to target, or with target 0 to the follower whose log
 * matches the most (Raft 3.10).  The leader stops taking proposals, brings
 * the target's log up to date, then sends it RAFT_MSG_TIMEOUT_NOW; the
 * target campaigns at once, without pre-vote.  The transfer is abandoned
 * after an election timeout, or when a newer term is seen.  Returns 0
 * (also when target is this node), IKD_ENOTLEADER when not the leader,
 * -EINVAL when target is not a voter or there is no other voter. */
int raft_transfer(struct raft *r, raft_id_t target);

/* Log compaction (Raft 7): the state machine's state covers index, so the
 * core may forget the entries up to it.  Followers that need them later
 * get a snapshot instead.  index must be applied and durable; an index at
 * or below the start of the log does nothing.  Returns 0 or -EINVAL. */
int raft_compact(struct raft *r, raft_index_t index);

enum raft_change_type { RAFT_CHANGE_ADD = 1, RAFT_CHANGE_REMOVE };

/* Single-server membership changes (Raft 4.1, 4.2.1).  ADD appends a
 * configuration with id as a learner at addr; once the learner's log is
 * within a message's worth of the leader's and that configuration is
 * committed, the leader appends one that makes it a voter.  ADD of a
 * learner already present only asks for that promotion again.  REMOVE
 * appends a configuration without id; a leader that removed itself hands
 * leadership over once the change commits, or steps down.
 * Returns 0 when a change started or is under way, 1 when the
 * configuration already is what was asked (id a voter at addr, or id
 * absent), IKD_ENOTLEADER, IKD_ECHANGING while a configuration entry is
 * not committed or another server is catching up, -EINVAL for an id
 * present at another address, an address another id has, a zero id, an
 * address that does not fit,
 * or the removal of the last voter; IKD_ELIMIT when the configuration is
 * full. */
int raft_change(struct raft *r,
                enum raft_change_type type,
                raft_id_t id,
                const char *addr);

/* The latest configuration in the log, committed or not (Raft 4.1), and
 * the index of its entry in *index (0 for one given at start).  The
 * pointer stays valid until the next non-const call. */
const struct raft_membership *raft_membership(const struct raft *r,
                                              raft_index_t *index);

/* The learner a leader waits for to promote it, 0 when none. */
raft_id_t raft_catching_up(const struct raft *r);

/* On a leader: sending a snapshot to follower id failed or was abandoned;
 * the core asks for one again at its next heartbeat if still needed. */
void raft_snapshot_failed(struct raft *r, raft_id_t id);

/* On a leader: whether follower id waits for a snapshot. */
bool raft_snapshot_pending(const struct raft *r, raft_id_t id);

/* The node leadership is being handed to, 0 when none. */
raft_id_t raft_transfer_target(const struct raft *r);

bool raft_has_update(const struct raft *r);
void raft_get_update(struct raft *r, struct raft_update *u);

/* The log up to index, whose entry has the given term, is durable.  A
 * report for an entry that has since been replaced is ignored. */
void raft_persisted(struct raft *r, raft_index_t index, raft_term_t term);

/* The state machine applied every entry up to index. */
void raft_applied(struct raft *r, raft_index_t index);

/* Read-only views. */
raft_id_t raft_id(const struct raft *r);
enum raft_role raft_role(const struct raft *r);
raft_term_t raft_term(const struct raft *r);
raft_id_t raft_leader(const struct raft *r);
raft_index_t raft_commit(const struct raft *r);
raft_index_t raft_applied_index(const struct raft *r);
/* The last index raft_persisted() reported durable that is still in the
 * log: it drops below a truncation point when entries are replaced. */
raft_index_t raft_persisted_index(const struct raft *r);
raft_index_t raft_first_index(const struct raft *r);
/* The bytes of entry data the log holds, from the first index to the
 * last. */
size_t raft_log_bytes(const struct raft *r);
/* The term of the entry before raft_first_index(), 0 at the log's
 * beginning. */
raft_term_t raft_prev_term(const struct raft *r);
raft_index_t raft_last_index(const struct raft *r);
/* The entry at index, or NULL outside [first, last]. */
const struct raft_entry *raft_entry_at(const struct raft *r,
                                       raft_index_t index);
/* On a leader, the highest index known replicated on peer id; 0 on other
 * roles or for an unknown id. */
raft_index_t raft_match_index(const struct raft *r, raft_id_t id);

#endif /* RAFT_H */
