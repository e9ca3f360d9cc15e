/* The transport and the client library over real sockets on 127.0.0.1:
 * two transports run on a loop thread while the test thread acts as a
 * client.  Every wait is bounded. */

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "../../kv/cmd.h"
#include "../../net/client.h"
#include "../../net/transport.h"

#define HASH 0x1234abcdull
#define WAIT_MS 5000
#define BIG_BYTES ((size_t)5 << 20)

struct fixture
{
    uv_loop_t loop;
    uv_async_t stop_async;
    uv_timer_t poke;
    pthread_t thread;
    struct net_transport *t[2];
    struct net_peer peers[2];
    int stopped;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    int raft_at_2;      /* RAFT messages node 2 received from node 1 */
    int raft_back_at_1; /* replies node 1 received on its link */
    int client_reqs;    /* client requests either node received */
    int closes;         /* close_cb calls */
};

/* A port nobody listens on right now. */
static uint16_t free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void bump(struct fixture *f, int *counter)
{
    pthread_mutex_lock(&f->lock);
    (*counter)++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Wait until *counter reaches want; false after WAIT_MS. */
static int wait_for(struct fixture *f, int *counter, int want)
{
    struct timespec until;
    int ok;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&f->lock);
    while (*counter < want) {
        if (pthread_cond_timedwait(&f->cond, &f->lock, &until) != 0) {
            break;
        }
    }
    ok = *counter >= want;
    pthread_mutex_unlock(&f->lock);
    return ok;
}

/* The leader's view of a proposal: a PUT of "big" must carry BIG_BYTES
 * of 'v'; a DEL finds nothing. */
static int check_proposal(const struct net_client_req *req)
{
    struct kv_cmd cmd;
    size_t i;

    assert_int_equal(kv_cmd_decode(req->cmd, req->cmd_len, &cmd), 0);
    assert_true(cmd.session != 0 && cmd.seq != 0 && cmd.time_ns > 0);
    assert_true(cmd.max_bytes == UINT64_MAX);
    if (cmd.op == KV_OP_DEL) {
        return -ENOENT;
    }
    assert_int_equal(cmd.op, KV_OP_PUT);
    assert_int_equal(cmd.path_len, 3);
    assert_memory_equal(cmd.path, "big", 3);
    assert_int_equal(cmd.data_len, BIG_BYTES);
    for (i = 0; i < BIG_BYTES; i++) {
        if (cmd.data[i] != 'v') {
            return -EIO;
        }
    }
    return 0;
}

static void answer_client(struct fixture *f,
                          int node,
                          uint64_t conn,
                          const struct net_client_req *req)
{
    char addr[80];
    struct net_msg m = {.kind = NET_CLIENT_RESP};

    m.resp.req_id = req->req_id;
    m.resp.id = (raft_id_t)node;
    m.resp.role = node == 2 ? RAFT_LEADER : RAFT_FOLLOWER;
    m.resp.term = 7;
    m.resp.leader_id = 2;
    if (req->op == NET_OP_STATUS) {
        m.resp.commit = 10u + (unsigned)node;
    } else if (node == 1) {
        /* Node 1 does not lead: it names node 2. */
        snprintf(addr, sizeof(addr), "127.0.0.1:%u",
                 (unsigned)f->peers[1].port);
        m.resp.status = IKD_ENOTLEADER;
        m.resp.leader_addr = addr;
        m.resp.leader_addr_len = strlen(addr);
    } else if (req->op == NET_OP_PROPOSE) {
        m.resp.status = check_proposal(req);
        m.resp.value = 64;
    } else if (req->key_len == 7 && memcmp(req->key, "present", 7) == 0) {
        m.resp.data = (const uint8_t *)"val\0ue";
        m.resp.data_len = 6;
    } else {
        m.resp.status = -ENOENT;
    }
    assert_int_equal(net_send_conn(f->t[node - 1], conn, &m), 0);
}

static void on_msg(struct fixture *f,
                   int node,
                   uint64_t conn,
                   raft_id_t from,
                   const struct net_msg *m)
{
    if (m->kind == NET_CLIENT_REQ) {
        assert_int_equal(from, 0);
        answer_client(f, node, conn, &m->req);
        bump(f, &f->client_reqs);
    } else if (m->kind == NET_RAFT && node == 2) {
        struct net_msg reply = {.kind = NET_RAFT};

        assert_int_equal(from, 1);
        assert_int_equal(m->raft.type, RAFT_MSG_VOTE);
        assert_int_equal(m->raft.vote.last_index, 99);
        reply.raft.type = RAFT_MSG_VOTE_RESP;
        reply.raft.from = 2;
        reply.raft.to = 1;
        reply.raft.vote_resp.granted = true;
        /* The reply goes back on the connection the request came on. */
        assert_int_equal(net_send_conn(f->t[1], conn, &reply), 0);
        bump(f, &f->raft_at_2);
    } else if (m->kind == NET_RAFT && node == 1) {
        assert_int_equal(from, 2);
        assert_int_equal(m->raft.type, RAFT_MSG_VOTE_RESP);
        assert_true(m->raft.vote_resp.granted);
        bump(f, &f->raft_back_at_1);
    }
}

static void msg_cb_1(void *ctx,
                     uint64_t conn,
                     raft_id_t from,
                     const struct net_msg *m)
{
    on_msg(ctx, 1, conn, from, m);
}

static void msg_cb_2(void *ctx,
                     uint64_t conn,
                     raft_id_t from,
                     const struct net_msg *m)
{
    on_msg(ctx, 2, conn, from, m);
}

static void close_cb(void *ctx, uint64_t conn)
{
    struct fixture *f = ctx;

    (void)conn;
    bump(f, &f->closes);
}

/* Until node 2 has heard from node 1, keep sending: the link comes up on
 * its own schedule, and a send before that is refused. */
static void poke_cb(uv_timer_t *timer)
{
    struct fixture *f = timer->data;
    struct net_msg m = {.kind = NET_RAFT};
    int rv;

    pthread_mutex_lock(&f->lock);
    rv = f->raft_at_2;
    pthread_mutex_unlock(&f->lock);
    if (rv > 0) {
        uv_timer_stop(timer);
        return;
    }
    m.raft.type = RAFT_MSG_VOTE;
    m.raft.from = 1;
    m.raft.to = 2;
    m.raft.term = 3;
    m.raft.vote.last_index = 99;
    rv = net_send_peer(f->t[0], 2, &m);
    assert_true(rv == 0 || rv == -ENOTCONN);
}

static void stopped_cb(void *arg)
{
    struct fixture *f = arg;

    f->stopped++;
}

static void stop_async_cb(uv_async_t *async)
{
    struct fixture *f = async->data;

    net_transport_stop(f->t[0], stopped_cb, f);
    net_transport_stop(f->t[1], stopped_cb, f);
    uv_close((uv_handle_t *)&f->poke, NULL);
    uv_close((uv_handle_t *)async, NULL);
}

static void *loop_main(void *arg)
{
    struct fixture *f = arg;

    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int setup(void **state)
{
    static const struct net_transport_cbs cbs1 = {msg_cb_1, close_cb};
    static const struct net_transport_cbs cbs2 = {msg_cb_2, close_cb};
    struct fixture *f = calloc(1, sizeof(*f));
    int i;

    assert_non_null(f);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    for (i = 0; i < 2; i++) {
        f->peers[i].id = (raft_id_t)(i + 1);
        strcpy(f->peers[i].host, "127.0.0.1");
        f->peers[i].port = free_port();
    }
    assert_int_equal(
        net_transport_start(&f->loop, 1, f->peers, 2, HASH, &cbs1, f, &f->t[0]),
        0);
    assert_int_equal(
        net_transport_start(&f->loop, 2, f->peers, 2, HASH, &cbs2, f, &f->t[1]),
        0);
    f->stop_async.data = f;
    uv_async_init(&f->loop, &f->stop_async, stop_async_cb);
    f->poke.data = f;
    uv_timer_init(&f->loop, &f->poke);
    uv_timer_start(&f->poke, poke_cb, 0, 20);
    assert_int_equal(pthread_create(&f->thread, NULL, loop_main, f), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    uv_async_send(&f->stop_async);
    pthread_join(f->thread, NULL);
    assert_int_equal(f->stopped, 2);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    free(f);
    return 0;
}

static void test_peers_exchange_raft_messages(void **state)
{
    struct fixture *f = *state;

    assert_true(wait_for(f, &f->raft_at_2, 1));
    assert_true(wait_for(f, &f->raft_back_at_1, 1));
}

static void test_port_in_use_fails_at_start(void **state)
{
    static const struct net_transport_cbs cbs = {msg_cb_1, close_cb};
    struct fixture *f = *state;
    struct net_transport *t = NULL;
    uv_loop_t loop;

    /* On a loop of its own: a failed start must leave it empty. */
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(
        net_transport_start(&loop, 2, f->peers, 2, HASH, &cbs, f, &t),
        -EADDRINUSE);
    assert_null(t);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_client_follows_leader_hint(void **state)
{
    struct fixture *f = *state;
    struct ikada_client *c;
    char cluster[64];
    uint8_t *value;
    size_t len;

    snprintf(cluster, sizeof(cluster), "127.0.0.1:%u",
             (unsigned)f->peers[0].port);
    assert_int_equal(ikada_client_open(cluster, 3000, &c), 0);
    assert_int_equal(ikada_get(c, "present", &value, &len), 0);
    assert_int_equal(len, 6);
    assert_memory_equal(value, "val\0ue", 6);
    free(value);
    assert_int_equal(ikada_get(c, "absent", &value, &len), -ENOENT);
    assert_int_equal(ikada_get(c, "a//b", &value, &len), -EINVAL);
    ikada_client_close(c);
}

/* A value of several read buffers reaches the leader whole. */
static void test_client_set_and_del(void **state)
{
    struct fixture *f = *state;
    struct ikada_client *c;
    char cluster[64];
    uint8_t *value = malloc(BIG_BYTES);

    assert_non_null(value);
    memset(value, 'v', BIG_BYTES);
    snprintf(cluster, sizeof(cluster), "127.0.0.1:%u",
             (unsigned)f->peers[0].port);
    assert_int_equal(ikada_client_open(cluster, 3000, &c), 0);
    assert_int_equal(ikada_set(c, "big", value, BIG_BYTES), 0);
    assert_int_equal(ikada_del(c, "gone"), -ENOENT);
    assert_int_equal(ikada_set(c, "/abs", "x", 1), -EINVAL);
    ikada_client_close(c);
    free(value);
}

static void test_client_times_out_without_cluster(void **state)
{
    struct ikada_client *c;
    char cluster[64];
    uint8_t *value;
    size_t len;
    time_t start = time(NULL);

    (void)state;
    snprintf(cluster, sizeof(cluster), "127.0.0.1:%u", free_port());
    assert_int_equal(ikada_client_open(cluster, 300, &c), 0);
    assert_int_equal(ikada_get(c, "k", &value, &len), IKD_ETIMEDOUT);
    assert_true(time(NULL) - start < 3);
    ikada_client_close(c);
    assert_int_equal(ikada_client_open("nohostport", 300, &c), -EINVAL);
}

static void test_status_flags_unreachable_nodes(void **state)
{
    struct fixture *f = *state;
    struct ikada_node_status *s;
    struct ikada_client *c;
    char cluster[96];
    size_t n;

    snprintf(cluster, sizeof(cluster), "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u",
             (unsigned)f->peers[0].port, (unsigned)f->peers[1].port,
             free_port());
    assert_int_equal(ikada_client_open(cluster, 2000, &c), 0);
    assert_int_equal(ikada_status(c, &s, &n), 0);
    assert_int_equal(n, 3);
    assert_true(s[0].reachable && s[1].reachable && !s[2].reachable);
    assert_int_equal(s[0].id, 1);
    assert_string_equal(s[0].role, "follower");
    assert_string_equal(s[1].role, "leader");
    assert_int_equal(s[1].commit, 12);
    assert_int_equal(s[1].leader_id, 2);
    free(s);
    ikada_client_close(c);
}

/* Connect a raw socket to node 2 and send bytes. */
static int raw_send(struct fixture *f, const void *p, size_t len)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(f->peers[1].port);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(send(fd, p, len, MSG_NOSIGNAL), (ssize_t)len);
    return fd;
}

/* The node closed the connection (rather than the wait running out). */
static void assert_closed_by_peer(int fd)
{
    char b;

    assert_int_equal(recv(fd, &b, 1, 0), 0);
    close(fd);
}

static void send_hello(struct fixture *f, raft_id_t id, uint64_t hash, int *fd)
{
    struct net_msg m = {.kind = NET_HELLO};
    uint8_t *frame;
    size_t len;

    m.hello.node_id = id;
    m.hello.cluster_hash = hash;
    assert_int_equal(net_msg_encode(&m, &frame, &len), 0);
    *fd = raw_send(f, frame, len);
    free(frame);
}

static void test_bad_input_closes_the_connection(void **state)
{
    struct fixture *f = *state;
    static const uint8_t too_long[] = {0xff, 0xff, 0xff, 0xff, 0x90};
    static const uint8_t garbage[] = {0, 0, 0, 3, 0xc1, 0xc1, 0xc1};
    struct net_msg m = {.kind = NET_READ_INDEX};
    uint8_t *frame;
    size_t len;
    int fd;

    assert_closed_by_peer(raw_send(f, too_long, sizeof(too_long)));
    assert_closed_by_peer(raw_send(f, garbage, sizeof(garbage)));

    /* A node from another cluster. */
    send_hello(f, 5, HASH + 1, &fd);
    assert_closed_by_peer(fd);

    /* Anything but HELLO first. */
    assert_int_equal(net_msg_encode(&m, &frame, &len), 0);
    assert_closed_by_peer(raw_send(f, frame, len));
    free(frame);

    /* A client's HELLO is accepted: the connection stays open. */
    send_hello(f, 0, 0, &fd);
    {
        struct timeval tv = {.tv_usec = 200000};
        char b;

        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        assert_int_equal(recv(fd, &b, 1, 0), -1);
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        close(fd);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peers_exchange_raft_messages),
        cmocka_unit_test(test_port_in_use_fails_at_start),
        cmocka_unit_test(test_client_follows_leader_hint),
        cmocka_unit_test(test_client_set_and_del),
        cmocka_unit_test(test_client_times_out_without_cluster),
        cmocka_unit_test(test_status_flags_unreachable_nodes),
        cmocka_unit_test(test_bad_input_closes_the_connection),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
