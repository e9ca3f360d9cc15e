/* TCP transport on a libuv loop: one listening port for peers and clients,
 * one outgoing connection to each peer, re-established with backoff. */

#ifndef NET_TRANSPORT_H
#define NET_TRANSPORT_H

#include <stdint.h>

#include <uv.h>

#include "msg.h"

struct net_peer
{
    raft_id_t id;
    char host[64];
    uint16_t port;
};

struct net_transport;

struct net_transport_cbs
{
    /* A decoded message arrived on connection conn_id (incoming or
     * outgoing).  from is the node id the connection's HELLO announced, 0
     * for a client (on an outgoing connection, the peer's id).  HELLOs are
     * consumed by the transport and never delivered.  The message and its
     * buffers live until the callback returns; the callback may send, and
     * may stop the transport. */
    void (*msg_cb)(void *ctx,
                   uint64_t conn_id,
                   raft_id_t from,
                   const struct net_msg *m);
    /* Connection conn_id is gone: replies to it are now dropped.  Runs
     * from the loop once the connection's handle is closed, never from
     * inside a call into the transport, and not for connections closed by
     * net_transport_stop(). */
    void (*close_cb)(void *ctx, uint64_t conn_id);
};

/* Listen on the address of self in peers[], and connect to every other
 * peer, binding outgoing sockets to self's host.  A cluster_hash of 0
 * accepts peers of any hash, and any peer accepts it.  Returns 0, -EADDRINUSE,
 * or another negative libuv code; on failure nothing is left open. */
int net_transport_start(uv_loop_t *loop,
                        raft_id_t self,
                        const struct net_peer *peers,
                        size_t n_peers,
                        uint64_t cluster_hash,
                        const struct net_transport_cbs *cbs,
                        void *ctx,
                        struct net_transport **out);

/* Replace the peer list (Raft 4: the configuration changed): links to
 * peers no longer listed, or listed at another address, are closed;
 * new peers are connected.  self in peers is skipped.  Returns 0,
 * IKD_ELIMIT past IKD_MAX_NODES links, or a negative code for an address
 * that does not resolve (the peers before it are in place). */
int net_transport_set_peers(struct net_transport *t,
                            const struct net_peer *peers,
                            size_t n_peers);

/* Queue m on the outgoing connection to peer `to` (m is encoded at once:
 * its buffers may be reused on return); for a peer without a link, on the
 * newest connection it opened to this node, if any.  Returns 0, or -ENOTCONN
 * when that peer is not connected, or IKD_ELIMIT when its send queue is full
 * (the message is dropped either way: Raft resends), or an error of
 * net_msg_encode(). */
int net_send_peer(struct net_transport *t,
                  raft_id_t to,
                  const struct net_msg *m);

/* Queue m on connection conn_id.  0, -ENOTCONN (unknown or closed
 * connection), IKD_ELIMIT (a node's queue is full: dropped), or an error
 * of net_msg_encode().  A client whose queue is full is disconnected and
 * the call returns -ENOTCONN. */
int net_send_conn(struct net_transport *t,
                  uint64_t conn_id,
                  const struct net_msg *m);

/* Close every connection and handle; cb runs from the loop once all are
 * closed, after which t is freed.  No msg_cb or close_cb runs after this
 * call. */
void net_transport_stop(struct net_transport *t,
                        void (*cb)(void *arg),
                        void *arg);

#endif /* NET_TRANSPORT_H */
