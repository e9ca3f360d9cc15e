/* Spans, sampling and the OTLP/HTTP JSON exporter, against a small
 * receiver on loopback that keeps what it is sent. */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../net/trace.h"

#define MAX_POSTS 16
#define REQ_BYTES (1 << 20)

/* ---- the receiver ---- */

struct receiver
{
    int fd;
    uint16_t port;
    pthread_t thread;
    int n_posts;
    char *heads[MAX_POSTS];
    char *bodies[MAX_POSTS];
};

/* Read one request (head and Content-Length body), answer 200, close. */
static void serve_one(struct receiver *r, int c)
{
    char *buf = calloc(1, REQ_BYTES);
    size_t got = 0;
    char *end = NULL;
    ssize_t n;

    while (got < REQ_BYTES - 1 && (n = read(c, buf + got, 4096)) > 0) {
        got += (size_t)n;
        buf[got] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(buf, "Content-Length:");
            size_t want = cl != NULL ? strtoul(cl + 15, NULL, 10) : 0;
            if (got >= (size_t)(end + 4 - buf) + want) {
                break;
            }
        }
    }
    if (end != NULL && r->n_posts < MAX_POSTS) {
        *end = '\0';
        r->heads[r->n_posts] = strdup(buf);
        r->bodies[r->n_posts] = strdup(end + 4);
        r->n_posts++;
    }
    static const char ok[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    (void)!write(c, ok, sizeof(ok) - 1);
    free(buf);
}

static void *receiver_main(void *arg)
{
    struct receiver *r = arg;
    int c;

    while ((c = accept(r->fd, NULL, NULL)) >= 0) {
        serve_one(r, c);
        close(c);
    }
    return NULL;
}

static void receiver_start(struct receiver *r)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    char url[64];

    memset(r, 0, sizeof(*r));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(r->fd, 8), 0);
    assert_int_equal(getsockname(r->fd, (struct sockaddr *)&a, &len), 0);
    r->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&r->thread, NULL, receiver_main, r), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", r->port);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
}

static void receiver_stop(struct receiver *r)
{
    shutdown(r->fd, SHUT_RDWR);
    close(r->fd);
    pthread_join(r->thread, NULL);
}

static void receiver_free(struct receiver *r)
{
    for (int i = 0; i < r->n_posts; i++) {
        free(r->heads[i]);
        free(r->bodies[i]);
    }
}

static void clear_env(void)
{
    static const char *const names[] = {
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",  "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",    "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",     "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_SDK_DISABLED",           "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        unsetenv(names[i]);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* The value of resource attribute key in an export body, or NULL. */
static const char *resource_attr(json_t *doc, const char *key)
{
    json_t *attrs = json_object_get(
        json_object_get(
            json_array_get(json_object_get(doc, "resourceSpans"), 0),
            "resource"),
        "attributes");
    size_t i;
    json_t *a;

    json_array_foreach(attrs, i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0) {
            return json_string_value(
                json_object_get(json_object_get(a, "value"), "stringValue"));
        }
    }
    return NULL;
}

static json_t *spans_of(json_t *doc)
{
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    return json_object_get(ss, "spans");
}

/* ---- tests ---- */

static void test_trace_parent_and_child_reach_the_collector(void **state)
{
    struct receiver r;
    struct ikd_span root, child;
    struct ikd_trace_stats st;
    const char *why;
    json_t *doc, *spans, *s0, *s1;

    (void)state;
    receiver_start(&r);
    setenv("OTEL_SERVICE_NAME", "svc", 1);
    setenv("OTEL_RESOURCE_ATTRIBUTES",
           "deployment.environment=test%20env,service.name=ignored", 1);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret", 1);
    assert_int_equal(ikd_tracer_start("ikada", 7, &why), 0);
    assert_true(ikd_tracer_enabled());

    ikd_span_begin(&root, "fs.write", IKD_SPAN_SERVER, NULL);
    assert_true(root.recording);
    ikd_span_set_str(&root, "path", "a/\"b\"\\\n\x01");
    ikd_span_begin(&child, "raft.commit", IKD_SPAN_INTERNAL, &root.ctx);
    ikd_span_set_int(&child, "raft.index", 42);
    ikd_span_set_error(&child, "no quorum");
    ikd_span_end(&child);
    ikd_span_end(&root);
    ikd_tracer_stop();
    assert_false(ikd_tracer_enabled());
    receiver_stop(&r);

    assert_int_equal(r.n_posts, 1);
    assert_non_null(strstr(r.heads[0], "POST /v1/traces "));
    assert_non_null(strstr(r.heads[0], "x-api-key: secret"));
    assert_non_null(strstr(r.heads[0], "Content-Type: application/json"));
    doc = json_loads(r.bodies[0], 0, NULL);
    assert_non_null(doc);
    assert_string_equal(resource_attr(doc, "service.name"), "svc");
    assert_string_equal(resource_attr(doc, "deployment.environment"),
                        "test env");
    assert_string_equal(resource_attr(doc, "service.instance.id"), "7");
    spans = spans_of(doc);
    assert_int_equal(json_array_size(spans), 2);
    s0 = json_array_get(spans, 0); /* the child ended first */
    s1 = json_array_get(spans, 1);
    assert_string_equal(json_string_value(json_object_get(s0, "name")),
                        "raft.commit");
    assert_string_equal(json_string_value(json_object_get(s0, "traceId")),
                        json_string_value(json_object_get(s1, "traceId")));
    assert_string_equal(json_string_value(json_object_get(s0, "parentSpanId")),
                        json_string_value(json_object_get(s1, "spanId")));
    assert_null(json_object_get(s1, "parentSpanId"));
    assert_int_equal(strlen(json_string_value(json_object_get(s1, "traceId"))),
                     32);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(s0, "status"), "code")),
                     2);
    assert_non_null(strstr(r.bodies[0], "\"intValue\":\"42\""));
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(
                json_array_get(json_object_get(s1, "attributes"), 0), "value"),
            "stringValue")),
        "a/\"b\"\\\n\x01");
    json_decref(doc);
    receiver_free(&r);
    ikd_tracer_stats(&st);
    assert_int_equal(st.exported, 2);
    assert_int_equal(st.dropped, 0);
}

static void test_trace_off_without_endpoint_or_when_disabled(void **state)
{
    struct ikd_span s;
    const char *why;

    (void)state;
    assert_int_equal(ikd_tracer_start("ikada", 1, &why), 0);
    assert_false(ikd_tracer_enabled());
    ikd_span_begin(&s, "x", IKD_SPAN_INTERNAL, NULL);
    assert_false(s.recording);
    assert_false(ikd_trace_ctx_valid(&s.ctx));
    ikd_span_end(&s);

    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9", 1);
    setenv("OTEL_SDK_DISABLED", "true", 1);
    assert_int_equal(ikd_tracer_start("ikada", 1, &why), 0);
    assert_false(ikd_tracer_enabled());
}

static void test_trace_ratio_sampler_and_parent_decision(void **state)
{
    struct receiver r;
    struct ikd_span s, child;
    int sampled = 0;
    const char *why;

    (void)state;
    receiver_start(&r);
    setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0.25", 1);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4096", 1);
    assert_int_equal(ikd_tracer_start("ikada", 1, &why), 0);
    for (int i = 0; i < 2000; i++) {
        ikd_span_begin(&s, "root", IKD_SPAN_SERVER, NULL);
        assert_true(ikd_trace_ctx_valid(&s.ctx));
        sampled += s.recording;
        ikd_span_begin(&child, "child", IKD_SPAN_INTERNAL, &s.ctx);
        assert_int_equal(child.recording, s.recording);
        assert_memory_equal(child.ctx.trace_id, s.ctx.trace_id, 16);
    }
    ikd_tracer_stop();
    receiver_stop(&r);
    receiver_free(&r);
    assert_in_range(sampled, 400, 600);
}

static void test_trace_dead_collector_drops_and_counts(void **state)
{
    struct ikd_span s;
    struct ikd_trace_stats st;
    const char *why;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    char url[64];

    (void)state;
    /* A collector that takes the connection and never answers. */
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(a.sin_port));
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300", 1);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16", 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "60000", 1);
    assert_int_equal(ikd_tracer_start("ikada", 1, &why), 0);
    for (int i = 0; i < 100; i++) {
        ikd_span_begin(&s, "op", IKD_SPAN_INTERNAL, NULL);
        ikd_span_end(&s);
    }
    /* At most a full queue and one batch in flight were kept. */
    ikd_tracer_stats(&st);
    assert_true(st.dropped >= 100 - 2 * 16);
    ikd_tracer_stop();
    close(fd);
    ikd_tracer_stats(&st);
    assert_int_equal(st.exported, 0);
    assert_true(st.dropped >= 100);
}

static void test_trace_bad_configuration_is_refused(void **state)
{
    const char *why = NULL;

    (void)state;
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9", 1);
    setenv("OTEL_TRACES_SAMPLER", "sometimes", 1);
    assert_int_equal(ikd_tracer_start("ikada", 1, &why), -EINVAL);
    assert_non_null(strstr(why, "OTEL_TRACES_SAMPLER"));
    assert_false(ikd_tracer_enabled());

    setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "1.5", 1);
    assert_int_equal(ikd_tracer_start("ikada", 1, &why), -EINVAL);
    unsetenv("OTEL_TRACES_SAMPLER");
    unsetenv("OTEL_TRACES_SAMPLER_ARG");

    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "-3", 1);
    assert_int_equal(ikd_tracer_start("ikada", 1, &why), -EINVAL);
    unsetenv("OTEL_BSP_MAX_QUEUE_SIZE");

    setenv("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign", 1);
    assert_int_equal(ikd_tracer_start("ikada", 1, &why), -EINVAL);
    assert_false(ikd_tracer_enabled());
}

static void test_trace_context_text_round_trips(void **state)
{
    struct ikd_trace_ctx c = {.sampled = true}, back;
    char text[56];

    (void)state;
    for (int i = 0; i < 16; i++) {
        c.trace_id[i] = (uint8_t)(0xa0 + i);
    }
    for (int i = 0; i < 8; i++) {
        c.span_id[i] = (uint8_t)(i + 1);
    }
    ikd_trace_ctx_format(&c, text);
    assert_string_equal(
        text, "00-a0a1a2a3a4a5a6a7a8a9aaabacadaeaf-0102030405060708-01");
    assert_int_equal(ikd_trace_ctx_parse(text, &back), 0);
    assert_memory_equal(&back.trace_id, c.trace_id, 16);
    assert_memory_equal(&back.span_id, c.span_id, 8);
    assert_true(back.sampled);

    assert_int_equal(ikd_trace_ctx_parse("00-zz", &back), -EINVAL);
    assert_int_equal(
        ikd_trace_ctx_parse(
            "00-00000000000000000000000000000000-0102030405060708-01", &back),
        -EINVAL);
    assert_int_equal(
        ikd_trace_ctx_parse(
            "00-A0A1A2A3A4A5A6A7A8A9AAABACADAEAF-0102030405060708-01", &back),
        -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_trace_parent_and_child_reach_the_collector,
                               setup),
        cmocka_unit_test_setup(test_trace_off_without_endpoint_or_when_disabled,
                               setup),
        cmocka_unit_test_setup(test_trace_ratio_sampler_and_parent_decision,
                               setup),
        cmocka_unit_test_setup(test_trace_dead_collector_drops_and_counts,
                               setup),
        cmocka_unit_test_setup(test_trace_bad_configuration_is_refused, setup),
        cmocka_unit_test_setup(test_trace_context_text_round_trips, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
