/* `ikada bench`: a closed-loop load generator over the native protocol.
 *
 * N clients each keep one request in flight, multiplexed over a few
 * connections by one libuv loop, so that the generator costs little CPU
 * next to the nodes it measures.  Keys are bench/0 .. bench/K-1. */

#ifndef NET_BENCH_H
#define NET_BENCH_H

/* Run the bench command.  cluster is "HOST:PORT,..." (puts and
 * linearizable gets go to its leader, local gets to its first node);
 * timeout_ms bounds finding the leader and the wait for any one reply.
 * argv[0] is "bench", the rest are its options (see the usage text).
 * Prints a summary whose last line is
 *     ops=N ops_per_s=X p50_ms=X p99_ms=X p999_ms=X
 * Returns the exit status: 0 done, 2 usage, 3 the cluster failed requests
 * or stopped answering. */
int net_bench_main(const char *cluster,
                   unsigned timeout_ms,
                   int argc,
                   char **argv);

#endif /* NET_BENCH_H */
