/* SQLite helpers shared by the sources of kv/. */

#include "db.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "../raft/ikd.h"

int kv_db_rv(sqlite3 *db, int rc)
{
    int sys;

    switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
            return 0;
        case SQLITE_FULL:
            return -ENOSPC;
        case SQLITE_IOERR:
            /* A write that filled the disk (growing the WAL index, say)
             * comes back as an I/O error with ENOSPC underneath. */
            sys = db != NULL ? sqlite3_system_errno(db) : 0;
            return sys == ENOSPC || sys == EDQUOT ? -ENOSPC : -EIO;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
            return IKD_ECORRUPT;
        case SQLITE_NOMEM:
            return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
            return -EBUSY;
        case SQLITE_READONLY:
            return -EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH:
            return -EACCES;
        case SQLITE_TOOBIG:
            return IKD_ELIMIT;
        case SQLITE_CANTOPEN:
            /* The open call's own errno says more (-ENOENT, -EACCES). */
            sys = db != NULL ? sqlite3_system_errno(db) : 0;
            return sys > 0 ? -sys : -EACCES;
        default:
            return -EIO;
    }
}

/* The statements each thread used last, by connection and by the address
 * of their text (callers pass literals), so that a hot statement is found
 * without walking the connection's list.  A hit is checked against the
 * statement's own text; an entry is only trusted while no connection was
 * finalized since it was made, as a new connection may reuse an address. */
#define KV_DB_CACHE_SLOTS 64

struct stmt_slot
{
    sqlite3 *db;
    const char *sql;
    sqlite3_stmt *st;
    unsigned long generation;
};

static _Thread_local struct stmt_slot stmt_cache[KV_DB_CACHE_SLOTS];
static atomic_ulong stmt_generation = 1;

static struct stmt_slot *stmt_slot_of(const sqlite3 *db, const char *sql)
{
    uintptr_t h = ((uintptr_t)sql >> 3) ^ ((uintptr_t)db >> 5);

    return &stmt_cache[h % KV_DB_CACHE_SLOTS];
}

int kv_db_stmt(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
    struct stmt_slot *slot = stmt_slot_of(db, sql);
    unsigned long generation = atomic_load(&stmt_generation);
    sqlite3_stmt *st = NULL;
    int rc;

    assert(db != NULL && sql != NULL);
    if (slot->db == db && slot->sql == sql && slot->generation == generation &&
        !sqlite3_stmt_busy(slot->st) &&
        strcmp(sqlite3_sql(slot->st), sql) == 0) {
        sqlite3_clear_bindings(slot->st);
        *out = slot->st;
        return 0;
    }
    /* Statements are few (a few dozen) and looked up by their text, so
     * the connection itself is the cache and callers need no struct. */
    while ((st = sqlite3_next_stmt(db, st)) != NULL) {
        if (!sqlite3_stmt_busy(st) && strcmp(sqlite3_sql(st), sql) == 0) {
            sqlite3_clear_bindings(st);
            break;
        }
    }
    if (st == NULL) {
        rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                                NULL);
        if (rc != SQLITE_OK) {
            return kv_db_rv(db, rc);
        }
    }
    *slot = (struct stmt_slot){db, sql, st, generation};
    *out = st;
    return 0;
}

int kv_db_exec(sqlite3 *db, const char *sql)
{
    return kv_db_rv(db, sqlite3_exec(db, sql, NULL, NULL, NULL));
}

void kv_db_finalize_all(sqlite3 *db)
{
    sqlite3_stmt *st;

    atomic_fetch_add(&stmt_generation, 1);
    while ((st = sqlite3_next_stmt(db, NULL)) != NULL) {
        sqlite3_finalize(st);
    }
}
