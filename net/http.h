/* An HTTP endpoint for metrics: GET /metrics answers with text that the
 * loop thread renders on demand.
 *
 * libmicrohttpd serves connections on a thread of its own.  For each
 * request that thread wakes the loop through a uv_async_t and waits, at
 * most IKD_HTTP_RENDER_WAIT_MS, for the loop to hand over the text; the
 * loop never waits for the HTTP side. */

#ifndef NET_HTTP_H
#define NET_HTTP_H

#include <stdint.h>

#include <uv.h>

#include "metrics.h"

/* How long a scrape waits for a busy loop before it gets 503. */
#define IKD_HTTP_RENDER_WAIT_MS 2000

/* Called on the loop thread: write the current metrics into out. */
typedef void (*ikd_http_render_cb)(void *arg, struct ikd_buf *out);

struct ikd_http;

/* Listen on host:port (numeric IPv4 or IPv6) and serve until
 * ikd_http_stop().  Returns 0, -EADDRINUSE, -EINVAL for an address that is
 * not numeric, or another negative errno; on failure nothing is left
 * running. */
int ikd_http_start(uv_loop_t *loop,
                   const char *host,
                   uint16_t port,
                   ikd_http_render_cb cb,
                   void *arg,
                   struct ikd_http **out);

/* Stop serving: waits for the HTTP thread to end (a scrape in progress is
 * answered 503 at once), then closes the loop handle; h is freed in its
 * close callback.  Loop thread only. */
void ikd_http_stop(struct ikd_http *h);

#endif /* NET_HTTP_H */
