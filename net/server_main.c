/* ikada-server: one node of an Ikada cluster, with its file system. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "../fs/fs.h"
#include "../kv/store.h"
#include "http.h"
#include "node.h"

#define EXIT_USAGE 2
#define DEFAULT_REQUEST_TIMEOUT_MS 5000
#define DEFAULT_SNAPSHOT_THRESHOLD 10000
#define DEFAULT_SNAPSHOT_TRAILING 2000
#define DEFAULT_SNAPSHOT_BYTES (64ull << 20)
#define MIN_SNAPSHOT_BYTES (1ull << 20)

static const char usage_text[] =
    "usage: ikada-server --id N --cluster 1=HOST:PORT,2=HOST:PORT,...\n"
    "                    --data DIR [--mount DIR]\n"
    "       ikada-server --id N --listen HOST:PORT --join HOST:PORT[,...]\n"
    "                    --data DIR [--mount DIR]\n"
    "                    [--recover]\n"
    "                    [--election-timeout-ms MS] [--heartbeat-ms MS]\n"
    "                    [--max-value-bytes N]\n"
    "                    [--mount-reads linearizable|local]\n"
    "                    [--metrics-addr HOST:PORT]\n"
    "                    [--snapshot-threshold N] [--snapshot-trailing N]\n"
    "                    [--snapshot-bytes N]\n"
    "\n"
    "Runs node N of an Ikada cluster.  It serves peers and clients on its\n"
    "own address in --cluster, keeps all durable state in --data, and\n"
    "mounts the replicated file system at --mount.\n"
    "\n"
    "  --id N                   this node's id, listed in --cluster\n"
    "  --cluster LIST           every node as ID=HOST:PORT, comma-separated\n"
    "                           (used on the first start; the configuration\n"
    "                           is stored and changes with ikada member)\n"
    "  --listen HOST:PORT       this node's address, for a node that joins\n"
    "  --join LIST              HOST:PORT of members of the cluster to join;\n"
    "                           the node waits until ikada member add adds\n"
    "                           it, and learns the configuration from the\n"
    "                           leader\n"
    "  --recover                after a majority was lost for good: become a\n"
    "                           cluster of one from this node's own state\n"
    "                           (see README)\n"
    "  --data DIR               durable state (created if missing)\n"
    "  --mount DIR              where to mount the file system\n"
    "  --election-timeout-ms MS election timeout (default 1000)\n"
    "  --heartbeat-ms MS        heartbeat interval (default 100)\n"
    "  --max-value-bytes N      largest value or file (default 4194304)\n"
    "  --mount-reads MODE       linearizable (default) or local: reads\n"
    "                           through the mount skip the leader round\n"
    "                           and may return stale data\n"
    "  --metrics-addr HOST:PORT serve Prometheus metrics over HTTP at\n"
    "                           http://HOST:PORT/metrics\n"
    "  --snapshot-threshold N   compact the log after N applied entries\n"
    "                           (default 10000)\n"
    "  --snapshot-trailing N    entries kept behind the snapshot point for\n"
    "                           followers a little behind (default 2000)\n"
    "  --snapshot-bytes N       also compact once the log holds N bytes,\n"
    "                           keeping at most N/4 of them behind the\n"
    "                           snapshot point (default 67108864)\n"
    "  --help                   this text\n"
    "\n"
    "IKADA_LOG sets the log level: error, warn, info (default), debug,\n"
    "trace, for all modules and per module (raft, node, net, fs, server):\n"
    "IKADA_LOG=info,raft=debug.  SIGTERM or SIGINT stops the node cleanly.\n"
    "\n"
    "With OTEL_EXPORTER_OTLP_ENDPOINT set, spans go to that collector over\n"
    "OTLP/HTTP; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,\n"
    "OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_HEADERS and\n"
    "OTEL_SDK_DISABLED are honoured.\n";

struct server
{
    uv_loop_t *loop;
    struct node_config cfg;
    const char *mount_dir;
    bool mount_reads_local;
    const char *metrics_arg;
    const char *listen_arg;
    const char *join_arg;
    struct net_peer metrics_addr; /* id unused; port 0 when not serving */
    struct node *node;
    struct ikd_http *http;
    struct fs *fs;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    bool stopping;
};

static void die_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void die_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("ikada-server: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_USAGE);
}

static unsigned long long parse_number(const char *flag,
                                       const char *s,
                                       unsigned long long min,
                                       unsigned long long max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min ||
        v > max) {
        die_usage("%s: '%s' is not a number from %llu to %llu", flag, s, min,
                  max);
    }
    return v;
}

static void parse_peer(const char *item, struct net_peer *p)
{
    const char *eq = strchr(item, '=');
    const char *colon = strrchr(item, ':');
    if (eq == NULL || colon == NULL || colon < eq || colon == eq + 1) {
        die_usage("--cluster: '%s' is not ID=HOST:PORT", item);
    }
    char id[16];
    size_t id_len = (size_t)(eq - item);
    if (id_len == 0 || id_len >= sizeof(id)) {
        die_usage("--cluster: '%s' has no valid id", item);
    }
    memcpy(id, item, id_len);
    id[id_len] = 0;
    p->id = (raft_id_t)parse_number("--cluster id", id, 1, UINT32_MAX);
    size_t host_len = (size_t)(colon - eq - 1);
    if (host_len >= sizeof(p->host)) {
        die_usage("--cluster: host in '%s' is too long", item);
    }
    memcpy(p->host, eq + 1, host_len);
    p->host[host_len] = 0;
    struct in_addr addr;
    if (inet_pton(AF_INET, p->host, &addr) != 1) {
        die_usage("--cluster: '%s' is not an IPv4 address", p->host);
    }
    p->port = (uint16_t)parse_number("--cluster port", colon + 1, 1, 65535);
}

/* --metrics-addr HOST:PORT, HOST a numeric IPv4 address. */
static void parse_metrics_addr(const char *arg, struct net_peer *p)
{
    const char *colon = strrchr(arg, ':');
    struct in_addr addr;
    size_t host_len;

    if (colon == NULL || colon == arg) {
        die_usage("--metrics-addr: '%s' is not HOST:PORT", arg);
    }
    host_len = (size_t)(colon - arg);
    if (host_len >= sizeof(p->host)) {
        die_usage("--metrics-addr: host in '%s' is too long", arg);
    }
    memcpy(p->host, arg, host_len);
    p->host[host_len] = 0;
    if (inet_pton(AF_INET, p->host, &addr) != 1) {
        die_usage("--metrics-addr: '%s' is not an IPv4 address", p->host);
    }
    p->port =
        (uint16_t)parse_number("--metrics-addr port", colon + 1, 1, 65535);
}

/* --listen HOST:PORT and --join HOST:PORT,...: this node alone in the
 * peer list; the join list is checked, and the leader's log brings the
 * configuration. */
static void parse_listen(struct server *s)
{
    char item[128];
    struct net_peer p;
    const char *at;

    if (s->join_arg == NULL && !s->cfg.recover) {
        die_usage("--listen needs --join (or --recover)");
    }
    if (strlen(s->listen_arg) + 16 >= sizeof(item)) {
        die_usage("--listen: '%s' is too long", s->listen_arg);
    }
    snprintf(item, sizeof(item), "%u=%s", s->cfg.id, s->listen_arg);
    parse_peer(item, &s->cfg.peers[0]);
    s->cfg.n_peers = 1;
    s->cfg.join = s->join_arg != NULL;
    for (at = s->join_arg; at != NULL && *at != 0;) {
        const char *comma = strchr(at, ',');
        size_t len = comma != NULL ? (size_t)(comma - at) : strlen(at);

        if (len == 0 || len + 4 >= sizeof(item)) {
            die_usage("--join: '%s' is not a list of HOST:PORT", s->join_arg);
        }
        snprintf(item, sizeof(item), "1=%.*s", (int)len, at);
        parse_peer(item, &p);
        at = comma != NULL ? comma + 1 : NULL;
    }
}

static void parse_cluster(const char *list, struct node_config *cfg)
{
    char *copy = strdup(list);
    char *save = NULL;
    if (copy == NULL) {
        die_usage("out of memory");
    }
    for (char *item = strtok_r(copy, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        if (cfg->n_peers == IKD_MAX_NODES) {
            die_usage("--cluster: more than %d nodes", IKD_MAX_NODES);
        }
        struct net_peer *p = &cfg->peers[cfg->n_peers];
        parse_peer(item, p);
        for (size_t i = 0; i < cfg->n_peers; i++) {
            if (cfg->peers[i].id == p->id) {
                die_usage("--cluster: id %u appears twice", p->id);
            }
        }
        cfg->n_peers++;
    }
    free(copy);
    if (cfg->n_peers == 0) {
        die_usage("--cluster: no nodes given");
    }
}

enum {
    OPT_ID = 1,
    OPT_CLUSTER,
    OPT_DATA,
    OPT_MOUNT,
    OPT_ELECTION,
    OPT_HEARTBEAT,
    OPT_MAX_VALUE,
    OPT_MOUNT_READS,
    OPT_METRICS_ADDR,
    OPT_SNAP_THRESHOLD,
    OPT_SNAP_TRAILING,
    OPT_SNAP_BYTES,
    OPT_LISTEN,
    OPT_JOIN,
    OPT_RECOVER,
    OPT_HELP,
};

static const struct option long_options[] = {
    {"id", required_argument, NULL, OPT_ID},
    {"cluster", required_argument, NULL, OPT_CLUSTER},
    {"data", required_argument, NULL, OPT_DATA},
    {"mount", required_argument, NULL, OPT_MOUNT},
    {"election-timeout-ms", required_argument, NULL, OPT_ELECTION},
    {"heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT},
    {"max-value-bytes", required_argument, NULL, OPT_MAX_VALUE},
    {"mount-reads", required_argument, NULL, OPT_MOUNT_READS},
    {"metrics-addr", required_argument, NULL, OPT_METRICS_ADDR},
    {"snapshot-threshold", required_argument, NULL, OPT_SNAP_THRESHOLD},
    {"snapshot-trailing", required_argument, NULL, OPT_SNAP_TRAILING},
    {"snapshot-bytes", required_argument, NULL, OPT_SNAP_BYTES},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"join", required_argument, NULL, OPT_JOIN},
    {"recover", no_argument, NULL, OPT_RECOVER},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static void apply_option(struct server *s,
                         int opt,
                         const char *arg,
                         const char **cluster)
{
    switch (opt) {
        case OPT_LISTEN:
            s->listen_arg = arg;
            break;
        case OPT_JOIN:
            s->join_arg = arg;
            break;
        case OPT_RECOVER:
            s->cfg.recover = true;
            break;
        case OPT_ID:
            s->cfg.id = (raft_id_t)parse_number("--id", arg, 1, UINT32_MAX);
            break;
        case OPT_CLUSTER:
            *cluster = arg;
            break;
        case OPT_DATA:
            s->cfg.data_dir = arg;
            break;
        case OPT_MOUNT:
            s->mount_dir = arg;
            break;
        case OPT_ELECTION:
            s->cfg.election_timeout_ms = (unsigned)parse_number(
                "--election-timeout-ms", arg, 10, 600000);
            break;
        case OPT_HEARTBEAT:
            s->cfg.heartbeat_ms =
                (unsigned)parse_number("--heartbeat-ms", arg, 1, 60000);
            break;
        case OPT_MAX_VALUE:
            s->cfg.max_value_bytes = parse_number("--max-value-bytes", arg, 1,
                                                  IKD_MAX_VALUE_BYTES_LIMIT);
            break;
        case OPT_MOUNT_READS:
            if (strcmp(arg, "local") != 0 && strcmp(arg, "linearizable") != 0) {
                die_usage("--mount-reads: '%s' is not linearizable or local",
                          arg);
            }
            s->mount_reads_local = strcmp(arg, "local") == 0;
            break;
        case OPT_METRICS_ADDR:
            s->metrics_arg = arg;
            break;
        case OPT_SNAP_THRESHOLD:
            s->cfg.snapshot_threshold =
                parse_number("--snapshot-threshold", arg, 1, UINT32_MAX);
            break;
        case OPT_SNAP_TRAILING:
            s->cfg.snapshot_trailing =
                parse_number("--snapshot-trailing", arg, 0, UINT32_MAX);
            break;
        case OPT_SNAP_BYTES:
            s->cfg.snapshot_bytes = parse_number(
                "--snapshot-bytes", arg, MIN_SNAPSHOT_BYTES, UINT64_MAX / 2);
            break;
        case OPT_HELP:
            fputs(usage_text, stdout);
            exit(0);
        default:
            die_usage("unknown option (see --help)");
    }
}

static void parse_args(struct server *s, int argc, char **argv)
{
    const char *cluster = NULL;
    s->cfg.election_timeout_ms = 1000;
    s->cfg.heartbeat_ms = 100;
    s->cfg.max_value_bytes = IKD_DEFAULT_MAX_VALUE_BYTES;
    s->cfg.request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
    s->cfg.snapshot_threshold = DEFAULT_SNAPSHOT_THRESHOLD;
    s->cfg.snapshot_trailing = DEFAULT_SNAPSHOT_TRAILING;
    s->cfg.snapshot_bytes = DEFAULT_SNAPSHOT_BYTES;

    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (opt == '?') {
            die_usage("unknown option or missing value: '%s' (see --help)",
                      argv[optind - 1]);
        }
        apply_option(s, opt, optarg, &cluster);
    }
    if (optind < argc) {
        die_usage("unexpected argument '%s' (see --help)", argv[optind]);
    }
    if (s->cfg.id == 0 || s->cfg.data_dir == NULL ||
        (cluster == NULL) == (s->listen_arg == NULL)) {
        die_usage(
            "--id, --data and one of --cluster or --listen are "
            "required (see --help)");
    }
    if (cluster != NULL) {
        parse_cluster(cluster, &s->cfg);
    } else {
        parse_listen(s);
    }
    bool listed = false;
    for (size_t i = 0; i < s->cfg.n_peers; i++) {
        listed = listed || s->cfg.peers[i].id == s->cfg.id;
    }
    if (!listed) {
        die_usage("--id %u is not in --cluster", s->cfg.id);
    }
    if (s->cfg.heartbeat_ms * 2 > s->cfg.election_timeout_ms) {
        die_usage("--heartbeat-ms must be at most half the election timeout");
    }
    if (s->metrics_arg != NULL) {
        parse_metrics_addr(s->metrics_arg, &s->metrics_addr);
    }
}

static const struct net_peer *self_peer(const struct node_config *cfg)
{
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (cfg->peers[i].id == cfg->id) {
            return &cfg->peers[i];
        }
    }
    return NULL;
}

/* Refuse a port that another process holds before anything is written;
 * what names the flag that gave it. */
static void check_port(const struct net_peer *self, const char *what)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        die_usage("cannot create a socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(self->port)};
    inet_pton(AF_INET, self->host, &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int err = errno;
        close(fd);
        die_usage("%s: cannot listen on %s:%u: %s", what, self->host,
                  self->port,
                  err == EADDRINUSE ? "the port is in use" : strerror(err));
    }
    close(fd);
}

/* The data folder must be a usable folder; an existing database must
 * belong to this node id.  Checked without writing anything. */
/* Check the data folder when it exists (true), else create it if told to
 * (false). */
static bool check_data_dir(const struct node_config *cfg, bool create)
{
    struct stat st;
    if (stat(cfg->data_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            die_usage("--data %s is not a folder", cfg->data_dir);
        }
        if (access(cfg->data_dir, R_OK | W_OK | X_OK) != 0) {
            die_usage("--data %s is not writable: %s", cfg->data_dir,
                      strerror(errno));
        }
        return true;
    }
    if (errno != ENOENT) {
        die_usage("--data %s: %s", cfg->data_dir, strerror(errno));
    }
    if (create && mkdir(cfg->data_dir, 0755) != 0) {
        die_usage("cannot create --data %s: %s", cfg->data_dir,
                  strerror(errno));
    }
    return false;
}

/* Hold an exclusive lock on the data folder for the life of the process:
 * two servers on one folder would each write their own log into the same
 * files.  The lock goes with the process, however it ends. */
static void lock_data_dir(const struct node_config *cfg)
{
    int fd = open(cfg->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0) {
        die_usage("--data %s: %s", cfg->data_dir, strerror(errno));
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            die_usage("--data %s is in use by another running server",
                      cfg->data_dir);
        }
        die_usage("--data %s cannot be locked: %s", cfg->data_dir,
                  strerror(errno));
    }
    /* fd stays open until exit. */
}

static void fs_unmounted_cb(void *arg);
static void node_stopped_cb(void *arg);

static void shutdown_server(struct server *s)
{
    if (s->stopping) {
        return;
    }
    s->stopping = true;
    IKD_INFO("server", "stop requested -> unmount and shut down");
    if (s->http != NULL) {
        ikd_http_stop(s->http);
        s->http = NULL;
    }
    if (s->fs != NULL) {
        fs_unmount(s->fs, fs_unmounted_cb, s);
    } else {
        fs_unmounted_cb(s);
    }
}

static void fs_unmounted_cb(void *arg)
{
    struct server *s = arg;
    s->fs = NULL;
    node_stop(s->node, node_stopped_cb, s);
}

static void node_stopped_cb(void *arg)
{
    struct server *s = arg;
    s->node = NULL;
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    (void)signum;
    shutdown_server(h->data);
}

static void log_start(const struct server *s)
{
    const struct net_peer *self = self_peer(&s->cfg);
    IKD_INFO("server",
             "starting id=%u addr=%s:%u nodes=%zu data=%s mount=%s "
             "election_timeout_ms=%u heartbeat_ms=%u max_value_bytes=%llu "
             "snapshot_threshold=%llu snapshot_trailing=%llu "
             "snapshot_bytes=%llu",
             s->cfg.id, self->host, self->port, s->cfg.n_peers, s->cfg.data_dir,
             s->mount_dir ? s->mount_dir : "-", s->cfg.election_timeout_ms,
             s->cfg.heartbeat_ms, (unsigned long long)s->cfg.max_value_bytes,
             (unsigned long long)s->cfg.snapshot_threshold,
             (unsigned long long)s->cfg.snapshot_trailing,
             (unsigned long long)s->cfg.snapshot_bytes);
}

static void metrics_render_cb(void *arg, struct ikd_buf *out)
{
    struct server *s = arg;

    if (s->node != NULL) {
        node_metrics_render(s->node, out);
    }
}

static int start_server(struct server *s)
{
    int rv = node_start(s->loop, &s->cfg, &s->node);
    if (rv != 0) {
        return rv;
    }
    log_start(s);
    if (ikd_tracer_enabled()) {
        IKD_INFO("server", "tracing on -> spans to %s", ikd_tracer_url());
    }
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, signal_cb, SIGTERM);
    uv_signal_start(&s->sigint, signal_cb, SIGINT);
    if (s->metrics_addr.port != 0) {
        rv = ikd_http_start(s->loop, s->metrics_addr.host, s->metrics_addr.port,
                            metrics_render_cb, s, &s->http);
        if (rv != 0) {
            IKD_ERROR("server", "cannot serve metrics on %s:%u: %s -> exit",
                      s->metrics_addr.host, s->metrics_addr.port,
                      ikd_strerror(rv));
            shutdown_server(s);
            return 1;
        }
        IKD_INFO("server", "metrics at http://%s:%u/metrics",
                 s->metrics_addr.host, s->metrics_addr.port);
    }
    if (s->mount_dir != NULL) {
        rv = fs_mount(s->loop, s->node, s->mount_dir, &s->fs);
        if (rv != 0) {
            IKD_ERROR("server", "cannot mount %s: %s -> exit", s->mount_dir,
                      ikd_strerror(rv));
            shutdown_server(s);
            return 1;
        }
        fs_set_local_reads(s->fs, s->mount_reads_local);
        IKD_INFO("server", "mounted at %s", s->mount_dir);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct server s = {0};
    const char *level = getenv("IKADA_LOG");
    if (level != NULL && ikd_log_configure(level) != 0) {
        die_usage(
            "IKADA_LOG=%s is not LEVEL[,MODULE=LEVEL...] with LEVEL "
            "error, warn, info, debug or trace",
            level);
    }
    parse_args(&s, argc, argv);
    check_port(self_peer(&s.cfg), "--cluster");
    if (s.metrics_addr.port != 0) {
        check_port(&s.metrics_addr, "--metrics-addr");
    }
    /* A data folder in use is refused before the mount point is touched
     * (a dead mount cleared, a folder made); a new one is only made once
     * the mount point proved usable. */
    bool data_exists = check_data_dir(&s.cfg, false);
    if (data_exists) {
        lock_data_dir(&s.cfg);
    }
    if (s.mount_dir != NULL) {
        int rv = fs_prepare(s.mount_dir);
        if (rv == IKD_EMOUNTED) {
            die_usage("--mount %s is the mount of a running server",
                      s.mount_dir);
        }
        if (rv != 0) {
            die_usage("--mount %s cannot be used: %s", s.mount_dir,
                      ikd_strerror(rv));
        }
    }
    if (!data_exists) {
        check_data_dir(&s.cfg, true);
        lock_data_dir(&s.cfg);
    }
    ikd_log_node_id = s.cfg.id;
    signal(SIGPIPE, SIG_IGN);
    const char *why;
    if (ikd_tracer_start("ikada-server", s.cfg.id, &why) != 0) {
        die_usage("tracing: %s", why != NULL ? why : "cannot start");
    }

    s.loop = uv_default_loop();
    int rv = start_server(&s);
    if (rv < 0) {
        /* Nothing was started: a node id mismatch, a port taken since the
         * check, or storage that cannot be opened. */
        if (rv == IKD_ENODEID) {
            die_usage("--data %s belongs to another node id", s.cfg.data_dir);
        }
        die_usage("cannot start with --data %s: %s", s.cfg.data_dir,
                  ikd_strerror(rv));
    }
    uv_run(s.loop, UV_RUN_DEFAULT);
    ikd_tracer_stop();
    int close_rv = uv_loop_close(s.loop);
    if (close_rv != 0) {
        IKD_WARN("server", "loop closed with handles open: %s",
                 uv_strerror(close_rv));
    }
    IKD_INFO("server", "stopped");
    return rv == 0 ? 0 : 1;
}
