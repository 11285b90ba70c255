#include <errno.h>
#include <string.h>

#include <jansson.h>

#include "runner.h"

int runner_parse(const char *data, size_t len, struct runner_info *info)
{
	json_error_t error;
	json_t *root, *id, *uuid;
	int r = -EINVAL;

	memset(info, 0, sizeof(*info));
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &error);
	if (!root)
		return -EINVAL;
	if (!json_is_object(root))
		goto out;

	/* jansson refuses integers beyond int64 when parsing; reals, strings,
	 * booleans and null are not integers. */
	id = json_object_get(root, "id");
	if (!json_is_integer(id) || json_integer_value(id) < 1)
		goto out;
	info->id = json_integer_value(id);

	uuid = json_object_get(root, "uuid");
	if (json_is_string(uuid) && json_string_length(uuid) > 0 &&
	    json_string_length(uuid) <= RUNNER_UUID_MAX &&
	    strlen(json_string_value(uuid)) == json_string_length(uuid)) {
		memcpy(info->uuid, json_string_value(uuid), json_string_length(uuid) + 1);
		info->has_uuid = true;
	}
	r = 0;
out:
	json_decref(root);
	return r;
}
