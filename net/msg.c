/* Messages on the wire: framing and msgpack encoding (see msg.h).
 *
 * Encoding packs into a msgpack_sbuffer whose first 4 bytes are reserved
 * for the length prefix, so a frame is built in one buffer and handed to
 * the caller without a copy.
 *
 * Decoding first walks the payload with a small bounds checker, then lets
 * msgpack_unpack_next() build objects.  The walk is there because
 * msgpack-c allocates room for a whole array as soon as it reads an array
 * header: a 5-byte frame claiming 2^32 elements would ask for about 100 GB.
 * After the walk every count is known to fit the bytes that remain, so
 * what msgpack-c allocates is bounded by a small multiple of the frame.
 * msgpack-c 4 does not copy str and bin bodies when unpacking from a
 * buffer: their pointers point into that buffer, and so do ours. */

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "msg.h"

#define FRAME_HEADER_BYTES 4
/* A leader's address as a client is told it: "HOST:PORT". */
#define MAX_ADDR_BYTES 255

_Static_assert(IKD_PROTOCOL_VERSION > 0, "version 0 is not a version");
_Static_assert(IKD_MAX_APPEND_ENTRIES <= UINT32_MAX,
               "entry counts are packed as 32-bit array sizes");
_Static_assert(IKD_MAX_COMMAND_BYTES <= UINT32_MAX,
               "an entry's length is a uint32_t");

/* Stands in for the body of an empty byte string, so that a decoded
 * pointer is never NULL. */
static const uint8_t empty_bytes[1];

const char *net_op_name(uint8_t op)
{
    static const char *const names[] = {
        [NET_OP_PROPOSE] = "propose",     [NET_OP_GET] = "get",
        [NET_OP_GET_LOCAL] = "get_local", [NET_OP_LIST] = "list",
        [NET_OP_STATUS] = "status",       [NET_OP_TRANSFER] = "transfer",
    };
    return op < sizeof(names) / sizeof(names[0]) && names[op] != NULL
               ? names[op]
               : "other";
}

/* Encoding. */

static int pack_bytes(msgpack_packer *pk, const void *p, size_t len)
{
    if (msgpack_pack_bin(pk, len) != 0) {
        return -1;
    }
    return len > 0 ? msgpack_pack_bin_body(pk, p, len) : 0;
}

static int pack_text(msgpack_packer *pk, const char *p, size_t len)
{
    if (msgpack_pack_str(pk, len) != 0) {
        return -1;
    }
    return len > 0 ? msgpack_pack_str_body(pk, p, len) : 0;
}

static int pack_bool(msgpack_packer *pk, bool b)
{
    return b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

/* A trace context: see NET_TRACE_CTX_BYTES in msg.h. */
static int pack_trace_ctx(msgpack_packer *pk, const struct ikd_trace_ctx *c)
{
    uint8_t b[NET_TRACE_CTX_BYTES];

    _Static_assert(
        sizeof(c->trace_id) + sizeof(c->span_id) + 1 == NET_TRACE_CTX_BYTES,
        "trace id, span id and flags");
    memcpy(b, c->trace_id, sizeof(c->trace_id));
    memcpy(b + sizeof(c->trace_id), c->span_id, sizeof(c->span_id));
    b[NET_TRACE_CTX_BYTES - 1] = c->sampled ? 1 : 0;
    return pack_bytes(pk, b, sizeof(b));
}

/* Every kind starts with [version, kind, ...] and then n fields. */
static int pack_head(msgpack_packer *pk, uint8_t kind, size_t n_fields)
{
    int rv = msgpack_pack_array(pk, 2 + n_fields);
    rv |= msgpack_pack_uint32(pk, IKD_PROTOCOL_VERSION);
    rv |= msgpack_pack_uint8(pk, kind);
    return rv;
}

/* NET_HELLO: [v, 1, node_id u32, cluster_hash u64] */
static int pack_hello(msgpack_packer *pk, const struct net_hello *h)
{
    int rv = pack_head(pk, NET_HELLO, 2);
    rv |= msgpack_pack_uint32(pk, h->node_id);
    rv |= msgpack_pack_uint64(pk, h->cluster_hash);
    return rv;
}

/* One entry of an AppendEntries: [term u64, type u8, data bin]. */
static int pack_entry(msgpack_packer *pk, const struct raft_entry *e)
{
    int rv = msgpack_pack_array(pk, 3);
    rv |= msgpack_pack_uint64(pk, e->term);
    rv |= msgpack_pack_uint8(pk, e->type);
    rv |= pack_bytes(pk, e->data, e->len);
    return rv;
}

/* NET_RAFT: [v, 2, type u8, from u32, to u32, term u64, body...] where the
 * body depends on type:
 *   RAFT_MSG_VOTE:        last_index u64, last_term u64, transfer bool
 *   RAFT_MSG_VOTE_RESP:   granted bool
 *   RAFT_MSG_APPEND:      prev_index u64, prev_term u64, commit u64,
 *                         read_seq u64, entries [entry...] (at most
 *                         IKD_MAX_APPEND_ENTRIES; see pack_entry)
 *   RAFT_MSG_APPEND_RESP: success bool, index u64, hint_index u64,
 *                         hint_term u64, read_seq u64
 *   RAFT_MSG_PREVOTE:     as RAFT_MSG_VOTE
 *   RAFT_MSG_PREVOTE_RESP: as RAFT_MSG_VOTE_RESP
 *   RAFT_MSG_TIMEOUT_NOW: nothing
 * An APPEND may end with one more field, traces [[index u64, trace ctx
 * bin]...], present only when it holds at least one context. */
static int pack_raft(msgpack_packer *pk,
                     const struct raft_msg *m,
                     const struct net_trace_ref *traces,
                     size_t n_traces)
{
    static const size_t body_fields[] = {
        [RAFT_MSG_VOTE] = 3,        [RAFT_MSG_VOTE_RESP] = 1,
        [RAFT_MSG_APPEND] = 5,      [RAFT_MSG_APPEND_RESP] = 5,
        [RAFT_MSG_PREVOTE] = 3,     [RAFT_MSG_PREVOTE_RESP] = 1,
        [RAFT_MSG_TIMEOUT_NOW] = 0,
    };
    size_t i;
    int rv;

    assert(m->type >= RAFT_MSG_VOTE && m->type <= RAFT_MSG_TIMEOUT_NOW);
    if (m->type != RAFT_MSG_APPEND) {
        n_traces = 0;
    }
    assert(n_traces <= NET_MAX_TRACE_REFS);
    rv = pack_head(pk, NET_RAFT,
                   4 + body_fields[m->type] + (n_traces > 0 ? 1 : 0));
    rv |= msgpack_pack_uint8(pk, (uint8_t)m->type);
    rv |= msgpack_pack_uint32(pk, m->from);
    rv |= msgpack_pack_uint32(pk, m->to);
    rv |= msgpack_pack_uint64(pk, m->term);
    switch (m->type) {
        case RAFT_MSG_VOTE:
        case RAFT_MSG_PREVOTE:
            rv |= msgpack_pack_uint64(pk, m->vote.last_index);
            rv |= msgpack_pack_uint64(pk, m->vote.last_term);
            rv |= pack_bool(pk, m->vote.transfer);
            break;
        case RAFT_MSG_VOTE_RESP:
        case RAFT_MSG_PREVOTE_RESP:
            rv |= pack_bool(pk, m->vote_resp.granted);
            break;
        case RAFT_MSG_TIMEOUT_NOW:
            break;
        case RAFT_MSG_SNAPSHOT:
            return IKD_EMALFORMED; /* excluded by the assertion above */
        case RAFT_MSG_APPEND:
            rv |= msgpack_pack_uint64(pk, m->append.prev_index);
            rv |= msgpack_pack_uint64(pk, m->append.prev_term);
            rv |= msgpack_pack_uint64(pk, m->append.commit);
            rv |= msgpack_pack_uint64(pk, m->append.read_seq);
            rv |= msgpack_pack_array(pk, m->append.n_entries);
            for (i = 0; i < m->append.n_entries && rv == 0; i++) {
                rv |= pack_entry(pk, &m->append.entries[i]);
            }
            if (n_traces > 0) {
                rv |= msgpack_pack_array(pk, n_traces);
            }
            for (i = 0; i < n_traces && rv == 0; i++) {
                rv |= msgpack_pack_array(pk, 2);
                rv |= msgpack_pack_uint64(pk, traces[i].index);
                rv |= pack_trace_ctx(pk, &traces[i].ctx);
            }
            break;
        case RAFT_MSG_APPEND_RESP:
            rv |= pack_bool(pk, m->append_resp.success);
            rv |= msgpack_pack_uint64(pk, m->append_resp.index);
            rv |= msgpack_pack_uint64(pk, m->append_resp.hint_index);
            rv |= msgpack_pack_uint64(pk, m->append_resp.hint_term);
            rv |= msgpack_pack_uint64(pk, m->append_resp.read_seq);
            break;
    }
    return rv;
}

/* NET_FORWARD: [v, 3, req_id u64, cmd bin, (trace ctx bin)]
 * The trace context is there only when the command is traced. */
static int pack_forward(msgpack_packer *pk, const struct net_forward *f)
{
    bool traced = ikd_trace_ctx_valid(&f->trace);
    int rv = pack_head(pk, NET_FORWARD, traced ? 3 : 2);
    rv |= msgpack_pack_uint64(pk, f->req_id);
    rv |= pack_bytes(pk, f->cmd, f->cmd_len);
    if (traced) {
        rv |= pack_trace_ctx(pk, &f->trace);
    }
    return rv;
}

/* NET_FORWARD_RESP: [v, 4, req_id u64, status i32, index u64, term u64] */
static int pack_forward_resp(msgpack_packer *pk,
                             const struct net_forward_resp *f)
{
    int rv = pack_head(pk, NET_FORWARD_RESP, 4);
    rv |= msgpack_pack_uint64(pk, f->req_id);
    rv |= msgpack_pack_int32(pk, f->status);
    rv |= msgpack_pack_uint64(pk, f->index);
    rv |= msgpack_pack_uint64(pk, f->term);
    return rv;
}

/* NET_READ_INDEX: [v, 5, req_id u64, term u64] */
static int pack_read_index(msgpack_packer *pk, const struct net_read_index *r)
{
    int rv = pack_head(pk, NET_READ_INDEX, 2);
    rv |= msgpack_pack_uint64(pk, r->req_id);
    rv |= msgpack_pack_uint64(pk, r->term);
    return rv;
}

/* NET_READ_INDEX_RESP: [v, 6, req_id u64, status i32, index u64] */
static int pack_read_index_resp(msgpack_packer *pk,
                                const struct net_read_index_resp *r)
{
    int rv = pack_head(pk, NET_READ_INDEX_RESP, 3);
    rv |= msgpack_pack_uint64(pk, r->req_id);
    rv |= msgpack_pack_int32(pk, r->status);
    rv |= msgpack_pack_uint64(pk, r->index);
    return rv;
}

/* NET_CLIENT_REQ: [v, 7, req_id u64, op u8, cmd bin, key str,
 *                  (trace ctx bin)]
 * cmd is empty unless op is NET_OP_PROPOSE; key is empty for
 * NET_OP_PROPOSE and NET_OP_STATUS and at most IKD_MAX_PATH_BYTES
 * (NET_OP_TRANSFER: the target id in decimal, or empty; NET_OP_MEMBER_ADD
 * and _REMOVE: "ID HOST:PORT" and "ID").  The trace context is there only
 * when the request is traced. */
static int pack_client_req(msgpack_packer *pk, const struct net_client_req *r)
{
    bool traced = ikd_trace_ctx_valid(&r->trace);
    int rv = pack_head(pk, NET_CLIENT_REQ, traced ? 5 : 4);
    rv |= msgpack_pack_uint64(pk, r->req_id);
    rv |= msgpack_pack_uint8(pk, r->op);
    rv |= pack_bytes(pk, r->cmd, r->cmd_len);
    rv |= pack_text(pk, r->key, r->key_len);
    if (traced) {
        rv |= pack_trace_ctx(pk, &r->trace);
    }
    return rv;
}

/* NET_CLIENT_RESP: [v, 8, req_id u64, status i32, value u64, leader_id u32,
 *                   leader_addr str, data bin, id u32, role u8, term u64,
 *                   commit u64, applied u64, snapshot u64]
 * leader_addr is at most 255 bytes; role is an enum raft_role. */
static int pack_client_resp(msgpack_packer *pk, const struct net_client_resp *r)
{
    int rv = pack_head(pk, NET_CLIENT_RESP, 12);
    rv |= msgpack_pack_uint64(pk, r->req_id);
    rv |= msgpack_pack_int32(pk, r->status);
    rv |= msgpack_pack_uint64(pk, r->value);
    rv |= msgpack_pack_uint32(pk, r->leader_id);
    rv |= pack_text(pk, r->leader_addr, r->leader_addr_len);
    rv |= pack_bytes(pk, r->data, r->data_len);
    rv |= msgpack_pack_uint32(pk, r->id);
    rv |= msgpack_pack_uint8(pk, r->role);
    rv |= msgpack_pack_uint64(pk, r->term);
    rv |= msgpack_pack_uint64(pk, r->commit);
    rv |= msgpack_pack_uint64(pk, r->applied);
    rv |= msgpack_pack_uint64(pk, r->snapshot);
    return rv;
}

/* The fields of a struct net_snap_id, in order: term u64, index u64,
 * snap_term u64, size u64, crc u32. */
#define SNAP_ID_FIELDS 5

static int pack_snap_id(msgpack_packer *pk, const struct net_snap_id *id)
{
    int rv = msgpack_pack_uint64(pk, id->term);
    rv |= msgpack_pack_uint64(pk, id->index);
    rv |= msgpack_pack_uint64(pk, id->snap_term);
    rv |= msgpack_pack_uint64(pk, id->size_bytes);
    rv |= msgpack_pack_uint32(pk, id->crc);
    return rv;
}

/* NET_SNAP_CHUNK: [v, 9, snap id..., offset u64, crc u32, data bin] */
static int pack_snap_chunk(msgpack_packer *pk, const struct net_snap_chunk *c)
{
    int rv = pack_head(pk, NET_SNAP_CHUNK, SNAP_ID_FIELDS + 3);
    rv |= pack_snap_id(pk, &c->id);
    rv |= msgpack_pack_uint64(pk, c->offset);
    rv |= msgpack_pack_uint32(pk, c->crc);
    rv |= pack_bytes(pk, c->data, c->len);
    return rv;
}

/* NET_SNAP_ACK: [v, 10, snap id..., next_offset u64, status i32] */
static int pack_snap_ack(msgpack_packer *pk, const struct net_snap_ack *a)
{
    int rv = pack_head(pk, NET_SNAP_ACK, SNAP_ID_FIELDS + 2);
    rv |= pack_snap_id(pk, &a->id);
    rv |= msgpack_pack_uint64(pk, a->next_offset);
    rv |= msgpack_pack_int32(pk, a->status);
    return rv;
}

static int pack_msg(msgpack_packer *pk, const struct net_msg *m)
{
    switch (m->kind) {
        case NET_HELLO:
            return pack_hello(pk, &m->hello);
        case NET_RAFT:
            return pack_raft(pk, &m->raft, m->traces, m->n_traces);
        case NET_FORWARD:
            return pack_forward(pk, &m->forward);
        case NET_FORWARD_RESP:
            return pack_forward_resp(pk, &m->forward_resp);
        case NET_READ_INDEX:
            return pack_read_index(pk, &m->read_index);
        case NET_READ_INDEX_RESP:
            return pack_read_index_resp(pk, &m->read_index_resp);
        case NET_CLIENT_REQ:
            return pack_client_req(pk, &m->req);
        case NET_CLIENT_RESP:
            return pack_client_resp(pk, &m->resp);
        case NET_SNAP_CHUNK:
            return pack_snap_chunk(pk, &m->snap_chunk);
        case NET_SNAP_ACK:
            return pack_snap_ack(pk, &m->snap_ack);
    }
    assert(false && "unknown message kind");
    return -1;
}

int net_msg_encode(const struct net_msg *m, uint8_t **out, size_t *len)
{
    static const char header[FRAME_HEADER_BYTES];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t payload;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_sbuffer_write(&sb, header, sizeof(header)) != 0 ||
        pack_msg(&pk, m) != 0) {
        msgpack_sbuffer_destroy(&sb);
        return -ENOMEM;
    }

    payload = sb.size - FRAME_HEADER_BYTES;
    if (payload > IKD_MAX_FRAME_BYTES) {
        msgpack_sbuffer_destroy(&sb);
        return IKD_ELIMIT;
    }
    sb.data[0] = (char)(payload >> 24);
    sb.data[1] = (char)(payload >> 16);
    sb.data[2] = (char)(payload >> 8);
    sb.data[3] = (char)payload;

    *len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    return 0;
}

/* The bounds walk. */

static uint64_t read_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* What a msgpack type byte announces: how many bytes of a length or count
 * follow it, how many fixed payload bytes, and whether the number that
 * follows counts bytes, elements or pairs. */
enum mp_what { MP_FIXED, MP_BYTES, MP_ITEMS, MP_PAIRS, MP_BAD };

static enum mp_what classify(uint8_t b, size_t *size_bytes, size_t *fixed)
{
    *size_bytes = 0;
    *fixed = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        return MP_FIXED;
    }
    if (b >= 0xc4 && b <= 0xc9) { /* bin 8/16/32, ext 8/16/32 */
        *size_bytes = (size_t)1 << ((b - 0xc4) % 3);
        *fixed = b >= 0xc7 ? 1 : 0;
        return MP_BYTES;
    }
    if (b >= 0xca && b <= 0xd3) { /* float 32/64, (u)int 8..64 */
        static const size_t widths[] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8};
        *fixed = widths[b - 0xca];
        return MP_FIXED;
    }
    if (b >= 0xd4 && b <= 0xd8) { /* fixext 1..16 */
        *fixed = 1 + ((size_t)1 << (b - 0xd4));
        return MP_FIXED;
    }
    if (b >= 0xd9 && b <= 0xdb) { /* str 8/16/32 */
        *size_bytes = (size_t)1 << (b - 0xd9);
        return MP_BYTES;
    }
    if (b == 0xdc || b == 0xdd) {
        *size_bytes = b == 0xdc ? 2 : 4;
        return MP_ITEMS;
    }
    if (b == 0xde || b == 0xdf) {
        *size_bytes = b == 0xde ? 2 : 4;
        return MP_PAIRS;
    }
    return MP_BAD; /* 0xc1 is never used */
}

/* Check that buf holds exactly one msgpack object whose every length and
 * count fits in the bytes that remain.  Each object still to be read takes
 * at least one byte, so `pending` can never exceed what is left. */
static int walk_bounds(const uint8_t *buf, size_t len)
{
    uint64_t pending = 1;
    size_t pos = 0;

    while (pending > 0) {
        size_t size_bytes;
        size_t fixed;
        uint64_t n = 0;
        enum mp_what what;
        uint8_t b;

        if (pos >= len) {
            return IKD_EMALFORMED;
        }
        b = buf[pos++];
        pending--;
        if (b >= 0x80 && b <= 0x8f) {
            what = MP_PAIRS;
            n = b & 0x0f;
        } else if (b >= 0x90 && b <= 0x9f) {
            what = MP_ITEMS;
            n = b & 0x0f;
        } else if (b >= 0xa0 && b <= 0xbf) {
            what = MP_BYTES;
            n = b & 0x1f;
        } else {
            what = classify(b, &size_bytes, &fixed);
            if (what == MP_BAD || size_bytes + fixed > len - pos) {
                return IKD_EMALFORMED;
            }
            n = read_be(buf + pos, size_bytes);
            pos += size_bytes + fixed;
        }

        if (what == MP_BYTES) {
            if (n > len - pos) {
                return IKD_EMALFORMED;
            }
            pos += (size_t)n;
        } else if (what == MP_ITEMS || what == MP_PAIRS) {
            pending += what == MP_PAIRS ? 2 * n : n;
            if (pending > len - pos) {
                return IKD_EMALFORMED;
            }
        }
    }
    return pos == len ? 0 : IKD_EMALFORMED;
}

/* Decoding: a cursor over the top-level array.  Any mismatch sets bad and
 * later reads return zeroes, so a decoder reads all its fields and checks
 * once at the end. */

struct cursor
{
    const msgpack_object *items;
    uint32_t n;
    uint32_t i;
    bool bad;
};

static const msgpack_object *next(struct cursor *c, msgpack_object_type type)
{
    const msgpack_object *o;

    if (c->bad || c->i >= c->n) {
        c->bad = true;
        return NULL;
    }
    o = &c->items[c->i++];
    if (o->type != type) {
        c->bad = true;
        return NULL;
    }
    return o;
}

static uint64_t get_u64(struct cursor *c, uint64_t max)
{
    const msgpack_object *o = next(c, MSGPACK_OBJECT_POSITIVE_INTEGER);

    if (o == NULL || o->via.u64 > max) {
        c->bad = true;
        return 0;
    }
    return o->via.u64;
}

static uint32_t get_u32(struct cursor *c)
{
    return (uint32_t)get_u64(c, UINT32_MAX);
}

/* A status is 0 or a negative code.  msgpack packs non-negative integers
 * as positive ones whatever their C type, so accept both encodings. */
static int32_t get_status(struct cursor *c)
{
    const msgpack_object *o;

    if (c->bad || c->i >= c->n) {
        c->bad = true;
        return 0;
    }
    o = &c->items[c->i++];
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == 0) {
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= INT32_MIN) {
        return (int32_t)o->via.i64;
    }
    c->bad = true;
    return 0;
}

static bool get_bool(struct cursor *c)
{
    const msgpack_object *o = next(c, MSGPACK_OBJECT_BOOLEAN);

    return o != NULL && o->via.boolean;
}

static const uint8_t *get_bin(struct cursor *c, size_t max, size_t *len)
{
    const msgpack_object *o = next(c, MSGPACK_OBJECT_BIN);

    *len = 0;
    if (o == NULL || o->via.bin.size > max) {
        c->bad = true;
        return empty_bytes;
    }
    *len = o->via.bin.size;
    return *len > 0 ? (const uint8_t *)o->via.bin.ptr : empty_bytes;
}

static const char *get_str(struct cursor *c, size_t max, size_t *len)
{
    const msgpack_object *o = next(c, MSGPACK_OBJECT_STR);

    *len = 0;
    if (o == NULL || o->via.str.size > max) {
        c->bad = true;
        return "";
    }
    *len = o->via.str.size;
    return *len > 0 ? o->via.str.ptr : "";
}

static bool more(const struct cursor *c)
{
    return !c->bad && c->i < c->n;
}

/* A trace context (pack_trace_ctx); one that is not valid is malformed. */
static void get_trace_ctx(struct cursor *c, struct ikd_trace_ctx *out)
{
    size_t len;
    const uint8_t *b = get_bin(c, NET_TRACE_CTX_BYTES, &len);

    memset(out, 0, sizeof(*out));
    if (c->bad || len != NET_TRACE_CTX_BYTES) {
        c->bad = true;
        return;
    }
    memcpy(out->trace_id, b, sizeof(out->trace_id));
    memcpy(out->span_id, b + sizeof(out->trace_id), sizeof(out->span_id));
    out->sampled = (b[NET_TRACE_CTX_BYTES - 1] & 1) != 0;
    if (!ikd_trace_ctx_valid(out)) {
        c->bad = true;
    }
}

/* The optional traces of an APPEND, into a new array in m. */
static int decode_traces(struct cursor *c, struct net_msg *m)
{
    const msgpack_object *o = next(c, MSGPACK_OBJECT_ARRAY);
    uint32_t i;

    if (o == NULL || o->via.array.size == 0 ||
        o->via.array.size > NET_MAX_TRACE_REFS) {
        return IKD_EMALFORMED;
    }
    m->traces = calloc(o->via.array.size, sizeof(*m->traces));
    if (m->traces == NULL) {
        return IKD_EMALFORMED;
    }
    m->n_traces = o->via.array.size;
    for (i = 0; i < o->via.array.size; i++) {
        const msgpack_object *item = &o->via.array.ptr[i];
        struct cursor ic = {NULL, 0, 0, item->type != MSGPACK_OBJECT_ARRAY};
        if (!ic.bad) {
            ic.items = item->via.array.ptr;
            ic.n = item->via.array.size;
        }
        m->traces[i].index = get_u64(&ic, UINT64_MAX);
        get_trace_ctx(&ic, &m->traces[i].ctx);
        if (ic.bad || ic.i != ic.n) {
            return IKD_EMALFORMED;
        }
    }
    return 0;
}

static void decode_hello(struct cursor *c, struct net_hello *h)
{
    h->node_id = get_u32(c);
    h->cluster_hash = get_u64(c, UINT64_MAX);
}

static int decode_entry(const msgpack_object *o, struct raft_entry *e)
{
    struct cursor c = {NULL, 0, 0, false};
    size_t len;

    if (o->type != MSGPACK_OBJECT_ARRAY) {
        return IKD_EMALFORMED;
    }
    c.items = o->via.array.ptr;
    c.n = o->via.array.size;
    e->term = get_u64(&c, UINT64_MAX);
    e->type = (uint8_t)get_u64(&c, RAFT_ENTRY_CONFIG);
    /* The core only reads entries handed to raft_step(). */
    e->data = (uint8_t *)get_bin(&c, IKD_MAX_COMMAND_BYTES, &len);
    e->len = (uint32_t)len;
    return c.bad || c.i != c.n ? IKD_EMALFORMED : 0;
}

static int decode_entries(struct cursor *c, struct raft_msg *m)
{
    const msgpack_object *o = next(c, MSGPACK_OBJECT_ARRAY);
    uint32_t i;

    m->append.n_entries = 0;
    m->append.entries = NULL;
    if (o == NULL || o->via.array.size > IKD_MAX_APPEND_ENTRIES) {
        return IKD_EMALFORMED;
    }
    if (o->via.array.size == 0) {
        return 0;
    }
    m->append.entries = calloc(o->via.array.size, sizeof(*m->append.entries));
    if (m->append.entries == NULL) {
        /* Not the sender's fault, but the message is lost all the same:
         * Raft resends it. */
        return IKD_EMALFORMED;
    }
    for (i = 0; i < o->via.array.size; i++) {
        if (decode_entry(&o->via.array.ptr[i], &m->append.entries[i]) != 0) {
            free(m->append.entries);
            m->append.entries = NULL;
            return IKD_EMALFORMED;
        }
    }
    m->append.n_entries = o->via.array.size;
    return 0;
}

static int decode_raft(struct cursor *c, struct raft_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->type = (enum raft_msg_type)get_u64(c, RAFT_MSG_TIMEOUT_NOW);
    m->from = get_u32(c);
    m->to = get_u32(c);
    m->term = get_u64(c, UINT64_MAX);
    if (c->bad || m->type < RAFT_MSG_VOTE) {
        return IKD_EMALFORMED;
    }
    switch (m->type) {
        case RAFT_MSG_VOTE:
        case RAFT_MSG_PREVOTE:
            m->vote.last_index = get_u64(c, UINT64_MAX);
            m->vote.last_term = get_u64(c, UINT64_MAX);
            m->vote.transfer = get_bool(c);
            break;
        case RAFT_MSG_VOTE_RESP:
        case RAFT_MSG_PREVOTE_RESP:
            m->vote_resp.granted = get_bool(c);
            break;
        case RAFT_MSG_TIMEOUT_NOW:
            break;
        case RAFT_MSG_SNAPSHOT:
            return IKD_EMALFORMED; /* never on the wire: see raft.h */
        case RAFT_MSG_APPEND:
            m->append.prev_index = get_u64(c, UINT64_MAX);
            m->append.prev_term = get_u64(c, UINT64_MAX);
            m->append.commit = get_u64(c, UINT64_MAX);
            m->append.read_seq = get_u64(c, UINT64_MAX);
            /* Last field: nothing after it can fail but the count. */
            if (c->bad || decode_entries(c, m) != 0) {
                return IKD_EMALFORMED;
            }
            break;
        case RAFT_MSG_APPEND_RESP:
            m->append_resp.success = get_bool(c);
            m->append_resp.index = get_u64(c, UINT64_MAX);
            m->append_resp.hint_index = get_u64(c, UINT64_MAX);
            m->append_resp.hint_term = get_u64(c, UINT64_MAX);
            m->append_resp.read_seq = get_u64(c, UINT64_MAX);
            break;
    }
    return 0;
}

static void decode_client_req(struct cursor *c, struct net_client_req *r)
{
    r->req_id = get_u64(c, UINT64_MAX);
    r->op = (uint8_t)get_u64(c, NET_OP_MEMBER_REMOVE);
    r->cmd = get_bin(c, IKD_MAX_COMMAND_BYTES, &r->cmd_len);
    r->key = get_str(c, IKD_MAX_PATH_BYTES, &r->key_len);
    if (more(c)) {
        get_trace_ctx(c, &r->trace);
    }
    if (r->op < NET_OP_PROPOSE) {
        c->bad = true;
    }
}

static void decode_client_resp(struct cursor *c, struct net_client_resp *r)
{
    r->req_id = get_u64(c, UINT64_MAX);
    r->status = get_status(c);
    r->value = get_u64(c, UINT64_MAX);
    r->leader_id = get_u32(c);
    r->leader_addr = get_str(c, MAX_ADDR_BYTES, &r->leader_addr_len);
    r->data = get_bin(c, IKD_MAX_FRAME_BYTES, &r->data_len);
    r->id = get_u32(c);
    r->role = (uint8_t)get_u64(c, RAFT_LEADER);
    r->term = get_u64(c, UINT64_MAX);
    r->commit = get_u64(c, UINT64_MAX);
    r->applied = get_u64(c, UINT64_MAX);
    r->snapshot = get_u64(c, UINT64_MAX);
}

static void decode_snap_id(struct cursor *c, struct net_snap_id *id)
{
    id->term = get_u64(c, UINT64_MAX);
    id->index = get_u64(c, UINT64_MAX);
    id->snap_term = get_u64(c, UINT64_MAX);
    id->size_bytes = get_u64(c, UINT64_MAX);
    id->crc = get_u32(c);
    if (id->index == 0 || id->snap_term == 0 || id->snap_term > id->term) {
        c->bad = true;
    }
}

static void decode_snap_chunk(struct cursor *c, struct net_snap_chunk *k)
{
    decode_snap_id(c, &k->id);
    k->offset = get_u64(c, UINT64_MAX);
    k->crc = get_u32(c);
    k->data = get_bin(c, IKD_SNAP_CHUNK_BYTES, &k->len);
    if (k->offset > k->id.size_bytes || k->len > k->id.size_bytes - k->offset) {
        c->bad = true;
    }
}

static void decode_snap_ack(struct cursor *c, struct net_snap_ack *a)
{
    decode_snap_id(c, &a->id);
    a->next_offset = get_u64(c, UINT64_MAX);
    a->status = get_status(c);
    if (a->next_offset > a->id.size_bytes) {
        c->bad = true;
    }
}

static int decode_body(struct cursor *c, struct net_msg *m)
{
    switch (m->kind) {
        case NET_HELLO:
            decode_hello(c, &m->hello);
            break;
        case NET_RAFT:
            if (decode_raft(c, &m->raft) != 0) {
                return IKD_EMALFORMED;
            }
            if (m->raft.type == RAFT_MSG_APPEND && more(c) &&
                decode_traces(c, m) != 0) {
                net_msg_release(m);
                return IKD_EMALFORMED;
            }
            break;
        case NET_FORWARD:
            m->forward.req_id = get_u64(c, UINT64_MAX);
            m->forward.cmd =
                get_bin(c, IKD_MAX_COMMAND_BYTES, &m->forward.cmd_len);
            if (more(c)) {
                get_trace_ctx(c, &m->forward.trace);
            }
            break;
        case NET_FORWARD_RESP:
            m->forward_resp.req_id = get_u64(c, UINT64_MAX);
            m->forward_resp.status = get_status(c);
            m->forward_resp.index = get_u64(c, UINT64_MAX);
            m->forward_resp.term = get_u64(c, UINT64_MAX);
            break;
        case NET_READ_INDEX:
            m->read_index.req_id = get_u64(c, UINT64_MAX);
            m->read_index.term = more(c) ? get_u64(c, UINT64_MAX) : 0;
            break;
        case NET_READ_INDEX_RESP:
            m->read_index_resp.req_id = get_u64(c, UINT64_MAX);
            m->read_index_resp.status = get_status(c);
            m->read_index_resp.index = get_u64(c, UINT64_MAX);
            break;
        case NET_CLIENT_REQ:
            decode_client_req(c, &m->req);
            break;
        case NET_CLIENT_RESP:
            decode_client_resp(c, &m->resp);
            break;
        case NET_SNAP_CHUNK:
            decode_snap_chunk(c, &m->snap_chunk);
            break;
        case NET_SNAP_ACK:
            decode_snap_ack(c, &m->snap_ack);
            break;
        default:
            return IKD_EMALFORMED;
    }
    if (c->bad || c->i != c->n) {
        net_msg_release(m);
        return IKD_EMALFORMED;
    }
    return 0;
}

int net_msg_decode(const uint8_t *buf, size_t len, struct net_msg *m)
{
    msgpack_unpacked unpacked;
    struct cursor c = {NULL, 0, 0, false};
    size_t off = 0;
    uint64_t version;
    int rv;

    memset(m, 0, sizeof(*m));
    if (len > IKD_MAX_FRAME_BYTES || walk_bounds(buf, len) != 0) {
        return IKD_EMALFORMED;
    }

    msgpack_unpacked_init(&unpacked);
    if (msgpack_unpack_next(&unpacked, (const char *)buf, len, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        off != len || unpacked.data.type != MSGPACK_OBJECT_ARRAY) {
        rv = IKD_EMALFORMED;
        goto out;
    }
    c.items = unpacked.data.via.array.ptr;
    c.n = unpacked.data.via.array.size;

    /* The version comes first so that a newer peer is told apart from a
     * broken one, whatever the rest of its message looks like. */
    version = get_u64(&c, UINT64_MAX);
    if (!c.bad && version != IKD_PROTOCOL_VERSION) {
        rv = IKD_EVERSION;
        goto out;
    }
    m->kind = (uint8_t)get_u64(&c, UINT8_MAX);
    rv = c.bad ? IKD_EMALFORMED : decode_body(&c, m);

out:
    msgpack_unpacked_destroy(&unpacked);
    if (rv != 0) {
        memset(m, 0, sizeof(*m));
    }
    return rv;
}

void net_msg_release(struct net_msg *m)
{
    if (m->kind == NET_RAFT && m->raft.type == RAFT_MSG_APPEND) {
        free(m->raft.append.entries);
        m->raft.append.entries = NULL;
        m->raft.append.n_entries = 0;
    }
    free(m->traces);
    m->traces = NULL;
    m->n_traces = 0;
}
