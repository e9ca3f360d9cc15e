/* Facilities shared by every module: error codes, limits and logging. */

#ifndef IKD_H
#define IKD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes.
 *
 * Fallible functions return 0 or a negative code.  Negative errno values
 * (including libuv's, which are negative errno on Linux) pass through
 * unchanged; Ikada's own codes count up from IKD_ERR_BASE (-10000), far
 * below any errno, so the two never collide. */
enum {
    IKD_ERR_BASE = -10000,
    IKD_ENOTLEADER = IKD_ERR_BASE, /* this node does not lead */
    IKD_ESTALE,                    /* a message or reply from an old term */
    IKD_EMALFORMED,                /* a message or command failed to decode */
    IKD_ECORRUPT,                  /* durable data failed a check */
    IKD_ELIMIT,                    /* a configured limit was hit */
    IKD_ESHUTDOWN,                 /* the node is stopping */
    IKD_ENOLEADER,                 /* no leader is known */
    IKD_ETIMEDOUT,                 /* no outcome within the deadline */
    IKD_ELOST,                     /* a proposal was overwritten by a newer
                                      leader and did not take effect */
    IKD_EVERSION,                  /* the peer speaks another protocol
                                      version */
    IKD_ENODEID,                   /* the data folder belongs to another
                                      node id */
    IKD_EBUSY,                     /* the leader takes no more proposals
                                      for now: too much is uncommitted, or
                                      leadership is being transferred */
    IKD_ECHANGING,                 /* another membership change is in
                                      progress (Raft 4.1: one at a time) */
    IKD_EMOUNTED,                  /* the mount point is a running
                                      server's */
    IKD_ERR_END
};

/* A static string describing rv: an Ikada code, a negative errno, or 0. */
const char *ikd_strerror(int rv);

/* Map rv to a positive errno for the file system edge: Ikada codes become
 * the errno a shell user reads best (EROFS without leader, ETIMEDOUT when
 * the outcome is unknown, EIO for storage faults). */
int ikd_to_errno(int rv);

/* Limits.  Every size the protocol or the storage depends on is here. */
#define IKD_MAX_NODES 16
/* A server's address as "HOST:PORT", with its terminating NUL. */
#define IKD_MAX_ADDR_BYTES 96
#define IKD_MAX_PATH_BYTES 4096
#define IKD_MAX_NAME_BYTES 255
#define IKD_DEFAULT_MAX_VALUE_BYTES (4u << 20)
/* The largest value any node may be configured to accept. */
#define IKD_MAX_VALUE_BYTES_LIMIT (64u << 20)
/* A command carries one value (or a write of at most one value) plus a
 * path pair and a few integers. */
#define IKD_MAX_COMMAND_BYTES \
    (IKD_MAX_VALUE_BYTES_LIMIT + 2 * IKD_MAX_PATH_BYTES + 256)
/* A frame on the wire holds one message; an AppendEntries carries at least
 * one entry whatever its size, so a frame must fit the largest command. */
#define IKD_MAX_FRAME_BYTES (IKD_MAX_COMMAND_BYTES + 64 * 1024)
#define IKD_MAX_APPEND_ENTRIES 256
#define IKD_MAX_APPEND_BYTES (1u << 20)
/* The leader's log beyond its commit index: past either cap, proposals
 * fail with IKD_EBUSY until followers catch up.  One entry of any allowed
 * size is always accepted when nothing is pending. */
#define IKD_MAX_UNCOMMITTED_ENTRIES 8192
#define IKD_MAX_UNCOMMITTED_BYTES (64u << 20)
/* A snapshot travels in chunks of at most this many bytes, one chunk in
 * flight per follower. */
#define IKD_SNAP_CHUNK_BYTES (1u << 20)
/* 2: votes carry a transfer flag; pre-vote and timeout-now messages.
 * 3: snapshot chunks and their acknowledgements.
 * 4: configuration entries in the log, membership requests and replies;
 *    a HELLO's cluster hash of 0 matches any.
 * 5: optional trace contexts on AppendEntries, forwards and client
 *    requests. */
#define IKD_PROTOCOL_VERSION 5

_Static_assert(IKD_MAX_NODES <= 255 && IKD_MAX_ADDR_BYTES <= 256,
               "a configuration entry stores counts and lengths in a byte");
_Static_assert(IKD_SNAP_CHUNK_BYTES + 4096 <= IKD_MAX_FRAME_BYTES,
               "a snapshot chunk fits a frame");
_Static_assert(IKD_DEFAULT_MAX_VALUE_BYTES <= IKD_MAX_VALUE_BYTES_LIMIT,
               "the default value limit must be allowed");
_Static_assert(IKD_MAX_APPEND_BYTES < IKD_MAX_FRAME_BYTES,
               "a batch of entries must fit in one frame");
_Static_assert(IKD_MAX_FRAME_BYTES < UINT32_MAX, "frame lengths are 32-bit");
_Static_assert(IKD_MAX_UNCOMMITTED_ENTRIES >= IKD_MAX_APPEND_ENTRIES &&
                   IKD_MAX_UNCOMMITTED_BYTES >= IKD_MAX_APPEND_BYTES,
               "the uncommitted log must hold at least one full message");

/* Logging.
 *
 * One line per event, written whole to stderr:
 *   2026-12-03T20:10:50.123Z INFO  raft n=1 t=4 role change: ...
 * The level check happens before the arguments are evaluated. */
enum ikd_log_level {
    IKD_LOG_ERROR = 0,
    IKD_LOG_WARN,
    IKD_LOG_INFO,
    IKD_LOG_DEBUG,
    IKD_LOG_TRACE
};

/* The current level, the node id and term printed in each line's prefix.
 * Written only by the loop thread. */
extern int ikd_log_level;
extern uint32_t ikd_log_node_id;
extern uint64_t ikd_log_term;

/* Parse IKADA_LOG-style names; returns the level or -1. */
int ikd_log_level_parse(const char *name);

/* Set the levels from an IKADA_LOG value: a level for every module,
 * optionally followed by per-module levels, as in "info,raft=debug,net=warn"
 * (a module alone, "raft=trace", leaves the others at info).  Returns 0, or
 * -1 without changing anything when spec is malformed. */
int ikd_log_configure(const char *spec);

/* Whether a line of this level from this module is written.  ikd_log_level
 * is the most verbose level of any module, so that the common case is
 * decided by one comparison. */
bool ikd_log_enabled(int level, const char *module);

void ikd_log_write(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define IKD_LOG(level, module, ...)                                           \
    do {                                                                      \
        if ((level) <= ikd_log_level && ikd_log_enabled((level), (module))) { \
            ikd_log_write((level), (module), __VA_ARGS__);                    \
        }                                                                     \
    } while (0)

#define IKD_ERROR(module, ...) IKD_LOG(IKD_LOG_ERROR, module, __VA_ARGS__)
#define IKD_WARN(module, ...) IKD_LOG(IKD_LOG_WARN, module, __VA_ARGS__)
#define IKD_INFO(module, ...) IKD_LOG(IKD_LOG_INFO, module, __VA_ARGS__)
#define IKD_DEBUG(module, ...) IKD_LOG(IKD_LOG_DEBUG, module, __VA_ARGS__)
#define IKD_TRACE(module, ...) IKD_LOG(IKD_LOG_TRACE, module, __VA_ARGS__)

#endif /* IKD_H */
