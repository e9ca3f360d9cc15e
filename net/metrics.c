/* Prometheus text exposition: buffers, histograms, writers. */

#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bucket bounds in microseconds, so that the comparison at observe time is
 * on integers; printed in seconds. */
static const uint64_t bucket_us[IKD_HIST_BUCKETS] = {
    50,    100,   250,    500,    1000,   2500,    5000,    10000,
    25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 10000000,
};

_Static_assert(sizeof(bucket_us) / sizeof(bucket_us[0]) == IKD_HIST_BUCKETS,
               "one bound per bucket");

static bool buf_reserve(struct ikd_buf *b, size_t more)
{
    size_t cap;
    char *data;

    if (b->failed) {
        return false;
    }
    if (b->len + more + 1 <= b->cap) {
        return true;
    }
    cap = b->cap > 0 ? b->cap : 4096;
    while (cap < b->len + more + 1) {
        cap *= 2;
    }
    data = realloc(b->data, cap);
    if (data == NULL) {
        b->failed = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

void ikd_buf_printf(struct ikd_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void ikd_buf_free(struct ikd_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void ikd_hist_observe(struct ikd_hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000;
    size_t i = 0;

    while (i < IKD_HIST_BUCKETS && us > bucket_us[i]) {
        i++;
    }
    h->counts[i]++;
    h->count++;
    h->sum_ns += ns;
}

void ikd_metric_family(struct ikd_buf *b,
                       const char *name,
                       const char *type,
                       const char *help)
{
    ikd_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void ikd_metric_u64(struct ikd_buf *b,
                    const char *name,
                    const char *labels,
                    uint64_t value)
{
    if (labels[0] != '\0') {
        ikd_buf_printf(b, "%s{%s} %" PRIu64 "\n", name, labels, value);
    } else {
        ikd_buf_printf(b, "%s %" PRIu64 "\n", name, value);
    }
}

void ikd_metric_hist(struct ikd_buf *b,
                     const char *name,
                     const struct ikd_hist *h)
{
    uint64_t cumulative = 0;

    for (size_t i = 0; i < IKD_HIST_BUCKETS; i++) {
        cumulative += h->counts[i];
        ikd_buf_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
                       (double)bucket_us[i] / 1e6, cumulative);
    }
    cumulative += h->counts[IKD_HIST_BUCKETS];
    ikd_buf_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cumulative);
    ikd_buf_printf(b, "%s_sum %.9f\n%s_count %" PRIu64 "\n", name,
                   (double)h->sum_ns / 1e9, name, h->count);
}
