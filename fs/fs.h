/* The FUSE file system of a node, served by the libfuse3 low-level API from
 * the node's libuv loop.  Reads wait for a linearizable read point; changes
 * are proposed and answered once applied on this node.
 *
 * FUSE inode numbers are the state machine's (the root is KV_ROOT_INO);
 * numbers below KV_FIRST_INO are the read-only .ikada/ folder in the root,
 * whose files are generated from the node's own view when opened.  Errors
 * reach programs as errno through ikd_to_errno(): EROFS without a leader,
 * ETIMEDOUT when an outcome is unknown, EFBIG past the value limit. */

#ifndef FS_FS_H
#define FS_FS_H

#include <stdbool.h>

#include <uv.h>

#include "../net/node.h"

struct fs;

/* What fs_mount() does first, alone: clear a stale mount left at
 * mountpoint and create the folder if missing, so that a mount point that
 * cannot be used is found before anything else happens.  0, IKD_EMOUNTED
 * when a running server (answering or not) has its file system there, or
 * a negative errno (-EACCES, -ENOTDIR...). */
int fs_prepare(const char *mountpoint);

/* Clear a stale mount left at mountpoint (a dead FUSE mount or an earlier
 * Ikada mount), create the folder if missing, mount with auto_unmount (a
 * watcher process unmounts should this process die), and start serving on
 * loop.  node must outlive the mount.  Blocks while mounting; call before
 * the loop runs.  Returns 0 with *out set, or a negative code (-EIO when
 * the mount itself failed) with nothing mounted. */
int fs_mount(uv_loop_t *loop,
             struct node *node,
             const char *mountpoint,
             struct fs **out);

/* With local set, reads (lookup, getattr, readdir, read, open) are served
 * from this node's applied state at once, without a read barrier: faster,
 * and possibly stale (a follower behind, or cut off from the leader, shows
 * old data).  Default: linearizable reads. */
void fs_set_local_reads(struct fs *f, bool local);

/* Stop serving, answer every request still waiting for the node with EIO,
 * unmount, and close the loop's handles; cb runs once they are closed and
 * f is freed.  Call before node_stop(): the node's later callbacks for
 * those requests (IKD_ESHUTDOWN) only free what the requests held. */
void fs_unmount(struct fs *f, void (*cb)(void *arg), void *arg);

#endif /* FS_FS_H */
