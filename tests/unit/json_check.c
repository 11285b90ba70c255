/* Reads one --json line on stdin, parses it with jansson and checks its
 * shape; prints "ACTION EXIT RUNNER_ID" for the integration tests. */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

int main(void)
{
	static const char *const actions[] = {"placeholder", "keep", "register", "reregister",
					      "fail"};
	json_error_t e;
	json_t *j = json_loadf(stdin, JSON_REJECT_DUPLICATES, &e);
	const char *action, *reason;
	json_t *id;
	int status, dry_run, known = 0;

	if (!j) {
		fprintf(stderr, "not JSON: %s\n", e.text);
		return 1;
	}
	if (json_unpack_ex(j, &e, JSON_STRICT, "{s:s, s:s, s:o, s:i, s:b}", "action", &action,
			   "reason", &reason, "runner_id", &id, "exit", &status, "dry_run",
			   &dry_run) != 0) {
		fprintf(stderr, "wrong shape: %s\n", e.text);
		return 1;
	}
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
		known |= strcmp(action, actions[i]) == 0;
	if (!known || !*reason || !(json_is_null(id) || json_is_integer(id))) {
		fprintf(stderr, "bad values\n");
		return 1;
	}
	printf("%s %d %lld\n", action, status, json_is_null(id) ? 0LL : json_integer_value(id));
	json_decref(j);
	return 0;
}
