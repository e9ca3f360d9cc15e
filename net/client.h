/* The Ikada client library: connects to any node of a cluster and follows
 * the leader.  Calls are blocking and bounded by the client's timeout. */

#ifndef IKADA_CLIENT_H
#define IKADA_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ikada_client;

/* cluster: "HOST:PORT,HOST:PORT,...".  No connection is made yet.
 * 0, -EINVAL for a malformed list, -ENOMEM. */
int ikada_client_open(const char *cluster,
                      unsigned timeout_ms,
                      struct ikada_client **out);
void ikada_client_close(struct ikada_client *c);

/* Each returns 0, -ENOENT (get, del: no such key), -EINVAL (invalid key),
 * -EFBIG (value over the cluster's limit), -EISDIR, or IKD_ETIMEDOUT when
 * the cluster did not answer or commit within the timeout. */
int ikada_set(struct ikada_client *c,
              const char *key,
              const void *value,
              size_t len);
/* *value is malloc'd (the caller frees it). */
int ikada_get(struct ikada_client *c,
              const char *key,
              uint8_t **value,
              size_t *len);
/* A possibly stale read from the first node of the list. */
int ikada_get_local(struct ikada_client *c,
                    const char *key,
                    uint8_t **value,
                    size_t *len);
int ikada_del(struct ikada_client *c, const char *key);
/* Compare-and-set: set key to value when it holds exactly the expect_len
 * bytes at expect, or, with expect NULL, when it does not exist.  0 when
 * set, -ECANCELED (KV_CAS_MISMATCH) when the key held something else, or
 * the errors above.  Applied once even when retried. */
int ikada_cas(struct ikada_client *c,
              const char *key,
              const void *expect,
              size_t expect_len,
              const void *value,
              size_t len);
/* The keys under prefix: the key prefix itself and every key in folder
 * prefix ("a" and "a/" both take in "a" and "a/b", never "ab"); every key
 * for "".  *keys is a malloc'd array of malloc'd NUL-terminated keys; free
 * with ikada_keys_free(). */
int ikada_list(struct ikada_client *c,
               const char *prefix,
               char ***keys,
               size_t *n);
void ikada_keys_free(char **keys, size_t n);

struct ikada_node_status
{
    char addr[96]; /* HOST:PORT */
    int reachable; /* 0 when the node did not answer */
    /* The node's id; for one that did not answer, the id the
     * configuration gives its address, 0 when none does. */
    uint32_t id;
    char role[16]; /* "leader", "follower", "candidate" */
    uint64_t term;
    uint64_t commit;
    uint64_t applied;
    uint32_t leader_id; /* 0 when none is known */
    uint64_t snapshot;  /* the latest snapshot point, 0 before one */
};

/* The status of every node: the servers of the latest configuration
 * that a node reports (the leader's when one answers), then the other
 * addresses given to ikada_client_open(), in id order; without any
 * configuration, the addresses given, in their order.  *out is
 * malloc'd. */
int ikada_status(struct ikada_client *c,
                 struct ikada_node_status **out,
                 size_t *n);

/* Move leadership to node target, or with target 0 to the most up-to-date
 * follower, and wait until a node reports that it leads in a newer term.
 * Returns 0 once it moved (also when target already leads), -EINVAL when
 * target is not a member, IKD_ETIMEDOUT when it did not move in time. */
int ikada_transfer(struct ikada_client *c, uint32_t target);

/* The latest configuration as the leader knows it: *text is malloc'd,
 * NUL-terminated, a line a server "ID HOST:PORT voter|learner". */
int ikada_member_list(struct ikada_client *c, char **text);

/* Add server id at addr ("HOST:PORT"), which must run already (ikada-server
 * --join), or remove it.  Returns once the change is committed (an added
 * server is then a voter): 0, also when the configuration already was so;
 * IKD_ECHANGING while another change is in progress; -EINVAL for an id
 * present at another address, a bad address, or the last voter;
 * IKD_ETIMEDOUT when it did not commit in time. */
int ikada_member_change(struct ikada_client *c,
                        bool add,
                        uint32_t id,
                        const char *addr);

#endif /* IKADA_CLIENT_H */
