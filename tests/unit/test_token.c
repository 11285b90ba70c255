/* The registration-token alphabet: [A-Za-z0-9_-]{1,255}, nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "token.h"

static bool valid(const char *s)
{
	return token_is_valid(s, strlen(s));
}

static void accepts_forgejo_tokens(void **state)
{
	(void)state;
	char longest[TOKEN_MAX + 1];

	assert_true(valid("a"));
	assert_true(valid("AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd"));		/* Forgejo <= 12 */
	assert_true(valid("Ab-_0123456789abcdefghijklmnopqrstuvwxyzABC"));	/* newer */
	assert_true(valid("0123456789abcdef0123456789abcdef0123456789abcdef")); /* Gitea hex */
	memset(longest, 'x', TOKEN_MAX);
	longest[TOKEN_MAX] = '\0';
	assert_true(valid(longest));
}

static void rejects_everything_else(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",	    "abc\n", "ab\"c",	  "ab'c",   "ab\\c", "ab#c",  "ab=c",
	    "ab c", "ab\tc", "ab;c",	  "ab$c",   "ab`c",  "ab\rc", "ab.c",
	    "ab/c", "ab+c",  "t\xc3\xa9", "ab\x7f", "ab%c",  "ab{c}",
	};
	char too_long[TOKEN_MAX + 2];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(valid(bad[i]));
	memset(too_long, 'x', TOKEN_MAX + 1);
	too_long[TOKEN_MAX + 1] = '\0';
	assert_false(valid(too_long));
	assert_false(token_is_valid("ab\0cd", 5)); /* NUL inside */
	assert_false(token_is_valid(NULL, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(accepts_forgejo_tokens),
	    cmocka_unit_test(rejects_everything_else),
	};

	return cmocka_run_group_tests_name("token", tests, NULL, NULL);
}
