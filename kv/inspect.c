/* Read-only inspection of a node's data folder. */

#include "inspect.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "../raft/ikd.h"
#include "cmd.h"
#include "store.h"

/* Names longer than this are cut in the listing: it is a summary. */
#define SHOW_NAME_BYTES 64

struct inspect
{
    sqlite3 *db;
    FILE *out;
    int failures;
    int64_t term;    /* meta 'term' */
    int64_t applied; /* meta 'applied' */
    int64_t next_ino;
    int64_t log_start;  /* meta 'log_start': 1 until compaction */
    int64_t snap_index; /* meta 'snap_index': 0 before a snapshot */
};

static void fail(struct inspect *in, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail(struct inspect *in, const char *fmt, ...)
{
    va_list ap;

    fputs("FAIL ", in->out);
    va_start(ap, fmt);
    vfprintf(in->out, fmt, ap);
    va_end(ap);
    fputc('\n', in->out);
    in->failures++;
}

static void pass(struct inspect *in, const char *what)
{
    fprintf(in->out, "ok   %s\n", what);
}

/* Print bytes as a quoted string, escaping anything not printable. */
static void show_name(FILE *out, const char *s, size_t len)
{
    size_t shown = len < SHOW_NAME_BYTES ? len : SHOW_NAME_BYTES;

    fputc('"', out);
    for (size_t i = 0; i < shown; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') {
            fprintf(out, "\\x%02x", ch);
        } else {
            fputc(ch, out);
        }
    }
    fputs(shown < len ? "\"..." : "\"", out);
}

static const char *const op_names[KV_OP_END] = {
    [KV_OP_PUT] = "put",       [KV_OP_DEL] = "del",
    [KV_OP_CREATE] = "create", [KV_OP_MKDIR] = "mkdir",
    [KV_OP_UNLINK] = "unlink", [KV_OP_RMDIR] = "rmdir",
    [KV_OP_RENAME] = "rename", [KV_OP_WRITE] = "write",
    [KV_OP_APPEND] = "append", [KV_OP_SETATTR] = "setattr",
    [KV_OP_CAS] = "cas",
};

/* The fields of c that say what it does; values are given by size only,
 * never printed. */
static void show_cmd(FILE *out, const struct kv_cmd *c)
{
    const char *name = c->op < KV_OP_END ? op_names[c->op] : NULL;

    fprintf(out, "%s", name != NULL ? name : "unknown-op");
    switch (c->op) {
        case KV_OP_PUT:
        case KV_OP_DEL:
        case KV_OP_CAS:
            fputs(" key=", out);
            show_name(out, c->path, c->path_len);
            break;
        case KV_OP_CREATE:
        case KV_OP_MKDIR:
        case KV_OP_UNLINK:
        case KV_OP_RMDIR:
        case KV_OP_RENAME:
            fprintf(out, " parent=%" PRIu64 " name=", c->parent);
            show_name(out, c->path, c->path_len);
            break;
        default:
            fprintf(out, " ino=%" PRIu64, c->ino);
            break;
    }
    if (c->op == KV_OP_RENAME) {
        fprintf(out, " to_parent=%" PRIu64 " to_name=", c->new_parent);
        show_name(out, c->new_name, c->new_name_len);
    }
    if (c->op == KV_OP_WRITE) {
        fprintf(out, " offset=%" PRIu64, c->offset);
    }
    if (c->op == KV_OP_SETATTR && (c->valid & KV_SET_SIZE)) {
        fprintf(out, " size=%" PRIu64, c->size);
    }
    if (c->op == KV_OP_CREATE || c->op == KV_OP_MKDIR ||
        (c->op == KV_OP_SETATTR && (c->valid & KV_SET_MODE))) {
        fprintf(out, " mode=%04o", (unsigned)c->mode & 07777);
    }
    if (c->data_len > 0 || c->op == KV_OP_PUT || c->op == KV_OP_WRITE) {
        fprintf(out, " bytes=%zu", c->data_len);
    }
    if (c->session != 0) {
        fprintf(out, " session=%016" PRIx64 " seq=%" PRIu64, c->session,
                c->seq);
    }
    fputc('\n', out);
}

/* One integer from a query of one row and one column; -1 when the query
 * fails or returns no row. */
static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return -1;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

static bool has_table(sqlite3 *db, const char *name)
{
    char sql[160];

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM sqlite_master "
             "WHERE type = 'table' AND name = '%s'",
             name);
    return query_int(db, sql) == 1;
}

static void inspect_meta(struct inspect *in)
{
    sqlite3_stmt *st;

    fputs("hard state and meta:\n", in->out);
    if (sqlite3_prepare_v2(in->db, "SELECT key, value FROM meta ORDER BY key",
                           -1, &st, NULL) != SQLITE_OK) {
        fail(in, "meta table unreadable: %s", sqlite3_errmsg(in->db));
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        int64_t value = sqlite3_column_int64(st, 1);
        fprintf(in->out, "  %-10s %" PRId64 "\n", key, value);
        if (strcmp(key, "term") == 0) {
            in->term = value;
        } else if (strcmp(key, "applied") == 0) {
            in->applied = value;
        } else if (strcmp(key, "next_ino") == 0) {
            in->next_ino = value;
        } else if (strcmp(key, "log_start") == 0) {
            in->log_start = value;
        } else if (strcmp(key, "snap_index") == 0) {
            in->snap_index = value;
        }
    }
    sqlite3_finalize(st);
}

struct log_walk
{
    int64_t first, last, count;
    int64_t prev_idx, prev_term;
    int64_t gaps, term_drops, above_term, undecodable;
};

/* A configuration entry as "config 1=HOST:PORT voter,...". */
static void show_config(FILE *out, const void *data, size_t len)
{
    struct raft_membership m;
    size_t i;

    if (raft_membership_decode(data, len, &m) != 0) {
        fprintf(out, "config undecodable bytes=%zu\n", len);
        return;
    }
    fputs("config", out);
    for (i = 0; i < m.n; i++) {
        fprintf(out, "%s%u=%s %s", i == 0 ? " " : ", ",
                (unsigned)m.servers[i].id, m.servers[i].addr,
                m.servers[i].voter ? "voter" : "learner");
    }
    fputc('\n', out);
}

/* Check one entry against the previous one and print it when it is among
 * the last ones asked for. */
static void walk_entry(struct inspect *in,
                       struct log_walk *w,
                       sqlite3_stmt *st,
                       int64_t show_from)
{
    int64_t idx = sqlite3_column_int64(st, 0);
    int64_t term = sqlite3_column_int64(st, 1);
    int64_t type = sqlite3_column_int64(st, 2);
    const void *data = sqlite3_column_blob(st, 3);
    size_t len = (size_t)sqlite3_column_bytes(st, 3);
    struct kv_cmd c;
    int rv = 0;

    if (w->count > 0 && idx != w->prev_idx + 1) {
        w->gaps++;
    }
    if (w->count > 0 && term < w->prev_term) {
        w->term_drops++;
    }
    if (term > in->term) {
        w->above_term++;
    }
    if (type == RAFT_ENTRY_COMMAND) {
        rv = kv_cmd_decode(data, len, &c);
        if (rv != 0) {
            w->undecodable++;
        }
    }
    w->count++;
    w->prev_idx = idx;
    w->prev_term = term;

    if (idx < show_from) {
        return;
    }
    fprintf(in->out, "  %" PRId64 " term=%" PRId64 " ", idx, term);
    if (type == RAFT_ENTRY_NOOP) {
        fputs("noop\n", in->out);
    } else if (type == RAFT_ENTRY_CONFIG) {
        show_config(in->out, data, len);
    } else if (type != RAFT_ENTRY_COMMAND) {
        fprintf(in->out, "unknown-type=%" PRId64 " bytes=%zu\n", type, len);
    } else if (rv != 0) {
        fprintf(in->out, "undecodable bytes=%zu\n", len);
    } else {
        show_cmd(in->out, &c);
    }
}

static void inspect_log(struct inspect *in, size_t max_entries)
{
    struct log_walk w = {0};
    sqlite3_stmt *st;
    int64_t show_from;
    int rc;

    w.first = query_int(in->db, "SELECT coalesce(min(idx), 0) FROM log");
    w.last = query_int(in->db, "SELECT coalesce(max(idx), 0) FROM log");
    fprintf(in->out, "log: first=%" PRId64 " last=%" PRId64 "\n", w.first,
            w.last);
    show_from = w.last + 1;
    if (max_entries > 0) {
        show_from = max_entries >= (size_t)(w.last - w.first + 1)
                        ? w.first
                        : w.last - (int64_t)max_entries + 1;
        fputs("log entries:\n", in->out);
    }

    if (sqlite3_prepare_v2(in->db,
                           "SELECT idx, term, type, data FROM log "
                           "ORDER BY idx",
                           -1, &st, NULL) != SQLITE_OK) {
        fail(in, "log table unreadable: %s", sqlite3_errmsg(in->db));
        return;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        walk_entry(in, &w, st, show_from);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        fail(in, "log read stopped: %s", sqlite3_errstr(rc));
    }

    fputs("checks:\n", in->out);
    if (w.gaps == 0 && w.count == (w.count ? w.last - w.first + 1 : 0)) {
        pass(in, "log indexes are contiguous");
    } else {
        fail(in, "log has %" PRId64 " gaps between indexes", w.gaps);
    }
    if (w.term_drops == 0) {
        pass(in, "log terms never go down");
    } else {
        fail(in, "log term goes down %" PRId64 " times", w.term_drops);
    }
    if (w.above_term == 0) {
        pass(in, "no entry has a term above the current term");
    } else {
        fail(in, "%" PRId64 " entries have a term above term %" PRId64,
             w.above_term, in->term);
    }
    if (w.undecodable == 0) {
        pass(in, "every command decodes");
    } else {
        fail(in, "%" PRId64 " commands do not decode", w.undecodable);
    }
    fprintf(in->out, "snapshot: index=%" PRId64 ", log kept from %" PRId64 "\n",
            in->snap_index, in->log_start);
    if ((w.count == 0 || w.first == in->log_start) &&
        in->applied + 1 >= in->log_start) {
        pass(in, "the log starts where compaction left it, all applied");
    } else {
        fail(in,
             "log starts at %" PRId64 ", compaction left %" PRId64
             ", applied %" PRId64,
             w.first, in->log_start, in->applied);
    }
    /* Entries up to the applied index may have been compacted away, but
     * the applied index never passes the end of the log. */
    if (in->applied <= w.last || (w.count == 0 && in->applied >= 0)) {
        pass(in, "applied index is within the log");
    } else {
        fail(in, "applied index %" PRId64 " is past the last entry %" PRId64,
             in->applied, w.last);
    }
}

/* Checks of the file tree of the key-value state machine. */
static void inspect_tree(struct inspect *in)
{
    int64_t n;

    n = query_int(in->db,
                  "SELECT count(*) FROM inode c LEFT JOIN inode p "
                  "ON c.parent = p.ino WHERE c.ino != 1 "
                  "AND (p.ino IS NULL OR p.is_dir = 0)");
    if (n == 0) {
        pass(in, "every entry's parent is a folder");
    } else {
        fail(in, "%" PRId64 " entries have no parent folder", n);
    }

    n = query_int(in->db,
                  "SELECT count(*) FROM inode i LEFT JOIN content c "
                  "USING (ino) WHERE i.is_dir = 0 "
                  "AND length(coalesce(c.data, X'')) < i.size");
    /* A file's blob may be longer than its size: appends leave room to
     * grow into. */
    if (n == 0) {
        pass(in, "every file's content covers its size");
    } else {
        fail(in, "%" PRId64 " files are larger than their content", n);
    }

    n = query_int(in->db,
                  "SELECT count(*) FROM content c LEFT JOIN inode i "
                  "USING (ino) WHERE i.ino IS NULL OR i.is_dir = 1");
    if (n == 0) {
        pass(in, "no content without a file");
    } else {
        fail(in, "%" PRId64 " content rows belong to no file", n);
    }

    n = query_int(in->db, "SELECT coalesce(max(ino), 0) FROM inode");
    if (in->next_ino > n) {
        pass(in, "next inode number is unused");
    } else {
        fail(in, "next inode number %" PRId64 " is not above %" PRId64,
             in->next_ino, n);
    }
}

static void inspect_tables(struct inspect *in)
{
    sqlite3_stmt *st;
    char sql[160];

    fputs("tables:\n", in->out);
    if (sqlite3_prepare_v2(in->db,
                           "SELECT name FROM sqlite_master "
                           "WHERE type = 'table' ORDER BY name",
                           -1, &st, NULL) != SQLITE_OK) {
        fail(in, "schema unreadable: %s", sqlite3_errmsg(in->db));
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM \"%s\"", name);
        fprintf(in->out, "  %-10s %" PRId64 " rows\n", name,
                query_int(in->db, sql));
    }
    sqlite3_finalize(st);
}

static void inspect_sqlite(struct inspect *in)
{
    sqlite3_stmt *st;
    const char *res;

    if (sqlite3_prepare_v2(in->db, "PRAGMA quick_check", -1, &st, NULL) !=
        SQLITE_OK) {
        fail(in, "quick_check: %s", sqlite3_errmsg(in->db));
        return;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        res = (const char *)sqlite3_column_text(st, 0);
        if (res != NULL && strcmp(res, "ok") == 0) {
            pass(in, "SQLite quick_check");
        } else {
            fail(in, "SQLite quick_check: %s", res != NULL ? res : "?");
        }
    }
    sqlite3_finalize(st);
}

static int inspect_open(const char *dir, sqlite3 **db, const char **why)
{
    char path[4096];
    struct stat sb;
    int rc;

    if (snprintf(path, sizeof(path), "%s/%s", dir, KV_DB_NAME) >=
        (int)sizeof(path)) {
        *why = "path too long";
        return -ENAMETOOLONG;
    }
    if (stat(path, &sb) != 0) {
        *why = errno == ENOENT ? "no " KV_DB_NAME " in this folder"
                               : "cannot read the database";
        return -errno;
    }
    rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_close(*db);
        *db = NULL;
        *why = "cannot open the database";
        return -EIO;
    }
    sqlite3_busy_timeout(*db, 5000);
    if (query_int(*db, "PRAGMA application_id") != KV_APP_ID ||
        !has_table(*db, "meta") || !has_table(*db, "log")) {
        sqlite3_close(*db);
        *db = NULL;
        *why = "not an Ikada database";
        return -EINVAL;
    }
    return 0;
}

/* The stored configuration (Raft 4): it must decode. */
static void inspect_conf(struct inspect *in)
{
    sqlite3_stmt *st;
    struct raft_membership m;

    if (sqlite3_prepare_v2(in->db, "SELECT idx, data FROM conf", -1, &st,
                           NULL) != SQLITE_OK) {
        fail(in, "conf table unreadable: %s", sqlite3_errmsg(in->db));
        return;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        const void *data = sqlite3_column_blob(st, 1);
        size_t len = (size_t)sqlite3_column_bytes(st, 1);

        fprintf(in->out, "configuration as of index %" PRId64 ": ",
                (int64_t)sqlite3_column_int64(st, 0));
        show_config(in->out, data, len);
        if (raft_membership_decode(data, len, &m) == 0) {
            pass(in, "the stored configuration decodes");
        } else {
            fail(in, "the stored configuration does not decode");
        }
    } else {
        fputs("configuration: none stored\n", in->out);
    }
    sqlite3_finalize(st);
}

int kv_inspect(const char *dir,
               const struct kv_inspect_opts *opts,
               FILE *out,
               const char **why)
{
    struct inspect in = {.out = out, .term = -1, .applied = -1, .log_start = 1};
    int rv;

    rv = inspect_open(dir, &in.db, why);
    if (rv != 0) {
        return rv;
    }
    /* One read transaction: a consistent state even while the node
     * writes. */
    if (sqlite3_exec(in.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        query_int(in.db, "SELECT count(*) FROM meta") < 0) {
        *why = "cannot read the database";
        sqlite3_close(in.db);
        return -EIO;
    }

    fprintf(out, "database: %s/%s\n", dir, KV_DB_NAME);
    inspect_meta(&in);
    if (has_table(in.db, "conf")) {
        inspect_conf(&in);
    }
    inspect_tables(&in);
    inspect_log(&in, opts->max_entries);
    if (has_table(in.db, "inode")) {
        inspect_tree(&in);
    }
    inspect_sqlite(&in);

    sqlite3_exec(in.db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(in.db);
    fprintf(out, "result: %s\n", in.failures == 0 ? "intact" : "DAMAGED");
    return in.failures == 0 ? 0 : IKD_ECORRUPT;
}
