/* Snapshots of the state machine (Raft 7), as files that can be streamed
 * to a follower and installed there.
 *
 * A snapshot is an SQLite database file of its own:
 *
 *   PRAGMA application_id = KV_SNAP_APP_ID ("IKDS")
 *   snap_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)
 *     'format'  KV_SNAP_FORMAT; refused when different
 *     'index'   the last log index whose effect the state includes
 *     'term'    the term of that entry
 *   conf(one, idx, data): the configuration as of 'index' (kv/store.h),
 *   and the state machine's tables, written by its snapshot() operation
 *   (kv/sm.h).
 *
 * The file travels as bytes in chunks, each with a CRC-32, and the whole
 * file's size and CRC-32 name it (net/msg.h), so a transfer that breaks
 * can resume where it stopped and a damaged copy is never installed. */

#ifndef KV_SNAPSHOT_H
#define KV_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "../raft/raft.h"
#include "sm.h"

#define KV_SNAP_APP_ID 0x494b4453
#define KV_SNAP_FORMAT 1

struct kv_snapshot_info
{
    raft_index_t index;
    raft_term_t term;
    uint64_t size_bytes;
    uint32_t crc; /* CRC-32 (zlib's) of the whole file */
};

/* Write a snapshot of the state in DIR/ikada.db, at its applied index, to
 * path (replaced if it exists), and describe it in *out.  Opens its own
 * connection and reads one consistent view, so it may run on any thread
 * while the node keeps writing.  Returns 0, or a negative code with path
 * removed. */
int kv_snapshot_create(const char *dir,
                       const struct kv_sm *sm,
                       const char *path,
                       struct kv_snapshot_info *out);

/* Size and CRC-32 of the file at path: 0 or a negative errno. */
int kv_file_crc(const char *path, uint64_t *size_bytes, uint32_t *crc);

/* Whether the database attached to db as schema is a snapshot of format
 * KV_SNAP_FORMAT at index and term: 0, or IKD_ECORRUPT. */
int kv_snapshot_check(sqlite3 *db,
                      const char *schema,
                      raft_index_t index,
                      raft_term_t term);

/* The configuration a snapshot file holds (table conf, as in the store):
 * *found false when it holds none; else the encoded configuration in
 * buf (cap bytes), its length in *len and the index of its entry in
 * *index.  Returns 0, or a negative code for a file that cannot be read. */
int kv_snapshot_conf(const char *path,
                     bool *found,
                     raft_index_t *index,
                     uint8_t *buf,
                     size_t cap,
                     size_t *len);

#endif /* KV_SNAPSHOT_H */
