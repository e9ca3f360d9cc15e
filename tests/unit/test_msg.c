/* Wire messages: every kind survives a round trip, and no malformed input
 * crashes the decoder, leaks, or decodes as a message. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "../../net/msg.h"

/* Encode m, check the frame header, and decode the payload into out. */
static int round_trip(const struct net_msg *m,
                      struct net_msg *out,
                      uint8_t **frame)
{
    size_t len;
    size_t payload;

    assert_int_equal(net_msg_encode(m, frame, &len), 0);
    assert_true(len > 4);
    payload = (size_t)(*frame)[0] << 24 | (size_t)(*frame)[1] << 16 |
              (size_t)(*frame)[2] << 8 | (*frame)[3];
    assert_int_equal(payload, len - 4);
    return net_msg_decode(*frame + 4, len - 4, out);
}

static void test_hello_round_trip(void **state)
{
    struct net_msg m = {.kind = NET_HELLO};
    struct net_msg d;
    uint8_t *frame;

    (void)state;
    m.hello.node_id = 3;
    m.hello.cluster_hash = 0xfedcba9876543210ull;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.kind, NET_HELLO);
    assert_int_equal(d.hello.node_id, 3);
    assert_true(d.hello.cluster_hash == 0xfedcba9876543210ull);
    net_msg_release(&d);
    free(frame);
}

static void test_raft_vote_round_trip(void **state)
{
    struct net_msg m = {.kind = NET_RAFT};
    struct net_msg d;
    uint8_t *frame;

    (void)state;
    m.raft.type = RAFT_MSG_VOTE;
    m.raft.from = 1;
    m.raft.to = 2;
    m.raft.term = UINT64_MAX;
    m.raft.vote.last_index = 77;
    m.raft.vote.last_term = 5;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.raft.type, RAFT_MSG_VOTE);
    assert_int_equal(d.raft.from, 1);
    assert_int_equal(d.raft.to, 2);
    assert_true(d.raft.term == UINT64_MAX);
    assert_int_equal(d.raft.vote.last_index, 77);
    assert_int_equal(d.raft.vote.last_term, 5);
    free(frame);

    m.raft.type = RAFT_MSG_VOTE_RESP;
    m.raft.vote_resp.granted = true;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.raft.type, RAFT_MSG_VOTE_RESP);
    assert_true(d.raft.vote_resp.granted);
    free(frame);
}

static void test_raft_append_round_trip(void **state)
{
    static const char *const data[] = {"", "a", "hello world"};
    struct raft_entry entries[3];
    struct net_msg m = {.kind = NET_RAFT};
    struct net_msg d;
    uint8_t *frame;
    size_t i;

    (void)state;
    for (i = 0; i < 3; i++) {
        entries[i].term = 10 + i;
        entries[i].type = i == 0 ? RAFT_ENTRY_NOOP : RAFT_ENTRY_COMMAND;
        entries[i].len = (uint32_t)strlen(data[i]);
        entries[i].data = (uint8_t *)data[i];
    }
    m.raft.type = RAFT_MSG_APPEND;
    m.raft.from = 1;
    m.raft.to = 3;
    m.raft.term = 12;
    m.raft.append.prev_index = 100;
    m.raft.append.prev_term = 9;
    m.raft.append.commit = 99;
    m.raft.append.read_seq = 4;
    m.raft.append.n_entries = 3;
    m.raft.append.entries = entries;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.raft.append.prev_index, 100);
    assert_int_equal(d.raft.append.prev_term, 9);
    assert_int_equal(d.raft.append.commit, 99);
    assert_int_equal(d.raft.append.read_seq, 4);
    assert_int_equal(d.raft.append.n_entries, 3);
    for (i = 0; i < 3; i++) {
        const struct raft_entry *e = &d.raft.append.entries[i];
        assert_int_equal(e->term, 10 + i);
        assert_int_equal(e->type, entries[i].type);
        assert_int_equal(e->len, strlen(data[i]));
        assert_memory_equal(e->data, data[i], e->len);
        assert_non_null(e->data);
    }
    /* Zero copy: the bytes are those of the frame. */
    assert_true(d.raft.append.entries[2].data > frame &&
                d.raft.append.entries[2].data < frame + 200);
    net_msg_release(&d);
    assert_null(d.raft.append.entries);
    free(frame);

    /* A heartbeat carries no entries and allocates nothing. */
    m.raft.append.n_entries = 0;
    m.raft.append.entries = NULL;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.raft.append.n_entries, 0);
    assert_null(d.raft.append.entries);
    net_msg_release(&d);
    free(frame);
}

static void test_raft_append_resp_round_trip(void **state)
{
    struct net_msg m = {.kind = NET_RAFT};
    struct net_msg d;
    uint8_t *frame;

    (void)state;
    m.raft.type = RAFT_MSG_APPEND_RESP;
    m.raft.from = 2;
    m.raft.to = 1;
    m.raft.term = 8;
    m.raft.append_resp.success = false;
    m.raft.append_resp.index = 50;
    m.raft.append_resp.hint_index = 40;
    m.raft.append_resp.hint_term = 6;
    m.raft.append_resp.read_seq = 123456789012ull;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.raft.type, RAFT_MSG_APPEND_RESP);
    assert_false(d.raft.append_resp.success);
    assert_int_equal(d.raft.append_resp.index, 50);
    assert_int_equal(d.raft.append_resp.hint_index, 40);
    assert_int_equal(d.raft.append_resp.hint_term, 6);
    assert_true(d.raft.append_resp.read_seq == 123456789012ull);
    free(frame);
}

static void test_forward_and_read_index_round_trip(void **state)
{
    struct net_msg m = {.kind = NET_FORWARD};
    struct net_msg d;
    uint8_t *frame;

    (void)state;
    m.forward.req_id = 42;
    m.forward.cmd = (const uint8_t *)"\x01\x02\x00\x03";
    m.forward.cmd_len = 4;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.forward.req_id, 42);
    assert_int_equal(d.forward.cmd_len, 4);
    assert_memory_equal(d.forward.cmd, "\x01\x02\x00\x03", 4);
    free(frame);

    m.kind = NET_FORWARD_RESP;
    m.forward_resp.req_id = 43;
    m.forward_resp.status = IKD_ENOTLEADER;
    m.forward_resp.index = 9;
    m.forward_resp.term = 2;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.forward_resp.req_id, 43);
    assert_int_equal(d.forward_resp.status, IKD_ENOTLEADER);
    assert_int_equal(d.forward_resp.index, 9);
    assert_int_equal(d.forward_resp.term, 2);
    free(frame);

    m.kind = NET_READ_INDEX;
    m.read_index.req_id = 44;
    m.read_index.term = 7;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.kind, NET_READ_INDEX);
    assert_int_equal(d.read_index.req_id, 44);
    assert_int_equal(d.read_index.term, 7);
    free(frame);

    m.kind = NET_READ_INDEX_RESP;
    m.read_index_resp.req_id = 45;
    m.read_index_resp.status = 0;
    m.read_index_resp.index = 1000;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.read_index_resp.req_id, 45);
    assert_int_equal(d.read_index_resp.status, 0);
    assert_int_equal(d.read_index_resp.index, 1000);
    free(frame);
}

static void test_client_req_round_trip(void **state)
{
    struct net_msg m = {.kind = NET_CLIENT_REQ};
    struct net_msg d;
    uint8_t *frame;
    uint8_t op;

    (void)state;
    for (op = NET_OP_PROPOSE; op <= NET_OP_STATUS; op++) {
        m.req.req_id = 1000u + op;
        m.req.op = op;
        m.req.cmd = op == NET_OP_PROPOSE ? (const uint8_t *)"cmd" : NULL;
        m.req.cmd_len = op == NET_OP_PROPOSE ? 3 : 0;
        m.req.key = op == NET_OP_PROPOSE ? NULL : "dir/key";
        m.req.key_len = op == NET_OP_PROPOSE ? 0 : 7;
        assert_int_equal(round_trip(&m, &d, &frame), 0);
        assert_int_equal(d.kind, NET_CLIENT_REQ);
        assert_int_equal(d.req.req_id, 1000u + op);
        assert_int_equal(d.req.op, op);
        assert_int_equal(d.req.cmd_len, m.req.cmd_len);
        assert_int_equal(d.req.key_len, m.req.key_len);
        assert_non_null(d.req.cmd);
        assert_non_null(d.req.key);
        assert_memory_equal(d.req.cmd, "cmd", d.req.cmd_len);
        assert_memory_equal(d.req.key, "dir/key", d.req.key_len);
        free(frame);
    }
}

static void test_client_resp_round_trip(void **state)
{
    struct net_msg m = {.kind = NET_CLIENT_RESP};
    struct net_msg d;
    uint8_t *frame;

    (void)state;
    m.resp.req_id = 7;
    m.resp.status = -2; /* -ENOENT */
    m.resp.value = 65;
    m.resp.leader_id = 2;
    m.resp.leader_addr = "127.0.0.1:1112";
    m.resp.leader_addr_len = 14;
    m.resp.data = (const uint8_t *)"a\0b/c\0";
    m.resp.data_len = 6;
    m.resp.id = 1;
    m.resp.role = RAFT_CANDIDATE;
    m.resp.term = 5;
    m.resp.commit = 20;
    m.resp.applied = 19;
    m.resp.snapshot = 17;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.resp.req_id, 7);
    assert_int_equal(d.resp.status, -2);
    assert_int_equal(d.resp.value, 65);
    assert_int_equal(d.resp.leader_id, 2);
    assert_int_equal(d.resp.leader_addr_len, 14);
    assert_memory_equal(d.resp.leader_addr, "127.0.0.1:1112", 14);
    assert_int_equal(d.resp.data_len, 6);
    assert_memory_equal(d.resp.data, "a\0b/c\0", 6);
    assert_int_equal(d.resp.id, 1);
    assert_int_equal(d.resp.role, RAFT_CANDIDATE);
    assert_int_equal(d.resp.term, 5);
    assert_int_equal(d.resp.commit, 20);
    assert_int_equal(d.resp.applied, 19);
    assert_int_equal(d.resp.snapshot, 17);
    free(frame);
}

static const struct net_snap_id snap_id = {
    .term = 9,
    .index = 50000,
    .snap_term = 8,
    .size_bytes = 3u << 20,
    .crc = 0xdeadbeef,
};

static void assert_snap_id(const struct net_snap_id *id)
{
    assert_int_equal(id->term, 9);
    assert_int_equal(id->index, 50000);
    assert_int_equal(id->snap_term, 8);
    assert_int_equal(id->size_bytes, 3u << 20);
    assert_int_equal(id->crc, 0xdeadbeef);
}

static const struct ikd_trace_ctx trace_a = {
    .trace_id = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
    .span_id = {0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8},
    .sampled = true,
};

static void test_trace_contexts_round_trip_and_cost_nothing_when_absent(
    void **state)
{
    struct raft_entry entries[2] = {{.term = 1}, {.term = 1}};
    struct net_trace_ref refs[2] = {{.index = 8, .ctx = trace_a},
                                    {.index = 9, .ctx = trace_a}};
    struct net_msg m = {.kind = NET_RAFT};
    struct net_msg d;
    uint8_t *frame;
    size_t plain_len, traced_len;

    (void)state;
    m.raft.type = RAFT_MSG_APPEND;
    m.raft.from = 1;
    m.raft.to = 2;
    m.raft.append.prev_index = 7;
    m.raft.append.entries = entries;
    m.raft.append.n_entries = 2;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.n_traces, 0);
    assert_null(d.traces);
    net_msg_release(&d);
    free(frame);
    assert_int_equal(net_msg_encode(&m, &frame, &plain_len), 0);
    free(frame);

    refs[1].ctx.span_id[0] = 0xb1;
    m.traces = refs;
    m.n_traces = 2;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.n_traces, 2);
    assert_int_equal(d.traces[1].index, 9);
    assert_memory_equal(d.traces[0].ctx.trace_id, trace_a.trace_id, 16);
    assert_int_equal(d.traces[1].ctx.span_id[0], 0xb1);
    assert_true(d.traces[1].ctx.sampled);
    net_msg_release(&d);
    free(frame);
    assert_int_equal(net_msg_encode(&m, &frame, &traced_len), 0);
    free(frame);
    /* An array header, and per entry an index and a 25-byte bin. */
    assert_true(traced_len - plain_len <= 1 + 2 * (1 + 1 + 2 + 25));

    m = (struct net_msg){.kind = NET_FORWARD};
    m.forward.req_id = 5;
    m.forward.trace = trace_a;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_memory_equal(&d.forward.trace, &trace_a, sizeof(trace_a));
    free(frame);

    m = (struct net_msg){.kind = NET_CLIENT_REQ};
    m.req.op = NET_OP_PROPOSE;
    m.req.trace = trace_a;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_memory_equal(&d.req.trace, &trace_a, sizeof(trace_a));
    free(frame);
    m.req.trace = (struct ikd_trace_ctx){0};
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_false(ikd_trace_ctx_valid(&d.req.trace));
    free(frame);
}

static void test_malformed_trace_contexts_are_refused(void **state)
{
    struct net_msg m = {.kind = NET_FORWARD};
    struct net_msg d;
    uint8_t *frame;
    size_t len;

    (void)state;
    /* A context with a zero span id is not a context. */
    m.forward.trace = trace_a;
    assert_int_equal(net_msg_encode(&m, &frame, &len), 0);
    memset(frame + len - 1 - 8, 0, 8);
    assert_int_equal(net_msg_decode(frame + 4, len - 4, &d), IKD_EMALFORMED);
    /* A short one. */
    frame[len - 1 - 25] = 24;
    assert_int_equal(net_msg_decode(frame + 4, len - 5, &d), IKD_EMALFORMED);
    free(frame);
}

static void test_snap_chunk_and_ack_round_trip(void **state)
{
    struct net_msg m = {.kind = NET_SNAP_CHUNK};
    struct net_msg d;
    uint8_t *frame;

    (void)state;
    m.snap_chunk.id = snap_id;
    m.snap_chunk.offset = 1u << 20;
    m.snap_chunk.crc = 0x1234;
    m.snap_chunk.data = (const uint8_t *)"chunk";
    m.snap_chunk.len = 5;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.kind, NET_SNAP_CHUNK);
    assert_snap_id(&d.snap_chunk.id);
    assert_int_equal(d.snap_chunk.offset, 1u << 20);
    assert_int_equal(d.snap_chunk.crc, 0x1234);
    assert_int_equal(d.snap_chunk.len, 5);
    assert_memory_equal(d.snap_chunk.data, "chunk", 5);
    free(frame);

    m = (struct net_msg){.kind = NET_SNAP_ACK};
    m.snap_ack.id = snap_id;
    m.snap_ack.next_offset = 3u << 20;
    m.snap_ack.status = -5;
    assert_int_equal(round_trip(&m, &d, &frame), 0);
    assert_int_equal(d.kind, NET_SNAP_ACK);
    assert_snap_id(&d.snap_ack.id);
    assert_int_equal(d.snap_ack.next_offset, 3u << 20);
    assert_int_equal(d.snap_ack.status, -5);
    free(frame);
}

/* A chunk past the end of its file, an acknowledgement beyond it, and a
 * snapshot term above the leader's term do not decode. */
static void test_snap_messages_out_of_bounds_are_malformed(void **state)
{
    struct net_msg m = {.kind = NET_SNAP_CHUNK};
    struct net_msg d;
    uint8_t *frame;

    (void)state;
    m.snap_chunk.id = snap_id;
    m.snap_chunk.offset = (3u << 20) - 2;
    m.snap_chunk.data = (const uint8_t *)"abc";
    m.snap_chunk.len = 3;
    assert_int_equal(round_trip(&m, &d, &frame), IKD_EMALFORMED);
    free(frame);

    m = (struct net_msg){.kind = NET_SNAP_ACK};
    m.snap_ack.id = snap_id;
    m.snap_ack.next_offset = (3u << 20) + 1;
    assert_int_equal(round_trip(&m, &d, &frame), IKD_EMALFORMED);
    free(frame);

    m.snap_ack.next_offset = 0;
    m.snap_ack.id.snap_term = 10;
    assert_int_equal(round_trip(&m, &d, &frame), IKD_EMALFORMED);
    free(frame);

    m.snap_ack.id.snap_term = 8;
    m.snap_ack.id.index = 0;
    assert_int_equal(round_trip(&m, &d, &frame), IKD_EMALFORMED);
    free(frame);
}

/* An AppendEntries with a few entries, as a frame. */
static void encode_append(uint8_t **frame, size_t *len)
{
    struct raft_entry entries[4];
    struct net_msg m = {.kind = NET_RAFT};
    size_t i;

    for (i = 0; i < 4; i++) {
        entries[i].term = 300 + i;
        entries[i].type = RAFT_ENTRY_COMMAND;
        entries[i].len = 20;
        entries[i].data = (uint8_t *)"0123456789abcdefghij";
    }
    m.raft.type = RAFT_MSG_APPEND;
    m.raft.from = 1;
    m.raft.to = 2;
    m.raft.term = 70000;
    m.raft.append.commit = 1ull << 40;
    m.raft.append.n_entries = 4;
    m.raft.append.entries = entries;
    assert_int_equal(net_msg_encode(&m, frame, len), 0);
}

static void test_truncated_frames_are_malformed(void **state)
{
    uint8_t *frame;
    size_t len;
    size_t cut;

    (void)state;
    encode_append(&frame, &len);
    for (cut = 0; cut < len - 4; cut++) {
        struct net_msg d;
        /* A copy of exactly cut bytes, so ASan sees any over-read. */
        uint8_t *p = malloc(cut > 0 ? cut : 1);

        assert_non_null(p);
        memcpy(p, frame + 4, cut);
        assert_int_equal(net_msg_decode(p, cut, &d), IKD_EMALFORMED);
        free(p);
    }
    free(frame);
}

static void test_trailing_bytes_are_malformed(void **state)
{
    uint8_t *frame;
    uint8_t *p;
    size_t len;
    struct net_msg d;

    (void)state;
    encode_append(&frame, &len);
    p = malloc(len + 1);
    assert_non_null(p);
    memcpy(p, frame, len);
    p[len] = 0x00;
    assert_int_equal(net_msg_decode(p + 4, len - 3, &d), IKD_EMALFORMED);
    free(p);
    free(frame);
}

/* Pack an array of small items described by fmt: 'u' a uint, 'n' a
 * negative int, 's' a string, 'b' a bool, 'x' a bin. */
static void pack_items(msgpack_sbuffer *sb, const char *fmt, ...)
{
    msgpack_packer pk;
    va_list ap;
    const char *f;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, strlen(fmt));
    va_start(ap, fmt);
    for (f = fmt; *f != '\0'; f++) {
        switch (*f) {
            case 'u':
                msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
                break;
            case 'n':
                msgpack_pack_int64(&pk, va_arg(ap, int64_t));
                break;
            case 's': {
                const char *s = va_arg(ap, const char *);
                msgpack_pack_str_with_body(&pk, s, strlen(s));
                break;
            }
            case 'b':
                msgpack_pack_true(&pk);
                break;
            case 'x':
                msgpack_pack_bin_with_body(&pk, "xy", 2);
                break;
        }
    }
    va_end(ap);
}

static int decode_sb(msgpack_sbuffer *sb)
{
    struct net_msg d;
    int rv = net_msg_decode((const uint8_t *)sb->data, sb->size, &d);

    if (rv == 0) {
        net_msg_release(&d);
    }
    msgpack_sbuffer_destroy(sb);
    return rv;
}

static void test_wrong_types_are_malformed(void **state)
{
    msgpack_sbuffer sb;
    const uint64_t v = IKD_PROTOCOL_VERSION;

    (void)state;
    /* The well-formed HELLO, as a control. */
    pack_items(&sb, "uuuu", v, (uint64_t)NET_HELLO, (uint64_t)1, (uint64_t)2);
    assert_int_equal(decode_sb(&sb), 0);

    pack_items(&sb, "uusu", v, (uint64_t)NET_HELLO, "1", (uint64_t)2);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    /* A node id past 32 bits. */
    pack_items(&sb, "uuuu", v, (uint64_t)NET_HELLO, (uint64_t)1 << 32,
               (uint64_t)2);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    /* Too few and too many fields. */
    pack_items(&sb, "uuu", v, (uint64_t)NET_HELLO, (uint64_t)1);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    pack_items(&sb, "uuuuu", v, (uint64_t)NET_HELLO, (uint64_t)1, (uint64_t)2,
               (uint64_t)3);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    /* Unknown kinds. */
    pack_items(&sb, "uuuu", v, (uint64_t)0, (uint64_t)1, (uint64_t)2);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    pack_items(&sb, "uuuu", v, (uint64_t)99, (uint64_t)1, (uint64_t)2);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    /* A bool where a number belongs, a bin where a string belongs. */
    pack_items(&sb, "uuub", v, (uint64_t)NET_READ_INDEX_RESP, (uint64_t)1);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    pack_items(&sb, "uuuuxx", v, (uint64_t)NET_CLIENT_REQ, (uint64_t)1,
               (uint64_t)NET_OP_GET);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    /* An unknown client operation, and a positive status. */
    pack_items(&sb, "uuuuxs", v, (uint64_t)NET_CLIENT_REQ, (uint64_t)1,
               (uint64_t)NET_OP_MEMBER_REMOVE + 1, "k");
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    pack_items(&sb, "uuuuu", v, (uint64_t)NET_READ_INDEX_RESP, (uint64_t)1,
               (uint64_t)5, (uint64_t)1);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    pack_items(&sb, "uuunu", v, (uint64_t)NET_READ_INDEX_RESP, (uint64_t)1,
               (int64_t)INT32_MIN - 1, (uint64_t)1);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    /* An unknown Raft message type. */
    pack_items(&sb, "uuuuuu", v, (uint64_t)NET_RAFT, (uint64_t)9, (uint64_t)1,
               (uint64_t)2, (uint64_t)3);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
    /* Not an array at all. */
    assert_int_equal(
        net_msg_decode((const uint8_t *)"\x01", 1, &(struct net_msg){0}),
        IKD_EMALFORMED);
}

static void test_other_version_is_reported(void **state)
{
    msgpack_sbuffer sb;

    (void)state;
    pack_items(&sb, "uuuu", (uint64_t)IKD_PROTOCOL_VERSION + 1,
               (uint64_t)NET_HELLO, (uint64_t)1, (uint64_t)2);
    assert_int_equal(decode_sb(&sb), IKD_EVERSION);
    /* Whatever follows the version. */
    pack_items(&sb, "usx", (uint64_t)IKD_PROTOCOL_VERSION + 7, "?");
    assert_int_equal(decode_sb(&sb), IKD_EVERSION);
    pack_items(&sb, "s", "1");
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
}

static void test_huge_counts_are_malformed(void **state)
{
    /* Array, map, str and bin headers that claim 4 GiB. */
    static const uint8_t bad[][8] = {
        {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01},
        {0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01},
        {0x93, 0x01, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff},
        {0x93, 0x01, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff},
        {0x93, 0x01, 0x01, 0xdc, 0xff, 0xff, 0x01, 0x01},
        {0x93, 0x01, 0x01, 0xc9, 0x7f, 0xff, 0xff, 0xff},
    };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct net_msg d;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(net_msg_decode(bad[i], sizeof(bad[i]), &d),
                         IKD_EMALFORMED);
    }

    /* An AppendEntries whose entries array claims 2^32 - 1 items. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 11);
    msgpack_pack_uint64(&pk, IKD_PROTOCOL_VERSION);
    msgpack_pack_uint64(&pk, NET_RAFT);
    msgpack_pack_uint64(&pk, RAFT_MSG_APPEND);
    for (i = 0; i < 7; i++) {
        msgpack_pack_uint64(&pk, 1);
    }
    msgpack_pack_array(&pk, UINT32_MAX);
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);

    /* One entry more than a message may carry, each well formed. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 11);
    msgpack_pack_uint64(&pk, IKD_PROTOCOL_VERSION);
    msgpack_pack_uint64(&pk, NET_RAFT);
    msgpack_pack_uint64(&pk, RAFT_MSG_APPEND);
    for (i = 0; i < 7; i++) {
        msgpack_pack_uint64(&pk, 1);
    }
    msgpack_pack_array(&pk, IKD_MAX_APPEND_ENTRIES + 1);
    for (i = 0; i < IKD_MAX_APPEND_ENTRIES + 1; i++) {
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint64(&pk, 1);
        msgpack_pack_uint64(&pk, RAFT_ENTRY_COMMAND);
        msgpack_pack_bin_with_body(&pk, "z", 1);
    }
    assert_int_equal(decode_sb(&sb), IKD_EMALFORMED);
}

/* Decode buf; a success must be releasable. */
static void decode_anything(const uint8_t *buf, size_t len)
{
    struct net_msg d;
    int rv = net_msg_decode(buf, len, &d);

    assert_true(rv == 0 || rv == IKD_EMALFORMED || rv == IKD_EVERSION);
    if (rv == 0) {
        net_msg_release(&d);
    }
}

static void test_random_bytes_never_crash(void **state)
{
    uint8_t buf[256];
    uint8_t *frame;
    size_t len;
    int round;
    size_t i;

    (void)state;
    srand(20261203);
    for (round = 0; round < 20000; round++) {
        size_t n = (size_t)rand() % sizeof(buf);
        uint8_t *p;

        for (i = 0; i < n; i++) {
            buf[i] = (uint8_t)rand();
        }
        /* Often start like a real message, so decoding gets further. */
        if (n > 2 && round % 2 == 0) {
            buf[0] = (uint8_t)(0x90 | (rand() % 16));
            buf[1] = IKD_PROTOCOL_VERSION;
        }
        p = malloc(n > 0 ? n : 1);
        assert_non_null(p);
        memcpy(p, buf, n);
        decode_anything(p, n);
        free(p);
    }

    /* Valid frames with a byte or two changed. */
    encode_append(&frame, &len);
    for (round = 0; round < 20000; round++) {
        uint8_t *p = malloc(len - 4);

        assert_non_null(p);
        memcpy(p, frame + 4, len - 4);
        p[(size_t)rand() % (len - 4)] = (uint8_t)rand();
        if (round % 2 == 0) {
            p[(size_t)rand() % (len - 4)] = (uint8_t)rand();
        }
        decode_anything(p, len - 4);
        free(p);
    }
    free(frame);
}

static void test_encode_past_frame_limit_fails(void **state)
{
    struct net_msg m = {.kind = NET_FORWARD};
    uint8_t *frame = NULL;
    uint8_t *big;
    size_t len = 0;

    (void)state;
    big = calloc(1, IKD_MAX_FRAME_BYTES + 1);
    assert_non_null(big);
    m.forward.cmd = big;
    m.forward.cmd_len = IKD_MAX_FRAME_BYTES + 1;
    assert_int_equal(net_msg_encode(&m, &frame, &len), IKD_ELIMIT);
    assert_null(frame);

    /* The largest command fits, and its bytes are checked on decode. */
    m.forward.cmd_len = IKD_MAX_COMMAND_BYTES;
    assert_int_equal(net_msg_encode(&m, &frame, &len), 0);
    assert_true(len - 4 <= IKD_MAX_FRAME_BYTES);
    free(frame);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_round_trip),
        cmocka_unit_test(test_raft_vote_round_trip),
        cmocka_unit_test(test_raft_append_round_trip),
        cmocka_unit_test(test_raft_append_resp_round_trip),
        cmocka_unit_test(test_forward_and_read_index_round_trip),
        cmocka_unit_test(test_client_req_round_trip),
        cmocka_unit_test(test_client_resp_round_trip),
        cmocka_unit_test(
            test_trace_contexts_round_trip_and_cost_nothing_when_absent),
        cmocka_unit_test(test_malformed_trace_contexts_are_refused),
        cmocka_unit_test(test_snap_chunk_and_ack_round_trip),
        cmocka_unit_test(test_snap_messages_out_of_bounds_are_malformed),
        cmocka_unit_test(test_truncated_frames_are_malformed),
        cmocka_unit_test(test_trailing_bytes_are_malformed),
        cmocka_unit_test(test_wrong_types_are_malformed),
        cmocka_unit_test(test_other_version_is_reported),
        cmocka_unit_test(test_huge_counts_are_malformed),
        cmocka_unit_test(test_random_bytes_never_crash),
        cmocka_unit_test(test_encode_past_frame_limit_fails),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
