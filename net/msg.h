/* Messages on the wire: framing and msgpack encoding.
 *
 * Frame: a 4-byte big-endian length L (not counting itself, at most
 * IKD_MAX_FRAME_BYTES), then L bytes of one msgpack array:
 *     [version, kind, fields...]
 * version is IKD_PROTOCOL_VERSION; the fields of each kind are listed in
 * msg.c next to its encoder.  Every connection starts with a HELLO from the
 * side that opened it. */

#ifndef NET_MSG_H
#define NET_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "../raft/raft.h"
#include "trace.h"

enum net_kind {
    NET_HELLO = 1,       /* opener introduces itself: node id, 0 for a
                            client */
    NET_RAFT,            /* a struct raft_msg between nodes */
    NET_FORWARD,         /* a follower hands a command to the leader */
    NET_FORWARD_RESP,    /* the leader's answer: where it was appended */
    NET_READ_INDEX,      /* a follower asks the leader for a read point */
    NET_READ_INDEX_RESP, /* the leader's answer */
    NET_CLIENT_REQ,      /* a client request */
    NET_CLIENT_RESP,     /* its reply */
    NET_SNAP_CHUNK,      /* a leader streams a snapshot file (Raft 7) */
    NET_SNAP_ACK,        /* the follower: how much of it it holds */
};

enum net_op {
    NET_OP_PROPOSE = 1, /* cmd: an encoded struct kv_cmd; commit and apply */
    NET_OP_GET,         /* key: linearizable read */
    NET_OP_GET_LOCAL,   /* key: this node's state, possibly stale */
    NET_OP_LIST,        /* key: the prefix */
    NET_OP_STATUS,      /* this node's view */
    NET_OP_TRANSFER,    /* key: the target id in decimal, or empty for the
                           most up-to-date follower; the leader answers once
                           the transfer started */
    /* Membership (Raft 4).  LIST: data holds "ID HOST:PORT ROLE\n" a
     * server of the latest configuration, from the leader; with key
     * NET_MEMBER_LIST_LOCAL, from any node, as it knows the configuration
     * (possibly behind the leader's).  ADD: key "ID HOST:PORT";
     * REMOVE: key "ID"; the leader answers once the change is committed
     * (ADD: once the server is a voter), status 0 also when it was made
     * before, IKD_ECHANGING while another change is in progress. */
    NET_OP_MEMBER_LIST,
    NET_OP_MEMBER_ADD,
    NET_OP_MEMBER_REMOVE,
};

#define NET_MEMBER_LIST_LOCAL "local"

/* A sampled span's W3C trace context on the wire: a bin of
 * NET_TRACE_CTX_BYTES holding the 16-byte trace id, the 8-byte span id and
 * one byte of trace flags (bit 0: sampled).  It is only ever sent for
 * sampled spans, as an optional last field: absent, the message costs not
 * a byte more. */
#define NET_TRACE_CTX_BYTES 25
/* Most entry contexts one AppendEntries carries. */
#define NET_MAX_TRACE_REFS 16

_Static_assert(NET_MAX_TRACE_REFS <= IKD_MAX_APPEND_ENTRIES,
               "at most one context per entry");

/* The trace context of the entry at index, in an AppendEntries. */
struct net_trace_ref
{
    raft_index_t index;
    struct ikd_trace_ctx ctx;
};

struct net_hello
{
    raft_id_t node_id;
    uint64_t cluster_hash; /* of the --cluster list, to catch misconfig */
};

struct net_forward
{
    uint64_t req_id;
    const uint8_t *cmd;
    size_t cmd_len;
    struct ikd_trace_ctx trace; /* all zero when not traced */
};

struct net_forward_resp
{
    uint64_t req_id;
    int32_t status; /* 0, or IKD_ENOTLEADER... */
    raft_index_t index;
    raft_term_t term;
};

struct net_read_index
{
    uint64_t req_id;
    raft_term_t term; /* the asking node's term when it asked; 0: unknown */
};

struct net_read_index_resp
{
    uint64_t req_id;
    int32_t status;
    raft_index_t index;
};

struct net_client_req
{
    uint64_t req_id;
    uint8_t op; /* enum net_op */
    const uint8_t *cmd;
    size_t cmd_len;
    const char *key;
    size_t key_len;
    struct ikd_trace_ctx trace; /* all zero when not traced */
};

struct net_client_resp
{
    uint64_t req_id;
    int32_t status; /* 0 or a negative code (-ENOENT, IKD_ENOTLEADER..) */
    uint64_t value; /* PROPOSE: the state machine's result value */
    /* Set with IKD_ENOTLEADER when a leader is known, so the client can go
     * there; "" otherwise. */
    raft_id_t leader_id;
    const char *leader_addr;
    size_t leader_addr_len;
    /* GET: the value.  LIST: the keys, each followed by a NUL byte. */
    const uint8_t *data;
    size_t data_len;
    /* STATUS: this node's view. */
    raft_id_t id;
    uint8_t role;
    raft_term_t term;
    raft_index_t commit;
    raft_index_t applied;
    raft_index_t snapshot; /* the latest snapshot point, 0 before one */
};

/* Names one snapshot file as a leader offers it: a transfer resumes only
 * for the same name. */
struct net_snap_id
{
    raft_term_t term;      /* the leader's term when it offered the file */
    raft_index_t index;    /* the snapshot's last entry */
    raft_term_t snap_term; /* and its term */
    uint64_t size_bytes;
    uint32_t crc; /* CRC-32 of the whole file */
};

/* Bytes [offset, offset + len) of the file, at most IKD_SNAP_CHUNK_BYTES,
 * with their own CRC-32. */
struct net_snap_chunk
{
    struct net_snap_id id;
    uint64_t offset;
    uint32_t crc;
    const uint8_t *data;
    size_t len;
};

/* The follower holds the file's first next_offset bytes; status is 0, or
 * a negative code when it gave the transfer up (the leader stops). */
struct net_snap_ack
{
    struct net_snap_id id;
    uint64_t next_offset;
    int32_t status;
};

struct net_msg
{
    uint8_t kind; /* enum net_kind */
    union {
        struct net_hello hello;
        struct raft_msg raft;
        struct net_forward forward;
        struct net_forward_resp forward_resp;
        struct net_read_index read_index;
        struct net_read_index_resp read_index_resp;
        struct net_client_req req;
        struct net_client_resp resp;
        struct net_snap_chunk snap_chunk;
        struct net_snap_ack snap_ack;
    };
    /* NET_RAFT with RAFT_MSG_APPEND only: contexts of traced entries among
     * those it carries, at most NET_MAX_TRACE_REFS.  Decoded ones are in
     * an array that net_msg_release() frees. */
    struct net_trace_ref *traces;
    size_t n_traces;
};

/* A client operation's name ("propose", "get"...), "other" for an
 * unknown one. */
const char *net_op_name(uint8_t op);

/* Encode m as one whole frame (length prefix included) into a new malloc'd
 * buffer *out of *len bytes.  0, -ENOMEM, or IKD_ELIMIT past
 * IKD_MAX_FRAME_BYTES. */
int net_msg_encode(const struct net_msg *m, uint8_t **out, size_t *len);

/* Decode one frame's payload (without its length prefix).  Byte strings in
 * m point into buf; raft entries are in an array the decoder allocates,
 * which net_msg_release() frees.  Returns 0, IKD_EVERSION for another
 * protocol version, or IKD_EMALFORMED (with nothing to release). */
int net_msg_decode(const uint8_t *buf, size_t len, struct net_msg *m);
void net_msg_release(struct net_msg *m);

#endif /* NET_MSG_H */
