/* test_roster: the coordinators an expert node counts (expert_node/roster):
 * identities heard from within the window count once each, a silent one
 * drops out and counts again when it speaks, an empty identity is ignored,
 * and past ROSTER_MAX identities the one heard from longest ago is
 * forgotten. Times are given, not measured. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "expert_node/roster.h"

static wire_peer_t s_peer(int i)
{
    wire_peer_t p = {.len = 5};
    memcpy(p.id, "\0peer", 5);
    p.id[4] = (uint8_t)i;
    return p;
}

static void test_counts_within_window(void **state)
{
    (void)state;
    roster_t *r = roster_new(10.0);
    assert_non_null(r);
    wire_peer_t a = s_peer(1), b = s_peer(2), none = {.len = 0};
    assert_int_equal(roster_count(r, 100.0), 0);
    assert_true(roster_touch(r, &a, 100.0));
    assert_false(roster_touch(r, &a, 101.0));        /* known: not new */
    assert_true(roster_touch(r, &b, 102.0));
    assert_false(roster_touch(r, &none, 102.0));     /* no identity: not a coordinator */
    assert_int_equal(roster_count(r, 102.0), 2);
    assert_int_equal(roster_count(r, 111.5), 1);     /* a silent for 10.5 s */
    assert_int_equal(roster_count(r, 112.5), 0);
    assert_true(roster_touch(r, &a, 113.0));         /* back after a silence: new again */
    assert_int_equal(roster_count(r, 113.0), 1);
    roster_destroy(&r);
    assert_null(r);
    roster_destroy(&r); /* twice: a no-op */
}

static void test_full_forgets_oldest(void **state)
{
    (void)state;
    roster_t *r = roster_new(1000.0);
    for (int i = 0; i < ROSTER_MAX; i++) {
        wire_peer_t p = s_peer(i);
        assert_true(roster_touch(r, &p, 10.0 + i));
    }
    assert_int_equal(roster_count(r, 100.0), ROSTER_MAX);
    wire_peer_t extra = s_peer(ROSTER_MAX), first = s_peer(0), second = s_peer(1);
    assert_true(roster_touch(r, &extra, 100.0));    /* takes peer 0's place */
    assert_int_equal(roster_count(r, 100.0), ROSTER_MAX);
    assert_false(roster_touch(r, &second, 101.0));  /* still known */
    assert_true(roster_touch(r, &first, 102.0));    /* forgotten, so new */
    roster_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_within_window),
        cmocka_unit_test(test_full_forgets_oldest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
