/* Durable state of a node in one SQLite database: the raft log, term and
 * vote, the applied index, the node's identity, and the state machine's
 * tables.  WAL mode with synchronous=FULL: a committed transaction is on
 * disk.
 *
 * A struct kv_store is one write connection and must be used by one thread
 * at a time (the storage worker).  Readers open their own connection with
 * kv_reader_open() (kv/reader.h). */

#ifndef KV_STORE_H
#define KV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../raft/raft.h"
#include "sm.h"

#define KV_DB_NAME "ikada.db"
/* PRAGMA application_id of an Ikada database ("IKDA"). */
#define KV_APP_ID 0x494b4441

struct kv_store;

/* Open or create DIR/ikada.db (DIR must exist), create the schema and the
 * state machine's tables, and record node_id on first use.  Returns 0,
 * IKD_ENODEID when the database belongs to another node id, IKD_ECORRUPT
 * when it is not an Ikada database, or a negative errno (-EACCES...). */
int kv_store_open(const char *dir,
                  raft_id_t node_id,
                  const struct kv_sm *sm,
                  struct kv_store **out);

void kv_store_close(struct kv_store *s);

/* What a node resumes from.  entries are malloc'd with their data; release
 * with kv_state_free(). */
struct kv_state
{
    raft_term_t term;
    raft_id_t vote;
    raft_index_t applied;
    raft_index_t snap_index; /* the latest compaction or install point */
    raft_term_t snap_term;
    raft_index_t first_index; /* index of entries[0]; 1 for a new log */
    raft_term_t prev_term;    /* term of entry first_index - 1, or 0 */
    struct raft_entry *entries;
    size_t n_entries;
    /* The stored configuration (see kv_store_set_conf()), if has_conf. */
    bool has_conf;
    raft_index_t conf_index;
    uint8_t conf_data[RAFT_MEMBERSHIP_MAX_BYTES];
    size_t conf_len;
};

int kv_store_load(struct kv_store *s, struct kv_state *st);

/* Store data (an encoded struct raft_membership) as the configuration as
 * of entry index, in a transaction of its own.  Applying an entry of type
 * RAFT_ENTRY_CONFIG does the same inside its batch; this call is for a
 * configuration given at bootstrap (index 0) or by a recovery.  Returns 0
 * or a negative code. */
int kv_store_set_conf(struct kv_store *s,
                      raft_index_t index,
                      const void *data,
                      size_t len);
void kv_state_free(struct kv_state *st);

/* One unit of durable work, done in one transaction and one fsync:
 *   0. if install_path: replace the state machine's state with the
 *      snapshot in that file (kv/snapshot.h), which must hold
 *      install_index and install_term; delete the whole log, which now
 *      starts after install_index; the applied index becomes install_index;
 *   1. term and vote, if hard_state;
 *   2. if log_from != 0: delete entries >= log_from, then insert entries
 *      as log_from, log_from + 1, ...;
 *   3. apply entries apply[0..n_apply) at apply_from, apply_from + 1, ...
 *      through the state machine, storing each outcome in results[i], and
 *      record the last one as the applied index;
 *   4. if compact_to: delete entries <= compact_to (all applied before
 *      this batch; compact_term is the term of entry compact_to) and
 *      record snap_index, snap_term as the latest snapshot point.
 * Entries of type RAFT_ENTRY_NOOP are applied as nothing (status 0);
 * entries of type RAFT_ENTRY_CONFIG replace the stored configuration.
 * Returns 0, or a negative code after rolling everything back (-ENOSPC,
 * -EIO, IKD_ECORRUPT...). */
struct kv_batch
{
    bool hard_state;
    raft_term_t term;
    raft_id_t vote;

    raft_index_t log_from;
    const struct raft_entry *entries;
    size_t n_entries;

    raft_index_t apply_from;
    const struct raft_entry *apply;
    size_t n_apply;
    struct kv_sm_result *results; /* n_apply slots, filled */

    raft_index_t compact_to;
    raft_term_t compact_term;
    raft_index_t snap_index;
    raft_term_t snap_term;

    const char *install_path;
    raft_index_t install_index;
    raft_term_t install_term;

    /* Before the transaction, copy what kv_store_checkpoint() left in the
     * WAL, so that this commit starts the WAL over from its first frame
     * instead of making it longer.  Best effort: a checkpoint that fails
     * loses nothing and does not fail the batch. */
    bool finish_checkpoint;
};

int kv_store_write(struct kv_store *s, struct kv_batch *b);

/* The WAL holds this many pages or more after a commit: time for
 * kv_store_checkpoint(). */
#define KV_CHECKPOINT_FRAMES 1000

/* Whether the WAL grew to KV_CHECKPOINT_FRAMES as of the latest
 * kv_store_write(); read it on the thread that wrote, or after it. */
bool kv_store_wants_checkpoint(const struct kv_store *s);

/* Copy the WAL's pages back into the database file on a connection of its
 * own, so that commits never pay for it.  It may run on another thread
 * while kv_store_write() runs, one call at a time, and never waits for
 * the writer.  *copied is set to the frames of the WAL now copied, 0 when
 * another checkpoint was running.  Returns 0 or a negative code (-EIO,
 * -ENOSPC...); a failed checkpoint loses nothing, the pages stay in the
 * WAL.
 *
 * The WAL only starts over at a commit that finds all of it copied.  Under
 * a steady load the writer always adds frames during the copy, and a WAL
 * that only grows makes each commit's fsync write file metadata too.  So
 * once few frames are left, kv_store_wants_finish() says so, and a batch
 * with finish_checkpoint copies them and starts the WAL over. */
int kv_store_checkpoint(struct kv_store *s, int *copied);

/* At most this many frames left by kv_store_checkpoint() are worth copying
 * inside a batch with finish_checkpoint. */
#define KV_CHECKPOINT_FINISH_FRAMES 256

/* Whether the WAL, as of the latest kv_store_write(), holds between 1 and
 * KV_CHECKPOINT_FINISH_FRAMES frames beyond the copied ones. */
bool kv_store_wants_finish(const struct kv_store *s, int copied);

#endif /* KV_STORE_H */
