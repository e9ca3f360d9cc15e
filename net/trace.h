/* Tracing: spans exported with OTLP over HTTP (JSON encoding).
 *
 * Configured from the standard OpenTelemetry variables when the tracer
 * starts: OTEL_SDK_DISABLED, OTEL_EXPORTER_OTLP_ENDPOINT (with /v1/traces
 * appended) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as given),
 * OTEL_EXPORTER_OTLP_HEADERS and _TRACES_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT,
 * OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and
 * OTEL_TRACES_SAMPLER_ARG, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY
 * and OTEL_BSP_MAX_EXPORT_BATCH_SIZE.  Without an endpoint the tracer is
 * off and every call below costs a branch.
 *
 * Spans are begun and ended on one thread (the loop).  Ending a span copies
 * it into a bounded queue; an exporter thread of its own, at a lower
 * priority than the rest of the process, sends batches.  When the queue is
 * full the span is dropped and counted: a slow or absent collector never
 * slows the node. */

#ifndef NET_TRACE_H
#define NET_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* W3C trace context: what travels between nodes.  All zero means none. */
struct ikd_trace_ctx
{
    uint8_t trace_id[16];
    uint8_t span_id[8];
    bool sampled;
};

bool ikd_trace_ctx_valid(const struct ikd_trace_ctx *c);

/* "00-<trace id>-<span id>-<flags>" into buf (at least 56 bytes), and
 * back: 0 or -EINVAL. */
void ikd_trace_ctx_format(const struct ikd_trace_ctx *c, char *buf);
int ikd_trace_ctx_parse(const char *text, struct ikd_trace_ctx *c);

enum ikd_span_kind {
    IKD_SPAN_INTERNAL = 1,
    IKD_SPAN_SERVER = 2,
    IKD_SPAN_CLIENT = 3,
};

#define IKD_SPAN_ATTRS 6
#define IKD_SPAN_VALUE_BYTES 64

/* Span names and attribute keys are not copied: they must live until the
 * span is exported, which string literals do. */
struct ikd_span_attr
{
    const char *key;
    bool is_int;
    int64_t int_value;
    char str_value[IKD_SPAN_VALUE_BYTES];
};

/* A span in progress; lives wherever its operation's state lives. */
struct ikd_span
{
    struct ikd_trace_ctx ctx; /* this span's; pass it on as a parent */
    uint8_t parent_span_id[8];
    bool has_parent;
    bool recording; /* false when tracing is off or not sampled */
    bool error;
    enum ikd_span_kind kind;
    const char *name;
    uint64_t start_ns; /* Unix time */
    uint64_t end_ns;   /* set by ikd_span_end() */
    unsigned n_attrs;
    struct ikd_span_attr attrs[IKD_SPAN_ATTRS]; /* the first n_attrs */
};

/* Read the environment and, when an endpoint is set, start the exporter.
 * service is the service.name used when OTEL_SERVICE_NAME does not give
 * one; node_id, unless 0, goes into service.instance.id.  Returns 0
 * (also when the tracer stays off), or -EINVAL with *why naming a
 * malformed variable. */
int ikd_tracer_start(const char *service, uint32_t node_id, const char **why);

/* Export what is queued (waiting at most about a second for the
 * collector), then stop the exporter thread. */
void ikd_tracer_stop(void);

bool ikd_tracer_enabled(void);

/* Where spans go ("" when the tracer is off), for the start-up log. */
const char *ikd_tracer_url(void);

/* Begin a span as a child of parent, or as the root of a new trace when
 * parent is NULL or not valid (the sampler decides then; a child follows
 * its parent's decision). */
void ikd_span_begin(struct ikd_span *s,
                    const char *name,
                    enum ikd_span_kind kind,
                    const struct ikd_trace_ctx *parent);

/* Attributes past IKD_SPAN_ATTRS are ignored; long values are cut. */
void ikd_span_set_str(struct ikd_span *s, const char *key, const char *value);
void ikd_span_set_int(struct ikd_span *s, const char *key, int64_t value);
void ikd_span_set_error(struct ikd_span *s, const char *message);

/* End the span now and queue it for export when it records. */
void ikd_span_end(struct ikd_span *s);

struct ikd_trace_stats
{
    uint64_t exported; /* spans the collector accepted */
    uint64_t dropped;  /* spans lost: queue full or export failed */
};

void ikd_tracer_stats(struct ikd_trace_stats *out);

#endif /* NET_TRACE_H */
