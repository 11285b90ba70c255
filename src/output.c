/* The token file, read by the runner's unit as its EnvironmentFile= (format
 * env) or as a credential holding the bare token (format raw).  Only the
 * token alphabet is ever written, so nothing can inject a variable. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "atomic.h"
#include "output.h"
#include "token.h"

#define OUTPUT_DIR_MODE 0755

static int format(char *buf, size_t n, const char *token, enum token_format fmt)
{
	const char *value = token ? token : "placeholder";

	if (token && !token_is_valid(token, strlen(token)))
		return -EINVAL;
	return snprintf(buf, n, "%s%s\n", fmt == TOKEN_FORMAT_RAW ? "" : "TOKEN=", value);
}

static int replace(const char *path, const char *token, enum token_format fmt, bool only_if_absent,
		   int64_t deadline_ms)
{
	char content[sizeof("TOKEN=\n") + TOKEN_MAX];
	int len = format(content, sizeof(content), token, fmt);
	struct atomic_lock l;
	int r;

	if (len < 0)
		return len;
	r = atomic_lock(&l, path, OUTPUT_DIR_MODE, deadline_ms);
	if (r == 0)
		r = atomic_replace(&l, content, (size_t)len, only_if_absent);
	atomic_unlock(&l);
	explicit_bzero(content, sizeof(content));
	return r;
}

int output_write(const char *path, const char *token, enum token_format fmt, int64_t deadline_ms)
{
	return replace(path, token, fmt, false, deadline_ms);
}

int output_ensure(const char *path, const char *token, enum token_format fmt, int64_t deadline_ms)
{
	return replace(path, token, fmt, true, deadline_ms);
}
