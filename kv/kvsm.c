/* The file-tree key-value state machine. */

#include "sm.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../raft/ikd.h"
#include "cmd.h"
#include "db.h"
#include "orphan.h"

/* Tables of the file tree, beside those of kv/store.c:
 *
 *   inode(ino INTEGER PRIMARY KEY, parent INTEGER NOT NULL,
 *         name BLOB NOT NULL, is_dir INTEGER NOT NULL,
 *         mode INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
 *         ctime_ns INTEGER NOT NULL, size INTEGER NOT NULL)
 *   UNIQUE INDEX inode_name ON inode(parent, name)
 *     one row a file or folder.  The root folder is ino KV_ROOT_INO with
 *     parent 0 and an empty name, and always exists.  Names are compared
 *     as bytes.  mode holds the permission bits (07777) only; size is 0
 *     for a folder.
 *
 *   content(ino INTEGER PRIMARY KEY, data BLOB NOT NULL)
 *     one row a file.  data holds at least size bytes and every byte past
 *     size is zero, so a file can grow into its spare room without
 *     rewriting: a 4 MiB file written 4 KiB at a time is rewritten only
 *     when its room doubles.  The bytes live apart from the inode so that
 *     a rename, chmod or time change rewrites a small row only.
 *
 *   meta 'next_ino': the next inode number to hand out, from KV_FIRST_INO.
 *     Numbers are assigned while applying, so every node assigns the same
 *     ones, and are never reused.
 *
 *   session(id INTEGER PRIMARY KEY, seq INTEGER NOT NULL,
 *           status INTEGER NOT NULL, value INTEGER NOT NULL,
 *           used_index INTEGER NOT NULL, used_ns INTEGER NOT NULL)
 *   INDEX session_lru ON session(used_index)
 *   INDEX session_age ON session(used_ns)
 *     one row a client session (see KV_SESSION_MAX in cmd.h): the seq of
 *     its latest command and that command's result (status, value).  id,
 *     seq and value hold the uint64 bit patterns.  used_index is the log
 *     index of the session's latest command, unique per row, which orders
 *     sessions for eviction; used_ns is the log clock at that command.
 *
 *   meta 'clock_ns': the log clock, the largest time_ns of any command
 *     applied so far.  It never decreases and depends on the log alone,
 *     so sessions expire at the same index on every node. */

_Static_assert(KV_ROOT_INO < KV_FIRST_INO, "the root is not handed out");

/* A bound parameter of a query. */
struct arg
{
    enum { ARG_INT, ARG_TEXT, ARG_BLOB } kind;
    sqlite3_int64 i;
    const void *p;
    size_t n;
};

#define I(x) ((struct arg){ARG_INT, (sqlite3_int64)(x), NULL, 0})
#define T(s) ((struct arg){ARG_TEXT, 0, (s), 0})
#define B(ptr, len) ((struct arg){ARG_BLOB, 0, (ptr), (len)})
#define NARGS(...) (sizeof((struct arg[]){__VA_ARGS__}) / sizeof(struct arg))
/* Run sql with the given parameters: see q_run(). */
#define Q(t, row, sql, ...)                                                  \
    q_run((t), (sql), (const struct arg[]){__VA_ARGS__}, NARGS(__VA_ARGS__), \
          (row))

/* One command being applied.  Helpers return 0 or a negative errno that
 * refuses the command; a storage fault is also recorded in `fault`, which
 * wins over any refusal, so callers just stop at the first non-zero. */
struct tx
{
    sqlite3 *db;
    const struct kv_cmd *c;
    int fault;
    uint64_t value;
    int64_t clock;              /* the log clock once clock_advance() ran */
    struct kv_orphans *orphans; /* the ctx given to fsm_apply(), or NULL */
};

/* What the helpers need of an inode. */
struct node
{
    uint64_t ino;
    uint64_t parent;
    bool is_dir;
    uint64_t size;
};

static int tx_fault(struct tx *t, int rv)
{
    assert(rv < 0);
    if (t->fault == 0) {
        t->fault = rv;
    }
    return rv;
}

/* Prepare sql (cached on the connection), bind a[0..n) and step once.
 * Returns 1 with *row set when a row came back (the caller reads it and
 * calls sqlite3_reset()), 0 when done, or a fault. */
static int q_run(struct tx *t,
                 const char *sql,
                 const struct arg *a,
                 size_t n,
                 sqlite3_stmt **row)
{
    sqlite3_stmt *st;
    int rc;
    int rv;

    rv = kv_db_stmt(t->db, sql, &st);
    if (rv != 0) {
        return tx_fault(t, rv);
    }
    for (size_t i = 0; i < n; i++) {
        int col = (int)i + 1;
        if (a[i].kind == ARG_INT) {
            sqlite3_bind_int64(st, col, a[i].i);
        } else if (a[i].kind == ARG_TEXT) {
            sqlite3_bind_text(st, col, a[i].p, -1, SQLITE_STATIC);
        } else if (a[i].n == 0) {
            sqlite3_bind_zeroblob(st, col, 0);
        } else {
            sqlite3_bind_blob64(st, col, a[i].p, a[i].n, SQLITE_STATIC);
        }
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && row != NULL) {
        *row = st;
        return 1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        return tx_fault(t, kv_db_rv(t->db, rc));
    }
    return 0;
}

/* Fill n from a row of (ino, parent, is_dir, size). */
static int node_row(struct tx *t, sqlite3_stmt *st, struct node *n)
{
    sqlite3_int64 ino = sqlite3_column_int64(st, 0);
    sqlite3_int64 parent = sqlite3_column_int64(st, 1);
    sqlite3_int64 is_dir = sqlite3_column_int64(st, 2);
    sqlite3_int64 size = sqlite3_column_int64(st, 3);

    sqlite3_reset(st);
    if (ino <= 0 || parent < 0 || is_dir < 0 || is_dir > 1 || size < 0 ||
        size > IKD_MAX_VALUE_BYTES_LIMIT) {
        return tx_fault(t, IKD_ECORRUPT);
    }
    n->ino = (uint64_t)ino;
    n->parent = (uint64_t)parent;
    n->is_dir = is_dir == 1;
    n->size = (uint64_t)size;
    return 0;
}

/* 0, -ENOENT or a fault. */
static int node_get(struct tx *t, uint64_t ino, struct node *n)
{
    sqlite3_stmt *st;
    int rv;

    if (ino > INT64_MAX) {
        return -ENOENT;
    }
    rv = Q(t, &st, "SELECT ino, parent, is_dir, size FROM inode WHERE ino = ?1",
           I(ino));
    if (rv <= 0) {
        return rv < 0 ? rv : -ENOENT;
    }
    return node_row(t, st, n);
}

/* 0, -ENOENT or a fault. */
static int node_lookup(struct tx *t,
                       uint64_t parent,
                       const char *name,
                       size_t len,
                       struct node *n)
{
    sqlite3_stmt *st;
    int rv;

    rv = Q(t, &st,
           "SELECT ino, parent, is_dir, size FROM inode "
           "WHERE parent = ?1 AND name = ?2",
           I(parent), B(name, len));
    if (rv <= 0) {
        return rv < 0 ? rv : -ENOENT;
    }
    return node_row(t, st, n);
}

/* The folder ino: 0, -ENOENT, -ENOTDIR or a fault. */
static int dir_get(struct tx *t, uint64_t ino, struct node *n)
{
    int rv = node_get(t, ino, n);

    if (rv == 0 && !n->is_dir) {
        return -ENOTDIR;
    }
    return rv;
}

/* 1 when folder ino has entries, 0 when not, or a fault. */
static int dir_has_child(struct tx *t, uint64_t ino)
{
    sqlite3_stmt *st;
    int rv;

    rv = Q(t, &st, "SELECT 1 FROM inode WHERE parent = ?1 LIMIT 1", I(ino));
    if (rv == 1) {
        sqlite3_reset(st);
    }
    return rv;
}

/* A name the command may create or look up in folder parent. */
static int name_ok(uint64_t parent, const char *name, size_t len)
{
    int rv = kv_name_check(name, len);

    /* The root's ".ikada" belongs to the file system's own files. */
    if (rv == 0 && parent == KV_ROOT_INO && len == 6 &&
        memcmp(name, ".ikada", 6) == 0) {
        return -EINVAL;
    }
    return rv;
}

/* Set mtime and ctime of ino to the command's time, as creating or
 * removing an entry does to its folder. */
static int touch(struct tx *t, uint64_t ino)
{
    assert(ino != 0);
    return Q(t, NULL,
             "UPDATE inode SET mtime_ns = ?2, ctime_ns = ?2 WHERE ino = ?1",
             I(ino), I(t->c->time_ns));
}

static int ino_alloc(struct tx *t, uint64_t *ino)
{
    sqlite3_stmt *st;
    sqlite3_int64 next;
    int rv;

    rv = Q(t, &st, "SELECT value FROM meta WHERE key = ?1", T("next_ino"));
    if (rv <= 0) {
        return rv < 0 ? rv : tx_fault(t, IKD_ECORRUPT);
    }
    next = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (next < KV_FIRST_INO || next == INT64_MAX) {
        return tx_fault(t, IKD_ECORRUPT);
    }
    *ino = (uint64_t)next;
    assert(*ino >= KV_FIRST_INO);
    return Q(t, NULL, "UPDATE meta SET value = ?1 WHERE key = ?2", I(next + 1),
             T("next_ino"));
}

/* Insert a new entry of folder parent (a file holding data, or a folder)
 * and update the folder's times.  0 or a fault. */
static int node_insert(struct tx *t,
                       uint64_t parent,
                       const char *name,
                       size_t len,
                       bool is_dir,
                       uint32_t mode,
                       const uint8_t *data,
                       size_t data_len,
                       uint64_t *ino)
{
    int rv;

    assert(!is_dir || data_len == 0);
    assert(parent != 0 && len > 0 && len <= IKD_MAX_NAME_BYTES);
    rv = ino_alloc(t, ino);
    if (rv == 0) {
        rv = Q(t, NULL,
               "INSERT INTO inode(ino, parent, name, is_dir, mode, mtime_ns, "
               "ctime_ns, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
               I(*ino), I(parent), B(name, len), I(is_dir), I(mode & 07777),
               I(t->c->time_ns), I(data_len));
    }
    if (rv == 0 && !is_dir) {
        rv = Q(t, NULL, "INSERT INTO content(ino, data) VALUES (?1, ?2)",
               I(*ino), B(data, data_len));
    }
    if (rv == 0) {
        rv = touch(t, parent);
    }
    return rv;
}

/* Hand file n, about to be removed, to this node's orphans.  0 or a
 * fault. */
static int orphan_keep(struct tx *t, const struct node *n)
{
    struct kv_attr a = {.ino = n->ino, .size = n->size};
    sqlite3_stmt *st;
    int rv;

    rv = Q(t, &st, "SELECT mode, mtime_ns, ctime_ns FROM inode WHERE ino = ?1",
           I(n->ino));
    if (rv <= 0) {
        return rv;
    }
    a.mode = (uint32_t)sqlite3_column_int64(st, 0) & 07777;
    a.mtime_ns = sqlite3_column_int64(st, 1);
    a.ctime_ns = sqlite3_column_int64(st, 2);
    sqlite3_reset(st);
    rv = Q(t, &st, "SELECT data FROM content WHERE ino = ?1", I(n->ino));
    if (rv < 0) {
        return rv;
    }
    if (rv == 0) {
        kv_orphans_keep(t->orphans, &a, NULL, 0);
        return 0;
    }
    kv_orphans_keep(t->orphans, &a, sqlite3_column_blob(st, 0),
                    (size_t)sqlite3_column_bytes(st, 0));
    sqlite3_reset(st);
    return 0;
}

/* Remove entry n and update its folder's times.  0 or a fault. */
static int node_remove(struct tx *t, const struct node *n)
{
    int rv = 0;

    if (t->orphans != NULL && !n->is_dir &&
        kv_orphans_watched(t->orphans, n->ino)) {
        rv = orphan_keep(t, n);
    }
    if (rv == 0) {
        rv = Q(t, NULL, "DELETE FROM inode WHERE ino = ?1", I(n->ino));
    }
    if (rv == 0) {
        rv = Q(t, NULL, "DELETE FROM content WHERE ino = ?1", I(n->ino));
    }
    if (rv == 0) {
        rv = touch(t, n->parent);
    }
    return rv;
}

/* The largest file the command allows: what its proposer asked for, and
 * never more than any node may be configured with. */
static uint64_t max_bytes(const struct kv_cmd *c)
{
    return c->max_bytes < IKD_MAX_VALUE_BYTES_LIMIT ? c->max_bytes
                                                    : IKD_MAX_VALUE_BYTES_LIMIT;
}

/* Whether len bytes at offset stay within the limit, without overflow. */
static bool fits(const struct kv_cmd *c, uint64_t offset, uint64_t len)
{
    return offset <= max_bytes(c) && len <= max_bytes(c) - offset;
}

/* File contents ------------------------------------------------------- */

/* Bytes of spare room the file's blob has: its length. */
static int content_room(struct tx *t, uint64_t ino, uint64_t *room)
{
    sqlite3_stmt *st;
    sqlite3_int64 len;
    int rv;

    rv = Q(t, &st, "SELECT length(data) FROM content WHERE ino = ?1", I(ino));
    if (rv <= 0) {
        return rv < 0 ? rv : tx_fault(t, IKD_ECORRUPT);
    }
    len = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (len < 0 || len > IKD_MAX_VALUE_BYTES_LIMIT) {
        return tx_fault(t, IKD_ECORRUPT);
    }
    *room = (uint64_t)len;
    return 0;
}

static int blob_io(struct tx *t,
                   uint64_t ino,
                   bool write,
                   void *buf,
                   size_t len,
                   uint64_t offset)
{
    sqlite3_blob *b;
    int rc;

    assert(len <= INT32_MAX && offset <= INT32_MAX - len);
    if (len == 0) {
        return 0;
    }
    rc = sqlite3_blob_open(t->db, "main", "content", "data", (sqlite3_int64)ino,
                           write ? 1 : 0, &b);
    if (rc == SQLITE_OK) {
        rc = write ? sqlite3_blob_write(b, buf, (int)len, (int)offset)
                   : sqlite3_blob_read(b, buf, (int)len, (int)offset);
        int rc2 = sqlite3_blob_close(b);
        rc = rc != SQLITE_OK ? rc : rc2;
    } else {
        sqlite3_blob_close(b);
    }
    if (rc == SQLITE_ERROR) {
        /* A blob shorter than the inode says, or a missing row. */
        return tx_fault(t, IKD_ECORRUPT);
    }
    return rc == SQLITE_OK ? 0 : tx_fault(t, kv_db_rv(t->db, rc));
}

/* Give file n a blob of exactly room bytes that starts with its first
 * min(size, room) bytes and is zero after them. */
static int content_rebuild(struct tx *t, const struct node *n, uint64_t room)
{
    uint64_t keep = n->size < room ? n->size : room;
    uint8_t *buf;
    int rv;

    buf = calloc(1, room > 0 ? room : 1);
    if (buf == NULL) {
        return tx_fault(t, -ENOMEM);
    }
    rv = blob_io(t, n->ino, false, buf, keep, 0);
    if (rv == 0) {
        rv = Q(t, NULL, "UPDATE content SET data = ?2 WHERE ino = ?1",
               I(n->ino), B(buf, room));
    }
    free(buf);
    return rv;
}

/* Zero bytes [from, to) of file ino's blob, keeping the room past the
 * size zero after a file shrinks. */
static int content_zero(struct tx *t, uint64_t ino, uint64_t from, uint64_t to)
{
    static const uint8_t zeros[64 * 1024];
    int rv = 0;

    while (rv == 0 && from < to) {
        size_t n = to - from < sizeof(zeros) ? to - from : sizeof(zeros);
        rv = blob_io(t, ino, true, (void *)zeros, n, from);
        from += n;
    }
    return rv;
}

static int set_size(struct tx *t, uint64_t ino, uint64_t size)
{
    return Q(t, NULL,
             "UPDATE inode SET size = ?2, mtime_ns = ?3, ctime_ns = ?3 "
             "WHERE ino = ?1",
             I(ino), I(size), I(t->c->time_ns));
}

/* Write data at offset into file n, growing it (and zero-filling a hole)
 * as needed; mtime and ctime become the command's time.  The caller has
 * checked the end against max_bytes. */
static int content_splice(struct tx *t,
                          const struct node *n,
                          uint64_t offset,
                          const uint8_t *data,
                          size_t len)
{
    uint64_t end = offset + len;
    uint64_t room;
    int rv;

    assert(!n->is_dir && len > 0 && end <= IKD_MAX_VALUE_BYTES_LIMIT);
    rv = content_room(t, n->ino, &room);
    if (rv == 0 && end > room) {
        /* Doubling keeps sequential writes linear overall; the room never
         * exceeds the limit unless the file already does. */
        uint64_t grow = room * 2 < max_bytes(t->c) ? room * 2 : max_bytes(t->c);
        rv = content_rebuild(t, n, grow > end ? grow : end);
    }
    if (rv == 0) {
        rv = blob_io(t, n->ino, true, (void *)data, len, offset);
    }
    if (rv == 0) {
        rv = set_size(t, n->ino, end > n->size ? end : n->size);
    }
    return rv;
}

/* Truncate or extend file n to size bytes. */
static int content_resize(struct tx *t, const struct node *n, uint64_t size)
{
    uint64_t room;
    int rv;

    assert(!n->is_dir && size <= IKD_MAX_VALUE_BYTES_LIMIT);
    rv = content_room(t, n->ino, &room);
    if (rv != 0) {
        return rv;
    }
    if (size > room || size <= room / 4) {
        /* Growing past the room, or a blob mostly empty: fit it. */
        rv = content_rebuild(t, n, size);
    } else if (size < n->size) {
        rv = content_zero(t, n->ino, size, n->size);
    }
    if (rv == 0) {
        rv = set_size(t, n->ino, size);
    }
    return rv;
}

/* Replace the whole contents of file ino. */
static int content_replace(struct tx *t,
                           uint64_t ino,
                           const uint8_t *data,
                           size_t len)
{
    int rv;

    rv = Q(t, NULL, "UPDATE content SET data = ?2 WHERE ino = ?1", I(ino),
           B(data, len));
    if (rv == 0) {
        rv = set_size(t, ino, len);
    }
    return rv;
}

/* Operations on keys (paths) ------------------------------------------ */

/* Resolve every component of path but the last into *parent, creating the
 * missing folders when create is set (mkdir -p).  *name and *len get the
 * last component.  0, -ENOENT, -ENOTDIR or a fault. */
static int walk(struct tx *t,
                const char *path,
                size_t path_len,
                bool create,
                uint64_t *parent,
                const char **name,
                size_t *len)
{
    size_t start = 0;
    const char *slash;

    assert(path_len > 0);
    *parent = KV_ROOT_INO;
    while ((slash = memchr(path + start, '/', path_len - start)) != NULL) {
        size_t n = (size_t)(slash - path) - start;
        struct node d;
        int rv = node_lookup(t, *parent, path + start, n, &d);

        if (rv == -ENOENT && create) {
            rv = node_insert(t, *parent, path + start, n, true, 0755, NULL, 0,
                             &d.ino);
            d.is_dir = true;
        }
        if (rv != 0) {
            return rv;
        }
        if (!d.is_dir) {
            return -ENOTDIR;
        }
        *parent = d.ino;
        start += n + 1;
    }
    *name = path + start;
    *len = path_len - start;
    return 0;
}

static int op_put(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    uint64_t parent;
    const char *name;
    size_t len;
    struct node n;
    int rv;

    if (kv_key_check(c->path, c->path_len) != 0) {
        return -EINVAL;
    }
    if (!fits(c, 0, c->data_len)) {
        return -EFBIG;
    }
    /* Nothing is created before every refusal is ruled out: after the
     * first missing folder, nothing below it can exist. */
    rv = walk(t, c->path, c->path_len, true, &parent, &name, &len);
    if (rv != 0) {
        return rv;
    }
    rv = node_lookup(t, parent, name, len, &n);
    if (rv == -ENOENT) {
        return node_insert(t, parent, name, len, false, 0644, c->data,
                           c->data_len, &t->value);
    }
    if (rv == 0 && n.is_dir) {
        return -EISDIR;
    }
    if (rv == 0) {
        t->value = n.ino;
        rv = content_replace(t, n.ino, c->data, c->data_len);
    }
    return rv;
}

static int op_del(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    uint64_t parent;
    const char *name;
    size_t len;
    struct node n;
    int rv;

    if (kv_key_check(c->path, c->path_len) != 0) {
        return -EINVAL;
    }
    /* A file in the middle of the path means the key does not exist. */
    rv = walk(t, c->path, c->path_len, false, &parent, &name, &len);
    if (rv == 0) {
        rv = node_lookup(t, parent, name, len, &n);
    }
    if (rv == 0 && n.is_dir) {
        return -EISDIR;
    }
    if (rv == -ENOTDIR) {
        return -ENOENT;
    }
    return rv != 0 ? rv : node_remove(t, &n);
}

/* 1 when file n holds exactly the len bytes at p, 0 when not, or a
 * fault. */
static int content_equals(struct tx *t,
                          const struct node *n,
                          const uint8_t *p,
                          size_t len)
{
    uint8_t *buf;
    int rv;

    if (n->size != len) {
        return 0;
    }
    buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return tx_fault(t, -ENOMEM);
    }
    rv = blob_io(t, n->ino, false, buf, len, 0);
    if (rv == 0) {
        rv = len == 0 || memcmp(buf, p, len) == 0 ? 1 : 0;
    }
    free(buf);
    return rv;
}

static int op_cas(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    bool want_absent = (c->flags & KV_F_ABSENT) != 0;
    uint64_t parent;
    const char *name;
    size_t len;
    struct node n;
    int rv;

    if (kv_key_check(c->path, c->path_len) != 0) {
        return -EINVAL;
    }
    if (!fits(c, 0, c->data_len)) {
        return -EFBIG;
    }
    rv = walk(t, c->path, c->path_len, false, &parent, &name, &len);
    if (rv == 0) {
        rv = node_lookup(t, parent, name, len, &n);
    }
    if (rv == -ENOENT || rv == -ENOTDIR) {
        /* A missing folder or a file in the middle: the key is absent. */
        return want_absent ? op_put(t) : KV_CAS_MISMATCH;
    }
    if (rv != 0) {
        return rv;
    }
    if (n.is_dir) {
        return -EISDIR;
    }
    if (want_absent) {
        return KV_CAS_MISMATCH;
    }
    rv = content_equals(t, &n, c->expect, c->expect_len);
    if (rv <= 0) {
        return rv < 0 ? rv : KV_CAS_MISMATCH;
    }
    t->value = n.ino;
    return content_replace(t, n.ino, c->data, c->data_len);
}

/* Operations on inodes ------------------------------------------------ */

/* Check parent and name for an operation on an entry of a folder, and
 * look the entry up into *n: 0 when it exists, -ENOENT when not, or a
 * refusal or fault. */
static int entry_get(struct tx *t,
                     uint64_t parent,
                     const char *name,
                     size_t len,
                     struct node *n)
{
    struct node d;
    int rv;

    rv = name_ok(parent, name, len);
    if (rv == 0) {
        rv = dir_get(t, parent, &d);
    }
    if (rv != 0) {
        return rv;
    }
    rv = node_lookup(t, parent, name, len, n);
    return rv == -ENOENT ? 1 : rv;
}

/* One integer that a query returns, into *v. */
static int q_int(struct tx *t, const char *sql, uint64_t ino, uint64_t *v)
{
    sqlite3_stmt *st;
    sqlite3_int64 x;
    int rv = Q(t, &st, sql, I(ino));

    if (rv <= 0) {
        return rv < 0 ? rv : tx_fault(t, IKD_ECORRUPT);
    }
    x = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (x < 0) {
        return tx_fault(t, IKD_ECORRUPT);
    }
    *v = (uint64_t)x;
    return 0;
}

/* Keys are at most IKD_MAX_PATH_BYTES long, whether made by a PUT or
 * through a file system: an entry named name_len bytes in folder dir, and
 * below it a subtree whose deepest key is below_len bytes longer, must
 * fit.  0, -ENAMETOOLONG or a fault. */
static int key_fits(struct tx *t,
                    uint64_t dir,
                    size_t name_len,
                    uint64_t below_len)
{
    uint64_t dir_len;
    int rv;

    /* The bytes of the folder's own key plus one for the '/' after it:
     * each component below the root brings its name and a slash. */
    rv = q_int(t,
               "WITH RECURSIVE up(ino, parent, l) AS ("
               "SELECT ino, parent, length(name) FROM inode WHERE ino = ?1 "
               "UNION ALL SELECT i.ino, i.parent, length(i.name) "
               "FROM inode i JOIN up ON i.ino = up.parent) "
               "SELECT coalesce(sum(l + 1), 0) FROM up WHERE parent != 0",
               dir, &dir_len);
    if (rv != 0) {
        return rv;
    }
    return dir_len + name_len + below_len > IKD_MAX_PATH_BYTES ? -ENAMETOOLONG
                                                               : 0;
}

/* How much longer than folder ino's key the deepest key below it is. */
static int depth_below(struct tx *t, uint64_t ino, uint64_t *len)
{
    return q_int(t,
                 "WITH RECURSIVE down(ino, l) AS (SELECT ?1, 0 "
                 "UNION ALL SELECT i.ino, down.l + 1 + length(i.name) "
                 "FROM inode i JOIN down ON i.parent = down.ino) "
                 "SELECT max(l) FROM down",
                 ino, len);
}

static int op_create(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    struct node n;
    int rv;

    rv = entry_get(t, c->parent, c->path, c->path_len, &n);
    if (rv == 1) {
        rv = key_fits(t, c->parent, c->path_len, 0);
        return rv != 0 ? rv
                       : node_insert(t, c->parent, c->path, c->path_len, false,
                                     c->mode, NULL, 0, &t->value);
    }
    if (rv != 0) {
        return rv;
    }
    if (c->flags & KV_F_EXCL) {
        return -EEXIST;
    }
    if (n.is_dir) {
        return -EISDIR;
    }
    t->value = n.ino;
    /* POSIX: O_TRUNC on an existing file updates its times even when it
     * was empty already. */
    return c->flags & KV_F_TRUNC ? content_resize(t, &n, 0) : 0;
}

static int op_mkdir(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    struct node n;
    int rv;

    rv = entry_get(t, c->parent, c->path, c->path_len, &n);
    if (rv == 1) {
        rv = key_fits(t, c->parent, c->path_len, 0);
        return rv != 0 ? rv
                       : node_insert(t, c->parent, c->path, c->path_len, true,
                                     c->mode, NULL, 0, &t->value);
    }
    return rv != 0 ? rv : -EEXIST;
}

static int op_unlink(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    struct node n;
    int rv;

    rv = entry_get(t, c->parent, c->path, c->path_len, &n);
    if (rv != 0) {
        return rv == 1 ? -ENOENT : rv;
    }
    return n.is_dir ? -EISDIR : node_remove(t, &n);
}

static int op_rmdir(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    struct node n;
    int rv;

    rv = entry_get(t, c->parent, c->path, c->path_len, &n);
    if (rv != 0) {
        return rv == 1 ? -ENOENT : rv;
    }
    if (!n.is_dir) {
        return -ENOTDIR;
    }
    rv = dir_has_child(t, n.ino);
    if (rv != 0) {
        return rv == 1 ? -ENOTEMPTY : rv;
    }
    return node_remove(t, &n);
}

/* -EINVAL when folder dir is ino itself or lies below it: moving ino
 * there would cut its subtree off the root. */
static int not_below(struct tx *t, uint64_t dir, uint64_t ino)
{
    /* A chain longer than any valid path means a cycle on disk. */
    for (int depth = 0; depth <= IKD_MAX_PATH_BYTES; depth++) {
        struct node n;
        int rv;

        if (dir == ino) {
            return -EINVAL;
        }
        if (dir == KV_ROOT_INO) {
            return 0;
        }
        rv = node_get(t, dir, &n);
        if (rv != 0) {
            return tx_fault(t, rv == -ENOENT ? IKD_ECORRUPT : rv);
        }
        dir = n.parent;
    }
    return tx_fault(t, IKD_ECORRUPT);
}

static int node_move(struct tx *t,
                     uint64_t ino,
                     uint64_t parent,
                     const char *name,
                     size_t len)
{
    return Q(t, NULL,
             "UPDATE inode SET parent = ?2, name = ?3, ctime_ns = ?4 "
             "WHERE ino = ?1",
             I(ino), I(parent), B(name, len), I(t->c->time_ns));
}

/* Swap src and dst, which both exist (renameat2 RENAME_EXCHANGE). */
static int rename_exchange(struct tx *t,
                           const struct node *src,
                           const struct node *dst)
{
    const struct kv_cmd *c = t->c;
    int rv = 0;

    assert(src->ino != dst->ino);
    if (dst->is_dir) {
        rv = not_below(t, c->parent, dst->ino);
    }
    /* The unique (parent, name) index forbids a moment with two entries
     * of the same name: park src where no name can be ('/' is never in
     * one) while dst takes its place. */
    if (rv == 0) {
        rv = node_move(t, src->ino, 0, "/", 1);
    }
    if (rv == 0) {
        rv = node_move(t, dst->ino, c->parent, c->path, c->path_len);
    }
    if (rv == 0) {
        rv =
            node_move(t, src->ino, c->new_parent, c->new_name, c->new_name_len);
    }
    return rv;
}

/* Move src over dst (when dst_exists) as rename(2) does. */
static int rename_replace(struct tx *t,
                          const struct node *src,
                          const struct node *dst,
                          bool dst_exists)
{
    const struct kv_cmd *c = t->c;
    int rv = 0;

    assert(!dst_exists || src->ino != dst->ino);
    if (dst_exists) {
        if (src->is_dir && !dst->is_dir) {
            return -ENOTDIR;
        }
        if (!src->is_dir && dst->is_dir) {
            return -EISDIR;
        }
        if (dst->is_dir) {
            rv = dir_has_child(t, dst->ino);
            if (rv != 0) {
                return rv == 1 ? -ENOTEMPTY : rv;
            }
        }
        rv = node_remove(t, dst);
    }
    if (rv == 0) {
        rv =
            node_move(t, src->ino, c->new_parent, c->new_name, c->new_name_len);
    }
    return rv;
}

/* Every key moved by a rename stays within the length limit: src's
 * subtree at its new name, and for an exchange dst's at src's old one. */
static int rename_fits(struct tx *t,
                       const struct node *src,
                       const struct node *dst,
                       bool exchange)
{
    const struct kv_cmd *c = t->c;
    uint64_t below = 0;
    int rv = 0;

    if (src->is_dir) {
        rv = depth_below(t, src->ino, &below);
    }
    if (rv == 0) {
        rv = key_fits(t, c->new_parent, c->new_name_len, below);
    }
    if (rv != 0 || !exchange) {
        return rv;
    }
    below = 0;
    if (dst->is_dir) {
        rv = depth_below(t, dst->ino, &below);
    }
    return rv != 0 ? rv : key_fits(t, c->parent, c->path_len, below);
}

static int op_rename(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    struct node src;
    struct node dst = {0};
    bool exchange = (c->flags & KV_F_EXCHANGE) != 0;
    bool noreplace = (c->flags & KV_F_NOREPLACE) != 0;
    int rv;

    if (exchange && noreplace) {
        return -EINVAL;
    }
    rv = entry_get(t, c->parent, c->path, c->path_len, &src);
    if (rv != 0) {
        return rv == 1 ? -ENOENT : rv;
    }
    rv = entry_get(t, c->new_parent, c->new_name, c->new_name_len, &dst);
    if (rv < 0) {
        return rv;
    }
    if (rv == 0 && noreplace) {
        return -EEXIST;
    }
    if (rv == 1 && exchange) {
        return -ENOENT;
    }
    if (rv == 0 && dst.ino == src.ino) {
        return 0; /* onto itself: POSIX makes it a successful no-op */
    }
    if (src.is_dir) {
        int below = not_below(t, c->new_parent, src.ino);
        if (below != 0) {
            return below;
        }
    }
    bool exists = rv == 0;
    rv = rename_fits(t, &src, &dst, exchange);
    if (rv != 0) {
        return rv;
    }
    rv = exchange ? rename_exchange(t, &src, &dst)
                  : rename_replace(t, &src, &dst, exists);
    if (rv == 0) {
        rv = touch(t, c->parent);
    }
    if (rv == 0 && c->new_parent != c->parent) {
        rv = touch(t, c->new_parent);
    }
    return rv;
}

/* A file for WRITE, APPEND or a resize: 0, -ENOENT, -EISDIR, a fault. */
static int file_get(struct tx *t, uint64_t ino, struct node *n)
{
    int rv = node_get(t, ino, n);

    return rv == 0 && n->is_dir ? -EISDIR : rv;
}

static int op_write(struct tx *t, bool append)
{
    const struct kv_cmd *c = t->c;
    struct node n;
    uint64_t offset;
    int rv;

    rv = file_get(t, c->ino, &n);
    if (rv != 0) {
        return rv;
    }
    offset = append ? n.size : c->offset;
    if (!fits(c, offset, c->data_len)) {
        return -EFBIG;
    }
    t->value = n.size;
    if (c->data_len == 0) {
        return 0; /* POSIX: a write of nothing changes nothing */
    }
    t->value = offset + c->data_len > n.size ? offset + c->data_len : n.size;
    return content_splice(t, &n, offset, c->data, c->data_len);
}

static int op_setattr(struct tx *t)
{
    const struct kv_cmd *c = t->c;
    struct node n;
    int rv;

    rv = node_get(t, c->ino, &n);
    if (rv == 0 && (c->valid & KV_SET_SIZE) && n.is_dir) {
        rv = -EISDIR;
    }
    if (rv == 0 && (c->valid & KV_SET_SIZE) && !fits(c, 0, c->size)) {
        rv = -EFBIG;
    }
    if (rv != 0) {
        return rv;
    }

    t->value = n.size;
    if (c->valid & KV_SET_SIZE) {
        t->value = c->size;
        rv = content_resize(t, &n, c->size);
    }
    if (rv == 0 && (c->valid & KV_SET_MODE)) {
        rv = Q(t, NULL, "UPDATE inode SET mode = ?2 WHERE ino = ?1", I(n.ino),
               I(c->mode & 07777));
    }
    if (rv == 0 && (c->valid & KV_SET_MTIME)) {
        rv = Q(t, NULL, "UPDATE inode SET mtime_ns = ?2 WHERE ino = ?1",
               I(n.ino), I(c->mtime_ns));
    }
    if (rv == 0) {
        rv = Q(t, NULL, "UPDATE inode SET ctime_ns = ?2 WHERE ino = ?1",
               I(n.ino), I(c->time_ns));
    }
    return rv;
}

static int op_dispatch(struct tx *t)
{
    switch (t->c->op) {
        case KV_OP_PUT:
            return op_put(t);
        case KV_OP_DEL:
            return op_del(t);
        case KV_OP_CREATE:
            return op_create(t);
        case KV_OP_MKDIR:
            return op_mkdir(t);
        case KV_OP_UNLINK:
            return op_unlink(t);
        case KV_OP_RMDIR:
            return op_rmdir(t);
        case KV_OP_RENAME:
            return op_rename(t);
        case KV_OP_WRITE:
            return op_write(t, false);
        case KV_OP_APPEND:
            return op_write(t, true);
        case KV_OP_SETATTR:
            return op_setattr(t);
        case KV_OP_CAS:
            return op_cas(t);
        default:
            return -EINVAL; /* kv_cmd_decode() lets no other op through */
    }
}

/* Sessions ------------------------------------------------------------ */

/* Advance the log clock to the command's time and forget the sessions it
 * leaves idle for longer than KV_SESSION_TTL_NS. */
static int clock_advance(struct tx *t)
{
    sqlite3_stmt *st;
    sqlite3_int64 clock = INT64_MIN;
    int rv;

    rv = Q(t, &st, "SELECT value FROM meta WHERE key = ?1", T("clock_ns"));
    if (rv < 0) {
        return rv;
    }
    if (rv == 1) {
        clock = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
    }
    if (t->c->time_ns <= clock) {
        t->clock = clock;
        return 0;
    }
    clock = t->c->time_ns;
    t->clock = clock;
    rv = Q(t, NULL, "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
           T("clock_ns"), I(clock));
    if (rv == 0 && clock > INT64_MIN + KV_SESSION_TTL_NS) {
        rv = Q(t, NULL, "DELETE FROM session WHERE used_ns < ?1",
               I(clock - KV_SESSION_TTL_NS));
    }
    return rv;
}

/* Look the command's session up: 1 with *res set from the stored result
 * when the command was applied already (or is older than the latest, which
 * is refused as stale), 0 when it is new, or a fault.  *known tells whether
 * the session has a row. */
static int session_check(struct tx *t, struct kv_sm_result *res, bool *known)
{
    sqlite3_stmt *st;
    uint64_t seq;
    int rv;

    *known = false;
    rv = Q(t, &st, "SELECT seq, status, value FROM session WHERE id = ?1",
           I(t->c->session));
    if (rv <= 0) {
        return rv;
    }
    *known = true;
    seq = (uint64_t)sqlite3_column_int64(st, 0);
    res->status = sqlite3_column_int(st, 1);
    res->value = (uint64_t)sqlite3_column_int64(st, 2);
    sqlite3_reset(st);
    if (res->status > 0) {
        return tx_fault(t, IKD_ECORRUPT);
    }
    if (t->c->seq > seq) {
        return 0;
    }
    if (t->c->seq < seq) {
        res->status = KV_SESSION_STALE;
        res->value = 0;
    }
    return 1;
}

/* Store res as the session's latest result, as of log index, and keep at
 * most KV_SESSION_MAX sessions by dropping those used longest ago. */
static int session_record(struct tx *t,
                          uint64_t index,
                          bool known,
                          const struct kv_sm_result *res)
{
    int rv;

    rv = Q(t, NULL,
           "INSERT OR REPLACE INTO session(id, seq, status, value, "
           "used_index, used_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
           I(t->c->session), I(t->c->seq), I(res->status), I(res->value),
           I(index), I(t->clock));
    if (rv == 0 && !known) {
        rv = Q(t, NULL,
               "DELETE FROM session WHERE id IN (SELECT id FROM session "
               "ORDER BY used_index DESC LIMIT -1 OFFSET ?1)",
               I(KV_SESSION_MAX));
    }
    return rv;
}

/* Apply the command of t as a command of its session: once per seq. */
static int session_apply(struct tx *t, uint64_t index, struct kv_sm_result *res)
{
    bool known = false;
    int rv;

    rv = clock_advance(t);
    if (rv == 0) {
        rv = session_check(t, res, &known);
    }
    if (rv < 0 || t->fault != 0) {
        return t->fault != 0 ? t->fault : rv;
    }
    if (rv == 1) {
        /* A retry: answer as the first time, and count it as a use. */
        if (res->status == KV_SESSION_STALE) {
            return 0;
        }
        Q(t, NULL, "UPDATE session SET used_index = ?2 WHERE id = ?1",
          I(t->c->session), I(index));
        return t->fault;
    }

    res->status = op_dispatch(t);
    if (t->fault != 0) {
        return t->fault;
    }
    assert(res->status <= 0);
    res->value = res->status == 0 ? t->value : 0;
    session_record(t, index, known, res);
    return t->fault;
}

static int fsm_apply(void *ctx,
                     sqlite3 *db,
                     uint64_t index,
                     const uint8_t *cmd,
                     size_t len,
                     struct kv_sm_result *res)
{
    struct kv_cmd c;
    struct tx t = {.db = db, .c = &c, .orphans = ctx};
    int status;

    assert(db != NULL && res != NULL && index > 0);
    res->value = 0;
    /* A command that does not decode is refused the same way on every
     * node, so it is a result, not a fault that would stop the node. */
    if (kv_cmd_decode(cmd, len, &c) != 0) {
        res->status = IKD_EMALFORMED;
        return 0;
    }

    /* Every refusal is decided before the first change, so a refused
     * command leaves the tables as they were. */
    if (c.session != 0) {
        return session_apply(&t, index, res);
    }
    if (clock_advance(&t) != 0) {
        return t.fault;
    }
    status = op_dispatch(&t);
    if (t.fault != 0) {
        return t.fault;
    }
    assert(status <= 0);
    res->status = status;
    res->value = status == 0 ? t.value : 0;
    return 0;
}

static int fsm_init(void *ctx, sqlite3 *db)
{
    char sql[1280];

    (void)ctx;
    assert(db != NULL);
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS inode("
             "ino INTEGER PRIMARY KEY, parent INTEGER NOT NULL, "
             "name BLOB NOT NULL, is_dir INTEGER NOT NULL, "
             "mode INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
             "ctime_ns INTEGER NOT NULL, size INTEGER NOT NULL);"
             "CREATE UNIQUE INDEX IF NOT EXISTS inode_name "
             "ON inode(parent, name);"
             "CREATE TABLE IF NOT EXISTS content("
             "ino INTEGER PRIMARY KEY, data BLOB NOT NULL);"
             "INSERT OR IGNORE INTO inode VALUES "
             "(%d, 0, X'', 1, %d, 0, 0, 0);"
             "INSERT OR IGNORE INTO meta(key, value) VALUES ('next_ino', %d);"
             "CREATE TABLE IF NOT EXISTS session("
             "id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, "
             "status INTEGER NOT NULL, value INTEGER NOT NULL, "
             "used_index INTEGER NOT NULL, used_ns INTEGER NOT NULL);"
             "CREATE INDEX IF NOT EXISTS session_lru ON session(used_index);"
             "CREATE INDEX IF NOT EXISTS session_age ON session(used_ns);",
             KV_ROOT_INO, 0755, KV_FIRST_INO);
    return kv_db_exec(db, sql);
}

/* The tables of the file tree and their columns, in one order for both
 * directions of a snapshot. */
static const char *const fsm_tables[][2] = {
    {"inode", "ino, parent, name, is_dir, mode, mtime_ns, ctime_ns, size"},
    {"content", "ino, data"},
    {"session", "id, seq, status, value, used_index, used_ns"},
};

/* The state machine's rows of the shared meta table travel in a table of
 * their own: fsm_meta(key, value). */
#define FSM_META_KEYS "('next_ino', 'clock_ns')"

/* schema is a fixed identifier chosen by the store, never user input. */
static int fsm_snapshot(void *ctx, sqlite3 *db, const char *schema)
{
    char sql[512];
    int rv = 0;

    (void)ctx;
    assert(db != NULL && schema != NULL);
    for (size_t i = 0; rv == 0 && i < sizeof(fsm_tables) / sizeof(*fsm_tables);
         i++) {
        snprintf(sql, sizeof(sql),
                 "CREATE TABLE %s.%s AS SELECT %s FROM main.%s", schema,
                 fsm_tables[i][0], fsm_tables[i][1], fsm_tables[i][0]);
        rv = kv_db_exec(db, sql);
    }
    if (rv == 0) {
        snprintf(sql, sizeof(sql),
                 "CREATE TABLE %s.fsm_meta AS SELECT key, value "
                 "FROM main.meta WHERE key IN " FSM_META_KEYS,
                 schema);
        rv = kv_db_exec(db, sql);
    }
    return rv;
}

/* A snapshot without the root folder or the inode counter is not one of
 * ours: refuse it before anything changes. */
static int fsm_restore_check(sqlite3 *db, const char *schema)
{
    char sql[512];
    sqlite3_stmt *st;
    int rc;
    int ok;

    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM %s.sqlite_master WHERE type = "
             "'table' AND name IN ('inode', 'content', 'session', "
             "'fsm_meta')) + (SELECT count(*) FROM %s.inode WHERE ino = %d "
             "AND is_dir = 1) + (SELECT count(*) FROM %s.fsm_meta WHERE key "
             "= 'next_ino')",
             schema, schema, KV_ROOT_INO, schema);
    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        /* A missing table: not a snapshot of this state machine. */
        return IKD_ECORRUPT;
    }
    rc = sqlite3_step(st);
    ok = rc == SQLITE_ROW && sqlite3_column_int(st, 0) == 6;
    sqlite3_finalize(st);
    return ok ? 0 : IKD_ECORRUPT;
}

/* Before a snapshot replaces the state: the watched files that it does
 * not have were removed by commands this node never applied, and their
 * descriptors keep a copy, as if those commands had been. */
static int restore_keep_orphans(struct kv_orphans *o,
                                sqlite3 *db,
                                const char *schema)
{
    struct tx t = {.db = db, .orphans = o};
    sqlite3_stmt *in_snap;
    char sql[256];
    uint64_t *inos;
    size_t n = kv_orphans_watching(o, NULL, 0);
    int rv = 0;

    if (n == 0) {
        return 0;
    }
    inos = calloc(n, sizeof(*inos));
    if (inos == NULL) {
        return -ENOMEM;
    }
    n = kv_orphans_watching(o, inos, n);
    /* Prepared here rather than cached: the schema is detached after. */
    snprintf(sql, sizeof(sql), "SELECT 1 FROM %s.inode WHERE ino = ?1", schema);
    if (sqlite3_prepare_v2(db, sql, -1, &in_snap, NULL) != SQLITE_OK) {
        free(inos);
        return IKD_ECORRUPT;
    }
    for (size_t i = 0; rv == 0 && i < n; i++) {
        sqlite3_stmt *st;
        struct node nd = {.ino = inos[i]};
        int rc;

        sqlite3_bind_int64(in_snap, 1, (sqlite3_int64)inos[i]);
        rc = sqlite3_step(in_snap);
        sqlite3_reset(in_snap);
        if (rc == SQLITE_ROW) {
            continue; /* still there after the snapshot */
        }
        if (rc != SQLITE_DONE) {
            rv = kv_db_rv(db, rc);
            break;
        }
        rv = Q(&t, &st, "SELECT is_dir, size FROM main.inode WHERE ino = ?1",
               I(inos[i]));
        if (rv != 1) {
            continue; /* not in the state before either */
        }
        nd.is_dir = sqlite3_column_int(st, 0) != 0;
        nd.size = (uint64_t)sqlite3_column_int64(st, 1);
        sqlite3_reset(st);
        rv = nd.is_dir ? 0 : orphan_keep(&t, &nd);
    }
    sqlite3_finalize(in_snap);
    free(inos);
    return rv < 0 ? rv : 0;
}

static int fsm_restore(void *ctx, sqlite3 *db, const char *schema)
{
    char sql[512];
    int rv;

    assert(db != NULL && schema != NULL);
    rv = fsm_restore_check(db, schema);
    if (rv == 0 && ctx != NULL) {
        rv = restore_keep_orphans(ctx, db, schema);
    }
    for (size_t i = 0; rv == 0 && i < sizeof(fsm_tables) / sizeof(*fsm_tables);
         i++) {
        snprintf(sql, sizeof(sql),
                 "DELETE FROM main.%s; INSERT INTO main.%s(%s) "
                 "SELECT %s FROM %s.%s",
                 fsm_tables[i][0], fsm_tables[i][0], fsm_tables[i][1],
                 fsm_tables[i][1], schema, fsm_tables[i][0]);
        rv = kv_db_exec(db, sql);
    }
    if (rv == 0) {
        snprintf(
            sql, sizeof(sql),
            "DELETE FROM main.meta WHERE key IN " FSM_META_KEYS
            "; INSERT INTO main.meta(key, value) "
            "SELECT key, value FROM %s.fsm_meta WHERE key IN " FSM_META_KEYS,
            schema);
        rv = kv_db_exec(db, sql);
    }
    return rv;
}

static void fsm_settle(void *ctx, bool committed)
{
    if (ctx != NULL) {
        kv_orphans_settle(ctx, committed);
    }
}

const struct kv_sm_ops kv_fsm_ops = {
    .init = fsm_init,
    .apply = fsm_apply,
    .snapshot = fsm_snapshot,
    .restore = fsm_restore,
    .settle = fsm_settle,
};
