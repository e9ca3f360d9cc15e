/* Read-only inspection of a node's data folder: what `ikada inspect`
 * prints.  Safe while the node runs: the database is opened read only and
 * read in one transaction, so the report is one consistent state. */

#ifndef KV_INSPECT_H
#define KV_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct kv_inspect_opts
{
    /* Print at most this many log entries, the last ones; 0 prints none
     * and SIZE_MAX prints all. */
    size_t max_entries;
};

/* Print to out the hard state, the applied index, the log (each entry
 * decoded as a command), the tables of the state and the result of the
 * integrity checks, for the data folder dir.
 *
 * Returns 0 when every check passed, IKD_ECORRUPT when one failed (each
 * failure is printed as a line starting with "FAIL"), or a negative errno
 * when the folder holds no readable Ikada database (-ENOENT, -EACCES...);
 * in that case *why says what was wrong, in static storage. */
int kv_inspect(const char *dir,
               const struct kv_inspect_opts *opts,
               FILE *out,
               const char **why);

#endif /* KV_INSPECT_H */
