/* The superseded-runner list of the state file: distinct by id and uuid, at
 * most STATE_SUPERSEDED_MAX (oldest dropped), never the confirmed runner. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Loads text as a state file (0600, ours). */
static int load(const char *text, struct state *s, const char **why)
{
	char dir[] = "/tmp/test-state-XXXXXX", path[64];
	FILE *f;
	int r;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/state.json", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, 0600), 0);
	r = state_load(path, s, why);
	unlink(path);
	rmdir(dir);
	return r;
}

/* The routes that answered on an earlier boot: small indices, or none. */
static void remembered_routes_are_small_indices(void **unused)
{
	(void)unused;
	static const char *const bad[] = {
	    "{\"lookup_route\": 8}", "{\"lookup_route\": -1}", "{\"lookup_route\": \"1\"}",
	    "{\"token_route\": 8}",  "{\"token_route\": 1.5}", "{\"lookup_shows_uuids\": 0}",
	};
	struct state s;
	const char *why;

	assert_int_equal(load("{\"lookup_route\": 1, \"token_route\": 2}", &s, &why), 0);
	assert_int_equal(s.lookup_route, 1);
	assert_int_equal(s.token_route, 2);
	state_clear(&s);
	assert_int_equal(load("{}", &s, &why), 0);
	assert_int_equal(s.lookup_route, -1);
	assert_int_equal(s.token_route, -1);
	state_clear(&s);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("%s\n", bad[i]);
		assert_int_equal(load(bad[i], &s, &why), -EBADMSG);
		assert_string_equal(why, "is not a hive-ci-prefetch state file");
		assert_int_equal(s.lookup_route, -1);
		assert_int_equal(s.token_route, -1);
		state_clear(&s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(entries_are_distinct_by_id_and_uuid),
	    cmocka_unit_test(oldest_goes_beyond_the_limit),
	    cmocka_unit_test(confirming_another_runner_supersedes_the_old_one),
	    cmocka_unit_test(remembered_routes_are_small_indices),
	};

	return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
