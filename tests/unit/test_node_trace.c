/* The spans of replicated commands: which contexts an AppendEntries
 * carries, and that every span a traced entry begins is ended exactly
 * once, on the leader and on a follower.  Spans go to a port where nothing
 * listens; after the tracer stops, exported + dropped counts every span
 * that was ended. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../net/node_trace.h"

static int tracer_on(void **state)
{
    const char *why;

    (void)state;
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9", 1);
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "200", 1);
    return ikd_tracer_start("test", 1, &why);
}

/* Stop the tracer: how many spans were ended since it started. */
static uint64_t spans_ended(void)
{
    struct ikd_trace_stats st;

    ikd_tracer_stop();
    ikd_tracer_stats(&st);
    return st.exported + st.dropped;
}

static struct ikd_span root_span(void)
{
    struct ikd_span s;

    ikd_span_begin(&s, "test.root", IKD_SPAN_SERVER, NULL);
    assert_true(s.recording);
    return s;
}

static void test_leader_entry_spans_and_what_appends_carry(void **state)
{
    struct node_trace *t;
    struct ikd_span root = root_span();
    struct net_trace_ref refs[NET_MAX_TRACE_REFS];
    struct ikd_trace_ctx to2;

    (void)state;
    t = node_trace_new();
    assert_non_null(t);
    node_trace_proposed(t, 5, &root.ctx, 1000);
    /* Not traced: no parent, or one that is not sampled. */
    node_trace_proposed(t, 6, NULL, 1000);

    assert_int_equal(node_trace_outgoing(t, 2, 1, 4, refs), 0);
    assert_int_equal(node_trace_outgoing(t, 2, 4, 6, refs), 1);
    assert_int_equal(refs[0].index, 5);
    assert_memory_equal(refs[0].ctx.trace_id, root.ctx.trace_id, 16);
    assert_true(refs[0].ctx.sampled);
    to2 = refs[0].ctx;
    /* A resend to the same follower carries the same span. */
    assert_int_equal(node_trace_outgoing(t, 2, 5, 5, refs), 1);
    assert_memory_equal(&refs[0].ctx, &to2, sizeof(to2));
    /* Another follower gets a span of its own. */
    assert_int_equal(node_trace_outgoing(t, 3, 5, 5, refs), 1);
    assert_memory_not_equal(refs[0].ctx.span_id, to2.span_id, 8);
    /* Heartbeats carry nothing. */
    assert_int_equal(node_trace_outgoing(t, 3, 6, 5, refs), 0);

    node_trace_persisted(t, 5);
    node_trace_committed(t, 5);
    node_trace_applied(t, 5);
    /* The replicate spans stay open until the followers match, or until
     * they are given up. */
    node_trace_expire(t, 2000, 5000);
    node_trace_expire(t, 7000, 5000);
    node_trace_free(t);
    ikd_span_end(&root);
    /* propose, append, commit, apply, two replicates, the root. */
    assert_int_equal(spans_ended(), 7);
}

static void test_follower_entry_waits_for_its_commit(void **state)
{
    struct node_trace *t;
    struct ikd_span root = root_span();
    struct net_trace_ref ref = {.index = 9, .ctx = root.ctx};

    (void)state;
    t = node_trace_new();
    node_trace_received(t, &ref, 1, 1000);
    node_trace_received(t, &ref, 1, 1001); /* a resend */
    node_trace_persisted(t, 9);
    node_trace_applied(t, 9); /* not committed yet: nothing to end */
    node_trace_committed(t, 9);
    node_trace_applied(t, 9);
    node_trace_applied(t, 9);
    /* Nothing is left open to end here. */
    node_trace_free(t);
    ikd_span_end(&root);
    /* follower_append, apply, the root. */
    assert_int_equal(spans_ended(), 3);
}

static void test_a_newer_entry_in_the_same_slot_ends_the_older(void **state)
{
    struct node_trace *t;
    struct ikd_span root = root_span();

    (void)state;
    t = node_trace_new();
    node_trace_proposed(t, 3, &root.ctx, 1000);
    for (raft_index_t i = 4; i < 3 + 64 * 3; i++) {
        node_trace_proposed(t, i, &root.ctx, 1000);
    }
    node_trace_free(t);
    ikd_span_end(&root);
    /* 192 entries of three spans (propose, append, commit), and the root. */
    assert_int_equal(spans_ended(), 3 * 64 * 3 + 1);
}

static void test_without_tracer_nothing_is_kept(void **state)
{
    struct net_trace_ref refs[NET_MAX_TRACE_REFS];
    struct ikd_trace_ctx c = {.trace_id = {1}, .span_id = {1}, .sampled = 1};

    (void)state;
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_null(node_trace_new());
    node_trace_proposed(NULL, 1, &c, 0);
    assert_int_equal(node_trace_outgoing(NULL, 2, 1, 1, refs), 0);
    node_trace_received(NULL, refs, 0, 0);
    node_trace_persisted(NULL, 1);
    node_trace_committed(NULL, 1);
    node_trace_applied(NULL, 1);
    node_trace_expire(NULL, 0, 0);
    node_trace_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_leader_entry_spans_and_what_appends_carry,
                               tracer_on),
        cmocka_unit_test_setup(test_follower_entry_waits_for_its_commit,
                               tracer_on),
        cmocka_unit_test_setup(
            test_a_newer_entry_in_the_same_slot_ends_the_older, tracer_on),
        cmocka_unit_test(test_without_tracer_nothing_is_kept),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
