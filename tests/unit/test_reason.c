/* The sentences, where what they say is the contract: the wait rounded to
 * the nearest tenth (review 2, item 21), what a run did to .runner, and no
 * sentence without its reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "reason.h"

static const struct reason_context base = {
    .id = 7,
    .runner_file = "/var/lib/gitea-runner/hive/.runner",
    .container_root = "/c",
    .output = "/run/hive-ci/runner-token",
    .state_file = "/var/lib/hive-ci-prefetch/hive-ci.json",
    .admin_token_file = "/t",
    .admin_token_why = "is a symbolic link",
    .lookup_error = "Connection refused",
    .last_error = "Connection refused",
    .last_message = "",
    .token_routes = "GET a, GET b, POST c",
};

static void wait_is_rounded_to_the_nearest_tenth(void **state)
{
	static const struct {
		int64_t ms;
		const char *says;
	} rows[] = {
	    {1960, "(waited 2.0 s"}, {1949, "(waited 1.9 s"}, {1950, "(waited 2.0 s"},
	    {40, "(waited 0.0 s"},   {51, "(waited 0.1 s"},   {30000, "(waited 30.0 s"},
	};
	struct decision d = {.fate = FATE_UNVERIFIED,
			     .action = ACTION_PLACEHOLDER,
			     .output = TOKEN_PLACEHOLDER,
			     .reason = REASON_NO_ADMIN_TOKEN};
	char buf[512];

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct reason_context c = base;

		c.waited_ms = rows[i].ms;
		reason_conclude(buf, sizeof(buf), &d, &c);
		print_message("%s\n", buf);
		assert_non_null(strstr(buf, rows[i].says));
	}
	reason_conclude(buf, sizeof(buf), &d, &base); /* no wait: not said */
	assert_null(strstr(buf, "waited"));
}

static void every_reason_says_something(void **state)
{
	struct decision d = {.fate = FATE_CONFIRMED};
	char buf[512];

	(void)state;
	for (int r = REASON_NONE + 1; r <= REASON_RUNNER_UNWRITABLE; r++) {
		reason_say(buf, sizeof(buf), (enum reason)r, &d, &base);
		assert_true(strlen(buf) >= 10); /* "no .runner" the shortest */
	}
}

static void what_became_of_runner(void **state)
{
	struct reason_context c = base;
	struct decision kept = {.fate = FATE_UNVERIFIED,
				.action = ACTION_KEEP,
				.output = TOKEN_REMEMBERED,
				.reason = REASON_NO_ANSWER};
	struct decision gone = {.fate = FATE_DISCARDED,
				.action = ACTION_REREGISTER,
				.output = TOKEN_PLACEHOLDER,
				.reason = REASON_GONE};
	char buf[512];

	(void)state;
	reason_conclude(buf, sizeof(buf), &kept, &c);
	assert_non_null(strstr(buf, "keeping .runner unverified; wrote the remembered"));
	c.host = true;
	c.registered_id = 9;
	reason_conclude(buf, sizeof(buf), &gone, &c);
	assert_non_null(strstr(buf, "deleted .runner; registered runner 9 and wrote .runner"));
	c.dry_run = true;
	reason_conclude(buf, sizeof(buf), &gone, &c);
	assert_non_null(strstr(buf, "would delete .runner, register a runner, write .runner"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(wait_is_rounded_to_the_nearest_tenth),
	    cmocka_unit_test(every_reason_says_something),
	    cmocka_unit_test(what_became_of_runner),
	};

	return cmocka_run_group_tests_name("reason", tests, NULL, NULL);
}
