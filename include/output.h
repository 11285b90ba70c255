/* The token file: validated, written atomically. */
#pragma once

#include <stdint.h>

enum token_format {
	TOKEN_FORMAT_ENV, /* TOKEN=<value>\n: a systemd EnvironmentFile= */
	TOKEN_FORMAT_RAW, /* <value>\n: the bare token, for LoadCredential= */
};

/* Replaces path with the token (NULL: "placeholder") in the given format,
 * mode 0600, its directory created 0755 if missing, under the lock of path
 * (waited for until deadline_ms; see atomic_lock).  Returns 1, -EINVAL for
 * a token outside the alphabet (nothing written), or -errno (-EWOULDBLOCK:
 * the lock stayed held; -ENOLCK: the lock file is not ours alone). */
int output_write(const char *path, const char *token, enum token_format fmt, int64_t deadline_ms);

/* The same, only if path does not exist: an existing file, whatever it
 * holds, is left exactly as it is.  Returns 1 when written, 0 when left, or
 * -errno. */
int output_ensure(const char *path, const char *token, enum token_format fmt, int64_t deadline_ms);
