/* Commands of the file-tree key-value state machine, and key validation.
 *
 * A command is what a client proposes and the log carries.  Inode numbers
 * are assigned at apply time from a counter kept in the state, so every node
 * assigns the same numbers; times come from the proposer, inside the
 * command, never from the applying node's clock. */

#ifndef KV_CMD_H
#define KV_CMD_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_ROOT_INO 1
/* Inode numbers below this are reserved for the file system's own files
 * (the .ikada/ folder); the state machine hands out numbers from here. */
#define KV_FIRST_INO 64

enum kv_op {
    KV_OP_PUT = 1, /* path, data: replace the whole value, creating parent
                      folders as needed (mkdir -p); result: the ino */
    KV_OP_DEL,     /* path: remove a file; -ENOENT if absent, -EISDIR */
    KV_OP_CREATE,  /* parent, name, mode, flags KV_F_EXCL/KV_F_TRUNC:
                      create an empty file or open an existing one
                      (truncating with KV_F_TRUNC); result: the ino */
    KV_OP_MKDIR,   /* parent, name, mode; result: the ino */
    KV_OP_UNLINK,  /* parent, name */
    KV_OP_RMDIR,   /* parent, name; -ENOTEMPTY */
    KV_OP_RENAME,  /* parent, name, new_parent, new_name, flags
                      KV_F_NOREPLACE/KV_F_EXCHANGE: atomic, replaces an
                      existing file or empty folder at the target */
    KV_OP_WRITE,   /* ino, offset, data; result: the new size */
    KV_OP_APPEND,  /* ino, data: write at the current end, whatever size a
                      client believed; result: the new size */
    KV_OP_SETATTR, /* ino, valid (KV_SET_*), size, mode, mtime_ns */
    KV_OP_CAS,     /* path, expect, data, flags KV_F_ABSENT: replace the
                      value of key path with data when its value is
                      exactly expect (or, with KV_F_ABSENT, when the key
                      does not exist), as PUT does; KV_CAS_MISMATCH when
                      not; result: the ino */
    KV_OP_END
};

enum {
    KV_F_EXCL = 1u << 0,
    KV_F_TRUNC = 1u << 1,
    KV_F_NOREPLACE = 1u << 2,
    KV_F_EXCHANGE = 1u << 3,
    KV_F_ABSENT = 1u << 4,
};

/* The status of a compare-and-set whose key did not hold the expected
 * value: nothing changed. */
#define KV_CAS_MISMATCH (-ECANCELED)

/* Client sessions (exactly-once commands).  A command with a non-zero
 * session is applied at most once per (session, seq): the state machine
 * keeps, for each session, the seq and result of its latest command, in
 * the same transaction as the apply.  A command whose seq equals the
 * stored one gets the stored result without being applied again; an older
 * seq gets KV_SESSION_STALE.  A client therefore keeps at most one command
 * of a session in flight, and a retry reuses the seq of the command it
 * retries.
 *
 * Sessions are forgotten by a rule that depends on the log alone, so every
 * node forgets the same ones at the same index: a session unused for
 * KV_SESSION_TTL_NS of log time (the largest time_ns applied so far) is
 * dropped, and past KV_SESSION_MAX sessions the one whose last command is
 * the oldest in the log goes.  A retry that arrives after its session was
 * forgotten is applied again: clients give up long before the TTL. */
#define KV_SESSION_MAX 1024
#define KV_SESSION_TTL_NS (600ll * 1000 * 1000 * 1000)
#define KV_SESSION_STALE (-ESTALE)

enum {
    KV_SET_SIZE = 1u << 0,
    KV_SET_MODE = 1u << 1,
    KV_SET_MTIME = 1u << 2,
};

/* A decoded command.  Strings and data are not NUL-terminated and, after
 * kv_cmd_decode(), point into the buffer that was decoded. */
struct kv_cmd
{
    uint8_t op;         /* enum kv_op */
    uint64_t session;   /* client session, 0 for none */
    uint64_t seq;       /* the client's sequence number in its session */
    int64_t time_ns;    /* wall time chosen by the proposer (mtime, ctime) */
    uint64_t max_bytes; /* largest file the proposer allows: -EFBIG past it */
    uint64_t ino;
    uint64_t parent;
    uint64_t new_parent;
    const char *path; /* PUT and DEL: the key; other ops: the name */
    size_t path_len;
    const char *new_name;
    size_t new_name_len;
    uint64_t offset;
    uint64_t size;
    uint32_t mode;
    uint32_t flags;
    uint32_t valid;
    int64_t mtime_ns;
    const uint8_t *data;
    size_t data_len;
    const uint8_t *expect; /* CAS: the value expected */
    size_t expect_len;
};

/* Encode c as msgpack into a new malloc'd buffer *out of *out_len bytes
 * (the caller frees it).  Returns 0 or -ENOMEM. */
int kv_cmd_encode(const struct kv_cmd *c, uint8_t **out, size_t *out_len);

/* Decode buf into c; pointers in c reference buf.  Returns 0, or
 * IKD_EMALFORMED for anything that is not a well-formed command (data and
 * expect together over IKD_MAX_VALUE_BYTES_LIMIT bytes included). */
int kv_cmd_decode(const uint8_t *buf, size_t len, struct kv_cmd *c);

/* A key is a relative path: components separated by single '/', none empty,
 * "." or "..", no NUL, at most IKD_MAX_NAME_BYTES a component and
 * IKD_MAX_PATH_BYTES in all, and not starting with the reserved ".ikada"
 * component.  Returns 0 or -EINVAL. */
int kv_key_check(const char *key, size_t len);

/* A single file name (one component): the same rules, except the reserved
 * ".ikada", which only the root folder reserves and the state machine
 * refuses there (-EINVAL).  0 or -EINVAL (-ENAMETOOLONG past
 * IKD_MAX_NAME_BYTES). */
int kv_name_check(const char *name, size_t len);

#endif /* KV_CMD_H */
