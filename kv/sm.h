/* The state machine interface: a table of functions the store calls.
 *
 * A state machine keeps its state in tables of the node's SQLite database.
 * apply() runs inside the store's write transaction, together with the
 * raft log changes and the applied index, so an entry is applied exactly
 * once across crashes: either the whole batch is durable or none of it. */

#ifndef KV_SM_H
#define KV_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* The outcome of applying one command: status 0 or a negative errno that
 * every node computes identically (-ENOENT, -EEXIST...), and a value whose
 * meaning depends on the command (an inode number, a new size). */
struct kv_sm_result
{
    int status;
    uint64_t value;
};

struct kv_sm_ops
{
    /* Create the state machine's tables if missing.  Called once with the
     * write connection, inside a transaction.  0 or a negative code. */
    int (*init)(void *ctx, sqlite3 *db);
    /* Apply the command of the log entry at index.  A deterministic refusal
     * goes in res->status and returns 0; a negative return is a storage
     * fault: the transaction rolls back and the node stops. */
    int (*apply)(void *ctx,
                 sqlite3 *db,
                 uint64_t index,
                 const uint8_t *cmd,
                 size_t len,
                 struct kv_sm_result *res);
    /* Snapshots (Raft 7).  snapshot() copies the state machine's state,
     * as of the read transaction open on db, into new tables of the
     * attached, empty database named schema; it may run on any thread, on
     * a connection of its own, while apply() goes on elsewhere.  restore()
     * replaces the state with what snapshot() wrote into the attached
     * database schema, inside the store's write transaction, so a crash
     * leaves either the old state or the new one.  Both return 0 or a
     * negative code; restore() returns IKD_ECORRUPT for a snapshot it
     * cannot use.  Table names in schema are the state machine's own. */
    int (*snapshot)(void *ctx, sqlite3 *db, const char *schema);
    int (*restore)(void *ctx, sqlite3 *db, const char *schema);
    /* Optional: the write transaction of the latest apply() or restore()
     * calls committed, or rolled back; what they kept outside the
     * database follows it. */
    void (*settle)(void *ctx, bool committed);
};

struct kv_sm
{
    const struct kv_sm_ops *ops;
    void *ctx;
};

/* The file-tree key-value state machine (kv/kvsm.c).  Its ctx is NULL or
 * a struct kv_orphans (kv/orphan.h), told of each watched file that a
 * command removes. */
extern const struct kv_sm_ops kv_fsm_ops;

#endif /* KV_SM_H */
