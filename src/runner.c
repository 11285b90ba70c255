#include <errno.h>
#include <string.h>

#include <jansson.h>

#include "runner.h"

enum field field_copy(const json_t *s, char *buf, size_t n)
{
	size_t len;

	buf[0] = '\0';
	if (!json_is_string(s))
		return FIELD_ABSENT;
	len = json_string_length(s);
	if (len == 0)
		return FIELD_ABSENT;
	/* An embedded NUL would make two different strings look equal. */
	if (len >= n || strlen(json_string_value(s)) != len)
		return FIELD_TOO_LONG;
	memcpy(buf, json_string_value(s), len + 1);
	return FIELD_SET;
}

static bool is_zero(const json_t *j)
{
	return json_is_integer(j) && json_integer_value(j) == 0;
}

static int parse(const char *data, size_t len, struct runner_info *info, bool need_id)
{
	json_t *root, *id;
	int r = -EINVAL;

	memset(info, 0, sizeof(*info));
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root))
		goto out;

	/* jansson refuses integers beyond int64 when parsing; reals, strings,
	 * booleans and null are not integers. */
	id = json_object_get(root, "id");
	if (json_is_integer(id) && json_integer_value(id) >= 1)
		info->id = json_integer_value(id);
	else if (need_id)
		goto out;

	info->uuid_field =
	    field_copy(json_object_get(root, "uuid"), info->uuid, sizeof(info->uuid));
	info->name_field =
	    field_copy(json_object_get(root, "name"), info->name, sizeof(info->name));
	field_copy(json_object_get(root, "status"), info->status, sizeof(info->status));
	info->instance_scope =
	    is_zero(json_object_get(root, "owner_id")) && is_zero(json_object_get(root, "repo_id"));
	r = 0;
out:
	json_decref(root); /* the wiping allocator zeroes jansson's copy of the secret */
	return r;
}

int runner_parse(const char *data, size_t len, struct runner_info *info)
{
	return parse(data, len, info, true);
}

int runner_parse_object(const char *data, size_t len, struct runner_info *info)
{
	return parse(data, len, info, false);
}

static bool both(enum field a, enum field b)
{
	return a != FIELD_ABSENT && b != FIELD_ABSENT;
}

static bool equal(enum field fa, const char *a, enum field fb, const char *b)
{
	return fa == FIELD_SET && fb == FIELD_SET && strcmp(a, b) == 0;
}

enum runner_match runner_compare(const struct runner_info *local, const struct runner_info *forge)
{
	if (both(local->uuid_field, forge->uuid_field))
		return equal(local->uuid_field, local->uuid, forge->uuid_field, forge->uuid)
			   ? RUNNER_SAME_UUID
			   : RUNNER_OTHER_UUID;
	/* Gitea's runner object has no uuid: after a wipe, a reused id is
	 * usually another name. */
	if (both(local->name_field, forge->name_field))
		return equal(local->name_field, local->name, forge->name_field, forge->name)
			   ? RUNNER_SAME_NAME
			   : RUNNER_OTHER_NAME;
	return RUNNER_SAME_ID;
}

bool runner_match_is_same(enum runner_match m)
{
	return m == RUNNER_SAME_UUID || m == RUNNER_SAME_NAME || m == RUNNER_SAME_ID;
}
