/* Files removed while this node has them open for writing.
 *
 * POSIX keeps an unlinked file usable through the descriptors open on it,
 * and programs rely on that (an anonymous temporary file is created and
 * unlinked at once).  The replicated state forgets a file as soon as a
 * command removes it, so each node keeps its own copy of the files it
 * watches: the applying thread hands over the content of a watched file
 * inside the transaction that removes it, and from then on the file
 * system serves that descriptor's reads and writes from the copy.  No
 * other node, and no name, can reach such a file, so the copy is nobody
 * else's business; it goes when the last descriptor closes.
 *
 * Thread-safe: the file system watches and uses copies on the loop, the
 * state machine keeps copies on the applying thread. */

#ifndef KV_ORPHAN_H
#define KV_ORPHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reader.h"

struct kv_orphans;

struct kv_orphans *kv_orphans_new(void);
void kv_orphans_free(struct kv_orphans *o);

/* One more, or one fewer, descriptor open for writing on ino; the copy
 * goes with the last.  watch returns 0 or -ENOMEM. */
int kv_orphans_watch(struct kv_orphans *o, uint64_t ino);
void kv_orphans_unwatch(struct kv_orphans *o, uint64_t ino);

/* For the state machine, removing file a whose content is data[0..len)
 * (shorter than a->size when it ends in zeros): keep a copy if it is
 * watched.  The copy waits for kv_orphans_settle(): it becomes the file
 * only once the transaction that removes the file commits, and a
 * transaction rolled back (a full disk) leaves the file where it was.  A
 * copy kept already stays as it is.  Out of memory, the copy is not
 * kept. */
bool kv_orphans_watched(struct kv_orphans *o, uint64_t ino);
void kv_orphans_keep(struct kv_orphans *o,
                     const struct kv_attr *a,
                     const uint8_t *data,
                     size_t len);
void kv_orphans_settle(struct kv_orphans *o, bool committed);

/* The watched files without a copy yet, into inos[0..cap); returns how
 * many there are, which may be more than cap. */
size_t kv_orphans_watching(struct kv_orphans *o, uint64_t *inos, size_t cap);

/* The copy of ino: its attributes (nlink 0), and reads, writes and size
 * changes on it.  Each returns -ENOENT when there is no copy of ino,
 * which is then still in the replicated state (or never was).  Writes
 * past max bytes are refused with -EFBIG; an append writes at the end;
 * mtime_ns is the time of the change. */
int kv_orphans_attr(struct kv_orphans *o, uint64_t ino, struct kv_attr *a);
int kv_orphans_read(struct kv_orphans *o,
                    uint64_t ino,
                    uint64_t offset,
                    size_t size,
                    uint8_t *buf,
                    size_t *n);
int kv_orphans_write(struct kv_orphans *o,
                     uint64_t ino,
                     uint64_t offset,
                     const uint8_t *data,
                     size_t len,
                     bool append,
                     uint64_t max,
                     int64_t mtime_ns);
int kv_orphans_resize(struct kv_orphans *o,
                      uint64_t ino,
                      uint64_t size,
                      uint64_t max,
                      int64_t mtime_ns);
/* Mode and mtime as valid (KV_SET_MODE, KV_SET_MTIME) says; the change
 * itself happens at ctime_ns. */
int kv_orphans_setattr(struct kv_orphans *o,
                       uint64_t ino,
                       uint32_t valid,
                       uint32_t mode,
                       int64_t mtime_ns,
                       int64_t ctime_ns);

#endif /* KV_ORPHAN_H */
