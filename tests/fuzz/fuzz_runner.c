/* libFuzzer target: the .runner parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "runner.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct runner_info info;

	if (runner_parse((const char *)data, size, &info) == 0) {
		if (info.id < 1)
			abort();
		if (info.has_uuid && info.uuid[RUNNER_UUID_MAX] != '\0')
			abort();
	}
	return 0;
}
