/* Replacing a file so that no reader ever sees it partial. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Replaces path with data[0..len), mode 0600: a temporary in the same
 * directory, written, fsynced, renamed over path, directory fsynced.  A
 * missing directory is created with dir_mode (its missing parents 0755).
 * With only_if_absent, an existing path, whatever it is, is left exactly as
 * it is.  A lock on ".<name>.lock" (mode 0600, kept; refused, -EPERM, when
 * others could open it) serialises concurrent runs; no temporary
 * survives any return, and stale ones from killed runs are removed.
 * Returns 1 when path was written, 0 when it was left as it was, or
 * -errno.  data may be a secret: nothing here logs. */
int atomic_replace(const char *path, const char *data, size_t len, mode_t dir_mode,
		   bool only_if_absent);
