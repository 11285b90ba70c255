/* .runner, resolved and read inside the container root. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fileio.h"

#define RUNNER_FILE_MAX_KIB  64
#define RUNNER_FILE_MAX	     (RUNNER_FILE_MAX_KIB * 1024)
#define RUNNER_FILE_MAX_TEXT KIB_TEXT(RUNNER_FILE_MAX_KIB)

enum runner_state {
	RUNNER_ABSENT,	    /* no such file (or no such directory above it) */
	RUNNER_READ,	    /* a regular file, read into data/len */
	RUNNER_NOT_REGULAR, /* symlink, FIFO, socket, device, directory */
	RUNNER_TOO_LARGE,   /* more than RUNNER_FILE_MAX bytes */
};

struct runner_file {
	int dir_fd; /* its directory, pinned inside the container root; -1 if absent */
	char *name; /* its last path component */
	enum runner_state state;
	bool is_dir;
	char *data; /* RUNNER_READ: the contents (may hold a secret; wiped on close) */
	size_t len;
};

/* Opens the container root once and resolves the directory of path (absolute,
 * inside the container) with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS),
 * then opens the last component itself without following it (O_PATH) and
 * reads it only if that is a regular file, reopened through /proc/self/fd.
 * A lookup that races renames is tried again until deadline_ms.  Returns 0
 * with *rf filled, -ENOSYS when the kernel has no openat2, -ENOMEDIUM when
 * /proc is not mounted, or -errno (-EAGAIN: renames raced it to the end). */
int container_open_runner(const char *root, const char *path, struct runner_file *rf,
			  int64_t deadline_ms);

/* Removes the file (the link itself, never a target) with unlinkat on the
 * pinned directory; a non-empty directory is renamed aside to
 * "<name>.discarded-XXXXXXXX" instead.  Returns 0 (also when already gone)
 * or -errno. */
int container_remove_runner(struct runner_file *rf);

/* Wipes and frees the contents as soon as what is needed was taken from
 * them: they hold the runner's own secret. */
void container_drop_data(struct runner_file *rf);

/* Closes, wipes and frees. */
void container_close_runner(struct runner_file *rf);
