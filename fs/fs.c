/* The FUSE file system of a node, served from the node's libuv loop.
 *
 * Requests arrive on the session's file descriptor, which a poll handle
 * watches.  A request that needs the cluster keeps its fuse_req_t in a
 * struct fs_req and is answered exactly once, from the node's callback:
 * changes once the command is applied on this node, reads once the local
 * state is a linearizable read point.  Attribute and entry timeouts are 0
 * and every open file uses direct_io, so the kernel caches nothing that a
 * change on another node could make stale. */

#define FUSE_USE_VERSION 35

#include "fs.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kv/cmd.h"
#include "../kv/orphan.h"
#include "../kv/reader.h"
#include "../net/trace.h"
#include "../raft/ikd.h"

#define FS_NS_PER_S 1000000000LL

/* Inode numbers below KV_FIRST_INO belong to the file system itself: the
 * read-only .ikada/ folder in the root and the files in it, generated from
 * the node's view of the cluster each time one is opened. */
#define FS_META_NAME ".ikada"
#define FS_META_DIR_INO 2
#define FS_META_FIRST_INO 3

static const char *const fs_meta_names[] = {
    "id",      "leader",  "term",   "role",    "commit",
    "applied", "members", "status", "metrics",
};

#define FS_META_COUNT (sizeof(fs_meta_names) / sizeof(fs_meta_names[0]))

_Static_assert(FUSE_ROOT_ID == KV_ROOT_INO, "FUSE and kv roots must agree");
_Static_assert(FS_META_DIR_INO > KV_ROOT_INO, "reserved inodes follow root");
_Static_assert(FS_META_FIRST_INO + FS_META_COUNT <= KV_FIRST_INO,
               "the .ikada files must fit below the kv inode numbers");

/* Readdir positions before the state machine's entries: ".", "..", and
 * ".ikada" in the root.  Entry k of the state machine is at k + 3. */
#define FS_DIR_FIRST_KV_POS 3

/* Most requests handled in one poll callback before the loop gets a turn
 * again; the poll is level-triggered, so the rest wake it at once. */
#define FS_MAX_REQS_PER_POLL 64

/* Reads of a file that keeps growing before a read-only open gives up. */
#define FS_SNAPSHOT_TRIES 8

/* How long a mount found at start-up gets to answer before its server is
 * taken for alive but stopped, and how often it is looked at meanwhile. */
#define FS_PROBE_MS 1000
#define FS_PROBE_STEP_MS 10

/* An open regular file; fi->fh points to it from the open's reply until
 * its release.  A read-only open keeps the file's content as of the open
 * (read at a linearizable read point), so its reads need no round trip
 * and the file stays readable while open if another node removes it or
 * renames another file over it, as POSIX asks. */
struct fs_handle
{
    bool append;         /* opened with O_APPEND */
    bool snapshot;       /* read-only: reads are served from data */
    uint64_t trace;      /* its trace: FS_FH_* bits, as fi->fh held at open */
    struct kv_attr attr; /* read-only: the file's attributes at open */
    /* Open for writing: the file's inode, watched in the node's orphans,
     * which serve it once another command removed it. */
    uint64_t ino;
    bool watched;
    struct fs_handle *prev; /* in fs->snapshots, for read-only handles */
    struct fs_handle *next;
    size_t len;
    uint8_t data[];
};

/* The trace of an open regular file, in fi->fh from its open until the
 * reply, then in its handle: whether the sampler turned it down, and
 * above FS_FH_TRACE_SHIFT 1 + its slot in fs->handles, or 0. */
#define FS_FH_UNSAMPLED 2u
#define FS_FH_TRACE_SHIFT 8

/* Open files traced at once.  A file opened for writing gets a span from
 * open to release, the root of its trace: `echo x > f` (create, write,
 * flush, release) is then one trace.  Past this many, or when the sampler
 * says no, each change is a trace of its own or none. */
#define FS_TRACE_HANDLES 64

struct fs_handle_trace
{
    bool used;
    struct ikd_span span;
};

/* The mount's commands run in a session of the state machine (kv/cmd.h),
 * which allows one command in flight per session: each command in flight
 * takes a lane, a session of its own (the mount's random base plus the lane
 * number) whose seq grows by one a command.  A late copy of a command that
 * timed out is then refused as stale once its lane moved on, instead of
 * applying after newer changes.  Past FS_MAX_LANES commands in flight, the
 * rest go without a session. */
#define FS_LANE_BITS 8
#define FS_MAX_LANES (1u << FS_LANE_BITS)

struct fs_lane
{
    uint64_t seq; /* of the lane's latest command */
    bool busy;
};

struct fs
{
    uv_loop_t *loop;
    struct node *node;
    struct fuse_session *se;
    uv_poll_t poll;
    struct fuse_buf buf; /* request buffer, reused; libfuse grows it */
    char *mountpoint;
    uid_t uid; /* owner reported for every file */
    gid_t gid;
    /* The times of .ikada entries: the mount's start.  "Now" would make
     * tar report that every entry changed while it read it. */
    int64_t meta_time_ns;
    struct fs_req *pending; /* requests waiting for the node */
    uint64_t session_base;  /* random; the low FS_LANE_BITS are the lane */
    struct fs_lane lanes[FS_MAX_LANES];
    bool local_reads; /* serve reads from this node's state, maybe stale */
    /* FS_TRACE_HANDLES slots when the tracer is on, else NULL. */
    struct fs_handle_trace *handles;
    /* Open read-only handles, which answer getattr for their file once
     * another node removed it: fstat (cat does one) must still work. */
    struct fs_handle *snapshots;
    bool unmounting;
    void (*unmount_cb)(void *arg);
    void *unmount_arg;
};

/* What to do when the node calls back. */
enum fs_kind {
    /* After a read barrier. */
    FS_DO_LOOKUP,
    FS_DO_GETATTR,
    FS_DO_READDIR,
    FS_DO_READ,
    FS_DO_OPEN,
    /* After a proposal is applied. */
    FS_DONE_ERR, /* reply 0: unlink, rmdir, rename */
    FS_DONE_ENTRY,
    FS_DONE_CREATE,
    FS_DONE_ATTR,
    FS_DONE_WRITE,
    FS_DONE_OPEN,
};

/* A request waiting for the node.  Owned by the node's callback, which
 * frees it; fs is NULL once fs_unmount() answered the request itself. */
struct fs_req
{
    struct fs *fs;
    fuse_req_t req;
    struct fs_req *prev;
    struct fs_req *next;
    enum fs_kind kind;
    uint64_t ino;
    uint64_t offset;
    size_t size;
    struct fuse_file_info fi;
    uint32_t lane;               /* 1 + the lane of its command, 0 for none */
    struct ikd_trace_ctx parent; /* of its span; all zero for a root */
    bool untraced;         /* made through a file whose trace was not sampled */
    struct ikd_span *span; /* a sampled change's span, else NULL */
    /* A write through a descriptor open for writing: its bytes, for the
     * file's kept copy should the file be removed before the write. */
    uint8_t *data;
    bool append;
    struct kv_cmd *attr_cmd; /* likewise for a size or mode change */
    size_t name_len;
    char name[]; /* NUL-terminated, for lookups */
};

/* Content of an open .ikada file, fixed at open; fi->fh points to it. */
struct fs_meta_file
{
    size_t len;
    char data[];
};

static int64_t fs_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * FS_NS_PER_S + ts.tv_nsec;
}

static struct timespec fs_timespec(int64_t ns)
{
    struct timespec ts;
    int64_t sec = ns / FS_NS_PER_S;
    int64_t rem = ns % FS_NS_PER_S;

    if (rem < 0) {
        sec -= 1;
        rem += FS_NS_PER_S;
    }
    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)rem;
    return ts;
}

/* The single place where Ikada codes become the errno a program sees. */
static int fs_errno(int rv)
{
    int e;

    assert(rv < 0);
    e = ikd_to_errno(rv);
    /* The kernel accepts only small errno values (below 4096). */
    return e > 0 && e < 4096 ? e : EIO;
}

static void fs_reply_rv(fuse_req_t req, int rv)
{
    fuse_reply_err(req, rv == 0 ? 0 : fs_errno(rv));
}

static bool fs_is_meta(fuse_ino_t ino)
{
    return ino >= FS_META_DIR_INO && ino < KV_FIRST_INO;
}

static bool fs_is_meta_name(fuse_ino_t parent, const char *name)
{
    return parent == KV_ROOT_INO && strcmp(name, FS_META_NAME) == 0;
}

static uint64_t fs_max_bytes(const struct fs *f)
{
    return node_get_config(f->node)->max_value_bytes;
}

/* Attributes. */

static void fs_fill_stat(const struct fs *f,
                         const struct kv_attr *a,
                         struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = a->ino;
    st->st_mode = (a->is_dir ? S_IFDIR : S_IFREG) | (a->mode & 07777);
    st->st_nlink = a->nlink > 0 ? a->nlink : 1;
    st->st_uid = f->uid;
    st->st_gid = f->gid;
    st->st_size = (off_t)a->size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
    st->st_mtim = fs_timespec(a->mtime_ns);
    st->st_atim = st->st_mtim;
    st->st_ctim = fs_timespec(a->ctime_ns);
}

static struct fs_meta_file *fs_meta_render(struct fs *f, fuse_ino_t ino);

/* The attributes of a .ikada entry.  A file's size is that of its content
 * now, which tools such as tail and tar rely on; a read returns the
 * content as of the open, which may have grown since. */
static void fs_meta_attr(struct fs *f, fuse_ino_t ino, struct kv_attr *a)
{
    assert(fs_is_meta(ino));
    memset(a, 0, sizeof(*a));
    a->ino = ino;
    a->is_dir = ino == FS_META_DIR_INO;
    a->mode = a->is_dir ? 0555 : 0444;
    if (!a->is_dir) {
        struct fs_meta_file *m = fs_meta_render(f, ino);

        a->size = m != NULL ? m->len : 0;
        free(m);
    }
    a->nlink = a->is_dir ? 2 : 1;
    a->mtime_ns = f->meta_time_ns;
    a->ctime_ns = f->meta_time_ns;
}

static void fs_reply_entry(struct fs *f,
                           fuse_req_t req,
                           const struct kv_attr *a)
{
    struct fuse_entry_param e;

    memset(&e, 0, sizeof(e));
    e.ino = a->ino;
    fs_fill_stat(f, a, &e.attr);
    e.attr_timeout = 0;
    e.entry_timeout = 0;
    fuse_reply_entry(req, &e);
}

static void fs_reply_attr(struct fs *f, fuse_req_t req, const struct kv_attr *a)
{
    struct stat st;

    fs_fill_stat(f, a, &st);
    fuse_reply_attr(req, &st, 0);
}

/* Traces. */

static const char *fs_op_span_name(uint8_t op)
{
    static const char *const names[KV_OP_END] = {
        [KV_OP_CREATE] = "fs.create", [KV_OP_MKDIR] = "fs.mkdir",
        [KV_OP_UNLINK] = "fs.unlink", [KV_OP_RMDIR] = "fs.rmdir",
        [KV_OP_RENAME] = "fs.rename", [KV_OP_WRITE] = "fs.write",
        [KV_OP_APPEND] = "fs.append", [KV_OP_SETATTR] = "fs.setattr",
    };
    return op < KV_OP_END && names[op] != NULL ? names[op] : "fs.change";
}

/* Begin the span of r's change, under r->parent when that is set. */
static void fs_req_trace(struct fs_req *r, uint8_t op)
{
    struct ikd_span s;

    if (!ikd_tracer_enabled() || r->untraced) {
        return;
    }
    ikd_span_begin(&s, fs_op_span_name(op), IKD_SPAN_SERVER, &r->parent);
    if (!s.recording) {
        return;
    }
    if (r->ino != 0) {
        ikd_span_set_int(&s, "fs.ino", (int64_t)r->ino);
    }
    r->span = malloc(sizeof(*r->span));
    if (r->span != NULL) {
        *r->span = s;
    }
}

static void fs_req_end_span(struct fs_req *r, int rv)
{
    if (r->span == NULL) {
        return;
    }
    if (rv != 0) {
        ikd_span_set_error(r->span, strerror(fs_errno(rv)));
    }
    ikd_span_end(r->span);
    free(r->span);
    r->span = NULL;
}

/* An open file's trace: begun at open for writing, ended at release.
 * The file is named by name when it is being created, else by ino. */
static void fs_handle_trace_begin(struct fs *f,
                                  struct fuse_file_info *fi,
                                  uint64_t ino,
                                  const char *name)
{
    struct fs_handle_trace *h = NULL;

    if (f->handles == NULL || (fi->flags & O_ACCMODE) == O_RDONLY) {
        return;
    }
    for (size_t i = 0; i < FS_TRACE_HANDLES && h == NULL; i++) {
        if (!f->handles[i].used) {
            h = &f->handles[i];
            ikd_span_begin(&h->span, "fs.open", IKD_SPAN_SERVER, NULL);
            if (h->span.recording) {
                h->used = true;
                fi->fh |= (uint64_t)(i + 1) << FS_FH_TRACE_SHIFT;
                if (name != NULL) {
                    ikd_span_set_str(&h->span, "fs.name", name);
                } else {
                    ikd_span_set_int(&h->span, "fs.ino", (int64_t)ino);
                }
                ikd_span_set_int(&h->span, "fs.flags", fi->flags);
            } else {
                fi->fh |= FS_FH_UNSAMPLED;
            }
        }
    }
}

static struct fs_handle_trace *fs_handle_trace(struct fs *f, uint64_t fh)
{
    uint64_t slot = fh >> FS_FH_TRACE_SHIFT;

    if (f->handles == NULL || slot == 0 || slot > FS_TRACE_HANDLES ||
        !f->handles[slot - 1].used) {
        return NULL;
    }
    return &f->handles[slot - 1];
}

/* The parent of r, a change made through the open file fh. */
static void fs_handle_parent(struct fs *f, uint64_t fh, struct fs_req *r)
{
    struct fs_handle_trace *h = fs_handle_trace(f, fh);

    if (h != NULL) {
        r->parent = h->span.ctx;
    }
    r->untraced = (fh & FS_FH_UNSAMPLED) != 0;
}

static void fs_handle_trace_end(struct fs *f, uint64_t fh)
{
    struct fs_handle_trace *h = fs_handle_trace(f, fh);

    if (h != NULL) {
        ikd_span_end(&h->span);
        h->used = false;
    }
}

/* Pending requests. */

static struct fs_req *fs_req_new(struct fs *f,
                                 fuse_req_t req,
                                 enum fs_kind kind,
                                 const char *name)
{
    size_t name_len = name != NULL ? strlen(name) : 0;
    struct fs_req *r = calloc(1, sizeof(*r) + name_len + 1);

    if (r == NULL) {
        fuse_reply_err(req, ENOMEM);
        return NULL;
    }
    r->fs = f;
    r->req = req;
    r->kind = kind;
    r->name_len = name_len;
    if (name_len > 0) {
        memcpy(r->name, name, name_len);
    }

    r->next = f->pending;
    if (f->pending != NULL) {
        f->pending->prev = r;
    }
    f->pending = r;
    return r;
}

static void fs_req_unlink(struct fs_req *r)
{
    struct fs *f = r->fs;

    assert(f != NULL);
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        assert(f->pending == r);
        f->pending = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    }
    r->prev = NULL;
    r->next = NULL;
}

static void fs_req_free(struct fs_req *r)
{
    fs_req_end_span(r, 0);
    if (r->fs != NULL && r->lane != 0) {
        r->fs->lanes[r->lane - 1].busy = false;
    }
    if (r->fs != NULL) {
        fs_req_unlink(r);
    }
    free(r->data);
    free(r->attr_cmd);
    free(r);
}

/* Answer r with an error and free it. */
static void fs_req_fail(struct fs_req *r, int rv)
{
    fs_req_end_span(r, rv);
    if (r->fs != NULL &&
        (r->kind == FS_DONE_CREATE || r->kind == FS_DONE_OPEN)) {
        /* No release follows a failed open. */
        fs_handle_trace_end(r->fs, r->fi.fh);
    }
    fs_reply_rv(r->req, rv);
    fs_req_free(r);
}

/* Proposals. */

static void fs_propose_cb(void *arg, int status, uint64_t value);
static void fs_barrier_cb(void *arg, int status);

/* Propose c for r, filling the fields every command carries.  On failure
 * r is answered and freed here. */
static void fs_submit(struct fs_req *r, struct kv_cmd *c)
{
    struct fs *f = r->fs;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv;

    c->time_ns = fs_now_ns();
    c->max_bytes = fs_max_bytes(f);
    assert(r->lane == 0);
    for (uint32_t i = 0; i < FS_MAX_LANES; i++) {
        if (!f->lanes[i].busy) {
            f->lanes[i].busy = true;
            r->lane = i + 1;
            c->session = f->session_base | i;
            c->seq = ++f->lanes[i].seq;
            break;
        }
    }
    rv = kv_cmd_encode(c, &buf, &len);
    if (rv != 0) {
        fs_req_fail(r, rv);
        return;
    }

    fs_req_trace(r, c->op);
    rv = node_propose_traced(f->node, buf, len,
                             r->span != NULL ? &r->span->ctx : NULL,
                             NODE_PROPOSE_HOLD, fs_propose_cb, r);
    free(buf);
    if (rv != 0) {
        IKD_DEBUG("fs", "propose op=%u failed rv=%d -> reply error",
                  (unsigned)c->op, rv);
        fs_req_fail(r, rv);
    }
}

/* Wait for a read point, then run r's read.  On failure r is answered and
 * freed here. */
static void fs_barrier(struct fs_req *r)
{
    int rv;

    if (r->fs->local_reads) {
        fs_barrier_cb(r, 0);
        return;
    }
    rv = node_read_barrier(r->fs->node, fs_barrier_cb, r);

    if (rv != 0) {
        fs_req_fail(r, rv);
    }
}

/* Attach a handle to fi, with len bytes of data for a read-only open.
 * false when out of memory. */
static bool fs_handle_attach(struct fuse_file_info *fi,
                             const struct kv_attr *a,
                             const uint8_t *data,
                             size_t len)
{
    struct fs_handle *h = malloc(sizeof(*h) + len);

    if (h == NULL) {
        return false;
    }
    h->append = (fi->flags & O_APPEND) != 0;
    h->snapshot = (fi->flags & O_ACCMODE) == O_RDONLY;
    h->ino = 0;
    h->watched = false;
    h->trace = fi->fh;
    if (a != NULL) {
        h->attr = *a;
        h->attr.size = len;
    } else {
        memset(&h->attr, 0, sizeof(h->attr));
    }
    h->len = len;
    if (len > 0) {
        memcpy(h->data, data, len);
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    return true;
}

static struct fs_handle *fs_handle_of(const struct fuse_file_info *fi)
{
    return (struct fs_handle *)(uintptr_t)fi->fh;
}

static void fs_snapshot_link(struct fs *f, struct fs_handle *h)
{
    h->prev = NULL;
    h->next = f->snapshots;
    if (f->snapshots != NULL) {
        f->snapshots->prev = h;
    }
    f->snapshots = h;
}

/* Release a handle: out of fs->snapshots or the orphans, and freed. */
static void fs_handle_free(struct fs *f, struct fs_handle *h)
{
    if (h->watched) {
        kv_orphans_unwatch(node_orphans(f->node), h->ino);
    }
    if (h->snapshot) {
        if (h->prev != NULL) {
            h->prev->next = h->next;
        } else {
            f->snapshots = h->next;
        }
        if (h->next != NULL) {
            h->next->prev = h->prev;
        }
    }
    free(h);
}

/* Answer an open or a create with a new handle; the kernel releases a
 * handle whose open it was told about, and only then. */
static void fs_reply_opened(fuse_req_t req,
                            struct fuse_file_info *fi,
                            uint64_t ino,
                            const struct fuse_entry_param *e,
                            const struct kv_attr *a,
                            const uint8_t *data,
                            size_t len)
{
    int rv;

    struct fs *f = fuse_req_userdata(req);

    if (!fs_handle_attach(fi, a, data, len)) {
        fs_handle_trace_end(f, fi->fh);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (fs_handle_of(fi)->snapshot) {
        fs_snapshot_link(f, fs_handle_of(fi));
    } else if (kv_orphans_watch(node_orphans(f->node), ino) == 0) {
        /* Without memory to watch it, the file fails with ENOENT once
         * removed, as it would anyway on another node's file system. */
        fs_handle_of(fi)->ino = ino;
        fs_handle_of(fi)->watched = true;
    }
    rv = e != NULL ? fuse_reply_create(req, e, fi) : fuse_reply_open(req, fi);
    if (rv != 0) {
        /* The open was interrupted: no release will come. */
        fs_handle_trace_end(f, fs_handle_of(fi)->trace);
        fs_handle_free(f, fs_handle_of(fi));
    }
}

/* Create, mkdir and setattr answer with the attributes as applied. */
static bool fs_snapshot_attr(const struct fs *f,
                             uint64_t ino,
                             struct kv_attr *a);

static void fs_done_attr(struct fs_req *r, uint64_t ino)
{
    struct fs *f = r->fs;
    struct kv_attr a;
    struct stat st;
    int rv = kv_reader_getattr(node_reader(f->node), ino, &a);

    if (rv == -ENOENT && r->kind == FS_DONE_ATTR &&
        fs_snapshot_attr(f, ino, &a)) {
        /* Removed by a later command while this node holds it open. */
        rv = 0;
    }
    if (rv != 0) {
        if (r->kind == FS_DONE_CREATE) {
            fs_handle_trace_end(f, r->fi.fh);
        }
        fs_reply_rv(r->req, rv);
        return;
    }
    if (r->kind == FS_DONE_ENTRY) {
        fs_reply_entry(f, r->req, &a);
    } else if (r->kind == FS_DONE_CREATE) {
        struct fuse_entry_param e;

        memset(&e, 0, sizeof(e));
        e.ino = a.ino;
        fs_fill_stat(f, &a, &e.attr);
        fs_reply_opened(r->req, &r->fi, a.ino, &e, NULL, NULL, 0);
    } else {
        fs_fill_stat(f, &a, &st);
        fuse_reply_attr(r->req, &st, 0);
    }
}

static bool fs_orphan_setattr(struct fs *f,
                              fuse_req_t req,
                              uint64_t ino,
                              const struct kv_cmd *c);

static void fs_propose_cb(void *arg, int status, uint64_t value)
{
    struct fs_req *r = arg;

    if (r->fs == NULL) {
        /* fs_unmount() already answered; the file system may be gone. */
        fs_req_end_span(r, IKD_ESHUTDOWN);
        free(r);
        return;
    }
    if (status == -ENOENT && r->kind == FS_DONE_WRITE && r->data != NULL &&
        kv_orphans_write(node_orphans(r->fs->node), r->ino, r->offset, r->data,
                         r->size, r->append, fs_max_bytes(r->fs),
                         fs_now_ns()) == 0) {
        /* The file was removed, by a command ordered before this write,
         * while this node held it open: the write goes to the copy kept
         * for the open descriptors. */
        status = 0;
    }
    if (status == -ENOENT && r->kind == FS_DONE_ATTR && r->attr_cmd != NULL &&
        fs_orphan_setattr(r->fs, r->req, r->ino, r->attr_cmd)) {
        fs_req_free(r);
        return;
    }
    if (status != 0) {
        fs_req_fail(r, status);
        return;
    }

    switch (r->kind) {
        case FS_DONE_ERR:
            fuse_reply_err(r->req, 0);
            break;
        case FS_DONE_ENTRY:
        case FS_DONE_CREATE:
            fs_done_attr(r, value);
            break;
        case FS_DONE_ATTR:
            fs_done_attr(r, r->ino);
            break;
        case FS_DONE_WRITE:
            fuse_reply_write(r->req, r->size);
            break;
        case FS_DONE_OPEN:
            fs_reply_opened(r->req, &r->fi, r->ino, NULL, NULL, NULL, 0);
            break;
        default:
            assert(false);
            fuse_reply_err(r->req, EIO);
    }
    fs_req_free(r);
}

/* Reads, run once the local state is fresh. */

static void fs_do_lookup(struct fs_req *r)
{
    struct kv_attr a;
    int rv = kv_reader_lookup(node_reader(r->fs->node), r->ino, r->name,
                              r->name_len, &a);

    if (rv != 0) {
        fs_reply_rv(r->req, rv);
        return;
    }
    fs_reply_entry(r->fs, r->req, &a);
}

static void fs_do_getattr_local(struct fs *f, fuse_req_t req, uint64_t ino)
{
    struct kv_attr a;
    int rv = kv_reader_getattr(node_reader(f->node), ino, &a);

    if (rv != 0) {
        fs_reply_rv(req, rv);
        return;
    }
    fs_reply_attr(f, req, &a);
}

static bool fs_snapshot_attr(const struct fs *f,
                             uint64_t ino,
                             struct kv_attr *a)
{
    for (const struct fs_handle *h = f->snapshots; h != NULL; h = h->next) {
        if (h->attr.ino == ino) {
            *a = h->attr;
            return true;
        }
    }
    return kv_orphans_attr(node_orphans(f->node), ino, a) == 0;
}

static void fs_do_getattr(struct fs_req *r)
{
    struct kv_attr a;
    int rv = kv_reader_getattr(node_reader(r->fs->node), r->ino, &a);

    if (rv == -ENOENT && fs_snapshot_attr(r->fs, r->ino, &a)) {
        fs_reply_attr(r->fs, r->req, &a);
        return;
    }
    if (rv == -ENOENT) {
        /* The kernel checks permissions with fresh attributes during a
         * path walk: an inode replaced by a rename since it was looked up
         * must make the walk look the name up again (ESTALE), not fail
         * the open or stat of a name that exists all along. */
        fuse_reply_err(r->req, ESTALE);
        return;
    }
    if (rv != 0) {
        fs_reply_rv(r->req, rv);
        return;
    }
    fs_reply_attr(r->fs, r->req, &a);
}

/* Answer a read-only open with the content of file a as it is now.  The
 * file may change between reading its size and its bytes: a read of one
 * byte more than the size shows whether it grew, and the size is read
 * again then. */
static void fs_open_snapshot(struct fs_req *r, struct kv_attr *a)
{
    struct kv_reader *kr = node_reader(r->fs->node);
    uint8_t *buf = NULL;
    size_t n = 0;
    int rv = 0;

    for (int tries = 0; tries < FS_SNAPSHOT_TRIES; tries++) {
        free(buf);
        buf = malloc(a->size + 1);
        if (buf == NULL) {
            rv = -ENOMEM;
            break;
        }
        rv = kv_reader_read(kr, a->ino, 0, a->size + 1, buf, &n);
        if (rv != 0 || n <= a->size) {
            break;
        }
        rv = kv_reader_getattr(kr, a->ino, a);
        if (rv != 0) {
            break;
        }
        rv = -EAGAIN;
    }
    if (rv == -ENOENT) {
        rv = -ESTALE; /* removed since the attributes were read */
    }
    if (rv != 0) {
        fs_reply_rv(r->req, rv == -EAGAIN ? -EIO : rv);
    } else {
        fs_reply_opened(r->req, &r->fi, r->ino, NULL, a, buf, n);
    }
    free(buf);
}

static void fs_do_open(struct fs_req *r)
{
    struct kv_attr a;
    int rv = kv_reader_getattr(node_reader(r->fs->node), r->ino, &a);

    if (rv == -ENOENT) {
        /* The name was looked up, then replaced (a rename over it) or
         * removed before the open: ESTALE makes the kernel look the name
         * up again, so the open sees the name's present file, or none. */
        fuse_reply_err(r->req, ESTALE);
        return;
    }
    if (rv != 0) {
        fs_reply_rv(r->req, rv);
        return;
    }
    if (a.is_dir) {
        fuse_reply_err(r->req, EISDIR);
        return;
    }
    if ((r->fi.flags & O_ACCMODE) != O_RDONLY) {
        fs_reply_opened(r->req, &r->fi, r->ino, NULL, NULL, NULL, 0);
        return;
    }
    fs_open_snapshot(r, &a);
}

static bool fs_orphan_read(struct fs *f,
                           fuse_req_t req,
                           uint64_t ino,
                           size_t size,
                           off_t off);

static void fs_do_read(struct fs_req *r)
{
    uint8_t *buf = malloc(r->size > 0 ? r->size : 1);
    size_t n = 0;
    int rv;

    if (buf == NULL) {
        fuse_reply_err(r->req, ENOMEM);
        return;
    }
    rv = kv_reader_read(node_reader(r->fs->node), r->ino, r->offset, r->size,
                        buf, &n);
    if (rv == -ENOENT &&
        fs_orphan_read(r->fs, r->req, r->ino, r->size, (off_t)r->offset)) {
        /* Removed while this node holds it open for writing. */
        free(buf);
        return;
    }
    if (rv != 0) {
        fs_reply_rv(r->req, rv);
    } else {
        fuse_reply_buf(r->req, (const char *)buf, n);
    }
    free(buf);
}

/* A readdir reply being filled. */
struct fs_dirbuf
{
    fuse_req_t req;
    char *buf;
    size_t size;
    size_t used;
};

/* Add one entry whose successor is at position next; 1 when full. */
static int fs_dir_add(struct fs_dirbuf *d,
                      const char *name,
                      uint64_t ino,
                      bool is_dir,
                      uint64_t next)
{
    struct stat st;
    size_t n;

    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = is_dir ? S_IFDIR : S_IFREG;
    n = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name,
                          &st, (off_t)next);
    if (n > d->size - d->used) {
        return 1;
    }
    d->used += n;
    return 0;
}

static int fs_dir_kv_cb(void *arg,
                        const struct kv_attr *a,
                        const char *name,
                        uint64_t next_offset)
{
    return fs_dir_add(arg, name, a->ino, a->is_dir,
                      next_offset + FS_DIR_FIRST_KV_POS);
}

/* Entries before the state machine's: ".", "..", and ".ikada" in the
 * root.  Returns 1 when the buffer is full. */
static int fs_dir_fixed(struct fs_dirbuf *d, uint64_t ino, uint64_t pos)
{
    if (pos == 0 && fs_dir_add(d, ".", ino, true, 1) != 0) {
        return 1;
    }
    if (pos <= 1 && fs_dir_add(d, "..", KV_ROOT_INO, true, 2) != 0) {
        return 1;
    }
    if (pos <= 2 && ino == KV_ROOT_INO &&
        fs_dir_add(d, FS_META_NAME, FS_META_DIR_INO, true, 3) != 0) {
        return 1;
    }
    return 0;
}

static void fs_do_readdir(struct fs_req *r)
{
    struct fs_dirbuf d = {.req = r->req, .size = r->size};
    uint64_t pos = r->offset;
    int rv = 0;

    d.buf = malloc(d.size > 0 ? d.size : 1);
    if (d.buf == NULL) {
        fuse_reply_err(r->req, ENOMEM);
        return;
    }
    if (fs_dir_fixed(&d, r->ino, pos) == 0) {
        uint64_t from =
            pos > FS_DIR_FIRST_KV_POS ? pos - FS_DIR_FIRST_KV_POS : 0;

        rv = kv_reader_readdir(node_reader(r->fs->node), r->ino, from,
                               fs_dir_kv_cb, &d);
    }
    if (rv != 0) {
        fs_reply_rv(r->req, rv);
    } else {
        fuse_reply_buf(r->req, d.buf, d.used);
    }
    free(d.buf);
}

static void fs_barrier_cb(void *arg, int status)
{
    struct fs_req *r = arg;

    if (r->fs == NULL) {
        free(r);
        return;
    }
    if (status != 0) {
        fs_req_fail(r, status);
        return;
    }

    switch (r->kind) {
        case FS_DO_LOOKUP:
            fs_do_lookup(r);
            break;
        case FS_DO_GETATTR:
            fs_do_getattr(r);
            break;
        case FS_DO_READDIR:
            fs_do_readdir(r);
            break;
        case FS_DO_READ:
            fs_do_read(r);
            break;
        case FS_DO_OPEN:
            fs_do_open(r);
            break;
        default:
            assert(false);
            fuse_reply_err(r->req, EIO);
    }
    fs_req_free(r);
}

/* The .ikada files. */

static const struct net_peer *fs_peer(const struct node_config *cfg,
                                      raft_id_t id)
{
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (cfg->peers[i].id == id) {
            return &cfg->peers[i];
        }
    }
    return NULL;
}

static const char *fs_role_name(enum raft_role role)
{
    switch (role) {
        case RAFT_LEADER:
            return "leader";
        case RAFT_CANDIDATE:
            return "candidate";
        default:
            return "follower";
    }
}

static json_t *fs_addr_json(const struct net_peer *p)
{
    char addr[96];

    snprintf(addr, sizeof(addr), "%s:%u", p->host, (unsigned)p->port);
    return json_string(addr);
}

static json_t *fs_status_json(const struct node_info *in,
                              const struct node_config *cfg,
                              const struct raft_membership *ms)
{
    const struct net_peer *lp = fs_peer(cfg, in->leader);
    json_t *o = json_object();
    json_t *members = json_array();
    json_t *leader = json_null();

    if (lp != NULL) {
        leader = json_object();
        json_object_set_new(leader, "id", json_integer(lp->id));
        json_object_set_new(leader, "addr", fs_addr_json(lp));
    }
    for (size_t i = 0; i < ms->n; i++) {
        json_t *m = json_object();

        json_object_set_new(m, "id", json_integer(ms->servers[i].id));
        json_object_set_new(m, "addr", json_string(ms->servers[i].addr));
        json_object_set_new(
            m, "role", json_string(ms->servers[i].voter ? "voter" : "learner"));
        json_array_append_new(members, m);
    }

    json_object_set_new(o, "id", json_integer(in->id));
    json_object_set_new(o, "leader", leader);
    json_object_set_new(o, "term", json_integer((json_int_t)in->term));
    json_object_set_new(o, "role", json_string(fs_role_name(in->role)));
    json_object_set_new(o, "commit", json_integer((json_int_t)in->commit));
    json_object_set_new(o, "applied", json_integer((json_int_t)in->applied));
    if (in->snapshot != 0) {
        json_object_set_new(o, "snapshot",
                            json_integer((json_int_t)in->snapshot));
    }
    json_object_set_new(o, "members", members);
    return o;
}

static void fs_meta_metrics(struct fs *f, FILE *out)
{
    struct ikd_buf b = {0};

    node_metrics_render(f->node, &b);
    if (b.data != NULL) {
        fwrite(b.data, 1, b.len, out);
    }
    ikd_buf_free(&b);
}

/* Write the content of .ikada file idx to out. */
static void fs_meta_print(struct fs *f, size_t idx, FILE *out)
{
    const struct node_config *cfg = node_get_config(f->node);
    const struct raft_membership *ms = node_get_members(f->node);
    const struct net_peer *p;
    struct node_info in;
    json_t *o;
    char *s;

    node_get_info(f->node, &in);
    switch (idx) {
        case 0:
            fprintf(out, "%u\n", (unsigned)in.id);
            break;
        case 1:
            p = fs_peer(cfg, in.leader);
            if (p == NULL) {
                fprintf(out, "none\n");
            } else {
                fprintf(out, "%u %s:%u\n", (unsigned)p->id, p->host,
                        (unsigned)p->port);
            }
            break;
        case 2:
            fprintf(out, "%llu\n", (unsigned long long)in.term);
            break;
        case 3:
            fprintf(out, "%s\n", fs_role_name(in.role));
            break;
        case 4:
            fprintf(out, "%llu\n", (unsigned long long)in.commit);
            break;
        case 5:
            fprintf(out, "%llu\n", (unsigned long long)in.applied);
            break;
        case 6:
            for (size_t i = 0; i < ms->n; i++) {
                fprintf(out, "%u %s %s\n", (unsigned)ms->servers[i].id,
                        ms->servers[i].addr,
                        ms->servers[i].voter ? "voter" : "learner");
            }
            break;
        case 7:
            o = fs_status_json(&in, cfg, ms);
            s = json_dumps(o, JSON_COMPACT);
            fprintf(out, "%s\n", s != NULL ? s : "{}");
            free(s);
            json_decref(o);
            break;
        default:
            fs_meta_metrics(f, out);
    }
}

/* Render the content of a .ikada file into a new struct fs_meta_file. */
static struct fs_meta_file *fs_meta_render(struct fs *f, fuse_ino_t ino)
{
    struct fs_meta_file *m;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    assert(ino >= FS_META_FIRST_INO && ino < FS_META_FIRST_INO + FS_META_COUNT);
    if (out == NULL) {
        return NULL;
    }
    fs_meta_print(f, (size_t)(ino - FS_META_FIRST_INO), out);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }

    m = malloc(sizeof(*m) + len);
    if (m != NULL) {
        m->len = len;
        memcpy(m->data, text, len);
    }
    free(text);
    return m;
}

static void fs_meta_lookup(fuse_req_t req, const char *name)
{
    struct kv_attr a;

    for (size_t i = 0; i < FS_META_COUNT; i++) {
        if (strcmp(name, fs_meta_names[i]) == 0) {
            fs_meta_attr(fuse_req_userdata(req), FS_META_FIRST_INO + i, &a);
            fs_reply_entry(fuse_req_userdata(req), req, &a);
            return;
        }
    }
    fuse_reply_err(req, ENOENT);
}

static void fs_meta_open(fuse_req_t req,
                         fuse_ino_t ino,
                         struct fuse_file_info *fi)
{
    struct fs_meta_file *m;

    if (ino == FS_META_DIR_INO || ino >= FS_META_FIRST_INO + FS_META_COUNT) {
        fuse_reply_err(req, ino == FS_META_DIR_INO ? EISDIR : ENOENT);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    m = fs_meta_render(fuse_req_userdata(req), ino);
    if (m == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)m;
    fi->direct_io = 1;
    fi->keep_cache = 0;
    if (fuse_reply_open(req, fi) != 0) {
        /* The opener is gone (interrupted): no release will follow. */
        free(m);
    }
}

static void fs_meta_read(fuse_req_t req,
                         size_t size,
                         off_t off,
                         struct fuse_file_info *fi)
{
    const struct fs_meta_file *m =
        (const struct fs_meta_file *)(uintptr_t)fi->fh;
    size_t start;

    if (m == NULL) {
        fuse_reply_err(req, EBADF);
        return;
    }
    start = (uint64_t)off < m->len ? (size_t)off : m->len;
    if (size > m->len - start) {
        size = m->len - start;
    }
    fuse_reply_buf(req, m->data + start, size);
}

static void fs_meta_readdir(fuse_req_t req, size_t size, off_t off)
{
    struct fs_dirbuf d = {.req = req, .size = size};
    uint64_t pos = (uint64_t)off;

    d.buf = malloc(size > 0 ? size : 1);
    if (d.buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (fs_dir_fixed(&d, FS_META_DIR_INO, pos) == 0) {
        /* Files follow "." and ".." at positions 2, 3, ... */
        for (size_t i = pos > 2 ? (size_t)pos - 2 : 0; i < FS_META_COUNT; i++) {
            if (fs_dir_add(&d, fs_meta_names[i], FS_META_FIRST_INO + i, false,
                           i + 3) != 0) {
                break;
            }
        }
    }
    fuse_reply_buf(req, d.buf, d.used);
    free(d.buf);
}

/* Request handlers. */

static void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    /* open(O_TRUNC) then arrives as one OPEN, so the truncation is
     * proposed and its error reported by open itself. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) {
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    }
    /* A writeback cache would turn O_APPEND writes into writes at a cached
     * size and answer write() before the commit. */
    conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *f = fuse_req_userdata(req);
    struct fs_req *r;
    struct kv_attr a;

    if (parent == FS_META_DIR_INO) {
        fs_meta_lookup(req, name);
        return;
    }
    if (fs_is_meta(parent)) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    if (fs_is_meta_name(parent, name)) {
        fs_meta_attr(f, FS_META_DIR_INO, &a);
        fs_reply_entry(f, req, &a);
        return;
    }
    if (strlen(name) > IKD_MAX_NAME_BYTES) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }

    r = fs_req_new(f, req, FS_DO_LOOKUP, name);
    if (r != NULL) {
        r->ino = parent;
        fs_barrier(r);
    }
}

static void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    /* Nothing is kept per inode. */
    (void)ino;
    (void)nlookup;
    fuse_reply_none(req);
}

static void fs_op_getattr(fuse_req_t req,
                          fuse_ino_t ino,
                          struct fuse_file_info *fi)
{
    struct fs *f = fuse_req_userdata(req);
    struct fs_req *r;
    struct kv_attr a;

    (void)fi;
    if (fs_is_meta(ino)) {
        if (ino >= FS_META_FIRST_INO + FS_META_COUNT) {
            fuse_reply_err(req, ENOENT);
            return;
        }
        fs_meta_attr(f, ino, &a);
        fs_reply_attr(f, req, &a);
        return;
    }

    if (ino == KV_ROOT_INO) {
        /* The kernel checks the root's permissions on every path walk
         * (default_permissions, attributes never cached).  The root always
         * exists and stays a folder; serving its attributes from the local
         * state keeps .ikada/ reachable when there is no quorum, at the
         * price of a root mode or mtime that may lag the leader's. */
        fs_do_getattr_local(f, req, ino);
        return;
    }
    if (kv_orphans_attr(node_orphans(f->node), ino, &a) == 0) {
        /* Removed while open here: only this node's descriptors reach
         * the file, so its copy is current without asking the leader,
         * and answers even when this node cannot catch up. */
        fs_reply_attr(f, req, &a);
        return;
    }

    r = fs_req_new(f, req, FS_DO_GETATTR, NULL);
    if (r != NULL) {
        r->ino = ino;
        fs_barrier(r);
    }
}

/* Translate the changes setattr asks for into c; owner changes are
 * accepted and ignored (every file belongs to the mounting user), as are
 * access times.  Returns 0 or a positive errno. */
static int fs_setattr_cmd(struct fs *f,
                          const struct stat *attr,
                          int to_set,
                          struct kv_cmd *c)
{
    if (to_set & FUSE_SET_ATTR_SIZE) {
        if (attr->st_size < 0) {
            return EINVAL;
        }
        if ((uint64_t)attr->st_size > fs_max_bytes(f)) {
            return EFBIG;
        }
        c->valid |= KV_SET_SIZE;
        c->size = (uint64_t)attr->st_size;
    }
    if (to_set & FUSE_SET_ATTR_MODE) {
        c->valid |= KV_SET_MODE;
        c->mode = (uint32_t)(attr->st_mode & 07777);
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
        c->valid |= KV_SET_MTIME;
        c->mtime_ns = fs_now_ns();
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
        if (attr->st_mtim.tv_sec > INT64_MAX / FS_NS_PER_S - 1 ||
            attr->st_mtim.tv_sec < INT64_MIN / FS_NS_PER_S + 1) {
            return EOVERFLOW;
        }
        c->valid |= KV_SET_MTIME;
        c->mtime_ns =
            (int64_t)attr->st_mtim.tv_sec * FS_NS_PER_S + attr->st_mtim.tv_nsec;
    }
    return 0;
}

/* ftruncate, fchmod or futimens of a removed file, on its orphan copy;
 * false when ino has none. */
static bool fs_orphan_setattr(struct fs *f,
                              fuse_req_t req,
                              uint64_t ino,
                              const struct kv_cmd *c)
{
    struct kv_orphans *o = node_orphans(f->node);
    int64_t now = fs_now_ns();
    struct kv_attr a;
    int rv = kv_orphans_attr(o, ino, &a);

    if (rv != 0) {
        return false;
    }
    if (c->valid & KV_SET_SIZE) {
        rv = kv_orphans_resize(o, ino, c->size, fs_max_bytes(f),
                               (c->valid & KV_SET_MTIME) ? c->mtime_ns : now);
    }
    if (rv == 0 && (c->valid & (KV_SET_MODE | KV_SET_MTIME))) {
        rv = kv_orphans_setattr(o, ino, c->valid, c->mode, c->mtime_ns, now);
    }
    if (rv == 0) {
        rv = kv_orphans_attr(o, ino, &a);
    }
    if (rv != 0) {
        fuse_reply_err(req, -rv);
    } else {
        fs_reply_attr(f, req, &a);
    }
    return true;
}

static void fs_op_setattr(fuse_req_t req,
                          fuse_ino_t ino,
                          struct stat *attr,
                          int to_set,
                          struct fuse_file_info *fi)
{
    struct fs *f = fuse_req_userdata(req);
    struct kv_cmd c = {.op = KV_OP_SETATTR, .ino = ino};
    struct fs_req *r;
    bool watched;
    int e;

    if (fs_is_meta(ino)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    e = fs_setattr_cmd(f, attr, to_set, &c);
    if (e != 0) {
        fuse_reply_err(req, e);
        return;
    }
    /* fchmod and futimens come without the descriptor's handle: a file
     * this node holds open for writing may still be the one meant. */
    watched =
        fi != NULL && fi->fh != 0
            ? fs_handle_of(fi)->watched
            : c.valid != 0 && kv_orphans_watched(node_orphans(f->node), ino);
    if (watched && fs_orphan_setattr(f, req, ino, &c)) {
        return;
    }

    r = fs_req_new(f, req, c.valid != 0 ? FS_DONE_ATTR : FS_DO_GETATTR, NULL);
    if (r == NULL) {
        return;
    }
    r->ino = ino;
    if (fi != NULL && fi->fh != 0) {
        /* ftruncate or fchmod through an open file (folders have none) */
        fs_handle_parent(f, fs_handle_of(fi)->trace, r);
    }
    if (watched) {
        r->attr_cmd = malloc(sizeof(*r->attr_cmd));
        if (r->attr_cmd == NULL) {
            fs_req_fail(r, -ENOMEM);
            return;
        }
        *r->attr_cmd = c;
    }
    if (c.valid != 0) {
        fs_submit(r, &c);
    } else {
        fs_barrier(r);
    }
}

static void fs_op_opendir(fuse_req_t req,
                          fuse_ino_t ino,
                          struct fuse_file_info *fi)
{
    (void)ino;
    fi->fh = 0;
    fuse_reply_open(req, fi);
}

static void fs_op_readdir(fuse_req_t req,
                          fuse_ino_t ino,
                          size_t size,
                          off_t off,
                          struct fuse_file_info *fi)
{
    struct fs_req *r;

    (void)fi;
    if (ino == FS_META_DIR_INO) {
        fs_meta_readdir(req, size, off);
        return;
    }
    if (fs_is_meta(ino)) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }

    r = fs_req_new(fuse_req_userdata(req), req, FS_DO_READDIR, NULL);
    if (r != NULL) {
        r->ino = ino;
        r->offset = (uint64_t)off;
        r->size = size;
        fs_barrier(r);
    }
}

static void fs_file_info_init(struct fuse_file_info *fi)
{
    fi->fh = 0; /* the handle comes with the reply */
    fi->direct_io = 1;
    fi->keep_cache = 0;
}

static void fs_op_open(fuse_req_t req,
                       fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct fs *f = fuse_req_userdata(req);
    struct fs_req *r;
    bool trunc;

    if (fs_is_meta(ino)) {
        fs_meta_open(req, ino, fi);
        return;
    }
    fs_file_info_init(fi);
    trunc = (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY;

    r = fs_req_new(f, req, trunc ? FS_DONE_OPEN : FS_DO_OPEN, NULL);
    if (r == NULL) {
        return;
    }
    r->ino = ino;
    if (trunc) {
        fs_handle_trace_begin(f, fi, ino, NULL);
        fs_handle_parent(f, fi->fh, r);
    }
    r->fi = *fi;
    if (trunc) {
        /* With atomic O_TRUNC the truncation is ours to do; doing it
         * before answering lets open() report a failed commit. */
        struct kv_cmd c = {
            .op = KV_OP_SETATTR,
            .ino = ino,
            .valid = KV_SET_SIZE | KV_SET_MTIME,
            .size = 0,
            .mtime_ns = fs_now_ns(),
        };

        fs_submit(r, &c);
    } else if ((fi->flags & O_ACCMODE) == O_RDONLY) {
        /* The kernel looked the name up just before (entries are never
         * cached), at a read point of its own: the local state is at least
         * that fresh, and a second round would only widen the window in
         * which a rename elsewhere makes the inode vanish before it is
         * opened. */
        fs_barrier_cb(r, 0);
    } else {
        fs_barrier(r);
    }
}

/* Refuse changes inside .ikada/ and to the .ikada name itself, and names
 * the state machine would refuse.  Returns 0 or a positive errno. */
static int fs_check_name(fuse_ino_t parent, const char *name)
{
    int rv;

    if (fs_is_meta(parent) || fs_is_meta_name(parent, name)) {
        return EROFS;
    }
    rv = kv_name_check(name, strlen(name));
    return rv == 0 ? 0 : fs_errno(rv);
}

static void fs_op_create(fuse_req_t req,
                         fuse_ino_t parent,
                         const char *name,
                         mode_t mode,
                         struct fuse_file_info *fi)
{
    struct kv_cmd c = {.op = KV_OP_CREATE, .parent = parent};
    struct fs_req *r;
    int e = fs_check_name(parent, name);

    if (e != 0) {
        fuse_reply_err(req, e);
        return;
    }
    fs_file_info_init(fi);
    r = fs_req_new(fuse_req_userdata(req), req, FS_DONE_CREATE, NULL);
    if (r == NULL) {
        return;
    }
    fs_handle_trace_begin(r->fs, fi, 0, name);
    fs_handle_parent(r->fs, fi->fh, r);
    r->fi = *fi;

    c.path = name;
    c.path_len = strlen(name);
    c.mode = (uint32_t)(mode & 07777);
    c.flags = ((fi->flags & O_EXCL) ? KV_F_EXCL : 0) |
              ((fi->flags & O_TRUNC) ? KV_F_TRUNC : 0);
    fs_submit(r, &c);
}

/* A read through a read-only handle.  Past the content kept at open, a
 * file that grew since (tail -f) shows what this node has applied: the
 * bytes kept are the open's consistent view, and what follows them can
 * only be newer. */
/* Whether file ino, as this node has it now, is the content h kept at
 * open with bytes added after it: its first h->len bytes unchanged. */
static bool fs_appended_since(struct fs *f,
                              fuse_ino_t ino,
                              const struct fs_handle *h)
{
    struct kv_reader *kr = node_reader(f->node);
    struct kv_attr a;
    uint8_t *now;
    size_t n = 0;
    bool same;

    if (kv_reader_getattr(kr, ino, &a) != 0 || a.size <= h->len) {
        return false;
    }
    now = malloc(h->len > 0 ? h->len : 1);
    if (now == NULL) {
        return false;
    }
    same = kv_reader_read(kr, ino, 0, h->len, now, &n) == 0 && n == h->len &&
           memcmp(now, h->data, h->len) == 0;
    free(now);
    return same;
}

static void fs_snapshot_read(fuse_req_t req,
                             fuse_ino_t ino,
                             const struct fs_handle *h,
                             size_t size,
                             off_t off)
{
    if (off < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if ((uint64_t)off >= h->len) {
        struct fs *f = fuse_req_userdata(req);
        uint8_t *buf = malloc(size > 0 ? size : 1);
        size_t n = 0;

        /* A file removed since, or rewritten rather than appended to,
         * reads as ending where it did: never a mix of two versions. */
        if (buf == NULL || !fs_appended_since(f, ino, h) ||
            kv_reader_read(node_reader(f->node), ino, (uint64_t)off, size, buf,
                           &n) != 0) {
            n = 0;
        }
        fuse_reply_buf(req, (const char *)buf, n);
        free(buf);
        return;
    }
    if (size > h->len - (uint64_t)off) {
        size = h->len - (size_t)off;
    }
    fuse_reply_buf(req, (const char *)h->data + off, size);
}

/* Answer a read of a removed file from its orphan copy; false when ino
 * has none, and is still in the state. */
static bool fs_orphan_read(struct fs *f,
                           fuse_req_t req,
                           uint64_t ino,
                           size_t size,
                           off_t off)
{
    struct kv_attr a;
    uint8_t *buf;
    size_t n = 0;
    int rv;

    if (kv_orphans_attr(node_orphans(f->node), ino, &a) != 0) {
        return false;
    }
    buf = malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return true;
    }
    rv = kv_orphans_read(node_orphans(f->node), ino, (uint64_t)off, size, buf,
                         &n);
    if (rv == 0) {
        fuse_reply_buf(req, (const char *)buf, n);
    }
    free(buf);
    return rv == 0;
}

static void fs_op_read(fuse_req_t req,
                       fuse_ino_t ino,
                       size_t size,
                       off_t off,
                       struct fuse_file_info *fi)
{
    struct fs_req *r;

    if (fs_is_meta(ino)) {
        fs_meta_read(req, size, off, fi);
        return;
    }
    if (fs_handle_of(fi)->snapshot) {
        fs_snapshot_read(req, ino, fs_handle_of(fi), size, off);
        return;
    }
    if (fs_handle_of(fi)->watched &&
        fs_orphan_read(fuse_req_userdata(req), req, ino, size, off)) {
        return;
    }
    r = fs_req_new(fuse_req_userdata(req), req, FS_DO_READ, NULL);
    if (r != NULL) {
        r->ino = ino;
        r->offset = (uint64_t)off;
        r->size = size;
        fs_barrier(r);
    }
}

static void fs_op_write(fuse_req_t req,
                        fuse_ino_t ino,
                        const char *buf,
                        size_t size,
                        off_t off,
                        struct fuse_file_info *fi)
{
    struct fs *f = fuse_req_userdata(req);
    uint64_t max = fs_max_bytes(f);
    bool append = fs_handle_of(fi)->append;
    struct kv_cmd c = {.ino = ino, .data = (const uint8_t *)buf};
    struct fs_req *r;

    if (fs_is_meta(ino)) {
        fuse_reply_err(req, EBADF);
        return;
    }
    /* Fail fast: the state machine would refuse it anyway.  An append's
     * final size is only known to the state machine. */
    if (off < 0 || size > max || (!append && (uint64_t)off > max - size)) {
        fuse_reply_err(req, EFBIG);
        return;
    }
    if (fs_handle_of(fi)->watched) {
        int rv = kv_orphans_write(node_orphans(f->node), ino, (uint64_t)off,
                                  (const uint8_t *)buf, size, append, max,
                                  fs_now_ns());
        if (rv == 0) {
            fuse_reply_write(req, size);
            return;
        }
        if (rv != -ENOENT) {
            fuse_reply_err(req, -rv);
            return;
        }
    }

    r = fs_req_new(f, req, FS_DONE_WRITE, NULL);
    if (r == NULL) {
        return;
    }
    r->size = size;
    r->ino = ino;
    if (fs_handle_of(fi)->watched) {
        r->data = malloc(size > 0 ? size : 1);
        if (r->data == NULL) {
            fs_req_fail(r, -ENOMEM);
            return;
        }
        memcpy(r->data, buf, size);
        r->offset = (uint64_t)off;
        r->append = append;
    }
    fs_handle_parent(f, fs_handle_of(fi)->trace, r);
    c.op = append ? KV_OP_APPEND : KV_OP_WRITE;
    c.offset = append ? 0 : (uint64_t)off;
    c.data_len = size;
    fs_submit(r, &c);
}

static void fs_op_flush(fuse_req_t req,
                        fuse_ino_t ino,
                        struct fuse_file_info *fi)
{
    /* Every write was committed before it was answered. */
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void fs_op_release(fuse_req_t req,
                          fuse_ino_t ino,
                          struct fuse_file_info *fi)
{
    if (fs_is_meta(ino)) {
        free((void *)(uintptr_t)fi->fh);
    } else if (fi->fh != 0) {
        fs_handle_trace_end(fuse_req_userdata(req), fs_handle_of(fi)->trace);
        fs_handle_free(fuse_req_userdata(req), fs_handle_of(fi));
    }
    fuse_reply_err(req, 0);
}

static void fs_op_fsync(fuse_req_t req,
                        fuse_ino_t ino,
                        int datasync,
                        struct fuse_file_info *fi)
{
    /* A committed change is durable on a majority already. */
    (void)ino;
    (void)datasync;
    (void)fi;
    fuse_reply_err(req, 0);
}

/* Symbolic links, devices, fifos and sockets have no place in a key-value
 * tree: refused like hard links, rather than ENOSYS, which tools print as
 * a missing feature of the kernel. */
static void fs_op_symlink(fuse_req_t req,
                          const char *link,
                          fuse_ino_t parent,
                          const char *name)
{
    (void)link;
    (void)parent;
    (void)name;
    fuse_reply_err(req, EPERM);
}

static void fs_op_mknod(fuse_req_t req,
                        fuse_ino_t parent,
                        const char *name,
                        mode_t mode,
                        dev_t rdev)
{
    (void)parent;
    (void)name;
    (void)mode;
    (void)rdev;
    fuse_reply_err(req, EPERM);
}

static void fs_op_name_change(fuse_req_t req,
                              enum kv_op op,
                              fuse_ino_t parent,
                              const char *name,
                              mode_t mode)
{
    struct kv_cmd c = {.op = (uint8_t)op, .parent = parent};
    enum fs_kind kind = op == KV_OP_MKDIR ? FS_DONE_ENTRY : FS_DONE_ERR;
    struct fs_req *r;
    int e = fs_check_name(parent, name);

    if (e != 0) {
        fuse_reply_err(req, e);
        return;
    }
    r = fs_req_new(fuse_req_userdata(req), req, kind, NULL);
    if (r == NULL) {
        return;
    }
    c.path = name;
    c.path_len = strlen(name);
    c.mode = (uint32_t)(mode & 07777);
    fs_submit(r, &c);
}

static void fs_op_mkdir(fuse_req_t req,
                        fuse_ino_t parent,
                        const char *name,
                        mode_t mode)
{
    fs_op_name_change(req, KV_OP_MKDIR, parent, name, mode);
}

static void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fs_op_name_change(req, KV_OP_UNLINK, parent, name, 0);
}

static void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fs_op_name_change(req, KV_OP_RMDIR, parent, name, 0);
}

static void fs_op_rename(fuse_req_t req,
                         fuse_ino_t parent,
                         const char *name,
                         fuse_ino_t newparent,
                         const char *newname,
                         unsigned int flags)
{
    struct kv_cmd c = {.op = KV_OP_RENAME, .parent = parent};
    struct fs_req *r;
    int e = fs_check_name(parent, name);

    if (e == 0) {
        e = fs_check_name(newparent, newname);
    }
    if (e == 0 && (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))) {
        e = EINVAL;
    }
    if (e != 0) {
        fuse_reply_err(req, e);
        return;
    }
    r = fs_req_new(fuse_req_userdata(req), req, FS_DONE_ERR, NULL);
    if (r == NULL) {
        return;
    }

    c.path = name;
    c.path_len = strlen(name);
    c.new_parent = newparent;
    c.new_name = newname;
    c.new_name_len = strlen(newname);
    c.flags = ((flags & RENAME_NOREPLACE) ? KV_F_NOREPLACE : 0) |
              ((flags & RENAME_EXCHANGE) ? KV_F_EXCHANGE : 0);
    fs_submit(r, &c);
}

static void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *f = fuse_req_userdata(req);
    struct statvfs st;

    (void)ino;
    /* The data folder's disk holds the log and the state: report its
     * space, which is what a large write would run into. */
    if (statvfs(node_get_config(f->node)->data_dir, &st) != 0) {
        memset(&st, 0, sizeof(st));
        st.f_bsize = 4096;
        st.f_frsize = 4096;
    }
    if (st.f_files == 0) {
        st.f_files = 1u << 20;
        st.f_ffree = 1u << 20;
        st.f_favail = 1u << 20;
    }
    st.f_namemax = IKD_MAX_NAME_BYTES;
    fuse_reply_statfs(req, &st);
}

static void fs_op_setxattr(fuse_req_t req,
                           fuse_ino_t ino,
                           const char *name,
                           const char *value,
                           size_t size,
                           int flags)
{
    (void)ino;
    (void)name;
    (void)value;
    (void)size;
    (void)flags;
    fuse_reply_err(req, ENOTSUP);
}

static void fs_op_getxattr(fuse_req_t req,
                           fuse_ino_t ino,
                           const char *name,
                           size_t size)
{
    (void)ino;
    (void)name;
    (void)size;
    fuse_reply_err(req, ENOTSUP);
}

static void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    (void)ino;
    (void)size;
    fuse_reply_err(req, ENOTSUP);
}

static void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    (void)ino;
    (void)name;
    fuse_reply_err(req, ENOTSUP);
}

static void fs_op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    /* default_permissions makes the kernel check modes itself. */
    (void)ino;
    (void)mask;
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops fs_ops = {
    .init = fs_op_init,
    .lookup = fs_op_lookup,
    .forget = fs_op_forget,
    .getattr = fs_op_getattr,
    .setattr = fs_op_setattr,
    .mkdir = fs_op_mkdir,
    .symlink = fs_op_symlink,
    .mknod = fs_op_mknod,
    .unlink = fs_op_unlink,
    .rmdir = fs_op_rmdir,
    .rename = fs_op_rename,
    .open = fs_op_open,
    .read = fs_op_read,
    .write = fs_op_write,
    .flush = fs_op_flush,
    .release = fs_op_release,
    .fsync = fs_op_fsync,
    .opendir = fs_op_opendir,
    .readdir = fs_op_readdir,
    .releasedir = fs_op_flush,
    .fsyncdir = fs_op_fsync,
    .statfs = fs_op_statfs,
    .setxattr = fs_op_setxattr,
    .getxattr = fs_op_getxattr,
    .listxattr = fs_op_listxattr,
    .removexattr = fs_op_removexattr,
    .access = fs_op_access,
    .create = fs_op_create,
};

/* The session's file descriptor. */

static void fs_poll_cb(uv_poll_t *h, int status, int events)
{
    struct fs *f = h->data;

    (void)events;
    if (status < 0) {
        IKD_ERROR("fs", "poll failed rv=%d -> stop serving", status);
        uv_poll_stop(h);
        return;
    }
    for (int i = 0; i < FS_MAX_REQS_PER_POLL; i++) {
        int rv = fuse_session_receive_buf(f->se, &f->buf);

        if (rv == -EINTR) {
            continue;
        }
        if (rv == -EAGAIN) {
            return;
        }
        if (rv <= 0 || fuse_session_exited(f->se)) {
            IKD_WARN("fs", "mount at %s is gone rv=%d -> stop serving",
                     f->mountpoint, rv);
            uv_poll_stop(h);
            return;
        }
        fuse_session_process_buf(f->se, &f->buf);
    }
}

/* Mounting. */

/* Undo the octal escapes of /proc/self/mountinfo ("\040" for a space) in
 * place. */
static void fs_unescape(char *s)
{
    char *out = s;

    while (*s != '\0') {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' &&
            s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
            *out++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) |
                            (s[3] - '0'));
            s += 4;
        } else {
            *out++ = *s++;
        }
    }
    *out = '\0';
}

/* Whether one line of mountinfo is an Ikada mount at path. */
static bool fs_mountinfo_match(char *line, const char *path)
{
    char *save = NULL;
    char *tok = strtok_r(line, " \n", &save);
    char *mnt = NULL;
    int field = 0;

    /* Fields: id, parent, dev, root, mount point, options, optional
     * fields ending at "-", then type and source. */
    for (; tok != NULL && strcmp(tok, "-") != 0; field++) {
        if (field == 4) {
            mnt = tok;
        }
        tok = strtok_r(NULL, " \n", &save);
    }
    if (mnt == NULL || tok == NULL) {
        return false;
    }
    fs_unescape(mnt);
    if (strcmp(mnt, path) != 0) {
        return false;
    }
    tok = strtok_r(NULL, " \n", &save);
    return tok != NULL && strcmp(tok, "fuse.ikada") == 0;
}

static bool fs_ikada_mounted(const char *path)
{
    FILE *in = fopen("/proc/self/mountinfo", "r");
    char *line = NULL;
    size_t cap = 0;
    bool found = false;

    if (in == NULL) {
        return false;
    }
    while (!found && getline(&line, &cap, in) > 0) {
        found = fs_mountinfo_match(line, path);
    }
    free(line);
    fclose(in);
    return found;
}

/* Lazily unmount path, as root directly, else through fusermount3. */
static int fs_detach(const char *path)
{
    pid_t pid;
    int status;

    if (umount2(path, MNT_DETACH) == 0) {
        return 0;
    }
    pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        execlp("fusermount3", "fusermount3", "-u", "-z", "-q", path,
               (char *)NULL);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) < 0) {
        return -errno;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EBUSY;
}

/* Whether the Ikada mount at path has a server behind it: stat() it in
 * a child, which a stopped or hung server can keep waiting but not this
 * process.  0 when it answered or did not within FS_PROBE_MS (a server
 * that is alive), -ENOTCONN when its server is gone, or another negative
 * errno. */
static int fs_probe_mount(const char *path)
{
    int status;
    pid_t pid = fork();

    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        struct stat st;

        if (stat(path, &st) == 0) {
            _exit(0);
        }
        _exit(errno == ENOTCONN ? 1 : 2);
    }
    for (int waited_ms = 0;; waited_ms += FS_PROBE_STEP_MS) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid) {
            break;
        }
        if (r < 0 && errno != EINTR) {
            return -errno;
        }
        if (waited_ms >= FS_PROBE_MS) {
            /* FUSE requests wait killably: the child goes. */
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 0;
        }
        usleep(FS_PROBE_STEP_MS * 1000);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return 0;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 1 ? -ENOTCONN : -EIO;
}

/* Remove what a crashed run left at path: a dead mount ("Transport
 * endpoint is not connected") or Ikada mounts, several if stacked, as long
 * as no running server serves them. */
static int fs_clear_stale(const char *path)
{
    struct stat st;

    for (int i = 0; i < 8; i++) {
        int rv;

        /* mountinfo first: stat() on the mount of a hung daemon would
         * wait for it forever. */
        if (fs_ikada_mounted(path)) {
            if (fs_probe_mount(path) == 0) {
                return IKD_EMOUNTED;
            }
        } else if (!(stat(path, &st) != 0 && errno == ENOTCONN)) {
            return 0;
        }
        IKD_WARN("fs", "stale mount at %s -> unmount it", path);
        rv = fs_detach(path);
        if (rv != 0) {
            IKD_ERROR("fs", "cannot unmount stale mount at %s rv=%d", path, rv);
            return rv;
        }
    }
    return -EBUSY;
}

/* mkdir -p. */
static int fs_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(buf)) {
        return -ENAMETOOLONG;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            return -errno;
        }
        buf[i] = path[i];
    }
    return 0;
}

/* The absolute path of mountpoint without resolving its last component,
 * which may be a dead mount that cannot be looked at.  Malloc'd. */
static char *fs_abs_path(const char *mountpoint)
{
    char *copy = strdup(mountpoint);
    char *parent = NULL;
    char *out = NULL;
    char *base;
    size_t len;

    if (copy == NULL) {
        return NULL;
    }
    len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/') {
        copy[--len] = '\0';
    }
    base = strrchr(copy, '/');
    if (base == NULL) {
        parent = realpath(".", NULL);
        base = copy;
    } else {
        *base++ = '\0';
        parent = realpath(copy[0] != '\0' ? copy : "/", NULL);
    }
    if (parent != NULL &&
        asprintf(&out, "%s/%s", strcmp(parent, "/") == 0 ? "" : parent, base) <
            0) {
        out = NULL;
    }
    free(parent);
    free(copy);
    return out;
}

/* The full path of mountpoint, symbolic links and "." resolved, found by
 * a child that a stopped server's mount on the way can keep waiting but
 * not this process: 0 with *out malloc'd, IKD_EMOUNTED when the child did
 * not finish within FS_PROBE_MS, or a negative errno (the last component
 * missing, or a dead mount). */
static int fs_resolve(const char *path, char **out)
{
    char buf[PATH_MAX];
    size_t len = 0;
    int fds[2];
    int status;
    pid_t pid;

    if (pipe(fds) != 0) {
        return -errno;
    }
    pid = fork();
    if (pid < 0) {
        int e = errno;

        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    if (pid == 0) {
        char full[PATH_MAX];
        size_t n;

        close(fds[0]);
        if (realpath(path, full) == NULL) {
            _exit(1);
        }
        n = strlen(full);
        _exit(write(fds[1], full, n) == (ssize_t)n ? 0 : 1);
    }
    close(fds[1]);
    for (int waited_ms = 0;; waited_ms += FS_PROBE_STEP_MS) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid) {
            break;
        }
        if (waited_ms >= FS_PROBE_MS || (r < 0 && errno != EINTR)) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            close(fds[0]);
            return IKD_EMOUNTED;
        }
        usleep(FS_PROBE_STEP_MS * 1000);
    }
    for (;;) {
        ssize_t n = read(fds[0], buf + len, sizeof(buf) - 1 - len);

        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fds[0]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || len == 0) {
        return -ENOENT;
    }
    buf[len] = '\0';
    *out = strdup(buf);
    return *out != NULL ? 0 : -ENOMEM;
}

static int fs_prepare_mountpoint(const char *mountpoint, char **abs)
{
    int rv = fs_mkdirs(mountpoint);
    int resolved;

    /* mkdir fails with ENOTCONN on a dead mount: clear it and retry.  A
     * path that resolves names the folder itself, however it was written
     * (a link, "."), so that a running server's mount is recognized. */
    *abs = NULL;
    resolved = fs_resolve(mountpoint, abs);
    if (resolved == IKD_EMOUNTED) {
        return IKD_EMOUNTED;
    }
    if (resolved != 0) {
        *abs = fs_abs_path(mountpoint);
    }
    if (*abs == NULL) {
        return rv != 0 ? rv : -ENOMEM;
    }
    rv = fs_clear_stale(*abs);
    if (rv == 0) {
        rv = fs_mkdirs(*abs);
    }
    if (rv == 0) {
        struct stat st;

        /* FUSE would mount over a file too; the file system is a folder. */
        if (stat(*abs, &st) != 0) {
            rv = -errno;
        } else if (!S_ISDIR(st.st_mode)) {
            rv = -ENOTDIR;
        }
    }
    if (rv != 0) {
        free(*abs);
        *abs = NULL;
    }
    return rv;
}

int fs_prepare(const char *mountpoint)
{
    char *abs = NULL;
    int rv = fs_prepare_mountpoint(mountpoint, &abs);

    free(abs);
    return rv;
}

static int fs_session_start(struct fs *f)
{
    /* Should this process die, the mount stays, dead: programs using it
     * get ENOTCONN rather than writing into the folder beneath, which
     * would look like success and replicate nothing.  The next start
     * clears it. */
    char *argv[] = {
        "ikada-server",
        "-o",
        "fsname=ikada,subtype=ikada,default_permissions",
        NULL,
    };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    int fd;

    f->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), f);
    fuse_opt_free_args(&args);
    if (f->se == NULL) {
        return -EINVAL;
    }
    if (fuse_session_mount(f->se, f->mountpoint) != 0) {
        fuse_session_destroy(f->se);
        f->se = NULL;
        return -EIO;
    }

    fd = fuse_session_fd(f->se);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        return -errno;
    }
    return 0;
}

int fs_mount(uv_loop_t *loop,
             struct node *node,
             const char *mountpoint,
             struct fs **out)
{
    struct fs *f = calloc(1, sizeof(*f));
    int rv;

    if (f == NULL) {
        return -ENOMEM;
    }
    f->loop = loop;
    f->node = node;
    f->uid = getuid();
    f->meta_time_ns = fs_now_ns();
    f->gid = getgid();
    if (getrandom(&f->session_base, sizeof(f->session_base), 0) !=
        (ssize_t)sizeof(f->session_base)) {
        f->session_base = (uint64_t)fs_now_ns() ^ ((uint64_t)getpid() << 32);
    }
    if (ikd_tracer_enabled()) {
        f->handles = calloc(FS_TRACE_HANDLES, sizeof(*f->handles));
    }
    /* Never session 0 ("none"), whatever the lane. */
    f->session_base =
        (f->session_base & ~(uint64_t)(FS_MAX_LANES - 1)) | FS_MAX_LANES;
    rv = fs_prepare_mountpoint(mountpoint, &f->mountpoint);
    if (rv != 0) {
        goto err_after_alloc;
    }

    rv = fs_session_start(f);
    if (rv != 0) {
        goto err_after_session;
    }
    rv = uv_poll_init(loop, &f->poll, fuse_session_fd(f->se));
    if (rv != 0) {
        goto err_after_session;
    }
    f->poll.data = f;
    rv = uv_poll_start(&f->poll, UV_READABLE, fs_poll_cb);
    assert(rv == 0);

    IKD_INFO("fs", "mounted at %s", f->mountpoint);
    *out = f;
    return 0;

err_after_session:
    IKD_ERROR("fs", "cannot mount at %s rv=%d", f->mountpoint, rv);
    if (f->se != NULL) {
        fuse_session_unmount(f->se);
        fuse_session_destroy(f->se);
    }
    free(f->mountpoint);
err_after_alloc:
    free(f->handles);
    free(f);
    return rv;
}

void fs_set_local_reads(struct fs *f, bool local)
{
    f->local_reads = local;
}

static void fs_close_cb(uv_handle_t *h)
{
    struct fs *f = h->data;
    void (*cb)(void *arg) = f->unmount_cb;
    void *arg = f->unmount_arg;

    /* The poll handle no longer watches the descriptor, which unmounting
     * closes. */
    fuse_session_unmount(f->se);
    fuse_session_destroy(f->se);
    IKD_INFO("fs", "unmounted %s", f->mountpoint);
    for (size_t i = 0; f->handles != NULL && i < FS_TRACE_HANDLES; i++) {
        if (f->handles[i].used) {
            ikd_span_end(&f->handles[i].span);
        }
    }
    free(f->handles);
    free(f->buf.mem);
    free(f->mountpoint);
    free(f);
    if (cb != NULL) {
        cb(arg);
    }
}

void fs_unmount(struct fs *f, void (*cb)(void *arg), void *arg)
{
    assert(!f->unmounting);
    f->unmounting = true;
    f->unmount_cb = cb;
    f->unmount_arg = arg;
    uv_poll_stop(&f->poll);

    /* The node calls every pending callback later, with IKD_ESHUTDOWN;
     * orphaned requests are then only freed. */
    while (f->pending != NULL) {
        struct fs_req *r = f->pending;

        fs_req_unlink(r);
        fuse_reply_err(r->req, EIO);
        r->fs = NULL;
    }
    uv_close((uv_handle_t *)&f->poll, fs_close_cb);
}
