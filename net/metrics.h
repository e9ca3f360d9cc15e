/* Metrics in the Prometheus text exposition format (version 0.0.4): a
 * growable text buffer, latency histograms with fixed buckets, and writers
 * for counters, gauges and histograms.
 *
 * Nothing here is thread-safe: histograms and buffers belong to the loop
 * thread, which renders the text that others then copy. */

#ifndef NET_METRICS_H
#define NET_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Text that grows as it is written.  After a failed allocation the buffer
 * keeps what it had and `failed` is set; further writes do nothing. */
struct ikd_buf
{
    char *data; /* NUL-terminated, malloc'd; NULL until the first write */
    size_t len;
    size_t cap;
    bool failed;
};

void ikd_buf_printf(struct ikd_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ikd_buf_free(struct ikd_buf *b);

/* Upper bounds of the latency buckets, in seconds; the last bucket, +Inf,
 * is implicit.  From 50 us to 10 s: a local fsync to a request timeout. */
#define IKD_HIST_BUCKETS 16

struct ikd_hist
{
    uint64_t counts[IKD_HIST_BUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t count;
    uint64_t sum_ns;
};

void ikd_hist_observe(struct ikd_hist *h, uint64_t ns);

/* Write the "# HELP" and "# TYPE" lines of a metric family. */
void ikd_metric_family(struct ikd_buf *b,
                       const char *name,
                       const char *type,
                       const char *help);

/* One sample; labels is "" or a label list without braces, such as
 * "peer=\"2\"". */
void ikd_metric_u64(struct ikd_buf *b,
                    const char *name,
                    const char *labels,
                    uint64_t value);

/* The _bucket, _sum and _count samples of a histogram, in seconds. */
void ikd_metric_hist(struct ikd_buf *b,
                     const char *name,
                     const struct ikd_hist *h);

#endif /* NET_METRICS_H */
