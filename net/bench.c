/* `ikada bench` (see bench.h).
 *
 * Each client is a slot that owns one request at a time: when its reply
 * comes the slot sends the next one at once (a closed loop).  Slots are
 * spread over a few connections to one node; replies are matched to slots
 * by request id, whose low bits are the slot's index.  Requests made while
 * handling a batch of replies go out in one write per connection.
 *
 * Every client has its own random session, so that the cluster sees N
 * independent writers, exactly as with N separate client processes.
 *
 * The latency of a request runs from its encoding to the decoding of its
 * reply; only successful requests are counted.  Linearizable and local
 * gets are preceded by a run of puts through the leader that writes every
 * key once (not measured), so that reads find values. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <uv.h>

#include "../kv/cmd.h"
#include "../raft/ikd.h"
#include "bench.h"
#include "client.h"
#include "msg.h"

#define EXIT_OK 0
#define EXIT_USAGE 2
#define EXIT_CLUSTER 3

/* Request ids carry the slot index in their low bits. */
#define SLOT_BITS 20
#define MAX_CLIENTS (1u << 16)
#define MAX_CONNECTIONS 64
#define MAX_PIDS 16
#define DEFAULT_OPS 1000
#define DEFAULT_KEYS 1000
#define DEFAULT_CONNECTIONS 4
#define WATCHDOG_MS 200
#define READ_CHUNK (64 * 1024)
#define ADDR_BYTES 96

_Static_assert(MAX_CLIENTS <= (1u << SLOT_BITS), "slot index fits");

enum mix { MIX_PUT, MIX_GET, MIX_GET_LOCAL };

static const char *const mix_names[] = {"put", "get", "get-local"};

struct options
{
    unsigned clients;
    uint64_t ops;      /* UINT64_MAX: until the duration ends */
    double duration_s; /* 0: no time limit */
    size_t value_bytes;
    enum mix mix;
    unsigned keys;
    unsigned connections;
    bool preload;
    pid_t pids[MAX_PIDS];
    size_t n_pids;
};

/* A growable byte buffer. */
struct buf
{
    uint8_t *data;
    size_t len;
    size_t cap;
};

struct bench;

struct conn
{
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct bench *b;
    struct buf in;  /* bytes received, not yet a whole frame */
    struct buf out; /* frames to send at the next flush */
};

struct write_req
{
    uv_write_t req;
    uint8_t *data; /* owned; freed when the write completes */
};

struct slot
{
    uint64_t session; /* this client's session for proposals */
    uint64_t cmd_seq; /* the last proposal's sequence number */
    uint64_t n_sent;  /* requests sent, the high bits of the request id */
    uint64_t req_id;  /* of the request in flight */
    uint64_t start_ns;
    bool busy;
    struct conn *conn;
};

/* What the closed loop sends and when it stops. */
struct phase
{
    enum mix mix;
    uint64_t ops;         /* requests to send; UINT64_MAX: unbounded */
    uint64_t deadline_ns; /* no new request after it; 0: none */
};

struct cpu_sample
{
    double server_s[MAX_PIDS];
    double self_s;
};

struct bench
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    const struct options *o;
    unsigned timeout_ms;
    struct sockaddr_storage addr;
    struct conn *conns;
    size_t n_conns;
    size_t n_connected;
    struct slot *slots;
    uint8_t *value;
    struct phase phase;
    uint64_t issued;
    uint64_t in_flight;
    uint64_t done;
    uint64_t errors;
    uint64_t missing;
    int first_error;
    uint64_t *lat_ns;
    size_t n_lat;
    size_t lat_cap;
    uint64_t start_ns;
    uint64_t end_ns;
    uint64_t last_reply_ns;
    struct cpu_sample cpu_before;
    struct cpu_sample cpu_after;
    bool stopping;
    int exit_status;
};

/* Buffers. */

static int buf_reserve(struct buf *b, size_t more)
{
    size_t cap = b->cap > 0 ? b->cap : 4096;
    uint8_t *data;

    while (cap - b->len < more) {
        cap *= 2;
    }
    if (cap == b->cap) {
        return 0;
    }
    data = realloc(b->data, cap);
    if (data == NULL) {
        return -ENOMEM;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_append(struct buf *b, const uint8_t *p, size_t len)
{
    int rv = buf_reserve(b, len);

    if (rv != 0) {
        return rv;
    }
    memcpy(b->data + b->len, p, len);
    b->len += len;
    return 0;
}

/* CPU time. */

static double self_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime + stime of a process, from /proc/PID/stat; -1 if unreadable. */
static double proc_cpu_s(pid_t pid)
{
    char path[64];
    char line[1024];
    unsigned long long utime;
    unsigned long long stime;
    const char *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';

    /* The name in parentheses may hold spaces: fields 3.. follow the last
     * ')'.  utime and stime are fields 14 and 15. */
    p = strrchr(line, ')');
    if (p == NULL || sscanf(p + 1,
                            " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                            "%llu %llu",
                            &utime, &stime) != 2) {
        return -1;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void cpu_sample(const struct options *o, struct cpu_sample *s)
{
    size_t i;

    for (i = 0; i < o->n_pids; i++) {
        s->server_s[i] = proc_cpu_s(o->pids[i]);
    }
    s->self_s = self_cpu_s();
}

/* Whether the NUL-separated command line names addr as a member in its
 * --cluster list ("ID=HOST:PORT,..."). */
static bool cmdline_has_member(const char *args, size_t len, const char *addr)
{
    const char *p = args;
    const char *end = args + len;
    size_t alen = strlen(addr);

    for (; p < end; p += strlen(p) + 1) {
        const char *list = NULL;
        const char *q;

        if (strcmp(p, "--cluster") == 0 && p + strlen(p) + 1 < end) {
            list = p + strlen(p) + 1;
        } else if (strncmp(p, "--cluster=", 10) == 0) {
            list = p + 10;
        }
        for (q = list; q != NULL && (q = strchr(q, '=')) != NULL; q++) {
            if (strncmp(q + 1, addr, alen) == 0 &&
                (q[1 + alen] == ',' || q[1 + alen] == '\0')) {
                return true;
            }
        }
    }
    return false;
}

static bool proc_is_member(pid_t pid, const char *addr)
{
    char path[64];
    char comm[64] = "";
    char args[8192];
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    n = fread(comm, 1, sizeof(comm) - 1, f);
    fclose(f);
    comm[n] = '\0';
    if (strcmp(comm, "ikada-server\n") != 0) {
        return false;
    }
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    n = fread(args, 1, sizeof(args) - 1, f);
    fclose(f);
    args[n] = '\0';
    return cmdline_has_member(args, n, addr);
}

/* The ikada-server processes whose --cluster names addr. */
static void discover_pids(struct options *o, const char *addr)
{
    DIR *d = opendir("/proc");
    struct dirent *e;

    while (d != NULL && (e = readdir(d)) != NULL && o->n_pids < MAX_PIDS) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);

        if (*end == '\0' && pid > 0 && proc_is_member((pid_t)pid, addr)) {
            o->pids[o->n_pids++] = (pid_t)pid;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
}

/* Stopping. */

static void close_conn(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, NULL);
    }
}

/* End the run: close every handle so that uv_run() returns. */
static void stop(struct bench *b, int exit_status)
{
    size_t i;

    if (b->stopping) {
        return;
    }
    b->stopping = true;
    b->exit_status = exit_status;
    for (i = 0; i < b->n_conns; i++) {
        close_conn(&b->conns[i]);
    }
    uv_close((uv_handle_t *)&b->watchdog, NULL);
}

static void fail(struct bench *b, const char *what, int rv)
{
    if (!b->stopping) {
        fprintf(stderr, "ikada: bench: %s: %s\n", what,
                rv <= IKD_ERR_BASE ? ikd_strerror(rv) : uv_strerror(rv));
    }
    stop(b, EXIT_CLUSTER);
}

/* Sending. */

static void write_cb(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = req->data;

    free(w->data);
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        fail(c->b, "write", status);
    }
}

/* Send what c->out holds in one write. */
static void flush(struct conn *c)
{
    struct write_req *w;
    uv_buf_t buf;
    int rv;

    if (c->out.len == 0 || c->b->stopping) {
        return;
    }
    w = malloc(sizeof(*w));
    if (w == NULL) {
        fail(c->b, "write", UV_ENOMEM);
        return;
    }
    w->data = c->out.data;
    w->req.data = c;
    buf = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    c->out = (struct buf){0};
    rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb);
    if (rv != 0) {
        free(w->data);
        free(w);
        fail(c->b, "write", rv);
    }
}

static int queue_msg(struct conn *c, const struct net_msg *m)
{
    uint8_t *frame;
    size_t len;
    int rv;

    rv = net_msg_encode(m, &frame, &len);
    if (rv != 0) {
        return rv;
    }
    rv = buf_append(&c->out, frame, len);
    free(frame);
    return rv;
}

static int encode_put(struct bench *b,
                      struct slot *s,
                      const char *key,
                      uint8_t **out,
                      size_t *len)
{
    struct kv_cmd cmd = {.op = KV_OP_PUT};
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    cmd.session = s->session;
    cmd.seq = ++s->cmd_seq;
    cmd.time_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    /* The server applies its own limit. */
    cmd.max_bytes = UINT64_MAX;
    cmd.path = key;
    cmd.path_len = strlen(key);
    cmd.data = b->value;
    cmd.data_len = b->o->value_bytes;
    return kv_cmd_encode(&cmd, out, len);
}

/* Queue the slot's next request on its connection. */
static int issue(struct bench *b, struct slot *s)
{
    struct net_msg m = {.kind = NET_CLIENT_REQ};
    size_t index = (size_t)(s - b->slots);
    uint8_t *cmd = NULL;
    char key[32];
    int rv;

    snprintf(key, sizeof(key), "bench/%" PRIu64, b->issued % b->o->keys);
    if (b->phase.mix == MIX_PUT) {
        rv = encode_put(b, s, key, &cmd, &m.req.cmd_len);
        if (rv != 0) {
            return rv;
        }
        m.req.op = NET_OP_PROPOSE;
        m.req.cmd = cmd;
    } else {
        m.req.op = b->phase.mix == MIX_GET ? NET_OP_GET : NET_OP_GET_LOCAL;
        m.req.key = key;
        m.req.key_len = strlen(key);
    }
    s->req_id = (++s->n_sent << SLOT_BITS) | index;
    m.req.req_id = s->req_id;
    s->start_ns = uv_hrtime();
    rv = queue_msg(s->conn, &m);
    free(cmd);
    if (rv == 0) {
        s->busy = true;
        b->issued++;
        b->in_flight++;
    }
    return rv;
}

static bool want_more(const struct bench *b)
{
    return !b->stopping && b->issued < b->phase.ops &&
           (b->phase.deadline_ns == 0 || uv_hrtime() < b->phase.deadline_ns);
}

static void start_phase(struct bench *b, const struct phase *p)
{
    size_t i;
    int rv;

    b->phase = *p;
    b->issued = 0;
    b->last_reply_ns = uv_hrtime();
    for (i = 0; i < b->o->clients && want_more(b); i++) {
        rv = issue(b, &b->slots[i]);
        if (rv != 0) {
            fail(b, "encode", rv);
            return;
        }
    }
    for (i = 0; i < b->n_conns; i++) {
        flush(&b->conns[i]);
    }
}

static void end_phase(struct bench *b)
{
    b->end_ns = uv_hrtime();
    cpu_sample(b->o, &b->cpu_after);
    stop(b, b->errors > 0 ? EXIT_CLUSTER : EXIT_OK);
}

/* Receiving. */

static int record_latency(struct bench *b, uint64_t ns)
{
    if (b->n_lat == b->lat_cap) {
        size_t cap = b->lat_cap > 0 ? b->lat_cap * 2 : 65536;
        uint64_t *v = realloc(b->lat_ns, cap * sizeof(*v));

        if (v == NULL) {
            return -ENOMEM;
        }
        b->lat_ns = v;
        b->lat_cap = cap;
    }
    b->lat_ns[b->n_lat++] = ns;
    return 0;
}

/* Count a reply's outcome.  A change of leader ends the run: the figures
 * would mix two configurations. */
static void account(struct bench *b, const struct slot *s, int status)
{
    uint64_t now = uv_hrtime();

    b->last_reply_ns = now;
    if (status == -ENOENT && b->phase.mix != MIX_PUT) {
        b->missing++;
        status = 0;
    }
    if (status != 0) {
        b->errors++;
        if (b->first_error == 0) {
            b->first_error = status;
        }
        if (status == IKD_ENOTLEADER || status == IKD_ENOLEADER ||
            status == IKD_ESHUTDOWN) {
            fail(b, "the leader changed", status);
        }
        return;
    }
    b->done++;
    if (record_latency(b, now - s->start_ns) != 0) {
        fail(b, "latencies", UV_ENOMEM);
    }
}

static void on_reply(struct bench *b, const struct net_client_resp *r)
{
    uint64_t index = r->req_id & ((1u << SLOT_BITS) - 1);
    struct slot *s;
    int rv;

    if (index >= b->o->clients) {
        return;
    }
    s = &b->slots[index];
    if (!s->busy || s->req_id != r->req_id) {
        return;
    }
    s->busy = false;
    b->in_flight--;
    account(b, s, r->status);
    if (want_more(b)) {
        rv = issue(b, s);
        if (rv != 0) {
            fail(b, "encode", rv);
        }
    } else if (b->in_flight == 0 && !b->stopping) {
        end_phase(b);
    }
}

/* Handle every whole frame in c->in and keep the rest. */
static int parse_frames(struct conn *c)
{
    size_t off = 0;

    while (c->in.len - off >= 4 && !c->b->stopping) {
        const uint8_t *h = c->in.data + off;
        size_t len =
            (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        struct net_msg m;

        if (len > IKD_MAX_FRAME_BYTES) {
            return IKD_EMALFORMED;
        }
        if (c->in.len - off - 4 < len) {
            break;
        }
        if (net_msg_decode(h + 4, len, &m) != 0) {
            return IKD_EMALFORMED;
        }
        if (m.kind == NET_CLIENT_RESP) {
            on_reply(c->b, &m.resp);
        }
        net_msg_release(&m);
        off += 4 + len;
    }
    memmove(c->in.data, c->in.data + off, c->in.len - off);
    c->in.len -= off;
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;

    (void)hint;
    if (buf_reserve(&c->in, READ_CHUNK) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)c->in.data + c->in.len,
                       (unsigned)(c->in.cap - c->in.len));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    int rv;

    (void)buf;
    if (nread < 0) {
        fail(c->b, "connection lost", (int)nread);
        return;
    }
    c->in.len += (size_t)nread;
    rv = parse_frames(c);
    if (rv != 0) {
        fail(c->b, "reply", rv);
        return;
    }
    flush(c);
}

/* Connecting. */

static void start_measured(struct bench *b)
{
    struct phase p = {.mix = b->o->mix, .ops = b->o->ops};

    cpu_sample(b->o, &b->cpu_before);
    b->start_ns = uv_hrtime();
    if (b->o->duration_s > 0) {
        p.deadline_ns = b->start_ns + (uint64_t)(b->o->duration_s * 1e9);
    }
    start_phase(b, &p);
    if (b->in_flight == 0 && !b->stopping) {
        end_phase(b);
    }
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct bench *b = c->b;
    struct net_msg hello = {.kind = NET_HELLO};
    int rv;

    if (status < 0) {
        fail(b, "connect", status);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    rv = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rv == 0) {
        rv = queue_msg(c, &hello);
    }
    if (rv != 0) {
        fail(b, "connect", rv);
        return;
    }
    flush(c);
    if (++b->n_connected == b->n_conns) {
        start_measured(b);
    }
}

static void watchdog_cb(uv_timer_t *t)
{
    struct bench *b = t->data;
    uint64_t quiet_ns = uv_hrtime() - b->last_reply_ns;

    if (b->in_flight > 0 && quiet_ns > (uint64_t)b->timeout_ms * 1000000) {
        fail(b, "no reply within the timeout", IKD_ETIMEDOUT);
    }
}

static int start_conns(struct bench *b)
{
    size_t i;
    int rv;

    for (i = 0; i < b->n_conns; i++) {
        struct conn *c = &b->conns[i];

        c->b = b;
        rv = uv_tcp_init(&b->loop, &c->tcp);
        if (rv != 0) {
            return rv;
        }
        c->tcp.data = c;
        c->connect.data = c;
        rv = uv_tcp_connect(&c->connect, &c->tcp,
                            (const struct sockaddr *)&b->addr, connect_cb);
        if (rv != 0) {
            return rv;
        }
    }
    for (i = 0; i < b->o->clients; i++) {
        b->slots[i].conn = &b->conns[i % b->n_conns];
    }
    return 0;
}

/* Finding the node to load. */

static int resolve(const char *text, struct sockaddr_storage *out)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    char host[ADDR_BYTES];
    const char *colon = strrchr(text, ':');
    struct addrinfo *res;
    size_t host_len;

    if (colon == NULL || (size_t)(colon - text) >= sizeof(host)) {
        return -EINVAL;
    }
    host_len = (size_t)(colon - text);
    if (host_len > 2 && text[0] == '[' && text[host_len - 1] == ']') {
        memcpy(host, text + 1, host_len - 2);
        host[host_len - 2] = '\0';
    } else {
        memcpy(host, text, host_len);
        host[host_len] = '\0';
    }
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
        return -EHOSTUNREACH;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* The leader's address as the cluster list names it, waiting for one to be
 * elected until the timeout. */
static int find_leader(const char *cluster,
                       unsigned timeout_ms,
                       char *addr,
                       size_t cap)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000;
    struct ikada_client *c;
    int rv = ikada_client_open(cluster, timeout_ms, &c);

    while (rv == 0 && uv_hrtime() < deadline) {
        struct ikada_node_status *s;
        size_t n;
        size_t i;

        if (ikada_status(c, &s, &n) == 0) {
            for (i = 0; i < n; i++) {
                if (s[i].reachable && strcmp(s[i].role, "leader") == 0) {
                    snprintf(addr, cap, "%s", s[i].addr);
                    free(s);
                    ikada_client_close(c);
                    return 0;
                }
            }
            free(s);
        }
        usleep(100 * 1000);
    }
    ikada_client_close(c);
    return rv != 0 ? rv : IKD_ETIMEDOUT;
}

/* Results. */

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The p-quantile (nearest rank) of sorted v, in milliseconds. */
static double quantile_ms(const uint64_t *v, size_t n, double p)
{
    size_t rank;

    if (n == 0) {
        return 0;
    }
    rank = (size_t)(p * (double)n);
    if ((double)rank < p * (double)n || rank == 0) {
        rank++;
    }
    return (double)v[rank - 1] / 1e6;
}

static void print_cpu(const struct bench *b, double per_op)
{
    const struct options *o = b->o;
    double total = 0;
    size_t i;

    printf("client_cpu_s=%.3f client_cpu_us_per_op=%.1f\n",
           b->cpu_after.self_s - b->cpu_before.self_s,
           (b->cpu_after.self_s - b->cpu_before.self_s) * per_op);
    if (o->n_pids == 0) {
        return;
    }
    printf("server_pids=");
    for (i = 0; i < o->n_pids; i++) {
        double s = b->cpu_after.server_s[i] - b->cpu_before.server_s[i];

        total += s;
        printf("%s%d:%.3f", i > 0 ? "," : "", (int)o->pids[i], s);
    }
    printf("\nserver_cpu_s=%.3f server_cpu_us_per_op=%.1f\n", total,
           total * per_op);
}

static void report(struct bench *b, const char *target)
{
    double elapsed_s = (double)(b->end_ns - b->start_ns) / 1e9;
    double per_op = b->done > 0 ? 1e6 / (double)b->done : 0;

    qsort(b->lat_ns, b->n_lat, sizeof(*b->lat_ns), compare_u64);
    printf(
        "mix=%s clients=%u connections=%zu value_bytes=%zu keys=%u "
        "target=%s\n",
        mix_names[b->o->mix], b->o->clients, b->n_conns, b->o->value_bytes,
        b->o->keys, target);
    printf("errors=%" PRIu64 " missing=%" PRIu64 " elapsed_s=%.3f\n", b->errors,
           b->missing, elapsed_s);
    if (b->first_error != 0) {
        printf("first_error=%s\n", ikd_strerror(b->first_error));
    }
    print_cpu(b, per_op);
    printf("ops=%" PRIu64
           " ops_per_s=%.0f p50_ms=%.3f p99_ms=%.3f "
           "p999_ms=%.3f\n",
           b->done, elapsed_s > 0 ? (double)b->done / elapsed_s : 0,
           quantile_ms(b->lat_ns, b->n_lat, 0.50),
           quantile_ms(b->lat_ns, b->n_lat, 0.99),
           quantile_ms(b->lat_ns, b->n_lat, 0.999));
    fflush(stdout);
}

/* Set-up. */

static int init(struct bench *b, const struct options *o, unsigned timeout_ms)
{
    size_t i;

    b->o = o;
    b->timeout_ms = timeout_ms;
    b->n_conns = o->connections < o->clients ? o->connections : o->clients;
    b->conns = calloc(b->n_conns, sizeof(*b->conns));
    b->slots = calloc(o->clients, sizeof(*b->slots));
    b->value = malloc(o->value_bytes > 0 ? o->value_bytes : 1);
    if (b->conns == NULL || b->slots == NULL || b->value == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < o->value_bytes; i++) {
        b->value[i] = (uint8_t)('a' + i % 26);
    }
    for (i = 0; i < o->clients; i++) {
        uint64_t r = 0;

        if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
            r = uv_hrtime() * 2654435761u + i;
        }
        b->slots[i].session = r | 1; /* 0 means "no session" */
    }
    return 0;
}

static void cleanup(struct bench *b)
{
    size_t i;

    for (i = 0; b->conns != NULL && i < b->n_conns; i++) {
        free(b->conns[i].in.data);
        free(b->conns[i].out.data);
    }
    free(b->conns);
    free(b->slots);
    free(b->value);
    free(b->lat_ns);
}

/* One closed-loop run against target; quiet: no report. */
static int run(const struct options *o,
               unsigned timeout_ms,
               const char *target,
               bool quiet)
{
    struct bench b = {0};
    int rv;

    rv = init(&b, o, timeout_ms);
    if (rv == 0) {
        rv = resolve(target, &b.addr);
    }
    if (rv != 0) {
        fprintf(stderr, "ikada: bench: cannot use %s: %s\n", target,
                strerror(-rv));
        cleanup(&b);
        return EXIT_CLUSTER;
    }
    uv_loop_init(&b.loop);
    uv_timer_init(&b.loop, &b.watchdog);
    b.watchdog.data = &b;
    uv_timer_start(&b.watchdog, watchdog_cb, WATCHDOG_MS, WATCHDOG_MS);
    rv = start_conns(&b);
    if (rv != 0) {
        fail(&b, "connect", rv);
    }
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uv_loop_close(&b.loop);
    if (b.end_ns != 0 && !quiet) {
        report(&b, target);
    } else if (b.exit_status != 0 && b.first_error != 0) {
        /* The writes that fill the keys before a read load failed. */
        fprintf(stderr, "ikada: bench: writing the keys failed: %s\n",
                ikd_strerror(b.first_error));
    }
    cleanup(&b);
    return b.exit_status;
}

/* Options. */

static void usage(FILE *f)
{
    fputs(
        "usage: ikada [--cluster LIST] bench [--clients N] [--ops N]\n"
        "         [--duration-s S] [--value-bytes B]\n"
        "         [--mix put|get|get-local] [--keys K] [--connections C]\n"
        "         [--server-pids PID,...] [--no-preload]\n"
        "  --clients N       requests in flight (default 1)\n"
        "  --ops N           requests of all clients together (default "
        "1000, or no limit with --duration-s)\n"
        "  --duration-s S    stop sending after S seconds\n"
        "  --value-bytes B   size of each put's value (default 64)\n"
        "  --mix M           put, linearizable get (to the leader), or\n"
        "                    get-local (to the first node of the list)\n"
        "  --keys K          keys bench/0 .. bench/K-1 (default 1000)\n"
        "  --connections C   connections the clients share (default 4)\n"
        "  --server-pids L   nodes whose CPU time to report (default: the\n"
        "                    local ikada-server processes of the cluster)\n"
        "  --no-preload      gets: do not write every key first\n"
        "the last line: ops=N ops_per_s=X p50_ms=X p99_ms=X p999_ms=X\n",
        f);
}

static int usage_error(const char *what)
{
    fprintf(stderr, "ikada: bench: %s (see ikada bench --help)\n", what);
    return EXIT_USAGE;
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min ||
        v > max) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_pids(const char *s, struct options *o)
{
    while (*s != '\0') {
        char item[32];
        size_t len = strcspn(s, ",");
        uint64_t pid;

        if (len == 0 || len >= sizeof(item) || o->n_pids == MAX_PIDS) {
            return false;
        }
        memcpy(item, s, len);
        item[len] = '\0';
        if (!parse_u64(item, 1, INT32_MAX, &pid)) {
            return false;
        }
        o->pids[o->n_pids++] = (pid_t)pid;
        s += len + (s[len] == ',');
    }
    return o->n_pids > 0;
}

static bool parse_mix(const char *s, enum mix *out)
{
    size_t i;

    for (i = 0; i < sizeof(mix_names) / sizeof(mix_names[0]); i++) {
        if (strcmp(s, mix_names[i]) == 0) {
            *out = (enum mix)i;
            return true;
        }
    }
    return false;
}

/* One option; returns 0, EXIT_USAGE, or -1 for --help. */
static int parse_one(int opt, const char *arg, struct options *o)
{
    uint64_t v;
    char *end;

    switch (opt) {
        case 'c':
            if (!parse_u64(arg, 1, MAX_CLIENTS, &v)) {
                return usage_error("--clients takes 1 to 65536");
            }
            o->clients = (unsigned)v;
            return 0;
        case 'o':
            if (!parse_u64(arg, 1, UINT64_MAX - 1, &o->ops)) {
                return usage_error("--ops takes a positive count");
            }
            return 0;
        case 'd':
            errno = 0;
            o->duration_s = strtod(arg, &end);
            if (errno != 0 || end == arg || *end != '\0' ||
                !(o->duration_s > 0 && o->duration_s < 1e6)) {
                return usage_error("--duration-s takes positive seconds");
            }
            return 0;
        case 'v':
            if (!parse_u64(arg, 0, IKD_MAX_VALUE_BYTES_LIMIT, &v)) {
                return usage_error("--value-bytes is out of range");
            }
            o->value_bytes = (size_t)v;
            return 0;
        case 'm':
            return parse_mix(arg, &o->mix)
                       ? 0
                       : usage_error("--mix takes put, get or get-local");
        case 'k':
            if (!parse_u64(arg, 1, UINT32_MAX, &v)) {
                return usage_error("--keys takes a positive count");
            }
            o->keys = (unsigned)v;
            return 0;
        case 'n':
            if (!parse_u64(arg, 1, MAX_CONNECTIONS, &v)) {
                return usage_error("--connections takes 1 to 64");
            }
            o->connections = (unsigned)v;
            return 0;
        case 'p':
            return parse_pids(arg, o)
                       ? 0
                       : usage_error("--server-pids takes PID,PID,...");
        case 'P':
            o->preload = false;
            return 0;
        case 'h':
            return -1;
        default:
            return usage_error("unknown or incomplete option");
    }
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"clients", required_argument, NULL, 'c'},
        {"ops", required_argument, NULL, 'o'},
        {"duration-s", required_argument, NULL, 'd'},
        {"value-bytes", required_argument, NULL, 'v'},
        {"mix", required_argument, NULL, 'm'},
        {"keys", required_argument, NULL, 'k'},
        {"connections", required_argument, NULL, 'n'},
        {"server-pids", required_argument, NULL, 'p'},
        {"no-preload", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool ops_given = false;
    int opt;
    int rv;

    *o = (struct options){.clients = 1,
                          .ops = DEFAULT_OPS,
                          .value_bytes = 64,
                          .mix = MIX_PUT,
                          .keys = DEFAULT_KEYS,
                          .connections = DEFAULT_CONNECTIONS,
                          .preload = true};
    optind = 0; /* a fresh scan: the global options were parsed already */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        rv = parse_one(opt, optarg, o);
        if (rv != 0) {
            return rv;
        }
        ops_given |= opt == 'o';
    }
    if (optind < argc) {
        return usage_error("unexpected argument");
    }
    if (o->duration_s > 0 && !ops_given) {
        o->ops = UINT64_MAX;
    }
    return 0;
}

int net_bench_main(const char *cluster,
                   unsigned timeout_ms,
                   int argc,
                   char **argv)
{
    char leader[ADDR_BYTES];
    char target[ADDR_BYTES];
    struct options o;
    int rv;

    rv = parse_options(argc, argv, &o);
    if (rv < 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (rv != 0) {
        return rv;
    }
    rv = find_leader(cluster, timeout_ms, leader, sizeof(leader));
    if (rv != 0) {
        fprintf(stderr, "ikada: bench: no leader within %u ms\n", timeout_ms);
        return rv == -EINVAL ? EXIT_USAGE : EXIT_CLUSTER;
    }
    if (o.n_pids == 0) {
        discover_pids(&o, leader);
    }
    if (o.mix != MIX_PUT && o.preload) {
        struct options puts = o;

        puts.mix = MIX_PUT;
        puts.ops = o.keys;
        puts.duration_s = 0;
        rv = run(&puts, timeout_ms, leader, true);
        if (rv != 0) {
            return rv;
        }
    }
    if (o.mix != MIX_GET_LOCAL) {
        return run(&o, timeout_ms, leader, false);
    }
    snprintf(target, sizeof(target), "%.*s", (int)strcspn(cluster, ","),
             cluster);
    return run(&o, timeout_ms, target, false);
}
