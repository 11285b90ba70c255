/* .runner inside the container root.
 *
 * Everything under the container root is written by whoever runs in the
 * container, and root in a nixos-container is root on the host.  Rules this
 * file keeps:
 *  1. The container root is opened once; every path inside it is resolved by
 *     openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) relative to that fd,
 *     so symlinks and ".." are interpreted as if the root were "/" and
 *     nothing resolves outside it.  No string path into the container is
 *     ever handed to open() or unlink().  Without openat2 we refuse.
 *  2. The last component is opened O_PATH | O_NOFOLLOW (which opens no
 *     device or FIFO) and checked on that fd: a regular file of at most
 *     RUNNER_FILE_MAX bytes, else malformed.  Only that very inode is then
 *     opened for reading, through /proc/self/fd; without /proc, nothing.
 *  3. Deletion is unlinkat() on the pinned directory fd: it removes the name
 *     (a symlink itself, never its target).
 *  4. The file's bytes are secret (they hold the runner's token): wiped on
 *     close, never logged.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "clock.h"
#include "fileio.h"
#include "container.h"

#define OPENAT2_EAGAIN_TRIES   16 /* at once, then a pause, then again */
#define OPENAT2_BACKOFF_MAX_MS 10

/* EAGAIN: a rename or mount anywhere raced a lookup that went through
 * "..", and the kernel asks us to try again rather than risk a wrong
 * answer.  A process in the container can rename without pause, and make
 * the lookup long (a symlink of hundreds of ".."), so that most tries
 * fail: tries come in rounds of 16, with a pause between rounds (1 ms,
 * doubling up to 10 ms), until the deadline. */
static int openat2_in_root(int root_fd, const char *path, int flags, int64_t deadline_ms)
{
	struct open_how how = {
	    .flags = (uint64_t)flags,
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int64_t backoff = 1;

	for (int i = 0;; i++) {
		long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
		int64_t left;

		if (fd >= 0)
			return (int)fd;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		if ((i + 1) % OPENAT2_EAGAIN_TRIES != 0)
			continue;
		left = deadline_ms - clock_now_ms();
		if (left <= 0)
			return -EAGAIN;
		sleep_ms(backoff < left ? backoff : left);
		if (backoff < OPENAT2_BACKOFF_MAX_MS)
			backoff *= 2;
	}
}

/* Opens the regular file that fd (O_PATH) refers to for reading, through
 * /proc/self/fd, as systemd's fd_reopen() does: no name is looked up again,
 * so the object opened is the object checked.  Without /proc mounted there
 * is no safe way, and no fallback to the name: -ENOMEDIUM. */
static int reopen_for_reading(int fd, const struct stat *checked)
{
	char proc[sizeof("/proc/self/fd/") + 12];
	struct stat st;
	int r;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	r = open(proc, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (r < 0) {
		if (errno == ENOENT && access("/proc/self/fd", F_OK) < 0)
			return -ENOMEDIUM; /* /proc is not mounted */
		return -errno;
	}
	/* The magic link leads to the same inode; say so rather than trust it. */
	if (fstat(r, &st) < 0 || st.st_dev != checked->st_dev || st.st_ino != checked->st_ino) {
		close(r);
		return -EIO;
	}
	return r;
}

/* Reads the file rf->name in rf->dir_fd, setting rf->state. */
static int runner_read(struct runner_file *rf)
{
	_cleanup_(closep) int path_fd = -1;
	_cleanup_(closep) int fd = -1;
	struct stat st;
	ssize_t n;

	/* O_PATH opens nothing: no device driver, no FIFO.  What fstat says
	 * about this descriptor is what gets read, whatever is renamed over
	 * the name meanwhile. */
	path_fd = openat(rf->dir_fd, rf->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (path_fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(path_fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		rf->state = RUNNER_NOT_REGULAR;
		rf->is_dir = S_ISDIR(st.st_mode);
		return 0;
	}
	if (st.st_size > RUNNER_FILE_MAX) {
		rf->state = RUNNER_TOO_LARGE;
		return 0;
	}

	fd = reopen_for_reading(path_fd, &st);
	if (fd < 0)
		return fd;

	rf->data = malloc(RUNNER_FILE_MAX + 1);
	if (!rf->data)
		return -ENOMEM;
	n = read_full(fd, rf->data, RUNNER_FILE_MAX + 1); /* it may have grown */
	if (n < 0)
		return (int)n;
	if (n > RUNNER_FILE_MAX) {
		rf->state = RUNNER_TOO_LARGE;
		return 0;
	}
	rf->len = (size_t)n;
	rf->state = RUNNER_READ;
	return 0;
}

int container_open_runner(const char *root, const char *path, struct runner_file *rf,
			  int64_t deadline_ms)
{
	_cleanup_(closep) int root_fd = -1;
	_cleanup_(freep) char *dir = NULL;
	const char *slash = strrchr(path, '/');
	int fd;

	*rf = (struct runner_file){.dir_fd = -1, .state = RUNNER_ABSENT};
	if (path[0] != '/' || !slash || slash[1] == '\0')
		return -EINVAL;

	root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0)
		return errno == ENOENT ? 0 : -errno; /* container not created yet */

	dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
	rf->name = strdup(slash + 1);
	if (!dir || !rf->name)
		return -ENOMEM;

	fd = openat2_in_root(root_fd, dir, O_PATH | O_DIRECTORY | O_CLOEXEC, deadline_ms);
	/* A directory that cannot be reached (missing, not a directory, a link
	 * loop, a component longer than NAME_MAX) holds no .runner. */
	if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP || fd == -ENAMETOOLONG)
		return 0;
	if (fd < 0)
		return fd;
	rf->dir_fd = fd;

	return runner_read(rf);
}

/* A non-empty directory cannot be unlinked; renaming it aside, in the same
 * pinned directory, frees the name without walking a tree the container
 * built (and keeps whatever it holds). */
static int rename_aside(const char *aside, void *userdata)
{
	const struct runner_file *rf = userdata;

	if (renameat2(rf->dir_fd, rf->name, rf->dir_fd, aside, RENAME_NOREPLACE) == 0)
		return 0;
	return errno == ENOENT ? 0 : -errno;
}

static int set_aside(struct runner_file *rf)
{
	char stem[NAME_MAX + 1], aside[NAME_MAX + 1];

	snprintf(stem, sizeof(stem), "%.200s.discarded-", rf->name);
	return try_random_names(aside, sizeof(aside), stem, 8, rename_aside, rf);
}

int container_remove_runner(struct runner_file *rf)
{
	if (rf->dir_fd < 0)
		return 0;
	if (unlinkat(rf->dir_fd, rf->name, rf->is_dir ? AT_REMOVEDIR : 0) == 0)
		return 0;
	if (errno == ENOENT)
		return 0;
	/* It changed type since we looked: try the other way once. */
	if (errno == EISDIR || errno == ENOTDIR) {
		if (unlinkat(rf->dir_fd, rf->name, rf->is_dir ? 0 : AT_REMOVEDIR) == 0 ||
		    errno == ENOENT)
			return 0;
	}
	if (errno == ENOTEMPTY || errno == EEXIST)
		return set_aside(rf);
	return -errno;
}

void container_close_runner(struct runner_file *rf)
{
	container_drop_data(rf);
	free(rf->name);
	closep(&rf->dir_fd);
	*rf = (struct runner_file){.dir_fd = -1};
}

void container_drop_data(struct runner_file *rf)
{
	rf->data = erase_and_free_sized(rf->data, RUNNER_FILE_MAX + 1);
	rf->len = 0;
}
