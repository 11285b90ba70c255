/* The superseded-runner list of the state file: distinct by id and uuid, at
 * most STATE_SUPERSEDED_MAX (oldest dropped), never the confirmed runner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "state.h"

static struct runner_info runner(int64_t id, const char *uuid)
{
	struct runner_info r = {.id = id, .uuid_field = FIELD_SET};

	snprintf(r.uuid, sizeof(r.uuid), "%s", uuid);
	return r;
}

static void entries_are_distinct_by_id_and_uuid(void **unused)
{
	(void)unused;
	struct state s = {0};

	state_supersede(&s, 1, "u-1", NULL);
	state_supersede(&s, 1, "u-1", NULL);
	state_supersede(&s, 1, "u-other", NULL); /* a wipe reused the id */
	state_supersede(&s, 2, NULL, NULL);	 /* no uuid: cannot be proven ours later */
	state_supersede(&s, 0, "u-0", NULL);
	assert_int_equal(s.n_superseded, 2);
	assert_string_equal(s.superseded[1].uuid, "u-other");
}

static void oldest_goes_beyond_the_limit(void **unused)
{
	(void)unused;
	struct state s = {0};
	char uuid[16];

	for (int i = 1; i <= STATE_SUPERSEDED_MAX + 3; i++) {
		snprintf(uuid, sizeof(uuid), "u-%d", i);
		state_supersede(&s, i, uuid, NULL);
	}
	assert_int_equal(s.n_superseded, STATE_SUPERSEDED_MAX);
	assert_int_equal(s.superseded[0].id, 4);
	assert_int_equal(s.superseded[STATE_SUPERSEDED_MAX - 1].id, STATE_SUPERSEDED_MAX + 3);
}

static void confirming_another_runner_supersedes_the_old_one(void **unused)
{
	(void)unused;
	struct state s = {0};
	struct runner_info a = runner(5, "u-5"), b = runner(6, "u-6");

	state_supersede(&s, 6, "u-6", NULL); /* unverified on an earlier boot */
	state_confirm(&s, &a);
	assert_int_equal(s.confirmed.id, 5);
	state_confirm(&s, &a); /* the same again: nothing moves */
	assert_int_equal(s.n_superseded, 1);
	state_confirm(&s, &b);
	/* 6 left the list (it is current), 5 joined it. */
	assert_int_equal(s.n_superseded, 1);
	assert_int_equal(s.superseded[0].id, 5);
	assert_string_equal(s.superseded[0].uuid, "u-5");
	/* Discarded or unconfirmed, the current runner is listed; confirmed
	 * again, it leaves the list. */
	state_supersede(&s, 6, "u-6", NULL);
	assert_int_equal(s.n_superseded, 2);
	state_confirm(&s, &b);
	assert_int_equal(s.n_superseded, 1);
	state_forget(&s, 0);
	assert_int_equal(s.n_superseded, 0);
	state_clear(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(entries_are_distinct_by_id_and_uuid),
	    cmocka_unit_test(oldest_goes_beyond_the_limit),
	    cmocka_unit_test(confirming_another_runner_supersedes_the_old_one),
	};

	return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
