/* Read access to the file-tree state machine's tables from a connection of
 * its own (WAL readers never wait for the writer).  Used by the loop thread
 * to serve reads once they are known to be fresh enough. */

#ifndef KV_READER_H
#define KV_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kv_reader;

struct kv_attr
{
    uint64_t ino;
    bool is_dir;
    uint32_t mode; /* permission bits only, 07777 */
    uint64_t size; /* bytes of a file; 0 for a folder */
    int64_t mtime_ns;
    int64_t ctime_ns;
    uint32_t nlink;
};

/* Open a read-only connection to DIR/ikada.db, which kv_store_open() has
 * already created.  0 or a negative code. */
int kv_reader_open(const char *dir, struct kv_reader **out);
void kv_reader_close(struct kv_reader *r);

/* The attributes of an inode; KV_ROOT_INO is the root folder.
 * 0 or -ENOENT. */
int kv_reader_getattr(struct kv_reader *r, uint64_t ino, struct kv_attr *a);

/* The entry name in folder parent.  0, -ENOENT, -ENOTDIR. */
int kv_reader_lookup(struct kv_reader *r,
                     uint64_t parent,
                     const char *name,
                     size_t name_len,
                     struct kv_attr *a);

/* Entries of folder ino in a stable order, from position `offset` (0 for
 * the first); for each, cb gets the entry, its name (NUL-terminated) and
 * the position of the next one.  Positions are inode numbers plus one, so
 * every position below KV_FIRST_INO also means "from the first": the
 * caller may number entries of its own ("." and "..") with them.  Stops
 * early when cb returns non-zero; cb must not call into r.  0, -ENOENT,
 * -ENOTDIR. */
typedef int (*kv_readdir_cb)(void *arg,
                             const struct kv_attr *a,
                             const char *name,
                             uint64_t next_offset);
int kv_reader_readdir(struct kv_reader *r,
                      uint64_t ino,
                      uint64_t offset,
                      kv_readdir_cb cb,
                      void *arg);

/* Copy at most size bytes of file ino from offset into buf; *n gets how
 * many.  0, -ENOENT, -EISDIR. */
int kv_reader_read(struct kv_reader *r,
                   uint64_t ino,
                   uint64_t offset,
                   size_t size,
                   uint8_t *buf,
                   size_t *n);

/* The whole value of the file at key (a path), in a malloc'd buffer the
 * caller frees.  0, -ENOENT (also for a folder: it is not a key), -EINVAL
 * for a key kv_key_check() refuses. */
int kv_reader_get(struct kv_reader *r,
                  const char *key,
                  size_t key_len,
                  uint8_t **value,
                  size_t *len);

/* Every file key that starts with prefix, in byte order, full path without
 * a leading '/' (NUL-terminated, len bytes before the NUL).  cb stops the
 * walk by returning non-zero.  0 or a negative code. */
typedef int (*kv_list_cb)(void *arg, const char *key, size_t len);
int kv_reader_list(struct kv_reader *r,
                   const char *prefix,
                   size_t prefix_len,
                   kv_list_cb cb,
                   void *arg);

#endif /* KV_READER_H */
