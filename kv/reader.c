/* Read access to the file tree (tables described in kv/kvsm.c). */

#include "reader.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "../raft/ikd.h"
#include "cmd.h"
#include "db.h"
#include "store.h"

enum {
    R_BEGIN = 0,
    R_COMMIT,
    R_GETATTR,
    R_LOOKUP,
    R_READDIR,
    R_CHILDREN,
    R_END
};

#define ATTR_COLS "ino, is_dir, mode, size, mtime_ns, ctime_ns"

static const char *const reader_sql[R_END] = {
    [R_BEGIN] = "BEGIN",
    [R_COMMIT] = "COMMIT",
    [R_GETATTR] = "SELECT " ATTR_COLS " FROM inode WHERE ino = ?1",
    [R_LOOKUP] =
        "SELECT " ATTR_COLS " FROM inode WHERE parent = ?1 AND name = ?2",
    /* Positions are inode numbers plus one: stable while entries come and
     * go, and a position below KV_FIRST_INO means "from the start", which
     * leaves the small ones to the caller's own entries ("." and ".."). */
    [R_READDIR] = "SELECT " ATTR_COLS
                  ", name FROM inode WHERE parent = ?1 AND ino >= ?2 "
                  "ORDER BY ino",
    [R_CHILDREN] = "SELECT ino, is_dir, name FROM inode WHERE parent = ?1",
};

struct kv_reader
{
    sqlite3 *db;
    sqlite3_stmt *st[R_END];
};

int kv_reader_open(const char *dir, struct kv_reader **out)
{
    struct kv_reader *r;
    char *path;
    int rc;
    int rv = 0;

    assert(dir != NULL && out != NULL);
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return -ENOMEM;
    }
    if (asprintf(&path, "%s/%s", dir, KV_DB_NAME) < 0) {
        free(r);
        return -ENOMEM;
    }
    rc = sqlite3_open_v2(path, &r->db,
                         SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    free(path);
    if (rc != SQLITE_OK) {
        rv = kv_db_rv(r->db, rc);
        goto err_after_open;
    }
    sqlite3_busy_timeout(r->db, KV_DB_BUSY_TIMEOUT_MS);

    /* A database without the file tree's tables fails to prepare. */
    for (int i = 0; rv == 0 && i < R_END; i++) {
        rc = sqlite3_prepare_v3(r->db, reader_sql[i], -1,
                                SQLITE_PREPARE_PERSISTENT, &r->st[i], NULL);
        rv = rc == SQLITE_ERROR ? IKD_ECORRUPT : kv_db_rv(r->db, rc);
    }
    if (rv != 0) {
        goto err_after_open;
    }
    *out = r;
    return 0;

err_after_open:
    kv_db_finalize_all(r->db);
    sqlite3_close(r->db);
    free(r);
    return rv;
}

void kv_reader_close(struct kv_reader *r)
{
    if (r == NULL) {
        return;
    }
    kv_db_finalize_all(r->db);
    sqlite3_close(r->db);
    free(r);
}

/* A read transaction: the statements between begin and end see one
 * committed state of the writer. */
static int read_begin(struct kv_reader *r)
{
    int rc = sqlite3_step(r->st[R_BEGIN]);

    sqlite3_reset(r->st[R_BEGIN]);
    return kv_db_rv(r->db, rc);
}

static void read_end(struct kv_reader *r)
{
    sqlite3_step(r->st[R_COMMIT]);
    sqlite3_reset(r->st[R_COMMIT]);
}

/* Fill a from the current row of st (columns ATTR_COLS). */
static int attr_row(sqlite3_stmt *st, struct kv_attr *a)
{
    sqlite3_int64 ino = sqlite3_column_int64(st, 0);
    sqlite3_int64 is_dir = sqlite3_column_int64(st, 1);
    sqlite3_int64 mode = sqlite3_column_int64(st, 2);
    sqlite3_int64 size = sqlite3_column_int64(st, 3);

    if (ino <= 0 || is_dir < 0 || is_dir > 1 || mode < 0 || size < 0) {
        return IKD_ECORRUPT;
    }
    a->ino = (uint64_t)ino;
    a->is_dir = is_dir == 1;
    a->mode = (uint32_t)mode & 07777;
    a->size = a->is_dir ? 0 : (uint64_t)size;
    a->mtime_ns = sqlite3_column_int64(st, 4);
    a->ctime_ns = sqlite3_column_int64(st, 5);
    a->nlink = a->is_dir ? 2 : 1;
    return 0;
}

/* Step st once: 0 with a filled from a row, or -ENOENT; st is reset. */
static int attr_query(struct kv_reader *r, sqlite3_stmt *st, struct kv_attr *a)
{
    int rc = sqlite3_step(st);
    int rv;

    if (rc == SQLITE_ROW) {
        rv = attr_row(st, a);
    } else {
        rv = rc == SQLITE_DONE ? -ENOENT : kv_db_rv(r->db, rc);
    }
    sqlite3_reset(st);
    return rv;
}

int kv_reader_getattr(struct kv_reader *r, uint64_t ino, struct kv_attr *a)
{
    sqlite3_stmt *st = r->st[R_GETATTR];

    assert(r != NULL && a != NULL);
    if (ino > INT64_MAX) {
        return -ENOENT;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
    return attr_query(r, st, a);
}

/* The folder ino exists: 0, -ENOENT, -ENOTDIR. */
static int dir_check(struct kv_reader *r, uint64_t ino)
{
    struct kv_attr a;
    int rv = kv_reader_getattr(r, ino, &a);

    return rv == 0 && !a.is_dir ? -ENOTDIR : rv;
}

static int lookup_one(struct kv_reader *r,
                      uint64_t parent,
                      const char *name,
                      size_t len,
                      struct kv_attr *a)
{
    sqlite3_stmt *st = r->st[R_LOOKUP];

    if (parent > INT64_MAX) {
        return -ENOENT;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)parent);
    /* Names are stored as blobs and compare as bytes. */
    if (len == 0) {
        sqlite3_bind_zeroblob(st, 2, 0);
    } else {
        sqlite3_bind_blob64(st, 2, name, len, SQLITE_STATIC);
    }
    return attr_query(r, st, a);
}

int kv_reader_lookup(struct kv_reader *r,
                     uint64_t parent,
                     const char *name,
                     size_t name_len,
                     struct kv_attr *a)
{
    int rv;

    assert(r != NULL && a != NULL);
    rv = lookup_one(r, parent, name, name_len, a);
    if (rv != -ENOENT) {
        return rv;
    }
    /* Not there: say why, the way a path walk would. */
    rv = dir_check(r, parent);
    return rv != 0 ? rv : -ENOENT;
}

int kv_reader_readdir(struct kv_reader *r,
                      uint64_t ino,
                      uint64_t offset,
                      kv_readdir_cb cb,
                      void *arg)
{
    sqlite3_stmt *st = r->st[R_READDIR];
    char name[IKD_MAX_NAME_BYTES + 1];
    int rc = SQLITE_DONE;
    int rv;

    assert(r != NULL && cb != NULL);
    rv = dir_check(r, ino);
    if (rv != 0) {
        return rv;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
    sqlite3_bind_int64(st, 2,
                       offset > INT64_MAX ? INT64_MAX : (sqlite3_int64)offset);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct kv_attr a;
        int len = sqlite3_column_bytes(st, 6);
        const void *p = sqlite3_column_blob(st, 6);

        rv = attr_row(st, &a);
        if (rv == 0 && (len <= 0 || len > IKD_MAX_NAME_BYTES)) {
            rv = IKD_ECORRUPT;
        }
        if (rv != 0) {
            break;
        }
        memcpy(name, p, (size_t)len);
        name[len] = '\0';
        if (cb(arg, &a, name, a.ino + 1) != 0) {
            break;
        }
    }
    if (rv == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        rv = kv_db_rv(r->db, rc);
    }
    sqlite3_reset(st);
    return rv;
}

/* Copy [offset, offset + len) of file ino's bytes into buf. */
static int content_read(struct kv_reader *r,
                        uint64_t ino,
                        uint64_t offset,
                        size_t len,
                        uint8_t *buf)
{
    sqlite3_blob *b;
    int rc;

    if (len == 0) {
        return 0;
    }
    if (offset > INT32_MAX || len > INT32_MAX - offset) {
        return IKD_ECORRUPT;
    }
    rc = sqlite3_blob_open(r->db, "main", "content", "data", (sqlite3_int64)ino,
                           0, &b);
    if (rc == SQLITE_OK) {
        rc = sqlite3_blob_read(b, buf, (int)len, (int)offset);
    }
    sqlite3_blob_close(b);
    /* SQLITE_ERROR here: the row or its bytes are missing. */
    return rc == SQLITE_ERROR ? IKD_ECORRUPT : kv_db_rv(r->db, rc);
}

/* The attributes then the bytes, in the caller's read transaction. */
static int read_file(struct kv_reader *r,
                     uint64_t ino,
                     uint64_t offset,
                     size_t size,
                     uint8_t *buf,
                     size_t *n)
{
    struct kv_attr a;
    int rv;

    rv = kv_reader_getattr(r, ino, &a);
    if (rv == 0 && a.is_dir) {
        rv = -EISDIR;
    }
    if (rv != 0) {
        return rv;
    }
    *n = 0;
    if (offset < a.size) {
        *n = a.size - offset < size ? (size_t)(a.size - offset) : size;
    }
    return content_read(r, ino, offset, *n, buf);
}

int kv_reader_read(struct kv_reader *r,
                   uint64_t ino,
                   uint64_t offset,
                   size_t size,
                   uint8_t *buf,
                   size_t *n)
{
    int rv;

    assert(r != NULL && n != NULL && (size == 0 || buf != NULL));
    rv = read_begin(r);
    if (rv == 0) {
        rv = read_file(r, ino, offset, size, buf, n);
        read_end(r);
    }
    return rv;
}

/* Resolve key to the attributes of what it names. */
static int walk_key(struct kv_reader *r,
                    const char *key,
                    size_t len,
                    struct kv_attr *a)
{
    uint64_t ino = KV_ROOT_INO;
    size_t start = 0;

    for (;;) {
        const char *slash = memchr(key + start, '/', len - start);
        size_t end = slash != NULL ? (size_t)(slash - key) : len;
        int rv = lookup_one(r, ino, key + start, end - start, a);

        if (rv != 0) {
            return rv;
        }
        if (slash == NULL) {
            return 0;
        }
        if (!a->is_dir) {
            return -ENOENT;
        }
        ino = a->ino;
        start = end + 1;
    }
}

static int get_in_tx(struct kv_reader *r,
                     const char *key,
                     size_t key_len,
                     uint8_t **value,
                     size_t *len)
{
    struct kv_attr a;
    uint8_t *buf;
    int rv;

    rv = walk_key(r, key, key_len, &a);
    if (rv == 0 && a.is_dir) {
        rv = -ENOENT; /* a folder is not a key */
    }
    if (rv != 0) {
        return rv;
    }
    /* One spare byte so that an empty value is still a buffer. */
    buf = malloc((size_t)a.size + 1);
    if (buf == NULL) {
        return -ENOMEM;
    }
    rv = content_read(r, a.ino, 0, (size_t)a.size, buf);
    if (rv != 0) {
        free(buf);
        return rv;
    }
    *value = buf;
    *len = (size_t)a.size;
    return 0;
}

int kv_reader_get(struct kv_reader *r,
                  const char *key,
                  size_t key_len,
                  uint8_t **value,
                  size_t *len)
{
    int rv;

    assert(r != NULL && value != NULL && len != NULL);
    if (kv_key_check(key, key_len) != 0) {
        return -EINVAL;
    }
    rv = read_begin(r);
    if (rv == 0) {
        rv = get_in_tx(r, key, key_len, value, len);
        read_end(r);
    }
    return rv;
}

/* Listing ------------------------------------------------------------- */

/* A growing array of paths: the folders still to visit, or the keys
 * found. */
struct path
{
    uint64_t ino;
    char *s;
    size_t len;
};

struct paths
{
    struct path *v;
    size_t n;
    size_t cap;
};

static int paths_push(struct paths *ps,
                      uint64_t ino,
                      const struct path *dir,
                      const void *name,
                      size_t name_len)
{
    size_t len = dir->len + (dir->len > 0) + name_len;
    char *s;

    if (ps->n == ps->cap) {
        size_t cap = ps->cap == 0 ? 16 : ps->cap * 2;
        void *p = realloc(ps->v, cap * sizeof(*ps->v));
        if (p == NULL) {
            return -ENOMEM;
        }
        ps->v = p;
        ps->cap = cap;
    }
    s = malloc(len + 1);
    if (s == NULL) {
        return -ENOMEM;
    }
    memcpy(s, dir->s, dir->len);
    if (dir->len > 0) {
        s[dir->len] = '/';
    }
    memcpy(s + len - name_len, name, name_len);
    s[len] = '\0';
    ps->v[ps->n++] = (struct path){ino, s, len};
    return 0;
}

static void paths_free(struct paths *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].s);
    }
    free(ps->v);
}

/* Whether a path and the prefix agree on their common length: a folder
 * is worth visiting, a key is listed, only then. */
static bool prefix_agrees(const struct path *p, const char *prefix, size_t n)
{
    size_t common = p->len < n ? p->len : n;

    return common == 0 || memcmp(p->s, prefix, common) == 0;
}

/* Visit folder dir: keys matching the prefix go to keys, folders that may
 * hold some go to todo. */
static int list_dir(struct kv_reader *r,
                    const struct path *dir,
                    const char *prefix,
                    size_t prefix_len,
                    struct paths *todo,
                    struct paths *keys)
{
    sqlite3_stmt *st = r->st[R_CHILDREN];
    int rc = SQLITE_DONE;
    int rv = 0;

    sqlite3_bind_int64(st, 1, (sqlite3_int64)dir->ino);
    while (rv == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        sqlite3_int64 ino = sqlite3_column_int64(st, 0);
        bool is_dir = sqlite3_column_int64(st, 1) != 0;
        int len = sqlite3_column_bytes(st, 2);
        const void *name = sqlite3_column_blob(st, 2);
        struct paths *to = is_dir ? todo : keys;
        struct path *p;

        if (ino <= 0 || len <= 0 || len > IKD_MAX_NAME_BYTES) {
            rv = IKD_ECORRUPT;
            break;
        }
        rv = paths_push(to, (uint64_t)ino, dir, name, (size_t)len);
        if (rv != 0) {
            break;
        }
        p = &to->v[to->n - 1];
        if (!prefix_agrees(p, prefix, prefix_len) ||
            (!is_dir && p->len < prefix_len)) {
            free(p->s);
            to->n--;
        }
    }
    if (rv == 0 && rc != SQLITE_DONE) {
        rv = kv_db_rv(r->db, rc);
    }
    sqlite3_reset(st);
    return rv;
}

static int key_cmp(const void *a, const void *b)
{
    const struct path *x = a;
    const struct path *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);

    if (c != 0) {
        return c;
    }
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Collect the keys under prefix, breadth first, in one read transaction. */
static int list_collect(struct kv_reader *r,
                        const char *prefix,
                        size_t prefix_len,
                        struct paths *keys)
{
    struct paths todo = {0};
    struct path root = {KV_ROOT_INO, "", 0};
    int rv;

    rv = read_begin(r);
    if (rv != 0) {
        return rv;
    }
    rv = list_dir(r, &root, prefix, prefix_len, &todo, keys);
    for (size_t i = 0; rv == 0 && i < todo.n; i++) {
        struct path dir = todo.v[i];
        rv = list_dir(r, &dir, prefix, prefix_len, &todo, keys);
    }
    read_end(r);
    paths_free(&todo);
    return rv;
}

int kv_reader_list(struct kv_reader *r,
                   const char *prefix,
                   size_t prefix_len,
                   kv_list_cb cb,
                   void *arg)
{
    struct paths keys = {0};
    int rv;

    assert(r != NULL && cb != NULL && (prefix_len == 0 || prefix != NULL));
    rv = list_collect(r, prefix, prefix_len, &keys);
    if (rv == 0 && keys.n > 0) {
        qsort(keys.v, keys.n, sizeof(*keys.v), key_cmp);
    }
    for (size_t i = 0; rv == 0 && i < keys.n; i++) {
        if (cb(arg, keys.v[i].s, keys.v[i].len) != 0) {
            break;
        }
    }
    paths_free(&keys);
    return rv;
}
