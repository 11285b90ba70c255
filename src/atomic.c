/* Replacing a file atomically: the token file and the state file.
 *
 * A reader (the container's bind mount, systemd, the next boot) must never
 * see a partial file, whenever this process dies: the new contents go to a
 * temporary in the same directory, are fsynced, and renamed over the target.
 * A flock on a lock file next to the target serialises concurrent runs, which
 * is also what makes it safe to remove temporaries left by a run that was
 * killed.  The lock file has mode 0600 and our owner: no one else can open
 * it, so no one else can hold the lock (on the directory, any user who can
 * open it could, for ever). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "cleanup.h"
#include "fileio.h"

#define TMP_SUFFIX  ".tmp-"
#define LOCK_SUFFIX ".lock"

/* Creates every missing directory of dir (like mkdir -p): dir itself with
 * mode, its parents 0755, whatever the umask. */
static int mkdir_parents(const char *dir, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(dir);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, dir, len + 1);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		mode_t m = c == '\0' ? mode : 0755;

		if (mkdir(buf, m) == 0) {
			if (chmod(buf, m) < 0) /* whatever the umask */
				return -errno;
		} else if (errno != EEXIST) {
			return -errno;
		}
		*p = c;
		if (c == '\0')
			return 0;
	}
}

/* Opens the directory of path, creating it if needed; *base is set to the
 * last component, inside path. */
static int open_parent(const char *path, const char **base, mode_t dir_mode)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	int fd;

	if (!slash) {
		*base = path;
		snprintf(dir, sizeof(dir), ".");
	} else {
		*base = slash + 1;
		if ((size_t)(slash - path) >= sizeof(dir))
			return -ENAMETOOLONG;
		if (slash == path)
			snprintf(dir, sizeof(dir), "/");
		else
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		int r = mkdir_parents(dir, dir_mode);

		if (r < 0)
			return r;
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	return fd < 0 ? -errno : fd;
}

/* Opens ".<base>.lock" in dir_fd, creating it with mode 0600, and takes an
 * exclusive flock on it.  Refuses (-EPERM) a lock file that is not a regular
 * file of ours that only we can open: another user could hold it.  Returns
 * the fd, to be closed to unlock, or -errno. */
static int lock_target(int dir_fd, const char *base)
{
	_cleanup_(closep) int fd = -1;
	char name[NAME_MAX + 1];
	struct stat st;

	snprintf(name, sizeof(name), ".%s" LOCK_SUFFIX, base);
	fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
		    0600);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
		return -EPERM;
	if (flock(fd, LOCK_EX) < 0)
		return -errno;
	return TAKE_FD(fd);
}

/* Removes ".<base>.tmp-*" left behind by killed runs.  Caller holds the lock. */
static void remove_stale_temporaries(int dir_fd, const char *base)
{
	char prefix[NAME_MAX + 16];
	struct dirent *de;
	DIR *d;
	int fd;

	snprintf(prefix, sizeof(prefix), ".%s" TMP_SUFFIX, base);
	fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			unlinkat(dir_fd, de->d_name, 0);
	closedir(d);
}

static int open_new(const char *name, void *userdata)
{
	int fd = openat(*(const int *)userdata, name,
			O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

	return fd < 0 ? -errno : fd;
}

/* Creates a fresh temporary next to base; its name is left in tmp. */
static int create_temporary(int dir_fd, const char *base, char *tmp, size_t tmplen)
{
	char stem[NAME_MAX + 1];

	snprintf(stem, sizeof(stem), ".%s" TMP_SUFFIX, base);
	return try_random_names(tmp, tmplen, stem, 16, open_new, &dir_fd);
}

int atomic_replace(const char *path, const char *data, size_t len, mode_t dir_mode,
		   bool only_if_absent)
{
	_cleanup_(closep) int dir_fd = -1;
	_cleanup_(closep) int lock_fd = -1;
	char tmp[NAME_MAX + 1];
	const char *base;
	int fd, r;

	dir_fd = open_parent(path, &base, dir_mode);
	if (dir_fd < 0)
		return dir_fd;
	if (strlen(base) + sizeof(TMP_SUFFIX) + 17 > NAME_MAX)
		return -ENAMETOOLONG;
	lock_fd = lock_target(dir_fd, base);
	if (lock_fd < 0)
		return lock_fd;
	remove_stale_temporaries(dir_fd, base);

	if (only_if_absent && faccessat(dir_fd, base, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;

	fd = create_temporary(dir_fd, base, tmp, sizeof(tmp));
	if (fd < 0)
		return fd;
	r = write_full(fd, data, len);
	if (r == 0 && fchmod(fd, 0600) < 0) /* whatever the umask */
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		goto discard;
	if (renameat2(dir_fd, tmp, dir_fd, base, only_if_absent ? RENAME_NOREPLACE : 0) < 0) {
		/* Under RENAME_NOREPLACE, a file that appeared meanwhile stands. */
		r = errno == EEXIST && only_if_absent ? 0 : -errno;
		goto discard;
	}
	/* Renamed: nothing is left to clean up, only to make it durable. */
	return fsync(dir_fd) < 0 ? -errno : 1;
discard:
	unlinkat(dir_fd, tmp, 0);
	return r;
}
