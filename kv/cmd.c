/* Commands of the file-tree state machine: encoding and key validation. */

#include "cmd.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

#include <msgpack.h>

#include "../raft/ikd.h"

/* On-wire and on-disk format of a command, version 2.
 *
 * One msgpack array of exactly CMD_FIELDS elements, in this order:
 *
 *    0 version     uint, CMD_VERSION
 *    1 op          uint, enum kv_op
 *    2 session     uint64
 *    3 seq         uint64
 *    4 time_ns     int64
 *    5 max_bytes   uint64
 *    6 ino         uint64
 *    7 parent      uint64
 *    8 new_parent  uint64
 *    9 path        bin, at most IKD_MAX_PATH_BYTES
 *   10 new_name    bin, at most IKD_MAX_PATH_BYTES
 *   11 offset      uint64
 *   12 size        uint64
 *   13 mode        uint32
 *   14 flags       uint32
 *   15 valid       uint32
 *   16 mtime_ns    int64
 *   17 data        bin, at most IKD_MAX_VALUE_BYTES_LIMIT
 *   18 expect      bin; data and expect together at most
 *                  IKD_MAX_VALUE_BYTES_LIMIT (version 2 only)
 *
 * Version 1 is the same array without expect (CMD_FIELDS_V1 elements);
 * entries of that version still decode, with an empty expect.
 * Every field is present whatever the op, so one layout serves all of them
 * and a decoder never guesses.  The log stores these bytes as they are: a
 * later version appends fields and bumps the version, and a decoder refuses
 * versions it does not know.  No checksum: the frame and the database each
 * guard their own bytes. */
#define CMD_VERSION 2
#define CMD_FIELDS 19
#define CMD_FIELDS_V1 18

enum {
    F_VERSION = 0,
    F_OP,
    F_SESSION,
    F_SEQ,
    F_TIME,
    F_MAX_BYTES,
    F_INO,
    F_PARENT,
    F_NEW_PARENT,
    F_PATH,
    F_NEW_NAME,
    F_OFFSET,
    F_SIZE,
    F_MODE,
    F_FLAGS,
    F_VALID,
    F_MTIME,
    F_DATA,
    F_EXPECT,
    F_END
};

_Static_assert(F_END == CMD_FIELDS, "the field table matches the format");
_Static_assert(F_EXPECT == CMD_FIELDS_V1, "version 2 appends one field");
_Static_assert(CMD_FIELDS_V1 > 15 && CMD_FIELDS <= UINT16_MAX,
               "the command array is encoded with an array 16 header");
_Static_assert(KV_OP_END <= UINT8_MAX, "an op fits the op field");

static int pack_bin(msgpack_packer *pk, const void *p, size_t len)
{
    if (msgpack_pack_bin(pk, len) != 0) {
        return -1;
    }
    if (len == 0) {
        return 0;
    }
    return msgpack_pack_bin_body(pk, p, len);
}

int kv_cmd_encode(const struct kv_cmd *c, uint8_t **out, size_t *out_len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int rv = 0;

    assert(c != NULL && out != NULL && out_len != NULL);
    assert(c->path_len == 0 || c->path != NULL);
    assert(c->data_len == 0 || c->data != NULL);
    assert(c->expect_len == 0 || c->expect != NULL);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    /* The packer reports only allocation failures; any of them fails the
     * whole encoding. */
    rv |= msgpack_pack_array(&pk, CMD_FIELDS);
    rv |= msgpack_pack_uint64(&pk, CMD_VERSION);
    rv |= msgpack_pack_uint64(&pk, c->op);
    rv |= msgpack_pack_uint64(&pk, c->session);
    rv |= msgpack_pack_uint64(&pk, c->seq);
    rv |= msgpack_pack_int64(&pk, c->time_ns);
    rv |= msgpack_pack_uint64(&pk, c->max_bytes);
    rv |= msgpack_pack_uint64(&pk, c->ino);
    rv |= msgpack_pack_uint64(&pk, c->parent);
    rv |= msgpack_pack_uint64(&pk, c->new_parent);
    rv |= pack_bin(&pk, c->path, c->path_len);
    rv |= pack_bin(&pk, c->new_name, c->new_name_len);
    rv |= msgpack_pack_uint64(&pk, c->offset);
    rv |= msgpack_pack_uint64(&pk, c->size);
    rv |= msgpack_pack_uint64(&pk, c->mode);
    rv |= msgpack_pack_uint64(&pk, c->flags);
    rv |= msgpack_pack_uint64(&pk, c->valid);
    rv |= msgpack_pack_int64(&pk, c->mtime_ns);
    rv |= pack_bin(&pk, c->data, c->data_len);
    rv |= pack_bin(&pk, c->expect, c->expect_len);
    if (rv != 0) {
        msgpack_sbuffer_destroy(&sb);
        return -ENOMEM;
    }

    *out = (uint8_t *)sb.data;
    *out_len = sb.size;
    return 0;
}

/* The length of the scalar msgpack item starting at p (at most avail
 * bytes), or 0 when it is truncated or a container.  Containers are refused
 * here so that a hostile length in a nested header never reaches the
 * unpacker's allocator: a command holds scalars only. */
static size_t scalar_len(const uint8_t *p, size_t avail)
{
    size_t head = 1;
    size_t body = 0;
    uint8_t b;

    if (avail == 0) {
        return 0;
    }
    b = p[0];
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3)) {
        return 1; /* fixint, nil, bool */
    }
    if (b >= 0xa0 && b <= 0xbf) {
        body = b & 0x1fu; /* fixstr */
    } else if (b == 0xc4 || b == 0xd9) {
        head = 2; /* bin 8, str 8 */
        body = avail >= 2 ? p[1] : 0;
    } else if (b == 0xc5 || b == 0xda) {
        head = 3; /* bin 16, str 16 */
        body = avail >= 3 ? (size_t)p[1] << 8 | p[2] : 0;
    } else if (b == 0xc6 || b == 0xdb) {
        head = 5; /* bin 32, str 32 */
        body = avail >= 5 ? (size_t)p[1] << 24 | (size_t)p[2] << 16 |
                                (size_t)p[3] << 8 | p[4]
                          : 0;
    } else if (b == 0xcc || b == 0xd0) {
        head = 2; /* 8-bit integers */
    } else if (b == 0xcd || b == 0xd1) {
        head = 3;
    } else if (b == 0xca || b == 0xce || b == 0xd2) {
        head = 5;
    } else if (b == 0xcb || b == 0xcf || b == 0xd3) {
        head = 9;
    } else {
        return 0; /* containers and extension types */
    }
    if (head > avail || body > avail - head) {
        return 0;
    }
    return head + body;
}

/* Check the outline before unpacking: one array of CMD_FIELDS (or
 * CMD_FIELDS_V1) scalars that fills buf exactly. */
static bool cmd_shape_ok(const uint8_t *buf, size_t len)
{
    size_t off = 3;

    if (len < 3 || buf[0] != 0xdc || buf[1] != 0 ||
        (buf[2] != CMD_FIELDS && buf[2] != CMD_FIELDS_V1)) {
        return false;
    }
    for (int i = 0; i < buf[2]; i++) {
        size_t n = scalar_len(buf + off, len - off);
        if (n == 0) {
            return false;
        }
        off += n;
    }
    return off == len;
}

static bool get_u64(const msgpack_object *o, uint64_t max, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max) {
        return false;
    }
    *v = o->via.u64;
    return true;
}

static bool get_i64(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        o->via.u64 <= (uint64_t)INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return true;
    }
    return false;
}

static bool get_u32(const msgpack_object *o, uint32_t *v)
{
    uint64_t u;

    if (!get_u64(o, UINT32_MAX, &u)) {
        return false;
    }
    *v = (uint32_t)u;
    return true;
}

static bool get_bin(const msgpack_object *o,
                    size_t max,
                    const void **p,
                    size_t *len)
{
    if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size > max) {
        return false;
    }
    *p = o->via.bin.ptr;
    *len = o->via.bin.size;
    return true;
}

/* The optional expect field of version 2. */
static bool cmd_expect(const msgpack_object *f,
                       uint32_t n_fields,
                       struct kv_cmd *c)
{
    const void *expect;

    if (n_fields == CMD_FIELDS_V1) {
        return true;
    }
    if (!get_bin(&f[F_EXPECT], IKD_MAX_VALUE_BYTES_LIMIT, &expect,
                 &c->expect_len) ||
        c->expect_len > IKD_MAX_VALUE_BYTES_LIMIT - c->data_len) {
        return false;
    }
    c->expect = expect;
    return true;
}

static bool cmd_fields(const msgpack_object *f,
                       uint32_t n_fields,
                       struct kv_cmd *c)
{
    uint64_t version;
    uint64_t op;
    const void *path;
    const void *new_name;
    const void *data;
    bool ok;

    if (!get_u64(&f[F_VERSION], UINT64_MAX, &version) ||
        version != (n_fields == CMD_FIELDS ? CMD_VERSION : 1)) {
        return false;
    }
    if (!get_u64(&f[F_OP], KV_OP_END - 1, &op) || op < KV_OP_PUT) {
        return false;
    }
    c->op = (uint8_t)op;

    ok = get_u64(&f[F_SESSION], UINT64_MAX, &c->session) &&
         get_u64(&f[F_SEQ], UINT64_MAX, &c->seq) &&
         get_i64(&f[F_TIME], &c->time_ns) &&
         get_u64(&f[F_MAX_BYTES], UINT64_MAX, &c->max_bytes) &&
         get_u64(&f[F_INO], UINT64_MAX, &c->ino) &&
         get_u64(&f[F_PARENT], UINT64_MAX, &c->parent) &&
         get_u64(&f[F_NEW_PARENT], UINT64_MAX, &c->new_parent) &&
         get_u64(&f[F_OFFSET], UINT64_MAX, &c->offset) &&
         get_u64(&f[F_SIZE], UINT64_MAX, &c->size) &&
         get_u32(&f[F_MODE], &c->mode) && get_u32(&f[F_FLAGS], &c->flags) &&
         get_u32(&f[F_VALID], &c->valid) && get_i64(&f[F_MTIME], &c->mtime_ns);
    if (!ok) {
        return false;
    }

    ok = get_bin(&f[F_PATH], IKD_MAX_PATH_BYTES, &path, &c->path_len) &&
         get_bin(&f[F_NEW_NAME], IKD_MAX_PATH_BYTES, &new_name,
                 &c->new_name_len) &&
         get_bin(&f[F_DATA], IKD_MAX_VALUE_BYTES_LIMIT, &data, &c->data_len);
    if (!ok) {
        return false;
    }
    c->path = path;
    c->new_name = new_name;
    c->data = data;
    return cmd_expect(f, n_fields, c);
}

int kv_cmd_decode(const uint8_t *buf, size_t len, struct kv_cmd *c)
{
    msgpack_unpacked u;
    size_t off = 0;
    int rv = IKD_EMALFORMED;

    assert(c != NULL);
    if (buf == NULL || !cmd_shape_ok(buf, len)) {
        return IKD_EMALFORMED;
    }

    /* Strings and bins come back pointing into buf, not into the zone, so
     * they outlive the unpacked object as the contract promises. */
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)buf, len, &off) !=
        MSGPACK_UNPACK_SUCCESS) {
        goto out;
    }
    if (off != len || u.data.type != MSGPACK_OBJECT_ARRAY ||
        (u.data.via.array.size != CMD_FIELDS &&
         u.data.via.array.size != CMD_FIELDS_V1)) {
        goto out;
    }
    memset(c, 0, sizeof(*c));
    if (cmd_fields(u.data.via.array.ptr, u.data.via.array.size, c)) {
        rv = 0;
    }

out:
    msgpack_unpacked_destroy(&u);
    return rv;
}

int kv_name_check(const char *name, size_t len)
{
    if (len == 0 || (len == 1 && name[0] == '.') ||
        (len == 2 && name[0] == '.' && name[1] == '.')) {
        return -EINVAL;
    }
    if (memchr(name, '/', len) != NULL || memchr(name, '\0', len) != NULL) {
        return -EINVAL;
    }
    if (len > IKD_MAX_NAME_BYTES) {
        return -ENAMETOOLONG;
    }
    return 0;
}

int kv_key_check(const char *key, size_t len)
{
    static const char reserved[] = ".ikada";
    size_t start = 0;

    if (key == NULL || len == 0 || len > IKD_MAX_PATH_BYTES) {
        return -EINVAL;
    }
    while (start <= len) {
        const char *slash = memchr(key + start, '/', len - start);
        size_t end = slash != NULL ? (size_t)(slash - key) : len;

        if (kv_name_check(key + start, end - start) != 0) {
            return -EINVAL;
        }
        if (start == 0 && end == sizeof(reserved) - 1 &&
            memcmp(key, reserved, end) == 0) {
            return -EINVAL;
        }
        start = end + 1;
    }
    return 0;
}
