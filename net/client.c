/* The Ikada client library (see client.h): blocking sockets, poll() and
 * one deadline per call that covers every retry.
 *
 * A call goes to the node it is connected to, or else the next one in the
 * list.  A node that does not lead answers IKD_ENOTLEADER, with the
 * leader's address when it knows one: the call goes there at once.  With
 * no leader known, or when a connection fails, it waits a little and tries
 * the next address, until the deadline.
 *
 * Every proposal carries this client's random session and a sequence
 * number that stays the same across retries, so that a command resent
 * after a lost reply or a leader change is applied once. */

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../kv/cmd.h"
#include "client.h"
#include "msg.h"

#define MAX_ADDRS 64
#define ADDR_BYTES 96
#define BACKOFF_MS 50
#define BACKOFF_MAX_MS 200
/* A connect that takes longer than this is abandoned for the next node. */
#define CONNECT_TIMEOUT_MS 1000
/* How long one node may take to answer before the call tries the next
 * one: a leader that is paused or cut off keeps the connection open but
 * never answers, and a new leader is elected within about two election
 * timeouts.  Resending is safe: commands carry the client's session. */
#define ATTEMPT_TIMEOUT_MS 2000
/* Each node's share of a status call. */
#define STATUS_TIMEOUT_MS 1000

struct addr
{
    char text[ADDR_BYTES]; /* HOST:PORT as given */
    char host[ADDR_BYTES];
    char port[8];
};

struct ikada_client
{
    struct addr addrs[MAX_ADDRS];
    size_t n_addrs;
    size_t cur; /* the address tried next when not connected */
    unsigned timeout_ms;
    int fd; /* -1 when not connected */
    uint64_t next_req_id;
    uint64_t session;
    uint64_t seq;
};

/* A decoded reply and the frame its pointers point into. */
struct reply
{
    uint8_t *frame;
    struct net_msg msg;
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int ms_until(uint64_t deadline)
{
    uint64_t now = now_ms();

    if (now >= deadline) {
        return 0;
    }
    return deadline - now > INT32_MAX ? INT32_MAX : (int)(deadline - now);
}

static void sleep_ms(unsigned ms, uint64_t deadline)
{
    int left = ms_until(deadline);

    poll(NULL, 0, (int)ms < left ? (int)ms : left);
}

static void reply_free(struct reply *r)
{
    net_msg_release(&r->msg);
    free(r->frame);
    r->frame = NULL;
}

/* Parsing "HOST:PORT" (the host may be a bracketed IPv6 address); s need
 * not be NUL-terminated. */
static int parse_addr(const char *s, size_t len, struct addr *a)
{
    size_t host_len = len;
    size_t port_len;
    size_t i;

    while (host_len > 0 && s[host_len - 1] != ':') {
        host_len--;
    }
    if (len >= ADDR_BYTES || host_len < 2) {
        return -EINVAL;
    }
    port_len = len - host_len;
    host_len--; /* the colon */
    if (port_len == 0 || port_len >= sizeof(a->port)) {
        return -EINVAL;
    }
    unsigned long port = 0;
    for (i = 0; i < port_len; i++) {
        if (s[host_len + 1 + i] < '0' || s[host_len + 1 + i] > '9') {
            return -EINVAL;
        }
        port = port * 10 + (unsigned long)(s[host_len + 1 + i] - '0');
    }
    if (port == 0 || port > 65535) {
        return -EINVAL;
    }
    memcpy(a->text, s, len);
    a->text[len] = '\0';
    memcpy(a->port, s + host_len + 1, port_len);
    a->port[port_len] = '\0';
    if (host_len > 2 && s[0] == '[' && s[host_len - 1] == ']') {
        memcpy(a->host, s + 1, host_len - 2);
        a->host[host_len - 2] = '\0';
    } else {
        memcpy(a->host, s, host_len);
        a->host[host_len] = '\0';
    }
    return 0;
}

int ikada_client_open(const char *cluster,
                      unsigned timeout_ms,
                      struct ikada_client **out)
{
    struct ikada_client *c;
    const char *p = cluster;

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    while (*p != '\0') {
        size_t len = strcspn(p, ",");

        if (c->n_addrs == MAX_ADDRS ||
            parse_addr(p, len, &c->addrs[c->n_addrs]) != 0) {
            free(c);
            return -EINVAL;
        }
        c->n_addrs++;
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    if (c->n_addrs == 0) {
        free(c);
        return -EINVAL;
    }
    c->timeout_ms = timeout_ms;
    c->fd = -1;
    c->next_req_id = 1;
    if (getrandom(&c->session, sizeof(c->session), 0) !=
        (ssize_t)sizeof(c->session)) {
        c->session = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32);
    }
    c->session |= 1; /* 0 means "no session" */
    *out = c;
    return 0;
}

void ikada_client_close(struct ikada_client *c)
{
    if (c == NULL) {
        return;
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c);
}

/* Socket I/O bounded by a deadline. */

static int wait_fd(int fd, short events, uint64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    int rv;

    do {
        rv = poll(&pfd, 1, ms_until(deadline));
    } while (rv < 0 && errno == EINTR);
    if (rv < 0) {
        return -errno;
    }
    return rv == 0 ? IKD_ETIMEDOUT : 0;
}

static int send_all(int fd, const uint8_t *p, size_t len, uint64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int rv = wait_fd(fd, POLLOUT, deadline);
            if (rv != 0) {
                return rv;
            }
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_all(int fd, uint8_t *p, size_t len, uint64_t deadline)
{
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);

        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int rv = wait_fd(fd, POLLIN, deadline);
            if (rv != 0) {
                return rv;
            }
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_msg(int fd, const struct net_msg *m, uint64_t deadline)
{
    uint8_t *frame;
    size_t len;
    int rv;

    rv = net_msg_encode(m, &frame, &len);
    if (rv != 0) {
        return rv;
    }
    rv = send_all(fd, frame, len, deadline);
    free(frame);
    return rv;
}

/* Read one frame and decode it into r; the caller frees it with
 * reply_free(). */
static int recv_msg(int fd, struct reply *r, uint64_t deadline)
{
    uint8_t header[4];
    size_t len;
    int rv;

    rv = recv_all(fd, header, sizeof(header), deadline);
    if (rv != 0) {
        return rv;
    }
    len = (size_t)header[0] << 24 | (size_t)header[1] << 16 |
          (size_t)header[2] << 8 | header[3];
    if (len > IKD_MAX_FRAME_BYTES) {
        return IKD_EMALFORMED;
    }
    r->frame = malloc(len > 0 ? len : 1);
    if (r->frame == NULL) {
        return -ENOMEM;
    }
    rv = recv_all(fd, r->frame, len, deadline);
    if (rv == 0) {
        rv = net_msg_decode(r->frame, len, &r->msg);
    }
    if (rv != 0) {
        free(r->frame);
        r->frame = NULL;
    }
    return rv;
}

/* Connect to a, say HELLO as a client, and return the socket. */
static int dial(const struct addr *a, uint64_t deadline, int *fd_out)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct net_msg hello = {.kind = NET_HELLO};
    struct addrinfo *res;
    uint64_t connect_deadline = now_ms() + CONNECT_TIMEOUT_MS;
    socklen_t errlen = sizeof(int);
    int err = 0;
    int fd;
    int rv;

    if (getaddrinfo(a->host, a->port, &hints, &res) != 0) {
        return -EHOSTUNREACH;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return -errno;
    }
    rv = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rv != 0 && errno != EINPROGRESS) {
        rv = -errno;
        goto err_after_socket;
    }
    if (rv != 0) {
        rv = wait_fd(fd, POLLOUT,
                     connect_deadline < deadline ? connect_deadline : deadline);
        if (rv == 0 &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) != 0) {
            err = errno;
        }
        if (rv == 0 && err != 0) {
            rv = -err;
        }
        if (rv != 0) {
            goto err_after_socket;
        }
    }

    rv = send_msg(fd, &hello, deadline);
    if (rv != 0) {
        goto err_after_socket;
    }
    *fd_out = fd;
    return 0;

err_after_socket:
    close(fd);
    return rv;
}

static void disconnect(struct ikada_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

/* Send req on fd and wait for the reply that carries its id. */
static int exchange(int fd,
                    const struct net_client_req *req,
                    uint64_t deadline,
                    struct reply *r)
{
    struct net_msg m = {.kind = NET_CLIENT_REQ, .req = *req};
    int rv;

    rv = send_msg(fd, &m, deadline);
    while (rv == 0) {
        rv = recv_msg(fd, r, deadline);
        if (rv != 0) {
            break;
        }
        if (r->msg.kind != NET_CLIENT_RESP) {
            reply_free(r);
            return IKD_EMALFORMED;
        }
        if (r->msg.resp.req_id == req->req_id) {
            return 0;
        }
        /* The late answer to a request this client gave up on. */
        reply_free(r);
    }
    return rv;
}

/* Whether a node's answer means "ask another node", not a result. */
/* IKD_EBUSY: the leader appended nothing (it hands leadership over, for a
 * transfer or because a membership change removed it, or too much is
 * uncommitted), so asking again is safe.  -ENOSPC and -EIO: that node's
 * own disk fails, another node may serve the call. */
static bool is_retryable(int status)
{
    return status == IKD_ENOTLEADER || status == IKD_ENOLEADER ||
           status == IKD_ESHUTDOWN || status == IKD_ETIMEDOUT ||
           status == IKD_ELOST || status == IKD_EBUSY || status == -ENOSPC ||
           status == -EIO;
}

/* Pick the next node after a failure, and wait a little before trying it,
 * longer after each failure in a row. */
static void next_node(struct ikada_client *c,
                      unsigned *backoff_ms,
                      uint64_t deadline)
{
    disconnect(c);
    c->cur = (c->cur + 1) % c->n_addrs;
    sleep_ms(*backoff_ms, deadline);
    *backoff_ms =
        *backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff_ms * 2;
}

static int call_leader_untraced(struct ikada_client *c,
                                struct net_client_req *req,
                                struct reply *r);

/* Send req to the leader, following redirects and retrying until the
 * deadline.  On 0, r holds the reply, whose status the caller reads.
 * With a tracer, the call is a span whose context goes with every try,
 * so the nodes' spans join the caller's trace. */
static int call_leader(struct ikada_client *c,
                       struct net_client_req *req,
                       struct reply *r)
{
    struct ikd_span span;
    int rv;

    if (!ikd_tracer_enabled()) {
        return call_leader_untraced(c, req, r);
    }
    ikd_span_begin(&span, "ikada.client", IKD_SPAN_CLIENT, NULL);
    ikd_span_set_str(&span, "ikada.op", net_op_name(req->op));
    if (span.recording) {
        req->trace = span.ctx;
    }
    rv = call_leader_untraced(c, req, r);
    if (rv != 0 || r->msg.resp.status < 0) {
        ikd_span_set_error(&span,
                           ikd_strerror(rv != 0 ? rv : r->msg.resp.status));
    }
    ikd_span_end(&span);
    return rv;
}

static int call_leader_untraced(struct ikada_client *c,
                                struct net_client_req *req,
                                struct reply *r)
{
    uint64_t deadline = now_ms() + c->timeout_ms;
    unsigned backoff_ms = BACKOFF_MS;
    struct addr target = c->addrs[c->cur];
    bool redirected = false;
    int rv;

    while (ms_until(deadline) > 0) {
        if (c->fd < 0 && dial(&target, deadline, &c->fd) != 0) {
            c->fd = -1;
            next_node(c, &backoff_ms, deadline);
            target = c->addrs[c->cur];
            continue;
        }
        req->req_id = c->next_req_id++;
        uint64_t attempt = now_ms() + ATTEMPT_TIMEOUT_MS;
        rv = exchange(c->fd, req, attempt < deadline ? attempt : deadline, r);
        if (rv != 0) {
            next_node(c, &backoff_ms, deadline);
            target = c->addrs[c->cur];
            continue;
        }
        if (!is_retryable(r->msg.resp.status)) {
            return 0;
        }

        /* A node that knows the leader sends the client there.  Two nodes
         * may briefly name each other, so only the first hop is free. */
        if (r->msg.resp.status == IKD_ENOTLEADER &&
            r->msg.resp.leader_addr_len > 0 &&
            parse_addr(r->msg.resp.leader_addr, r->msg.resp.leader_addr_len,
                       &target) == 0) {
            reply_free(r);
            disconnect(c);
            if (redirected) {
                sleep_ms(backoff_ms, deadline);
            }
            redirected = true;
            continue;
        }
        reply_free(r);
        next_node(c, &backoff_ms, deadline);
        target = c->addrs[c->cur];
    }
    return IKD_ETIMEDOUT;
}

/* Send req to one node only; with retry, try again until the deadline
 * when the node cannot be reached. */
static int call_one(const struct addr *a,
                    struct net_client_req *req,
                    bool retry,
                    uint64_t deadline,
                    struct reply *r)
{
    unsigned backoff_ms = BACKOFF_MS;
    uint64_t req_id = 1;

    while (ms_until(deadline) > 0) {
        int fd;

        if (dial(a, deadline, &fd) == 0) {
            int rv;

            req->req_id = req_id++;
            rv = exchange(fd, req, deadline, r);
            close(fd);
            if (rv == 0) {
                return 0;
            }
        }
        if (!retry) {
            break;
        }
        sleep_ms(backoff_ms, deadline);
        backoff_ms =
            backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
    }
    return IKD_ETIMEDOUT;
}

/* The operations. */

static int propose(struct ikada_client *c, struct kv_cmd *cmd)
{
    struct net_client_req req = {.op = NET_OP_PROPOSE};
    struct reply r = {0};
    struct timespec now;
    uint8_t *buf;
    size_t len;
    int rv;

    clock_gettime(CLOCK_REALTIME, &now);
    cmd->session = c->session;
    cmd->seq = ++c->seq;
    cmd->time_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    /* The server applies its own limit before proposing. */
    cmd->max_bytes = UINT64_MAX;
    rv = kv_cmd_encode(cmd, &buf, &len);
    if (rv != 0) {
        return rv;
    }
    req.cmd = buf;
    req.cmd_len = len;
    rv = call_leader(c, &req, &r);
    free(buf);
    if (rv != 0) {
        return rv;
    }
    rv = r.msg.resp.status;
    reply_free(&r);
    return rv;
}

int ikada_set(struct ikada_client *c,
              const char *key,
              const void *value,
              size_t len)
{
    struct kv_cmd cmd = {.op = KV_OP_PUT};
    int rv = kv_key_check(key, strlen(key));

    if (rv != 0) {
        return rv;
    }
    if (len > IKD_MAX_VALUE_BYTES_LIMIT) {
        return -EFBIG;
    }
    cmd.path = key;
    cmd.path_len = strlen(key);
    cmd.data = len > 0 ? value : (const uint8_t *)"";
    cmd.data_len = len;
    return propose(c, &cmd);
}

int ikada_del(struct ikada_client *c, const char *key)
{
    struct kv_cmd cmd = {.op = KV_OP_DEL};
    int rv = kv_key_check(key, strlen(key));

    if (rv != 0) {
        return rv;
    }
    cmd.path = key;
    cmd.path_len = strlen(key);
    return propose(c, &cmd);
}

int ikada_cas(struct ikada_client *c,
              const char *key,
              const void *expect,
              size_t expect_len,
              const void *value,
              size_t len)
{
    struct kv_cmd cmd = {.op = KV_OP_CAS};
    int rv = kv_key_check(key, strlen(key));

    if (rv != 0) {
        return rv;
    }
    if (len > IKD_MAX_VALUE_BYTES_LIMIT ||
        expect_len > IKD_MAX_VALUE_BYTES_LIMIT - len) {
        return -EFBIG;
    }
    cmd.path = key;
    cmd.path_len = strlen(key);
    cmd.data = len > 0 ? value : (const uint8_t *)"";
    cmd.data_len = len;
    if (expect == NULL) {
        cmd.flags = KV_F_ABSENT;
    } else {
        cmd.expect = expect_len > 0 ? expect : (const uint8_t *)"";
        cmd.expect_len = expect_len;
    }
    return propose(c, &cmd);
}

/* Copy a GET reply's value out of its frame. */
static int take_value(struct reply *r, uint8_t **value, size_t *len)
{
    int rv = r->msg.resp.status;

    if (rv == 0) {
        *len = r->msg.resp.data_len;
        *value = malloc(*len > 0 ? *len : 1);
        if (*value == NULL) {
            rv = -ENOMEM;
        } else {
            memcpy(*value, r->msg.resp.data, *len);
        }
    }
    reply_free(r);
    return rv;
}

int ikada_get(struct ikada_client *c,
              const char *key,
              uint8_t **value,
              size_t *len)
{
    struct net_client_req req = {.op = NET_OP_GET};
    struct reply r = {0};
    int rv = kv_key_check(key, strlen(key));

    if (rv != 0) {
        return rv;
    }
    req.key = key;
    req.key_len = strlen(key);
    rv = call_leader(c, &req, &r);
    return rv != 0 ? rv : take_value(&r, value, len);
}

int ikada_get_local(struct ikada_client *c,
                    const char *key,
                    uint8_t **value,
                    size_t *len)
{
    struct net_client_req req = {.op = NET_OP_GET_LOCAL};
    struct reply r = {0};
    int rv = kv_key_check(key, strlen(key));

    if (rv != 0) {
        return rv;
    }
    req.key = key;
    req.key_len = strlen(key);
    rv = call_one(&c->addrs[0], &req, true, now_ms() + c->timeout_ms, &r);
    return rv != 0 ? rv : take_value(&r, value, len);
}

/* Split "k1\0k2\0" into a malloc'd array of malloc'd strings. */
/* Whether key is dir itself or lies in folder dir (dir_len bytes, no
 * trailing '/'); every key is under the empty dir. */
static bool key_under(const char *key, const char *dir, size_t dir_len)
{
    return dir_len == 0 || (strncmp(key, dir, dir_len) == 0 &&
                            (key[dir_len] == '\0' || key[dir_len] == '/'));
}

/* Split the NUL-terminated keys of data, keeping those under dir. */
static int split_keys(const uint8_t *data,
                      size_t len,
                      const char *dir,
                      size_t dir_len,
                      char ***keys,
                      size_t *n)
{
    size_t count = 0;
    size_t kept = 0;
    size_t i;
    size_t start = 0;
    char **v;

    for (i = 0; i < len; i++) {
        count += data[i] == '\0';
    }
    if (len > 0 && data[len - 1] != '\0') {
        return IKD_EMALFORMED;
    }
    v = calloc(count > 0 ? count : 1, sizeof(*v));
    if (v == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < count; i++) {
        const char *key = (const char *)data + start;

        start += strlen(key) + 1;
        if (!key_under(key, dir, dir_len)) {
            continue;
        }
        v[kept] = strdup(key);
        if (v[kept] == NULL) {
            ikada_keys_free(v, kept);
            return -ENOMEM;
        }
        kept++;
    }
    *keys = v;
    *n = kept;
    return 0;
}

int ikada_list(struct ikada_client *c,
               const char *prefix,
               char ***keys,
               size_t *n)
{
    struct net_client_req req = {.op = NET_OP_LIST};
    struct reply r = {0};
    size_t len = strlen(prefix);
    int rv;

    /* PREFIX names a folder (or a key): "dir/" is the same as "dir", and
     * "d" does not take in "dir".  The node lists by string prefix. */
    if (len > 0 && prefix[len - 1] == '/') {
        len--;
    }
    if (len > 0 && kv_key_check(prefix, len) != 0) {
        return -EINVAL;
    }
    req.key = prefix;
    req.key_len = len;
    rv = call_leader(c, &req, &r);
    if (rv != 0) {
        return rv;
    }
    rv = r.msg.resp.status;
    if (rv == 0) {
        rv = split_keys(r.msg.resp.data, r.msg.resp.data_len, prefix, len, keys,
                        n);
    }
    reply_free(&r);
    return rv;
}

void ikada_keys_free(char **keys, size_t n)
{
    size_t i;

    for (i = 0; keys != NULL && i < n; i++) {
        free(keys[i]);
    }
    free(keys);
}

static void fill_status(const struct net_client_resp *resp,
                        struct ikada_node_status *s)
{
    static const char *const roles[] = {"follower", "candidate", "leader"};

    assert(resp->role <= RAFT_LEADER); /* checked by the decoder */
    s->reachable = 1;
    s->id = resp->id;
    strcpy(s->role, roles[resp->role]);
    s->term = resp->term;
    s->commit = resp->commit;
    s->applied = resp->applied;
    s->leader_id = resp->leader_id;
    s->snapshot = resp->snapshot;
}

/* The leader with the highest term among the nodes' reports, if any. */
static int find_leader(struct ikada_client *c, uint32_t *id, uint64_t *term)
{
    struct ikada_node_status *s;
    size_t n;
    size_t i;
    int rv = ikada_status(c, &s, &n);

    if (rv != 0) {
        return rv;
    }
    *id = 0;
    *term = 0;
    for (i = 0; i < n; i++) {
        if (s[i].reachable && strcmp(s[i].role, "leader") == 0 &&
            s[i].term >= *term) {
            *id = s[i].id;
            *term = s[i].term;
        }
    }
    free(s);
    return 0;
}

int ikada_transfer(struct ikada_client *c, uint32_t target)
{
    uint64_t deadline = now_ms() + c->timeout_ms;
    struct net_client_req req = {.op = NET_OP_TRANSFER};
    struct reply r = {0};
    char key[16];
    uint32_t old_id;
    uint32_t id;
    uint64_t old_term;
    uint64_t term;
    int rv;

    rv = find_leader(c, &old_id, &old_term);
    if (rv != 0) {
        return rv;
    }
    req.key_len = target == 0
                      ? 0
                      : (size_t)snprintf(key, sizeof(key), "%" PRIu32, target);
    req.key = key;
    rv = call_leader(c, &req, &r);
    if (rv != 0) {
        return rv;
    }
    rv = r.msg.resp.status;
    reply_free(&r);
    if (rv != 0 || target == old_id) {
        return rv;
    }
    while (ms_until(deadline) > 0) {
        if (find_leader(c, &id, &term) == 0 && term > old_term &&
            id != old_id && (target == 0 || id == target)) {
            return 0;
        }
        sleep_ms(BACKOFF_MS, deadline);
    }
    return IKD_ETIMEDOUT;
}

int ikada_member_list(struct ikada_client *c, char **text)
{
    struct net_client_req req = {.op = NET_OP_MEMBER_LIST};
    struct reply r = {0};
    int rv = call_leader(c, &req, &r);

    if (rv != 0) {
        return rv;
    }
    rv = r.msg.resp.status;
    if (rv == 0) {
        *text = malloc(r.msg.resp.data_len + 1);
        if (*text == NULL) {
            rv = -ENOMEM;
        } else {
            if (r.msg.resp.data_len > 0) {
                memcpy(*text, r.msg.resp.data, r.msg.resp.data_len);
            }
            (*text)[r.msg.resp.data_len] = 0;
        }
    }
    reply_free(&r);
    return rv;
}

int ikada_member_change(struct ikada_client *c,
                        bool add,
                        uint32_t id,
                        const char *addr)
{
    struct net_client_req req = {.op = add ? NET_OP_MEMBER_ADD
                                           : NET_OP_MEMBER_REMOVE};
    struct reply r = {0};
    char key[32 + IKD_MAX_ADDR_BYTES];
    int len;
    int rv;

    if (add && (addr == NULL || strlen(addr) >= IKD_MAX_ADDR_BYTES)) {
        return -EINVAL;
    }
    len = add ? snprintf(key, sizeof(key), "%" PRIu32 " %s", id, addr)
              : snprintf(key, sizeof(key), "%" PRIu32, id);
    req.key = key;
    req.key_len = (size_t)len;
    rv = call_leader(c, &req, &r);
    if (rv != 0) {
        return rv;
    }
    rv = r.msg.resp.status;
    reply_free(&r);
    return rv;
}

/* Ask the node at a for its status; v->addr is set whatever happens. */
static void status_of(const struct addr *a,
                      unsigned timeout_ms,
                      struct ikada_node_status *v)
{
    struct net_client_req req = {.op = NET_OP_STATUS};
    struct reply r = {0};

    snprintf(v->addr, sizeof(v->addr), "%s", a->text);
    if (call_one(a, &req, false, now_ms() + timeout_ms, &r) != 0) {
        return;
    }
    if (r.msg.resp.status == 0) {
        fill_status(&r.msg.resp, v);
    }
    reply_free(&r);
}

/* The configuration node a knows, as lines "ID HOST:PORT ROLE" into
 * text (NUL-terminated); 0 or a negative code. */
static int members_of(const struct addr *a,
                      unsigned timeout_ms,
                      char *text,
                      size_t cap)
{
    struct net_client_req req = {
        .op = NET_OP_MEMBER_LIST,
        .key = NET_MEMBER_LIST_LOCAL,
        .key_len = strlen(NET_MEMBER_LIST_LOCAL),
    };
    struct reply r = {0};
    int rv = call_one(a, &req, false, now_ms() + timeout_ms, &r);

    if (rv != 0) {
        return rv;
    }
    rv = r.msg.resp.status;
    if (rv == 0 && r.msg.resp.data_len >= cap) {
        rv = IKD_EMALFORMED;
    }
    if (rv == 0) {
        memcpy(text, r.msg.resp.data, r.msg.resp.data_len);
        text[r.msg.resp.data_len] = '\0';
    }
    reply_free(&r);
    return rv;
}

/* The reachable node to ask for the configuration: the leader with the
 * highest term, else any; -1 when none answered. */
static long config_source(const struct ikada_node_status *v, size_t n)
{
    long best = -1;

    for (size_t i = 0; i < n; i++) {
        if (!v[i].reachable) {
            continue;
        }
        bool leads = strcmp(v[i].role, "leader") == 0;
        bool best_leads = best >= 0 && strcmp(v[best].role, "leader") == 0;
        if (best < 0 || (leads && (!best_leads || v[i].term > v[best].term))) {
            best = (long)i;
        }
    }
    return best;
}

/* Fold one server "ID HOST:PORT" of the configuration into v[0..*n):
 * a node that answered with that id is it; an address that did not
 * answer takes its id; a server not yet asked is asked and added. */
static void status_merge(struct ikada_node_status *v,
                         size_t *n,
                         size_t cap,
                         uint32_t id,
                         const char *addr,
                         unsigned timeout_ms)
{
    struct addr a;

    for (size_t i = 0; i < *n; i++) {
        if (v[i].reachable && v[i].id == id) {
            return;
        }
    }
    for (size_t i = 0; i < *n; i++) {
        if (!v[i].reachable && strcmp(v[i].addr, addr) == 0) {
            v[i].id = id;
            return;
        }
    }
    if (*n == cap || parse_addr(addr, strlen(addr), &a) != 0) {
        return;
    }
    status_of(&a, timeout_ms, &v[*n]);
    if (!v[*n].reachable) {
        v[*n].id = id;
    }
    (*n)++;
}

/* In id order, unknown ids last; stable, so that those keep the order
 * they were given in.  A handful of entries: insertion sort. */
static void status_sort(struct ikada_node_status *v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct ikada_node_status x = v[i];
        uint32_t key = x.id == 0 ? UINT32_MAX : x.id;
        size_t j = i;

        while (j > 0 && (v[j - 1].id == 0 ? UINT32_MAX : v[j - 1].id) > key) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

int ikada_status(struct ikada_client *c,
                 struct ikada_node_status **out,
                 size_t *n)
{
    unsigned share_ms =
        c->timeout_ms < STATUS_TIMEOUT_MS ? c->timeout_ms : STATUS_TIMEOUT_MS;
    size_t cap = c->n_addrs + IKD_MAX_NODES;
    char text[IKD_MAX_NODES * (IKD_MAX_ADDR_BYTES + 24)];
    struct ikada_node_status *v;
    size_t count = c->n_addrs;
    long src;

    v = calloc(cap, sizeof(*v));
    if (v == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < c->n_addrs; i++) {
        status_of(&c->addrs[i], share_ms, &v[i]);
    }
    src = config_source(v, count);
    if (src >= 0 &&
        members_of(&c->addrs[src], share_ms, text, sizeof(text)) == 0) {
        for (char *line = strtok(text, "\n"); line != NULL;
             line = strtok(NULL, "\n")) {
            char addr[IKD_MAX_ADDR_BYTES];
            unsigned id;

            if (sscanf(line, "%u %95s", &id, addr) == 2 && id != 0) {
                status_merge(v, &count, cap, id, addr, share_ms);
            }
        }
        status_sort(v, count);
    }
    *out = v;
    *n = count;
    return 0;
}
