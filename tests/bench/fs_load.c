/* fs_load: a closed-loop load generator for a mounted Ikada file system.
 *
 *     fs_load --dir DIR [--clients N] [--ops N] [--duration-s S]
 *             [--bytes B] [--mix create|overwrite|read] [--files K]
 *             [--server-pids PID,...]
 *
 * N threads each do one operation at a time in DIR/fsbench/:
 *   create     a new file per operation: open(O_CREAT|O_EXCL), write,
 *              close;
 *   overwrite  what `echo x > f` does: open(O_WRONLY|O_CREAT|O_TRUNC),
 *              write, close, over files f0 .. fK-1;
 *   read       what `cat f` does: open, read to the end, close.
 * overwrite and read first write every file once, unmeasured.  The
 * latency of an operation covers open to close.  The output ends with the
 * same line as `ikada bench`:
 *     ops=N ops_per_s=X p50_ms=X p99_ms=X p999_ms=X */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 1024
#define MAX_PIDS 16
#define PATH_BYTES 4096

enum mix { MIX_CREATE, MIX_OVERWRITE, MIX_READ };

static const char *const mix_names[] = {"create", "overwrite", "read"};

struct options
{
    const char *dir;
    unsigned clients;
    uint64_t ops; /* UINT64_MAX: until the duration ends */
    double duration_s;
    size_t bytes;
    enum mix mix;
    unsigned files;
    int pids[MAX_PIDS];
    size_t n_pids;
};

/* What all threads share during one phase. */
struct phase
{
    const struct options *o;
    enum mix mix;
    uint64_t ops;
    uint64_t deadline_ns; /* 0: none */
    bool record;
    char base[PATH_BYTES]; /* DIR/fsbench */
    unsigned long nonce;   /* keeps created names apart across runs */
    const char *data;
    atomic_uint_fast64_t next;
    atomic_uint_fast64_t errors;
    atomic_int first_errno;
};

struct worker
{
    pthread_t thread;
    struct phase *p;
    uint64_t *lat_ns;
    size_t n_lat;
    size_t cap;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double proc_cpu_s(int pid)
{
    char path[64];
    char line[1024];
    unsigned long long utime;
    unsigned long long stime;
    const char *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    /* Fields 14 and 15 (utime, stime) follow the name's last ')'. */
    p = strrchr(line, ')');
    if (p == NULL || sscanf(p + 1,
                            " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                            "%llu %llu",
                            &utime, &stime) != 2) {
        return -1;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR) {
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

static int do_write(const struct phase *p, const char *path, int flags)
{
    int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);
    int rv;

    if (fd < 0) {
        return -errno;
    }
    rv = write_all(fd, p->data, p->o->bytes);
    if (close(fd) != 0 && rv == 0) {
        rv = -errno;
    }
    return rv;
}

static int do_read(const char *path)
{
    char buf[65536];
    int fd = open(path, O_RDONLY);
    ssize_t n;
    int rv = 0;

    if (fd < 0) {
        return -errno;
    }
    do {
        n = read(fd, buf, sizeof(buf));
    } while (n > 0 || (n < 0 && errno == EINTR));
    if (n < 0) {
        rv = -errno;
    }
    close(fd);
    return rv;
}

static int do_op(const struct phase *p, uint64_t n)
{
    char path[PATH_BYTES + 64]; /* base, a name and two numbers */

    if (p->mix == MIX_CREATE) {
        snprintf(path, sizeof(path), "%s/c%lu-%" PRIu64, p->base, p->nonce, n);
        return do_write(p, path, O_EXCL);
    }
    snprintf(path, sizeof(path), "%s/f%" PRIu64, p->base, n % p->o->files);
    return p->mix == MIX_READ ? do_read(path) : do_write(p, path, O_TRUNC);
}

static int record(struct worker *w, uint64_t ns)
{
    if (w->n_lat == w->cap) {
        size_t cap = w->cap > 0 ? w->cap * 2 : 4096;
        uint64_t *v = realloc(w->lat_ns, cap * sizeof(*v));

        if (v == NULL) {
            return -ENOMEM;
        }
        w->lat_ns = v;
        w->cap = cap;
    }
    w->lat_ns[w->n_lat++] = ns;
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct phase *p = w->p;

    for (;;) {
        uint64_t n = atomic_fetch_add(&p->next, 1);
        uint64_t start = now_ns();
        int rv;

        if (n >= p->ops || (p->deadline_ns != 0 && start >= p->deadline_ns)) {
            return NULL;
        }
        rv = do_op(p, n);
        if (rv != 0) {
            int none = 0;

            atomic_fetch_add(&p->errors, 1);
            atomic_compare_exchange_strong(&p->first_errno, &none, -rv);
            continue;
        }
        if (p->record && record(w, now_ns() - start) != 0) {
            return NULL;
        }
    }
}

/* Run the phase on every worker and wait for all. */
static int run_phase(struct phase *p, struct worker *w, unsigned n)
{
    unsigned i;

    atomic_store(&p->next, 0);
    for (i = 0; i < n; i++) {
        w[i].p = p;
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "fs_load: cannot start a thread\n");
            exit(1);
        }
    }
    for (i = 0; i < n; i++) {
        pthread_join(w[i].thread, NULL);
    }
    return 0;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static double quantile_ms(const uint64_t *v, size_t n, double q)
{
    size_t rank;

    if (n == 0) {
        return 0;
    }
    rank = (size_t)(q * (double)n);
    if ((double)rank < q * (double)n || rank == 0) {
        rank++;
    }
    return (double)v[rank - 1] / 1e6;
}

static void usage(FILE *f)
{
    fputs(
        "usage: fs_load --dir MOUNT [--clients N] [--ops N] "
        "[--duration-s S]\n"
        "               [--bytes B] [--mix create|overwrite|read] "
        "[--files K]\n"
        "               [--server-pids PID,...]\n",
        f);
}

static void parse_pids(char *s, struct options *o)
{
    char *tok;
    char *save;

    for (tok = strtok_r(s, ",", &save); tok != NULL && o->n_pids < MAX_PIDS;
         tok = strtok_r(NULL, ",", &save)) {
        o->pids[o->n_pids++] = atoi(tok);
    }
}

static void parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"clients", required_argument, NULL, 'c'},
        {"ops", required_argument, NULL, 'o'},
        {"duration-s", required_argument, NULL, 's'},
        {"bytes", required_argument, NULL, 'b'},
        {"mix", required_argument, NULL, 'm'},
        {"files", required_argument, NULL, 'f'},
        {"server-pids", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool ops_given = false;
    int opt;
    size_t i;

    *o = (struct options){.clients = 1,
                          .ops = 1000,
                          .bytes = 2,
                          .mix = MIX_OVERWRITE,
                          .files = 100};
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
            case 'd':
                o->dir = optarg;
                break;
            case 'c':
                o->clients = (unsigned)strtoul(optarg, NULL, 10);
                break;
            case 'o':
                o->ops = strtoull(optarg, NULL, 10);
                ops_given = true;
                break;
            case 's':
                o->duration_s = strtod(optarg, NULL);
                break;
            case 'b':
                o->bytes = strtoul(optarg, NULL, 10);
                break;
            case 'm':
                for (i = 0; i < 3 && strcmp(optarg, mix_names[i]) != 0; i++) {
                }
                o->mix = (enum mix)i;
                break;
            case 'f':
                o->files = (unsigned)strtoul(optarg, NULL, 10);
                break;
            case 'p':
                parse_pids(optarg, o);
                break;
            case 'h':
                usage(stdout);
                exit(0);
            default:
                usage(stderr);
                exit(2);
        }
    }
    if (o->dir == NULL || o->clients < 1 || o->clients > MAX_CLIENTS ||
        o->ops < 1 || o->files < 1 || (unsigned)o->mix > MIX_READ ||
        o->duration_s < 0 || optind < argc) {
        usage(stderr);
        exit(2);
    }
    if (o->duration_s > 0 && !ops_given) {
        o->ops = UINT64_MAX;
    }
}

static void report(const struct options *o,
                   struct worker *w,
                   const struct phase *p,
                   double elapsed_s,
                   double self_s,
                   const double *server_s)
{
    size_t n = 0;
    size_t i;
    uint64_t *all;
    double per_op;
    double total = 0;

    for (i = 0; i < o->clients; i++) {
        n += w[i].n_lat;
    }
    all = malloc((n > 0 ? n : 1) * sizeof(*all));
    if (all == NULL) {
        exit(1);
    }
    for (n = 0, i = 0; i < o->clients; i++) {
        memcpy(all + n, w[i].lat_ns, w[i].n_lat * sizeof(*all));
        n += w[i].n_lat;
    }
    qsort(all, n, sizeof(*all), compare_u64);
    per_op = n > 0 ? 1e6 / (double)n : 0;
    printf("mix=%s clients=%u bytes=%zu files=%u dir=%s\n", mix_names[o->mix],
           o->clients, o->bytes, o->files, o->dir);
    printf("errors=%" PRIuFAST64 " elapsed_s=%.3f\n", atomic_load(&p->errors),
           elapsed_s);
    if (atomic_load(&p->first_errno) != 0) {
        printf("first_error=%s\n", strerror(atomic_load(&p->first_errno)));
    }
    printf("client_cpu_s=%.3f client_cpu_us_per_op=%.1f\n", self_s,
           self_s * per_op);
    if (o->n_pids > 0) {
        printf("server_pids=");
        for (i = 0; i < o->n_pids; i++) {
            total += server_s[i];
            printf("%s%d:%.3f", i > 0 ? "," : "", o->pids[i], server_s[i]);
        }
        printf("\nserver_cpu_s=%.3f server_cpu_us_per_op=%.1f\n", total,
               total * per_op);
    }
    printf("ops=%zu ops_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f\n", n,
           elapsed_s > 0 ? (double)n / elapsed_s : 0, quantile_ms(all, n, 0.50),
           quantile_ms(all, n, 0.99), quantile_ms(all, n, 0.999));
    free(all);
}

int main(int argc, char **argv)
{
    static struct phase p;
    struct options o;
    struct worker *w;
    double server_s[MAX_PIDS];
    double self_s;
    uint64_t start;
    size_t i;
    char *data;

    parse_options(argc, argv, &o);
    w = calloc(o.clients, sizeof(*w));
    data = malloc(o.bytes + 1);
    if (w == NULL || data == NULL) {
        return 1;
    }
    for (i = 0; i < o.bytes; i++) {
        data[i] = (char)(i + 1 == o.bytes ? '\n' : 'x');
    }
    p.o = &o;
    p.data = data;
    p.nonce = (unsigned long)now_ns();
    snprintf(p.base, sizeof(p.base), "%s/fsbench", o.dir);
    if (mkdir(p.base, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fs_load: mkdir %s: %s\n", p.base, strerror(errno));
        return 3;
    }

    if (o.mix != MIX_CREATE) {
        p.mix = MIX_OVERWRITE;
        p.ops = o.files;
        run_phase(&p, w, o.clients);
    }
    p.mix = o.mix;
    p.ops = o.ops;
    p.record = true;
    for (i = 0; i < o.n_pids; i++) {
        server_s[i] = proc_cpu_s(o.pids[i]);
    }
    self_s = self_cpu_s();
    start = now_ns();
    if (o.duration_s > 0) {
        p.deadline_ns = start + (uint64_t)(o.duration_s * 1e9);
    }
    run_phase(&p, w, o.clients);
    for (i = 0; i < o.n_pids; i++) {
        server_s[i] = proc_cpu_s(o.pids[i]) - server_s[i];
    }
    report(&o, w, &p, (double)(now_ns() - start) / 1e9, self_cpu_s() - self_s,
           server_s);
    return atomic_load(&p.errors) > 0 ? 3 : 0;
}
