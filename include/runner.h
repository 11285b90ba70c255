/* The runner's saved credentials, .runner, as written by forgejo-runner. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RUNNER_UUID_MAX 64

struct runner_info {
	int64_t id; /* 1 .. INT64_MAX */
	bool has_uuid;
	char uuid[RUNNER_UUID_MAX + 1];
};

/* Parses .runner: a JSON object (no duplicate keys) whose "id" is an integer
 * in 1..2^63-1; "uuid" is taken when it is a string of sane length.
 * Returns 0, or -EINVAL when the file is malformed.  Pure: no I/O. */
int runner_parse(const char *data, size_t len, struct runner_info *info);
