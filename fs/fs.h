/* The FUSE file system of a node, served by the libfuse3 low-level API from
 * the node's libuv loop.  Reads wait for a linearizable read point; changes
 * are proposed and answered once applied on this node. */

#ifndef FS_FS_H
#define FS_FS_H

#include <uv.h>

#include "../net/node.h"

struct fs;

/* Clear a stale mount left at mountpoint (creating the folder if missing),
 * mount, and start serving.  Returns 0 or a negative code. */
int fs_mount(uv_loop_t *loop, struct node *node, const char *mountpoint,
             struct fs **out);

/* Answer every pending request with an error, unmount, and close the
 * loop's handles; cb runs once they are closed and f is freed. */
void fs_unmount(struct fs *f, void (*cb)(void *arg), void *arg);

#endif /* FS_FS_H */
