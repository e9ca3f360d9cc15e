/* The logger declared in raft/ikd.h: one line per event on stderr. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "../raft/ikd.h"

int ikd_log_level = IKD_LOG_INFO;
uint32_t ikd_log_node_id;
uint64_t ikd_log_term;

/* A line longer than this is cut and ends in "...": a log line is a
 * summary, never a payload. */
#define LOG_LINE_BYTES 1024

static const char *const level_names[] = {
    [IKD_LOG_ERROR] = "ERROR", [IKD_LOG_WARN] = "WARN",
    [IKD_LOG_INFO] = "INFO",   [IKD_LOG_DEBUG] = "DEBUG",
    [IKD_LOG_TRACE] = "TRACE",
};

int ikd_log_level_parse(const char *name)
{
    int level;

    if (name == NULL) {
        return -1;
    }
    for (level = IKD_LOG_ERROR; level <= IKD_LOG_TRACE; level++) {
        if (strcasecmp(name, level_names[level]) == 0) {
            return level;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        return IKD_LOG_WARN;
    }
    return -1;
}

/* Levels set per module by IKADA_LOG; other modules use default_level. */
#define LOG_MODULES_MAX 8
#define LOG_MODULE_NAME_BYTES 16

struct module_level
{
    char name[LOG_MODULE_NAME_BYTES];
    int level;
};

static int default_level = IKD_LOG_INFO;
static struct module_level module_levels[LOG_MODULES_MAX];
static int n_module_levels;

bool ikd_log_enabled(int level, const char *module)
{
    for (int i = 0; i < n_module_levels; i++) {
        if (strcmp(module_levels[i].name, module) == 0) {
            return level <= module_levels[i].level;
        }
    }
    return level <= default_level;
}

/* One comma-separated item of an IKADA_LOG value: "LEVEL" or
 * "MODULE=LEVEL".  Returns 0 or -1. */
static int configure_item(const char *item,
                          size_t len,
                          int *dflt,
                          struct module_level *mods,
                          int *n_mods)
{
    char buf[64];
    char *eq;
    int level;

    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, item, len);
    buf[len] = '\0';
    eq = strchr(buf, '=');
    level = ikd_log_level_parse(eq != NULL ? eq + 1 : buf);
    if (level < 0) {
        return -1;
    }
    if (eq == NULL) {
        *dflt = level;
        return 0;
    }
    *eq = '\0';
    if (eq == buf || (size_t)(eq - buf) >= LOG_MODULE_NAME_BYTES ||
        *n_mods == LOG_MODULES_MAX) {
        return -1;
    }
    memcpy(mods[*n_mods].name, buf, (size_t)(eq - buf) + 1);
    mods[*n_mods].level = level;
    (*n_mods)++;
    return 0;
}

int ikd_log_configure(const char *spec)
{
    struct module_level mods[LOG_MODULES_MAX];
    int dflt = IKD_LOG_INFO;
    int n_mods = 0;
    int most;

    while (spec != NULL && *spec != '\0') {
        const char *comma = strchr(spec, ',');
        size_t len = comma != NULL ? (size_t)(comma - spec) : strlen(spec);
        if (configure_item(spec, len, &dflt, mods, &n_mods) != 0) {
            return -1;
        }
        spec = comma != NULL ? comma + 1 : NULL;
    }

    most = dflt;
    for (int i = 0; i < n_mods; i++) {
        most = mods[i].level > most ? mods[i].level : most;
    }
    memcpy(module_levels, mods, sizeof(mods));
    n_module_levels = n_mods;
    default_level = dflt;
    ikd_log_level = most;
    return 0;
}

/* "2026-12-03T20:10:50.123Z" into buf. */
static void format_time(char *buf, size_t size)
{
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
}

/* Write all of buf with as few calls as the kernel allows: one, for any
 * line that fits a pipe buffer, so that lines of concurrent writers never
 * interleave. */
static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

void ikd_log_write(int level, const char *module, const char *fmt, ...)
{
    char line[LOG_LINE_BYTES];
    char stamp[64];
    const char *name;
    size_t len;
    va_list ap;
    int n;

    if (level < IKD_LOG_ERROR) {
        level = IKD_LOG_ERROR;
    }
    if (level > IKD_LOG_TRACE) {
        level = IKD_LOG_TRACE;
    }
    name = level_names[level];

    format_time(stamp, sizeof(stamp));
    n = snprintf(line, sizeof(line), "%s %-5s %s n=%u t=%llu ", stamp, name,
                 module, (unsigned)ikd_log_node_id,
                 (unsigned long long)ikd_log_term);
    len = n > 0 && (size_t)n < sizeof(line) / 2 ? (size_t)n : 0;

    va_start(ap, fmt);
    n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n >= sizeof(line) - len) {
        /* Cut: keep room for the marker and the newline. */
        len = sizeof(line) - 5;
        memcpy(line + len, "...", 3);
        len += 3;
    } else if (n > 0) {
        len += (size_t)n;
    }

    line[len++] = '\n';
    write_all(line, len);
}
