/* Durable state of a node in one SQLite database. */

#include "store.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "db.h"
#include "snapshot.h"

/* The database, DIR/ikada.db, schema version 1.
 *
 *   PRAGMA application_id = KV_APP_ID, set when the schema is created; a
 *   database with tables but another id is not ours.
 *
 *   meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)
 *     'schema'    KV_SCHEMA_VERSION; refused when different
 *     'node_id'   the raft id this folder belongs to, written once
 *     'term'      current term (Raft 5.1); never decreases
 *     'vote'      id voted for in 'term', 0 for none (Raft 5.2)
 *     'applied'   last log index whose command is reflected in the state
 *                 machine's tables; written in the transaction that
 *                 applies it, so the two never disagree after a crash
 *     'next_ino'  the state machine's next inode number (kv/kvsm.c)
 *     'log_start' index of the first log entry: entries before it were
 *                 compacted (Raft 7) and are all applied; 1 when absent
 *     'log_start_term'  term of entry log_start - 1; 0 when absent
 *     'snap_index', 'snap_term'  the latest point where the log was
 *                 compacted or a snapshot installed; 0 when absent
 *
 *   log(idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,
 *       type INTEGER NOT NULL, data BLOB NOT NULL)
 *     one row a raft entry; indexes are contiguous from log_start; data is
 *     the command as proposed.
 *
 *   conf(one INTEGER PRIMARY KEY CHECK (one = 1), idx INTEGER NOT NULL,
 *        data BLOB NOT NULL)
 *     at most one row: the configuration as of the applied index (Raft 4),
 *     encoded by raft_membership_encode(), and the index of its entry (0
 *     for one given at bootstrap or by a recovery).  Written in the
 *     transaction that applies its entry; it travels in snapshots, so it
 *     outlives the compaction of that entry.
 *
 * The state machine's own tables live in the same database and are
 * described where they are defined.  Integers are SQLite's signed 64-bit
 * values: terms, indexes and inode numbers stay far below 2^63. */
#define KV_SCHEMA_VERSION 1

_Static_assert(sizeof(sqlite3_int64) == sizeof(raft_index_t),
               "indexes and terms are stored as SQLite integers");

enum {
    ST_BEGIN = 0,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_META_GET,
    ST_META_SET,
    ST_LOG_TRUNCATE,
    ST_LOG_INSERT,
    ST_LOG_ALL,
    ST_LOG_LAST,
    ST_LOG_COMPACT,
    ST_CONF_SET,
    ST_CONF_GET,
    ST_END
};

static const char *const store_sql[ST_END] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_SET] =
        "INSERT INTO meta(key, value) VALUES (?1, ?2) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_LOG_TRUNCATE] = "DELETE FROM log WHERE idx >= ?1",
    [ST_LOG_INSERT] =
        "INSERT INTO log(idx, term, type, data) "
        "VALUES (?1, ?2, ?3, ?4)",
    [ST_LOG_ALL] = "SELECT idx, term, type, data FROM log ORDER BY idx",
    [ST_LOG_LAST] = "SELECT max(idx) FROM log",
    [ST_LOG_COMPACT] = "DELETE FROM log WHERE idx <= ?1",
    /* Never back to an older configuration: a recovery stores one as of
     * the end of the log, which the entries applied after it must not
     * replace. */
    [ST_CONF_SET] =
        "INSERT INTO conf(one, idx, data) VALUES (1, ?1, ?2) "
        "ON CONFLICT(one) DO UPDATE SET idx = excluded.idx, "
        "data = excluded.data WHERE excluded.idx >= conf.idx",
    [ST_CONF_GET] = "SELECT idx, data FROM conf WHERE one = 1",
};

struct kv_store
{
    sqlite3 *db;
    const struct kv_sm *sm;
    raft_id_t node_id;
    /* Mirrors of what is durable, updated only after a COMMIT succeeded;
     * they let kv_store_write() assert the caller's invariants. */
    raft_term_t term;
    raft_index_t applied;
    raft_index_t last_index;
    raft_index_t log_start;
    bool sync_full; /* PRAGMA synchronous is FULL, not NORMAL */
    /* Frames in the WAL after the latest commit, from the WAL hook; only
     * the writing thread sets it. */
    int wal_frames;
    /* A second connection that copies the WAL back into the database, so
     * that the writer never does it inside a commit; used by one thread
     * at a time, possibly while the writer writes. */
    sqlite3 *ckpt_db;
    sqlite3_stmt *st[ST_END];
};

/* Run a cached statement that returns no rows, then reset it. */
static int store_step(struct kv_store *s, int which)
{
    sqlite3_stmt *st = s->st[which];
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : kv_db_rv(s->db, rc);
}

/* Read meta value key into *v.  0, 1 when the key is absent, or a
 * negative code; a negative value is corruption. */
static int meta_get(sqlite3 *db, sqlite3_stmt *st, const char *key, uint64_t *v)
{
    int rc;
    int rv = 0;

    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 x = sqlite3_column_int64(st, 0);
        if (sqlite3_column_type(st, 0) != SQLITE_INTEGER || x < 0) {
            rv = IKD_ECORRUPT;
        }
        *v = (uint64_t)x;
    } else {
        rv = rc == SQLITE_DONE ? 1 : kv_db_rv(db, rc);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rv;
}

/* meta_get() with a default for an absent key: 0 or a negative code. */
static int meta_get_or(struct kv_store *s,
                       const char *key,
                       uint64_t dflt,
                       uint64_t *v)
{
    int rv = meta_get(s->db, s->st[ST_META_GET], key, v);

    if (rv == 1) {
        *v = dflt;
        rv = 0;
    }
    return rv;
}

static int meta_set(struct kv_store *s, const char *key, uint64_t v)
{
    sqlite3_stmt *st = s->st[ST_META_SET];

    assert(v <= INT64_MAX);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)v);
    return store_step(s, ST_META_SET);
}

/* One integer from a query that needs no parameters: 0 or a code. */
static int query_int(sqlite3 *db, const char *sql, sqlite3_int64 *v)
{
    sqlite3_stmt *st;
    int rc;

    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return kv_db_rv(db, rc);
    }
    rc = sqlite3_step(st);
    *v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : kv_db_rv(db, rc);
}

/* Decide, reading only, whether the database is new, ours and this node's.
 * Sets *fresh for a database without tables. */
static int store_check(sqlite3 *db, raft_id_t node_id, bool *fresh)
{
    sqlite3_int64 n;
    sqlite3_stmt *st;
    uint64_t version = 0;
    uint64_t owner = 0;
    int rv;

    /* A file that is not a database fails right here with NOTADB. */
    rv = query_int(db, "SELECT count(*) FROM sqlite_master", &n);
    if (rv != 0) {
        return rv;
    }
    *fresh = n == 0;
    if (*fresh) {
        return 0;
    }

    rv = query_int(db, "PRAGMA application_id", &n);
    if (rv == 0 && n != KV_APP_ID) {
        return IKD_ECORRUPT;
    }
    rv = rv != 0 ? rv
                 : query_int(db,
                             "SELECT count(*) FROM sqlite_master "
                             "WHERE type = 'table' AND name = 'meta'",
                             &n);
    if (rv != 0 || n != 1) {
        return rv != 0 ? rv : IKD_ECORRUPT;
    }

    rv = kv_db_rv(
        db, sqlite3_prepare_v2(db, store_sql[ST_META_GET], -1, &st, NULL));
    if (rv != 0) {
        return rv;
    }
    rv = meta_get(db, st, "schema", &version);
    if (rv == 0) {
        rv = meta_get(db, st, "node_id", &owner);
    }
    sqlite3_finalize(st);
    if (rv != 0 || version != KV_SCHEMA_VERSION) {
        return rv < 0 ? rv : IKD_ECORRUPT;
    }
    return owner == node_id ? 0 : IKD_ENODEID;
}

static int wal_cb(void *arg, int n, char **values, char **names)
{
    (void)names;
    *(bool *)arg = n == 1 && values[0] != NULL && strcmp(values[0], "wal") == 0;
    return 0;
}

static int wal_hook_cb(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((struct kv_store *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

/* Durability settings: every COMMIT is on disk when it returns. */
static int store_pragmas(sqlite3 *db)
{
    bool wal = false;
    int rc;

    rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", wal_cb, &wal, NULL);
    if (rc != SQLITE_OK) {
        return kv_db_rv(db, rc);
    }
    if (!wal) {
        return -EIO;
    }
    /* A larger page cache keeps the overflow chain of a 4 MiB value in
     * memory while it is written a chunk at a time.  A WAL that grew
     * large once (checkpoints held off by a full disk, a burst of large
     * values) is cut back when it starts over, rather than keep its
     * size for good. */
    return kv_db_exec(db,
                      "PRAGMA synchronous = FULL;"
                      "PRAGMA cache_size = -16384;"
                      "PRAGMA journal_size_limit = 67108864;");
}

static int store_create_meta(sqlite3 *db, raft_id_t node_id)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "PRAGMA application_id = %d;"
             "INSERT INTO meta(key, value) VALUES "
             "('schema', %d), ('node_id', %u), ('term', 0), ('vote', 0), "
             "('applied', 0);",
             KV_APP_ID, KV_SCHEMA_VERSION, (unsigned)node_id);
    return kv_db_exec(db, sql);
}

/* Create what is missing, in one transaction: a crash leaves either no
 * tables (a fresh database again) or all of them. */
static int store_create(struct kv_store *s, raft_id_t node_id, bool fresh)
{
    int rv;

    rv = kv_db_exec(s->db, "BEGIN IMMEDIATE");
    if (rv != 0) {
        return rv;
    }
    rv = kv_db_exec(s->db,
                    "CREATE TABLE IF NOT EXISTS meta("
                    "key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                    "CREATE TABLE IF NOT EXISTS log("
                    "idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, "
                    "type INTEGER NOT NULL, data BLOB NOT NULL);"
                    "CREATE TABLE IF NOT EXISTS conf("
                    "one INTEGER PRIMARY KEY CHECK (one = 1), "
                    "idx INTEGER NOT NULL, data BLOB NOT NULL);");
    if (rv == 0 && fresh) {
        rv = store_create_meta(s->db, node_id);
    }
    if (rv == 0 && s->sm != NULL && s->sm->ops->init != NULL) {
        rv = s->sm->ops->init(s->sm->ctx, s->db);
    }
    if (rv == 0) {
        rv = kv_db_exec(s->db, "COMMIT");
    }
    if (rv != 0 && !sqlite3_get_autocommit(s->db)) {
        kv_db_exec(s->db, "ROLLBACK");
    }
    return rv;
}

static int store_prepare(struct kv_store *s)
{
    for (int i = 0; i < ST_END; i++) {
        int rc = sqlite3_prepare_v3(s->db, store_sql[i], -1,
                                    SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK) {
            return kv_db_rv(s->db, rc);
        }
    }
    return 0;
}

/* Fill the mirrors of the durable state. */
static int store_mirror(struct kv_store *s)
{
    sqlite3_stmt *st = s->st[ST_LOG_LAST];
    uint64_t term = 0;
    uint64_t applied = 0;
    int rc;
    int rv;

    rv = meta_get(s->db, s->st[ST_META_GET], "term", &term);
    if (rv == 0) {
        rv = meta_get(s->db, s->st[ST_META_GET], "applied", &applied);
    }
    if (rv != 0) {
        return rv < 0 ? rv : IKD_ECORRUPT;
    }
    s->term = term;
    s->applied = applied;
    rv = meta_get_or(s, "log_start", 1, &s->log_start);
    if (rv != 0) {
        return rv;
    }

    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 last = sqlite3_column_int64(st, 0);
        s->last_index = last > 0 ? (raft_index_t)last : s->log_start - 1;
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : kv_db_rv(s->db, rc);
}

/* The checkpoint connection, once the database exists.  SQLite's automatic
 * checkpoints, which the writer would run inside a commit, give way to
 * kv_store_checkpoint(). */
static int store_open_checkpointer(struct kv_store *s, const char *path)
{
    int rc = sqlite3_open_v2(path, &s->ckpt_db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);

    if (rc != SQLITE_OK) {
        return kv_db_rv(s->ckpt_db, rc);
    }
    sqlite3_busy_timeout(s->ckpt_db, KV_DB_BUSY_TIMEOUT_MS);
    /* A connection sees that the database is in WAL mode, and may
     * checkpoint it, only once it has read from it. */
    rc = kv_db_exec(s->ckpt_db, "SELECT count(*) FROM sqlite_master");
    if (rc != 0) {
        return rc;
    }
    sqlite3_wal_hook(s->db, wal_hook_cb, s);
    return 0;
}

int kv_store_open(const char *dir,
                  raft_id_t node_id,
                  const struct kv_sm *sm,
                  struct kv_store **out)
{
    struct kv_store *s;
    char *path;
    bool fresh = false;
    int rc;
    int rv;

    assert(dir != NULL && out != NULL);
    assert(node_id != 0);
    assert(sm == NULL || sm->ops != NULL);
    /* SQLite counts its memory under a global mutex unless told not to;
     * this only takes effect before SQLite's first use in the process,
     * and is refused (harmlessly) after it. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    s->sm = sm;
    s->node_id = node_id;
    if (asprintf(&path, "%s/%s", dir, KV_DB_NAME) < 0) {
        rv = -ENOMEM;
        goto err_after_alloc;
    }

    rc = sqlite3_open_v2(
        path, &s->db,
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rv = kv_db_rv(s->db, rc);
        goto err_after_open;
    }
    sqlite3_busy_timeout(s->db, KV_DB_BUSY_TIMEOUT_MS);

    /* Identity first, before anything is written: a folder of another
     * node must come out of this untouched. */
    rv = store_check(s->db, node_id, &fresh);
    if (rv == 0) {
        rv = store_pragmas(s->db);
        s->sync_full = true;
    }
    if (rv == 0) {
        rv = store_create(s, node_id, fresh);
    }
    if (rv == 0) {
        rv = store_prepare(s);
    }
    if (rv == 0) {
        rv = store_mirror(s);
    }
    if (rv == 0) {
        rv = store_open_checkpointer(s, path);
    }
    if (rv != 0) {
        goto err_after_open;
    }
    free(path);
    *out = s;
    return 0;

err_after_open:
    kv_db_finalize_all(s->db);
    sqlite3_close(s->db);
    sqlite3_close(s->ckpt_db);
    free(path);
err_after_alloc:
    free(s);
    return rv;
}

void kv_store_close(struct kv_store *s)
{
    if (s == NULL) {
        return;
    }
    /* The state machine's statements live on the same connection. */
    kv_db_finalize_all(s->db);
    sqlite3_close(s->db);
    sqlite3_close(s->ckpt_db);
    free(s);
}

bool kv_store_wants_checkpoint(const struct kv_store *s)
{
    return s->wal_frames >= KV_CHECKPOINT_FRAMES;
}

int kv_store_checkpoint(struct kv_store *s, int *copied)
{
    int frames = 0;
    int done = 0;
    int rc;

    /* PASSIVE copies what no reader still needs and never waits for the
     * writer. */
    rc = sqlite3_wal_checkpoint_v2(s->ckpt_db, "main",
                                   SQLITE_CHECKPOINT_PASSIVE, &frames, &done);
    *copied = rc == SQLITE_OK && done > 0 ? done : 0;
    return rc == SQLITE_BUSY ? 0 : kv_db_rv(s->ckpt_db, rc);
}

bool kv_store_wants_finish(const struct kv_store *s, int copied)
{
    int left = s->wal_frames - copied;

    return copied > 0 && left > 0 && left <= KV_CHECKPOINT_FINISH_FRAMES;
}

/* Read one log row into e, which owns a malloc'd copy of the data. */
static int load_entry(sqlite3_stmt *st, struct raft_entry *e)
{
    sqlite3_int64 term = sqlite3_column_int64(st, 1);
    sqlite3_int64 type = sqlite3_column_int64(st, 2);
    int len = sqlite3_column_bytes(st, 3);
    const void *data = sqlite3_column_blob(st, 3);

    if (term < 0 ||
        (type != RAFT_ENTRY_NOOP && type != RAFT_ENTRY_COMMAND &&
         type != RAFT_ENTRY_CONFIG) ||
        sqlite3_column_type(st, 3) != SQLITE_BLOB || len < 0) {
        return IKD_ECORRUPT;
    }
    e->term = (raft_term_t)term;
    e->type = (uint8_t)type;
    e->len = (uint32_t)len;
    e->data = NULL;
    if (len > 0) {
        e->data = malloc((size_t)len);
        if (e->data == NULL) {
            return -ENOMEM;
        }
        memcpy(e->data, data, (size_t)len);
    }
    return 0;
}

static int conf_set(struct kv_store *s,
                    raft_index_t index,
                    const void *data,
                    size_t len)
{
    sqlite3_stmt *st = s->st[ST_CONF_SET];
    int rv;

    sqlite3_bind_int64(st, 1, (sqlite3_int64)index);
    sqlite3_bind_blob(st, 2, len > 0 ? data : "", (int)len, SQLITE_STATIC);
    rv = store_step(s, ST_CONF_SET);
    sqlite3_clear_bindings(st);
    return rv;
}

int kv_store_set_conf(struct kv_store *s,
                      raft_index_t index,
                      const void *data,
                      size_t len)
{
    int rv = store_step(s, ST_BEGIN);

    if (rv != 0) {
        return rv;
    }
    rv = conf_set(s, index, data, len);
    if (rv == 0) {
        rv = store_step(s, ST_COMMIT);
    }
    if (rv != 0 && !sqlite3_get_autocommit(s->db)) {
        store_step(s, ST_ROLLBACK);
    }
    return rv;
}

/* The stored configuration into st, if any. */
static int load_conf(struct kv_store *s, struct kv_state *st)
{
    sqlite3_stmt *q = s->st[ST_CONF_GET];
    int rc = sqlite3_step(q);
    int rv = 0;

    if (rc == SQLITE_ROW) {
        sqlite3_int64 idx = sqlite3_column_int64(q, 0);
        const void *data = sqlite3_column_blob(q, 1);
        int len = sqlite3_column_bytes(q, 1);

        if (idx < 0 || len < 0 || (size_t)len > sizeof(st->conf_data)) {
            rv = IKD_ECORRUPT;
        } else {
            st->has_conf = true;
            st->conf_index = (raft_index_t)idx;
            st->conf_len = (size_t)len;
            memcpy(st->conf_data, data, (size_t)len);
        }
    } else if (rc != SQLITE_DONE) {
        rv = kv_db_rv(s->db, rc);
    }
    sqlite3_reset(q);
    return rv;
}

static int load_log(struct kv_store *s, struct kv_state *st)
{
    sqlite3_stmt *q = s->st[ST_LOG_ALL];
    size_t cap = 0;
    int rc;
    int rv = 0;

    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        sqlite3_int64 idx = sqlite3_column_int64(q, 0);

        /* Indexes must follow one another from the first (Raft 5.3: the
         * log is a sequence without holes). */
        if (st->n_entries == 0) {
            st->first_index = idx > 0 ? (raft_index_t)idx : 0;
        }
        if (idx <= 0 || (raft_index_t)idx != st->first_index + st->n_entries) {
            rv = IKD_ECORRUPT;
            break;
        }
        if (st->n_entries == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            void *p = realloc(st->entries, ncap * sizeof(*st->entries));
            if (p == NULL) {
                rv = -ENOMEM;
                break;
            }
            st->entries = p;
            cap = ncap;
        }
        rv = load_entry(q, &st->entries[st->n_entries]);
        if (rv != 0) {
            break;
        }
        st->n_entries++;
    }
    if (rv == 0 && rc != SQLITE_DONE) {
        rv = kv_db_rv(s->db, rc);
    }
    sqlite3_reset(q);
    return rv;
}

/* Where the log starts after compaction, and the snapshot point. */
static int load_log_start(struct kv_store *s, struct kv_state *st)
{
    uint64_t start_term = 0;
    int rv;

    rv = meta_get_or(s, "log_start_term", 0, &start_term);
    if (rv == 0) {
        rv = meta_get_or(s, "snap_index", 0, &st->snap_index);
    }
    if (rv == 0) {
        rv = meta_get_or(s, "snap_term", 0, &st->snap_term);
    }
    if (rv != 0) {
        return rv;
    }
    if (s->log_start == 0 || st->applied + 1 < s->log_start) {
        return IKD_ECORRUPT; /* compacted entries must all be applied */
    }
    st->prev_term = start_term;
    return 0;
}

int kv_store_load(struct kv_store *s, struct kv_state *st)
{
    uint64_t vote = 0;
    int rv;

    assert(s != NULL && st != NULL);
    memset(st, 0, sizeof(*st));
    st->first_index = 1;
    rv = meta_get(s->db, s->st[ST_META_GET], "term", &st->term);
    if (rv == 0) {
        rv = meta_get(s->db, s->st[ST_META_GET], "vote", &vote);
    }
    if (rv == 0) {
        rv = meta_get(s->db, s->st[ST_META_GET], "applied", &st->applied);
    }
    if (rv == 0 && vote > UINT32_MAX) {
        rv = IKD_ECORRUPT;
    }
    if (rv != 0) {
        return rv < 0 ? rv : IKD_ECORRUPT;
    }
    st->vote = (raft_id_t)vote;
    rv = load_log_start(s, st);
    if (rv != 0) {
        return rv;
    }

    rv = load_conf(s, st);
    if (rv == 0) {
        rv = load_log(s, st);
    }
    if (rv == 0 && st->n_entries > 0 && st->first_index != s->log_start) {
        rv = IKD_ECORRUPT; /* a hole after the compacted entries */
    }
    if (rv != 0) {
        kv_state_free(st);
        return rv;
    }
    st->first_index = s->log_start;
    return 0;
}

void kv_state_free(struct kv_state *st)
{
    if (st == NULL) {
        return;
    }
    for (size_t i = 0; i < st->n_entries; i++) {
        free(st->entries[i].data);
    }
    free(st->entries);
    st->entries = NULL;
    st->n_entries = 0;
}

static int write_log(struct kv_store *s, const struct kv_batch *b)
{
    sqlite3_stmt *ins = s->st[ST_LOG_INSERT];
    int rv;

    sqlite3_bind_int64(s->st[ST_LOG_TRUNCATE], 1, (sqlite3_int64)b->log_from);
    rv = store_step(s, ST_LOG_TRUNCATE);
    for (size_t i = 0; rv == 0 && i < b->n_entries; i++) {
        const struct raft_entry *e = &b->entries[i];

        assert(e->len == 0 || e->data != NULL);
        sqlite3_bind_int64(ins, 1, (sqlite3_int64)(b->log_from + i));
        sqlite3_bind_int64(ins, 2, (sqlite3_int64)e->term);
        sqlite3_bind_int(ins, 3, e->type);
        /* A NULL pointer would bind SQL NULL: bind an empty blob. */
        if (e->len == 0) {
            sqlite3_bind_zeroblob(ins, 4, 0);
        } else {
            sqlite3_bind_blob(ins, 4, e->data, (int)e->len, SQLITE_STATIC);
        }
        rv = store_step(s, ST_LOG_INSERT);
    }
    sqlite3_clear_bindings(ins);
    return rv;
}

static int write_apply(struct kv_store *s, struct kv_batch *b)
{
    int rv = 0;

    for (size_t i = 0; rv == 0 && i < b->n_apply; i++) {
        const struct raft_entry *e = &b->apply[i];
        struct kv_sm_result *res = &b->results[i];

        res->status = 0;
        res->value = 0;
        if (e->type == RAFT_ENTRY_CONFIG) {
            rv = conf_set(s, b->apply_from + i, e->data, e->len);
            continue;
        }
        if (e->type == RAFT_ENTRY_NOOP || s->sm == NULL) {
            continue;
        }
        rv = s->sm->ops->apply(s->sm->ctx, s->db, b->apply_from + i, e->data,
                               e->len, res);
    }
    if (rv == 0) {
        rv = meta_set(s, "applied", b->apply_from + b->n_apply - 1);
    }
    return rv;
}

/* Step 4 of kv_store_write(). */
static int write_compact(struct kv_store *s, const struct kv_batch *b)
{
    int rv;

    sqlite3_bind_int64(s->st[ST_LOG_COMPACT], 1, (sqlite3_int64)b->compact_to);
    rv = store_step(s, ST_LOG_COMPACT);
    if (rv == 0) {
        rv = meta_set(s, "log_start", b->compact_to + 1);
    }
    if (rv == 0) {
        rv = meta_set(s, "log_start_term", b->compact_term);
    }
    if (rv == 0) {
        rv = meta_set(s, "snap_index", b->snap_index);
    }
    if (rv == 0) {
        rv = meta_set(s, "snap_term", b->snap_term);
    }
    return rv;
}

/* The snapshot's configuration replaces ours; a snapshot without one
 * (made before configurations were stored) leaves ours in place. */
static int install_conf(struct kv_store *s)
{
    sqlite3_stmt *st;
    int rc;
    bool has;

    rc = sqlite3_prepare_v2(s->db,
                            "SELECT count(*) FROM snap.sqlite_master "
                            "WHERE type = 'table' AND name = 'conf'",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return kv_db_rv(s->db, rc);
    }
    rc = sqlite3_step(st);
    has = rc == SQLITE_ROW && sqlite3_column_int(st, 0) == 1;
    sqlite3_finalize(st);
    if (!has) {
        return 0;
    }
    return kv_db_exec(s->db,
                      "DELETE FROM main.conf; INSERT INTO main.conf(one, idx, "
                      "data) SELECT 1, idx, data FROM snap.conf LIMIT 1");
}

/* Step 0 of kv_store_write(), with the snapshot attached as "snap". */
static int write_install(struct kv_store *s, const struct kv_batch *b)
{
    int rv;

    rv = kv_snapshot_check(s->db, "snap", b->install_index, b->install_term);
    if (rv == 0) {
        rv = s->sm != NULL && s->sm->ops->restore != NULL
                 ? s->sm->ops->restore(s->sm->ctx, s->db, "snap")
                 : IKD_ECORRUPT;
    }
    if (rv == 0) {
        rv = install_conf(s);
    }
    if (rv == 0) {
        rv = kv_db_exec(s->db, "DELETE FROM log");
    }
    if (rv == 0) {
        rv = meta_set(s, "applied", b->install_index);
    }
    if (rv == 0) {
        rv = meta_set(s, "log_start", b->install_index + 1);
    }
    if (rv == 0) {
        rv = meta_set(s, "log_start_term", b->install_term);
    }
    if (rv == 0) {
        rv = meta_set(s, "snap_index", b->install_index);
    }
    if (rv == 0) {
        rv = meta_set(s, "snap_term", b->install_term);
    }
    return rv;
}

/* The log's last index once b is durable. */
static raft_index_t batch_last(const struct kv_store *s,
                               const struct kv_batch *b)
{
    if (b->log_from == 0) {
        return b->install_path != NULL ? b->install_index : s->last_index;
    }
    return b->log_from + b->n_entries - 1;
}

/* The applied index and last log index that the steps after the install
 * start from. */
static void batch_base(const struct kv_store *s,
                       const struct kv_batch *b,
                       raft_index_t *applied,
                       raft_index_t *last)
{
    *applied = b->install_path != NULL ? b->install_index : s->applied;
    *last = b->install_path != NULL ? b->install_index : s->last_index;
}

static int attach_snapshot(struct kv_store *s, const char *path)
{
    sqlite3_stmt *st;
    struct stat sb;
    int rc;

    /* ATTACH would create a missing file: refuse it first. */
    if (stat(path, &sb) != 0) {
        return -errno;
    }
    if (!S_ISREG(sb.st_mode)) {
        return IKD_ECORRUPT;
    }

    rc = sqlite3_prepare_v2(s->db, "ATTACH ?1 AS snap", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return kv_db_rv(s->db, rc);
    }
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : kv_db_rv(s->db, rc);
}

/* Steps 0 to 4 inside the transaction. */
static int write_steps(struct kv_store *s, struct kv_batch *b)
{
    int rv = 0;

    if (b->install_path != NULL) {
        rv = write_install(s, b);
    }
    if (rv == 0 && b->hard_state) {
        rv = meta_set(s, "term", b->term);
        if (rv == 0) {
            rv = meta_set(s, "vote", b->vote);
        }
    }
    if (rv == 0 && b->log_from != 0) {
        rv = write_log(s, b);
    }
    if (rv == 0 && b->n_apply > 0) {
        rv = write_apply(s, b);
    }
    if (rv == 0 && b->compact_to != 0) {
        rv = write_compact(s, b);
    }
    return rv;
}

/* Whether a batch promises durability.  One that only applies committed
 * entries does not: the entries are durable in the log already, and the
 * applied index moves in the same transaction as the state, so losing the
 * transaction to a power cut only makes the node apply them again at
 * restart.  Such a commit skips the fsync; the WAL holds it in order, and
 * the next commit that syncs (or a checkpoint) makes it durable too. */
static bool batch_needs_sync(const struct kv_batch *b)
{
    return b->hard_state || b->log_from != 0 || b->compact_to != 0 ||
           b->install_path != NULL;
}

static int store_sync_mode(struct kv_store *s, bool full)
{
    int rv;

    if (s->sync_full == full) {
        return 0;
    }
    rv = kv_db_exec(s->db, full ? "PRAGMA synchronous = FULL"
                                : "PRAGMA synchronous = NORMAL");
    if (rv == 0) {
        s->sync_full = full;
    }
    return rv;
}

int kv_store_write(struct kv_store *s, struct kv_batch *b)
{
    raft_index_t last = batch_last(s, b);
    raft_index_t base_applied;
    raft_index_t base_last;
    int rv;

    assert(s != NULL && b != NULL);
    batch_base(s, b, &base_applied, &base_last);
    /* Raft 5.1: the term never goes down. */
    assert(!b->hard_state || b->term >= s->term);
    /* Raft 7: a snapshot only moves the state forward. */
    assert(b->install_path == NULL || b->install_index > s->applied);
    /* Raft 5.4: committed (here, applied) entries are never replaced, and
     * the log has no holes. */
    assert(b->log_from == 0 ||
           (b->log_from > base_applied && b->log_from <= base_last + 1));
    /* Entries are applied once each, in order, and only once stored. */
    assert(b->n_apply == 0 ||
           (b->apply_from == base_applied + 1 &&
            b->apply_from + b->n_apply - 1 <= last && b->results != NULL));
    /* Raft 7: only applied entries are compacted, never together with an
     * install, which moves the log start itself. */
    assert(b->compact_to == 0 || b->install_path == NULL);
    assert(b->compact_to == 0 ||
           (b->compact_to >= s->log_start && b->compact_to <= base_applied &&
            b->snap_index >= b->compact_to));

    if (b->install_path != NULL) {
        rv = attach_snapshot(s, b->install_path);
        if (rv != 0) {
            return rv;
        }
    }
    if (b->finish_checkpoint) {
        /* On the writer's connection, between its transactions: nothing
         * is added to the WAL while this copies. */
        sqlite3_wal_checkpoint_v2(s->db, "main", SQLITE_CHECKPOINT_PASSIVE,
                                  NULL, NULL);
    }
    rv = store_sync_mode(s, batch_needs_sync(b));
    if (rv == 0) {
        rv = store_step(s, ST_BEGIN);
    }
    if (rv == 0) {
        rv = write_steps(s, b);
        if (rv == 0) {
            rv = store_step(s, ST_COMMIT);
        }
        /* SQLite may have rolled back already (a full disk does). */
        if (rv != 0 && !sqlite3_get_autocommit(s->db)) {
            store_step(s, ST_ROLLBACK);
        }
        if (s->sm != NULL && s->sm->ops->settle != NULL) {
            s->sm->ops->settle(s->sm->ctx, rv == 0);
        }
    }
    if (b->install_path != NULL) {
        kv_db_exec(s->db, "DETACH snap");
    }
    if (rv != 0) {
        return rv;
    }

    if (b->hard_state) {
        s->term = b->term;
    }
    if (b->install_path != NULL) {
        s->log_start = b->install_index + 1;
    }
    if (b->compact_to != 0) {
        s->log_start = b->compact_to + 1;
    }
    s->last_index = last;
    s->applied = base_applied + b->n_apply;
    return 0;
}
