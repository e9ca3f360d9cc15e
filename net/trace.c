/* Spans, a bounded queue and an OTLP/HTTP JSON exporter thread. */

#include "trace.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

/* Defaults of the batch span processor variables (OpenTelemetry SDK
 * configuration), and the bound on the final flush at stop. */
#define DEFAULT_QUEUE 2048
#define DEFAULT_DELAY_MS 5000
#define DEFAULT_BATCH 512
#define DEFAULT_TIMEOUT_MS 10000
#define STOP_FLUSH_MS 1000
/* The exporter thread's nice value, above the process's. */
#define EXPORTER_NICE 10
#define URL_BYTES 1024
#define RESOURCE_ATTRS 16

struct kv_text
{
    char *key;
    char *value;
};

/* The process's one tracer.  Fields above `lock` are set before the
 * exporter starts and only read afterwards. */
static struct tracer
{
    bool on;
    char url[URL_BYTES];
    struct curl_slist *headers;
    unsigned timeout_ms;
    unsigned delay_ms;
    size_t batch;
    enum { SAMPLE_ALWAYS, SAMPLE_NEVER, SAMPLE_RATIO } root_sampler;
    bool parent_based;
    uint64_t ratio_bound; /* sampled when the id's low 64 bits are below */
    struct kv_text resource[RESOURCE_ATTRS];
    size_t n_resource;
    uint64_t rng;
    pthread_t thread;

    /* Ended spans go into queue; the exporter swaps it with spare, under
     * the lock and without copying, then sends spare's spans in batches
     * with the lock released, so the loop never waits for a copy. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct ikd_span *queue; /* len of cap spans */
    struct ikd_span *spare; /* cap spans; the exporter's */
    size_t cap, len;
    bool stopping;
    struct ikd_trace_stats stats;
} T = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* ---- identifiers and context ---- */

/* xorshift64*, seeded from the kernel: ids need to be unique, not
 * secret. */
static uint64_t next_random(void)
{
    if (T.rng == 0) {
        if (getrandom(&T.rng, sizeof(T.rng), 0) != sizeof(T.rng)) {
            T.rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&T;
        }
        T.rng |= 1;
    }
    T.rng ^= T.rng >> 12;
    T.rng ^= T.rng << 25;
    T.rng ^= T.rng >> 27;
    return T.rng * UINT64_C(2685821657736338717);
}

static void fill_random(uint8_t *out, size_t len)
{
    while (len > 0) {
        uint64_t r = next_random();
        size_t n = len < sizeof(r) ? len : sizeof(r);
        memcpy(out, &r, n);
        out += n;
        len -= n;
    }
}

static bool all_zero(const uint8_t *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (b[i] != 0) {
            return false;
        }
    }
    return true;
}

bool ikd_trace_ctx_valid(const struct ikd_trace_ctx *c)
{
    return c != NULL && !all_zero(c->trace_id, sizeof(c->trace_id)) &&
           !all_zero(c->span_id, sizeof(c->span_id));
}

static void hex(const uint8_t *b, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * len] = '\0';
}

static int unhex(const char *s, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < 2 * len; i++) {
        int v;
        if (s[i] >= '0' && s[i] <= '9') {
            v = s[i] - '0';
        } else if (s[i] >= 'a' && s[i] <= 'f') {
            v = s[i] - 'a' + 10;
        } else {
            return -EINVAL;
        }
        if (i % 2 == 0) {
            out[i / 2] = (uint8_t)(v << 4);
        } else {
            out[i / 2] |= (uint8_t)v;
        }
    }
    return 0;
}

void ikd_trace_ctx_format(const struct ikd_trace_ctx *c, char *buf)
{
    char tid[33], sid[17];

    hex(c->trace_id, sizeof(c->trace_id), tid);
    hex(c->span_id, sizeof(c->span_id), sid);
    snprintf(buf, 56, "00-%s-%s-%s", tid, sid, c->sampled ? "01" : "00");
}

int ikd_trace_ctx_parse(const char *text, struct ikd_trace_ctx *c)
{
    struct ikd_trace_ctx p = {0};
    uint8_t flags;

    /* version "00", then fixed-width fields: 2+1+32+1+16+1+2 = 55. */
    if (strlen(text) != 55 || strncmp(text, "00-", 3) != 0 || text[35] != '-' ||
        text[52] != '-' || unhex(text + 3, p.trace_id, 16) != 0 ||
        unhex(text + 36, p.span_id, 8) != 0 ||
        unhex(text + 53, &flags, 1) != 0 || !ikd_trace_ctx_valid(&p)) {
        return -EINVAL;
    }
    p.sampled = (flags & 1) != 0;
    *c = p;
    return 0;
}

/* ---- spans (loop thread) ---- */

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool sample_root(const uint8_t *trace_id)
{
    uint64_t low;

    switch (T.root_sampler) {
        case SAMPLE_NEVER:
            return false;
        case SAMPLE_RATIO:
            memcpy(&low, trace_id + 8, sizeof(low));
            return low < T.ratio_bound;
        default:
            return true;
    }
}

bool ikd_tracer_enabled(void)
{
    return T.on;
}

const char *ikd_tracer_url(void)
{
    return T.on ? T.url : "";
}

void ikd_span_begin(struct ikd_span *s,
                    const char *name,
                    enum ikd_span_kind kind,
                    const struct ikd_trace_ctx *parent)
{
    uint8_t trace_id[sizeof(s->ctx.trace_id)];
    bool child = ikd_trace_ctx_valid(parent);

    /* The sampling decision comes before the rest of the span is touched:
     * an unsampled span is only its context. */
    s->recording = false;
    s->has_parent = false;
    memset(&s->ctx, 0, sizeof(s->ctx));
    if (!T.on) {
        return;
    }
    if (child) {
        memcpy(trace_id, parent->trace_id, sizeof(trace_id));
    } else {
        fill_random(trace_id, sizeof(trace_id));
    }
    if (!(child && T.parent_based ? parent->sampled : sample_root(trace_id))) {
        /* Still a context, so that children follow the decision. */
        memcpy(s->ctx.trace_id, trace_id, sizeof(trace_id));
        fill_random(s->ctx.span_id, sizeof(s->ctx.span_id));
        return;
    }
    memset(s, 0, offsetof(struct ikd_span, attrs));
    memcpy(s->ctx.trace_id, trace_id, sizeof(trace_id));
    s->ctx.sampled = true;
    if (child) {
        memcpy(s->parent_span_id, parent->span_id, sizeof(s->parent_span_id));
        s->has_parent = true;
    }
    fill_random(s->ctx.span_id, sizeof(s->ctx.span_id));
    s->recording = true;
    s->kind = kind;
    s->name = name;
    s->start_ns = unix_ns();
}

static struct ikd_span_attr *attr_slot(struct ikd_span *s, const char *key)
{
    struct ikd_span_attr *a;

    if (!s->recording || s->n_attrs == IKD_SPAN_ATTRS) {
        return NULL;
    }
    a = &s->attrs[s->n_attrs++];
    a->key = key;
    return a;
}

void ikd_span_set_str(struct ikd_span *s, const char *key, const char *value)
{
    struct ikd_span_attr *a = attr_slot(s, key);
    if (a != NULL) {
        a->is_int = false;
        snprintf(a->str_value, sizeof(a->str_value), "%s", value);
    }
}

void ikd_span_set_int(struct ikd_span *s, const char *key, int64_t value)
{
    struct ikd_span_attr *a = attr_slot(s, key);
    if (a != NULL) {
        a->is_int = true;
        a->int_value = value;
    }
}

void ikd_span_set_error(struct ikd_span *s, const char *message)
{
    s->error = true;
    ikd_span_set_str(s, "error.message", message);
}

void ikd_span_end(struct ikd_span *s)
{
    if (!s->recording) {
        return;
    }
    s->recording = false;
    s->end_ns = unix_ns();
    pthread_mutex_lock(&T.lock);
    if (T.len == T.cap || T.stopping) {
        T.stats.dropped++;
    } else {
        /* The attributes in use only: most of a span is free slots. */
        memcpy(&T.queue[T.len++], s,
               offsetof(struct ikd_span, attrs) +
                   s->n_attrs * sizeof(s->attrs[0]));
        /* Once: the exporter looks again before it sleeps. */
        if (T.len == T.batch) {
            pthread_cond_signal(&T.wake);
        }
    }
    pthread_mutex_unlock(&T.lock);
}

void ikd_tracer_stats(struct ikd_trace_stats *out)
{
    pthread_mutex_lock(&T.lock);
    *out = T.stats;
    pthread_mutex_unlock(&T.lock);
}

/* ---- OTLP/JSON (exporter thread) ---- */

/* The batch is written straight into one growing buffer: building a tree
 * of JSON values per span cost several times more. */
struct jbuf
{
    char *p;
    size_t len;
    size_t cap;
    bool failed; /* out of memory: the batch is dropped */
};

static void jb_put(struct jbuf *b, const char *s, size_t n)
{
    if (b->failed) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void jb_puts(struct jbuf *b, const char *s)
{
    jb_put(b, s, strlen(s));
}

/* s as a quoted JSON string; runs that need no escape go in one piece. */
static void jb_string(struct jbuf *b, const char *s)
{
    jb_put(b, "\"", 1);
    while (*s != '\0') {
        size_t run = 0;
        while (s[run] != '\0' && s[run] != '"' && s[run] != '\\' &&
               (unsigned char)s[run] >= 0x20) {
            run++;
        }
        jb_put(b, s, run);
        s += run;
        if (*s != '\0') {
            char esc[8];
            unsigned char c = (unsigned char)*s++;
            if (c == '"' || c == '\\') {
                esc[0] = '\\';
                esc[1] = (char)c;
                jb_put(b, esc, 2);
            } else {
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                jb_put(b, esc, 6);
            }
        }
    }
    jb_put(b, "\"", 1);
}

/* v in decimal, quoted or not, written by hand: snprintf was the largest
 * part of the cost of a span. */
static void jb_u64(struct jbuf *b, uint64_t v, bool quoted)
{
    char buf[24];
    size_t i = sizeof(buf);

    if (quoted) {
        buf[--i] = '"';
    }
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (quoted) {
        buf[--i] = '"';
    }
    jb_put(b, buf + i, sizeof(buf) - i);
}

static void jb_attr_str(struct jbuf *b, const char *key, const char *value)
{
    jb_puts(b, "{\"key\":");
    jb_string(b, key);
    jb_puts(b, ",\"value\":{\"stringValue\":");
    jb_string(b, value);
    jb_puts(b, "}}");
}

static void jb_attr_int(struct jbuf *b, const char *key, int64_t value)
{
    jb_puts(b, "{\"key\":");
    jb_string(b, key);
    /* OTLP/JSON carries 64-bit integers as decimal strings. */
    jb_puts(b, value < 0 ? ",\"value\":{\"intValue\":\"-"
                         : ",\"value\":{\"intValue\":\"");
    jb_u64(b, value < 0 ? 0 - (uint64_t)value : (uint64_t)value, false);
    jb_puts(b, "\"}}");
}

static void span_json(struct jbuf *b, const struct ikd_span *s)
{
    char id[33];

    hex(s->ctx.trace_id, sizeof(s->ctx.trace_id), id);
    jb_puts(b, "{\"traceId\":\"");
    jb_puts(b, id);
    hex(s->ctx.span_id, sizeof(s->ctx.span_id), id);
    jb_puts(b, "\",\"spanId\":\"");
    jb_puts(b, id);
    if (s->has_parent) {
        hex(s->parent_span_id, sizeof(s->parent_span_id), id);
        jb_puts(b, "\",\"parentSpanId\":\"");
        jb_puts(b, id);
    }
    jb_puts(b, "\",\"name\":");
    jb_string(b, s->name);
    jb_puts(b, ",\"kind\":");
    jb_u64(b, (uint64_t)s->kind, false);
    jb_puts(b, ",\"startTimeUnixNano\":");
    jb_u64(b, s->start_ns, true);
    jb_puts(b, ",\"endTimeUnixNano\":");
    jb_u64(b, s->end_ns, true);
    if (s->n_attrs > 0) {
        jb_puts(b, ",\"attributes\":[");
    }
    for (unsigned i = 0; i < s->n_attrs; i++) {
        const struct ikd_span_attr *a = &s->attrs[i];
        if (i > 0) {
            jb_put(b, ",", 1);
        }
        if (a->is_int) {
            jb_attr_int(b, a->key, a->int_value);
        } else {
            jb_attr_str(b, a->key, a->str_value);
        }
    }
    if (s->n_attrs > 0) {
        jb_put(b, "]", 1);
    }
    /* Without a status the span's is unset, which means it went well. */
    jb_puts(b, s->error ? ",\"status\":{\"code\":2}}" : "}");
}

/* One ExportTraceServiceRequest in OTLP/JSON; NULL when out of memory. */
static char *batch_json(const struct ikd_span *spans, size_t n)
{
    struct jbuf b = {0};

    jb_puts(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    for (size_t i = 0; i < T.n_resource; i++) {
        if (i > 0) {
            jb_put(&b, ",", 1);
        }
        jb_attr_str(&b, T.resource[i].key, T.resource[i].value);
    }
    jb_puts(&b,
            "]},\"scopeSpans\":[{\"scope\":{\"name\":\"ikada\"},"
            "\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            jb_put(&b, ",", 1);
        }
        span_json(&b, &spans[i]);
    }
    jb_puts(&b, "]}]}]}");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static size_t discard_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    (void)ptr;
    (void)arg;
    return size * nmemb;
}

/* POST one batch; true when the collector took it (2xx). */
static bool export_batch(CURL *curl, const struct ikd_span *spans, size_t n)
{
    char *body = batch_json(spans, n);
    long status = 0;
    CURLcode rc;

    if (body == NULL) {
        return false;
    }
    curl_easy_setopt(curl, CURLOPT_URL, T.url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, T.headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_cb);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(
        curl, CURLOPT_TIMEOUT_MS,
        (long)(T.stopping && T.timeout_ms > STOP_FLUSH_MS ? STOP_FLUSH_MS
                                                          : T.timeout_ms));
    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    }
    free(body);
    return rc == CURLE_OK && status >= 200 && status < 300;
}

/* Wait until a batch is full, the delay passed or the tracer stops;
 * under the lock. */
static void exporter_wait(void)
{
    struct timespec deadline;

    if (T.len >= T.batch || T.stopping) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += T.delay_ms / 1000;
    deadline.tv_nsec += (long)(T.delay_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&T.wake, &T.lock, &deadline);
}

/* Send n spans from spans, T.batch at a time; how many the collector
 * took.  After a failure the rest is dropped: a collector that is down
 * costs one timeout, not one per batch.  Without the lock. */
static size_t export_all(CURL *curl, const struct ikd_span *spans, size_t n)
{
    size_t ok = 0;

    for (size_t i = 0; i < n && curl != NULL; i += T.batch) {
        size_t k = n - i < T.batch ? n - i : T.batch;
        if (!export_batch(curl, spans + i, k)) {
            break;
        }
        ok += k;
    }
    return ok;
}

static void *exporter_main(void *arg)
{
    CURL *curl = curl_easy_init();

    (void)arg;
    /* Linux gives each thread its own nice value: when the cores are
     * busy, the loop and the storage worker go first, and spans wait, then
     * drop, rather than requests.  Where that is refused, the thread keeps
     * the process's priority. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), EXPORTER_NICE);
    pthread_mutex_lock(&T.lock);
    for (;;) {
        exporter_wait();
        if (T.len == 0 && T.stopping) {
            break;
        }
        if (T.len == 0) {
            continue;
        }
        struct ikd_span *full = T.queue;
        size_t n = T.len;
        T.queue = T.spare;
        T.spare = full;
        T.len = 0;
        pthread_mutex_unlock(&T.lock);
        size_t ok = export_all(curl, full, n);
        pthread_mutex_lock(&T.lock);
        T.stats.exported += ok;
        T.stats.dropped += n - ok;
    }
    pthread_mutex_unlock(&T.lock);
    curl_easy_cleanup(curl);
    return NULL;
}

/* ---- configuration ---- */

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* A positive integer from the environment, or dflt when unset. */
static int env_uint(const char *name, unsigned dflt, unsigned *out)
{
    const char *v = env(name);
    char *end;
    unsigned long n;

    *out = dflt;
    if (v == NULL) {
        return 0;
    }
    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno != 0 || *end != '\0' || n == 0 || n > 1000000000ul) {
        return -EINVAL;
    }
    *out = (unsigned)n;
    return 0;
}

/* Percent-decode s in place (W3C baggage style values). */
static void percent_decode(char *s)
{
    char *out = s;

    for (; *s != '\0'; s++) {
        if (s[0] == '%' && isxdigit((unsigned char)s[1]) &&
            isxdigit((unsigned char)s[2])) {
            char h[3] = {s[1], s[2], '\0'};
            *out++ = (char)strtol(h, NULL, 16);
            s += 2;
        } else {
            *out++ = *s;
        }
    }
    *out = '\0';
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s)) {
        s++;
    }
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) {
        *--end = '\0';
    }
    return s;
}

/* Walk "k=v,k=v", calling item_cb(key, value) on decoded pairs. */
static int parse_pairs(const char *text,
                       int (*item_cb)(const char *key, const char *value))
{
    char *copy = strdup(text);
    char *save = NULL;
    int rv = 0;

    if (copy == NULL) {
        return -ENOMEM;
    }
    for (char *item = strtok_r(copy, ",", &save); item != NULL && rv == 0;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq == NULL) {
            rv = -EINVAL;
            break;
        }
        *eq = '\0';
        char *key = trim(item);
        char *value = trim(eq + 1);
        percent_decode(value);
        rv = key[0] == '\0' ? -EINVAL : item_cb(key, value);
    }
    free(copy);
    return rv;
}

static int header_cb(const char *key, const char *value)
{
    char line[1024];
    struct curl_slist *l;

    snprintf(line, sizeof(line), "%s: %s", key, value);
    l = curl_slist_append(T.headers, line);
    if (l == NULL) {
        return -ENOMEM;
    }
    T.headers = l;
    return 0;
}

static int resource_set(const char *key, const char *value)
{
    size_t i;

    for (i = 0; i < T.n_resource; i++) {
        if (strcmp(T.resource[i].key, key) == 0) {
            break;
        }
    }
    if (i == T.n_resource) {
        if (T.n_resource == RESOURCE_ATTRS) {
            return 0; /* the rest are ignored */
        }
        T.resource[i].key = strdup(key);
        T.n_resource++;
    } else {
        free(T.resource[i].value);
    }
    T.resource[i].value = strdup(value);
    return T.resource[i].key != NULL && T.resource[i].value != NULL ? 0
                                                                    : -ENOMEM;
}

static int config_endpoint(void)
{
    const char *traces = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    const char *base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
    int n;

    if (traces != NULL) {
        n = snprintf(T.url, sizeof(T.url), "%s", traces);
    } else {
        size_t len = strlen(base);
        bool slash = len > 0 && base[len - 1] == '/';
        n = snprintf(T.url, sizeof(T.url), "%s%sv1/traces", base,
                     slash ? "" : "/");
    }
    return n > 0 && (size_t)n < sizeof(T.url) ? 0 : -EINVAL;
}

static int config_sampler(const char **why)
{
    const char *name = env("OTEL_TRACES_SAMPLER");
    const char *arg = env("OTEL_TRACES_SAMPLER_ARG");
    double ratio = 1.0;
    char *end;

    if (name == NULL) {
        name = "parentbased_always_on";
    }
    T.parent_based = strncmp(name, "parentbased_", 12) == 0;
    if (T.parent_based) {
        name += 12;
    }
    if (strcmp(name, "always_on") == 0) {
        T.root_sampler = SAMPLE_ALWAYS;
    } else if (strcmp(name, "always_off") == 0) {
        T.root_sampler = SAMPLE_NEVER;
    } else if (strcmp(name, "traceidratio") == 0) {
        T.root_sampler = SAMPLE_RATIO;
        if (arg != NULL) {
            ratio = strtod(arg, &end);
            if (*end != '\0' || !(ratio >= 0.0 && ratio <= 1.0)) {
                *why = "OTEL_TRACES_SAMPLER_ARG is not a ratio in [0, 1]";
                return -EINVAL;
            }
        }
        T.ratio_bound = ratio >= 1.0
                            ? UINT64_MAX
                            : (uint64_t)(ratio * 18446744073709551616.0);
    } else {
        *why = "OTEL_TRACES_SAMPLER is not a supported sampler";
        return -EINVAL;
    }
    return 0;
}

static int config_resource(const char *service, uint32_t node_id)
{
    const char *attrs = env("OTEL_RESOURCE_ATTRIBUTES");
    const char *name = env("OTEL_SERVICE_NAME");
    char id[16];
    int rv = 0;

    rv = resource_set("service.name", service);
    if (rv == 0 && attrs != NULL) {
        rv = parse_pairs(attrs, resource_set);
    }
    if (rv == 0 && name != NULL) {
        rv = resource_set("service.name", name);
    }
    snprintf(id, sizeof(id), "%u", (unsigned)node_id);
    if (rv == 0 && node_id != 0) {
        rv = resource_set("service.instance.id", id);
    }
    return rv;
}

static int config_batching(const char **why)
{
    unsigned queue, batch;

    if (env_uint("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE, &queue) != 0 ||
        env_uint("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH, &batch) !=
            0 ||
        env_uint("OTEL_BSP_SCHEDULE_DELAY", DEFAULT_DELAY_MS, &T.delay_ms) !=
            0 ||
        env_uint("OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_TIMEOUT_MS,
                 &T.timeout_ms) != 0) {
        *why =
            "an OTEL_BSP_* or OTEL_EXPORTER_OTLP_TIMEOUT value is not a "
            "positive integer";
        return -EINVAL;
    }
    T.cap = queue;
    T.batch = batch < queue ? batch : queue;
    T.queue = calloc(T.cap, sizeof(*T.queue));
    T.spare = calloc(T.cap, sizeof(*T.spare));
    return T.queue != NULL && T.spare != NULL ? 0 : -ENOMEM;
}

static void tracer_reset(void)
{
    curl_slist_free_all(T.headers);
    T.headers = NULL;
    for (size_t i = 0; i < T.n_resource; i++) {
        free(T.resource[i].key);
        free(T.resource[i].value);
    }
    T.n_resource = 0;
    free(T.queue);
    free(T.spare);
    T.queue = T.spare = NULL;
    T.cap = T.len = 0;
    T.on = false;
    T.stopping = false;
}

int ikd_tracer_start(const char *service, uint32_t node_id, const char **why)
{
    const char *disabled = env("OTEL_SDK_DISABLED");
    const char *headers = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS");
    int rv;

    *why = NULL;
    memset(&T.stats, 0, sizeof(T.stats));
    if ((disabled != NULL && strcasecmp(disabled, "true") == 0) ||
        (env("OTEL_EXPORTER_OTLP_ENDPOINT") == NULL &&
         env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == NULL)) {
        return 0;
    }
    if (headers == NULL) {
        headers = env("OTEL_EXPORTER_OTLP_HEADERS");
    }
    rv = config_sampler(why);
    if (rv == 0) {
        rv = config_batching(why);
    }
    if (rv == 0 && config_endpoint() != 0) {
        *why = "the OTLP endpoint is too long";
        rv = -EINVAL;
    }
    if (rv == 0 && headers != NULL && parse_pairs(headers, header_cb) != 0) {
        *why = "OTEL_EXPORTER_OTLP_HEADERS is not KEY=VALUE,...";
        rv = -EINVAL;
    }
    if (rv == 0 && config_resource(service, node_id) != 0) {
        *why = "OTEL_RESOURCE_ATTRIBUTES is not KEY=VALUE,...";
        rv = -EINVAL;
    }
    if (rv == 0) {
        T.headers =
            curl_slist_append(T.headers, "Content-Type: application/json");
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rv = -pthread_create(&T.thread, NULL, exporter_main, NULL);
        if (rv == 0) {
            pthread_setname_np(T.thread, "ikd-export");
        }
    }
    if (rv != 0) {
        tracer_reset();
        return rv;
    }
    T.on = true;
    return 0;
}

void ikd_tracer_stop(void)
{
    if (!T.on) {
        return;
    }
    pthread_mutex_lock(&T.lock);
    T.stopping = true;
    pthread_cond_signal(&T.wake);
    pthread_mutex_unlock(&T.lock);
    pthread_join(T.thread, NULL);
    tracer_reset();
    curl_global_cleanup();
}
