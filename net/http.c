/* GET /metrics with libmicrohttpd, rendered on the loop thread. */

#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

struct ikd_http
{
    uv_async_t wake; /* the HTTP thread asks the loop for text */
    struct MHD_Daemon *daemon;
    ikd_http_render_cb render_cb;
    void *render_arg;

    /* Shared between the two threads, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t ready;
    uint64_t asked;    /* requests made by the HTTP thread */
    uint64_t answered; /* the value of asked the text answers */
    struct ikd_buf text;
    bool stopping;
};

/* Loop thread: render outside the lock, hand over under it. */
static void http_wake_cb(uv_async_t *handle)
{
    struct ikd_http *h = handle->data;
    struct ikd_buf text = {0};
    uint64_t asked;

    pthread_mutex_lock(&h->lock);
    asked = h->asked;
    pthread_mutex_unlock(&h->lock);
    if (asked == h->answered) {
        return;
    }

    h->render_cb(h->render_arg, &text);

    pthread_mutex_lock(&h->lock);
    ikd_buf_free(&h->text);
    h->text = text;
    h->answered = asked;
    pthread_cond_broadcast(&h->ready);
    pthread_mutex_unlock(&h->lock);
}

static enum MHD_Result http_send(struct MHD_Connection *conn,
                                 unsigned status,
                                 const char *type,
                                 const char *body,
                                 size_t len)
{
    struct MHD_Response *resp;
    enum MHD_Result rv;

    resp = MHD_create_response_from_buffer(len, (void *)body,
                                           MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    rv = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rv;
}

/* HTTP thread: ask the loop and wait for its answer, bounded. */
static enum MHD_Result http_metrics(struct ikd_http *h,
                                    struct MHD_Connection *conn)
{
    static const char busy[] = "the node did not answer in time\n";
    struct timespec deadline;
    enum MHD_Result rv;
    uint64_t want;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += IKD_HTTP_RENDER_WAIT_MS / 1000;
    deadline.tv_nsec += (IKD_HTTP_RENDER_WAIT_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&h->lock);
    want = ++h->asked;
    uv_async_send(&h->wake);
    while (h->answered < want && !h->stopping) {
        if (pthread_cond_timedwait(&h->ready, &h->lock, &deadline) ==
            ETIMEDOUT) {
            break;
        }
    }
    if (h->answered >= want && !h->text.failed && h->text.data != NULL) {
        rv = http_send(conn, MHD_HTTP_OK, "text/plain; version=0.0.4",
                       h->text.data, h->text.len);
    } else {
        rv = http_send(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", busy,
                       sizeof(busy) - 1);
    }
    pthread_mutex_unlock(&h->lock);
    return rv;
}

static enum MHD_Result http_request_cb(void *cls,
                                       struct MHD_Connection *conn,
                                       const char *url,
                                       const char *method,
                                       const char *version,
                                       const char *upload_data,
                                       size_t *upload_data_size,
                                       void **req_cls)
{
    static const char not_found[] = "only GET /metrics is served here\n";
    struct ikd_http *h = cls;

    (void)version;
    (void)upload_data;
    (void)req_cls;
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* a body is read and ignored */
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 || strcmp(url, "/metrics") != 0) {
        return http_send(conn, MHD_HTTP_NOT_FOUND, "text/plain", not_found,
                         sizeof(not_found) - 1);
    }
    return http_metrics(h, conn);
}

static int http_addr(const char *host,
                     uint16_t port,
                     struct sockaddr_storage *ss,
                     bool *ipv6)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *ipv6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *ipv6 = true;
        return 0;
    }
    return -EINVAL;
}

static void http_free_cb(uv_handle_t *handle)
{
    struct ikd_http *h = handle->data;

    pthread_cond_destroy(&h->ready);
    pthread_mutex_destroy(&h->lock);
    ikd_buf_free(&h->text);
    free(h);
}

int ikd_http_start(uv_loop_t *loop,
                   const char *host,
                   uint16_t port,
                   ikd_http_render_cb cb,
                   void *arg,
                   struct ikd_http **out)
{
    struct sockaddr_storage ss;
    struct ikd_http *h;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
    bool ipv6;
    int rv;

    rv = http_addr(host, port, &ss, &ipv6);
    if (rv != 0) {
        return rv;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return -ENOMEM;
    }
    h->render_cb = cb;
    h->render_arg = arg;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->ready, NULL);
    rv = uv_async_init(loop, &h->wake, http_wake_cb);
    if (rv != 0) {
        goto err_after_alloc;
    }
    h->wake.data = h;

    if (ipv6) {
        flags |= MHD_USE_IPv6;
    }
    errno = 0;
    h->daemon = MHD_start_daemon(flags, port, NULL, NULL, http_request_cb, h,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                 MHD_OPTION_END);
    if (h->daemon == NULL) {
        /* The handle is open: it frees h when closed. */
        rv = errno == EADDRINUSE ? -EADDRINUSE : -EINVAL;
        uv_close((uv_handle_t *)&h->wake, http_free_cb);
        return rv;
    }
    *out = h;
    return 0;

err_after_alloc:
    pthread_cond_destroy(&h->ready);
    pthread_mutex_destroy(&h->lock);
    free(h);
    return rv;
}

void ikd_http_stop(struct ikd_http *h)
{
    pthread_mutex_lock(&h->lock);
    h->stopping = true;
    pthread_cond_broadcast(&h->ready);
    pthread_mutex_unlock(&h->lock);

    MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
    uv_close((uv_handle_t *)&h->wake, http_free_cb);
}
