/* TCP transport on a libuv loop (see transport.h).
 *
 * Connections come in two kinds.  An incoming connection was accepted on
 * the listening port; its first frame must be a HELLO, which says whether a
 * node or a client is speaking.  An outgoing connection is this node's
 * link to one peer; it sends a HELLO first and is re-established with
 * exponential backoff whenever it fails or closes.
 *
 * Writes are queued per connection and flushed from an idle handle, so all
 * frames queued during one loop turn leave in a single uv_write().  A
 * queue past QUEUE_LIMIT_BYTES drops messages to nodes (Raft resends them)
 * and closes a client's connection (a client that does not read its
 * replies must not hold the node's memory). */

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport.h"

#define FRAME_HEADER_BYTES 4
#define READ_CHUNK_BYTES (64 * 1024)
#define QUEUE_LIMIT_BYTES ((size_t)64 << 20)
#define MAX_BUFS_PER_WRITE 256
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
/* A link that stayed up this long starts its backoff afresh when it drops;
 * one that dropped sooner (a peer that closes at once, for instance) keeps
 * doubling, so a misconfigured peer is not hammered. */
#define LINK_STABLE_MS 1000
#define CONN_BUCKETS 1024
#define LISTEN_BACKLOG 128

_Static_assert(QUEUE_LIMIT_BYTES >= IKD_MAX_APPEND_BYTES,
               "a queue must hold at least a full AppendEntries batch");

struct frame
{
    struct frame *next;
    uint8_t *data;
    size_t len;
};

struct link;

struct conn
{
    struct net_transport *t;
    uv_tcp_t tcp;
    uint64_t id;
    raft_id_t from;    /* the node the peer announced; 0 for a client */
    bool hello_seen;   /* incoming: the first frame was a valid HELLO */
    bool closing;      /* uv_close() was called */
    struct link *link; /* outgoing: the link that owns it; NULL otherwise */
    uv_connect_t connect_req;

    /* Read side: rbuf holds rlen bytes not yet consumed as frames. */
    uint8_t *rbuf;
    size_t rlen;
    size_t rcap;

    /* Write side: frames waiting, and those in the write in flight. */
    struct frame *queue_head;
    struct frame **queue_tail;
    struct frame *inflight;
    size_t queued_bytes; /* waiting and in flight */
    bool writing;
    bool dirty; /* on the transport's dirty list */
    struct conn *dirty_next;
    uv_write_t write_req;

    struct conn *bucket_next; /* the id table's chain */
};

struct link
{
    struct net_transport *t;
    struct net_peer peer;
    struct sockaddr_storage addr;
    uv_timer_t timer;
    struct conn *conn;   /* NULL while waiting to reconnect */
    bool connected;      /* conn finished connecting and sent its HELLO */
    unsigned backoff_ms; /* the next wait after a failure */
    uint64_t up_since_ms;
};

struct net_transport
{
    uv_loop_t *loop;
    raft_id_t self;
    uint64_t cluster_hash;
    struct net_transport_cbs cbs;
    void *ctx;

    uv_tcp_t listener;
    uv_idle_t flusher;
    struct sockaddr_storage bind_addr; /* own host, port 0 */
    /* One link a peer, each allocated apart (its timer handle must not
     * move); a link leaves this array when its peer is removed and is
     * freed in its timer's close callback. */
    struct link *links[IKD_MAX_NODES];
    size_t n_links;

    struct conn *buckets[CONN_BUCKETS];
    struct conn *dirty_head;
    uint64_t next_conn_id;

    bool stopping;
    size_t open_handles; /* handles initialized and not yet closed */
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

static void conn_close(struct conn *c, const char *why);
static void link_schedule(struct link *l);

/* Start-up helpers. */

static int resolve(const char *host,
                   uint16_t port,
                   struct sockaddr_storage *out)
{
    struct addrinfo hints;
    struct addrinfo *res;
    char service[8];
    int rv;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    rv = getaddrinfo(host, service, &hints, &res);
    if (rv != 0) {
        return -EINVAL;
    }
    assert(res->ai_addrlen <= sizeof(*out));
    memset(out, 0, sizeof(*out));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static socklen_t addr_len(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                    : sizeof(struct sockaddr_in);
}

/* Bind and listen on a plain socket, so that a port in use is reported
 * here and now: libuv's own bind defers EADDRINUSE to a later call. */
static int open_listener(const struct sockaddr_storage *addr, int *fd_out)
{
    int one = 1;
    int fd = -1;

    fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)addr, addr_len(addr)) != 0 ||
        listen(fd, LISTEN_BACKLOG) != 0) {
        int rv = -errno;
        close(fd);
        return rv;
    }
    *fd_out = fd;
    return 0;
}

/* Handle bookkeeping: every handle counts until its close callback ran;
 * the last one to close finishes a stop. */

static void handle_closed(struct net_transport *t)
{
    assert(t->open_handles > 0);
    t->open_handles--;
    if (t->stopping && t->open_handles == 0) {
        void (*cb)(void *arg) = t->stop_cb;
        void *arg = t->stop_arg;

        free(t);
        if (cb != NULL) {
            cb(arg);
        }
    }
}

static void plain_close_cb(uv_handle_t *h)
{
    handle_closed(h->data);
}

/* The connection table. */

static void conn_table_add(struct net_transport *t, struct conn *c)
{
    struct conn **b = &t->buckets[c->id % CONN_BUCKETS];

    c->bucket_next = *b;
    *b = c;
}

static void conn_table_remove(struct net_transport *t, struct conn *c)
{
    struct conn **p = &t->buckets[c->id % CONN_BUCKETS];

    while (*p != c) {
        assert(*p != NULL);
        p = &(*p)->bucket_next;
    }
    *p = c->bucket_next;
}

static struct conn *conn_lookup(struct net_transport *t, uint64_t id)
{
    struct conn *c = t->buckets[id % CONN_BUCKETS];

    while (c != NULL && c->id != id) {
        c = c->bucket_next;
    }
    return c;
}

static struct conn *conn_new(struct net_transport *t)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        return NULL;
    }
    c->t = t;
    c->id = t->next_conn_id++;
    c->queue_tail = &c->queue_head;
    c->tcp.data = c;
    uv_tcp_init(t->loop, &c->tcp);
    t->open_handles++;
    conn_table_add(t, c);
    return c;
}

static void free_frames(struct frame *f)
{
    while (f != NULL) {
        struct frame *next = f->next;
        free(f->data);
        free(f);
        f = next;
    }
}

static void conn_close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct net_transport *t = c->t;

    assert(!c->writing);
    /* Reported from here, never from inside a call of the owner's (a send
     * that overflows a client's queue closes it). */
    if (!t->stopping && t->cbs.close_cb != NULL) {
        t->cbs.close_cb(t->ctx, c->id);
    }
    free_frames(c->queue_head);
    free(c->rbuf);
    free(c);
    handle_closed(t);
}

static void unlink_dirty(struct conn *c)
{
    struct conn **p = &c->t->dirty_head;

    while (*p != NULL && *p != c) {
        p = &(*p)->dirty_next;
    }
    if (*p == c) {
        *p = c->dirty_next;
    }
    c->dirty = false;
}

/* Close c once: forget it, tell the owner, and free it in the close
 * callback.  A pending write is cancelled by libuv before that runs. */
static void conn_close(struct conn *c, const char *why)
{
    struct net_transport *t = c->t;
    struct link *l = c->link;

    if (c->closing) {
        return;
    }
    c->closing = true;
    conn_table_remove(t, c);
    if (c->dirty) {
        unlink_dirty(c);
    }
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);

    if (l != NULL && !t->stopping) {
        uint64_t now = uv_now(t->loop);

        if (l->connected) {
            IKD_INFO("net", "link to %u lost (%s) -> reconnecting",
                     (unsigned)l->peer.id, why);
            if (now - l->up_since_ms >= LINK_STABLE_MS) {
                l->backoff_ms = BACKOFF_MIN_MS;
            }
        } else {
            IKD_DEBUG("net", "connect to %u failed (%s) -> retry in %u ms",
                      (unsigned)l->peer.id, why, l->backoff_ms);
        }
        l->conn = NULL;
        l->connected = false;
        link_schedule(l);
    } else if (l != NULL) {
        l->conn = NULL;
        l->connected = false;
    } else {
        IKD_DEBUG("net", "connection %llu from %u closed: %s",
                  (unsigned long long)c->id, (unsigned)c->from, why);
    }
}

/* Writing. */

static void flush(struct conn *c);

static void write_cb(uv_write_t *req, int status)
{
    struct conn *c = req->data;

    assert(c->writing);
    c->writing = false;
    for (struct frame *f = c->inflight; f != NULL; f = f->next) {
        assert(c->queued_bytes >= f->len);
        c->queued_bytes -= f->len;
    }
    free_frames(c->inflight);
    c->inflight = NULL;

    if (status < 0) {
        conn_close(c, uv_strerror(status));
        return;
    }
    if (c->queue_head != NULL && !c->closing) {
        flush(c);
    }
}

/* Send every waiting frame (up to MAX_BUFS_PER_WRITE) in one write. */
static void flush(struct conn *c)
{
    uv_buf_t bufs[MAX_BUFS_PER_WRITE];
    struct frame **p = &c->queue_head;
    unsigned n = 0;
    int rv;

    assert(!c->writing && !c->closing);
    while (*p != NULL && n < MAX_BUFS_PER_WRITE) {
        bufs[n++] = uv_buf_init((char *)(*p)->data, (unsigned)(*p)->len);
        p = &(*p)->next;
    }
    if (n == 0) {
        return;
    }

    /* The first n frames move to the in-flight list. */
    c->inflight = c->queue_head;
    c->queue_head = *p;
    *p = NULL;
    if (c->queue_head == NULL) {
        c->queue_tail = &c->queue_head;
    }

    c->write_req.data = c;
    c->writing = true;
    rv = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, n, write_cb);
    if (rv != 0) {
        c->writing = false;
        free_frames(c->inflight);
        c->inflight = NULL;
        conn_close(c, uv_strerror(rv));
    }
}

static void flusher_cb(uv_idle_t *idle)
{
    struct net_transport *t = idle->data;

    while (t->dirty_head != NULL) {
        struct conn *c = t->dirty_head;

        t->dirty_head = c->dirty_next;
        c->dirty = false;
        if (!c->writing && !c->closing) {
            flush(c);
        }
    }
    uv_idle_stop(idle);
}

/* Queue an encoded frame on c (taking ownership of data). */
static int conn_enqueue(struct conn *c, uint8_t *data, size_t len)
{
    struct net_transport *t = c->t;
    struct frame *f;

    if (c->queued_bytes > 0 && c->queued_bytes + len > QUEUE_LIMIT_BYTES) {
        free(data);
        if (c->from == 0 && c->link == NULL) {
            conn_close(c, "client does not read its replies");
            return -ENOTCONN;
        }
        IKD_DEBUG("net", "queue to %u full -> message dropped",
                  (unsigned)c->from);
        return IKD_ELIMIT;
    }
    f = malloc(sizeof(*f));
    if (f == NULL) {
        free(data);
        return -ENOMEM;
    }
    f->next = NULL;
    f->data = data;
    f->len = len;
    *c->queue_tail = f;
    c->queue_tail = &f->next;
    c->queued_bytes += len;

    if (!c->writing && !c->dirty) {
        c->dirty = true;
        c->dirty_next = t->dirty_head;
        t->dirty_head = c;
        uv_idle_start(&t->flusher, flusher_cb);
    }
    return 0;
}

static int conn_send(struct conn *c, const struct net_msg *m)
{
    uint8_t *data;
    size_t len;
    int rv;

    rv = net_msg_encode(m, &data, &len);
    if (rv != 0) {
        IKD_WARN("net", "message of kind %u not encoded: %s -> dropped",
                 (unsigned)m->kind, ikd_strerror(rv));
        return rv;
    }
    return conn_enqueue(c, data, len);
}

/* Reading. */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    size_t want = c->rlen + READ_CHUNK_BYTES;

    (void)suggested;
    if (c->rcap < want) {
        uint8_t *p = realloc(c->rbuf, want);
        if (p == NULL) {
            *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
            return;
        }
        c->rbuf = p;
        c->rcap = want;
    }
    *buf =
        uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

/* The first frame of an incoming connection: who is speaking. */
static int on_hello(struct conn *c, const struct net_msg *m)
{
    struct net_transport *t = c->t;

    if (m->kind != NET_HELLO) {
        IKD_WARN("net", "connection %llu sent kind %u before HELLO -> closed",
                 (unsigned long long)c->id, (unsigned)m->kind);
        return -EPROTO;
    }
    /* A hash of 0 is a server that joins and has no list yet. */
    if (m->hello.node_id != 0 && m->hello.cluster_hash != 0 &&
        t->cluster_hash != 0 && m->hello.cluster_hash != t->cluster_hash) {
        IKD_WARN("net",
                 "node %u has another cluster list (hash %016llx, ours "
                 "%016llx) -> closed",
                 (unsigned)m->hello.node_id,
                 (unsigned long long)m->hello.cluster_hash,
                 (unsigned long long)t->cluster_hash);
        return -EPROTO;
    }
    c->hello_seen = true;
    c->from = m->hello.node_id;
    IKD_DEBUG("net", "connection %llu is from %s %u", (unsigned long long)c->id,
              c->from == 0 ? "a client" : "node", (unsigned)c->from);
    return 0;
}

/* Decode and deliver one frame's payload.  Returns 0, or a negative code
 * after which the connection must close. */
static int on_frame(struct conn *c, const uint8_t *payload, size_t len)
{
    struct net_transport *t = c->t;
    struct net_msg m;
    int rv;

    rv = net_msg_decode(payload, len, &m);
    if (rv != 0) {
        IKD_WARN("net", "bad frame on connection %llu from %u: %s -> closed",
                 (unsigned long long)c->id, (unsigned)c->from,
                 ikd_strerror(rv));
        return rv;
    }
    if (c->link == NULL && !c->hello_seen) {
        rv = on_hello(c, &m);
    } else if (m.kind == NET_HELLO) {
        IKD_WARN("net", "second HELLO on connection %llu -> closed",
                 (unsigned long long)c->id);
        rv = -EPROTO;
    } else if (!t->stopping && t->cbs.msg_cb != NULL) {
        t->cbs.msg_cb(t->ctx, c->id, c->from, &m);
    }
    net_msg_release(&m);
    return rv;
}

/* Deliver every whole frame in rbuf and keep the partial rest. */
static int consume_frames(struct conn *c)
{
    size_t pos = 0;
    int rv = 0;

    while (c->rlen - pos >= FRAME_HEADER_BYTES && !c->closing) {
        const uint8_t *p = c->rbuf + pos;
        size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 |
                     (size_t)p[2] << 8 | (size_t)p[3];

        if (len > IKD_MAX_FRAME_BYTES) {
            IKD_WARN("net", "frame of %zu bytes on connection %llu -> closed",
                     len, (unsigned long long)c->id);
            return IKD_ELIMIT;
        }
        if (c->rlen - pos - FRAME_HEADER_BYTES < len) {
            break;
        }
        rv = on_frame(c, p + FRAME_HEADER_BYTES, len);
        if (rv != 0) {
            return rv;
        }
        pos += FRAME_HEADER_BYTES + len;
    }

    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
    return 0;
}

/* Make room for the frame whose header is at the start of rbuf, so that
 * a large frame is read in one pass, and give memory back after one. */
static int size_read_buffer(struct conn *c)
{
    size_t want = READ_CHUNK_BYTES;
    uint8_t *p;

    if (c->rlen >= FRAME_HEADER_BYTES) {
        const uint8_t *h = c->rbuf;
        want += (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 |
                (size_t)h[3];
    }
    if (want < c->rlen + READ_CHUNK_BYTES) {
        want = c->rlen + READ_CHUNK_BYTES;
    }
    if (want == c->rcap || (want < c->rcap && c->rcap <= 4 * want)) {
        return 0;
    }
    p = realloc(c->rbuf, want);
    if (p == NULL) {
        return -ENOMEM;
    }
    c->rbuf = p;
    c->rcap = want;
    return 0;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    int rv;

    (void)buf;
    if (c->closing || nread == 0) {
        return;
    }
    if (nread < 0) {
        conn_close(
            c, nread == UV_EOF ? "closed by peer" : uv_strerror((int)nread));
        return;
    }

    c->rlen += (size_t)nread;
    assert(c->rlen <= c->rcap);
    rv = consume_frames(c);
    if (rv == 0 && !c->closing) {
        rv = size_read_buffer(c);
    }
    if (rv != 0) {
        conn_close(c, ikd_strerror(rv));
    }
}

static void conn_start(struct conn *c)
{
    int rv;

    uv_tcp_nodelay(&c->tcp, 1);
    rv = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rv != 0) {
        conn_close(c, uv_strerror(rv));
    }
}

/* Incoming connections. */

static void connection_cb(uv_stream_t *server, int status)
{
    struct net_transport *t = server->data;
    struct conn *c;

    if (status < 0) {
        IKD_WARN("net", "accept failed: %s", uv_strerror(status));
        return;
    }
    c = conn_new(t);
    if (c == NULL) {
        IKD_WARN("net", "no memory for a connection -> refused");
        return;
    }
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c, "accept failed");
        return;
    }
    conn_start(c);
}

/* Outgoing links. */

static void connect_cb(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct link *l = c->link;
    struct net_msg hello;

    if (status == UV_ECANCELED || c->closing) {
        return;
    }
    if (status < 0) {
        conn_close(c, uv_strerror(status));
        return;
    }

    memset(&hello, 0, sizeof(hello));
    hello.kind = NET_HELLO;
    hello.hello.node_id = c->t->self;
    hello.hello.cluster_hash = c->t->cluster_hash;
    l->connected = true;
    l->up_since_ms = uv_now(c->t->loop);
    conn_start(c);
    if (!c->closing && conn_send(c, &hello) != 0) {
        conn_close(c, "HELLO not queued");
        return;
    }
    if (!c->closing) {
        IKD_INFO("net", "link to %u up (%s:%u)", (unsigned)l->peer.id,
                 l->peer.host, (unsigned)l->peer.port);
    }
}

static void link_connect(struct link *l)
{
    struct net_transport *t = l->t;
    struct conn *c;
    int rv;

    assert(l->conn == NULL);
    c = conn_new(t);
    if (c == NULL) {
        link_schedule(l);
        return;
    }
    c->link = l;
    c->from = l->peer.id;
    l->conn = c;

    /* Peers see this node's own address as the source (CONTRACT). */
    rv = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&t->bind_addr, 0);
    if (rv == 0) {
        c->connect_req.data = c;
        rv = uv_tcp_connect(&c->connect_req, &c->tcp,
                            (const struct sockaddr *)&l->addr, connect_cb);
    }
    if (rv != 0) {
        conn_close(c, uv_strerror(rv));
    }
}

static void link_timer_cb(uv_timer_t *timer)
{
    struct link *l = timer->data;

    if (!l->t->stopping && l->conn == NULL) {
        link_connect(l);
    }
}

/* Try again after the current backoff, and double it for next time. */
static void link_schedule(struct link *l)
{
    uv_timer_start(&l->timer, link_timer_cb, l->backoff_ms, 0);
    l->backoff_ms *= 2;
    if (l->backoff_ms > BACKOFF_MAX_MS) {
        l->backoff_ms = BACKOFF_MAX_MS;
    }
}

/* Setup and teardown. */

static void free_links(struct net_transport *t)
{
    size_t i;

    for (i = 0; i < t->n_links; i++) {
        free(t->links[i]);
    }
    t->n_links = 0;
}

/* A link to peer, not started: 0, or a negative code. */
static int link_new(struct net_transport *t,
                    const struct net_peer *peer,
                    struct link **out)
{
    struct link *l = calloc(1, sizeof(*l));
    int rv;

    if (l == NULL) {
        return -ENOMEM;
    }
    l->t = t;
    l->peer = *peer;
    l->backoff_ms = BACKOFF_MIN_MS;
    rv = resolve(peer->host, peer->port, &l->addr);
    if (rv != 0) {
        free(l);
        return rv;
    }
    *out = l;
    return 0;
}

static int setup_links(struct net_transport *t,
                       const struct net_peer *peers,
                       size_t n_peers)
{
    size_t i;
    int rv;

    if (n_peers > IKD_MAX_NODES) {
        return -EINVAL;
    }
    for (i = 0; i < n_peers; i++) {
        if (peers[i].id == t->self) {
            continue;
        }
        rv = link_new(t, &peers[i], &t->links[t->n_links]);
        if (rv != 0) {
            free_links(t);
            return rv;
        }
        t->n_links++;
    }
    return 0;
}

static void link_start(struct link *l)
{
    l->timer.data = l;
    uv_timer_init(l->t->loop, &l->timer);
    l->t->open_handles++;
    uv_timer_start(&l->timer, link_timer_cb, 0, 0);
}

static void link_close_cb(uv_handle_t *h)
{
    struct link *l = h->data;
    struct net_transport *t = l->t;

    free(l);
    handle_closed(t);
}

/* Stop and free l once its handles closed; its connection closes now. */
static void link_remove(struct link *l)
{
    struct conn *c = l->conn;

    IKD_INFO("net", "peer %u (%s:%u) left the configuration -> drop its link",
             (unsigned)l->peer.id, l->peer.host, (unsigned)l->peer.port);
    if (c != NULL) {
        c->link = NULL;
        l->conn = NULL;
        conn_close(c, "peer removed");
    }
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, link_close_cb);
}

static bool peer_equal(const struct net_peer *a, const struct net_peer *b)
{
    return a->id == b->id && a->port == b->port &&
           strcmp(a->host, b->host) == 0;
}

int net_transport_set_peers(struct net_transport *t,
                            const struct net_peer *peers,
                            size_t n_peers)
{
    size_t i;
    size_t j;
    size_t kept = 0;

    assert(!t->stopping);
    for (i = 0; i < t->n_links; i++) {
        struct link *l = t->links[i];

        for (j = 0; j < n_peers && !peer_equal(&peers[j], &l->peer); j++) {
        }
        if (j < n_peers) {
            t->links[kept++] = l;
        } else {
            link_remove(l);
        }
    }
    t->n_links = kept;
    for (i = 0; i < n_peers; i++) {
        struct link *l;
        int rv;

        for (j = 0;
             j < t->n_links && !peer_equal(&peers[i], &t->links[j]->peer);
             j++) {
        }
        if (peers[i].id == t->self || j < t->n_links) {
            continue;
        }
        if (t->n_links == IKD_MAX_NODES) {
            return IKD_ELIMIT;
        }
        rv = link_new(t, &peers[i], &l);
        if (rv != 0) {
            return rv;
        }
        IKD_INFO("net", "peer %u (%s:%u) joined the configuration -> link it",
                 (unsigned)l->peer.id, l->peer.host, (unsigned)l->peer.port);
        t->links[t->n_links++] = l;
        link_start(l);
    }
    return 0;
}

static const struct net_peer *find_self(raft_id_t self,
                                        const struct net_peer *peers,
                                        size_t n_peers)
{
    size_t i;

    for (i = 0; i < n_peers; i++) {
        if (peers[i].id == self) {
            return &peers[i];
        }
    }
    return NULL;
}

/* Everything that can fail happens before the first handle exists, so a
 * failed start leaves nothing for the loop to close. */
int net_transport_start(uv_loop_t *loop,
                        raft_id_t self,
                        const struct net_peer *peers,
                        size_t n_peers,
                        uint64_t cluster_hash,
                        const struct net_transport_cbs *cbs,
                        void *ctx,
                        struct net_transport **out)
{
    const struct net_peer *me = find_self(self, peers, n_peers);
    struct sockaddr_storage listen_addr;
    struct net_transport *t;
    size_t i;
    int fd = -1;
    int rv;

    if (me == NULL) {
        return -EINVAL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return -ENOMEM;
    }
    t->loop = loop;
    t->self = self;
    t->cluster_hash = cluster_hash;
    t->cbs = *cbs;
    t->ctx = ctx;
    t->next_conn_id = 1;

    rv = resolve(me->host, me->port, &listen_addr);
    if (rv == 0) {
        rv = resolve(me->host, 0, &t->bind_addr);
    }
    if (rv == 0) {
        rv = setup_links(t, peers, n_peers);
    }
    if (rv == 0) {
        rv = open_listener(&listen_addr, &fd);
    }
    if (rv != 0) {
        free_links(t);
        free(t);
        return rv;
    }

    t->listener.data = t;
    uv_tcp_init(loop, &t->listener);
    rv = uv_tcp_open(&t->listener, fd);
    assert(rv == 0);
    rv = uv_listen((uv_stream_t *)&t->listener, LISTEN_BACKLOG, connection_cb);
    assert(rv == 0); /* the socket already listens */
    t->flusher.data = t;
    uv_idle_init(loop, &t->flusher);
    t->open_handles = 2;

    for (i = 0; i < t->n_links; i++) {
        link_start(t->links[i]);
    }
    *out = t;
    return 0;
}

/* An incoming connection from node id, the newest, or NULL. */
static struct conn *incoming_from(struct net_transport *t, raft_id_t id)
{
    struct conn *best = NULL;
    size_t i;

    for (i = 0; i < CONN_BUCKETS; i++) {
        struct conn *c;

        for (c = t->buckets[i]; c != NULL; c = c->bucket_next) {
            if (c->link == NULL && c->hello_seen && !c->closing &&
                c->from == id && (best == NULL || c->id > best->id)) {
                best = c;
            }
        }
    }
    return best;
}

int net_send_peer(struct net_transport *t,
                  raft_id_t to,
                  const struct net_msg *m)
{
    struct conn *in;
    size_t i;

    for (i = 0; i < t->n_links; i++) {
        struct link *l = t->links[i];

        if (l->peer.id == to) {
            if (!l->connected || l->conn == NULL || l->conn->closing) {
                return -ENOTCONN;
            }
            return conn_send(l->conn, m);
        }
    }
    /* A peer this node has no address for yet (it is joining and has no
     * configuration) is answered on the connection the peer opened. */
    in = incoming_from(t, to);
    return in != NULL ? conn_send(in, m) : -ENOTCONN;
}

int net_send_conn(struct net_transport *t,
                  uint64_t conn_id,
                  const struct net_msg *m)
{
    struct conn *c = conn_lookup(t, conn_id);

    if (c == NULL || c->closing || (c->link != NULL && !c->link->connected)) {
        return -ENOTCONN;
    }
    return conn_send(c, m);
}

void net_transport_stop(struct net_transport *t,
                        void (*cb)(void *arg),
                        void *arg)
{
    size_t i;

    assert(!t->stopping);
    t->stopping = true;
    t->stop_cb = cb;
    t->stop_arg = arg;

    for (i = 0; i < CONN_BUCKETS; i++) {
        while (t->buckets[i] != NULL) {
            conn_close(t->buckets[i], "shutting down");
        }
    }
    for (i = 0; i < t->n_links; i++) {
        uv_close((uv_handle_t *)&t->links[i]->timer, link_close_cb);
    }
    t->n_links = 0;
    uv_close((uv_handle_t *)&t->flusher, plain_close_cb);
    t->flusher.data = t;
    uv_close((uv_handle_t *)&t->listener, plain_close_cb);
}
