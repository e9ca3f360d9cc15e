/* Snapshot files: creation on a connection of their own, and checks. */

#include "snapshot.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "db.h"
#include "store.h"

/* Bytes read at a time when checksumming a file. */
#define KV_CRC_CHUNK_BYTES (256u * 1024)

/* One integer from a query on db with an optional text parameter. */
static int query_u64(sqlite3 *db,
                     const char *sql,
                     const char *arg,
                     uint64_t *v,
                     bool *found)
{
    sqlite3_stmt *st;
    int rc;

    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return kv_db_rv(db, rc);
    }
    if (arg != NULL) {
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    }
    rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER;
    if (*found) {
        sqlite3_int64 x = sqlite3_column_int64(st, 0);
        *found = x >= 0;
        *v = (uint64_t)x;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : kv_db_rv(db, rc);
}

static int meta_value(sqlite3 *db, const char *key, uint64_t dflt, uint64_t *v)
{
    bool found;
    int rv = query_u64(db, "SELECT value FROM main.meta WHERE key = ?1", key, v,
                       &found);

    if (rv == 0 && !found) {
        *v = dflt;
    }
    return rv;
}

/* The applied index of the open read transaction and the term of its
 * entry, which is in the log or, when compacted, the log's start term. */
static int applied_point(sqlite3 *db, raft_index_t *index, raft_term_t *term)
{
    uint64_t start = 1;
    uint64_t start_term = 0;
    bool found = false;
    char sql[96];
    int rv;

    rv = meta_value(db, "applied", 0, index);
    if (rv == 0) {
        rv = meta_value(db, "log_start", 1, &start);
    }
    if (rv == 0) {
        rv = meta_value(db, "log_start_term", 0, &start_term);
    }
    if (rv != 0) {
        return rv;
    }
    if (*index == 0) {
        return -EAGAIN; /* nothing applied: no snapshot to take */
    }
    if (*index + 1 == start) {
        *term = start_term;
        return 0;
    }
    snprintf(sql, sizeof(sql), "SELECT term FROM main.log WHERE idx = %llu",
             (unsigned long long)*index);
    rv = query_u64(db, sql, NULL, term, &found);
    return rv != 0 ? rv : found ? 0 : IKD_ECORRUPT;
}

static int write_meta(sqlite3 *db, raft_index_t index, raft_term_t term)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "CREATE TABLE snap.snap_meta("
             "key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
             "INSERT INTO snap.snap_meta VALUES ('format', %d), "
             "('index', %llu), ('term', %llu);",
             KV_SNAP_FORMAT, (unsigned long long)index,
             (unsigned long long)term);
    return kv_db_exec(db, sql);
}

static int attach(sqlite3 *db, const char *path)
{
    sqlite3_stmt *st;
    int rc;

    rc = sqlite3_prepare_v2(db, "ATTACH ?1 AS snap", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return kv_db_rv(db, rc);
    }
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : kv_db_rv(db, rc);
}

/* Inside one transaction: a read of main that stays consistent while the
 * node's own connection goes on writing (WAL), and the snapshot's writes.
 * The file needs no journal: an unfinished one is deleted, never used. */
static int copy_state(sqlite3 *db,
                      const struct kv_sm *sm,
                      struct kv_snapshot_info *out)
{
    char sql[128];
    int rv;

    snprintf(sql, sizeof(sql),
             "PRAGMA snap.journal_mode = OFF; PRAGMA snap.synchronous = OFF;"
             "PRAGMA snap.application_id = %d;",
             KV_SNAP_APP_ID);
    rv = kv_db_exec(db, sql);
    if (rv == 0) {
        rv = kv_db_exec(db, "BEGIN");
    }
    if (rv != 0) {
        return rv;
    }
    rv = applied_point(db, &out->index, &out->term);
    if (rv == 0) {
        rv = write_meta(db, out->index, out->term);
    }
    if (rv == 0) {
        rv = sm->ops->snapshot(sm->ctx, db, "snap");
    }
    /* Raft 7: the configuration as of the snapshot's index travels with
     * it. */
    if (rv == 0) {
        rv = kv_db_exec(db,
                        "CREATE TABLE snap.conf AS "
                        "SELECT one, idx, data FROM main.conf");
    }
    if (rv == 0) {
        rv = kv_db_exec(db, "COMMIT");
    }
    if (rv != 0 && !sqlite3_get_autocommit(db)) {
        kv_db_exec(db, "ROLLBACK");
    }
    return rv;
}

int kv_snapshot_create(const char *dir,
                       const struct kv_sm *sm,
                       const char *path,
                       struct kv_snapshot_info *out)
{
    sqlite3 *db = NULL;
    char *db_path;
    int rc;
    int rv;

    assert(dir != NULL && sm != NULL && path != NULL && out != NULL);
    if (sm->ops->snapshot == NULL) {
        return -ENOTSUP;
    }
    if (asprintf(&db_path, "%s/%s", dir, KV_DB_NAME) < 0) {
        return -ENOMEM;
    }
    unlink(path);
    /* An attached database is opened with the main one's flags, and the
     * snapshot file must be created. */
    rc = sqlite3_open_v2(
        db_path, &db,
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    free(db_path);
    rv = rc == SQLITE_OK ? 0 : kv_db_rv(db, rc);
    if (rv == 0) {
        sqlite3_busy_timeout(db, KV_DB_BUSY_TIMEOUT_MS);
        rv = attach(db, path);
    }
    if (rv == 0) {
        rv = copy_state(db, sm, out);
        kv_db_exec(db, "DETACH snap");
    }
    kv_db_finalize_all(db);
    sqlite3_close(db);
    if (rv == 0) {
        rv = kv_file_crc(path, &out->size_bytes, &out->crc);
    }
    if (rv != 0) {
        unlink(path);
    }
    return rv;
}

int kv_file_crc(const char *path, uint64_t *size_bytes, uint32_t *crc)
{
    uint8_t *buf = malloc(KV_CRC_CHUNK_BYTES);
    uLong c = crc32(0L, Z_NULL, 0);
    uint64_t size = 0;
    ssize_t n;
    int fd;
    int rv = 0;

    if (buf == NULL) {
        return -ENOMEM;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        free(buf);
        return -errno;
    }
    while ((n = read(fd, buf, KV_CRC_CHUNK_BYTES)) != 0) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rv = -errno;
            break;
        }
        c = crc32(c, buf, (uInt)n);
        size += (uint64_t)n;
    }
    close(fd);
    free(buf);
    *size_bytes = size;
    *crc = (uint32_t)c;
    return rv;
}

int kv_snapshot_check(sqlite3 *db,
                      const char *schema,
                      raft_index_t index,
                      raft_term_t term)
{
    char sql[160];
    uint64_t v[3] = {0, 0, 0};
    static const char *const keys[3] = {"format", "index", "term"};
    uint64_t app_id = 0;
    bool found = false;

    snprintf(sql, sizeof(sql), "PRAGMA %s.application_id", schema);
    if (query_u64(db, sql, NULL, &app_id, &found) != 0 || !found ||
        app_id != KV_SNAP_APP_ID) {
        return IKD_ECORRUPT;
    }
    snprintf(sql, sizeof(sql), "SELECT value FROM %s.snap_meta WHERE key = ?1",
             schema);
    for (int i = 0; i < 3; i++) {
        if (query_u64(db, sql, keys[i], &v[i], &found) != 0 || !found) {
            return IKD_ECORRUPT;
        }
    }
    return v[0] == KV_SNAP_FORMAT && v[1] == index && v[2] == term
               ? 0
               : IKD_ECORRUPT;
}

int kv_snapshot_conf(const char *path,
                     bool *found,
                     raft_index_t *index,
                     uint8_t *buf,
                     size_t cap,
                     size_t *len)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc;
    int rv;

    *found = false;
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                         NULL);
    rv = rc == SQLITE_OK ? 0 : kv_db_rv(db, rc);
    if (rv == 0) {
        rc = sqlite3_prepare_v2(db, "SELECT idx, data FROM conf LIMIT 1", -1,
                                &st, NULL);
        /* A snapshot without the table carries no configuration. */
        if (rc != SQLITE_OK) {
            sqlite3_close(db);
            return 0;
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            sqlite3_int64 idx = sqlite3_column_int64(st, 0);
            int n = sqlite3_column_bytes(st, 1);

            if (idx < 0 || n < 0 || (size_t)n > cap) {
                rv = IKD_ECORRUPT;
            } else {
                memcpy(buf, sqlite3_column_blob(st, 1), (size_t)n);
                *len = (size_t)n;
                *index = (raft_index_t)idx;
                *found = true;
            }
        } else if (rc != SQLITE_DONE) {
            rv = IKD_ECORRUPT;
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return rv;
}
