/* The logger's level settings (IKADA_LOG). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../raft/ikd.h"

static void test_log_single_level_applies_to_every_module(void **state)
{
    (void)state;
    assert_int_equal(ikd_log_configure("warn"), 0);
    assert_int_equal(ikd_log_level, IKD_LOG_WARN);
    assert_true(ikd_log_enabled(IKD_LOG_WARN, "raft"));
    assert_false(ikd_log_enabled(IKD_LOG_INFO, "raft"));
    assert_false(ikd_log_enabled(IKD_LOG_INFO, "net"));
}

static void test_log_module_overrides_the_default(void **state)
{
    (void)state;
    assert_int_equal(ikd_log_configure("info,raft=debug,net=error"), 0);
    /* The fast filter is the most verbose level of any module. */
    assert_int_equal(ikd_log_level, IKD_LOG_DEBUG);
    assert_true(ikd_log_enabled(IKD_LOG_DEBUG, "raft"));
    assert_false(ikd_log_enabled(IKD_LOG_TRACE, "raft"));
    assert_false(ikd_log_enabled(IKD_LOG_WARN, "net"));
    assert_true(ikd_log_enabled(IKD_LOG_ERROR, "net"));
    assert_true(ikd_log_enabled(IKD_LOG_INFO, "fs"));
    assert_false(ikd_log_enabled(IKD_LOG_DEBUG, "fs"));
}

static void test_log_module_alone_keeps_others_at_info(void **state)
{
    (void)state;
    assert_int_equal(ikd_log_configure("fs=trace"), 0);
    assert_true(ikd_log_enabled(IKD_LOG_TRACE, "fs"));
    assert_true(ikd_log_enabled(IKD_LOG_INFO, "node"));
    assert_false(ikd_log_enabled(IKD_LOG_DEBUG, "node"));
}

static void test_log_malformed_spec_changes_nothing(void **state)
{
    static const char *const bad[] = {
        "loud",
        ",info",
        "raft=",
        "=debug",
        "raft=loud",
        "a=info,b=info,c=info,d=info,e=info,f=info,g=info,h=info,i=info",
        "a_module_name_far_too_long=info",
    };

    (void)state;
    assert_int_equal(ikd_log_configure("error,raft=trace"), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(ikd_log_configure(bad[i]), -1);
        assert_int_equal(ikd_log_level, IKD_LOG_TRACE);
        assert_true(ikd_log_enabled(IKD_LOG_TRACE, "raft"));
        assert_false(ikd_log_enabled(IKD_LOG_WARN, "net"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_single_level_applies_to_every_module),
        cmocka_unit_test(test_log_module_overrides_the_default),
        cmocka_unit_test(test_log_module_alone_keeps_others_at_info),
        cmocka_unit_test(test_log_malformed_spec_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
