/* Copies of removed files that this node still has open for writing. */

#include "orphan.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

struct orphan
{
    uint64_t ino;
    unsigned watchers; /* descriptors open for writing */
    bool kept;         /* removed from the state: the copy below is it */
    struct kv_attr attr;
    uint8_t *data; /* attr.size bytes, malloc'd; NULL when empty */
    /* Handed over by a transaction that has not committed yet: the copy
     * becomes the file only if it does. */
    bool pending;
    struct kv_attr pending_attr;
    uint8_t *pending_data;
};

struct kv_orphans
{
    pthread_mutex_t lock;
    struct orphan *v; /* a watched file each */
    size_t n;
    size_t cap;
    /* Copies kept, readable without the lock: while there are none, the
     * file system's every write need not look. */
    atomic_size_t n_kept;
};

struct kv_orphans *kv_orphans_new(void)
{
    struct kv_orphans *o = calloc(1, sizeof(*o));

    if (o != NULL && pthread_mutex_init(&o->lock, NULL) != 0) {
        free(o);
        o = NULL;
    }
    return o;
}

void kv_orphans_free(struct kv_orphans *o)
{
    if (o == NULL) {
        return;
    }
    for (size_t i = 0; i < o->n; i++) {
        free(o->v[i].data);
        free(o->v[i].pending_data);
    }
    free(o->v);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

/* The entry of ino, or NULL; with the lock held. */
static struct orphan *find(struct kv_orphans *o, uint64_t ino)
{
    for (size_t i = 0; i < o->n; i++) {
        if (o->v[i].ino == ino) {
            return &o->v[i];
        }
    }
    return NULL;
}

int kv_orphans_watch(struct kv_orphans *o, uint64_t ino)
{
    struct orphan *e;
    int rv = 0;

    pthread_mutex_lock(&o->lock);
    e = find(o, ino);
    if (e == NULL && o->n == o->cap) {
        size_t cap = o->cap == 0 ? 16 : o->cap * 2;
        struct orphan *v = realloc(o->v, cap * sizeof(*v));

        if (v == NULL) {
            rv = -ENOMEM;
        } else {
            o->v = v;
            o->cap = cap;
        }
    }
    if (e == NULL && rv == 0) {
        e = &o->v[o->n++];
        memset(e, 0, sizeof(*e));
        e->ino = ino;
    }
    if (e != NULL) {
        e->watchers++;
    }
    pthread_mutex_unlock(&o->lock);
    return rv;
}

void kv_orphans_unwatch(struct kv_orphans *o, uint64_t ino)
{
    struct orphan *e;

    pthread_mutex_lock(&o->lock);
    e = find(o, ino);
    if (e != NULL && --e->watchers == 0) {
        if (e->kept) {
            atomic_fetch_sub(&o->n_kept, 1);
        }
        free(e->data);
        free(e->pending_data);
        *e = o->v[--o->n];
    }
    pthread_mutex_unlock(&o->lock);
}

bool kv_orphans_watched(struct kv_orphans *o, uint64_t ino)
{
    bool watched;

    pthread_mutex_lock(&o->lock);
    watched = find(o, ino) != NULL;
    pthread_mutex_unlock(&o->lock);
    return watched;
}

void kv_orphans_keep(struct kv_orphans *o,
                     const struct kv_attr *a,
                     const uint8_t *data,
                     size_t len)
{
    struct orphan *e;
    uint8_t *copy = NULL;

    if (len > a->size) {
        len = (size_t)a->size;
    }
    if (a->size > 0) {
        copy = calloc(1, (size_t)a->size);
        if (copy == NULL) {
            return;
        }
        if (len > 0) {
            memcpy(copy, data, len);
        }
    }
    pthread_mutex_lock(&o->lock);
    e = find(o, a->ino);
    /* A copy kept already is the file, and the state no longer has it. */
    if (e != NULL && !e->kept) {
        free(e->pending_data);
        e->pending = true;
        e->pending_attr = *a;
        e->pending_attr.nlink = 0;
        e->pending_data = copy;
        copy = NULL;
    }
    pthread_mutex_unlock(&o->lock);
    free(copy);
}

void kv_orphans_settle(struct kv_orphans *o, bool committed)
{
    pthread_mutex_lock(&o->lock);
    for (size_t i = 0; i < o->n; i++) {
        struct orphan *e = &o->v[i];

        if (!e->pending) {
            continue;
        }
        e->pending = false;
        if (committed && !e->kept) {
            atomic_fetch_add(&o->n_kept, 1);
            free(e->data);
            e->kept = true;
            e->attr = e->pending_attr;
            e->data = e->pending_data;
        } else {
            free(e->pending_data);
        }
        e->pending_data = NULL;
    }
    pthread_mutex_unlock(&o->lock);
}

size_t kv_orphans_watching(struct kv_orphans *o, uint64_t *inos, size_t cap)
{
    size_t n = 0;

    pthread_mutex_lock(&o->lock);
    for (size_t i = 0; i < o->n; i++) {
        if (!o->v[i].kept) {
            if (n < cap) {
                inos[n] = o->v[i].ino;
            }
            n++;
        }
    }
    pthread_mutex_unlock(&o->lock);
    return n;
}

/* The kept copy of ino with the lock held, or NULL (lock released). */
static struct orphan *lock_kept(struct kv_orphans *o, uint64_t ino)
{
    struct orphan *e;

    if (atomic_load(&o->n_kept) == 0) {
        return NULL;
    }
    pthread_mutex_lock(&o->lock);
    e = find(o, ino);
    if (e == NULL || !e->kept) {
        pthread_mutex_unlock(&o->lock);
        return NULL;
    }
    return e;
}

int kv_orphans_attr(struct kv_orphans *o, uint64_t ino, struct kv_attr *a)
{
    struct orphan *e = lock_kept(o, ino);

    if (e == NULL) {
        return -ENOENT;
    }
    *a = e->attr;
    pthread_mutex_unlock(&o->lock);
    return 0;
}

int kv_orphans_read(struct kv_orphans *o,
                    uint64_t ino,
                    uint64_t offset,
                    size_t size,
                    uint8_t *buf,
                    size_t *n)
{
    struct orphan *e = lock_kept(o, ino);

    if (e == NULL) {
        return -ENOENT;
    }
    *n = 0;
    if (offset < e->attr.size) {
        *n = e->attr.size - offset < size ? (size_t)(e->attr.size - offset)
                                          : size;
        memcpy(buf, e->data + offset, *n);
    }
    pthread_mutex_unlock(&o->lock);
    return 0;
}

/* Make e size bytes long, new bytes zero.  0, -EFBIG or -ENOMEM. */
static int resize(struct orphan *e, uint64_t size, uint64_t max)
{
    uint8_t *data;

    if (size > max) {
        return -EFBIG;
    }
    if (size == e->attr.size) {
        return 0;
    }
    if (size == 0) {
        free(e->data);
        e->data = NULL;
        e->attr.size = 0;
        return 0;
    }
    data = realloc(e->data, (size_t)size);
    if (data == NULL) {
        return -ENOMEM;
    }
    if (size > e->attr.size) {
        memset(data + e->attr.size, 0, (size_t)(size - e->attr.size));
    }
    e->data = data;
    e->attr.size = size;
    return 0;
}

int kv_orphans_write(struct kv_orphans *o,
                     uint64_t ino,
                     uint64_t offset,
                     const uint8_t *data,
                     size_t len,
                     bool append,
                     uint64_t max,
                     int64_t mtime_ns)
{
    struct orphan *e = lock_kept(o, ino);
    int rv = 0;

    if (e == NULL) {
        return -ENOENT;
    }
    if (append) {
        offset = e->attr.size;
    }
    if (offset > max || len > max - offset) {
        rv = -EFBIG;
    } else if (offset + len > e->attr.size) {
        rv = resize(e, offset + len, max);
    }
    if (rv == 0 && len > 0) {
        memcpy(e->data + offset, data, len);
        e->attr.mtime_ns = mtime_ns;
        e->attr.ctime_ns = mtime_ns;
    }
    pthread_mutex_unlock(&o->lock);
    return rv;
}

int kv_orphans_resize(struct kv_orphans *o,
                      uint64_t ino,
                      uint64_t size,
                      uint64_t max,
                      int64_t mtime_ns)
{
    struct orphan *e = lock_kept(o, ino);
    int rv;

    if (e == NULL) {
        return -ENOENT;
    }
    rv = resize(e, size, max);
    if (rv == 0) {
        e->attr.mtime_ns = mtime_ns;
        e->attr.ctime_ns = mtime_ns;
    }
    pthread_mutex_unlock(&o->lock);
    return rv;
}

int kv_orphans_setattr(struct kv_orphans *o,
                       uint64_t ino,
                       uint32_t valid,
                       uint32_t mode,
                       int64_t mtime_ns,
                       int64_t ctime_ns)
{
    struct orphan *e = lock_kept(o, ino);

    if (e == NULL) {
        return -ENOENT;
    }
    if (valid & KV_SET_MODE) {
        e->attr.mode = mode & 07777;
    }
    if (valid & KV_SET_MTIME) {
        e->attr.mtime_ns = mtime_ns;
    }
    e->attr.ctime_ns = ctime_ns;
    pthread_mutex_unlock(&o->lock);
    return 0;
}
