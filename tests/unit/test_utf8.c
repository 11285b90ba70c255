/* utf8_sanitize: whatever the bytes, valid UTF-8 comes out, never a cut
 * character. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "utf8.h"

#define FFFD "\xef\xbf\xbd"

static void expect_copy(const char *in, size_t n, const char *want)
{
	char out[256];

	assert_true(n <= sizeof(out));
	assert_int_equal(utf8_sanitize(out, n, in), strlen(want));
	assert_string_equal(out, want);
}

static void valid_text_is_copied_unchanged(void **state)
{
	(void)state;
	static const char *const valid[] = {
	    "",
	    "runner 42 still registered; keeping .runner",
	    "caf\xc3\xa9",		      /* U+00E9 */
	    "\xe2\x82\xac 10",		      /* U+20AC */
	    "\xf0\x9f\x90\x9d hive",	      /* U+1F41D */
	    "\xed\x9f\xbf",		      /* U+D7FF, just below the surrogates */
	    "\xee\x80\x80",		      /* U+E000, just above them */
	    "\xf4\x8f\xbf\xbf",		      /* U+10FFFF, the last one */
	    "\xc2\x80 \xdf\xbf \xe0\xa0\x80", /* the smallest of each length */
	};

	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
		expect_copy(valid[i], 256, valid[i]);
}

static void invalid_bytes_become_replacement_characters(void **state)
{
	(void)state;
	expect_copy("/var/lib/\xff/.runner", 256, "/var/lib/" FFFD "/.runner");
	expect_copy("\x80", 256, FFFD);				   /* a lone continuation byte */
	expect_copy("\xc0\xaf", 256, FFFD FFFD);		   /* overlong "/" */
	expect_copy("\xe0\x80\xaf", 256, FFFD FFFD FFFD);	   /* overlong, 3 bytes */
	expect_copy("\xed\xa0\x80", 256, FFFD FFFD FFFD);	   /* surrogate U+D800 */
	expect_copy("\xf4\x90\x80\x80", 256, FFFD FFFD FFFD FFFD); /* above U+10FFFF */
	expect_copy("\xf5\x80", 256, FFFD FFFD);
	expect_copy("ab\xc3", 256, "ab" FFFD);		/* cut by a buffer before */
	expect_copy("ab\xe2\x82", 256, "ab" FFFD FFFD); /* likewise, 2 of 3 bytes */
	expect_copy("\xc3(", 256, FFFD "(");		/* a lead byte, then ASCII */
}

static void a_short_buffer_never_cuts_a_character(void **state)
{
	(void)state;
	expect_copy("caf\xc3\xa9", 5, "caf"); /* 4 bytes + NUL would cut the é */
	expect_copy("caf\xc3\xa9", 6, "caf\xc3\xa9");
	expect_copy("a\xff", 4, "a"); /* U+FFFD needs 3 bytes + NUL */
	expect_copy("a\xff", 5, "a" FFFD);
	expect_copy("\xf0\x9f\x90\x9d", 4, "");
	expect_copy("abc", 1, "");
}

static void every_byte_pair_comes_out_as_json_jansson_accepts(void **state)
{
	(void)state;
	char in[4], out[16];

	/* Every 1- and 2-byte input (and a 3-byte one ending in each byte):
	 * jansson, which refuses invalid UTF-8, takes every result. */
	for (int a = 1; a < 256; a++)
		for (int b = 0; b < 256; b++) {
			in[0] = (char)a;
			in[1] = (char)b;
			in[2] = b ? '\xbf' : '\0';
			in[3] = '\0';
			utf8_sanitize(out, sizeof(out), in);
			json_t *s = json_string(out);

			assert_non_null(s);
			json_decref(s);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(valid_text_is_copied_unchanged),
	    cmocka_unit_test(invalid_bytes_become_replacement_characters),
	    cmocka_unit_test(a_short_buffer_never_cuts_a_character),
	    cmocka_unit_test(every_byte_pair_comes_out_as_json_jansson_accepts),
	};

	return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
