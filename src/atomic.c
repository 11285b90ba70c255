/* Replacing a file atomically: the token file and the state file.
 *
 * A reader (the container's bind mount, systemd, the next boot) must never
 * see a partial file, whenever this process dies: the new contents go to a
 * temporary in the same directory, are fsynced, and renamed over the target.
 * A flock on a lock file next to the target serialises concurrent runs, which
 * is also what makes it safe to remove temporaries left by a run that was
 * killed.  The lock file has mode 0600 and our owner: no one else can open
 * it, so no one else can hold the lock (on the directory, any user who can
 * open it could, for ever); and no wait for it outlasts its deadline. */
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
#include "clock.h"
#include "fileio.h"

#define TMP_SUFFIX  ".tmp-"
#define LOCK_SUFFIX ".lock"

int atomic_mkdir(const char *dir, mode_t mode)
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
		int r = atomic_mkdir(dir, dir_mode);

		if (r < 0)
			return r;
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	return fd < 0 ? -errno : fd;
}

#define LOCK_POLL_MS 20 /* a lock given up is taken within this */

/* Opens ".<base>.lock" in dir_fd: created 0600 whatever the umask, or an
 * existing one that is exactly a regular file of ours with mode 0600
 * (-ENOLCK otherwise: another user could open, and so hold, it). */
static int open_lock_file(int dir_fd, const char *base)
{
	_cleanup_(closep) int fd = -1;
	char name[NAME_MAX + 1];
	struct stat st;

	snprintf(name, sizeof(name), ".%s" LOCK_SUFFIX, base);
	fd = openat(dir_fd, name,
		    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
		    0600);
	if (fd >= 0)
		return fchmod(fd, 0600) < 0 ? -errno : TAKE_FD(fd);
	if (errno != EEXIST)
		return -errno;
	/* flock needs no write access: a lock file we cannot even read is not
	 * one of mode 0600 (as root, every one opens). */
	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP || errno == EACCES ? -ENOLCK : -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 07777) != 0600)
		return -ENOLCK;
	return TAKE_FD(fd);
}

int atomic_lock(struct atomic_lock *l, const char *path, mode_t dir_mode, int64_t deadline_ms)
{
	const char *base;
	int r;

	*l = (struct atomic_lock){.dir_fd = -1, .fd = -1};
	r = open_parent(path, &base, dir_mode);
	if (r < 0)
		return r;
	l->dir_fd = r;
	if (strlen(base) + sizeof(TMP_SUFFIX) + 17 > NAME_MAX) {
		atomic_unlock(l);
		return -ENAMETOOLONG;
	}
	memcpy(l->base, base, strlen(base) + 1);
	r = open_lock_file(l->dir_fd, base);
	if (r < 0) {
		atomic_unlock(l);
		return r;
	}
	l->fd = r;
	while (flock(l->fd, LOCK_EX | LOCK_NB) < 0) {
		int64_t left = deadline_ms - clock_now_ms();

		if ((errno != EWOULDBLOCK && errno != EINTR) || left <= 0) {
			r = errno == EINTR ? -EWOULDBLOCK : -errno;
			atomic_unlock(l);
			return r;
		}
		sleep_ms(left < LOCK_POLL_MS ? left : LOCK_POLL_MS);
	}
	return 0;
}

void atomic_unlock(struct atomic_lock *l)
{
	closep(&l->fd);
	closep(&l->dir_fd);
	l->fd = l->dir_fd = -1;
}

void atomic_lock_name(const char *path, char *buf, size_t n)
{
	const char *slash = strrchr(path, '/');

	if (slash)
		snprintf(buf, n,
			 "%.*s/."
			 "%s" LOCK_SUFFIX,
			 (int)(slash - path), path, slash + 1);
	else
		snprintf(buf, n, ".%s" LOCK_SUFFIX, path);
}

void atomic_remove_stale(int dir_fd, const char *base)
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

int atomic_write_at(int dir_fd, const char *base, const char *data, size_t len, uid_t uid,
		    gid_t gid, bool only_if_absent)
{
	char stem[NAME_MAX + 1], tmp[NAME_MAX + 1];
	int fd, r;

	if (only_if_absent && faccessat(dir_fd, base, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	snprintf(stem, sizeof(stem), ".%s" TMP_SUFFIX, base);
	fd = try_random_names(tmp, sizeof(tmp), stem, 16, open_new, &dir_fd);
	if (fd < 0)
		return fd;
	r = write_full(fd, data, len);
	/* The mode first: a caller without CAP_FOWNER (the systemd unit grants
	 * CAP_CHOWN only) cannot chmod a file it has already given away. */
	if (r == 0 && fchmod(fd, 0600) < 0) /* whatever the umask */
		r = -errno;
	if (r == 0 && (uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) < 0)
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

int atomic_replace(const struct atomic_lock *l, const char *data, size_t len, bool only_if_absent)
{
	atomic_remove_stale(l->dir_fd, l->base);
	return atomic_write_at(l->dir_fd, l->base, data, len, (uid_t)-1, (gid_t)-1, only_if_absent);
}
