/* libFuzzer target: the .runner parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runner.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct runner_info info;

	if (runner_parse((const char *)data, size, &info) == 0) {
		if (info.id < 1)
			abort();
		if (info.uuid_field == FIELD_SET && strlen(info.uuid) > RUNNER_UUID_MAX)
			abort();
		if (info.name_field == FIELD_SET && strlen(info.name) > RUNNER_NAME_MAX)
			abort();
		/* A runner is always the same as itself, unless an over-long
		 * field makes it unprovable. */
		if (info.uuid_field != FIELD_TOO_LONG &&
		    !(info.uuid_field == FIELD_ABSENT && info.name_field == FIELD_TOO_LONG) &&
		    !runner_match_is_same(runner_compare(&info, &info)))
			abort();
	}
	return 0;
}
