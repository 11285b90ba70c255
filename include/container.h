/* .runner, resolved inside the container root: read, removed, written. */
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

/* How the runner module lays out its state directory under DynamicUser=,
 * told from --runner-file (absolute, inside the container). */
enum runner_layout {
	LAYOUT_PLAIN,		/* not under /var/lib/<top>/<instance>/: plain directories */
	LAYOUT_LINKED_TOP,	/* /var/lib/<top>/<instance>/.runner with /var/lib/<top> ->
				 * private/<top> (services.gitea-actions-runner:
				 * StateDirectory=gitea-runner) */
	LAYOUT_LINKED_INSTANCE, /* /var/lib/forgejo-runner/<instance>/.runner with
				 * /var/lib/forgejo-runner/<instance> ->
				 * ../private/forgejo-runner/<instance> inside a real 0755
				 * /var/lib/forgejo-runner (services.forgejo.runner) */
};

/* The layout of path (pure): under /var/lib/ with at least
 * <top>/<instance>/<file>, LAYOUT_LINKED_INSTANCE for the top
 * "forgejo-runner", LAYOUT_LINKED_TOP for any other top but "private" (that
 * is systemd's own directory); anything else LAYOUT_PLAIN.  Empty
 * components ("//") are skipped; a path with "." or ".." is LAYOUT_PLAIN
 * (container_write_runner refuses it). */
enum runner_layout container_runner_layout(const char *path);

/* Writes data[0..len) as the file path (absolute, inside the container) in
 * the container root, race-free against the container.  What is missing is
 * created as nixos-container and systemd would have it, whatever the umask:
 * the root (and its missing host parents), /var and /var/lib 0755 and
 * /var/lib/private 0700, ours; then per layout the real directories under
 * private/ (unless a real directory is in the link's place: systemd moves
 * that one there itself) and systemd's relative symlink where nothing is;
 * and every directory down to the file's own, 0755, each owned like its
 * parent when a non-root uid owns that (the runner's dynamic user), else
 * ours.  Existing entries are used as they are; directories made stay when
 * a later step fails.  The file goes
 * through atomic_write_at in its directory, resolved again from the root,
 * with that directory's owner and group and mode 0600, after removing the
 * temporaries of killed runs (the caller serialises runs).  A symlink, FIFO
 * or other non-directory at the name is replaced, never followed or opened.
 * data may be a secret: nothing here logs.
 *
 * Returns 1 when written, or -errno with the old file intact and no
 * temporary left: -EINVAL for a path that is not absolute, names no file or
 * holds "." or "..", -ENOTDIR when a non-directory is in the way, -EISDIR
 * when the name is a directory, -ENOSPC on a full file system, -ENOSYS
 * without openat2, -EAGAIN when renames raced the lookups until
 * deadline_ms. */
int container_write_runner(const char *root, const char *path, const char *data, size_t len,
			   int64_t deadline_ms);
