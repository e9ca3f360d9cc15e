/* Unit tests for the Raft core: cores driven by hand one message at a time,
 * and a deterministic in-memory cluster with fault injection. */

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft.h"

#define ELECTION_TICKS 10
#define HEARTBEAT_TICKS 3

/* ---- Hand-driving helpers --------------------------------------------- */

static char log_text[64][256];
static size_t n_log_lines;

static void capture_log(void *ctx, int level, const char *text)
{
    (void)ctx;
    (void)level;
    if (n_log_lines < 64) {
        snprintf(log_text[n_log_lines++], sizeof(log_text[0]), "%s", text);
    }
}

static bool log_contains(const char *needle)
{
    size_t i;

    for (i = 0; i < n_log_lines; i++) {
        if (strstr(log_text[i], needle) != NULL) {
            return true;
        }
    }
    return false;
}

static struct raft_config make_config(raft_id_t id, size_t n, uint64_t seed)
{
    struct raft_config cfg;
    size_t i;

    memset(&cfg, 0, sizeof(cfg));
    cfg.id = id;
    cfg.n_voters = n;
    for (i = 0; i < n; i++) {
        cfg.voters[i] = (raft_id_t)(i + 1);
    }
    cfg.election_ticks = ELECTION_TICKS;
    cfg.heartbeat_ticks = HEARTBEAT_TICKS;
    cfg.seed = seed;
    cfg.max_append_entries = 64;
    cfg.max_append_bytes = 1 << 16;
    cfg.log_cb = capture_log;
    /* Most tests drive an election by hand from a timeout straight to a
     * candidate; the pre-vote tests turn it back on. */
    cfg.disable_prevote = true;
    return cfg;
}

static struct raft *node_new(raft_id_t id, size_t n)
{
    struct raft_config cfg = make_config(id, n, id);
    struct raft *r = raft_new(&cfg);

    n_log_lines = 0;
    assert_non_null(r);
    return r;
}

/* Load a log whose entry i has term terms[i]; each carries one byte. */
static void load_terms(struct raft *r,
                       raft_term_t term,
                       raft_index_t applied,
                       const raft_term_t *terms,
                       size_t n)
{
    static uint8_t bytes[64];
    struct raft_entry entries[64];
    size_t i;

    assert_true(n <= 64);
    for (i = 0; i < n; i++) {
        bytes[i] = (uint8_t)i;
        entries[i].term = terms[i];
        entries[i].type = RAFT_ENTRY_COMMAND;
        entries[i].len = 1;
        entries[i].data = &bytes[i];
    }
    assert_int_equal(raft_load(r, term, 0, applied, 1, 0, entries, n), 0);
}

static void tick_until_candidate(struct raft *r)
{
    unsigned i;

    for (i = 0; i < 2 * ELECTION_TICKS && raft_role(r) == RAFT_FOLLOWER; i++) {
        raft_tick(r);
    }
    assert_int_not_equal(raft_role(r), RAFT_FOLLOWER);
}

static const struct raft_msg *find_msg(const struct raft_update *u,
                                       enum raft_msg_type type,
                                       raft_id_t to)
{
    size_t i;

    for (i = 0; i < u->n_msgs; i++) {
        if (u->msgs[i].type == type && u->msgs[i].to == to) {
            return &u->msgs[i];
        }
    }
    return NULL;
}

static size_t count_msgs(const struct raft_update *u,
                         enum raft_msg_type type,
                         raft_id_t to)
{
    size_t i;
    size_t n = 0;

    for (i = 0; i < u->n_msgs; i++) {
        n += u->msgs[i].type == type && u->msgs[i].to == to ? 1 : 0;
    }
    return n;
}

static void persist_all(struct raft *r)
{
    raft_index_t last = raft_last_index(r);

    if (last > 0) {
        raft_persisted(r, last, raft_entry_at(r, last)->term);
    }
}

static struct raft_msg vote_resp(raft_id_t from,
                                 raft_id_t to,
                                 raft_term_t term,
                                 bool granted)
{
    struct raft_msg m;

    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_VOTE_RESP;
    m.from = from;
    m.to = to;
    m.term = term;
    m.vote_resp.granted = granted;
    return m;
}

static struct raft_msg vote_req(raft_id_t from,
                                raft_id_t to,
                                raft_term_t term,
                                raft_index_t last_index,
                                raft_term_t last_term)
{
    struct raft_msg m;

    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_VOTE;
    m.from = from;
    m.to = to;
    m.term = term;
    m.vote.last_index = last_index;
    m.vote.last_term = last_term;
    return m;
}

static struct raft_msg append_req(raft_id_t from,
                                  raft_id_t to,
                                  raft_term_t term,
                                  raft_index_t prev_index,
                                  raft_term_t prev_term,
                                  raft_index_t commit)
{
    struct raft_msg m;

    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_APPEND;
    m.from = from;
    m.to = to;
    m.term = term;
    m.append.prev_index = prev_index;
    m.append.prev_term = prev_term;
    m.append.commit = commit;
    return m;
}

static struct raft_msg append_resp(raft_id_t from,
                                   raft_id_t to,
                                   raft_term_t term,
                                   bool success,
                                   raft_index_t index)
{
    struct raft_msg m;

    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_APPEND_RESP;
    m.from = from;
    m.to = to;
    m.term = term;
    m.append_resp.success = success;
    m.append_resp.index = index;
    return m;
}

/* Entries for hand-made AppendEntries: term terms[i], one byte each. */
static struct raft_entry test_entries[64];
static uint8_t test_bytes[64];

static struct raft_entry *make_entries(const raft_term_t *terms, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        test_bytes[i] = (uint8_t)(100 + i);
        test_entries[i].term = terms[i];
        test_entries[i].type = RAFT_ENTRY_COMMAND;
        test_entries[i].len = 1;
        test_entries[i].data = &test_bytes[i];
    }
    return test_entries;
}

/* Make r (already loaded, if at all) leader of a cluster by granting it
 * the votes of every peer; its log is then persisted. */
static void make_leader(struct raft *r, size_t n)
{
    struct raft_update u;
    struct raft_msg m;
    raft_id_t peer;

    tick_until_candidate(r);
    raft_get_update(r, &u);
    for (peer = 1; peer <= n && raft_role(r) != RAFT_LEADER; peer++) {
        if (peer == raft_id(r)) {
            continue;
        }
        m = vote_resp(peer, raft_id(r), raft_term(r), true);
        assert_int_equal(raft_step(r, &m), 0);
    }
    assert_int_equal(raft_role(r), RAFT_LEADER);
    persist_all(r);
}

/* Acknowledge everything r sent to peer with success up to its last index,
 * as a follower with a matching log would. */
static void ack_all(struct raft *r, raft_id_t peer)
{
    struct raft_msg m =
        append_resp(peer, raft_id(r), raft_term(r), true, raft_last_index(r));

    assert_int_equal(raft_step(r, &m), 0);
}

/* ---- Election --------------------------------------------------------- */

static void test_single_node_elects_itself_and_commits(void **state)
{
    struct raft *r = node_new(1, 1);
    struct raft_update u;

    (void)state;
    tick_until_candidate(r);
    assert_int_equal(raft_role(r), RAFT_LEADER);
    assert_int_equal(raft_term(r), 1);
    raft_get_update(r, &u);
    assert_true(u.hard_state_changed);
    assert_int_equal(u.vote, 1);
    assert_int_equal(u.log_dirty_from, 1);
    assert_int_equal(u.commit, 0);
    assert_true(u.soft_state_changed);
    assert_int_equal(u.leader, 1);

    /* Raft 10.2.1: the leader counts itself once its entry is durable. */
    persist_all(r);
    raft_get_update(r, &u);
    assert_int_equal(u.commit, 1);
    raft_free(r);
}

static void test_election_timeout_drawn_in_range(void **state)
{
    uint64_t seed;
    unsigned ticks;
    unsigned min = 2 * ELECTION_TICKS;
    unsigned max = 0;

    (void)state;
    for (seed = 0; seed < 200; seed++) {
        struct raft_config cfg = make_config(1, 3, seed);
        struct raft *r = raft_new(&cfg);

        for (ticks = 1; ticks <= 2 * ELECTION_TICKS; ticks++) {
            raft_tick(r);
            if (raft_role(r) == RAFT_CANDIDATE) {
                break;
            }
        }
        assert_int_equal(raft_role(r), RAFT_CANDIDATE);
        min = ticks < min ? ticks : min;
        max = ticks > max ? ticks : max;
        raft_free(r);
    }
    assert_int_equal(min, ELECTION_TICKS);
    assert_int_equal(max, 2 * ELECTION_TICKS - 1);
}

static void test_candidate_requests_votes_with_last_log(void **state)
{
    const raft_term_t terms[] = {1, 2, 2};
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    const struct raft_msg *m;

    (void)state;
    load_terms(r, 2, 0, terms, 3);
    tick_until_candidate(r);
    raft_get_update(r, &u);
    assert_true(u.hard_state_changed);
    assert_int_equal(u.term, 3);
    assert_int_equal(u.vote, 1);
    m = find_msg(&u, RAFT_MSG_VOTE, 2);
    assert_non_null(m);
    assert_int_equal(m->term, 3);
    assert_int_equal(m->vote.last_index, 3);
    assert_int_equal(m->vote.last_term, 2);
    assert_non_null(find_msg(&u, RAFT_MSG_VOTE, 3));
    raft_free(r);
}

static void test_vote_granted_once_per_term(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m = vote_req(2, 1, 1, 0, 0);

    (void)state;
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_true(find_msg(&u, RAFT_MSG_VOTE_RESP, 2)->vote_resp.granted);

    m = vote_req(3, 1, 1, 0, 0);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_false(find_msg(&u, RAFT_MSG_VOTE_RESP, 3)->vote_resp.granted);
    assert_false(u.hard_state_changed);

    /* A retried request from the same candidate gets the same answer. */
    m = vote_req(2, 1, 1, 0, 0);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_true(find_msg(&u, RAFT_MSG_VOTE_RESP, 2)->vote_resp.granted);
    raft_free(r);
}

static void test_vote_rejected_when_candidate_log_behind(void **state)
{
    const raft_term_t terms[] = {1, 2, 2};
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    load_terms(r, 2, 0, terms, 3);

    /* Older last term loses even with a longer log (Raft 5.4.1). */
    m = vote_req(2, 1, 3, 5, 1);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_false(find_msg(&u, RAFT_MSG_VOTE_RESP, 2)->vote_resp.granted);
    assert_int_equal(raft_term(r), 3);

    /* Same last term, shorter log: rejected too. */
    m = vote_req(3, 1, 4, 2, 2);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_false(find_msg(&u, RAFT_MSG_VOTE_RESP, 3)->vote_resp.granted);

    /* Same last term, same length: granted. */
    m = vote_req(3, 1, 4, 3, 2);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_true(find_msg(&u, RAFT_MSG_VOTE_RESP, 3)->vote_resp.granted);
    raft_free(r);
}

static void test_vote_needs_durable_state(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m = vote_req(2, 1, 7, 0, 0);

    (void)state;
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    /* The grant travels with the hard state that records it, so the caller
     * can make the vote durable before the reply leaves. */
    assert_true(find_msg(&u, RAFT_MSG_VOTE_RESP, 2)->vote_resp.granted);
    assert_true(u.hard_state_changed);
    assert_int_equal(u.term, 7);
    assert_int_equal(u.vote, 2);
    assert_true(log_contains("vote granted"));
    raft_free(r);
}

static void test_candidate_wins_with_majority(void **state)
{
    struct raft *r = node_new(1, 5);
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    tick_until_candidate(r);
    raft_get_update(r, &u);
    m = vote_resp(2, 1, 1, true);
    assert_int_equal(raft_step(r, &m), 0);
    m = vote_resp(3, 1, 1, false);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_CANDIDATE);
    m = vote_resp(4, 1, 1, true);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_LEADER);
    raft_free(r);
}

static void test_leader_appends_noop_on_election(void **state)
{
    const raft_term_t terms[] = {1, 1};
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    const struct raft_msg *m;

    (void)state;
    load_terms(r, 1, 0, terms, 2);
    make_leader(r, 3);
    assert_int_equal(raft_last_index(r), 3);
    assert_int_equal(raft_entry_at(r, 3)->type, RAFT_ENTRY_NOOP);
    assert_int_equal(raft_entry_at(r, 3)->term, raft_term(r));

    raft_get_update(r, &u);
    assert_int_equal(u.log_dirty_from, 3);
    m = find_msg(&u, RAFT_MSG_APPEND, 2);
    assert_non_null(m);
    assert_int_equal(m->append.prev_index, 2);
    assert_int_equal(m->append.prev_term, 1);
    assert_int_equal(m->append.n_entries, 1);
    assert_ptr_equal(m->append.entries, raft_entry_at(r, 3));
    assert_true(log_contains("-> leader"));
    raft_free(r);
}

static void test_higher_term_makes_leader_step_down(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    make_leader(r, 3);
    raft_get_update(r, &u);
    m = append_resp(2, 1, raft_term(r) + 3, false, 0);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    assert_int_equal(raft_leader(r), 0);
    raft_get_update(r, &u);
    assert_true(u.hard_state_changed);
    assert_int_equal(u.term, 4);
    assert_int_equal(u.vote, 0);
    assert_true(u.soft_state_changed);
    assert_int_equal(u.role, RAFT_FOLLOWER);
    raft_free(r);
}

static void test_stale_term_append_rejected_with_newer_term(void **state)
{
    const raft_term_t terms[] = {1};
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m = append_req(2, 1, 2, 1, 1, 1);
    const struct raft_msg *resp;

    (void)state;
    load_terms(r, 5, 0, terms, 1);
    m.append.entries = make_entries(terms, 1);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    resp = find_msg(&u, RAFT_MSG_APPEND_RESP, 2);
    assert_non_null(resp);
    assert_false(resp->append_resp.success);
    assert_int_equal(resp->term, 5);
    assert_int_equal(raft_commit(r), 0);
    assert_int_equal(raft_leader(r), 0);
    raft_free(r);
}

static void test_step_rejects_misaddressed_message(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_msg m = vote_req(0, 1, 1, 0, 0);

    (void)state;
    assert_int_equal(raft_step(r, &m), IKD_EMALFORMED);
    m = vote_req(2, 3, 1, 0, 0);
    assert_int_equal(raft_step(r, &m), IKD_EMALFORMED);
    m = vote_req(1, 1, 1, 0, 0);
    assert_int_equal(raft_step(r, &m), IKD_EMALFORMED);
    m = vote_req(2, 1, 1, 0, 0);
    m.type = (enum raft_msg_type)99;
    assert_int_equal(raft_step(r, &m), IKD_EMALFORMED);
    assert_int_equal(raft_term(r), 0);
    raft_free(r);
}

static void test_malformed_append_changes_nothing(void **state)
{
    const raft_term_t mine[] = {1, 1};
    const raft_term_t down[] = {3, 2};
    const raft_term_t future[] = {9};
    struct raft *r = node_new(1, 3);
    struct raft_msg m = append_req(2, 1, 5, 2, 1, 0);

    (void)state;
    load_terms(r, 1, 0, mine, 2);
    /* Terms going down inside the message. */
    m.append.entries = make_entries(down, 2);
    m.append.n_entries = 2;
    assert_int_equal(raft_step(r, &m), IKD_EMALFORMED);
    /* An entry newer than the message's own term. */
    m.append.entries = make_entries(future, 1);
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), IKD_EMALFORMED);
    /* Entries announced but missing. */
    m.append.entries = NULL;
    assert_int_equal(raft_step(r, &m), IKD_EMALFORMED);
    assert_int_equal(raft_term(r), 1);
    assert_int_equal(raft_last_index(r), 2);
    assert_false(raft_has_update(r));
    raft_free(r);
}

static void test_leader_steps_down_without_quorum(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    unsigned i;

    (void)state;
    make_leader(r, 3);
    for (i = 0; i < ELECTION_TICKS - 1; i++) {
        raft_tick(r);
        raft_get_update(r, &u);
    }
    ack_all(r, 2); /* one follower answers: a majority with self */
    raft_tick(r);
    assert_int_equal(raft_role(r), RAFT_LEADER);
    for (i = 0; i < ELECTION_TICKS; i++) {
        raft_tick(r);
    }
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    assert_int_equal(raft_leader(r), 0);
    raft_free(r);
}

/* ---- Replication ------------------------------------------------------ */

static void test_leader_commits_only_own_term_by_counting(void **state)
{
    const raft_term_t terms[] = {1, 2};
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    /* Paper Figure 8: entry 2 of term 2 reaches a majority under a leader
     * of term 4; counting replicas must not commit it. */
    load_terms(r, 3, 0, terms, 2);
    make_leader(r, 3);
    assert_int_equal(raft_term(r), 4);
    raft_get_update(r, &u);

    m = append_resp(2, 1, 4, true, 2);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_commit(r), 0);

    /* Once an entry of term 4 is on a majority, everything before it is
     * committed with it. */
    m = append_resp(2, 1, 4, true, 3);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_commit(r), 3);
    raft_free(r);
}

static void test_leader_counts_itself_only_when_persisted(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    raft_index_t index;
    raft_term_t term;

    (void)state;
    make_leader(r, 3);
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 1);

    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "x", 1, &index, &term),
                     0);
    assert_int_equal(index, 2);
    raft_get_update(r, &u);
    /* Follower 2 has it, the leader's copy is not durable: no majority. */
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 1);
    raft_persisted(r, 2, term);
    assert_int_equal(raft_commit(r), 2);
    raft_free(r);
}

static void test_truncate_only_conflicting_entries(void **state)
{
    const raft_term_t mine[] = {1, 1, 2, 2};
    const raft_term_t theirs[] = {1, 3};
    struct raft *r = node_new(2, 3);
    struct raft_update u;
    struct raft_msg m = append_req(1, 2, 3, 1, 1, 0);
    const struct raft_entry *kept;

    (void)state;
    load_terms(r, 2, 1, mine, 4);
    kept = raft_entry_at(r, 2);
    m.append.entries = make_entries(theirs, 2);
    m.append.n_entries = 2;
    assert_int_equal(raft_step(r, &m), 0);

    /* Entry 2 matches and is kept as it was; 3 conflicts and everything
     * from it is replaced (Raft 5.3). */
    assert_int_equal(raft_last_index(r), 3);
    assert_ptr_equal(raft_entry_at(r, 2), kept);
    assert_int_equal(raft_entry_at(r, 2)->data[0], 1);
    assert_int_equal(raft_entry_at(r, 3)->term, 3);
    raft_get_update(r, &u);
    assert_int_equal(u.log_dirty_from, 3);
    assert_true(find_msg(&u, RAFT_MSG_APPEND_RESP, 1)->append_resp.success);
    assert_int_equal(find_msg(&u, RAFT_MSG_APPEND_RESP, 1)->append_resp.index,
                     3);
    assert_true(log_contains("truncate"));
    raft_free(r);
}

/* The bytes the log holds follow loading, truncation, compaction and
 * proposals: the node compacts by them. */
static void test_log_bytes_follow_every_change_of_the_log(void **state)
{
    const raft_term_t mine[] = {1, 1, 2, 2};
    const raft_term_t theirs[] = {1, 3};
    struct raft *r = node_new(2, 3);
    struct raft_update u;
    struct raft_msg m = append_req(1, 2, 3, 1, 1, 0);
    raft_index_t index;
    raft_term_t term;

    (void)state;
    load_terms(r, 2, 1, mine, 4);
    assert_int_equal(raft_log_bytes(r), 4);

    /* Entries 3 and 4 give way to the leader's 3. */
    m.append.entries = make_entries(theirs, 2);
    m.append.n_entries = 2;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_last_index(r), 3);
    assert_int_equal(raft_log_bytes(r), 3);
    raft_get_update(r, &u);
    raft_persisted(r, 3, 3);
    assert_int_equal(raft_compact(r, 1), 0);
    assert_int_equal(raft_log_bytes(r), 2);
    raft_free(r);

    r = node_new(1, 3);
    make_leader(r, 3);
    size_t before = raft_log_bytes(r);
    assert_int_equal(
        raft_propose(r, RAFT_ENTRY_COMMAND, "hello", 5, &index, &term), 0);
    assert_int_equal(raft_log_bytes(r), before + 5);
    raft_free(r);
}

static void test_stale_append_does_not_truncate(void **state)
{
    const raft_term_t mine[] = {1, 1, 1, 1};
    struct raft *r = node_new(2, 3);
    struct raft_update u;
    struct raft_msg m = append_req(1, 2, 1, 1, 1, 4);
    const struct raft_msg *resp;

    (void)state;
    load_terms(r, 1, 0, mine, 4);
    /* A delayed copy of an earlier message: its entry already matches. */
    m.append.entries = make_entries(mine, 1);
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_last_index(r), 4);
    raft_get_update(r, &u);
    assert_int_equal(u.log_dirty_from, 0);
    resp = find_msg(&u, RAFT_MSG_APPEND_RESP, 1);
    assert_true(resp->append_resp.success);
    assert_int_equal(resp->append_resp.index, 2);
    /* Commit only what this message verified. */
    assert_int_equal(raft_commit(r), 2);
    raft_free(r);
}

static void test_follower_commit_limited_to_verified_entries(void **state)
{
    const raft_term_t mine[] = {1, 1, 1, 1, 1};
    const raft_term_t theirs[] = {2};
    struct raft *r = node_new(2, 3);
    struct raft_update u;
    struct raft_msg m = append_req(1, 2, 2, 2, 1, 10);

    (void)state;
    load_terms(r, 1, 0, mine, 5);
    m.append.entries = make_entries(theirs, 1);
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), 0);
    /* Entries 4 and 5 were dropped by the conflict at 3; commit stops at
     * the last entry the message verified. */
    assert_int_equal(raft_last_index(r), 3);
    assert_int_equal(raft_commit(r), 3);
    raft_get_update(r, &u);
    assert_int_equal(u.commit, 3);

    /* A heartbeat verifying only up to 2 does not move commit back. */
    m = append_req(1, 2, 2, 2, 1, 10);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_commit(r), 3);
    raft_free(r);
}

static void test_append_skips_committed_prefix(void **state)
{
    const raft_term_t mine[] = {1, 1, 1};
    const raft_term_t theirs[] = {1, 1, 1, 2};
    struct raft *r = node_new(2, 3);
    struct raft_update u;
    struct raft_msg m = append_req(1, 2, 2, 0, 0, 4);

    (void)state;
    load_terms(r, 1, 3, mine, 3);
    m.append.entries = make_entries(theirs, 4);
    m.append.n_entries = 4;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_last_index(r), 4);
    assert_int_equal(raft_commit(r), 4);
    raft_get_update(r, &u);
    assert_int_equal(u.log_dirty_from, 4);
    raft_free(r);
}

static void test_reject_hint_by_term_on_follower(void **state)
{
    const raft_term_t mine[] = {1, 1, 4, 4, 4};
    struct raft *r = node_new(2, 3);
    struct raft_update u;
    struct raft_msg m = append_req(1, 2, 5, 5, 3, 0);
    const struct raft_msg *resp;

    (void)state;
    load_terms(r, 4, 0, mine, 5);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    resp = find_msg(&u, RAFT_MSG_APPEND_RESP, 1);
    assert_false(resp->append_resp.success);
    assert_int_equal(resp->append_resp.index, 5);
    /* Whole term 4 skipped: the largest index with term <= 3 is 2. */
    assert_int_equal(resp->append_resp.hint_index, 2);
    assert_int_equal(resp->append_resp.hint_term, 1);

    /* A log shorter than prev_index hints its own end. */
    m = append_req(1, 2, 5, 9, 5, 0);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    resp = find_msg(&u, RAFT_MSG_APPEND_RESP, 1);
    assert_false(resp->append_resp.success);
    assert_int_equal(resp->append_resp.hint_index, 5);
    assert_int_equal(resp->append_resp.hint_term, 4);
    assert_int_equal(raft_last_index(r), 5);
    raft_free(r);
}

static void test_reject_hint_backs_up_by_term(void **state)
{
    const raft_term_t leader_log[] = {1, 1, 3, 3, 3, 3, 3};
    const raft_term_t follower_log[] = {1, 1, 2, 2, 2, 2};
    struct raft *l = node_new(1, 3);
    struct raft *f = node_new(2, 3);
    struct raft_update lu;
    struct raft_update fu;
    struct raft_msg m;
    const struct raft_msg *app;

    (void)state;
    load_terms(l, 3, 0, leader_log, 7);
    load_terms(f, 2, 0, follower_log, 6);
    make_leader(l, 3);
    raft_get_update(l, &lu);
    app = find_msg(&lu, RAFT_MSG_APPEND, 2);
    assert_int_equal(app->append.prev_index, 7);
    assert_int_equal(raft_step(f, app), 0);
    raft_get_update(f, &fu);
    m = *find_msg(&fu, RAFT_MSG_APPEND_RESP, 1);
    assert_false(m.append_resp.success);

    /* The leader jumps over the follower's whole term 2 in one step. */
    assert_int_equal(raft_step(l, &m), 0);
    raft_get_update(l, &lu);
    app = find_msg(&lu, RAFT_MSG_APPEND, 2);
    assert_non_null(app);
    assert_int_equal(app->append.prev_index, 2);
    assert_int_equal(app->append.prev_term, 1);
    assert_int_equal(raft_step(f, app), 0);
    raft_get_update(f, &fu);
    m = *find_msg(&fu, RAFT_MSG_APPEND_RESP, 1);
    assert_true(m.append_resp.success);
    assert_int_equal(m.append_resp.index, 8);
    assert_int_equal(fu.log_dirty_from, 3);
    assert_int_equal(raft_entry_at(f, 3)->term, 3);
    raft_free(l);
    raft_free(f);
}

static void test_proposals_batched_and_sent_without_heartbeat(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    const struct raft_msg *m;
    raft_index_t index;
    raft_term_t term;
    int i;

    (void)state;
    make_leader(r, 3);
    raft_get_update(r, &u);
    ack_all(r, 2);
    ack_all(r, 3);
    raft_get_update(r, &u);

    for (i = 0; i < 3; i++) {
        assert_int_equal(
            raft_propose(r, RAFT_ENTRY_COMMAND, "abc", 3, &index, &term), 0);
    }
    assert_true(raft_has_update(r));
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 2), 1);
    m = find_msg(&u, RAFT_MSG_APPEND, 2);
    assert_int_equal(m->append.prev_index, 1);
    assert_int_equal(m->append.n_entries, 3);
    assert_memory_equal(m->append.entries[2].data, "abc", 3);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 3), 1);
    raft_free(r);
}

static void test_append_respects_entry_and_byte_limits(void **state)
{
    struct raft_config cfg = make_config(1, 2, 1);
    struct raft *r;
    struct raft_update u;
    static uint8_t big[100];
    raft_index_t index;
    raft_term_t term;
    size_t i;
    size_t sizes[6];

    (void)state;
    cfg.max_append_entries = 3;
    cfg.max_append_bytes = 50;
    r = raft_new(&cfg);
    make_leader(r, 2);
    raft_get_update(r, &u);
    ack_all(r, 2);
    raft_get_update(r, &u);

    /* 3 small, then one larger than the byte limit, then 2 small. */
    for (i = 0; i < 6; i++) {
        size_t len = i == 3 ? sizeof(big) : 20;

        assert_int_equal(
            raft_propose(r, RAFT_ENTRY_COMMAND, big, len, &index, &term), 0);
    }
    raft_get_update(r, &u);
    assert_true(u.n_msgs >= 4);
    for (i = 0; i < 4; i++) {
        sizes[i] = u.msgs[i].append.n_entries;
    }
    /* 20+20 fits, the third would pass 50 bytes; the big entry goes alone,
     * as it must go somewhere. */
    assert_int_equal(sizes[0], 2);
    assert_int_equal(sizes[1], 1);
    assert_int_equal(sizes[2], 1);
    assert_int_equal(u.msgs[2].append.entries[0].len, sizeof(big));
    assert_int_equal(sizes[3], 2);
    raft_free(r);
}

static void test_probe_sends_one_message_per_heartbeat(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    raft_index_t index;
    raft_term_t term;
    unsigned i;

    (void)state;
    make_leader(r, 3);
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 2), 1);

    /* No answer yet: new proposals do not go to a probing follower. */
    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "a", 1, &index, &term),
                     0);
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 2), 0);

    for (i = 0; i < HEARTBEAT_TICKS; i++) {
        raft_tick(r);
    }
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 2), 1);
    assert_int_equal(find_msg(&u, RAFT_MSG_APPEND, 2)->append.n_entries, 2);
    raft_free(r);
}

static void test_replicate_window_caps_inflight(void **state)
{
    struct raft_config cfg = make_config(1, 2, 1);
    struct raft *r;
    struct raft_update u;
    raft_index_t index;
    raft_term_t term;
    size_t i;

    (void)state;
    cfg.max_append_entries = 1;
    r = raft_new(&cfg);
    make_leader(r, 2);
    raft_get_update(r, &u);
    ack_all(r, 2);
    raft_get_update(r, &u);
    for (i = 0; i < 100; i++) {
        assert_int_equal(
            raft_propose(r, RAFT_ENTRY_COMMAND, "a", 1, &index, &term), 0);
    }
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 2), 64);
    raft_get_update(r, &u);
    assert_int_equal(u.n_msgs, 0);

    /* Acknowledging the first 10 opens the window by 10. */
    {
        struct raft_msg m = append_resp(2, 1, raft_term(r), true, 11);

        assert_int_equal(raft_step(r, &m), 0);
    }
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 2), 10);
    assert_int_equal(u.msgs[0].append.prev_index, 65);
    raft_free(r);
}

static void test_commit_advance_broadcasts_to_followers(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    raft_index_t index;
    raft_term_t term;
    const struct raft_msg *m;

    (void)state;
    make_leader(r, 3);
    raft_get_update(r, &u);
    ack_all(r, 2);
    ack_all(r, 3);
    raft_get_update(r, &u);
    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "a", 1, &index, &term),
                     0);
    raft_persisted(r, index, term);
    raft_get_update(r, &u);

    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 2);
    raft_get_update(r, &u);
    /* Both followers hear of the new commit at once, also the one that
     * has not answered yet. */
    m = find_msg(&u, RAFT_MSG_APPEND, 3);
    assert_non_null(m);
    assert_int_equal(m->append.commit, 2);
    assert_non_null(find_msg(&u, RAFT_MSG_APPEND, 2));
    raft_free(r);
}

static void test_heartbeat_sent_every_heartbeat_ticks(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    unsigned i;

    (void)state;
    make_leader(r, 3);
    raft_get_update(r, &u);
    ack_all(r, 2);
    ack_all(r, 3);
    raft_get_update(r, &u);
    for (i = 0; i < HEARTBEAT_TICKS - 1; i++) {
        raft_tick(r);
        assert_false(raft_has_update(r));
    }
    raft_tick(r);
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 2), 1);
    assert_int_equal(find_msg(&u, RAFT_MSG_APPEND, 2)->append.n_entries, 0);
    assert_int_equal(count_msgs(&u, RAFT_MSG_APPEND, 3), 1);
    raft_free(r);
}

static void test_propose_rejected_when_not_leader_or_too_big(void **state)
{
    struct raft *r = node_new(1, 1);
    raft_index_t index;
    raft_term_t term;

    (void)state;
    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "a", 1, &index, &term),
                     IKD_ENOTLEADER);
    assert_int_equal(raft_read_index(r, 1), IKD_ENOTLEADER);
    tick_until_candidate(r);
    assert_int_equal(
        raft_propose(r, RAFT_ENTRY_COMMAND, "a",
                     (size_t)IKD_MAX_COMMAND_BYTES + 1, &index, &term),
        IKD_ELIMIT);
    raft_free(r);
}

/* ---- Durability reports ----------------------------------------------- */

static void test_persisted_ignored_for_replaced_entry(void **state)
{
    const raft_term_t mine[] = {1, 1, 1};
    const raft_term_t theirs[] = {2};
    struct raft *r = node_new(2, 3);
    struct raft_msg m = append_req(1, 2, 2, 2, 1, 0);

    (void)state;
    load_terms(r, 1, 0, mine, 3);
    m.append.entries = make_entries(theirs, 1);
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_entry_at(r, 3)->term, 2);

    /* A late report about the old entry 3 (term 1) says nothing about the
     * entry that replaced it. */
    raft_persisted(r, 3, 1);
    assert_int_equal(raft_persisted_index(r), 2);
    raft_persisted(r, 3, 2);
    assert_int_equal(raft_persisted_index(r), 3);
    /* Reports past the end or going backwards change nothing. */
    raft_persisted(r, 9, 2);
    raft_persisted(r, 1, 1);
    assert_int_equal(raft_persisted_index(r), 3);
    raft_free(r);
}

static void test_truncation_lowers_persisted(void **state)
{
    const raft_term_t mine[] = {1, 1, 1};
    const raft_term_t theirs[] = {2};
    struct raft *r = node_new(1, 3);
    struct raft_msg m = append_req(2, 1, 2, 1, 1, 0);
    struct raft_update u;

    (void)state;
    load_terms(r, 1, 0, mine, 3);
    assert_int_equal(raft_persisted_index(r), 3);
    m.append.entries = make_entries(theirs, 1);
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_last_index(r), 2);
    assert_int_equal(raft_persisted_index(r), 1);

    /* As leader, the replaced entry does not count until it is durable. */
    tick_until_candidate(r);
    raft_get_update(r, &u);
    m = vote_resp(2, 1, raft_term(r), true);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_LEADER);
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 0);
    persist_all(r);
    assert_int_equal(raft_commit(r), 3);
    raft_free(r);
}

static void test_load_restores_state_and_rejects_corrupt(void **state)
{
    const raft_term_t good[] = {1, 2, 2};
    const raft_term_t bad[] = {2, 1};
    struct raft *r = node_new(1, 3);
    struct raft_entry *e;

    (void)state;
    load_terms(r, 3, 2, good, 3);
    assert_int_equal(raft_term(r), 3);
    assert_int_equal(raft_commit(r), 2);
    assert_int_equal(raft_applied_index(r), 2);
    assert_int_equal(raft_last_index(r), 3);
    assert_false(raft_has_update(r));
    raft_free(r);

    r = node_new(1, 3);
    e = make_entries(bad, 2);
    assert_int_equal(raft_load(r, 3, 0, 0, 1, 0, e, 2), IKD_ECORRUPT);
    raft_free(r);

    r = node_new(1, 3);
    e = make_entries(good, 3);
    assert_int_equal(raft_load(r, 3, 0, 4, 1, 0, e, 3), IKD_ECORRUPT);
    raft_free(r);

    r = node_new(1, 3);
    e = make_entries(good, 3);
    assert_int_equal(raft_load(r, 1, 0, 0, 1, 0, e, 3), IKD_ECORRUPT);
    raft_free(r);
}

/* ---- ReadIndex -------------------------------------------------------- */

static void test_single_node_read_ready_at_once(void **state)
{
    struct raft *r = node_new(1, 1);
    struct raft_update u;

    (void)state;
    tick_until_candidate(r);
    persist_all(r);
    raft_get_update(r, &u);
    assert_int_equal(raft_read_index(r, 42), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].ctx, 42);
    assert_int_equal(u.reads[0].index, 1);
    raft_free(r);
}

static void test_read_index_waits_for_own_term_commit(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    make_leader(r, 3);
    raft_get_update(r, &u);
    assert_int_equal(raft_read_index(r, 7), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 0);

    /* Commit of the leader's no-op starts the round; a reply echoing the
     * round's sequence number completes it. */
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 1);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 0);
    m = append_resp(3, 1, raft_term(r), false, 0);
    m.append_resp.read_seq = find_msg(&u, RAFT_MSG_APPEND, 3)->append.read_seq;
    assert_true(m.append_resp.read_seq > 0);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].ctx, 7);
    assert_int_equal(u.reads[0].index, 1);
    raft_free(r);
}

/* A leader with its no-op committed and followers caught up. */
static struct raft *steady_leader(void)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;

    make_leader(r, 3);
    raft_get_update(r, &u);
    ack_all(r, 2);
    ack_all(r, 3);
    raft_get_update(r, &u);
    assert_int_equal(raft_commit(r), 1);
    return r;
}

static struct raft_msg echo(struct raft *r, raft_id_t from, uint64_t seq)
{
    struct raft_msg m =
        append_resp(from, 1, raft_term(r), true, raft_last_index(r));

    m.append_resp.read_seq = seq;
    return m;
}

static void test_read_index_completes_after_majority_echo(void **state)
{
    struct raft *r = steady_leader();
    struct raft_update u;
    struct raft_msg m;
    uint64_t seq;

    (void)state;
    assert_int_equal(raft_read_index(r, 1), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 0);
    seq = find_msg(&u, RAFT_MSG_APPEND, 2)->append.read_seq;
    assert_non_null(find_msg(&u, RAFT_MSG_APPEND, 3));

    /* An echo of an older round proves nothing about this read. */
    m = echo(r, 2, seq - 1);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 0);
    m = echo(r, 2, seq);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].index, 1);
    raft_free(r);
}

/* A read asked for by a voter in the current term needs no round where
 * the two are a majority; otherwise it waits for one as any read. */
static void test_read_asked_by_a_voter_in_this_term_needs_no_round(void **state)
{
    struct raft *r = steady_leader();
    struct raft *five;
    struct raft_update u;

    (void)state;
    assert_int_equal(raft_read_index_from(r, 1, 2, raft_term(r)), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].ctx, 1);
    assert_int_equal(u.reads[0].index, 1);

    /* Asked in an older term: it proves nothing about this one. */
    assert_int_equal(raft_read_index_from(r, 2, 2, raft_term(r) - 1), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 0);
    assert_non_null(find_msg(&u, RAFT_MSG_APPEND, 2));
    /* Asked by a server that is not in the configuration. */
    assert_int_equal(raft_read_index_from(r, 3, 9, raft_term(r)), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 0);
    raft_free(r);

    /* Five voters: the leader and the asker are no majority. */
    five = node_new(1, 5);
    make_leader(five, 5);
    raft_get_update(five, &u);
    for (raft_id_t id = 2; id <= 5; id++) {
        ack_all(five, id);
    }
    raft_get_update(five, &u);
    assert_int_equal(raft_commit(five), 1);
    assert_int_equal(raft_read_index_from(five, 4, 2, raft_term(five)), 0);
    raft_get_update(five, &u);
    assert_int_equal(u.n_reads, 0);
    raft_free(five);

    /* Not the leader. */
    r = node_new(2, 3);
    assert_int_equal(raft_read_index_from(r, 5, 1, 0), IKD_ENOTLEADER);
    raft_free(r);
}

static void test_reads_during_round_join_next_round(void **state)
{
    struct raft *r = steady_leader();
    struct raft_update u;
    struct raft_msg m;
    uint64_t seq1;
    uint64_t seq2;
    raft_index_t index;
    raft_term_t term;

    (void)state;
    assert_int_equal(raft_read_index(r, 1), 0);
    raft_get_update(r, &u);
    seq1 = find_msg(&u, RAFT_MSG_APPEND, 2)->append.read_seq;

    /* A write commits, then a second read arrives during round 1: it must
     * see the write, so it cannot share round 1's index. */
    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "w", 1, &index, &term),
                     0);
    raft_persisted(r, index, term);
    raft_get_update(r, &u);
    m = append_resp(3, 1, raft_term(r), true, index);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_commit(r), 2);
    assert_int_equal(raft_read_index(r, 2), 0);

    m = echo(r, 2, seq1);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].ctx, 1);
    assert_int_equal(u.reads[0].index, 1);
    seq2 = find_msg(&u, RAFT_MSG_APPEND, 2)->append.read_seq;
    assert_true(seq2 > seq1);

    m = echo(r, 3, seq2);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].ctx, 2);
    assert_int_equal(u.reads[0].index, 2);
    raft_free(r);
}

static void test_leader_loss_drops_pending_reads(void **state)
{
    struct raft *r = steady_leader();
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    assert_int_equal(raft_read_index(r, 1), 0);
    raft_get_update(r, &u);
    m = append_req(2, 1, raft_term(r) + 1, 1, 1, 1);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    assert_int_equal(raft_read_index(r, 2), IKD_ENOTLEADER);
    raft_get_update(r, &u);
    assert_int_equal(u.n_reads, 0);
    raft_free(r);
}

/* ---- Errors, logging, determinism ------------------------------------- */

static void test_error_codes_map_to_errno(void **state)
{
    (void)state;
    assert_int_equal(ikd_to_errno(IKD_ENOTLEADER), EROFS);
    assert_int_equal(ikd_to_errno(IKD_ENOLEADER), EROFS);
    assert_int_equal(ikd_to_errno(IKD_ETIMEDOUT), ETIMEDOUT);
    assert_int_equal(ikd_to_errno(IKD_ELOST), EIO);
    assert_int_equal(ikd_to_errno(IKD_ECORRUPT), EIO);
    assert_int_equal(ikd_to_errno(IKD_ELIMIT), EFBIG);
    assert_int_equal(ikd_to_errno(IKD_ESHUTDOWN), ESHUTDOWN);
    assert_int_equal(ikd_to_errno(IKD_EBUSY), EBUSY);
    assert_string_equal(ikd_strerror(IKD_EBUSY),
                        "the leader is busy: too much uncommitted or "
                        "leadership moving");
    assert_int_equal(ikd_to_errno(-ENOENT), ENOENT);
    assert_int_equal(ikd_to_errno(0), 0);
    assert_int_equal(ikd_to_errno(IKD_EMALFORMED), EPROTO);
    assert_int_equal(ikd_to_errno(IKD_ERR_END), EIO);
    assert_string_equal(ikd_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(ikd_strerror(IKD_ENOTLEADER),
                        "this node is not the leader");
    assert_string_equal(ikd_strerror(IKD_ERR_END), "unknown error");
    assert_string_equal(raft_role_name(RAFT_LEADER), "leader");
    assert_string_equal(raft_role_name(RAFT_CANDIDATE), "candidate");
    assert_string_equal(raft_role_name(RAFT_FOLLOWER), "follower");
}

static void test_role_change_logged_as_condition_and_decision(void **state)
{
    struct raft *r = node_new(1, 3);

    (void)state;
    n_log_lines = 0;
    tick_until_candidate(r);
    assert_true(log_contains("election timeout, term=1 -> candidate"));
    raft_free(r);
}

/* ---- Pre-vote and leader stickiness ------------------------------------ */

static struct raft *prevote_node(raft_id_t id, size_t n)
{
    struct raft_config cfg = make_config(id, n, id);
    struct raft *r;

    cfg.disable_prevote = false;
    r = raft_new(&cfg);
    n_log_lines = 0;
    assert_non_null(r);
    return r;
}

static struct raft_msg prevote_resp(raft_id_t from,
                                    raft_id_t to,
                                    raft_term_t term,
                                    bool granted)
{
    struct raft_msg m = vote_resp(from, to, term, granted);

    m.type = RAFT_MSG_PREVOTE_RESP;
    return m;
}

static void tick_until_prevote(struct raft *r, struct raft_update *u)
{
    unsigned i;

    for (i = 0; i < 2 * ELECTION_TICKS; i++) {
        raft_tick(r);
        raft_get_update(r, u);
        if (find_msg(u, RAFT_MSG_PREVOTE, 2) != NULL) {
            return;
        }
    }
    fail_msg("no pre-vote request after two election timeouts");
}

static void test_prevote_asks_without_raising_term(void **state)
{
    struct raft *r = prevote_node(1, 3);
    struct raft_update u;
    const struct raft_msg *m;

    (void)state;
    load_terms(r, 4, 0, (raft_term_t[]){1, 4}, 2);
    tick_until_prevote(r, &u);
    m = find_msg(&u, RAFT_MSG_PREVOTE, 3);
    assert_non_null(m);
    assert_int_equal(m->term, 5);
    assert_int_equal(m->vote.last_index, 2);
    assert_int_equal(m->vote.last_term, 4);
    assert_int_equal(raft_term(r), 4);
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    assert_false(u.hard_state_changed);
    assert_null(find_msg(&u, RAFT_MSG_VOTE, 2));
    raft_free(r);
}

static void test_prevote_majority_starts_real_election(void **state)
{
    struct raft *r = prevote_node(1, 3);
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    tick_until_prevote(r, &u);
    /* A refusal and a stale grant change nothing. */
    m = prevote_resp(3, 1, 0, false);
    assert_int_equal(raft_step(r, &m), 0);
    m = prevote_resp(3, 1, 7, true);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    m = prevote_resp(2, 1, 1, true);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_CANDIDATE);
    assert_int_equal(raft_term(r), 1);
    raft_get_update(r, &u);
    assert_true(u.hard_state_changed);
    assert_non_null(find_msg(&u, RAFT_MSG_VOTE, 2));
    assert_false(find_msg(&u, RAFT_MSG_VOTE, 2)->vote.transfer);
    assert_true(log_contains("pre-votes from a majority"));
    raft_free(r);
}

static void test_prevote_refused_with_newer_term_adopts_it(void **state)
{
    struct raft *r = prevote_node(1, 3);
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    tick_until_prevote(r, &u);
    m = prevote_resp(2, 1, 6, false);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_term(r), 6);
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    raft_free(r);
}

static void test_prevote_granted_only_when_leader_silent(void **state)
{
    struct raft *r = prevote_node(2, 3);
    struct raft_update u;
    struct raft_msg m;
    const struct raft_msg *resp;
    unsigned i;

    (void)state;
    m = append_req(1, 2, 3, 0, 0, 0);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);

    /* The leader was just heard: refused, and the term does not move. */
    m = vote_req(3, 2, 4, 5, 3);
    m.type = RAFT_MSG_PREVOTE;
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    resp = find_msg(&u, RAFT_MSG_PREVOTE_RESP, 3);
    assert_non_null(resp);
    assert_false(resp->vote_resp.granted);
    assert_int_equal(resp->term, 3);
    assert_int_equal(raft_term(r), 3);

    /* An election timeout later it would vote: granted, nothing stored. */
    for (i = 0; i < ELECTION_TICKS; i++) {
        raft_tick(r);
    }
    raft_get_update(r, &u);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    resp = find_msg(&u, RAFT_MSG_PREVOTE_RESP, 3);
    assert_non_null(resp);
    assert_true(resp->vote_resp.granted);
    assert_int_equal(resp->term, 4);
    assert_int_equal(raft_term(r), 3);
    assert_false(u.hard_state_changed);

    /* A stale pre-vote is refused with the newer term. */
    m.term = 2;
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    resp = find_msg(&u, RAFT_MSG_PREVOTE_RESP, 3);
    assert_false(resp->vote_resp.granted);
    assert_int_equal(resp->term, 3);
    raft_free(r);
}

static void test_vote_ignored_while_leader_heard_unless_transfer(void **state)
{
    struct raft *r = node_new(2, 3);
    struct raft_update u;
    struct raft_msg m;

    (void)state;
    m = append_req(1, 2, 3, 0, 0, 0);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    m = vote_req(3, 2, 4, 0, 0);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_term(r), 3);
    raft_get_update(r, &u);
    assert_null(find_msg(&u, RAFT_MSG_VOTE_RESP, 3));

    m.vote.transfer = true;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_term(r), 4);
    raft_get_update(r, &u);
    assert_true(find_msg(&u, RAFT_MSG_VOTE_RESP, 3)->vote_resp.granted);
    raft_free(r);
}

static void test_single_node_prevote_elects_at_once(void **state)
{
    struct raft *r = prevote_node(1, 1);

    (void)state;
    tick_until_candidate(r);
    assert_int_equal(raft_role(r), RAFT_LEADER);
    assert_int_equal(raft_term(r), 1);
    raft_free(r);
}

/* ---- Uncommitted cap ---------------------------------------------------- */

static void test_propose_busy_past_uncommitted_cap(void **state)
{
    struct raft_config cfg = make_config(1, 3, 1);
    struct raft *r;
    raft_index_t index;
    raft_term_t term;
    unsigned i;

    (void)state;
    cfg.max_uncommitted_entries = 4;
    cfg.max_uncommitted_bytes = 10;
    r = raft_new(&cfg);
    assert_non_null(r);
    make_leader(r, 3);
    /* The leader's own entry is pending: three more fit. */
    for (i = 0; i < 3; i++) {
        assert_int_equal(
            raft_propose(r, RAFT_ENTRY_COMMAND, "ab", 2, &index, &term), 0);
    }
    assert_int_equal(
        raft_propose(r, RAFT_ENTRY_COMMAND, "ab", 2, &index, &term), IKD_EBUSY);
    persist_all(r);
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 4);

    /* Bytes: 6 + 6 > 10 is refused, but one entry alone always fits. */
    assert_int_equal(
        raft_propose(r, RAFT_ENTRY_COMMAND, "abcdef", 6, &index, &term), 0);
    assert_int_equal(
        raft_propose(r, RAFT_ENTRY_COMMAND, "abcdef", 6, &index, &term),
        IKD_EBUSY);
    persist_all(r);
    ack_all(r, 2);
    assert_int_equal(
        raft_propose(r, RAFT_ENTRY_COMMAND, "0123456789abc", 13, &index, &term),
        0);
    raft_free(r);
}

/* ---- Leadership transfer ------------------------------------------------ */

static void test_transfer_waits_for_catch_up_then_timeout_now(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m;
    raft_index_t index;
    raft_term_t term;

    (void)state;
    make_leader(r, 3);
    raft_get_update(r, &u);
    assert_int_equal(raft_transfer(r, 2), 0);
    assert_int_equal(raft_transfer_target(r), 2);
    raft_get_update(r, &u);
    assert_null(find_msg(&u, RAFT_MSG_TIMEOUT_NOW, 2));
    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "x", 1, &index, &term),
                     IKD_EBUSY);

    ack_all(r, 3);
    raft_get_update(r, &u);
    assert_null(find_msg(&u, RAFT_MSG_TIMEOUT_NOW, 3));
    ack_all(r, 2);
    raft_get_update(r, &u);
    assert_non_null(find_msg(&u, RAFT_MSG_TIMEOUT_NOW, 2));
    assert_true(log_contains("send timeout-now"));

    /* The target's election deposes the leader and ends the transfer. */
    m = vote_req(2, 1, raft_term(r) + 1, raft_last_index(r), raft_term(r));
    m.vote.transfer = true;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    assert_int_equal(raft_transfer_target(r), 0);
    raft_free(r);
}

static void test_transfer_to_best_follower_and_abandoned(void **state)
{
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    raft_index_t index;
    raft_term_t term;
    unsigned i;

    (void)state;
    assert_int_equal(raft_transfer(r, 2), IKD_ENOTLEADER);
    make_leader(r, 3);
    ack_all(r, 3);
    ack_all(r, 2);
    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "x", 1, &index, &term),
                     0);
    persist_all(r);
    ack_all(r, 3);
    assert_int_equal(raft_transfer(r, 9), -EINVAL);
    assert_int_equal(raft_transfer(r, 1), 0);
    assert_int_equal(raft_transfer_target(r), 0);
    assert_int_equal(raft_transfer(r, 0), 0);
    assert_int_equal(raft_transfer_target(r), 3);
    raft_get_update(r, &u);
    assert_non_null(find_msg(&u, RAFT_MSG_TIMEOUT_NOW, 3));

    /* No election follows: after an election timeout the leader stays
     * and takes proposals again. */
    for (i = 0; i < ELECTION_TICKS; i++) {
        ack_all(r, 2);
        raft_tick(r);
    }
    assert_int_equal(raft_role(r), RAFT_LEADER);
    assert_int_equal(raft_transfer_target(r), 0);
    assert_true(log_contains("timed out -> stop it"));
    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "x", 1, &index, &term),
                     0);
    raft_free(r);
}

static void test_single_node_transfer_has_no_target(void **state)
{
    struct raft *r = node_new(1, 1);

    (void)state;
    tick_until_candidate(r);
    assert_int_equal(raft_transfer(r, 0), -EINVAL);
    raft_free(r);
}

static void test_timeout_now_campaigns_at_once_as_transfer(void **state)
{
    struct raft *r = prevote_node(2, 3);
    struct raft_update u;
    struct raft_msg m;
    const struct raft_msg *v;

    (void)state;
    m = append_req(1, 2, 3, 0, 0, 0);
    assert_int_equal(raft_step(r, &m), 0);
    raft_get_update(r, &u);
    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_TIMEOUT_NOW;
    m.from = 1;
    m.to = 2;
    m.term = 3;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_CANDIDATE);
    assert_int_equal(raft_term(r), 4);
    raft_get_update(r, &u);
    v = find_msg(&u, RAFT_MSG_VOTE, 3);
    assert_non_null(v);
    assert_true(v->vote.transfer);
    assert_null(find_msg(&u, RAFT_MSG_PREVOTE, 3));

    /* A candidate ignores a second one. */
    assert_int_equal(raft_step(r, &m), 0);
    raft_free(r);
}

static void test_match_index_reported_on_leader_only(void **state)
{
    struct raft *r = node_new(1, 3);

    (void)state;
    assert_int_equal(raft_match_index(r, 2), 0);
    make_leader(r, 3);
    ack_all(r, 2);
    assert_int_equal(raft_match_index(r, 2), raft_last_index(r));
    assert_int_equal(raft_match_index(r, 3), 0);
    assert_int_equal(raft_match_index(r, 9), 0);
    raft_free(r);
}

/* ---- Log compaction and snapshots (Raft 7) ---------------------------- */

static struct raft_msg snapshot_msg(raft_id_t from,
                                    raft_id_t to,
                                    raft_term_t term,
                                    raft_index_t index,
                                    raft_term_t index_term)
{
    struct raft_msg m;

    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_SNAPSHOT;
    m.from = from;
    m.to = to;
    m.term = term;
    m.snapshot.index = index;
    m.snapshot.term = index_term;
    return m;
}

/* Leader 1 of three in term 2 over a log of term 1: its entry 5 is
 * committed with follower 2, applied, and the log compacted up to 4.
 * Follower 3 rejected the first probe and needs index 3, before the log
 * start.  The update that asks for its snapshot is left for the caller. */
static struct raft *compacted_leader(void)
{
    const raft_term_t terms[] = {1, 1, 1, 1};
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    struct raft_msg m;

    load_terms(r, 1, 0, terms, 4);
    make_leader(r, 3);
    raft_get_update(r, &u);
    m = append_resp(3, 1, 2, false, 4);
    m.append_resp.hint_index = 2;
    m.append_resp.hint_term = 1;
    assert_int_equal(raft_step(r, &m), 0);
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 5);
    raft_applied(r, 5);
    assert_int_equal(raft_compact(r, 4), 0);
    assert_int_equal(raft_first_index(r), 5);
    assert_int_equal(raft_prev_term(r), 1);
    return r;
}

/* A heartbeat to follower 3 at the log start, as sent while it waits. */
static void assert_heartbeat_at_start(const struct raft_update *u)
{
    const struct raft_msg *m = find_msg(u, RAFT_MSG_APPEND, 3);

    assert_non_null(m);
    assert_int_equal(count_msgs(u, RAFT_MSG_APPEND, 3), 1);
    assert_int_equal(m->append.n_entries, 0);
    assert_int_equal(m->append.prev_index, 4);
    assert_int_equal(m->append.prev_term, 1);
}

static void heartbeat(struct raft *r, struct raft_update *u)
{
    unsigned i;

    for (i = 0; i < HEARTBEAT_TICKS; i++) {
        raft_tick(r);
    }
    raft_get_update(r, u);
}

static void test_compaction_keeps_last_compacted_term_for_consistency(
    void **state)
{
    const raft_term_t terms[] = {1, 1, 2, 2};
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    const struct raft_msg *a;
    raft_id_t peer;

    (void)state;
    load_terms(r, 2, 4, terms, 4);
    make_leader(r, 3);
    assert_int_equal(raft_compact(r, 4), 0);
    assert_int_equal(raft_first_index(r), 5);
    assert_int_equal(raft_prev_term(r), 2);
    assert_null(raft_entry_at(r, 4));

    /* The new leader's entry 5 follows the compacted entry 4: the
     * consistency check (Raft 5.3) carries the term it remembered. */
    raft_get_update(r, &u);
    for (peer = 2; peer <= 3; peer++) {
        a = find_msg(&u, RAFT_MSG_APPEND, peer);
        assert_non_null(a);
        assert_int_equal(a->append.prev_index, 4);
        assert_int_equal(a->append.prev_term, 2);
        assert_int_equal(a->append.n_entries, 1);
        assert_int_equal(a->append.entries[0].term, 3);
        assert_null(find_msg(&u, RAFT_MSG_SNAPSHOT, peer));
    }
    raft_free(r);
}

static void test_compact_refuses_index_not_applied_or_not_durable(void **state)
{
    const raft_term_t terms[] = {1, 1, 1};
    const raft_term_t more[] = {1, 1};
    struct raft *r = node_new(2, 3);
    struct raft_msg m = append_req(1, 2, 1, 3, 1, 5);

    (void)state;
    load_terms(r, 1, 2, terms, 3);
    assert_int_equal(raft_compact(r, 3), -EINVAL); /* not applied */
    assert_int_equal(raft_first_index(r), 1);

    /* Entries 4 and 5 are committed and applied but not durable yet. */
    m.append.entries = make_entries(more, 2);
    m.append.n_entries = 2;
    assert_int_equal(raft_step(r, &m), 0);
    raft_applied(r, 5);
    assert_int_equal(raft_persisted_index(r), 3);
    assert_int_equal(raft_compact(r, 4), -EINVAL);
    assert_int_equal(raft_compact(r, 6), -EINVAL); /* past the end */
    assert_int_equal(raft_first_index(r), 1);

    assert_int_equal(raft_compact(r, 3), 0);
    assert_int_equal(raft_first_index(r), 4);
    /* At or below what was compacted: nothing to do. */
    assert_int_equal(raft_compact(r, 3), 0);
    assert_int_equal(raft_compact(r, 1), 0);
    assert_int_equal(raft_first_index(r), 4);
    assert_int_equal(raft_last_index(r), 5);

    raft_persisted(r, 5, 1);
    assert_int_equal(raft_compact(r, 5), 0);
    assert_int_equal(raft_first_index(r), 6);
    assert_int_equal(raft_last_index(r), 5);
    assert_int_equal(raft_prev_term(r), 1);
    raft_free(r);
}

static void test_leader_asks_snapshot_once_and_only_heartbeats_meanwhile(
    void **state)
{
    struct raft *r = compacted_leader();
    struct raft_update u;
    const struct raft_msg *m;
    raft_index_t index;
    raft_term_t term;
    int i;

    (void)state;
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_SNAPSHOT, 3), 1);
    m = find_msg(&u, RAFT_MSG_SNAPSHOT, 3);
    assert_int_equal(m->term, 2);
    assert_int_equal(m->snapshot.index, 4);
    assert_int_equal(m->snapshot.term, 1);
    assert_null(find_msg(&u, RAFT_MSG_SNAPSHOT, 2));
    assert_true(raft_snapshot_pending(r, 3));
    assert_false(raft_snapshot_pending(r, 2));

    /* New entries and heartbeats go on; follower 3 gets only heartbeats
     * at the log start and no second request. */
    for (i = 0; i < 3; i++) {
        assert_int_equal(
            raft_propose(r, RAFT_ENTRY_COMMAND, "b", 1, &index, &term), 0);
        heartbeat(r, &u);
        assert_int_equal(count_msgs(&u, RAFT_MSG_SNAPSHOT, 3), 0);
        assert_heartbeat_at_start(&u);
        assert_non_null(find_msg(&u, RAFT_MSG_APPEND, 2));
    }
    assert_true(raft_snapshot_pending(r, 3));
    raft_free(r);
}

static void test_rejected_heartbeat_during_snapshot_changes_nothing(
    void **state)
{
    struct raft *r = compacted_leader();
    struct raft_update u;
    struct raft_msg m = append_resp(3, 1, 2, false, 4);

    (void)state;
    raft_get_update(r, &u);
    assert_true(raft_snapshot_pending(r, 3));

    /* Follower 3 has nothing yet: it rejects the heartbeat. */
    m.append_resp.hint_index = 0;
    assert_int_equal(raft_step(r, &m), 0);
    assert_false(raft_has_update(r));
    assert_true(raft_snapshot_pending(r, 3));
    assert_int_equal(raft_match_index(r, 3), 0);

    heartbeat(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_SNAPSHOT, 3), 0);
    assert_heartbeat_at_start(&u);
    raft_free(r);
}

static void test_snapshot_failed_asks_again_at_a_later_heartbeat(void **state)
{
    struct raft *r = compacted_leader();
    struct raft_update u;
    raft_index_t index;
    raft_term_t term;

    (void)state;
    raft_get_update(r, &u);
    raft_snapshot_failed(r, 3);
    assert_false(raft_snapshot_pending(r, 3));
    assert_false(raft_has_update(r));
    /* Reports about a follower not waiting, or from a non-leader, are
     * ignored. */
    raft_snapshot_failed(r, 2);
    raft_snapshot_failed(r, 1);
    assert_false(raft_has_update(r));

    /* An update taken for another reason before the heartbeat does not
     * ask again yet. */
    assert_int_equal(raft_propose(r, RAFT_ENTRY_COMMAND, "x", 1, &index, &term),
                     0);
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_SNAPSHOT, 3), 0);
    heartbeat(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_SNAPSHOT, 3), 1);
    assert_int_equal(find_msg(&u, RAFT_MSG_SNAPSHOT, 3)->snapshot.index, 4);
    assert_true(raft_snapshot_pending(r, 3));
    raft_free(r);
}

/* The follower's answer to the install was lost, but a rejection whose
 * hint reaches the snapshot's index shows it has it. */
static void test_rejection_reaching_snapshot_index_ends_wait(void **state)
{
    struct raft *r = compacted_leader();
    struct raft_update u;
    struct raft_msg m = append_resp(3, 1, 2, false, 4);

    (void)state;
    raft_get_update(r, &u);
    assert_true(raft_snapshot_pending(r, 3));
    m.append_resp.hint_index = 4;
    m.append_resp.hint_term = 1;
    assert_int_equal(raft_step(r, &m), 0);
    assert_false(raft_snapshot_pending(r, 3));
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_SNAPSHOT, 3), 0);
    raft_free(r);
}

static void test_snapshot_success_ends_wait_and_replication_resumes(
    void **state)
{
    struct raft *r = compacted_leader();
    struct raft_update u;
    struct raft_msg m = append_resp(3, 1, 2, true, 4);
    const struct raft_msg *a;

    (void)state;
    raft_get_update(r, &u);
    assert_int_equal(raft_step(r, &m), 0);
    assert_false(raft_snapshot_pending(r, 3));
    assert_int_equal(raft_match_index(r, 3), 4);
    raft_get_update(r, &u);
    assert_int_equal(count_msgs(&u, RAFT_MSG_SNAPSHOT, 3), 0);
    a = find_msg(&u, RAFT_MSG_APPEND, 3);
    assert_non_null(a);
    assert_int_equal(a->append.prev_index, 4);
    assert_int_equal(a->append.prev_term, 1);
    assert_int_equal(a->append.n_entries, 1);
    raft_free(r);
}

static void test_snapshot_install_replies_success_at_its_index(void **state)
{
    const raft_term_t terms[] = {1, 1};
    struct raft *r = node_new(2, 3);
    struct raft_msg m = snapshot_msg(1, 2, 2, 5, 2);
    struct raft_update u;
    const struct raft_msg *resp;

    (void)state;
    load_terms(r, 1, 0, terms, 2);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_term(r), 2);
    assert_int_equal(raft_leader(r), 1);
    raft_get_update(r, &u);
    assert_int_equal(u.snapshot_index, 5);
    assert_int_equal(u.snapshot_term, 2);
    assert_int_equal(u.commit, 5);
    assert_true(u.hard_state_changed);
    resp = find_msg(&u, RAFT_MSG_APPEND_RESP, 1);
    assert_non_null(resp);
    assert_int_equal(resp->term, 2);
    assert_true(resp->append_resp.success);
    assert_int_equal(resp->append_resp.index, 5);

    /* Reported once. */
    raft_get_update(r, &u);
    assert_int_equal(u.snapshot_index, 0);
    raft_free(r);
}

static void test_snapshot_matching_log_keeps_entries_after_it(void **state)
{
    const raft_term_t terms[] = {1, 1, 1, 2, 2};
    struct raft *r = node_new(2, 3);
    struct raft_msg m = snapshot_msg(1, 2, 2, 3, 1);
    struct raft_update u;

    (void)state;
    load_terms(r, 2, 0, terms, 5);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_first_index(r), 4);
    assert_int_equal(raft_prev_term(r), 1);
    assert_int_equal(raft_last_index(r), 5);
    assert_int_equal(raft_entry_at(r, 4)->term, 2);
    assert_int_equal(raft_entry_at(r, 5)->term, 2);
    assert_int_equal(raft_commit(r), 3);
    assert_int_equal(raft_applied_index(r), 3);
    raft_get_update(r, &u);
    assert_int_equal(u.snapshot_index, 3);
    assert_int_equal(u.snapshot_term, 1);
    /* The kept entries are written again behind the snapshot. */
    assert_int_equal(u.log_dirty_from, 4);
    raft_free(r);
}

static void test_snapshot_conflicting_log_is_dropped(void **state)
{
    const raft_term_t terms[] = {1, 1, 1, 2, 2};
    struct raft *r = node_new(2, 3);
    struct raft_msg m = snapshot_msg(1, 2, 3, 4, 3);
    struct raft_update u;

    (void)state;
    load_terms(r, 2, 0, terms, 5);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_first_index(r), 5);
    assert_int_equal(raft_last_index(r), 4);
    assert_int_equal(raft_prev_term(r), 3);
    assert_null(raft_entry_at(r, 5));
    assert_int_equal(raft_commit(r), 4);
    raft_get_update(r, &u);
    assert_int_equal(u.snapshot_index, 4);
    assert_int_equal(u.log_dirty_from, 5);
    raft_free(r);

    /* A snapshot past the end of the log replaces it too. */
    r = node_new(2, 3);
    load_terms(r, 2, 0, terms, 5);
    m = snapshot_msg(1, 2, 3, 9, 3);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_first_index(r), 10);
    assert_int_equal(raft_last_index(r), 9);
    assert_int_equal(raft_commit(r), 9);
    raft_free(r);

    /* So does a follower that never held an entry. */
    r = node_new(2, 3);
    m = snapshot_msg(1, 2, 3, 9, 3);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_first_index(r), 10);
    assert_int_equal(raft_last_index(r), 9);
    assert_int_equal(raft_prev_term(r), 3);
    raft_free(r);
}

static void test_snapshot_not_ahead_of_commit_answered_with_commit(void **state)
{
    const raft_term_t terms[] = {1, 1, 1, 2, 2};
    const raft_index_t indexes[] = {3, 4};
    struct raft *r = node_new(2, 3);
    struct raft_update u;
    const struct raft_msg *resp;
    size_t i;

    (void)state;
    load_terms(r, 2, 4, terms, 5);
    for (i = 0; i < 2; i++) {
        struct raft_msg m = snapshot_msg(1, 2, 2, indexes[i], terms[i + 2]);

        assert_int_equal(raft_step(r, &m), 0);
        raft_get_update(r, &u);
        assert_int_equal(u.snapshot_index, 0);
        assert_int_equal(u.log_dirty_from, 0);
        resp = find_msg(&u, RAFT_MSG_APPEND_RESP, 1);
        assert_non_null(resp);
        assert_true(resp->append_resp.success);
        assert_int_equal(resp->append_resp.index, 4);
        assert_int_equal(raft_first_index(r), 1);
        assert_int_equal(raft_last_index(r), 5);
        assert_int_equal(raft_commit(r), 4);
    }
    raft_free(r);
}

/* raft_load() on a fresh core must refuse this state. */
static void assert_load_corrupt(raft_term_t term,
                                raft_index_t applied,
                                raft_index_t first_index,
                                raft_term_t prev_term,
                                const raft_term_t *terms,
                                size_t n)
{
    struct raft *r = node_new(1, 3);

    assert_int_equal(raft_load(r, term, 0, applied, first_index, prev_term,
                               make_entries(terms, n), n),
                     IKD_ECORRUPT);
    raft_free(r);
}

static void test_load_after_compaction_restores_prev_term(void **state)
{
    const raft_term_t terms[] = {2, 3};
    const raft_term_t down[] = {1, 3};
    struct raft *r = node_new(1, 3);
    struct raft_update u;
    const struct raft_msg *v;

    (void)state;
    assert_int_equal(raft_load(r, 3, 0, 5, 6, 2, make_entries(terms, 2), 2), 0);
    assert_int_equal(raft_first_index(r), 6);
    assert_int_equal(raft_prev_term(r), 2);
    assert_int_equal(raft_last_index(r), 7);
    assert_int_equal(raft_commit(r), 5);
    assert_int_equal(raft_applied_index(r), 5);
    assert_int_equal(raft_persisted_index(r), 7);
    assert_null(raft_entry_at(r, 5));
    assert_int_equal(raft_entry_at(r, 6)->term, 2);
    assert_false(raft_has_update(r));
    raft_free(r);

    /* Everything compacted: the last entry is the compacted one, which
     * is what a vote request reports (Raft 5.4.1). */
    r = node_new(1, 3);
    assert_int_equal(raft_load(r, 3, 0, 5, 6, 2, NULL, 0), 0);
    assert_int_equal(raft_last_index(r), 5);
    tick_until_candidate(r);
    raft_get_update(r, &u);
    v = find_msg(&u, RAFT_MSG_VOTE, 2);
    assert_non_null(v);
    assert_int_equal(v->vote.last_index, 5);
    assert_int_equal(v->vote.last_term, 2);
    raft_free(r);

    assert_load_corrupt(3, 4, 6, 2, terms, 2); /* compacted, not applied */
    assert_load_corrupt(3, 5, 6, 0, terms, 2); /* no term before the log */
    assert_load_corrupt(3, 0, 1, 1, terms, 2); /* a term before index 1 */
    assert_load_corrupt(3, 5, 6, 2, down, 2);  /* terms go down */
    assert_load_corrupt(3, 5, 6, 4, terms, 2); /* prev_term past term */
    assert_load_corrupt(3, 8, 6, 2, terms, 2); /* applied past the end */
    assert_load_corrupt(3, 0, 0, 0, terms, 2); /* no index 0 */
}

/* ---- Simulated cluster ------------------------------------------------ */

/* Seeds the random test runs; raise it for a longer search. */
#ifndef SIM_SEEDS
#define SIM_SEEDS 300
#endif
#define SIM_MAX_NODES 5
#define SIM_MAX_TERMS 4096
#define SIM_MAX_READS 4096

/* What the random runs exercised, summed over all seeds, so that a change
 * that makes them vacuous fails the test. */
static struct
{
    uint64_t committed;
    uint64_t reads;
    uint64_t truncations;
    uint64_t crashes;
    uint64_t elections;
} sim_stats;

struct sim_node
{
    struct raft *r;
    bool up;
    unsigned restarts;
    /* Durable state, kept only from what updates handed out. */
    raft_term_t term;
    raft_id_t vote;
    struct raft_entry *log; /* index i + 1 */
    size_t n_log;
    raft_index_t applied;
};

struct sim
{
    size_t n;
    uint64_t seed;
    uint64_t rng;
    struct sim_node nodes[SIM_MAX_NODES];
    struct raft_msg *queue;
    size_t n_queue;
    size_t cap_queue;
    bool cut[SIM_MAX_NODES + 1][SIM_MAX_NODES + 1];
    unsigned drop_pct;
    bool reorder;
    raft_id_t leader_of_term[SIM_MAX_TERMS];
    struct raft_entry *committed; /* index i + 1 */
    size_t n_committed;
    raft_index_t read_floor[SIM_MAX_READS];
    uint64_t n_reads;
};

static uint64_t sim_rand(struct sim *s)
{
    uint64_t z = (s->rng += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static unsigned sim_pct(struct sim *s)
{
    return (unsigned)(sim_rand(s) % 100);
}

static void entry_copy(struct raft_entry *dst, const struct raft_entry *src)
{
    *dst = *src;
    dst->data = NULL;
    if (src->len > 0) {
        dst->data = malloc(src->len);
        assert_non_null(dst->data);
        memcpy(dst->data, src->data, src->len);
    }
}

static bool entry_equal(const struct raft_entry *a, const struct raft_entry *b)
{
    return a->term == b->term && a->type == b->type && a->len == b->len &&
           (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void free_entry_array(struct raft_entry *e, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(e[i].data);
    }
    free(e);
}

static void msg_free(struct raft_msg *m)
{
    if (m->type == RAFT_MSG_APPEND) {
        free_entry_array(m->append.entries, m->append.n_entries);
    }
}

static void sim_start_node(struct sim *s, size_t i)
{
    struct sim_node *sn = &s->nodes[i];
    struct raft_config cfg =
        make_config((raft_id_t)(i + 1), s->n, s->seed * 131 + sn->restarts);

    cfg.log_cb = NULL;
    cfg.max_append_entries = 4;
    cfg.disable_prevote = s->seed % 2 == 0;
    sn->r = raft_new(&cfg);
    assert_non_null(sn->r);
    assert_int_equal(raft_load(sn->r, sn->term, sn->vote, sn->applied, 1, 0,
                               sn->log, sn->n_log),
                     0);
    sn->up = true;
}

static void sim_init(struct sim *s, size_t n, uint64_t seed)
{
    size_t i;

    memset(s, 0, sizeof(*s));
    s->n = n;
    s->seed = seed;
    s->rng = seed;
    for (i = 0; i < n; i++) {
        sim_start_node(s, i);
    }
}

static void sim_free(struct sim *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        raft_free(s->nodes[i].r);
        free_entry_array(s->nodes[i].log, s->nodes[i].n_log);
    }
    for (i = 0; i < s->n_queue; i++) {
        msg_free(&s->queue[i]);
    }
    free(s->queue);
    free_entry_array(s->committed, s->n_committed);
}

static void sim_send(struct sim *s, const struct raft_msg *m)
{
    struct raft_msg *copy;
    size_t i;

    if (s->cut[m->from][m->to] || sim_pct(s) < s->drop_pct) {
        return;
    }
    if (s->n_queue == s->cap_queue) {
        s->cap_queue = s->cap_queue == 0 ? 64 : 2 * s->cap_queue;
        s->queue = realloc(s->queue, s->cap_queue * sizeof(*s->queue));
        assert_non_null(s->queue);
    }
    copy = &s->queue[s->n_queue++];
    *copy = *m;
    if (m->type == RAFT_MSG_APPEND && m->append.n_entries > 0) {
        copy->append.entries =
            calloc(m->append.n_entries, sizeof(struct raft_entry));
        assert_non_null(copy->append.entries);
        for (i = 0; i < m->append.n_entries; i++) {
            entry_copy(&copy->append.entries[i], &m->append.entries[i]);
        }
    } else if (m->type == RAFT_MSG_APPEND) {
        copy->append.entries = NULL;
    }
}

/* Store what the update says must become durable, as the real storage
 * would: hard state, then the log from log_dirty_from on. */
static void sim_persist(struct sim_node *sn, const struct raft_update *u)
{
    raft_index_t i;
    raft_index_t last = raft_last_index(sn->r);

    if (u->hard_state_changed) {
        assert_true(u->term >= sn->term);
        sn->term = u->term;
        sn->vote = u->vote;
    }
    if (u->log_dirty_from == 0) {
        return;
    }
    assert_true(u->log_dirty_from > sn->applied);
    if (u->log_dirty_from <= sn->n_log) {
        sim_stats.truncations++;
    }
    for (i = u->log_dirty_from; i <= sn->n_log; i++) {
        free(sn->log[i - 1].data);
    }
    sn->n_log = (size_t)(u->log_dirty_from - 1);
    sn->log = realloc(sn->log, ((size_t)last + 1) * sizeof(*sn->log));
    assert_non_null(sn->log);
    for (i = u->log_dirty_from; i <= last; i++) {
        entry_copy(&sn->log[i - 1], raft_entry_at(sn->r, i));
    }
    sn->n_log = (size_t)last;
}

/* Committed entries never change and are the same on every node. */
static void sim_check_commit(struct sim *s,
                             struct sim_node *sn,
                             raft_index_t commit)
{
    raft_index_t i;
    const struct raft_entry *e;

    assert_true(commit >= sn->applied);
    assert_true(commit <= raft_last_index(sn->r));
    for (i = sn->applied + 1; i <= commit; i++) {
        e = raft_entry_at(sn->r, i);
        assert_non_null(e);
        if (i <= s->n_committed) {
            assert_true(entry_equal(e, &s->committed[i - 1]));
            continue;
        }
        assert_int_equal(i, s->n_committed + 1);
        s->committed = realloc(s->committed, (size_t)i * sizeof(*e));
        assert_non_null(s->committed);
        entry_copy(&s->committed[i - 1], e);
        s->n_committed = (size_t)i;
    }
}

static void sim_check_reads(struct sim *s, const struct raft_update *u)
{
    size_t i;

    /* Linearizability: a read sees every write committed anywhere before
     * it was asked for. */
    for (i = 0; i < u->n_reads; i++) {
        assert_true(u->reads[i].ctx < s->n_reads);
        assert_true(u->reads[i].index >= s->read_floor[u->reads[i].ctx]);
        sim_stats.reads++;
    }
}

static void sim_process(struct sim *s, size_t idx)
{
    struct sim_node *sn = &s->nodes[idx];
    struct raft_update u;
    raft_index_t last;
    size_t i;
    int rounds;

    for (rounds = 0; raft_has_update(sn->r); rounds++) {
        assert_true(rounds < 100);
        raft_get_update(sn->r, &u);
        if (u.role == RAFT_LEADER) {
            /* Election safety (Raft 5.2): one leader per term. */
            assert_true(u.term < SIM_MAX_TERMS);
            assert_true(s->leader_of_term[u.term] == 0 ||
                        s->leader_of_term[u.term] == raft_id(sn->r));
            if (s->leader_of_term[u.term] == 0) {
                sim_stats.elections++;
            }
            s->leader_of_term[u.term] = raft_id(sn->r);
        }
        sim_persist(sn, &u);
        for (i = 0; i < u.n_msgs; i++) {
            sim_send(s, &u.msgs[i]);
        }
        sim_check_reads(s, &u);
        sim_check_commit(s, sn, u.commit);
        sn->applied = u.commit;
        raft_applied(sn->r, u.commit);
        last = raft_last_index(sn->r);
        if (u.log_dirty_from != 0 && last > 0) {
            raft_persisted(sn->r, last, raft_entry_at(sn->r, last)->term);
        }
    }
}

static void sim_deliver_one(struct sim *s)
{
    size_t pick = s->reorder ? (size_t)(sim_rand(s) % s->n_queue) : 0;
    struct raft_msg m = s->queue[pick];
    size_t to = m.to - 1;
    int rv;

    memmove(&s->queue[pick], &s->queue[pick + 1],
            (s->n_queue - pick - 1) * sizeof(*s->queue));
    s->n_queue--;
    if (s->nodes[to].up && !s->cut[m.from][m.to]) {
        rv = raft_step(s->nodes[to].r, &m);
        assert_int_equal(rv, 0);
        sim_process(s, to);
    }
    msg_free(&m);
}

/* Log Matching (Raft 5.3): same index and term means same prefix. */
static void sim_check_logs_match(struct sim *s)
{
    size_t a;
    size_t b;
    raft_index_t i;
    raft_index_t top;

    for (a = 0; a < s->n; a++) {
        for (b = a + 1; b < s->n; b++) {
            struct raft *ra = s->nodes[a].r;
            struct raft *rb = s->nodes[b].r;

            if (ra == NULL || rb == NULL) {
                continue;
            }

            top = raft_last_index(ra) < raft_last_index(rb)
                      ? raft_last_index(ra)
                      : raft_last_index(rb);
            while (top > 0 && raft_entry_at(ra, top)->term !=
                                  raft_entry_at(rb, top)->term) {
                top--;
            }
            for (i = 1; i <= top; i++) {
                assert_true(
                    entry_equal(raft_entry_at(ra, i), raft_entry_at(rb, i)));
            }
        }
    }
}

/* One unit of time: every live node ticks, then the network drains. */
static void sim_round(struct sim *s)
{
    size_t i;
    size_t delivered;

    for (i = 0; i < s->n; i++) {
        if (s->nodes[i].up) {
            raft_tick(s->nodes[i].r);
            sim_process(s, i);
        }
    }
    for (delivered = 0; s->n_queue > 0; delivered++) {
        assert_true(delivered < 100000);
        sim_deliver_one(s);
    }
    sim_check_logs_match(s);
}

static void sim_crash(struct sim *s, size_t i)
{
    raft_free(s->nodes[i].r);
    s->nodes[i].r = NULL;
    s->nodes[i].up = false;
    s->nodes[i].restarts++;
    sim_stats.crashes++;
}

static void sim_restart(struct sim *s, size_t i)
{
    sim_start_node(s, i);
    sim_process(s, i);
}

static void sim_isolate(struct sim *s, size_t victim, bool on)
{
    size_t i;
    raft_id_t v = (raft_id_t)(victim + 1);

    for (i = 1; i <= s->n; i++) {
        if (i != v) {
            s->cut[v][i] = on;
            s->cut[i][v] = on;
        }
    }
}

static void sim_heal(struct sim *s)
{
    memset(s->cut, 0, sizeof(s->cut));
    s->drop_pct = 0;
    s->reorder = false;
}

static raft_index_t sim_max_commit(const struct sim *s)
{
    return (raft_index_t)s->n_committed;
}

static struct raft *sim_leader(struct sim *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        if (s->nodes[i].up && raft_role(s->nodes[i].r) == RAFT_LEADER) {
            return s->nodes[i].r;
        }
    }
    return NULL;
}

static void sim_client(struct sim *s, unsigned round)
{
    struct raft *l = sim_leader(s);
    char data[32];
    raft_index_t index;
    raft_term_t term;
    int len;

    if (l == NULL) {
        return;
    }
    if (sim_pct(s) < 30) {
        len = snprintf(data, sizeof(data), "s%" PRIu64 "r%u", s->seed, round);
        assert_int_equal(raft_propose(l, RAFT_ENTRY_COMMAND, data, (size_t)len,
                                      &index, &term),
                         0);
        sim_process(s, raft_id(l) - 1);
    }
    if (sim_pct(s) < 20 && s->n_reads < SIM_MAX_READS) {
        s->read_floor[s->n_reads] = sim_max_commit(s);
        assert_int_equal(raft_read_index(l, s->n_reads), 0);
        s->n_reads++;
        sim_process(s, raft_id(l) - 1);
    }
}

static void sim_faults(struct sim *s)
{
    size_t victim = (size_t)(sim_rand(s) % s->n);
    unsigned p = sim_pct(s);

    if (p < 3) {
        sim_heal(s);
    } else if (p < 6) {
        sim_isolate(s, victim, true);
    } else if (p < 8) {
        s->drop_pct = (unsigned)(sim_rand(s) % 40);
    } else if (p < 9) {
        s->reorder = !s->reorder;
    } else if (p < 11 && s->nodes[victim].up) {
        sim_crash(s, victim);
    }
    for (victim = 0; victim < s->n; victim++) {
        if (!s->nodes[victim].up && sim_pct(s) < 10) {
            sim_restart(s, victim);
        }
    }
}

/* With the network whole, a leader emerges that every node follows, and
 * a new proposal commits everywhere. */
static bool sim_all_follow_and_commit(struct sim *s,
                                      struct raft *l,
                                      raft_index_t index)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        if (raft_commit(s->nodes[i].r) < index ||
            raft_leader(s->nodes[i].r) != raft_id(l)) {
            return false;
        }
    }
    return true;
}

/* With the network whole, a leader emerges that every node follows, and
 * a new proposal commits everywhere.  A node that campaigned alone may
 * depose the first leader once; the proposal is then made again. */
static void sim_check_liveness(struct sim *s)
{
    struct raft *l;
    raft_index_t index = 0;
    raft_term_t term = 0;
    unsigned round;
    size_t i;
    bool done = false;

    sim_heal(s);
    for (i = 0; i < s->n; i++) {
        if (!s->nodes[i].up) {
            sim_restart(s, i);
        }
    }
    for (round = 0; round < 400 && !done; round++) {
        sim_round(s);
        l = sim_leader(s);
        if (l == NULL) {
            continue;
        }
        if (raft_term(l) != term) {
            assert_int_equal(
                raft_propose(l, RAFT_ENTRY_COMMAND, "live", 4, &index, &term),
                0);
            sim_process(s, raft_id(l) - 1);
        }
        done = sim_all_follow_and_commit(s, l, index) &&
               raft_entry_at(l, index)->term == term;
    }
    assert_true(done);
}

static void run_random_cluster(uint64_t seed)
{
    struct sim s;
    unsigned round;

    sim_init(&s, 3, seed);
    for (round = 0; round < 300; round++) {
        sim_faults(&s);
        sim_client(&s, round);
        sim_round(&s);
    }
    sim_check_liveness(&s);
    sim_stats.committed += s.n_committed;
    sim_free(&s);
}

static void test_random_cluster_keeps_safety_and_elects(void **state)
{
    uint64_t seed;

    (void)state;
    memset(&sim_stats, 0, sizeof(sim_stats));
    for (seed = 1; seed <= SIM_SEEDS; seed++) {
        run_random_cluster(seed);
    }
    print_message("random runs: committed=%" PRIu64 " reads=%" PRIu64
                  " truncations=%" PRIu64 " crashes=%" PRIu64
                  " elections=%" PRIu64 "\n",
                  sim_stats.committed, sim_stats.reads, sim_stats.truncations,
                  sim_stats.crashes, sim_stats.elections);
    assert_true(sim_stats.committed > SIM_SEEDS * 20);
    assert_true(sim_stats.reads > SIM_SEEDS * 5);
    assert_true(sim_stats.truncations > SIM_SEEDS / 30);
    assert_true(sim_stats.crashes > SIM_SEEDS);
    assert_true(sim_stats.elections > SIM_SEEDS * 3);
}

static void test_five_node_cluster_survives_two_failures(void **state)
{
    struct sim s;
    unsigned round;
    struct raft *l;
    raft_index_t index;
    raft_term_t term;
    raft_id_t victim;

    (void)state;
    sim_init(&s, 5, 99);
    for (round = 0; round < 60 && sim_leader(&s) == NULL; round++) {
        sim_round(&s);
    }
    l = sim_leader(&s);
    assert_non_null(l);
    victim = raft_id(l);
    sim_crash(&s, victim - 1);
    sim_crash(&s, victim % 5);
    for (round = 0; round < 100 && sim_leader(&s) == NULL; round++) {
        sim_round(&s);
    }
    l = sim_leader(&s);
    assert_non_null(l);
    assert_int_equal(raft_propose(l, RAFT_ENTRY_COMMAND, "x", 1, &index, &term),
                     0);
    sim_process(&s, raft_id(l) - 1);
    for (round = 0; round < 20 && raft_commit(l) < index; round++) {
        sim_round(&s);
    }
    assert_true(raft_commit(l) >= index);
    sim_check_liveness(&s);
    sim_free(&s);
}

static void test_same_seed_same_run(void **state)
{
    struct sim a;
    struct sim b;
    unsigned round;
    size_t i;

    (void)state;
    sim_init(&a, 3, 7);
    sim_init(&b, 3, 7);
    for (round = 0; round < 100; round++) {
        sim_faults(&a);
        sim_faults(&b);
        sim_round(&a);
        sim_round(&b);
        for (i = 0; i < 3; i++) {
            assert_int_equal(a.nodes[i].up, b.nodes[i].up);
            if (a.nodes[i].up) {
                assert_int_equal(raft_term(a.nodes[i].r),
                                 raft_term(b.nodes[i].r));
                assert_int_equal(raft_role(a.nodes[i].r),
                                 raft_role(b.nodes[i].r));
            }
        }
    }
    sim_free(&a);
    sim_free(&b);
}

/* ---- Membership changes (Raft 4) -------------------------------------- */

/* n voters 1..n at 127.0.0.1:100<id>, then learners as listed. */
static struct raft_membership make_members(size_t n,
                                           const raft_id_t *learners,
                                           size_t n_learners)
{
    struct raft_membership m;
    size_t i;

    memset(&m, 0, sizeof(m));
    for (i = 0; i < n + n_learners; i++) {
        struct raft_server *sv = &m.servers[m.n++];

        sv->id = i < n ? (raft_id_t)(i + 1) : learners[i - n];
        sv->voter = i < n;
        snprintf(sv->addr, sizeof(sv->addr), "127.0.0.1:%u",
                 (unsigned)(1000 + sv->id));
    }
    return m;
}

static struct raft *member_new(raft_id_t id, const struct raft_membership *m)
{
    struct raft_config cfg = make_config(id, 0, id);
    struct raft *r;

    cfg.n_voters = 0;
    cfg.membership = m;
    r = raft_new(&cfg);
    n_log_lines = 0;
    assert_non_null(r);
    return r;
}

/* A leader of voters 1..3 with addresses, its no-op committed. */
static struct raft *member_leader(void)
{
    struct raft_membership m = make_members(3, NULL, 0);
    struct raft *r = member_new(1, &m);
    struct raft_update u;

    make_leader(r, 3);
    ack_all(r, 2);
    raft_get_update(r, &u);
    assert_int_equal(raft_commit(r), 1);
    return r;
}

static bool member_is(const struct raft *r, raft_id_t id, int voter)
{
    const struct raft_server *sv =
        raft_membership_find(raft_membership(r, NULL), id);

    return voter < 0 ? sv == NULL : sv != NULL && sv->voter == (voter == 1);
}

static void test_membership_encoding_round_trips_and_rejects_bad(void **state)
{
    const raft_id_t learners[] = {7};
    struct raft_membership m = make_members(3, learners, 1);
    struct raft_membership back;
    uint8_t buf[RAFT_MEMBERSHIP_MAX_BYTES];
    size_t len;

    (void)state;
    assert_int_equal(raft_membership_encode(&m, buf, sizeof(buf), &len), 0);
    assert_int_equal(raft_membership_decode(buf, len, &back), 0);
    assert_int_equal(back.n, 4);
    assert_false(back.servers[3].voter);
    assert_string_equal(back.servers[3].addr, "127.0.0.1:1007");
    assert_int_equal(raft_membership_decode(buf, len - 1, &back),
                     IKD_EMALFORMED);
    m.servers[1].id = 1; /* duplicate */
    assert_int_equal(raft_membership_encode(&m, buf, sizeof(buf), &len),
                     -EINVAL);
}

static void test_added_server_is_learner_in_effect_before_commit(void **state)
{
    struct raft *r = member_leader();
    struct raft_update u;
    raft_index_t index;

    (void)state;
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 4, "127.0.0.1:1004"), 0);
    assert_int_equal(raft_entry_at(r, 2)->type, RAFT_ENTRY_CONFIG);
    assert_true(member_is(r, 4, 0));
    raft_membership(r, &index);
    assert_int_equal(index, 2);
    assert_int_equal(raft_commit(r), 1);
    raft_get_update(r, &u);
    assert_true(u.membership_changed);
    assert_non_null(find_msg(&u, RAFT_MSG_APPEND, 4));
    assert_true(log_contains("servers=1,2,3,4(learner)"));
    raft_free(r);
}

static void test_second_change_refused_until_first_commits(void **state)
{
    struct raft *r = member_leader();

    (void)state;
    assert_int_equal(raft_change(r, RAFT_CHANGE_REMOVE, 3, NULL), 0);
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 5, "127.0.0.1:1005"),
                     IKD_ECHANGING);
    assert_int_equal(raft_change(r, RAFT_CHANGE_REMOVE, 2, NULL),
                     IKD_ECHANGING);
    persist_all(r);
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 2);
    assert_int_equal(raft_change(r, RAFT_CHANGE_REMOVE, 2, NULL), 0);
    raft_free(r);
}

static void test_repeated_change_reports_already_done(void **state)
{
    struct raft *r = member_leader();

    (void)state;
    assert_int_equal(raft_change(r, RAFT_CHANGE_REMOVE, 9, NULL), 1);
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 2, "127.0.0.1:1002"), 1);
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 2, "127.0.0.1:9"),
                     -EINVAL);
    /* Another id at a member's address is refused too. */
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 5, "127.0.0.1:1002"),
                     -EINVAL);
    assert_int_equal(raft_last_index(r), 1);
    raft_free(r);
}

static void test_learner_does_not_count_for_commit(void **state)
{
    struct raft *r = member_leader();

    (void)state;
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 4, "127.0.0.1:1004"), 0);
    persist_all(r);
    ack_all(r, 4);
    assert_int_equal(raft_commit(r), 1);
    ack_all(r, 3);
    assert_int_equal(raft_commit(r), 2);
    raft_free(r);
}

static void test_learner_promoted_once_caught_up_and_committed(void **state)
{
    struct raft *r = member_leader();

    (void)state;
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 4, "127.0.0.1:1004"), 0);
    assert_int_equal(raft_catching_up(r), 4);
    persist_all(r);
    /* Caught up, but its configuration is not committed yet. */
    ack_all(r, 4);
    assert_int_equal(raft_last_index(r), 2);
    ack_all(r, 2);
    ack_all(r, 4);
    assert_int_equal(raft_last_index(r), 3);
    assert_int_equal(raft_entry_at(r, 3)->type, RAFT_ENTRY_CONFIG);
    assert_true(member_is(r, 4, 1));
    assert_int_equal(raft_catching_up(r), 0);
    assert_true(log_contains("learner=4 caught up"));
    raft_free(r);
}

static void test_removing_catching_up_learner_allowed(void **state)
{
    struct raft *r = member_leader();

    (void)state;
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 4, "127.0.0.1:1004"), 0);
    persist_all(r);
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 2);
    assert_int_equal(raft_change(r, RAFT_CHANGE_REMOVE, 3, NULL),
                     IKD_ECHANGING);
    assert_int_equal(raft_change(r, RAFT_CHANGE_REMOVE, 4, NULL), 0);
    assert_true(member_is(r, 4, -1));
    assert_int_equal(raft_catching_up(r), 0);
    raft_free(r);
}

static void test_truncated_config_entry_restores_previous(void **state)
{
    struct raft_membership base = make_members(3, NULL, 0);
    struct raft_membership more = make_members(4, NULL, 0);
    struct raft *r = member_new(3, &base);
    uint8_t buf[RAFT_MEMBERSHIP_MAX_BYTES];
    struct raft_entry e = {.term = 1, .type = RAFT_ENTRY_CONFIG};
    const raft_term_t newer[] = {2};
    struct raft_msg m = append_req(1, 3, 1, 0, 0, 0);
    size_t len;

    (void)state;
    assert_int_equal(raft_membership_encode(&more, buf, sizeof(buf), &len), 0);
    e.len = (uint32_t)len;
    e.data = buf;
    m.append.entries = &e;
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), 0);
    assert_true(member_is(r, 4, 1));
    m = append_req(2, 3, 2, 0, 0, 0);
    m.append.entries = make_entries(newer, 1);
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), 0);
    assert_true(member_is(r, 4, -1));
    assert_true(log_contains("servers=1,2,3 -> use it"));
    raft_free(r);
}

static void test_learner_and_outsider_never_campaign(void **state)
{
    const raft_id_t learners[] = {4};
    struct raft_membership m = make_members(3, learners, 1);
    struct raft_membership none = {0};
    struct raft *r = member_new(4, &m);
    struct raft *out = member_new(9, &none);
    unsigned i;

    (void)state;
    for (i = 0; i < 5 * ELECTION_TICKS; i++) {
        raft_tick(r);
        raft_tick(out);
    }
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    assert_int_equal(raft_term(r), 0);
    assert_int_equal(raft_role(out), RAFT_FOLLOWER);
    assert_false(raft_has_update(out));
    raft_free(r);
    raft_free(out);
}

static void test_joining_server_follows_leader_outside_its_config(void **state)
{
    const raft_id_t learners[] = {4};
    struct raft_membership none = {0};
    struct raft_membership m = make_members(3, learners, 1);
    struct raft *r = member_new(4, &none);
    uint8_t buf[RAFT_MEMBERSHIP_MAX_BYTES];
    struct raft_entry e = {.term = 1, .type = RAFT_ENTRY_CONFIG};
    struct raft_msg msg = append_req(1, 4, 1, 0, 0, 1);
    struct raft_update u;
    const struct raft_msg *resp;
    size_t len;

    (void)state;
    assert_int_equal(raft_membership_encode(&m, buf, sizeof(buf), &len), 0);
    e.len = (uint32_t)len;
    e.data = buf;
    msg.append.entries = &e;
    msg.append.n_entries = 1;
    assert_int_equal(raft_step(r, &msg), 0);
    assert_true(member_is(r, 4, 0));
    assert_int_equal(raft_leader(r), 1);
    raft_get_update(r, &u);
    resp = find_msg(&u, RAFT_MSG_APPEND_RESP, 1);
    assert_non_null(resp);
    assert_true(resp->append_resp.success);
    raft_free(r);
}

/* Raft 4.2.3: a removed server's vote request is ignored while the
 * leader is heard; without a leader, a server outside this one's
 * configuration (it may be in a newer one) gets the vote. */
static void test_vote_from_outside_config_only_without_leader(void **state)
{
    struct raft_membership m = make_members(3, NULL, 0);
    struct raft *r = member_new(1, &m);
    struct raft_msg hb = append_req(2, 1, 1, 0, 0, 0);
    struct raft_msg v = vote_req(4, 1, 5, 10, 5);
    struct raft_update u;
    const struct raft_msg *resp;
    unsigned i;

    (void)state;
    assert_int_equal(raft_step(r, &hb), 0);
    assert_int_equal(raft_step(r, &v), 0);
    assert_int_equal(raft_term(r), 1);
    for (i = 0; i < 2 * ELECTION_TICKS && raft_leader(r) != 0; i++) {
        raft_tick(r);
    }
    v = vote_req(4, 1, 5, 10, 5);
    assert_int_equal(raft_step(r, &v), 0);
    raft_get_update(r, &u);
    resp = find_msg(&u, RAFT_MSG_VOTE_RESP, 4);
    assert_non_null(resp);
    assert_true(resp->vote_resp.granted);
    raft_free(r);
}

static void test_removed_leader_hands_over_once_committed(void **state)
{
    struct raft *r = member_leader();
    struct raft_update u;

    (void)state;
    assert_int_equal(raft_change(r, RAFT_CHANGE_REMOVE, 1, NULL), 0);
    assert_true(member_is(r, 1, -1));
    persist_all(r);
    /* Without its own vote, 2 of the remaining 2 must store it. */
    ack_all(r, 2);
    assert_int_equal(raft_commit(r), 1);
    raft_get_update(r, &u);
    ack_all(r, 3);
    assert_int_equal(raft_commit(r), 2);
    raft_get_update(r, &u);
    assert_non_null(find_msg(&u, RAFT_MSG_TIMEOUT_NOW, 2));
    assert_int_equal(raft_change(r, RAFT_CHANGE_ADD, 1, "127.0.0.1:1001"),
                     IKD_EBUSY);
    raft_free(r);
}

static void test_compaction_and_snapshot_keep_configuration(void **state)
{
    struct raft *r = member_leader();
    struct raft_membership five = make_members(5, NULL, 0);
    struct raft_membership base = make_members(3, NULL, 0);
    struct raft *f = member_new(3, &base);
    struct raft_msg snap = snapshot_msg(1, 3, 2, 9, 2);
    raft_index_t index;

    (void)state;
    assert_int_equal(raft_change(r, RAFT_CHANGE_REMOVE, 3, NULL), 0);
    persist_all(r);
    ack_all(r, 2);
    raft_applied(r, 2);
    assert_int_equal(raft_compact(r, 2), 0);
    assert_true(member_is(r, 3, -1));
    raft_membership(r, &index);
    assert_int_equal(index, 2);

    snap.snapshot.membership = &five;
    snap.snapshot.membership_index = 7;
    assert_int_equal(raft_step(f, &snap), 0);
    assert_true(member_is(f, 5, 1));
    raft_membership(f, &index);
    assert_int_equal(index, 7);
    raft_free(r);
    raft_free(f);
}

/* Raft 4.2.2: until the configuration that removed it commits, a server
 * may hold the only up-to-date log, so it campaigns, without its own
 * vote; once the removal commits, it never does. */
static void test_removed_server_campaigns_only_until_removal_commits(
    void **state)
{
    struct raft_membership base = make_members(3, NULL, 0);
    struct raft_membership two = make_members(2, NULL, 0);
    struct raft *r = member_new(3, &base);
    uint8_t buf[RAFT_MEMBERSHIP_MAX_BYTES];
    struct raft_entry e = {.term = 1, .type = RAFT_ENTRY_CONFIG};
    struct raft_msg m = append_req(1, 3, 1, 0, 0, 0);
    struct raft_update u;
    size_t len;
    unsigned i;

    (void)state;
    assert_int_equal(raft_membership_encode(&two, buf, sizeof(buf), &len), 0);
    e.len = (uint32_t)len;
    e.data = buf;
    m.append.entries = &e;
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), 0);
    persist_all(r);
    tick_until_candidate(r);
    raft_get_update(r, &u);
    assert_non_null(find_msg(&u, RAFT_MSG_VOTE, 1));
    assert_non_null(find_msg(&u, RAFT_MSG_VOTE, 2));
    m = vote_resp(1, 3, raft_term(r), true);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_CANDIDATE);
    m = vote_resp(2, 3, raft_term(r), true);
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_role(r), RAFT_LEADER);
    raft_free(r);

    /* The same removal, committed: no campaign. */
    r = member_new(3, &base);
    m = append_req(1, 3, 1, 0, 0, 1);
    m.append.entries = &e;
    m.append.n_entries = 1;
    assert_int_equal(raft_step(r, &m), 0);
    assert_int_equal(raft_commit(r), 1);
    for (i = 0; i < 5 * ELECTION_TICKS; i++) {
        raft_tick(r);
    }
    assert_int_equal(raft_role(r), RAFT_FOLLOWER);
    assert_int_equal(raft_term(r), 1);
    raft_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_node_elects_itself_and_commits),
        cmocka_unit_test(test_election_timeout_drawn_in_range),
        cmocka_unit_test(test_candidate_requests_votes_with_last_log),
        cmocka_unit_test(test_vote_granted_once_per_term),
        cmocka_unit_test(test_vote_rejected_when_candidate_log_behind),
        cmocka_unit_test(test_vote_needs_durable_state),
        cmocka_unit_test(test_candidate_wins_with_majority),
        cmocka_unit_test(test_leader_appends_noop_on_election),
        cmocka_unit_test(test_higher_term_makes_leader_step_down),
        cmocka_unit_test(test_stale_term_append_rejected_with_newer_term),
        cmocka_unit_test(test_step_rejects_misaddressed_message),
        cmocka_unit_test(test_malformed_append_changes_nothing),
        cmocka_unit_test(test_leader_steps_down_without_quorum),
        cmocka_unit_test(test_leader_commits_only_own_term_by_counting),
        cmocka_unit_test(test_leader_counts_itself_only_when_persisted),
        cmocka_unit_test(test_truncate_only_conflicting_entries),
        cmocka_unit_test(test_log_bytes_follow_every_change_of_the_log),
        cmocka_unit_test(test_stale_append_does_not_truncate),
        cmocka_unit_test(test_follower_commit_limited_to_verified_entries),
        cmocka_unit_test(test_append_skips_committed_prefix),
        cmocka_unit_test(test_reject_hint_by_term_on_follower),
        cmocka_unit_test(test_reject_hint_backs_up_by_term),
        cmocka_unit_test(test_proposals_batched_and_sent_without_heartbeat),
        cmocka_unit_test(test_append_respects_entry_and_byte_limits),
        cmocka_unit_test(test_probe_sends_one_message_per_heartbeat),
        cmocka_unit_test(test_replicate_window_caps_inflight),
        cmocka_unit_test(test_commit_advance_broadcasts_to_followers),
        cmocka_unit_test(test_heartbeat_sent_every_heartbeat_ticks),
        cmocka_unit_test(test_propose_rejected_when_not_leader_or_too_big),
        cmocka_unit_test(test_persisted_ignored_for_replaced_entry),
        cmocka_unit_test(test_truncation_lowers_persisted),
        cmocka_unit_test(test_load_restores_state_and_rejects_corrupt),
        cmocka_unit_test(test_single_node_read_ready_at_once),
        cmocka_unit_test(test_read_index_waits_for_own_term_commit),
        cmocka_unit_test(test_read_index_completes_after_majority_echo),
        cmocka_unit_test(
            test_read_asked_by_a_voter_in_this_term_needs_no_round),
        cmocka_unit_test(test_reads_during_round_join_next_round),
        cmocka_unit_test(test_leader_loss_drops_pending_reads),
        cmocka_unit_test(test_error_codes_map_to_errno),
        cmocka_unit_test(test_role_change_logged_as_condition_and_decision),
        cmocka_unit_test(test_prevote_asks_without_raising_term),
        cmocka_unit_test(test_prevote_majority_starts_real_election),
        cmocka_unit_test(test_prevote_refused_with_newer_term_adopts_it),
        cmocka_unit_test(test_prevote_granted_only_when_leader_silent),
        cmocka_unit_test(test_vote_ignored_while_leader_heard_unless_transfer),
        cmocka_unit_test(test_single_node_prevote_elects_at_once),
        cmocka_unit_test(test_propose_busy_past_uncommitted_cap),
        cmocka_unit_test(test_transfer_waits_for_catch_up_then_timeout_now),
        cmocka_unit_test(test_transfer_to_best_follower_and_abandoned),
        cmocka_unit_test(test_single_node_transfer_has_no_target),
        cmocka_unit_test(test_timeout_now_campaigns_at_once_as_transfer),
        cmocka_unit_test(test_match_index_reported_on_leader_only),
        cmocka_unit_test(
            test_compaction_keeps_last_compacted_term_for_consistency),
        cmocka_unit_test(test_compact_refuses_index_not_applied_or_not_durable),
        cmocka_unit_test(
            test_leader_asks_snapshot_once_and_only_heartbeats_meanwhile),
        cmocka_unit_test(
            test_rejected_heartbeat_during_snapshot_changes_nothing),
        cmocka_unit_test(test_snapshot_failed_asks_again_at_a_later_heartbeat),
        cmocka_unit_test(test_rejection_reaching_snapshot_index_ends_wait),
        cmocka_unit_test(
            test_snapshot_success_ends_wait_and_replication_resumes),
        cmocka_unit_test(test_snapshot_install_replies_success_at_its_index),
        cmocka_unit_test(test_snapshot_matching_log_keeps_entries_after_it),
        cmocka_unit_test(test_snapshot_conflicting_log_is_dropped),
        cmocka_unit_test(
            test_snapshot_not_ahead_of_commit_answered_with_commit),
        cmocka_unit_test(test_load_after_compaction_restores_prev_term),
        cmocka_unit_test(test_random_cluster_keeps_safety_and_elects),
        cmocka_unit_test(test_five_node_cluster_survives_two_failures),
        cmocka_unit_test(test_same_seed_same_run),
        cmocka_unit_test(test_membership_encoding_round_trips_and_rejects_bad),
        cmocka_unit_test(test_added_server_is_learner_in_effect_before_commit),
        cmocka_unit_test(test_second_change_refused_until_first_commits),
        cmocka_unit_test(test_repeated_change_reports_already_done),
        cmocka_unit_test(test_learner_does_not_count_for_commit),
        cmocka_unit_test(test_learner_promoted_once_caught_up_and_committed),
        cmocka_unit_test(test_removing_catching_up_learner_allowed),
        cmocka_unit_test(test_truncated_config_entry_restores_previous),
        cmocka_unit_test(test_learner_and_outsider_never_campaign),
        cmocka_unit_test(test_joining_server_follows_leader_outside_its_config),
        cmocka_unit_test(test_vote_from_outside_config_only_without_leader),
        cmocka_unit_test(test_removed_leader_hands_over_once_committed),
        cmocka_unit_test(
            test_removed_server_campaigns_only_until_removal_commits),
        cmocka_unit_test(test_compaction_and_snapshot_keep_configuration),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
