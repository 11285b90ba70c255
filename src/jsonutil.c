#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"

enum field field_copy(const json_t *s, char *buf, size_t n)
{
	size_t len;

	buf[0] = '\0';
	if (!json_is_string(s))
		return FIELD_ABSENT;
	len = json_string_length(s);
	if (len == 0)
		return FIELD_ABSENT;
	if (len >= n || strlen(json_string_value(s)) != len)
		return FIELD_TOO_LONG;
	memcpy(buf, json_string_value(s), len + 1);
	return FIELD_SET;
}

char *json_text(const json_t *j, size_t flags, bool newline, size_t *len)
{
	char *text = j ? json_dumps(j, flags) : NULL, *copy;
	json_malloc_t jmalloc;
	json_free_t jfree;
	size_t n;

	if (!text)
		return NULL;
	n = strlen(text);
	copy = malloc(n + 2);
	if (copy) {
		memcpy(copy, text, n);
		if (newline)
			copy[n++] = '\n';
		copy[n] = '\0';
		*len = n;
	}
	explicit_bzero(text, strlen(text));
	json_get_alloc_funcs(&jmalloc, &jfree); /* json_dumps allocated it */
	jfree(text);
	return copy;
}
