/* Unit tests of kv/: commands, the store, the state machine, the reader. */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>
#include <zlib.h>

#include "../../kv/cmd.h"
#include "../../kv/orphan.h"
#include "../../kv/reader.h"
#include "../../kv/sm.h"
#include "../../kv/snapshot.h"
#include "../../kv/store.h"
#include "../../raft/ikd.h"

#define MIB (1024u * 1024u)

/* Helpers -------------------------------------------------------------- */

static int rm_cb(const char *path,
                 const struct stat *st,
                 int flag,
                 struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char *tmp_dir(void)
{
    char *dir = strdup("/tmp/ikada-kv-XXXXXX");

    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void tmp_remove(char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static const struct kv_sm fsm = {&kv_fsm_ops, NULL};

/* A store, a reader on it, the last index, and the term and clock of the
 * next command. */
struct fx
{
    char *dir;
    struct kv_store *s;
    struct kv_reader *r;
    raft_index_t last;
    raft_term_t term;
    int64_t clock;
};

/* A new store in a folder of its own. */
static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->dir = tmp_dir();
    f->term = 1;
    assert_int_equal(kv_store_open(f->dir, 1, &fsm, &f->s), 0);
    assert_int_equal(kv_reader_open(f->dir, &f->r), 0);
    return f;
}

static void fx_free(struct fx *f)
{
    kv_reader_close(f->r);
    kv_store_close(f->s);
    tmp_remove(f->dir);
    free(f);
}

/* Close the store and open it again, as a restarted node does. */
static void fx_reopen(struct fx *f)
{
    kv_reader_close(f->r);
    kv_store_close(f->s);
    assert_int_equal(kv_store_open(f->dir, 1, &fsm, &f->s), 0);
    assert_int_equal(kv_reader_open(f->dir, &f->r), 0);
}

static int fx_setup(void **state)
{
    *state = fx_new();
    return 0;
}

static int fx_teardown(void **state)
{
    fx_free(*state);
    return 0;
}

static struct kv_cmd cmd_new(struct fx *f, uint8_t op)
{
    struct kv_cmd c = {0};

    c.op = op;
    f->clock += 1000;
    c.time_ns = f->clock;
    c.max_bytes = 4 * MIB;
    return c;
}

/* Append c to the log and apply it in one batch, its result in *res.
 * Returns what kv_store_write() does, without failing the test: for code
 * that must release another thread first. */
static int run_try(struct fx *f,
                   const struct kv_cmd *c,
                   struct kv_sm_result *res)
{
    struct raft_entry e = {.term = f->term, .type = RAFT_ENTRY_COMMAND};
    struct kv_batch b = {0};
    uint8_t *buf;
    size_t len;
    int rv;

    res->status = 1;
    rv = kv_cmd_encode(c, &buf, &len);
    if (rv != 0) {
        return rv;
    }
    e.len = (uint32_t)len;
    e.data = buf;
    b.log_from = f->last + 1;
    b.entries = &e;
    b.n_entries = 1;
    b.apply_from = f->last + 1;
    b.apply = &e;
    b.n_apply = 1;
    b.results = res;
    rv = kv_store_write(f->s, &b);
    if (rv == 0) {
        f->last++;
    }
    free(buf);
    return rv;
}

/* run_try() that must succeed; returns the command's result. */
static struct kv_sm_result run(struct fx *f, const struct kv_cmd *c)
{
    struct kv_sm_result res;

    assert_int_equal(run_try(f, c, &res), 0);
    return res;
}

static struct kv_sm_result put(struct fx *f, const char *key, const char *v)
{
    struct kv_cmd c = cmd_new(f, KV_OP_PUT);

    c.path = key;
    c.path_len = strlen(key);
    c.data = (const uint8_t *)v;
    c.data_len = strlen(v);
    return run(f, &c);
}

static struct kv_sm_result del(struct fx *f, const char *key)
{
    struct kv_cmd c = cmd_new(f, KV_OP_DEL);

    c.path = key;
    c.path_len = strlen(key);
    return run(f, &c);
}

/* CREATE, MKDIR, UNLINK and RMDIR: an op on an entry of a folder. */
static struct kv_sm_result entry_op(struct fx *f,
                                    uint8_t op,
                                    uint64_t parent,
                                    const char *name,
                                    uint32_t mode,
                                    uint32_t flags)
{
    struct kv_cmd c = cmd_new(f, op);

    c.parent = parent;
    c.path = name;
    c.path_len = strlen(name);
    c.mode = mode;
    c.flags = flags;
    return run(f, &c);
}

static struct kv_sm_result ren(struct fx *f,
                               uint64_t parent,
                               const char *name,
                               uint64_t new_parent,
                               const char *new_name,
                               uint32_t flags)
{
    struct kv_cmd c = cmd_new(f, KV_OP_RENAME);

    c.parent = parent;
    c.path = name;
    c.path_len = strlen(name);
    c.new_parent = new_parent;
    c.new_name = new_name;
    c.new_name_len = strlen(new_name);
    c.flags = flags;
    return run(f, &c);
}

static struct kv_sm_result wr(struct fx *f,
                              uint64_t ino,
                              uint64_t offset,
                              const void *data,
                              size_t len)
{
    struct kv_cmd c = cmd_new(f, KV_OP_WRITE);

    c.ino = ino;
    c.offset = offset;
    c.data = data;
    c.data_len = len;
    return run(f, &c);
}

static struct kv_sm_result setattr(struct fx *f,
                                   uint64_t ino,
                                   uint32_t valid,
                                   uint64_t size,
                                   uint32_t mode,
                                   int64_t mtime_ns)
{
    struct kv_cmd c = cmd_new(f, KV_OP_SETATTR);

    c.ino = ino;
    c.valid = valid;
    c.size = size;
    c.mode = mode;
    c.mtime_ns = mtime_ns;
    return run(f, &c);
}

/* The value of key as a NUL-terminated string, or NULL with *rv set. */
static char *get(struct fx *f, const char *key, int *rv)
{
    uint8_t *v = NULL;
    size_t len = 0;
    char *s;

    *rv = kv_reader_get(f->r, key, strlen(key), &v, &len);
    if (*rv != 0) {
        return NULL;
    }
    s = malloc(len + 1);
    assert_non_null(s);
    memcpy(s, v, len);
    s[len] = '\0';
    free(v);
    return s;
}

static void assert_value(struct fx *f, const char *key, const char *want)
{
    int rv;
    char *v = get(f, key, &rv);

    assert_int_equal(rv, 0);
    assert_string_equal(v, want);
    free(v);
}

static void assert_absent(struct fx *f, const char *key)
{
    int rv;

    assert_null(get(f, key, &rv));
    assert_int_equal(rv, -ENOENT);
}

static uint64_t ino_of(struct fx *f, uint64_t parent, const char *name)
{
    struct kv_attr a;

    assert_int_equal(kv_reader_lookup(f->r, parent, name, strlen(name), &a), 0);
    return a.ino;
}

/* Commands ------------------------------------------------------------ */

static struct kv_cmd full_cmd(void)
{
    static const uint8_t data[] = {0, 1, 2, 0xff};
    struct kv_cmd c = {0};

    c.op = KV_OP_RENAME;
    c.session = UINT64_MAX;
    c.seq = 7;
    c.time_ns = -123456789;
    c.max_bytes = 4 * MIB;
    c.ino = 65;
    c.parent = 1;
    c.new_parent = 1ull << 40;
    c.path = "dir/name";
    c.path_len = 8;
    c.new_name = "other";
    c.new_name_len = 5;
    c.offset = 1ull << 33;
    c.size = 12;
    c.mode = 0100644;
    c.flags = KV_F_NOREPLACE;
    c.valid = KV_SET_SIZE | KV_SET_MTIME;
    c.mtime_ns = INT64_MIN;
    c.data = data;
    c.data_len = sizeof(data);
    return c;
}

static void test_cmd_round_trip(void **state)
{
    struct kv_cmd c = full_cmd();
    struct kv_cmd d;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_int_equal(kv_cmd_encode(&c, &buf, &len), 0);
    assert_int_equal(kv_cmd_decode(buf, len, &d), 0);
    assert_int_equal(d.op, c.op);
    assert_true(d.session == c.session && d.seq == c.seq);
    assert_true(d.time_ns == c.time_ns && d.max_bytes == c.max_bytes);
    assert_true(d.ino == c.ino && d.parent == c.parent);
    assert_true(d.new_parent == c.new_parent && d.offset == c.offset);
    assert_true(d.size == c.size && d.mode == c.mode);
    assert_true(d.flags == c.flags && d.valid == c.valid);
    assert_true(d.mtime_ns == c.mtime_ns);
    assert_int_equal(d.path_len, c.path_len);
    assert_memory_equal(d.path, c.path, c.path_len);
    assert_int_equal(d.new_name_len, c.new_name_len);
    assert_memory_equal(d.new_name, c.new_name, c.new_name_len);
    assert_int_equal(d.data_len, c.data_len);
    assert_memory_equal(d.data, c.data, c.data_len);
    /* Decoded strings point into the buffer. */
    assert_true((const uint8_t *)d.path >= buf &&
                (const uint8_t *)d.path + d.path_len <= buf + len);
    assert_true(d.data >= buf && d.data + d.data_len <= buf + len);
    free(buf);
}

static void test_cmd_round_trip_empty_fields(void **state)
{
    struct kv_cmd c = {.op = KV_OP_DEL};
    struct kv_cmd d;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_int_equal(kv_cmd_encode(&c, &buf, &len), 0);
    assert_int_equal(kv_cmd_decode(buf, len, &d), 0);
    assert_int_equal(d.op, KV_OP_DEL);
    assert_int_equal(d.path_len, 0);
    assert_int_equal(d.data_len, 0);
    free(buf);
}

static void test_cmd_decode_truncated(void **state)
{
    struct kv_cmd c = full_cmd();
    struct kv_cmd d;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_int_equal(kv_cmd_encode(&c, &buf, &len), 0);
    for (size_t n = 0; n < len; n++) {
        /* A copy of exactly n bytes, so reading past it is caught. */
        uint8_t *p = malloc(n + 1);
        assert_non_null(p);
        memcpy(p, buf, n);
        assert_int_equal(kv_cmd_decode(p, n, &d), IKD_EMALFORMED);
        free(p);
    }
    assert_int_equal(kv_cmd_decode(NULL, 0, &d), IKD_EMALFORMED);
    free(buf);
}

/* Pack a command array by hand: field i is replaced by what bad() packs
 * when i == which; n fields in all. */
static void pack_fields(msgpack_packer *pk, uint32_t n, int which, int bad)
{
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        if ((int)i != which) {
            if (i == 9 || i == 10 || i == 17) {
                msgpack_pack_bin(pk, 0);
            } else {
                msgpack_pack_uint64(pk, 1);
            }
            continue;
        }
        switch (bad) {
            case 0:
                msgpack_pack_str_with_body(pk, "x", 1);
                break;
            case 1:
                msgpack_pack_int64(pk, -1);
                break;
            case 2:
                msgpack_pack_array(pk, 0);
                break;
            case 3:
                msgpack_pack_uint64(pk, 1ull << 32);
                break;
            case 4:
                msgpack_pack_nil(pk);
                break;
            case 5:
                msgpack_pack_double(pk, 1.5);
                break;
            default:
                msgpack_pack_uint64(pk, 99);
                break;
        }
    }
}

static int decode_packed(uint32_t n, int which, int bad, bool trailing)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct kv_cmd d;
    int rv;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_fields(&pk, n, which, bad);
    if (trailing) {
        msgpack_pack_nil(&pk);
    }
    rv = kv_cmd_decode((const uint8_t *)sb.data, sb.size, &d);
    msgpack_sbuffer_destroy(&sb);
    return rv;
}

static void test_cmd_decode_wrong_types(void **state)
{
    (void)state;
    /* The hand-packed baseline decodes. */
    assert_int_equal(decode_packed(18, -1, 0, false), 0);
    assert_int_equal(decode_packed(18, -1, 0, true), IKD_EMALFORMED);
    assert_int_equal(decode_packed(17, -1, 0, false), IKD_EMALFORMED);
    assert_int_equal(decode_packed(19, -1, 0, false), IKD_EMALFORMED);
    /* Unknown version, unknown ops. */
    assert_int_equal(decode_packed(18, 0, 6, false), IKD_EMALFORMED);
    assert_int_equal(decode_packed(18, 1, 6, false), IKD_EMALFORMED);
    /* Every field refuses every wrong kind of value. */
    for (int field = 0; field < 18; field++) {
        for (int bad = 0; bad <= 5; bad++) {
            bool wide = field == 2 || field == 3 || field == 5 ||
                        (field >= 6 && field <= 8) || field == 11 ||
                        field == 12;
            bool is_signed = field == 4 || field == 16;
            if ((bad == 3 && (wide || is_signed)) || (bad == 1 && is_signed)) {
                continue; /* valid for that field */
            }
            assert_int_equal(decode_packed(18, field, bad, false),
                             IKD_EMALFORMED);
        }
    }
}

static void test_cmd_decode_oversized(void **state)
{
    struct kv_cmd c = full_cmd();
    struct kv_cmd d;
    char *path = malloc(IKD_MAX_PATH_BYTES + 1);
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_non_null(path);
    memset(path, 'a', IKD_MAX_PATH_BYTES + 1);
    c.path = path;
    c.path_len = IKD_MAX_PATH_BYTES + 1;
    assert_int_equal(kv_cmd_encode(&c, &buf, &len), 0);
    assert_int_equal(kv_cmd_decode(buf, len, &d), IKD_EMALFORMED);
    free(buf);
    c.path_len = IKD_MAX_PATH_BYTES;
    assert_int_equal(kv_cmd_encode(&c, &buf, &len), 0);
    assert_int_equal(kv_cmd_decode(buf, len, &d), 0);
    free(buf);
    free(path);
}

static void test_cmd_decode_random_bytes(void **state)
{
    struct kv_cmd c = full_cmd();
    struct kv_cmd d;
    uint8_t *good;
    size_t good_len;
    uint8_t buf[512];
    unsigned seed = 12345;

    (void)state;
    assert_int_equal(kv_cmd_encode(&c, &good, &good_len), 0);
    assert_true(good_len <= sizeof(buf));
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)rand_r(&seed) % sizeof(buf);
        int rv;

        if (i % 2 == 0) {
            /* Pure noise, sometimes behind a valid array header. */
            for (size_t j = 0; j < n; j++) {
                buf[j] = (uint8_t)rand_r(&seed);
            }
            if (i % 4 == 0 && n >= 3) {
                memcpy(buf, "\xdc\x00\x12", 3);
            }
        } else {
            /* A valid command with a few bytes changed. */
            n = good_len;
            memcpy(buf, good, n);
            for (int k = 0; k < 1 + rand_r(&seed) % 4; k++) {
                buf[(size_t)rand_r(&seed) % n] = (uint8_t)rand_r(&seed);
            }
        }
        rv = kv_cmd_decode(buf, n, &d);
        assert_true(rv == 0 || rv == IKD_EMALFORMED);
        if (rv == 0) {
            assert_true(d.op >= KV_OP_PUT && d.op < KV_OP_END);
            assert_true(d.path_len <= IKD_MAX_PATH_BYTES);
        }
    }
    free(good);
}

static void test_key_check(void **state)
{
    static const char *const good[] = {
        "a",  "a/b/c",   "a.b",      "..a",          "a..",
        ".x", ".ikadax", "x/.ikada", "with space/é",
    };
    static const char *const bad[] = {
        "",     "/a",   "a/",     "a//b", ".",         "..",    "a/./b",
        "a/..", "../a", ".ikada", "/",    ".ikada/id", "a/b/.", "a/../b",
    };
    char big[IKD_MAX_PATH_BYTES + 2];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(kv_key_check(good[i], strlen(good[i])), 0);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kv_key_check(bad[i], strlen(bad[i])), -EINVAL);
    }
    assert_int_equal(kv_key_check("a\0b", 3), -EINVAL);

    /* Component and total lengths. */
    memset(big, 'x', sizeof(big));
    assert_int_equal(kv_key_check(big, IKD_MAX_NAME_BYTES), 0);
    assert_int_equal(kv_key_check(big, IKD_MAX_NAME_BYTES + 1), -EINVAL);
    for (size_t i = 200; i < sizeof(big); i += 201) {
        big[i] = '/';
    }
    assert_int_equal(kv_key_check(big, IKD_MAX_PATH_BYTES), 0);
    assert_int_equal(kv_key_check(big, IKD_MAX_PATH_BYTES + 1), -EINVAL);
}

static void test_name_check(void **state)
{
    char big[IKD_MAX_NAME_BYTES + 1];

    (void)state;
    assert_int_equal(kv_name_check("a", 1), 0);
    assert_int_equal(kv_name_check(".ikada", 6), 0);
    assert_int_equal(kv_name_check("", 0), -EINVAL);
    assert_int_equal(kv_name_check(".", 1), -EINVAL);
    assert_int_equal(kv_name_check("..", 2), -EINVAL);
    assert_int_equal(kv_name_check("a/b", 3), -EINVAL);
    assert_int_equal(kv_name_check("a\0", 2), -EINVAL);
    memset(big, 'n', sizeof(big));
    assert_int_equal(kv_name_check(big, IKD_MAX_NAME_BYTES), 0);
    assert_int_equal(kv_name_check(big, sizeof(big)), -ENAMETOOLONG);
}

/* The store ----------------------------------------------------------- */

static char *db_path(const char *dir)
{
    char *p;

    if (asprintf(&p, "%s/%s", dir, KV_DB_NAME) < 0) {
        abort();
    }
    return p;
}

/* The bytes of a file, for comparing before and after. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;
    long n;

    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    n = ftell(fp);
    assert_true(n >= 0);
    rewind(fp);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void test_store_open_reopen_node_id(void **state)
{
    char *dir = tmp_dir();
    char *path = db_path(dir);
    struct kv_store *s;
    struct kv_state st;
    uint8_t *before;
    uint8_t *after;
    size_t n1;
    size_t n2;

    (void)state;
    assert_int_equal(kv_store_open(dir, 3, &fsm, &s), 0);
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_true(st.term == 0 && st.vote == 0 && st.applied == 0);
    assert_true(st.first_index == 1 && st.n_entries == 0);
    kv_state_free(&st);
    kv_store_close(s);

    assert_int_equal(kv_store_open(dir, 3, &fsm, &s), 0);
    kv_store_close(s);

    /* Another node's id: refused, and the file is left as it was. */
    before = slurp(path, &n1);
    assert_int_equal(kv_store_open(dir, 4, &fsm, &s), IKD_ENODEID);
    after = slurp(path, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(before, after, n1);
    free(before);
    free(after);

    free(path);
    tmp_remove(dir);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");

    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

static void test_store_refuses_foreign_files(void **state)
{
    char *dir = tmp_dir();
    char *path = db_path(dir);
    char junk[8192];
    struct kv_store *s = NULL;
    char *missing;

    (void)state;
    /* Not a database at all. */
    memset(junk, 'j', sizeof(junk));
    write_file(path, junk, sizeof(junk));
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), IKD_ECORRUPT);
    unlink(path);

    /* A database, but not ours. */
    {
        struct kv_store *tmp;
        sqlite3 *db;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(
            sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        assert_int_equal(kv_store_open(dir, 1, &fsm, &tmp), IKD_ECORRUPT);
        unlink(path);
    }

    /* An empty file is a new database. */
    write_file(path, "", 0);
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    kv_store_close(s);

    assert_true(asprintf(&missing, "%s/nope", dir) > 0);
    assert_int_equal(kv_store_open(missing, 1, &fsm, &s), -ENOENT);
    free(missing);
    free(path);
    tmp_remove(dir);
}

static uint8_t *encode_put(const char *key, const char *value, uint32_t *len)
{
    struct kv_cmd c = {.op = KV_OP_PUT, .max_bytes = MIB, .time_ns = 5};
    uint8_t *buf;
    size_t n;

    c.path = key;
    c.path_len = strlen(key);
    c.data = (const uint8_t *)value;
    c.data_len = strlen(value);
    assert_int_equal(kv_cmd_encode(&c, &buf, &n), 0);
    *len = (uint32_t)n;
    return buf;
}

static void test_store_batch_persists_atomically(void **state)
{
    char *dir = tmp_dir();
    struct kv_store *s;
    struct kv_reader *r;
    struct kv_state st;
    struct raft_entry e[3] = {
        {.term = 2, .type = RAFT_ENTRY_NOOP},
        {.term = 2, .type = RAFT_ENTRY_COMMAND},
        {.term = 2, .type = RAFT_ENTRY_COMMAND},
    };
    struct kv_sm_result res[2];
    struct kv_batch b = {
        .hard_state = true,
        .term = 2,
        .vote = 3,
        .log_from = 1,
        .entries = e,
        .n_entries = 3,
        .apply_from = 1,
        .apply = e,
        .n_apply = 2,
        .results = res,
    };
    uint8_t *v;
    size_t len;

    (void)state;
    e[1].data = encode_put("a/b", "one", &e[1].len);
    e[2].data = encode_put("c", "two", &e[2].len);
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    assert_int_equal(kv_store_write(s, &b), 0);
    assert_int_equal(res[0].status, 0);
    assert_int_equal(res[1].status, 0);
    assert_int_equal(res[1].value, KV_FIRST_INO + 1); /* after folder a */
    kv_store_close(s);

    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_int_equal(st.term, 2);
    assert_int_equal(st.vote, 3);
    assert_int_equal(st.applied, 2);
    assert_int_equal(st.first_index, 1);
    assert_int_equal(st.n_entries, 3);
    assert_int_equal(st.entries[0].type, RAFT_ENTRY_NOOP);
    assert_int_equal(st.entries[0].len, 0);
    assert_int_equal(st.entries[2].len, e[2].len);
    assert_memory_equal(st.entries[2].data, e[2].data, e[2].len);
    kv_state_free(&st);

    /* Entry 3 is stored but not applied yet. */
    assert_int_equal(kv_reader_open(dir, &r), 0);
    assert_int_equal(kv_reader_get(r, "a/b", 3, &v, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(v, "one", 3);
    free(v);
    assert_int_equal(kv_reader_get(r, "c", 1, &v, &len), -ENOENT);

    b = (struct kv_batch){
        .apply_from = 3, .apply = &e[2], .n_apply = 1, .results = res};
    assert_int_equal(kv_store_write(s, &b), 0);
    assert_int_equal(kv_reader_get(r, "c", 1, &v, &len), 0);
    free(v);

    kv_reader_close(r);
    kv_store_close(s);
    free(e[1].data);
    free(e[2].data);
    tmp_remove(dir);
}

/* A batch that only applies entries commits without waiting for the disk;
 * batches that store entries still sync, and both kinds interleave on one
 * connection.  Everything committed is there after a reopen. */
static void test_store_apply_only_batches_interleave(void **state)
{
    char *dir = tmp_dir();
    struct kv_store *s;
    struct kv_state st;
    struct raft_entry e[4];
    struct kv_sm_result res;
    char key[8];
    uint8_t *v;
    size_t len;
    struct kv_reader *r;

    (void)state;
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    for (size_t i = 0; i < 4; i++) {
        struct kv_batch log = {
            .log_from = i + 1, .entries = &e[i], .n_entries = 1};
        struct kv_batch apply = {
            .apply_from = i + 1, .apply = &e[i], .n_apply = 1, .results = &res};

        snprintf(key, sizeof(key), "k%zu", i);
        e[i] = (struct raft_entry){.term = 1, .type = RAFT_ENTRY_COMMAND};
        e[i].data = encode_put(key, "v", &e[i].len);
        assert_int_equal(kv_store_write(s, &log), 0);
        assert_int_equal(kv_store_write(s, &apply), 0);
        assert_int_equal(res.status, 0);
    }
    kv_store_close(s);

    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_int_equal(st.applied, 4);
    assert_int_equal(st.n_entries, 4);
    kv_state_free(&st);
    assert_int_equal(kv_reader_open(dir, &r), 0);
    assert_int_equal(kv_reader_get(r, "k3", 2, &v, &len), 0);
    assert_int_equal(len, 1);
    free(v);
    kv_reader_close(r);
    kv_store_close(s);
    for (size_t i = 0; i < 4; i++) {
        free(e[i].data);
    }
    tmp_remove(dir);
}

/* The WAL is copied back by kv_store_checkpoint() alone, on its own
 * connection; once it has run, the next commit starts the WAL over, and
 * nothing is lost. */
static void test_store_checkpoint_on_its_own_connection(void **state)
{
    char *dir = tmp_dir();
    struct kv_store *s;
    struct kv_state st;
    struct raft_entry e = {.term = 1, .type = RAFT_ENTRY_COMMAND};
    struct kv_sm_result res;
    raft_index_t i = 0;
    int copied = -1;

    (void)state;
    e.data = encode_put("k", "v", &e.len);
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    while (!kv_store_wants_checkpoint(s)) {
        struct kv_batch b = {.log_from = i + 1,
                             .entries = &e,
                             .n_entries = 1,
                             .apply_from = i + 1,
                             .apply = &e,
                             .n_apply = 1,
                             .results = &res};

        assert_true(i < 10 * KV_CHECKPOINT_FRAMES);
        assert_int_equal(kv_store_write(s, &b), 0);
        i++;
    }
    assert_int_equal(kv_store_checkpoint(s, &copied), 0);
    assert_true(copied >= KV_CHECKPOINT_FRAMES);
    assert_false(kv_store_wants_finish(s, copied));
    {
        struct kv_batch b = {.log_from = i + 1, .entries = &e, .n_entries = 1};

        assert_int_equal(kv_store_write(s, &b), 0);
        i++;
    }
    assert_false(kv_store_wants_checkpoint(s));
    kv_store_close(s);

    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_int_equal(st.applied, i - 1);
    assert_int_equal(st.n_entries, i);
    kv_state_free(&st);
    kv_store_close(s);
    free(e.data);
    tmp_remove(dir);
}

static off_t file_size(const char *dir, const char *name)
{
    char path[512];
    struct stat sb;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_size;
}

/* A batch with finish_checkpoint copies the WAL itself before its
 * transaction, which then writes from the WAL's start: over many rounds
 * the file stays as long as one round made it, and every entry and the
 * state stay whole. */
static void test_store_finish_checkpoint_restarts_wal(void **state)
{
    char *dir = tmp_dir();
    struct kv_store *s;
    struct kv_state st;
    struct raft_entry e = {.term = 1, .type = RAFT_ENTRY_COMMAND};
    struct kv_sm_result res;
    raft_index_t i = 0;
    off_t first_round = 0;

    (void)state;
    e.data = encode_put("k", "v", &e.len);
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    for (int round = 0; round < 5; round++) {
        bool finish = false;

        while (!finish) {
            struct kv_batch b = {.log_from = i + 1,
                                 .entries = &e,
                                 .n_entries = 1,
                                 .apply_from = i + 1,
                                 .apply = &e,
                                 .n_apply = 1,
                                 .results = &res};

            finish = kv_store_wants_checkpoint(s);
            b.finish_checkpoint = finish;
            assert_true(
                i < (raft_index_t)(10 * KV_CHECKPOINT_FRAMES * (round + 1)));
            assert_int_equal(kv_store_write(s, &b), 0);
            assert_int_equal(res.status, 0);
            i++;
        }
        /* The finishing batch wrote its frames at the WAL's start. */
        assert_false(kv_store_wants_checkpoint(s));
        if (round == 0) {
            first_round = file_size(dir, "ikada.db-wal");
        }
        assert_true(file_size(dir, "ikada.db-wal") <= first_round);
    }
    kv_store_close(s);

    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_int_equal(st.applied, i);
    assert_int_equal(st.n_entries, i);
    kv_state_free(&st);
    kv_store_close(s);
    free(e.data);
    tmp_remove(dir);
}

static uint8_t *encode_del(const char *key, uint32_t *len)
{
    struct kv_cmd c = {.op = KV_OP_DEL, .max_bytes = MIB, .time_ns = 6};
    uint8_t *buf;
    size_t n;

    c.path = key;
    c.path_len = strlen(key);
    assert_int_equal(kv_cmd_encode(&c, &buf, &n), 0);
    *len = (uint32_t)n;
    return buf;
}

/* Store and apply one command as entry index; its result status. */
static int store_apply_one(struct kv_store *s,
                           raft_index_t index,
                           uint8_t *cmd,
                           uint32_t len)
{
    struct raft_entry e = {
        .term = 1, .type = RAFT_ENTRY_COMMAND, .data = cmd, .len = len};
    struct kv_sm_result res = {0};
    struct kv_batch b = {.log_from = index,
                         .entries = &e,
                         .n_entries = 1,
                         .apply_from = index,
                         .apply = &e,
                         .n_apply = 1,
                         .results = &res};

    assert_int_equal(kv_store_write(s, &b), 0);
    free(cmd);
    return res.status;
}

/* A copy handed over inside a transaction becomes the file only if the
 * transaction commits; once kept, a later hand-over does not replace it
 * (the state no longer has the file, and the copy took writes). */
static void test_orphans_follow_the_transaction_that_removes(void **state)
{
    struct kv_orphans *o = kv_orphans_new();
    struct kv_attr a = {.ino = 7, .size = 5, .mode = 0644};
    uint64_t inos[4];
    uint8_t buf[8];
    size_t n;

    (void)state;
    assert_non_null(o);
    assert_int_equal(kv_orphans_watch(o, 7), 0);
    assert_int_equal(kv_orphans_watch(o, 8), 0);
    assert_int_equal(kv_orphans_watching(o, inos, 4), 2);

    kv_orphans_keep(o, &a, (const uint8_t *)"first", 5);
    assert_int_equal(kv_orphans_attr(o, 7, &a), -ENOENT); /* not yet */
    kv_orphans_settle(o, false);
    assert_int_equal(kv_orphans_attr(o, 7, &a), -ENOENT); /* rolled back */
    assert_int_equal(
        kv_orphans_write(o, 7, 0, (const uint8_t *)"x", 1, false, 16, 1),
        -ENOENT);

    kv_orphans_keep(o, &a, (const uint8_t *)"again", 5);
    kv_orphans_settle(o, true);
    assert_int_equal(kv_orphans_read(o, 7, 0, sizeof(buf), buf, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "again", 5);
    assert_int_equal(kv_orphans_watching(o, inos, 4), 1);
    assert_int_equal(inos[0], 8);

    assert_int_equal(
        kv_orphans_write(o, 7, 0, (const uint8_t *)"A", 1, false, 16, 1), 0);
    kv_orphans_keep(o, &a, (const uint8_t *)"stale", 5);
    kv_orphans_settle(o, true);
    assert_int_equal(kv_orphans_read(o, 7, 0, sizeof(buf), buf, &n), 0);
    assert_memory_equal(buf, "Again", 5);
    kv_orphans_free(o);
}

/* The state machine hands the content of a watched file to the orphans
 * in the transaction that removes it, and only of a watched one; the
 * copy then takes reads, writes and size changes, and goes with the
 * last watcher. */
static void test_orphans_keep_removed_watched_files(void **state)
{
    char *dir = tmp_dir();
    struct kv_orphans *o = kv_orphans_new();
    struct kv_sm sm = {&kv_fsm_ops, o};
    struct kv_store *s;
    struct kv_reader *r;
    struct kv_attr a;
    uint64_t watched;
    uint64_t other;
    uint8_t buf[32];
    size_t n;
    uint32_t len;
    uint8_t *cmd;

    (void)state;
    assert_non_null(o);
    assert_int_equal(kv_store_open(dir, 1, &sm, &s), 0);
    cmd = encode_put("d/f", "hello", &len);
    assert_int_equal(store_apply_one(s, 1, cmd, len), 0);
    cmd = encode_put("d/g", "other", &len);
    assert_int_equal(store_apply_one(s, 2, cmd, len), 0);
    assert_int_equal(kv_reader_open(dir, &r), 0);
    assert_int_equal(kv_reader_lookup(r, KV_ROOT_INO, "d", 1, &a), 0);
    assert_int_equal(kv_reader_lookup(r, a.ino, "f", 1, &a), 0);
    watched = a.ino;
    assert_int_equal(kv_reader_lookup(r, KV_ROOT_INO, "d", 1, &a), 0);
    assert_int_equal(kv_reader_lookup(r, a.ino, "g", 1, &a), 0);
    other = a.ino;
    kv_reader_close(r);

    assert_int_equal(kv_orphans_watch(o, watched), 0);
    assert_int_equal(kv_orphans_watch(o, watched), 0);
    assert_int_equal(kv_orphans_attr(o, watched, &a), -ENOENT);
    cmd = encode_del("d/g", &len);
    assert_int_equal(store_apply_one(s, 3, cmd, len), 0);
    assert_int_equal(kv_orphans_attr(o, other, &a), -ENOENT);
    cmd = encode_del("d/f", &len);
    assert_int_equal(store_apply_one(s, 4, cmd, len), 0);

    assert_int_equal(kv_orphans_attr(o, watched, &a), 0);
    assert_int_equal(a.size, 5);
    assert_int_equal(a.nlink, 0);
    assert_int_equal(kv_orphans_read(o, watched, 0, sizeof(buf), buf, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(kv_orphans_write(o, watched, 0, (const uint8_t *)" you", 4,
                                      true, 16, 7),
                     0);
    assert_int_equal(kv_orphans_read(o, watched, 3, sizeof(buf), buf, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "lo you", 6);
    assert_int_equal(kv_orphans_write(o, watched, 12, (const uint8_t *)"12345",
                                      5, false, 16, 8),
                     -EFBIG);
    assert_int_equal(kv_orphans_resize(o, watched, 12, 16, 9), 0);
    assert_int_equal(kv_orphans_read(o, watched, 9, sizeof(buf), buf, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "\0\0\0", 3);
    assert_int_equal(kv_orphans_resize(o, watched, 17, 16, 9), -EFBIG);

    kv_orphans_unwatch(o, watched);
    assert_int_equal(kv_orphans_attr(o, watched, &a), 0);
    kv_orphans_unwatch(o, watched);
    assert_int_equal(kv_orphans_attr(o, watched, &a), -ENOENT);
    kv_store_close(s);
    kv_orphans_free(o);
    tmp_remove(dir);
}

static void test_store_truncate_log(void **state)
{
    char *dir = tmp_dir();
    struct kv_store *s;
    struct kv_state st;
    struct raft_entry e[5];
    uint8_t byte[5] = {1, 2, 3, 4, 5};
    struct raft_entry x = {.term = 7, .type = RAFT_ENTRY_COMMAND};
    struct kv_batch b = {.log_from = 1, .entries = e, .n_entries = 5};

    (void)state;
    for (int i = 0; i < 5; i++) {
        e[i] = (struct raft_entry){
            .term = 1, .type = RAFT_ENTRY_COMMAND, .len = 1, .data = &byte[i]};
    }
    x.len = 1;
    x.data = &byte[4];
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    assert_int_equal(kv_store_write(s, &b), 0);

    /* Raft 5.3: a conflicting entry replaces it and all that follow. */
    b = (struct kv_batch){.log_from = 3, .entries = &x, .n_entries = 1};
    assert_int_equal(kv_store_write(s, &b), 0);
    kv_store_close(s);

    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_int_equal(st.n_entries, 3);
    assert_int_equal(st.entries[1].term, 1);
    assert_int_equal(st.entries[1].data[0], 2);
    assert_int_equal(st.entries[2].term, 7);
    assert_int_equal(st.entries[2].data[0], 5);
    kv_state_free(&st);

    /* Truncation without new entries. */
    b = (struct kv_batch){.log_from = 2};
    assert_int_equal(kv_store_write(s, &b), 0);
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_int_equal(st.n_entries, 1);
    kv_state_free(&st);
    kv_store_close(s);
    tmp_remove(dir);
}

/* A state machine that applies for real, then fails at one index. */
static uint64_t fail_at;
static int apply_calls;

static int failing_apply(void *ctx,
                         sqlite3 *db,
                         uint64_t index,
                         const uint8_t *cmd,
                         size_t len,
                         struct kv_sm_result *res)
{
    int rv = kv_fsm_ops.apply(ctx, db, index, cmd, len, res);

    apply_calls++;
    return rv == 0 && index == fail_at ? -EIO : rv;
}

static const struct kv_sm_ops failing_ops = {
    .init = NULL, /* the tables come from an earlier open */
    .apply = failing_apply,
};

static void test_store_fault_rolls_back_everything(void **state)
{
    char *dir = tmp_dir();
    struct kv_sm sm = {&failing_ops, NULL};
    struct kv_store *s;
    struct kv_state st;
    struct kv_reader *r;
    struct raft_entry e[2] = {{.term = 5, .type = RAFT_ENTRY_COMMAND},
                              {.term = 5, .type = RAFT_ENTRY_COMMAND}};
    struct kv_sm_result res[2];
    struct kv_batch b = {.hard_state = true,
                         .term = 5,
                         .vote = 2,
                         .log_from = 1,
                         .entries = e,
                         .n_entries = 2,
                         .apply_from = 1,
                         .apply = e,
                         .n_apply = 2,
                         .results = res};
    uint8_t *v;
    size_t len;

    (void)state;
    e[0].data = encode_put("x", "1", &e[0].len);
    e[1].data = encode_put("y", "2", &e[1].len);
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    kv_store_close(s);
    assert_int_equal(kv_store_open(dir, 1, &sm, &s), 0);
    fail_at = 2;
    assert_int_equal(kv_store_write(s, &b), -EIO);

    /* Nothing of the batch is visible: hard state, log, or state. */
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_int_equal(st.term, 0);
    assert_int_equal(st.applied, 0);
    assert_int_equal(st.n_entries, 0);
    kv_state_free(&st);
    assert_int_equal(kv_reader_open(dir, &r), 0);
    assert_int_equal(kv_reader_get(r, "x", 1, &v, &len), -ENOENT);

    /* The same batch goes through once the fault is gone. */
    fail_at = 0;
    assert_int_equal(kv_store_write(s, &b), 0);
    assert_int_equal(kv_reader_get(r, "y", 1, &v, &len), 0);
    free(v);
    kv_reader_close(r);
    kv_store_close(s);
    free(e[0].data);
    free(e[1].data);
    tmp_remove(dir);
}

static void test_store_noop_not_applied(void **state)
{
    char *dir = tmp_dir();
    struct kv_sm sm = {&failing_ops, NULL};
    struct kv_store *s;
    struct kv_state st;
    struct raft_entry e = {.term = 1, .type = RAFT_ENTRY_NOOP};
    struct kv_sm_result res = {.status = 99, .value = 99};
    struct kv_batch b = {.log_from = 1,
                         .entries = &e,
                         .n_entries = 1,
                         .apply_from = 1,
                         .apply = &e,
                         .n_apply = 1,
                         .results = &res};

    (void)state;
    assert_int_equal(kv_store_open(dir, 1, &fsm, &s), 0);
    kv_store_close(s);
    assert_int_equal(kv_store_open(dir, 1, &sm, &s), 0);
    apply_calls = 0;
    fail_at = 1;
    assert_int_equal(kv_store_write(s, &b), 0);
    assert_int_equal(apply_calls, 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.value, 0);
    assert_int_equal(kv_store_load(s, &st), 0);
    assert_int_equal(st.applied, 1);
    kv_state_free(&st);
    kv_store_close(s);
    tmp_remove(dir);
}

static struct raft_membership conf_of(size_t n)
{
    struct raft_membership m;
    size_t i;

    memset(&m, 0, sizeof(m));
    for (i = 0; i < n; i++) {
        m.servers[i].id = (raft_id_t)(i + 1);
        m.servers[i].voter = true;
        snprintf(m.servers[i].addr, sizeof(m.servers[i].addr), "127.0.0.1:%zu",
                 2000 + i);
    }
    m.n = n;
    return m;
}

/* Raft 4: the configuration of an applied entry is stored with it, is
 * loaded after a restart, travels in snapshot files, and never goes back
 * to an older one. */
static void test_store_keeps_configuration(void **state)
{
    struct fx *f = *state;
    struct raft_membership three = conf_of(3);
    struct raft_membership four = conf_of(4);
    struct raft_membership back;
    uint8_t buf3[RAFT_MEMBERSHIP_MAX_BYTES];
    uint8_t buf4[RAFT_MEMBERSHIP_MAX_BYTES];
    uint8_t got[RAFT_MEMBERSHIP_MAX_BYTES];
    size_t len3;
    size_t len4;
    size_t got_len = 0;
    raft_index_t got_index = 0;
    bool found = false;
    struct raft_entry e = {.term = 1, .type = RAFT_ENTRY_CONFIG};
    struct kv_sm_result res;
    struct kv_batch b = {.log_from = 1,
                         .entries = &e,
                         .n_entries = 1,
                         .apply_from = 1,
                         .apply = &e,
                         .n_apply = 1,
                         .results = &res};
    struct kv_snapshot_info info;
    struct kv_state st;
    char *snap;

    assert_int_equal(raft_membership_encode(&three, buf3, sizeof(buf3), &len3),
                     0);
    assert_int_equal(raft_membership_encode(&four, buf4, sizeof(buf4), &len4),
                     0);
    assert_int_equal(kv_store_set_conf(f->s, 0, buf3, len3), 0);
    e.len = (uint32_t)len4;
    e.data = buf4;
    assert_int_equal(kv_store_write(f->s, &b), 0);
    f->last = 1;
    /* An older configuration does not replace a newer one. */
    assert_int_equal(kv_store_set_conf(f->s, 0, buf3, len3), 0);

    fx_reopen(f);
    assert_int_equal(kv_store_load(f->s, &st), 0);
    assert_true(st.has_conf);
    assert_int_equal(st.conf_index, 1);
    assert_int_equal(raft_membership_decode(st.conf_data, st.conf_len, &back),
                     0);
    assert_int_equal(back.n, 4);
    assert_int_equal(st.n_entries, 1);
    assert_int_equal(st.entries[0].type, RAFT_ENTRY_CONFIG);
    kv_state_free(&st);

    assert_true(asprintf(&snap, "%s/snap.db", f->dir) > 0);
    assert_int_equal(kv_snapshot_create(f->dir, &fsm, snap, &info), 0);
    assert_int_equal(
        kv_snapshot_conf(snap, &found, &got_index, got, sizeof(got), &got_len),
        0);
    assert_true(found);
    assert_int_equal(got_index, 1);
    assert_int_equal(got_len, len4);
    assert_memory_equal(got, buf4, len4);
    free(snap);
}

/* The state machine --------------------------------------------------- */

static void test_fsm_put_get_del(void **state)
{
    struct fx *f = *state;
    struct kv_sm_result res;
    struct kv_attr root;
    struct kv_attr a;
    char *big;
    struct kv_cmd c;

    res = put(f, "a/b/c", "hello");
    assert_int_equal(res.status, 0);
    /* Inode numbers come from the counter: a, b, then c. */
    assert_int_equal(res.value, KV_FIRST_INO + 2);
    assert_value(f, "a/b/c", "hello");
    assert_int_equal(kv_reader_getattr(f->r, ino_of(f, KV_ROOT_INO, "a"), &a),
                     0);
    assert_true(a.is_dir && a.mode == 0755 && a.nlink == 2);

    /* Replace keeps the inode. */
    res = put(f, "a/b/c", "bye");
    assert_int_equal(res.value, KV_FIRST_INO + 2);
    assert_value(f, "a/b/c", "bye");
    assert_int_equal(put(f, "a/b", "x").status, -EISDIR);
    assert_int_equal(put(f, "a/b/c/d", "x").status, -ENOTDIR);
    assert_int_equal(put(f, "a//b", "x").status, -EINVAL);
    assert_int_equal(put(f, ".ikada/x", "x").status, -EINVAL);
    assert_int_equal(put(f, "empty", "").status, 0);
    assert_value(f, "empty", "");

    /* The size limit: exactly max_bytes fits, one more does not. */
    big = malloc(4 * MIB + 1);
    assert_non_null(big);
    memset(big, 'z', 4 * MIB + 1);
    c = cmd_new(f, KV_OP_PUT);
    c.path = "big";
    c.path_len = 3;
    c.data = (const uint8_t *)big;
    c.data_len = 4 * MIB + 1;
    assert_int_equal(run(f, &c).status, -EFBIG);
    c.data_len = 4 * MIB;
    assert_int_equal(run(f, &c).status, 0);
    assert_int_equal(kv_reader_getattr(f->r, ino_of(f, KV_ROOT_INO, "big"), &a),
                     0);
    assert_int_equal(a.size, 4 * MIB);
    free(big);

    assert_int_equal(del(f, "a/b").status, -EISDIR);
    assert_int_equal(del(f, "nope").status, -ENOENT);
    assert_int_equal(del(f, "a/b/c/d").status, -ENOENT);
    res = del(f, "a/b/c");
    assert_int_equal(res.status, 0);
    assert_absent(f, "a/b/c");
    assert_int_equal(kv_reader_getattr(f->r, KV_ROOT_INO, &root), 0);
    assert_true(root.is_dir && root.mode == 0755);
}

static void test_fsm_create(void **state)
{
    struct fx *f = *state;
    struct kv_sm_result res;
    struct kv_attr a;
    struct kv_attr root;
    uint64_t ino;

    res = entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "f", 0100640, 0);
    assert_int_equal(res.status, 0);
    ino = res.value;
    assert_int_equal(ino, KV_FIRST_INO);
    assert_int_equal(kv_reader_getattr(f->r, ino, &a), 0);
    assert_true(!a.is_dir && a.mode == 0640 && a.size == 0 && a.nlink == 1);
    assert_int_equal(a.mtime_ns, f->clock);
    assert_int_equal(kv_reader_getattr(f->r, KV_ROOT_INO, &root), 0);
    assert_int_equal(root.mtime_ns, f->clock);
    assert_int_equal(root.ctime_ns, f->clock);

    /* Opening it again returns the same file. */
    res = entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "f", 0644, 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.value, ino);
    assert_int_equal(
        entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "f", 0644, KV_F_EXCL).status,
        -EEXIST);

    /* O_TRUNC empties it and updates its times. */
    assert_int_equal(wr(f, ino, 0, "data", 4).status, 0);
    res = entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "f", 0644, KV_F_TRUNC);
    assert_int_equal(res.status, 0);
    assert_int_equal(kv_reader_getattr(f->r, ino, &a), 0);
    assert_int_equal(a.size, 0);
    assert_int_equal(a.mtime_ns, f->clock);

    assert_int_equal(entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "d", 0700, 0).status,
                     0);
    assert_int_equal(
        entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "d", 0644, 0).status, -EISDIR);
    assert_int_equal(entry_op(f, KV_OP_CREATE, 999, "x", 0644, 0).status,
                     -ENOENT);
    assert_int_equal(entry_op(f, KV_OP_CREATE, ino, "x", 0644, 0).status,
                     -ENOTDIR);
    assert_int_equal(
        entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "a/b", 0644, 0).status, -EINVAL);
    assert_int_equal(
        entry_op(f, KV_OP_CREATE, KV_ROOT_INO, ".ikada", 0644, 0).status,
        -EINVAL);
    {
        char longname[IKD_MAX_NAME_BYTES + 2];
        memset(longname, 'l', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        assert_int_equal(
            entry_op(f, KV_OP_CREATE, KV_ROOT_INO, longname, 0644, 0).status,
            -ENAMETOOLONG);
    }
}

static void test_fsm_mkdir_rmdir_unlink(void **state)
{
    struct fx *f = *state;
    struct kv_sm_result res;
    struct kv_attr a;
    uint64_t d;

    res = entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "d", 040750, 0);
    assert_int_equal(res.status, 0);
    d = res.value;
    assert_int_equal(kv_reader_getattr(f->r, d, &a), 0);
    assert_true(a.is_dir && a.mode == 0750);
    assert_int_equal(entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "d", 0755, 0).status,
                     -EEXIST);
    assert_int_equal(entry_op(f, KV_OP_CREATE, d, "f", 0644, 0).status, 0);

    assert_int_equal(entry_op(f, KV_OP_RMDIR, KV_ROOT_INO, "d", 0, 0).status,
                     -ENOTEMPTY);
    assert_int_equal(entry_op(f, KV_OP_RMDIR, d, "f", 0, 0).status, -ENOTDIR);
    assert_int_equal(entry_op(f, KV_OP_RMDIR, d, "g", 0, 0).status, -ENOENT);
    assert_int_equal(entry_op(f, KV_OP_UNLINK, KV_ROOT_INO, "d", 0, 0).status,
                     -EISDIR);
    assert_int_equal(entry_op(f, KV_OP_UNLINK, d, "g", 0, 0).status, -ENOENT);

    res = entry_op(f, KV_OP_UNLINK, d, "f", 0, 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(kv_reader_getattr(f->r, d, &a), 0);
    assert_int_equal(a.mtime_ns, f->clock); /* its folder changed */
    assert_int_equal(entry_op(f, KV_OP_RMDIR, KV_ROOT_INO, "d", 0, 0).status,
                     0);
    assert_int_equal(kv_reader_getattr(f->r, d, &a), -ENOENT);
    /* Numbers are never reused. */
    res = entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "d", 0755, 0);
    assert_int_equal(res.value, d + 2);
}

static void test_fsm_rename(void **state)
{
    struct fx *f = *state;
    struct kv_attr a;
    uint64_t d1;
    uint64_t d2;
    uint64_t x;

    put(f, "d1/sub/x", "X");
    put(f, "d1/y", "Y");
    put(f, "d2/z", "Z");
    put(f, "e/keep", "K");
    entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "empty", 0755, 0);
    d1 = ino_of(f, KV_ROOT_INO, "d1");
    d2 = ino_of(f, KV_ROOT_INO, "d2");
    x = ino_of(f, ino_of(f, d1, "sub"), "x");

    /* File over file: replaced atomically, the inode moves. */
    assert_int_equal(ren(f, d1, "y", d2, "z", 0).status, 0);
    assert_value(f, "d2/z", "Y");
    assert_absent(f, "d1/y");
    assert_int_equal(kv_reader_getattr(f->r, d1, &a), 0);
    assert_int_equal(a.mtime_ns, f->clock);

    /* Onto itself: nothing happens. */
    assert_int_equal(ren(f, d2, "z", d2, "z", 0).status, 0);
    assert_value(f, "d2/z", "Y");

    /* Type clashes and missing entries. */
    assert_int_equal(ren(f, d2, "z", KV_ROOT_INO, "empty", 0).status, -EISDIR);
    assert_int_equal(ren(f, KV_ROOT_INO, "empty", d2, "z", 0).status, -ENOTDIR);
    assert_int_equal(ren(f, KV_ROOT_INO, "empty", KV_ROOT_INO, "e", 0).status,
                     -ENOTEMPTY);
    assert_int_equal(ren(f, d2, "nope", d1, "n", 0).status, -ENOENT);
    assert_int_equal(ren(f, d2, "z", 999, "n", 0).status, -ENOENT);
    assert_int_equal(ren(f, d2, "z", x, "n", 0).status, -ENOTDIR);
    assert_int_equal(ren(f, d2, "z", d1, "sub", KV_F_NOREPLACE).status,
                     -EEXIST);
    assert_int_equal(
        ren(f, d2, "z", d1, "n", KV_F_NOREPLACE | KV_F_EXCHANGE).status,
        -EINVAL);
    assert_int_equal(ren(f, d2, "z", d1, "n", KV_F_EXCHANGE).status, -ENOENT);

    /* A folder cannot move below itself. */
    assert_int_equal(
        ren(f, KV_ROOT_INO, "d1", ino_of(f, d1, "sub"), "d", 0).status,
        -EINVAL);
    assert_int_equal(ren(f, KV_ROOT_INO, "d1", d1, "d", 0).status, -EINVAL);

    /* A folder keeps its children: O(1), the inode is the same. */
    assert_int_equal(ren(f, KV_ROOT_INO, "d1", d2, "moved", 0).status, 0);
    assert_value(f, "d2/moved/sub/x", "X");
    assert_int_equal(ino_of(f, ino_of(f, d2, "moved"), "sub") != 0, 1);
    assert_absent(f, "d1/sub/x");

    /* A folder over an empty folder. */
    assert_int_equal(ren(f, d2, "moved", KV_ROOT_INO, "empty", 0).status, 0);
    assert_value(f, "empty/sub/x", "X");
    assert_int_equal(ino_of(f, KV_ROOT_INO, "empty"), d1);

    /* Exchange swaps a file and a folder. */
    assert_int_equal(
        ren(f, d2, "z", KV_ROOT_INO, "empty", KV_F_EXCHANGE).status, 0);
    assert_value(f, "empty", "Y");
    assert_value(f, "d2/z/sub/x", "X");
    assert_int_equal(ino_of(f, d2, "z"), d1);
    /* ... but not a folder with one of its own descendants. */
    assert_int_equal(
        ren(f, d2, "z", ino_of(f, d1, "sub"), "x", KV_F_EXCHANGE).status,
        -EINVAL);
    assert_int_equal(
        ren(f, ino_of(f, d1, "sub"), "x", d2, "z", KV_F_EXCHANGE).status,
        -EINVAL);
}

/* Keys stay within IKD_MAX_PATH_BYTES through the file-system operations
 * too: 16 folders of 250 bytes make a key of 16 * 251 - 1 = 4015 bytes,
 * so a name of 80 fits below them and one of 81 does not. */
static void test_fsm_entries_keep_keys_within_the_limit(void **state)
{
    struct fx *f = *state;
    char name[251];
    char leaf[82];
    uint64_t dir = KV_ROOT_INO;
    uint64_t top;

    memset(name, 'n', 250);
    name[250] = '\0';
    for (int i = 0; i < 16; i++) {
        struct kv_sm_result r = entry_op(f, KV_OP_MKDIR, dir, name, 0755, 0);

        assert_int_equal(r.status, 0);
        dir = r.value;
        if (i == 0) {
            top = dir;
        }
    }
    memset(leaf, 'l', 81);
    leaf[81] = '\0';
    assert_int_equal(entry_op(f, KV_OP_CREATE, dir, leaf, 0644, 0).status,
                     -ENAMETOOLONG);
    assert_int_equal(entry_op(f, KV_OP_MKDIR, dir, leaf, 0755, 0).status,
                     -ENAMETOOLONG);
    leaf[80] = '\0';
    assert_int_equal(entry_op(f, KV_OP_CREATE, dir, leaf, 0644, 0).status, 0);

    /* Moving the whole tree one level down would push that file over. */
    assert_int_equal(entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "a", 0755, 0).status,
                     0);
    assert_int_equal(
        ren(f, KV_ROOT_INO, name, ino_of(f, KV_ROOT_INO, "a"), name, 0).status,
        -ENAMETOOLONG);
    assert_int_equal(ino_of(f, KV_ROOT_INO, name), top);
}

static void test_fsm_write_append(void **state)
{
    struct fx *f = *state;
    struct kv_sm_result res;
    struct kv_cmd c;
    uint8_t buf[32];
    size_t n;
    uint64_t ino;
    uint64_t d;

    ino = entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "f", 0644, 0).value;
    res = wr(f, ino, 0, "hello", 5);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.value, 5);
    res = wr(f, ino, 1, "EL", 2);
    assert_int_equal(res.value, 5);
    assert_value(f, "f", "hELlo");

    /* A hole reads as zeros. */
    res = wr(f, ino, 8, "Z", 1);
    assert_int_equal(res.value, 9);
    assert_int_equal(kv_reader_read(f->r, ino, 0, sizeof(buf), buf, &n), 0);
    assert_int_equal(n, 9);
    assert_memory_equal(buf, "hELlo\0\0\0Z", 9);
    assert_int_equal(kv_reader_read(f->r, ino, 7, 1, buf, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(buf[0], 0);
    assert_int_equal(kv_reader_read(f->r, ino, 100, 4, buf, &n), 0);
    assert_int_equal(n, 0);

    c = cmd_new(f, KV_OP_APPEND);
    c.ino = ino;
    c.data = (const uint8_t *)"!!";
    c.data_len = 2;
    res = run(f, &c);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.value, 11);

    /* The limit is on the end of the write. */
    assert_int_equal(wr(f, ino, 4 * MIB - 1, "ab", 2).status, -EFBIG);
    assert_int_equal(wr(f, ino, UINT64_MAX, "ab", 2).status, -EFBIG);
    assert_int_equal(wr(f, ino, 4 * MIB - 1, "a", 1).status, 0);
    assert_int_equal(wr(f, 999, 0, "a", 1).status, -ENOENT);
    d = entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "d", 0755, 0).value;
    assert_int_equal(wr(f, d, 0, "a", 1).status, -EISDIR);
}

static void test_fsm_setattr(void **state)
{
    struct fx *f = *state;
    struct kv_sm_result res;
    struct kv_attr a;
    uint8_t buf[16];
    size_t n;
    uint64_t ino;
    uint64_t d;

    ino = put(f, "f", "abcdefgh").value;
    res = setattr(f, ino, KV_SET_SIZE, 3, 0, 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.value, 3);
    assert_value(f, "f", "abc");
    /* Extending again shows zeros, not the old bytes. */
    assert_int_equal(setattr(f, ino, KV_SET_SIZE, 6, 0, 0).status, 0);
    assert_int_equal(kv_reader_read(f->r, ino, 0, sizeof(buf), buf, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "abc\0\0\0", 6);
    assert_int_equal(wr(f, ino, 7, "x", 1).status, 0);
    assert_int_equal(kv_reader_read(f->r, ino, 0, sizeof(buf), buf, &n), 0);
    assert_memory_equal(buf, "abc\0\0\0\0x", 8);

    res = setattr(f, ino, KV_SET_MODE | KV_SET_MTIME, 0, 0107777, 42);
    assert_int_equal(res.status, 0);
    assert_int_equal(kv_reader_getattr(f->r, ino, &a), 0);
    assert_int_equal(a.mode, 07777);
    assert_int_equal(a.mtime_ns, 42);
    assert_int_equal(a.ctime_ns, f->clock);
    assert_int_equal(a.size, 8);

    assert_int_equal(setattr(f, ino, KV_SET_SIZE, 4 * MIB + 1, 0, 0).status,
                     -EFBIG);
    assert_int_equal(setattr(f, ino, KV_SET_SIZE, 4 * MIB, 0, 0).status, 0);
    assert_int_equal(kv_reader_read(f->r, ino, 4 * MIB - 2, 8, buf, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "\0\0", 2);
    assert_int_equal(setattr(f, ino, KV_SET_SIZE, 0, 0, 0).status, 0);
    assert_value(f, "f", "");
    assert_int_equal(setattr(f, 999, KV_SET_MODE, 0, 0644, 0).status, -ENOENT);
    d = entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "d", 0755, 0).value;
    assert_int_equal(setattr(f, d, KV_SET_SIZE, 0, 0, 0).status, -EISDIR);
    assert_int_equal(setattr(f, d, KV_SET_MODE, 0, 0700, 0).status, 0);
    assert_int_equal(kv_reader_getattr(f->r, d, &a), 0);
    assert_int_equal(a.mode, 0700);
}

static void test_fsm_malformed_command_is_a_result(void **state)
{
    struct fx *f = *state;
    struct raft_entry e = {.term = 1,
                           .type = RAFT_ENTRY_COMMAND,
                           .len = 3,
                           .data = (uint8_t *)"bad"};
    struct kv_sm_result res;
    struct kv_batch b = {.log_from = f->last + 1,
                         .entries = &e,
                         .n_entries = 1,
                         .apply_from = f->last + 1,
                         .apply = &e,
                         .n_apply = 1,
                         .results = &res};

    assert_int_equal(kv_store_write(f->s, &b), 0);
    assert_int_equal(res.status, IKD_EMALFORMED);
}

/* Sessions and compare-and-set --------------------------------------- */

/* A command c of session seq, applied once more on every call. */
static struct kv_sm_result in_session(struct fx *f,
                                      struct kv_cmd c,
                                      uint64_t session,
                                      uint64_t seq)
{
    c.session = session;
    c.seq = seq;
    return run(f, &c);
}

static struct kv_cmd put_cmd(struct fx *f, const char *key, const char *v)
{
    struct kv_cmd c = cmd_new(f, KV_OP_PUT);

    c.path = key;
    c.path_len = strlen(key);
    c.data = (const uint8_t *)v;
    c.data_len = strlen(v);
    return c;
}

static struct kv_cmd append_cmd(struct fx *f, uint64_t ino, const char *v)
{
    struct kv_cmd c = cmd_new(f, KV_OP_APPEND);

    c.ino = ino;
    c.data = (const uint8_t *)v;
    c.data_len = strlen(v);
    return c;
}

static struct kv_sm_result cas(struct fx *f,
                               const char *key,
                               const char *expect,
                               const char *v)
{
    struct kv_cmd c = put_cmd(f, key, v);

    c.op = KV_OP_CAS;
    if (expect == NULL) {
        c.flags = KV_F_ABSENT;
    } else {
        c.expect = (const uint8_t *)expect;
        c.expect_len = strlen(expect);
    }
    return run(f, &c);
}

/* Apply n commands in one batch, as a follower catching up does. */
static void run_batch(struct fx *f, const struct kv_cmd *cmds, size_t n)
{
    struct raft_entry *e = calloc(n, sizeof(*e));
    struct kv_sm_result *res = calloc(n, sizeof(*res));
    struct kv_batch b = {0};

    assert_non_null(e);
    assert_non_null(res);
    for (size_t i = 0; i < n; i++) {
        uint8_t *buf;
        size_t len;

        assert_int_equal(kv_cmd_encode(&cmds[i], &buf, &len), 0);
        e[i].term = f->term;
        e[i].type = RAFT_ENTRY_COMMAND;
        e[i].len = (uint32_t)len;
        e[i].data = buf;
    }
    b.log_from = f->last + 1;
    b.entries = e;
    b.n_entries = n;
    b.apply_from = f->last + 1;
    b.apply = e;
    b.n_apply = n;
    b.results = res;
    assert_int_equal(kv_store_write(f->s, &b), 0);
    f->last += n;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(res[i].status, 0);
        free(e[i].data);
    }
    free(e);
    free(res);
}

static void test_cmd_expect_round_trip(void **state)
{
    struct kv_cmd c = full_cmd();
    struct kv_cmd d;
    uint8_t *buf;
    size_t len;

    (void)state;
    c.op = KV_OP_CAS;
    c.expect = (const uint8_t *)"old";
    c.expect_len = 3;
    assert_int_equal(kv_cmd_encode(&c, &buf, &len), 0);
    assert_int_equal(kv_cmd_decode(buf, len, &d), 0);
    assert_int_equal(d.op, KV_OP_CAS);
    assert_int_equal(d.expect_len, 3);
    assert_memory_equal(d.expect, "old", 3);
    assert_int_equal(d.data_len, c.data_len);
    free(buf);
    /* Version 1 entries (no expect field) still decode, with none. */
    assert_int_equal(decode_packed(18, -1, 0, false), 0);
}

static void test_fsm_cas(void **state)
{
    struct fx *f = *state;
    struct kv_sm_result res;

    res = cas(f, "a/k", NULL, "one");
    assert_int_equal(res.status, 0);
    assert_value(f, "a/k", "one");
    assert_int_equal(res.value, ino_of(f, ino_of(f, KV_ROOT_INO, "a"), "k"));
    assert_int_equal(cas(f, "a/k", NULL, "two").status, KV_CAS_MISMATCH);
    assert_int_equal(cas(f, "a/k", "on", "two").status, KV_CAS_MISMATCH);
    assert_int_equal(cas(f, "a/k", "onex", "two").status, KV_CAS_MISMATCH);
    assert_value(f, "a/k", "one");
    assert_int_equal(cas(f, "a/k", "one", "two").status, 0);
    assert_value(f, "a/k", "two");
    assert_int_equal(cas(f, "a/k", "two", "").status, 0);
    assert_int_equal(cas(f, "a/k", "", "three").status, 0);
    assert_value(f, "a/k", "three");

    /* A missing key, or one below a file, matches only "absent". */
    assert_int_equal(cas(f, "b", "x", "y").status, KV_CAS_MISMATCH);
    assert_absent(f, "b");
    assert_int_equal(cas(f, "a/k/x", "x", "y").status, KV_CAS_MISMATCH);
    assert_int_equal(cas(f, "a", "x", "y").status, -EISDIR);
    assert_int_equal(cas(f, "a", NULL, "y").status, -EISDIR);
    assert_int_equal(cas(f, "a//b", NULL, "y").status, -EINVAL);
}

static void test_session_duplicate_returns_stored_result(void **state)
{
    struct fx *f = *state;
    struct kv_sm_result first;
    struct kv_sm_result again;
    struct kv_cmd c = put_cmd(f, "k", "first");

    first = in_session(f, c, 7, 1);
    assert_int_equal(first.status, 0);
    /* Another client changes the key; the retry must not undo that. */
    assert_int_equal(put(f, "k", "other").status, 0);
    again = in_session(f, c, 7, 1);
    assert_int_equal(again.status, 0);
    assert_int_equal(again.value, first.value);
    assert_value(f, "k", "other");

    /* A refusal is a result too: it stays the answer to its seq. */
    c = put_cmd(f, "k/x", "v");
    assert_int_equal(in_session(f, c, 7, 2).status, -ENOTDIR);
    assert_int_equal(del(f, "k").status, 0);
    assert_int_equal(in_session(f, c, 7, 2).status, -ENOTDIR);
    assert_absent(f, "k/x");

    /* An older seq is refused as stale; another session is independent. */
    assert_int_equal(in_session(f, put_cmd(f, "k", "old"), 7, 1).status,
                     KV_SESSION_STALE);
    assert_absent(f, "k");
    assert_int_equal(in_session(f, put_cmd(f, "k", "s8"), 8, 1).status, 0);
    assert_value(f, "k", "s8");
    /* Session 0 means none: every command applies. */
    c = put_cmd(f, "k", "none");
    assert_int_equal(in_session(f, c, 0, 5).status, 0);
    assert_int_equal(in_session(f, c, 0, 5).status, 0);
}

static void test_session_mkdir_append_rename_once(void **state)
{
    struct fx *f = *state;
    struct kv_sm_result res;
    struct kv_cmd mk = cmd_new(f, KV_OP_MKDIR);
    struct kv_cmd ap;
    struct kv_cmd rn;
    uint64_t d;
    uint64_t ino;

    mk.parent = KV_ROOT_INO;
    mk.path = "d";
    mk.path_len = 1;
    mk.mode = 0755;
    res = in_session(f, mk, 42, 1);
    assert_int_equal(res.status, 0);
    d = res.value;
    res = in_session(f, mk, 42, 1);
    assert_int_equal(res.status, 0); /* not -EEXIST */
    assert_int_equal(res.value, d);

    ino = entry_op(f, KV_OP_CREATE, d, "f", 0644, 0).value;
    ap = append_cmd(f, ino, "ab");
    assert_int_equal(in_session(f, ap, 42, 2).value, 2);
    assert_int_equal(in_session(f, ap, 42, 2).value, 2);
    assert_int_equal(in_session(f, ap, 42, 2).value, 2);
    assert_value(f, "d/f", "ab");

    rn = cmd_new(f, KV_OP_RENAME);
    rn.parent = d;
    rn.path = "f";
    rn.path_len = 1;
    rn.new_parent = KV_ROOT_INO;
    rn.new_name = "g";
    rn.new_name_len = 1;
    assert_int_equal(in_session(f, rn, 42, 3).status, 0);
    assert_int_equal(in_session(f, rn, 42, 3).status, 0); /* not -ENOENT */
    assert_value(f, "g", "ab");
    assert_absent(f, "d/f");
    /* The append retried after the rename is still answered, not redone. */
    assert_int_equal(in_session(f, ap, 42, 2).status, KV_SESSION_STALE);
    assert_value(f, "g", "ab");
}

static void test_session_expires_by_log_time(void **state)
{
    struct fx *f = *state;
    uint64_t ino = entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "f", 0644, 0).value;
    struct kv_cmd a = append_cmd(f, ino, "a");
    struct kv_cmd b;
    struct kv_cmd later;

    assert_int_equal(in_session(f, a, 1, 1).value, 1);
    f->clock += KV_SESSION_TTL_NS / 2;
    b = append_cmd(f, ino, "b");
    assert_int_equal(in_session(f, b, 2, 1).value, 2);

    /* A command stamped earlier does not move the log clock back. */
    later = put_cmd(f, "x", "x");
    later.time_ns = f->clock - KV_SESSION_TTL_NS;
    assert_int_equal(run(f, &later).status, 0);
    assert_int_equal(in_session(f, a, 1, 1).value, 1);

    /* Past the TTL of session 1 only: its retry applies again. */
    f->clock += KV_SESSION_TTL_NS / 2 + 1;
    assert_int_equal(put(f, "tick", "").status, 0);
    assert_int_equal(in_session(f, b, 2, 1).value, 2);
    assert_value(f, "f", "ab");
    assert_int_equal(in_session(f, a, 1, 1).value, 3);
    assert_value(f, "f", "aba");
}

static void test_session_table_is_bounded(void **state)
{
    struct fx *f = *state;
    uint64_t ino = entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "f", 0644, 0).value;
    struct kv_cmd a = append_cmd(f, ino, "a");
    struct kv_cmd b = append_cmd(f, ino, "b");
    struct kv_cmd *many = calloc(KV_SESSION_MAX, sizeof(*many));

    assert_non_null(many);
    assert_int_equal(in_session(f, a, 1, 1).value, 1);
    assert_int_equal(in_session(f, b, 2, 1).value, 2);
    /* A retry counts as a use: session 2 is now the least recent. */
    assert_int_equal(in_session(f, a, 1, 1).value, 1);

    /* KV_SESSION_MAX - 2 more sessions fill the table exactly. */
    for (size_t i = 0; i < KV_SESSION_MAX - 1; i++) {
        many[i] = put_cmd(f, "k", "v");
        many[i].session = 1000 + i;
        many[i].seq = 1;
    }
    run_batch(f, many, KV_SESSION_MAX - 2);
    assert_int_equal(in_session(f, b, 2, 1).value, 2);
    assert_int_equal(in_session(f, a, 1, 1).value, 1);
    assert_value(f, "f", "ab");

    /* One more evicts the least recently used one: session 1000.  Its
     * retry applies again, as a new session that evicts session 1001;
     * that of session 1002 is still answered. */
    run_batch(f, &many[KV_SESSION_MAX - 2], 1);
    assert_int_equal(in_session(f, b, 2, 1).value, 2);
    assert_int_equal(in_session(f, a, 1, 1).value, 1);
    assert_int_equal(in_session(f, append_cmd(f, ino, "c"), 1000, 1).value, 3);
    assert_int_equal(in_session(f, append_cmd(f, ino, "d"), 1001, 1).value, 4);
    assert_int_equal(in_session(f, append_cmd(f, ino, "e"), 1003, 1).value,
                     ino_of(f, KV_ROOT_INO, "k"));
    assert_value(f, "f", "abcd");
    free(many);
}

/* Writing 4 MiB in 4 KiB chunks, one transaction each, as a copy does. */
static void test_fsm_large_file_in_chunks(void **state)
{
    struct fx *f = *state;
    uint8_t chunk[4096];
    uint64_t ino;
    uint8_t *v;
    size_t len;
    struct timespec t0;
    struct timespec t1;

    ino = entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "big", 0644, 0).value;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint32_t i = 0; i < 4 * MIB / sizeof(chunk); i++) {
        struct kv_sm_result res;
        memset(chunk, (int)(i & 0xff), sizeof(chunk));
        res = wr(f, ino, (uint64_t)i * sizeof(chunk), chunk, sizeof(chunk));
        assert_int_equal(res.status, 0);
        assert_int_equal(res.value, (uint64_t)(i + 1) * sizeof(chunk));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    print_message("4 MiB in 4 KiB writes: %.2f s\n",
                  (double)(t1.tv_sec - t0.tv_sec) +
                      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);

    assert_int_equal(kv_reader_get(f->r, "big", 3, &v, &len), 0);
    assert_int_equal(len, 4 * MIB);
    for (size_t i = 0; i < len; i += sizeof(chunk)) {
        assert_int_equal(v[i], (i / sizeof(chunk)) & 0xff);
        assert_int_equal(v[i + sizeof(chunk) - 1], (i / sizeof(chunk)) & 0xff);
    }
    free(v);
}

/* Compaction and snapshots (Raft 7) ---------------------------------- */

static void load(struct fx *f, struct kv_state *st)
{
    assert_int_equal(kv_store_load(f->s, st), 0);
}

/* Compact the log up to entry to (of term to_term) and record the
 * snapshot point snap_index, snap_term. */
static void compact(struct fx *f,
                    raft_index_t to,
                    raft_term_t to_term,
                    raft_index_t snap_index,
                    raft_term_t snap_term)
{
    struct kv_batch b = {.compact_to = to,
                         .compact_term = to_term,
                         .snap_index = snap_index,
                         .snap_term = snap_term};

    assert_int_equal(kv_store_write(f->s, &b), 0);
}

/* Entry e carries, at term, a put of key. */
static void assert_put_entry(const struct raft_entry *e,
                             raft_term_t term,
                             const char *key)
{
    struct kv_cmd c;

    assert_int_equal(e->term, term);
    assert_int_equal(e->type, RAFT_ENTRY_COMMAND);
    assert_int_equal(kv_cmd_decode(e->data, e->len, &c), 0);
    assert_int_equal(c.op, KV_OP_PUT);
    assert_int_equal(c.path_len, strlen(key));
    assert_memory_equal(c.path, key, c.path_len);
}

/* Puts k1..kn, entry i at the term terms[i - 1]. */
static void put_terms(struct fx *f, const raft_term_t *terms, int n)
{
    char key[16];

    for (int i = 1; i <= n; i++) {
        f->term = terms[i - 1];
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(put(f, key, key).status, 0);
    }
}

static void test_store_compact_drops_applied_prefix(void **state)
{
    static const raft_term_t terms[] = {1, 1, 2, 2, 3, 3};
    struct fx *f = *state;
    struct kv_state st;

    put_terms(f, terms, 6);
    /* Raft 7: the log keeps a few entries behind the snapshot point (5)
     * for followers only a little behind; prev_term is that of entry 4,
     * the last one compacted. */
    compact(f, 4, 2, 5, 3);
    for (int pass = 0; pass < 2; pass++) {
        load(f, &st);
        assert_int_equal(st.applied, 6);
        assert_int_equal(st.first_index, 5);
        assert_int_equal(st.prev_term, 2);
        assert_int_equal(st.snap_index, 5);
        assert_int_equal(st.snap_term, 3);
        assert_int_equal(st.n_entries, 2);
        assert_put_entry(&st.entries[0], 3, "k5");
        assert_put_entry(&st.entries[1], 3, "k6");
        kv_state_free(&st);
        fx_reopen(f); /* the second pass reads it back from disk */
    }

    /* The state is untouched and the log goes on after its last entry. */
    assert_value(f, "k1", "k1");
    assert_value(f, "k6", "k6");
    assert_int_equal(put(f, "k7", "k7").status, 0);
    load(f, &st);
    assert_int_equal(st.applied, 7);
    assert_int_equal(st.first_index, 5);
    assert_int_equal(st.n_entries, 3);
    assert_put_entry(&st.entries[2], 3, "k7");
    kv_state_free(&st);
}

static void test_store_compact_whole_log_loads_empty(void **state)
{
    static const raft_term_t terms[] = {1, 2, 2, 3};
    struct fx *f = *state;
    struct kv_state st;

    put_terms(f, terms, 3);
    compact(f, 3, 2, 3, 2);
    for (int pass = 0; pass < 2; pass++) {
        load(f, &st);
        assert_int_equal(st.applied, 3);
        assert_int_equal(st.n_entries, 0);
        assert_int_equal(st.first_index, 4);
        assert_int_equal(st.prev_term, 2);
        assert_int_equal(st.snap_index, 3);
        assert_int_equal(st.snap_term, 2);
        kv_state_free(&st);
        fx_reopen(f);
    }

    /* The next entry is index 4, and a second compaction moves on. */
    f->term = 3;
    assert_int_equal(put(f, "k4", "k4").status, 0);
    load(f, &st);
    assert_int_equal(st.first_index, 4);
    assert_int_equal(st.n_entries, 1);
    assert_put_entry(&st.entries[0], 3, "k4");
    kv_state_free(&st);
    compact(f, 4, 3, 4, 3);
    fx_reopen(f);
    load(f, &st);
    assert_int_equal(st.first_index, 5);
    assert_int_equal(st.prev_term, 3);
    assert_int_equal(st.n_entries, 0);
    kv_state_free(&st);
    assert_value(f, "k3", "k3");
}

/* One line a row of each query on DIR/ikada.db, every value as its type
 * and bytes in hex: equal text means equal rows. */
static char *db_dump(const char *dir, const char *const *sql, size_t n)
{
    char *path = db_path(dir);
    char *out = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    sqlite3 *db;

    assert_non_null(fp);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *st;
        int rc;

        assert_int_equal(sqlite3_prepare_v2(db, sql[i], -1, &st, NULL),
                         SQLITE_OK);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            for (int c = 0; c < sqlite3_column_count(st); c++) {
                int type = sqlite3_column_type(st, c);
                const uint8_t *p = sqlite3_column_blob(st, c);
                int bytes = sqlite3_column_bytes(st, c);

                fprintf(fp, " %d:", type);
                for (int k = 0; k < bytes; k++) {
                    fprintf(fp, "%02x", p[k]);
                }
            }
            fputc('\n', fp);
        }
        assert_int_equal(rc, SQLITE_DONE);
        sqlite3_finalize(st);
        fprintf(fp, "-- %s\n", sql[i]);
    }
    sqlite3_close(db);
    fclose(fp);
    free(path);
    return out;
}

/* The state machine's state: what a snapshot carries. */
static char *fsm_dump(const char *dir)
{
    static const char *const sql[] = {
        "SELECT * FROM inode ORDER BY ino",
        "SELECT * FROM content ORDER BY ino",
        "SELECT * FROM session ORDER BY id",
        "SELECT * FROM meta WHERE key IN ('next_ino', 'clock_ns') "
        "ORDER BY key",
    };

    return db_dump(dir, sql, sizeof(sql) / sizeof(sql[0]));
}

/* Everything durable: schema, state machine, raft meta and log. */
static char *store_dump(const char *dir)
{
    static const char *const sql[] = {
        "SELECT type, name, sql FROM sqlite_master ORDER BY name",
        "SELECT * FROM inode ORDER BY ino",
        "SELECT * FROM content ORDER BY ino",
        "SELECT * FROM session ORDER BY id",
        "SELECT * FROM meta ORDER BY key",
        "SELECT * FROM log ORDER BY idx",
    };

    return db_dump(dir, sql, sizeof(sql) / sizeof(sql[0]));
}

/* Equal dumps, or a failure that shows where they first differ. */
static void assert_same_rows(const char *got, const char *want)
{
    size_t i = 0;
    size_t row = 0;

    while (got[i] != '\0' && got[i] == want[i]) {
        row = got[i] == '\n' ? i + 1 : row;
        i++;
    }
    if (got[i] != want[i]) {
        print_error("rows differ:\n got: %.160s\nwant: %.160s\n", got + row,
                    want + row);
        fail();
    }
}

/* Folders, files with a hole and a large body, and a session, one command
 * at a time over two terms.  Returns the file the session appended to. */
static uint64_t fill_tree(struct fx *f)
{
    uint8_t big[40000];
    uint64_t d;
    uint64_t ino;
    uint64_t big_ino;

    assert_int_equal(put(f, "a/b/c", "hello").status, 0);
    d = entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "d", 0700, 0).value;
    ino = entry_op(f, KV_OP_CREATE, d, "f", 0640, 0).value;
    assert_int_equal(wr(f, ino, 4, "tail", 4).status, 0);
    assert_int_equal(in_session(f, append_cmd(f, ino, "+"), 7, 1).value, 9);
    f->term = 2;
    for (size_t i = 0; i < sizeof(big); i++) {
        big[i] = (uint8_t)(i * 7);
    }
    big_ino = entry_op(f, KV_OP_CREATE, KV_ROOT_INO, "big", 0644, 0).value;
    assert_int_equal(wr(f, big_ino, 0, big, sizeof(big)).status, 0);
    assert_int_equal(entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "e", 0755, 0).status,
                     0);
    return ino;
}

static char *file_in(const char *dir, const char *name)
{
    char *p;

    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

/* kv_snapshot_check() on the file at path, attached to a connection of
 * its own. */
static int snapshot_check_file(const char *path,
                               raft_index_t index,
                               raft_term_t term)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int rv;

    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "ATTACH ?1 AS s", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    rv = kv_snapshot_check(db, "s", index, term);
    sqlite3_close(db);
    return rv;
}

/* Install the snapshot at path as index and term, in a batch that also
 * moves the node to that term and, when c is not NULL, appends c at the
 * next index (at f->term) and applies it into *res.  Returns what
 * kv_store_write() does. */
static int install(struct fx *f,
                   const char *path,
                   raft_index_t index,
                   raft_term_t term,
                   const struct kv_cmd *c,
                   struct kv_sm_result *res)
{
    struct raft_entry e = {.term = f->term, .type = RAFT_ENTRY_COMMAND};
    struct kv_batch b = {.hard_state = true,
                         .term = term,
                         .install_path = path,
                         .install_index = index,
                         .install_term = term};
    uint8_t *buf = NULL;
    size_t len;
    int rv;

    if (c != NULL) {
        assert_int_equal(kv_cmd_encode(c, &buf, &len), 0);
        e.len = (uint32_t)len;
        e.data = buf;
        b.log_from = index + 1;
        b.entries = &e;
        b.n_entries = 1;
        b.apply_from = index + 1;
        b.apply = &e;
        b.n_apply = 1;
        b.results = res;
    }
    rv = kv_store_write(f->s, &b);
    if (rv == 0) {
        f->last = index + (c != NULL ? 1 : 0);
    }
    free(buf);
    return rv;
}

static void test_snapshot_create_describes_applied_point(void **state)
{
    struct fx *f = *state;
    char *path = file_in(f->dir, "snap");
    struct kv_snapshot_info info;
    struct stat sb;
    uint64_t size;
    uint32_t crc;
    uint8_t *bytes;
    size_t len;

    fill_tree(f);
    f->term = 4;
    assert_int_equal(put(f, "last", "x").status, 0);
    assert_int_equal(kv_snapshot_create(f->dir, &fsm, path, &info), 0);
    assert_int_equal(info.index, f->last);
    assert_int_equal(info.term, 4);

    /* The description names the file's bytes. */
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(info.size_bytes, (uint64_t)sb.st_size);
    assert_int_equal(kv_file_crc(path, &size, &crc), 0);
    assert_int_equal(size, info.size_bytes);
    assert_int_equal(crc, info.crc);
    bytes = slurp(path, &len);
    assert_int_equal(crc32(0L, bytes, (uInt)len), info.crc);
    free(bytes);

    assert_int_equal(snapshot_check_file(path, info.index, info.term), 0);
    assert_int_equal(snapshot_check_file(path, info.index + 1, info.term),
                     IKD_ECORRUPT);
    assert_int_equal(snapshot_check_file(path, info.index, info.term - 1),
                     IKD_ECORRUPT);
    free(path);
}

static void test_snapshot_create_of_compacted_log_takes_start_term(void **state)
{
    static const raft_term_t terms[] = {1, 2, 5};
    struct fx *f = *state;
    char *path = file_in(f->dir, "snap");
    struct kv_snapshot_info info;

    put_terms(f, terms, 3);
    compact(f, 3, 5, 3, 5);
    assert_int_equal(kv_snapshot_create(f->dir, &fsm, path, &info), 0);
    assert_int_equal(info.index, 3);
    assert_int_equal(info.term, 5);
    assert_int_equal(snapshot_check_file(path, 3, 5), 0);
    free(path);
}

static void test_snapshot_create_refuses_empty_state(void **state)
{
    struct fx *f = *state;
    char *path = file_in(f->dir, "snap");
    struct kv_snapshot_info info;

    /* Nothing applied yet: no point to describe, and no file left. */
    assert_int_equal(kv_snapshot_create(f->dir, &fsm, path, &info), -EAGAIN);
    assert_int_equal(access(path, F_OK), -1);
    free(path);
}

static void test_snapshot_install_reproduces_state(void **state)
{
    struct fx *a = *state;
    struct fx *b = fx_new();
    char *path = file_in(a->dir, "snap");
    struct kv_snapshot_info info;
    struct kv_sm_result res_a;
    struct kv_sm_result res_b;
    struct kv_state st;
    struct kv_cmd next;
    uint8_t buf[16];
    size_t n;
    uint64_t ino;
    char *want;
    char *got;

    ino = fill_tree(a);
    assert_int_equal(kv_snapshot_create(a->dir, &fsm, path, &info), 0);
    assert_int_equal(info.index, a->last);

    /* Both apply the same command right after the snapshot point.  It is
     * stamped before the log clock, which stays as the snapshot has it. */
    next = put_cmd(a, "a/after", "snap");
    next.time_ns -= 5000;
    res_a = run(a, &next);
    b->term = a->term;
    assert_int_equal(install(b, path, info.index, info.term, &next, &res_b), 0);
    assert_int_equal(res_b.status, res_a.status);
    assert_int_equal(res_b.value, res_a.value);
    want = fsm_dump(a->dir);
    got = fsm_dump(b->dir);
    assert_same_rows(got, want);
    free(got);

    for (int pass = 0; pass < 2; pass++) {
        load(b, &st);
        assert_int_equal(st.term, info.term);
        assert_int_equal(st.applied, info.index + 1);
        assert_int_equal(st.first_index, info.index + 1);
        assert_int_equal(st.prev_term, info.term);
        assert_int_equal(st.snap_index, info.index);
        assert_int_equal(st.snap_term, info.term);
        assert_int_equal(st.n_entries, 1);
        assert_put_entry(&st.entries[0], a->term, "a/after");
        kv_state_free(&st);
        fx_reopen(b);
    }
    assert_value(b, "a/b/c", "hello");
    assert_value(b, "a/after", "snap");
    assert_int_equal(kv_reader_read(b->r, ino, 0, sizeof(buf), buf, &n), 0);
    assert_int_equal(n, 9);
    assert_memory_equal(buf, "\0\0\0\0tail+", 9);

    /* The sessions came along: a retry is answered, not applied again. */
    b->clock = a->clock;
    assert_int_equal(in_session(b, append_cmd(b, ino, "+"), 7, 1).value, 9);
    assert_int_equal(kv_reader_read(b->r, ino, 0, sizeof(buf), buf, &n), 0);
    assert_int_equal(n, 9);
    free(want);
    free(path);
    fx_free(b);
}

static void test_snapshot_install_replaces_whole_log(void **state)
{
    struct fx *a = *state;
    struct fx *b = fx_new();
    char *path = file_in(a->dir, "snap");
    struct raft_entry e[12];
    struct kv_sm_result res[2];
    struct kv_batch batch = {.log_from = 1,
                             .entries = e,
                             .n_entries = 12,
                             .apply_from = 1,
                             .apply = e,
                             .n_apply = 2,
                             .results = res};
    struct kv_snapshot_info info;
    struct kv_state st;

    for (size_t i = 0; i < 12; i++) {
        e[i] = (struct raft_entry){.term = 1, .type = RAFT_ENTRY_NOOP};
    }
    assert_int_equal(kv_store_write(b->s, &batch), 0);
    fill_tree(a);
    assert_int_equal(kv_snapshot_create(a->dir, &fsm, path, &info), 0);
    assert_true(info.index > 2 && info.index < 12);

    /* Entries past the snapshot point go too: the leader sends them. */
    assert_int_equal(install(b, path, info.index, info.term, NULL, NULL), 0);
    load(b, &st);
    assert_int_equal(st.applied, info.index);
    assert_int_equal(st.first_index, info.index + 1);
    assert_int_equal(st.prev_term, info.term);
    assert_int_equal(st.n_entries, 0);
    kv_state_free(&st);

    b->term = info.term;
    assert_int_equal(put(b, "k", "v").status, 0);
    fx_reopen(b);
    load(b, &st);
    assert_int_equal(st.applied, info.index + 1);
    assert_int_equal(st.first_index, info.index + 1);
    assert_int_equal(st.n_entries, 1);
    kv_state_free(&st);
    assert_value(b, "k", "v");
    assert_value(b, "a/b/c", "hello");
    free(path);
    fx_free(b);
}

/* Installs of files that are not the snapshot they name: the snapshot at
 * another index or term, noise, half of it, an empty file, a store's own
 * database, no file at all; and the code each returns (0: any negative
 * one). */
enum { FILE_SNAP, FILE_JUNK, FILE_CUT, FILE_EMPTY, FILE_STORE, FILE_MISSING };
static const struct
{
    int file;
    int index_delta;
    int term_delta;
    int want;
} bad_installs[] = {
    {FILE_SNAP, 1, 0, IKD_ECORRUPT},  {FILE_SNAP, -1, 0, IKD_ECORRUPT},
    {FILE_SNAP, 0, 1, IKD_ECORRUPT},  {FILE_SNAP, 0, -1, IKD_ECORRUPT},
    {FILE_JUNK, 0, 0, IKD_ECORRUPT},  {FILE_CUT, 0, 0, IKD_ECORRUPT},
    {FILE_EMPTY, 0, 0, IKD_ECORRUPT}, {FILE_STORE, 0, 0, IKD_ECORRUPT},
    {FILE_MISSING, 0, 0, 0},
};

static void test_snapshot_install_refuses_bad_file(void **state)
{
    struct fx *a = *state;
    struct fx *b = fx_new();
    char *paths[] = {
        file_in(a->dir, "snap"), file_in(b->dir, "junk"),
        file_in(b->dir, "cut"),  file_in(b->dir, "empty"),
        db_path(a->dir),         file_in(b->dir, "missing"),
    };
    const char *good = paths[FILE_SNAP];
    struct kv_snapshot_info info;
    struct kv_sm_result res;
    struct kv_cmd next;
    uint8_t noise[8192];
    unsigned seed = 99;
    uint8_t *bytes;
    size_t len;
    char *before;

    fill_tree(a);
    assert_int_equal(kv_snapshot_create(a->dir, &fsm, good, &info), 0);
    assert_int_equal(put(b, "mine", "1").status, 0);
    assert_int_equal(put(b, "mine2", "2").status, 0);
    assert_true(info.index > b->last + 1);
    for (size_t i = 0; i < sizeof(noise); i++) {
        noise[i] = (uint8_t)rand_r(&seed);
    }
    write_file(paths[FILE_JUNK], noise, sizeof(noise));
    bytes = slurp(good, &len);
    write_file(paths[FILE_CUT], bytes, len / 2);
    free(bytes);
    write_file(paths[FILE_EMPTY], "", 0);

    before = store_dump(b->dir);
    next = put_cmd(b, "late", "x");
    for (size_t i = 0; i < sizeof(bad_installs) / sizeof(bad_installs[0]);
         i++) {
        raft_index_t index =
            (raft_index_t)((int64_t)info.index + bad_installs[i].index_delta);
        raft_term_t term =
            (raft_term_t)((int64_t)info.term + bad_installs[i].term_delta);
        int rv =
            install(b, paths[bad_installs[i].file], index, term, &next, &res);
        char *after;

        if (bad_installs[i].want != 0) {
            assert_int_equal(rv, bad_installs[i].want);
        }
        assert_true(rv < 0);
        after = store_dump(b->dir);
        assert_same_rows(after, before);
        free(after);
        assert_int_equal(b->last, 2);
    }
    assert_value(b, "mine", "1");
    assert_absent(b, "late");

    /* The store goes on: the right file at the right point installs. */
    assert_int_equal(install(b, good, info.index, info.term, &next, &res), 0);
    assert_int_equal(res.status, 0);
    assert_absent(b, "mine");
    assert_value(b, "late", "x");
    free(before);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        free(paths[i]);
    }
    fx_free(b);
}

/* A copy of the snapshot at from, without one of its tables. */
static void snapshot_without(const char *from, const char *to, const char *t)
{
    uint8_t *bytes;
    size_t len;
    sqlite3 *db;
    char sql[64];

    bytes = slurp(from, &len);
    write_file(to, bytes, len);
    free(bytes);
    snprintf(sql, sizeof(sql), "DROP TABLE %s", t);
    assert_int_equal(sqlite3_open(to, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_snapshot_install_failing_midway_rolls_back(void **state)
{
    /* In the order the state machine restores them: a missing table
     * fails after the ones before it were already replaced. */
    static const char *const tables[] = {"inode", "content", "session",
                                         "fsm_meta"};
    struct fx *a = *state;
    struct fx *b = fx_new();
    char *good = file_in(a->dir, "snap");
    char *bad = file_in(b->dir, "bad");
    struct kv_snapshot_info info;
    struct kv_sm_result res;
    struct kv_cmd next;
    char *before;

    fill_tree(a);
    assert_int_equal(kv_snapshot_create(a->dir, &fsm, good, &info), 0);
    assert_int_equal(put(b, "mine/x", "1").status, 0);
    assert_int_equal(in_session(b, put_cmd(b, "s", "v"), 3, 1).status, 0);
    before = store_dump(b->dir);
    next = put_cmd(b, "late", "x");

    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        char *after;

        snapshot_without(good, bad, tables[i]);
        /* The point is right: the failure is in the restore itself. */
        assert_int_equal(snapshot_check_file(bad, info.index, info.term), 0);
        assert_true(install(b, bad, info.index, info.term, &next, &res) < 0);
        after = store_dump(b->dir);
        assert_same_rows(after, before);
        free(after);
    }
    assert_value(b, "mine/x", "1");
    assert_int_equal(install(b, good, info.index, info.term, &next, &res), 0);
    assert_value(b, "a/b/c", "hello");
    free(before);
    free(good);
    free(bad);
    fx_free(b);
}

/* A snapshot operation that stops, once its read of the state has begun,
 * until the test lets it go on. */
struct gate
{
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stage;
};

static void gate_set(struct gate *g, int stage)
{
    pthread_mutex_lock(&g->mu);
    g->stage = stage;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Wait, at most 10 s, until g reaches stage: whether it did. */
static bool gate_wait(struct gate *g, int stage)
{
    struct timespec deadline;
    int rc = 0;
    bool ok;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&g->mu);
    while (g->stage < stage && rc == 0) {
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &deadline);
    }
    ok = g->stage >= stage;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

static int gated_snapshot(void *ctx, sqlite3 *db, const char *schema)
{
    struct gate *g = ctx;

    gate_set(g, 1);
    if (!gate_wait(g, 2)) {
        return -ETIMEDOUT;
    }
    return kv_fsm_ops.snapshot(NULL, db, schema);
}

static const struct kv_sm_ops gated_ops = {.snapshot = gated_snapshot};

struct snap_job
{
    const char *dir;
    const char *path;
    struct kv_sm sm;
    struct kv_snapshot_info info;
    int rv;
};

static void *snap_thread(void *arg)
{
    struct snap_job *j = arg;

    j->rv = kv_snapshot_create(j->dir, &j->sm, j->path, &j->info);
    return NULL;
}

/* Put key "at" = the index of this very command; 0 or a failure. */
static int put_index(struct fx *f)
{
    struct kv_sm_result res;
    struct kv_cmd c;
    char v[24];
    int rv;

    snprintf(v, sizeof(v), "%llu", (unsigned long long)f->last + 1);
    c = put_cmd(f, "at", v);
    rv = run_try(f, &c, &res);
    return rv != 0 ? rv : res.status;
}

static void test_snapshot_create_while_store_writes(void **state)
{
    struct fx *a = *state;
    struct fx *b = fx_new();
    struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    char *path = file_in(a->dir, "snap");
    struct snap_job job = {.dir = a->dir, .path = path, .sm = {&gated_ops, &g}};
    struct kv_sm_result res;
    struct kv_state st;
    struct kv_cmd c;
    pthread_t t;
    bool started;
    int rv = 0;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(put_index(a), 0);
    }
    assert_int_equal(pthread_create(&t, NULL, snap_thread, &job), 0);
    started = gate_wait(&g, 1);

    /* The snapshot has read its applied index: none of what follows may
     * be in it.  Nothing fails the test until the thread is joined. */
    a->term = 2;
    for (int i = 0; started && rv == 0 && i < 5; i++) {
        c = put_cmd(a, "late", "x");
        rv = put_index(a);
        rv = rv != 0 ? rv : run_try(a, &c, &res);
    }
    gate_set(&g, 2);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(started);
    assert_int_equal(rv, 0);
    assert_int_equal(a->last, 13);
    assert_int_equal(job.rv, 0);
    assert_int_equal(job.info.index, 3);
    assert_int_equal(job.info.term, 1);
    assert_int_equal(snapshot_check_file(path, 3, 1), 0);

    /* Restored, it is the state at index 3 exactly. */
    assert_int_equal(install(b, path, 3, 1, NULL, NULL), 0);
    load(b, &st);
    assert_int_equal(st.applied, 3);
    kv_state_free(&st);
    assert_value(b, "at", "3");
    assert_absent(b, "late");
    free(path);
    fx_free(b);
}

/* The reader ---------------------------------------------------------- */

struct names
{
    char s[16][64];
    uint64_t next[16];
    int n;
    int stop_after;
};

static int collect_cb(void *arg,
                      const struct kv_attr *a,
                      const char *name,
                      uint64_t next_offset)
{
    struct names *ns = arg;

    (void)a;
    assert_true(ns->n < 16);
    snprintf(ns->s[ns->n], sizeof(ns->s[0]), "%s", name);
    ns->next[ns->n] = next_offset;
    ns->n++;
    return ns->n == ns->stop_after;
}

static void test_reader_readdir_offsets(void **state)
{
    struct fx *f = *state;
    struct names ns = {.stop_after = 2};
    struct names rest = {0};
    uint64_t ino;

    put(f, "d/b", "1");
    put(f, "d/a", "2");
    put(f, "d/c/x", "3");
    ino = ino_of(f, KV_ROOT_INO, "d");

    assert_int_equal(kv_reader_readdir(f->r, ino, 0, collect_cb, &ns), 0);
    assert_int_equal(ns.n, 2);
    assert_string_equal(ns.s[0], "b");
    assert_string_equal(ns.s[1], "a");

    /* Removing an entry already returned does not shift the rest. */
    del(f, "d/b");
    assert_int_equal(
        kv_reader_readdir(f->r, ino, ns.next[1], collect_cb, &rest), 0);
    assert_int_equal(rest.n, 1);
    assert_string_equal(rest.s[0], "c");
    rest.n = 0;
    assert_int_equal(
        kv_reader_readdir(f->r, ino, rest.next[0], collect_cb, &rest), 0);
    assert_int_equal(rest.n, 0);

    assert_int_equal(kv_reader_readdir(f->r, 999, 0, collect_cb, &rest),
                     -ENOENT);
    assert_int_equal(
        kv_reader_readdir(f->r, ino_of(f, ino, "a"), 0, collect_cb, &rest),
        -ENOTDIR);
}

static void test_reader_lookup_get(void **state)
{
    struct fx *f = *state;
    struct kv_attr a;
    uint8_t *v;
    size_t len;
    uint64_t file;

    file = put(f, "a/f", "v").value;
    assert_int_equal(kv_reader_lookup(f->r, KV_ROOT_INO, "a", 1, &a), 0);
    assert_true(a.is_dir && a.nlink == 2 && a.size == 0);
    assert_int_equal(kv_reader_lookup(f->r, a.ino, "f", 1, &a), 0);
    assert_int_equal(a.ino, file);
    assert_true(!a.is_dir && a.nlink == 1 && a.size == 1);
    assert_int_equal(kv_reader_lookup(f->r, KV_ROOT_INO, "zz", 2, &a), -ENOENT);
    assert_int_equal(kv_reader_lookup(f->r, file, "x", 1, &a), -ENOTDIR);
    assert_int_equal(kv_reader_lookup(f->r, 999, "x", 1, &a), -ENOENT);

    assert_int_equal(kv_reader_get(f->r, "a", 1, &v, &len), -ENOENT);
    assert_int_equal(kv_reader_get(f->r, "a/f/g", 5, &v, &len), -ENOENT);
    assert_int_equal(kv_reader_get(f->r, "/a/f", 4, &v, &len), -EINVAL);
    assert_int_equal(kv_reader_read(f->r, ino_of(f, KV_ROOT_INO, "a"), 0, 1,
                                    (uint8_t *)&v, &len),
                     -EISDIR);
}

struct keys
{
    char *all;
    int n;
    int stop_after;
};

static int list_cb(void *arg, const char *key, size_t len)
{
    struct keys *k = arg;
    size_t old = k->all != NULL ? strlen(k->all) : 0;

    assert_int_equal(strlen(key), len);
    k->all = realloc(k->all, old + len + 2);
    assert_non_null(k->all);
    memcpy(k->all + old, key, len);
    k->all[old + len] = ' ';
    k->all[old + len + 1] = '\0';
    k->n++;
    return k->n == k->stop_after;
}

static void assert_list(struct fx *f, const char *prefix, const char *want)
{
    struct keys k = {0};

    assert_int_equal(kv_reader_list(f->r, prefix, strlen(prefix), list_cb, &k),
                     0);
    assert_string_equal(k.all != NULL ? k.all : "", want);
    free(k.all);
}

static void test_reader_list(void **state)
{
    struct fx *f = *state;
    struct keys k = {.stop_after = 2};

    put(f, "a/b", "1");
    put(f, "a-c", "2");
    put(f, "a/z/y", "3");
    put(f, "ab", "4");
    put(f, "b", "5");
    entry_op(f, KV_OP_MKDIR, KV_ROOT_INO, "emptydir", 0755, 0);

    /* Byte order of whole keys: '-' < '/' < 'b'. */
    assert_list(f, "", "a-c a/b a/z/y ab b ");
    assert_list(f, "a", "a-c a/b a/z/y ab ");
    assert_list(f, "a/", "a/b a/z/y ");
    assert_list(f, "a/z", "a/z/y ");
    assert_list(f, "a/b", "a/b ");
    assert_list(f, "a/bc", "");
    assert_list(f, "c", "");
    assert_list(f, "emptydir", "");

    assert_int_equal(kv_reader_list(f->r, "", 0, list_cb, &k), 0);
    assert_int_equal(k.n, 2);
    free(k.all);
}

static void test_reader_sees_writer_commits(void **state)
{
    struct fx *f = *state;
    struct kv_attr a;

    /* The reader was opened before any of these commits. */
    assert_int_equal(kv_reader_lookup(f->r, KV_ROOT_INO, "k", 1, &a), -ENOENT);
    put(f, "k", "first");
    assert_value(f, "k", "first");
    put(f, "k", "second");
    assert_value(f, "k", "second");
    del(f, "k");
    assert_absent(f, "k");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_round_trip),
        cmocka_unit_test(test_cmd_round_trip_empty_fields),
        cmocka_unit_test(test_cmd_decode_truncated),
        cmocka_unit_test(test_cmd_decode_wrong_types),
        cmocka_unit_test(test_cmd_decode_oversized),
        cmocka_unit_test(test_cmd_decode_random_bytes),
        cmocka_unit_test(test_key_check),
        cmocka_unit_test(test_name_check),
        cmocka_unit_test(test_store_open_reopen_node_id),
        cmocka_unit_test(test_store_refuses_foreign_files),
        cmocka_unit_test(test_store_batch_persists_atomically),
        cmocka_unit_test(test_store_apply_only_batches_interleave),
        cmocka_unit_test(test_store_checkpoint_on_its_own_connection),
        cmocka_unit_test(test_store_finish_checkpoint_restarts_wal),
        cmocka_unit_test(test_orphans_keep_removed_watched_files),
        cmocka_unit_test(test_orphans_follow_the_transaction_that_removes),
        cmocka_unit_test(test_store_truncate_log),
        cmocka_unit_test(test_store_fault_rolls_back_everything),
        cmocka_unit_test(test_store_noop_not_applied),
        cmocka_unit_test_setup_teardown(test_store_keeps_configuration,
                                        fx_setup, fx_teardown),
#define FX(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)
        FX(test_fsm_put_get_del),
        FX(test_fsm_create),
        FX(test_fsm_mkdir_rmdir_unlink),
        FX(test_fsm_rename),
        FX(test_fsm_entries_keep_keys_within_the_limit),
        FX(test_fsm_write_append),
        FX(test_fsm_setattr),
        FX(test_fsm_malformed_command_is_a_result),
        FX(test_fsm_large_file_in_chunks),
        cmocka_unit_test(test_cmd_expect_round_trip),
        FX(test_fsm_cas),
        FX(test_session_duplicate_returns_stored_result),
        FX(test_session_mkdir_append_rename_once),
        FX(test_session_expires_by_log_time),
        FX(test_session_table_is_bounded),
        FX(test_reader_readdir_offsets),
        FX(test_reader_lookup_get),
        FX(test_reader_list),
        FX(test_reader_sees_writer_commits),
        FX(test_store_compact_drops_applied_prefix),
        FX(test_store_compact_whole_log_loads_empty),
        FX(test_snapshot_create_describes_applied_point),
        FX(test_snapshot_create_of_compacted_log_takes_start_term),
        FX(test_snapshot_create_refuses_empty_state),
        FX(test_snapshot_install_reproduces_state),
        FX(test_snapshot_install_replaces_whole_log),
        FX(test_snapshot_install_refuses_bad_file),
        FX(test_snapshot_install_failing_midway_rolls_back),
        FX(test_snapshot_create_while_store_writes),
#undef FX
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
