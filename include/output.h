/* The token file: validated, written atomically. */
#pragma once

/* Replaces path with "TOKEN=<token>\n" (token NULL: "TOKEN=placeholder\n"),
 * mode 0600, parent created 0755 if missing: a temporary in the same
 * directory, written, fsynced, renamed over path, directory fsynced.  No
 * temporary survives any return; stale ones from killed runs are removed.
 * Returns 0, -EINVAL for a token outside the alphabet (nothing written), or
 * -errno. */
int output_write(const char *path, const char *token);

/* Writes the placeholder only if path does not exist: an existing file,
 * whatever it holds, is left exactly as it is.  Returns 0 or -errno. */
int output_ensure(const char *path);
