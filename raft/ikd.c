/* Shared error table and role names. */

#include "ikd.h"

#include <errno.h>
#include <string.h>

#include "raft.h"

/* Negative errno values, from libc or libuv, lie above -IKD_MAX_ERRNO
 * (the kernel's own bound); Ikada's codes lie far below it. */
#define IKD_MAX_ERRNO 4096

_Static_assert(IKD_ERR_BASE < -IKD_MAX_ERRNO && IKD_ERR_END < -IKD_MAX_ERRNO,
               "Ikada codes must not overlap negative errno values");

/* One row per Ikada code, in the order of the enum in ikd.h. */
struct ikd_err_info
{
    int code;
    const char *name;
    const char *message;
};

static const struct ikd_err_info ikd_errors[] = {
    {IKD_ENOTLEADER, "ENOTLEADER", "this node is not the leader"},
    {IKD_ESTALE, "ESTALE", "message from an old term"},
    {IKD_EMALFORMED, "EMALFORMED", "malformed message or command"},
    {IKD_ECORRUPT, "ECORRUPT", "durable data failed a check"},
    {IKD_ELIMIT, "ELIMIT", "a configured limit was exceeded"},
    {IKD_ESHUTDOWN, "ESHUTDOWN", "the node is shutting down"},
    {IKD_ENOLEADER, "ENOLEADER", "no leader is known"},
    {IKD_ETIMEDOUT, "ETIMEDOUT", "no outcome within the deadline"},
    {IKD_ELOST, "ELOST", "the request was overwritten by a newer leader"},
    {IKD_EVERSION, "EVERSION", "the peer speaks another protocol version"},
    {IKD_ENODEID, "ENODEID", "the data folder belongs to another node id"},
    {IKD_EBUSY, "EBUSY",
     "the leader is busy: too much uncommitted or leadership moving"},
    {IKD_ECHANGING, "ECHANGING", "another membership change is in progress"},
    {IKD_EMOUNTED, "EMOUNTED", "the mount point is a running server's"},
};

_Static_assert(sizeof(ikd_errors) / sizeof(ikd_errors[0]) ==
                   (size_t)(IKD_ERR_END - IKD_ERR_BASE),
               "every Ikada error code needs a row in the table");

static const struct ikd_err_info *ikd_err_lookup(int rv)
{
    size_t i;

    if (rv < IKD_ERR_BASE || rv >= IKD_ERR_END) {
        return NULL;
    }
    i = (size_t)(rv - IKD_ERR_BASE);
    /* The table is in enum order; the check keeps a misordered row from
     * going unnoticed. */
    if (ikd_errors[i].code != rv) {
        return NULL;
    }
    return &ikd_errors[i];
}

const char *ikd_strerror(int rv)
{
    const struct ikd_err_info *info;

    if (rv == 0) {
        return "success";
    }
    info = ikd_err_lookup(rv);
    if (info != NULL) {
        return info->message;
    }
    if (rv < 0 && rv > -IKD_MAX_ERRNO) {
        return strerror(-rv);
    }
    return "unknown error";
}

int ikd_to_errno(int rv)
{
    if (rv >= 0) {
        return rv;
    }
    if (rv > -IKD_MAX_ERRNO) {
        return -rv; /* already a negative errno */
    }
    switch (rv) {
        case IKD_ENOTLEADER:
        case IKD_ENOLEADER:
            /* Writes cannot be committed, reads still work: a read-only
             * file system is what a shell user understands. */
            return EROFS;
        case IKD_ETIMEDOUT:
            return ETIMEDOUT;
        case IKD_ELIMIT:
            return EFBIG;
        case IKD_ESHUTDOWN:
            return ESHUTDOWN;
        case IKD_EMALFORMED:
        case IKD_EVERSION:
            return EPROTO;
        case IKD_ENODEID:
            return EINVAL;
        case IKD_EBUSY:
        case IKD_ECHANGING:
            /* EBUSY rather than EAGAIN: retry loops back off instead of
             * spinning. */
            return EBUSY;
        case IKD_ELOST:
        case IKD_ECORRUPT:
        case IKD_ESTALE:
        default:
            return EIO;
    }
}

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
        case RAFT_FOLLOWER:
            return "follower";
        case RAFT_CANDIDATE:
            return "candidate";
        case RAFT_LEADER:
            return "leader";
    }
    return "unknown";
}
