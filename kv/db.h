/* SQLite helpers shared by the sources of kv/; not used outside it. */

#ifndef KV_DB_H
#define KV_DB_H

#include <sqlite3.h>

/* How long a connection waits for another one's lock before giving up. */
#define KV_DB_BUSY_TIMEOUT_MS 5000

/* The one place where SQLite result codes become Ikada codes: 0 for
 * SQLITE_OK, SQLITE_ROW and SQLITE_DONE; -ENOSPC, -EIO, IKD_ECORRUPT,
 * -ENOMEM, -EBUSY, -EROFS, -EACCES or the failing system call's errno
 * otherwise. */
int kv_db_rv(sqlite3 *db, int rc);

/* A prepared statement for sql on db, reset and with no bindings, found
 * among the connection's statements or prepared once and kept until
 * kv_db_finalize_all().  The caller resets it after use.  0 or a code from
 * kv_db_rv(). */
int kv_db_stmt(sqlite3 *db, const char *sql, sqlite3_stmt **out);

/* Run SQL that returns no rows.  0 or a code from kv_db_rv(). */
int kv_db_exec(sqlite3 *db, const char *sql);

/* Finalize every statement of db, before sqlite3_close(). */
void kv_db_finalize_all(sqlite3 *db);

#endif /* KV_DB_H */
