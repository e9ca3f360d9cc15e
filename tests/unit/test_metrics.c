/* Metrics text and the HTTP endpoint that serves it. */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "../../net/http.h"
#include "../../net/metrics.h"

static void test_metrics_histogram_buckets_are_cumulative(void **state)
{
    struct ikd_hist h = {0};
    struct ikd_buf b = {0};

    (void)state;
    ikd_hist_observe(&h, 40 * 1000);          /* 40 us: first bucket */
    ikd_hist_observe(&h, 50 * 1000);          /* on the bound: first bucket */
    ikd_hist_observe(&h, 700 * 1000);         /* 0.7 ms: the 1 ms bucket */
    ikd_hist_observe(&h, 60ull * 1000000000); /* past every bound */
    ikd_metric_hist(&b, "x_seconds", &h);
    assert_false(b.failed);
    assert_non_null(strstr(b.data, "x_seconds_bucket{le=\"5e-05\"} 2\n"));
    assert_non_null(strstr(b.data, "x_seconds_bucket{le=\"0.0005\"} 2\n"));
    assert_non_null(strstr(b.data, "x_seconds_bucket{le=\"0.001\"} 3\n"));
    assert_non_null(strstr(b.data, "x_seconds_bucket{le=\"10\"} 3\n"));
    assert_non_null(strstr(b.data, "x_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(b.data, "x_seconds_count 4\n"));
    assert_non_null(strstr(b.data, "x_seconds_sum 60.000790000\n"));
    ikd_buf_free(&b);
}

static void test_metrics_samples_and_families(void **state)
{
    struct ikd_buf b = {0};

    (void)state;
    ikd_metric_family(&b, "ikada_term", "gauge", "Current term.");
    ikd_metric_u64(&b, "ikada_term", "", 7);
    ikd_metric_u64(&b, "ikada_match_index", "peer=\"2\"", 12);
    assert_string_equal(b.data,
                        "# HELP ikada_term Current term.\n"
                        "# TYPE ikada_term gauge\n"
                        "ikada_term 7\n"
                        "ikada_match_index{peer=\"2\"} 12\n");
    ikd_buf_free(&b);
}

static void test_metrics_buffer_grows_past_its_first_block(void **state)
{
    struct ikd_buf b = {0};

    (void)state;
    for (int i = 0; i < 2000; i++) {
        ikd_buf_printf(&b, "line %04d\n", i);
    }
    assert_false(b.failed);
    assert_int_equal(b.len, 2000 * 10);
    assert_memory_equal(b.data + 1999 * 10, "line 1999\n", 10);
    ikd_buf_free(&b);
}

/* ---- the HTTP endpoint ---- */

struct http_fixture
{
    uv_loop_t loop;
    uv_async_t done;
    struct ikd_http *http;
    uint16_t port;
    int renders;
    char replies[2][1024];
};

static void render_cb(void *arg, struct ikd_buf *out)
{
    struct http_fixture *f = arg;

    f->renders++;
    ikd_buf_printf(out, "ikada_renders %d\n", f->renders);
}

static void done_cb(uv_async_t *handle)
{
    struct http_fixture *f = handle->data;

    ikd_http_stop(f->http);
    uv_close((uv_handle_t *)&f->done, NULL);
}

static uint16_t free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void http_get(uint16_t port, const char *path, char *out, size_t size)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    struct timeval tv = {.tv_sec = 10};
    char req[256];
    size_t got = 0;
    ssize_t n;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    while (got < size - 1 && (n = read(fd, out + got, size - 1 - got)) > 0) {
        got += (size_t)n;
    }
    out[got] = '\0';
    close(fd);
}

static void *client_main(void *arg)
{
    struct http_fixture *f = arg;

    http_get(f->port, "/metrics", f->replies[0], sizeof(f->replies[0]));
    http_get(f->port, "/other", f->replies[1], sizeof(f->replies[1]));
    uv_async_send(&f->done);
    return NULL;
}

static void test_http_serves_text_rendered_on_the_loop(void **state)
{
    struct http_fixture f = {0};
    struct ikd_http *second;
    pthread_t client;

    (void)state;
    assert_int_equal(uv_loop_init(&f.loop), 0);
    assert_int_equal(uv_async_init(&f.loop, &f.done, done_cb), 0);
    f.done.data = &f;
    f.port = free_port();
    assert_int_equal(
        ikd_http_start(&f.loop, "127.0.0.1", f.port, render_cb, &f, &f.http),
        0);
    assert_int_equal(
        ikd_http_start(&f.loop, "127.0.0.1", f.port, render_cb, &f, &second),
        -EADDRINUSE);
    assert_int_equal(
        ikd_http_start(&f.loop, "localhost", f.port, render_cb, &f, &second),
        -EINVAL);

    assert_int_equal(pthread_create(&client, NULL, client_main, &f), 0);
    assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
    pthread_join(client, NULL);
    assert_int_equal(uv_loop_close(&f.loop), 0);

    assert_non_null(strstr(f.replies[0], " 200 "));
    assert_non_null(strstr(f.replies[0], "text/plain; version=0.0.4"));
    assert_non_null(strstr(f.replies[0], "\r\n\r\nikada_renders 1\n"));
    assert_non_null(strstr(f.replies[1], " 404 "));
    assert_int_equal(f.renders, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_metrics_samples_and_families),
        cmocka_unit_test(test_metrics_buffer_grows_past_its_first_block),
        cmocka_unit_test(test_http_serves_text_rendered_on_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
