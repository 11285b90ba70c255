/* Reads one --json line on stdin, parses it with jansson and checks its
 * shape; prints "ACTION EXIT RUNNER_ID TOKEN DELETED" for the integration
 * tests (DELETED: ids joined by commas, "-" when none). */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

int main(void)
{
	static const char *const actions[] = {"placeholder", "keep", "register", "reregister",
					      "fail"};
	static const char *const tokens[] = {"current", "remembered", "placeholder", "unchanged"};
	json_error_t e;
	json_t *j = json_loadf(stdin, JSON_REJECT_DUPLICATES, &e);
	const char *action, *reason, *token, *registration;
	json_t *id, *deleted, *d;
	int status, dry_run, known = 0, known_token = 0;
	size_t i;

	if (!j) {
		fprintf(stderr, "not JSON: %s\n", e.text);
		return 1;
	}
	if (json_unpack_ex(j, &e, JSON_STRICT, "{s:s, s:s, s:o, s:s, s:o, s:i, s:b, s:s}", "action",
			   &action, "reason", &reason, "runner_id", &id, "token", &token, "deleted",
			   &deleted, "exit", &status, "dry_run", &dry_run, "registration",
			   &registration) != 0) {
		fprintf(stderr, "wrong shape: %s\n", e.text);
		return 1;
	}
	for (i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
		known |= strcmp(action, actions[i]) == 0;
	for (i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++)
		known_token |= strcmp(token, tokens[i]) == 0;
	if (!known || !known_token || !*reason || !(json_is_null(id) || json_is_integer(id)) ||
	    !json_is_array(deleted) ||
	    (strcmp(registration, "host") != 0 && strcmp(registration, "container") != 0)) {
		fprintf(stderr, "bad values\n");
		return 1;
	}
	printf("%s %d %lld %s ", action, status, json_is_null(id) ? 0LL : json_integer_value(id),
	       token);
	json_array_foreach(deleted, i, d)
	{
		if (!json_is_integer(d)) {
			fprintf(stderr, "bad deleted id\n");
			return 1;
		}
		printf("%s%lld", i ? "," : "", json_integer_value(d));
	}
	printf("%s\n", json_array_size(deleted) ? "" : "-");
	json_decref(j);
	return 0;
}
