/* ikada: the command line client.
 *
 * Exit status: 0 done; 1 key not found (get, del); 2 usage, an invalid key
 * or a value over the limit; 3 the cluster did not commit or answer within
 * the timeout, or failed the request. */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kv/inspect.h"
#include "../raft/ikd.h"
#include "bench.h"
#include "client.h"
#include "trace.h"

#define DEFAULT_CLUSTER "127.0.0.1:1111,127.0.0.1:1112,127.0.0.1:1113"
#define DEFAULT_TIMEOUT_MS 5000

enum {
    EXIT_OK = 0,
    EXIT_NOT_FOUND = 1,
    EXIT_USAGE = 2,
    EXIT_CLUSTER = 3,
};

struct options
{
    const char *cluster;
    unsigned timeout_ms;
};

static void usage(FILE *f)
{
    fputs(
        "usage: ikada [--cluster HOST:PORT,...] [--timeout-ms MS] "
        "COMMAND\n"
        "  set KEY VALUE      store VALUE (\"-\" reads standard input)\n"
        "  get KEY            print the value, byte for byte\n"
        "  get --local KEY    a possibly stale read from the first node\n"
        "  del KEY            remove KEY\n"
        "  cas KEY OLD NEW    set KEY to NEW if it holds OLD (exit 1 if "
        "not;\n"
        "                     NEW \"-\" reads standard input)\n"
        "  cas --absent KEY NEW\n"
        "                     set KEY to NEW if it does not exist\n"
        "  ls [PREFIX]        keys under PREFIX (the key PREFIX, or keys in "
        "folder\n"
        "                     PREFIX), one a line, sorted\n"
        "  status             one line a server of the configuration: ID "
        "HOST:PORT\n"
        "                     ROLE TERM COMMIT APPLIED LEADER_ID, or ID "
        "HOST:PORT\n"
        "                     unreachable\n"
        "  inspect [--tail N] DATA_DIR\n"
        "                     a node's hard state, log (the last N entries) "
        "and\n"
        "                     integrity checks, read only; exit 1 when a "
        "check fails\n"
        "  transfer [ID]      move leadership to ID, or to the most "
        "up-to-date follower;\n"
        "                     returns once it moved (exit 2: unknown ID)\n"
        "  member list        a line a server: ID HOST:PORT voter|learner\n"
        "  member add ID HOST:PORT\n"
        "                     add a server started with --join; returns "
        "once it\n"
        "                     is a voter (exit 3: another change in "
        "progress)\n"
        "  member remove ID   remove a server; returns once committed\n"
        "  bench [OPTIONS]    closed-loop load (see ikada bench --help)\n"
        "options:\n"
        "  --cluster LIST     default $IKADA_CLUSTER, else " DEFAULT_CLUSTER
        "\n"
        "  --timeout-ms MS    for the whole command (default 5000)\n"
        "  --help             this text\n"
        "exit status: 0 done, 1 key not found, 2 usage or invalid key or "
        "value too large, 3 no answer or commit within the timeout\n",
        f);
}

static int usage_error(const char *what)
{
    fprintf(stderr, "ikada: %s (see ikada --help)\n", what);
    return EXIT_USAGE;
}

/* Turn a library result into a message and an exit status. */
static int report(int rv, const char *key, const struct options *o)
{
    switch (rv) {
        case 0:
            return EXIT_OK;
        case -ENOENT:
            fprintf(stderr, "ikada: key '%s' not found\n", key);
            return EXIT_NOT_FOUND;
        case -EISDIR:
            fprintf(stderr, "ikada: '%s' is a folder, not a key\n", key);
            return EXIT_NOT_FOUND;
        case -EINVAL:
        case -ENAMETOOLONG:
            fprintf(stderr, "ikada: invalid key '%s'\n", key);
            return EXIT_USAGE;
        case -ENOTDIR:
            fprintf(stderr, "ikada: a parent of '%s' is a key, not a folder\n",
                    key);
            return EXIT_USAGE;
        case -EFBIG:
            fprintf(stderr, "ikada: value for '%s' is over the limit\n", key);
            return EXIT_USAGE;
        case IKD_ETIMEDOUT:
            fprintf(stderr, "ikada: the cluster did not answer within %u ms\n",
                    o->timeout_ms);
            return EXIT_CLUSTER;
        default:
            fprintf(stderr, "ikada: request failed: %s\n", ikd_strerror(rv));
            return EXIT_CLUSTER;
    }
}

/* Read all of standard input, up to one byte past the largest value any
 * cluster accepts (so that a larger one is recognised). */
static int read_stdin(uint8_t **out, size_t *len)
{
    size_t cap = 64 * 1024;
    size_t n = 0;
    uint8_t *buf = malloc(cap);
    int rv = -ENOMEM;

    while (buf != NULL) {
        ssize_t got;

        if (n == cap && cap > IKD_MAX_VALUE_BYTES_LIMIT) {
            rv = -EFBIG;
            break;
        }
        if (n == cap) {
            uint8_t *p = realloc(buf, cap * 2);
            if (p == NULL) {
                break;
            }
            buf = p;
            cap *= 2;
        }
        got = read(STDIN_FILENO, buf + n, cap - n);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            rv = -errno;
            break;
        }
        if (got == 0) {
            *out = buf;
            *len = n;
            return 0;
        }
        n += (size_t)got;
    }
    free(buf);
    return rv;
}

static int cmd_set(struct ikada_client *c,
                   const struct options *o,
                   int argc,
                   char **argv)
{
    uint8_t *value = NULL;
    size_t len = 0;
    int rv;

    if (argc != 3) {
        return usage_error("set takes KEY VALUE");
    }
    if (strcmp(argv[2], "-") == 0) {
        rv = read_stdin(&value, &len);
        if (rv == -EFBIG) {
            return report(rv, argv[1], o);
        }
        if (rv != 0) {
            fprintf(stderr, "ikada: reading standard input: %s\n",
                    strerror(-rv));
            return EXIT_USAGE;
        }
        rv = ikada_set(c, argv[1], value, len);
        free(value);
    } else {
        rv = ikada_set(c, argv[1], argv[2], strlen(argv[2]));
    }
    if (rv == -EISDIR) {
        /* A folder's name cannot hold a value: invalid input, not a key
         * that is missing. */
        fprintf(stderr, "ikada: '%s' is a folder, not a key\n", argv[1]);
        return EXIT_USAGE;
    }
    return report(rv, argv[1], o);
}

static int cmd_get(struct ikada_client *c,
                   const struct options *o,
                   int argc,
                   char **argv)
{
    bool local = argc >= 2 && strcmp(argv[1], "--local") == 0;
    const char *key;
    uint8_t *value;
    size_t len;
    int rv;

    if (argc != (local ? 3 : 2)) {
        return usage_error("get takes [--local] KEY");
    }
    key = argv[local ? 2 : 1];
    rv = local ? ikada_get_local(c, key, &value, &len)
               : ikada_get(c, key, &value, &len);
    if (rv != 0) {
        return report(rv, key, o);
    }
    rv = fwrite(value, 1, len, stdout) == len && fflush(stdout) == 0;
    free(value);
    if (!rv) {
        fprintf(stderr, "ikada: writing standard output: %s\n",
                strerror(errno));
        return EXIT_CLUSTER;
    }
    return EXIT_OK;
}

static int cmd_del(struct ikada_client *c,
                   const struct options *o,
                   int argc,
                   char **argv)
{
    if (argc != 2) {
        return usage_error("del takes KEY");
    }
    return report(ikada_del(c, argv[1]), argv[1], o);
}

static int cmd_cas(struct ikada_client *c,
                   const struct options *o,
                   int argc,
                   char **argv)
{
    bool absent = argc >= 2 && strcmp(argv[1], "--absent") == 0;
    const char *key;
    const char *old;
    int rv;

    if (argc != 4) {
        return usage_error("cas takes KEY OLD NEW, or --absent KEY NEW");
    }
    key = argv[absent ? 2 : 1];
    old = absent ? NULL : argv[2];
    if (strcmp(argv[3], "-") == 0) {
        /* As for set: the new value comes from standard input. */
        uint8_t *value = NULL;
        size_t len = 0;

        rv = read_stdin(&value, &len);
        if (rv == -EFBIG) {
            return report(rv, key, o);
        }
        if (rv != 0) {
            fprintf(stderr, "ikada: reading standard input: %s\n",
                    strerror(-rv));
            return EXIT_USAGE;
        }
        rv = ikada_cas(c, key, old, old != NULL ? strlen(old) : 0, value, len);
        free(value);
    } else {
        rv = ikada_cas(c, key, old, old != NULL ? strlen(old) : 0, argv[3],
                       strlen(argv[3]));
    }
    if (rv == -ECANCELED) {
        fprintf(stderr, "ikada: '%s' did not hold the expected value\n", key);
        return EXIT_NOT_FOUND;
    }
    return report(rv, key, o);
}

static int compare_keys(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_ls(struct ikada_client *c,
                  const struct options *o,
                  int argc,
                  char **argv)
{
    const char *prefix = argc == 2 ? argv[1] : "";
    char **keys;
    size_t n;
    size_t i;
    int rv;

    if (argc > 2) {
        return usage_error("ls takes [PREFIX]");
    }
    rv = ikada_list(c, prefix, &keys, &n);
    if (rv != 0) {
        return report(rv, prefix, o);
    }
    qsort(keys, n, sizeof(*keys), compare_keys);
    for (i = 0; i < n; i++) {
        printf("%s\n", keys[i]);
    }
    ikada_keys_free(keys, n);
    return EXIT_OK; /* main() checks that the output was written */
}

static int cmd_status(struct ikada_client *c, int argc)
{
    struct ikada_node_status *s;
    size_t reachable = 0;
    size_t n;
    size_t i;
    int rv;

    if (argc != 1) {
        return usage_error("status takes no arguments");
    }
    rv = ikada_status(c, &s, &n);
    if (rv != 0) {
        fprintf(stderr, "ikada: status failed: %s\n", ikd_strerror(rv));
        return EXIT_CLUSTER;
    }
    for (i = 0; i < n; i++) {
        reachable += s[i].reachable != 0;
    }
    for (i = 0; i < n; i++) {
        if (!s[i].reachable) {
            /* With no node to tell the configuration, the place in
             * --cluster stands in for the id. */
            printf("%zu %s unreachable\n",
                   reachable == 0 ? i + 1 : (size_t)s[i].id, s[i].addr);
            continue;
        }
        printf("%" PRIu32 " %s %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu32
               "\n",
               s[i].id, s[i].addr, s[i].role, s[i].term, s[i].commit,
               s[i].applied, s[i].leader_id);
    }
    free(s);
    if (reachable == 0) {
        fprintf(stderr, "ikada: no node answered\n");
        return EXIT_CLUSTER;
    }
    return EXIT_OK;
}

/* transfer [ID]: leadership to ID, or to the most up-to-date follower. */
static int cmd_transfer(struct ikada_client *c, int argc, char **argv)
{
    unsigned long id = 0;
    char *end;
    int rv;

    if (argc > 2) {
        return usage_error("transfer takes at most one node id");
    }
    if (argc == 2) {
        errno = 0;
        id = strtoul(argv[1], &end, 10);
        if (errno != 0 || *end != '\0' || end == argv[1] || id == 0 ||
            id > UINT32_MAX || argv[1][0] == '-') {
            return usage_error("transfer takes a node id (1, 2, ...)");
        }
    }
    rv = ikada_transfer(c, (uint32_t)id);
    if (rv == -EINVAL) {
        fprintf(stderr, "ikada: transfer: no member has id %lu\n", id);
        return EXIT_USAGE;
    }
    if (rv != 0) {
        fprintf(stderr, "ikada: transfer failed: %s\n", ikd_strerror(rv));
        return EXIT_CLUSTER;
    }
    return EXIT_OK;
}

/* member list | add ID HOST:PORT | remove ID (Raft 4). */
static int cmd_member(struct ikada_client *c, int argc, char **argv)
{
    unsigned long id = 0;
    char *text = NULL;
    char *end;
    int rv;

    if (argc == 2 && strcmp(argv[1], "list") == 0) {
        rv = ikada_member_list(c, &text);
        if (rv == 0) {
            fputs(text, stdout);
            free(text);
            return EXIT_OK;
        }
    } else {
        bool add = argc == 4 && strcmp(argv[1], "add") == 0;

        if (!add && !(argc == 3 && strcmp(argv[1], "remove") == 0)) {
            return usage_error("member list | add ID HOST:PORT | remove ID");
        }
        errno = 0;
        id = strtoul(argv[2], &end, 10);
        if (errno != 0 || *end != '\0' || end == argv[2] || id == 0 ||
            id > UINT32_MAX || argv[2][0] == '-') {
            return usage_error("member takes a server id (1, 2, ...)");
        }
        rv = ikada_member_change(c, add, (uint32_t)id, add ? argv[3] : NULL);
        if (rv == 0) {
            return EXIT_OK;
        }
    }
    if (rv == -EINVAL) {
        fprintf(stderr,
                "ikada: member: refused: the id is present at another "
                "address, the address is not HOST:PORT, or it is the last "
                "voter\n");
        return EXIT_USAGE;
    }
    if (rv == IKD_ECHANGING) {
        fprintf(stderr,
                "ikada: member: another membership change is in "
                "progress; try again once it is done\n");
        return EXIT_CLUSTER;
    }
    fprintf(stderr, "ikada: member: %s\n", ikd_strerror(rv));
    return EXIT_CLUSTER;
}

/* Global options come before the command; everything after it belongs to
 * the command, so a VALUE that starts with '-' is not taken for one. */
/* inspect [--tail N] DATA_DIR: needs no cluster, only the folder. */
static int cmd_inspect(int argc, char **argv)
{
    struct kv_inspect_opts opts = {.max_entries = SIZE_MAX};
    const char *why = NULL;
    char *end;
    int rv;

    if (argc == 4 && strcmp(argv[1], "--tail") == 0) {
        errno = 0;
        opts.max_entries = (size_t)strtoull(argv[2], &end, 10);
        if (errno != 0 || *end != '\0' || end == argv[2] || argv[2][0] == '-') {
            return usage_error("--tail takes a number of entries");
        }
        argv += 2;
        argc -= 2;
    }
    if (argc != 2) {
        return usage_error("inspect takes [--tail N] DATA_DIR");
    }
    rv = kv_inspect(argv[1], &opts, stdout, &why);
    if (rv == IKD_ECORRUPT) {
        fprintf(stderr, "ikada: %s: integrity checks failed\n", argv[1]);
        return EXIT_NOT_FOUND;
    }
    if (rv != 0) {
        fprintf(stderr, "ikada: %s: %s\n", argv[1], why);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"cluster", required_argument, NULL, 'c'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *env = getenv("IKADA_CLUSTER");
    char *end;
    unsigned long ms;
    int opt;

    o->cluster = env != NULL && env[0] != '\0' ? env : DEFAULT_CLUSTER;
    o->timeout_ms = DEFAULT_TIMEOUT_MS;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        switch (opt) {
            case 'c':
                o->cluster = optarg;
                break;
            case 't':
                errno = 0;
                ms = strtoul(optarg, &end, 10);
                if (errno != 0 || *end != '\0' || end == optarg || ms == 0 ||
                    ms > UINT32_MAX || optarg[0] == '-') {
                    return usage_error("--timeout-ms takes milliseconds");
                }
                o->timeout_ms = (unsigned)ms;
                break;
            case 'h':
                usage(stdout);
                exit(EXIT_OK);
            default:
                return usage_error("unknown or incomplete option");
        }
    }
    return 0;
}

/* Output that could not be written is a failure too, as for get. */
static int check_output(int rv)
{
    if (rv == EXIT_OK && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "ikada: writing standard output: %s\n",
                strerror(errno));
        rv = EXIT_CLUSTER;
    }
    return rv;
}

/* A closed standard stream would be taken by the first socket, and the
 * output meant for it would go to a server: give it /dev/null, read only,
 * so that writing to it fails as it should. */
static void keep_std_fds_taken(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int null = open("/dev/null", O_RDONLY);

            if (null >= 0 && null != fd) {
                close(null); /* a lower one was free after all */
            }
        }
    }
}

int main(int argc, char **argv)
{
    struct ikada_client *c;
    struct options o;
    const char *cmd;
    char **args;
    int n_args;
    int rv;

    keep_std_fds_taken();

    rv = parse_options(argc, argv, &o);
    if (rv != 0) {
        return rv;
    }
    if (optind >= argc) {
        return usage_error("no command");
    }
    cmd = argv[optind];
    args = argv + optind;
    n_args = argc - optind;

    if (strcmp(cmd, "inspect") == 0) {
        return check_output(cmd_inspect(n_args, args));
    }
    if (ikada_client_open(o.cluster, o.timeout_ms, &c) != 0) {
        fprintf(stderr, "ikada: invalid cluster list '%s'\n", o.cluster);
        return EXIT_USAGE;
    }
    const char *why;
    if (ikd_tracer_start("ikada", 0, &why) != 0) {
        fprintf(stderr, "ikada: tracing: %s\n",
                why != NULL ? why : "cannot start");
        ikada_client_close(c);
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "set") == 0) {
        rv = cmd_set(c, &o, n_args, args);
    } else if (strcmp(cmd, "get") == 0) {
        rv = cmd_get(c, &o, n_args, args);
    } else if (strcmp(cmd, "del") == 0) {
        rv = cmd_del(c, &o, n_args, args);
    } else if (strcmp(cmd, "cas") == 0) {
        rv = cmd_cas(c, &o, n_args, args);
    } else if (strcmp(cmd, "ls") == 0) {
        rv = cmd_ls(c, &o, n_args, args);
    } else if (strcmp(cmd, "status") == 0) {
        rv = cmd_status(c, n_args);
    } else if (strcmp(cmd, "transfer") == 0) {
        rv = cmd_transfer(c, n_args, args);
    } else if (strcmp(cmd, "member") == 0) {
        rv = cmd_member(c, n_args, args);
    } else if (strcmp(cmd, "bench") == 0) {
        rv = net_bench_main(o.cluster, o.timeout_ms, n_args, args);
    } else {
        fprintf(stderr, "ikada: unknown command '%s' (see ikada --help)\n",
                cmd);
        rv = EXIT_USAGE;
    }
    ikada_client_close(c);
    ikd_tracer_stop();
    return check_output(rv);
}
