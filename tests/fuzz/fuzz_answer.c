/* libFuzzer target: the forge-answer classifier.  The first two bytes are
 * the status, the third the route kind, the rest the body. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "runner.h"
#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct forge_answer a = {.retry_after_ms = -1};
	enum route_kind kind;
	enum verdict v;
	struct runner_info info;
	char *token;

	if (size < 3)
		return 0;
	a.status = (data[0] << 8 | data[1]) % 700;
	kind = (enum route_kind)((data[2] & 3) % 3);
	a.body = (const char *)data + 3;
	a.body_len = size - 3;
	a.body_truncated = data[2] & 4;

	v = answer_classify(&a, kind);
	if ((v == VERDICT_OK) != (a.status == 200 || (kind == ROUTE_CLEANUP && a.status == 204)))
		abort();
	if (v == VERDICT_GONE && (a.status != 404 || kind == ROUTE_TOKEN))
		abort();
	if (v == VERDICT_NO_ROUTE && a.status != 404 && a.status != 405)
		abort();
	if (kind == ROUTE_CLEANUP && answer_is_retryable(&a, v, kind))
		abort();
	(void)answer_is_retryable(&a, v, kind);
	(void)verdict_name(v);

	if (answer_runner(&a, 1, &info) == 0 && info.uuid_field == FIELD_SET &&
	    strlen(info.uuid) > RUNNER_UUID_MAX)
		abort();
	if (answer_token(&a, &token) == 0) {
		/* The one invariant that matters: nothing else is ever written. */
		if (!token_is_valid(token, strlen(token)))
			abort();
		free(token);
	} else if (token) {
		abort();
	}
	return 0;
}
