/* The command line: the exact contract, and one clear line for each mistake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "options.h"

static char err[512];

static enum options_result parse_v(struct options *o, ...)
{
	char *argv[32] = {"hive-ci-prefetch"};
	int argc = 1;
	va_list ap;

	va_start(ap, o);
	while ((argv[argc] = va_arg(ap, char *)))
		argc++;
	va_end(ap);
	err[0] = '\0';
	return options_parse(argc, argv, o, err, sizeof(err));
}
#define parse(o, ...) parse_v(o, ##__VA_ARGS__, (char *)NULL)

static void defaults(void **state)
{
	(void)state;
	struct options o;

	assert_int_equal(parse(&o), OPTIONS_RUN);
	assert_string_equal(o.forge_url, "http://127.0.0.1:3000");
	assert_string_equal(o.core_token_file, "/var/lib/hyperhive/forge-core-token");
	assert_string_equal(o.container_root, "/var/lib/nixos-containers/hive-ci");
	assert_string_equal(o.runner_file, "/var/lib/gitea-runner/hive/.runner");
	assert_string_equal(o.output, "/run/hive-ci/runner-token");
	assert_int_equal(o.retry_timeout_ms, 30000);
	assert_null(o.unix_socket);
	assert_null(o.ca_file);
	assert_string_equal(o.state_file, "/var/lib/hive-ci-prefetch/hive-ci.json");
	assert_int_equal(o.token_format, TOKEN_FORMAT_ENV);
	assert_true(o.cleanup);
	assert_false(o.placeholder_on_keep);
	assert_false(o.reregister || o.dry_run || o.json);
	assert_int_equal(o.verbosity, 0);
}

static void both_value_forms(void **state)
{
	(void)state;
	struct options o;

	assert_int_equal(parse(&o, "--forge-url=https://f.example", "--output", "/tmp/out",
			       "--retry-timeout", "2.5", "--runner-file=/x/.runner",
			       "--container-root", "/c", "--core-token-file=/t", "--unix-socket",
			       "/s", "--ca-file=/ca", "--reregister", "-n", "--json", "-v"),
			 OPTIONS_RUN);
	assert_string_equal(o.forge_url, "https://f.example");
	assert_string_equal(o.output, "/tmp/out");
	assert_int_equal(o.retry_timeout_ms, 2500);
	assert_string_equal(o.runner_file, "/x/.runner");
	assert_string_equal(o.container_root, "/c");
	assert_string_equal(o.core_token_file, "/t");
	assert_string_equal(o.unix_socket, "/s");
	assert_string_equal(o.ca_file, "/ca");
	assert_true(o.reregister && o.dry_run && o.json);
	assert_int_equal(o.verbosity, 1);

	assert_int_equal(parse(&o, "--dry-run", "--quiet", "--retry-timeout=0"), OPTIONS_RUN);
	assert_true(o.dry_run);
	assert_int_equal(o.verbosity, -1);
	assert_int_equal(o.retry_timeout_ms, 0);
	assert_int_equal(parse(&o, "-q"), OPTIONS_RUN);
	assert_int_equal(o.verbosity, -1);
}

static void help_and_version(void **state)
{
	(void)state;
	struct options o;

	assert_int_equal(parse(&o, "--help"), OPTIONS_HELP);
	assert_int_equal(parse(&o, "-h"), OPTIONS_HELP);
	assert_int_equal(parse(&o, "--version"), OPTIONS_VERSION);
	assert_int_equal(parse(&o, "-V"), OPTIONS_VERSION);
}

static void expect_bad(const char *needle, enum options_result r)
{
	assert_int_equal(r, OPTIONS_BAD);
	assert_non_null(strstr(err, needle));
	assert_null(strchr(err, '\n'));
}

static void mistakes(void **state)
{
	(void)state;
	struct options o;

	expect_bad("unknown option '--frobnicate'", parse(&o, "--frobnicate"));
	expect_bad("unknown option '-x'", parse(&o, "-x"));
	expect_bad("unknown option '-x'", parse(&o, "--json", "-nx"));
	expect_bad("'--json' takes no value", parse(&o, "--json=1"));
	expect_bad("needs a value", parse(&o, "--output"));
	expect_bad("'abc' is not a number", parse(&o, "--retry-timeout=abc"));
	expect_bad("'-1' is not a number", parse(&o, "--retry-timeout=-1"));
	expect_bad("is not a number", parse(&o, "--retry-timeout="));
	expect_bad("is not a number", parse(&o, "--retry-timeout=1."));
	expect_bad("is not a number", parse(&o, "--retry-timeout=1s"));
	expect_bad("is not a number", parse(&o, "--retry-timeout=99999999999999999999"));
	expect_bad("--runner-file: must be an absolute path",
		   parse(&o, "--runner-file=var/lib/gitea-runner/hive/.runner"));
	expect_bad("--runner-file: must name a file", parse(&o, "--runner-file=/var/lib/"));
	expect_bad("--runner-file: must name a file", parse(&o, "--runner-file=/var/.."));
	expect_bad("--forge-url: must start with http", parse(&o, "--forge-url=ftp://x"));
	expect_bad("--forge-url: must start with http", parse(&o, "--forge-url=file:///etc"));
	expect_bad("--forge-url: must not contain a query", parse(&o, "--forge-url=http://x/?a=b"));
	expect_bad("--output: empty path", parse(&o, "--output="));
	expect_bad("unexpected argument 'extra'", parse(&o, "extra"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(defaults),
	    cmocka_unit_test(both_value_forms),
	    cmocka_unit_test(help_and_version),
	    cmocka_unit_test(mistakes),
	};

	return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
