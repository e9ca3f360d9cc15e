/* SQLite helpers shared by the sources of kv/. */

#include "db.h"

#include <assert.h>
#include <errno.h>
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
            return -EIO;
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

int kv_db_stmt(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
    sqlite3_stmt *st = NULL;
    int rc;

    assert(db != NULL && sql != NULL);
    /* Statements are few (a few dozen) and looked up by their text, so
     * the connection itself is the cache and callers need no struct. */
    while ((st = sqlite3_next_stmt(db, st)) != NULL) {
        if (!sqlite3_stmt_busy(st) && strcmp(sqlite3_sql(st), sql) == 0) {
            sqlite3_clear_bindings(st);
            *out = st;
            return 0;
        }
    }
    rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    return kv_db_rv(db, rc);
}

int kv_db_exec(sqlite3 *db, const char *sql)
{
    return kv_db_rv(db, sqlite3_exec(db, sql, NULL, NULL, NULL));
}

void kv_db_finalize_all(sqlite3 *db)
{
    sqlite3_stmt *st;

    while ((st = sqlite3_next_stmt(db, NULL)) != NULL) {
        sqlite3_finalize(st);
    }
}
