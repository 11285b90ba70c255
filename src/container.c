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
 *  5. Writing creates each missing directory or symlink with mkdirat() or
 *     symlinkat() on an fd of its parent, that parent resolved from the
 *     root as in rule 1 just before; a new directory's mode, then its owner
 *     (in that order: without CAP_FOWNER root cannot chmod what it gave
 *     away), are set on an fd opened O_DIRECTORY | O_NOFOLLOW relative to
 *     the same parent.  Existing entries are used as they are.  Where
 *     systemd puts a symlink no real directory is ever created.  The only
 *     paths created by name are the container root and its missing parents:
 *     host directories, outside the container's reach.
 *  6. The file is written by atomic_write_at() in its directory resolved
 *     again from the root: a temporary created O_EXCL | O_NOFOLLOW, renamed
 *     over the name, which replaces a symlink or FIFO there and never
 *     follows or opens it.  However the container races this, what gets
 *     written is inside the root.
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

#include "atomic.h"
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

/* A path inside the container, split into its components. */
#define RPATH_DEPTH_MAX 64

struct rpath {
	char s[PATH_MAX];	     /* "var/lib/gitea-runner/hive/.runner" */
	size_t end[RPATH_DEPTH_MAX]; /* where each component ends in s */
	size_t n;
	bool dots; /* a component is "." or ".." */
};

static int rpath_split(const char *path, struct rpath *rp)
{
	size_t len = 0;

	*rp = (struct rpath){.n = 0};
	for (const char *p = path; *p;) {
		size_t c = strcspn(p, "/");

		if (c > 0) {
			if (rp->n == RPATH_DEPTH_MAX || len + c + 1 > sizeof(rp->s))
				return -ENAMETOOLONG;
			if (c > NAME_MAX)
				return -ENAMETOOLONG;
			if ((c == 1 && p[0] == '.') || (c == 2 && p[0] == '.' && p[1] == '.'))
				rp->dots = true;
			if (rp->n > 0)
				rp->s[len++] = '/';
			memcpy(rp->s + len, p, c);
			len += c;
			rp->s[len] = '\0';
			rp->end[rp->n++] = len;
		}
		p += c;
		p += strspn(p, "/");
	}
	return 0;
}

/* Component i (from 0) of rp, into buf. */
static const char *rpath_part(const struct rpath *rp, size_t i, char *buf)
{
	size_t start = i == 0 ? 0 : rp->end[i - 1] + 1;

	memcpy(buf, rp->s + start, rp->end[i] - start);
	buf[rp->end[i] - start] = '\0';
	return buf;
}

/* The first k components of rp, into buf ("." for none). */
static const char *rpath_prefix(const struct rpath *rp, size_t k, char *buf)
{
	if (k == 0)
		return strcpy(buf, ".");
	memcpy(buf, rp->s, rp->end[k - 1]);
	buf[rp->end[k - 1]] = '\0';
	return buf;
}

static enum runner_layout rpath_layout(const struct rpath *rp)
{
	char part[NAME_MAX + 1];

	if (rp->dots || rp->n < 5)
		return LAYOUT_PLAIN;
	if (strcmp(rpath_part(rp, 0, part), "var") != 0 ||
	    strcmp(rpath_part(rp, 1, part), "lib") != 0)
		return LAYOUT_PLAIN;
	rpath_part(rp, 2, part);
	if (strcmp(part, "forgejo-runner") == 0)
		return LAYOUT_LINKED_INSTANCE;
	if (strcmp(part, "private") == 0)
		return LAYOUT_PLAIN; /* systemd's own: no link to make */
	return LAYOUT_LINKED_TOP;
}

enum runner_layout container_runner_layout(const char *path)
{
	struct rpath rp;

	if (path[0] != '/' || rpath_split(path, &rp) < 0)
		return LAYOUT_PLAIN;
	return rpath_layout(&rp);
}

/* Who owns a directory created: ours (root), or its parent's owner when a
 * non-root uid owns the parent (the runner's dynamic user, from an earlier
 * boot: systemd would not chown below a top the runner already owns). */
enum owner {
	OWNER_OURS,
	OWNER_LIKE_PARENT,
};

/* Opens the directory that holds rel (relative to the root) inside the
 * root, O_PATH, and points *name at rel's last component. */
static int open_parent_in_root(int root_fd, const char *rel, const char **name, int64_t deadline_ms)
{
	const char *slash = strrchr(rel, '/');
	char parent[PATH_MAX];

	if (!slash) {
		*name = rel;
		return openat2_in_root(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC, deadline_ms);
	}
	*name = slash + 1;
	memcpy(parent, rel, (size_t)(slash - rel));
	parent[slash - rel] = '\0';
	return openat2_in_root(root_fd, parent, O_PATH | O_DIRECTORY | O_CLOEXEC, deadline_ms);
}

/* Gives the directory name in dir_fd, just made by us, exactly mode and
 * its owner; on failure removes it again (if still empty), so that no
 * directory the runner could not use is left behind. */
static int settle_new_dir(int dir_fd, const char *name, mode_t mode, enum owner owner)
{
	_cleanup_(closep) int fd = -1;
	struct stat parent;
	uid_t uid = geteuid();
	gid_t gid = getegid();
	int r = 0;

	/* O_NOFOLLOW | O_DIRECTORY: if the container swapped something in
	 * meanwhile, this opens a directory in dir_fd, inside the root, or
	 * fails. */
	fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(dir_fd, &parent) < 0)
		return -errno;
	if (owner == OWNER_LIKE_PARENT && parent.st_uid != 0) {
		uid = parent.st_uid;
		gid = parent.st_gid;
	}
	if (fchmod(fd, mode) < 0 || fchown(fd, uid, gid) < 0) {
		r = -errno;
		unlinkat(dir_fd, name, AT_REMOVEDIR);
	}
	return r;
}

/* Makes the directory rel inside the root unless something is at its name
 * already (used as it is, whatever it is: the lookups after this tell). */
static int ensure_dir(int root_fd, const char *rel, mode_t mode, enum owner owner,
		      int64_t deadline_ms)
{
	_cleanup_(closep) int dir_fd = -1;
	const char *name;

	dir_fd = open_parent_in_root(root_fd, rel, &name, deadline_ms);
	if (dir_fd < 0)
		return dir_fd;
	if (mkdirat(dir_fd, name, mode) < 0)
		return errno == EEXIST ? 0 : -errno;
	return settle_new_dir(dir_fd, name, mode, owner);
}

/* Makes the symlink rel -> target inside the root unless something is at
 * its name already. */
static int ensure_link(int root_fd, const char *rel, const char *target, int64_t deadline_ms)
{
	_cleanup_(closep) int dir_fd = -1;
	const char *name;

	dir_fd = open_parent_in_root(root_fd, rel, &name, deadline_ms);
	if (dir_fd < 0)
		return dir_fd;
	if (symlinkat(target, dir_fd, name) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* What is at rel inside the root, not following it: its S_IFMT, or 0 when
 * nothing is, or -errno. */
static int entry_type(int root_fd, const char *rel, int64_t deadline_ms)
{
	_cleanup_(closep) int dir_fd = -1;
	const char *name;
	struct stat st;

	dir_fd = open_parent_in_root(root_fd, rel, &name, deadline_ms);
	if (dir_fd < 0)
		return dir_fd;
	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	return (int)(st.st_mode & S_IFMT);
}

/* systemd's link at link_rel -> target (relative) for a DynamicUser=
 * state directory, and the real directories under private/ (privs, from
 * the top down).  Those are made only when no real directory is at the
 * link's place: systemd moves such a directory to private/ itself, and
 * fails the unit if both exist. */
static int ensure_linked(int root_fd, const char *link_rel, const char *const *privs,
			 size_t n_privs, const char *target, int64_t deadline_ms)
{
	int type = entry_type(root_fd, link_rel, deadline_ms);
	int r;

	if (type < 0)
		return type;
	if (type != 0 && type != S_IFLNK)
		return 0; /* used as it is: a directory for systemd to move, or in the way */
	for (size_t i = 0; i < n_privs; i++) {
		r = ensure_dir(root_fd, privs[i], 0755, OWNER_LIKE_PARENT, deadline_ms);
		if (r < 0)
			return r;
	}
	return type == 0 ? ensure_link(root_fd, link_rel, target, deadline_ms) : 0;
}

/* True for the directories nixos-container makes (/var, /var/lib 0755)
 * and systemd's /var/lib/private (0700): ours, whoever owns what is above. */
static bool system_dir(const char *rel, mode_t *mode)
{
	*mode = strcmp(rel, "var/lib/private") == 0 ? 0700 : 0755;
	return *mode == 0700 || strcmp(rel, "var") == 0 || strcmp(rel, "var/lib") == 0;
}

static int ensure_system_dirs(int root_fd, int64_t deadline_ms)
{
	static const char *const dirs[] = {"var", "var/lib", "var/lib/private"};

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		mode_t mode;
		int r;

		system_dir(dirs[i], &mode);
		r = ensure_dir(root_fd, dirs[i], mode, OWNER_OURS, deadline_ms);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Makes the directories rp's first k components name, for k in (from, to]:
 * 0755 and owned like their parent, unless system_dir(). */
static int ensure_plain(int root_fd, const struct rpath *rp, size_t from, size_t to,
			int64_t deadline_ms)
{
	char rel[PATH_MAX];

	for (size_t k = from + 1; k <= to; k++) {
		mode_t mode;
		enum owner owner;
		int r;

		rpath_prefix(rp, k, rel);
		owner = system_dir(rel, &mode) ? OWNER_OURS : OWNER_LIKE_PARENT;
		r = ensure_dir(root_fd, rel, mode, owner, deadline_ms);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Creates what is missing of the directory of rp (of n components, the
 * last the file), per layout, down to the file's own directory (the
 * instance directory, that the gitea modules' ExecStartPre used to make). */
static int ensure_parents(int root_fd, const struct rpath *rp, int64_t deadline_ms)
{
	char rel[PATH_MAX], top[NAME_MAX + 1], inst[NAME_MAX + 1];
	char priv_top[PATH_MAX], priv_inst[PATH_MAX], target[PATH_MAX];
	const char *privs[] = {priv_top, priv_inst};
	enum runner_layout layout = rpath_layout(rp);
	size_t linked; /* components down to the link */
	int r;

	if (layout == LAYOUT_PLAIN)
		return ensure_plain(root_fd, rp, 0, rp->n - 1, deadline_ms);

	r = ensure_system_dirs(root_fd, deadline_ms);
	if (r < 0)
		return r;
	rpath_part(rp, 2, top);
	snprintf(priv_top, sizeof(priv_top), "var/lib/private/%s", top);
	if (layout == LAYOUT_LINKED_TOP) {
		/* var/lib/<top> -> private/<top> */
		linked = 3;
		snprintf(target, sizeof(target), "private/%s", top);
	} else {
		/* A real var/lib/forgejo-runner, and in it
		 * <inst> -> ../private/forgejo-runner/<inst> */
		linked = 4;
		rpath_part(rp, 3, inst);
		snprintf(priv_inst, sizeof(priv_inst), "var/lib/private/%s/%s", top, inst);
		snprintf(target, sizeof(target), "../private/%s/%s", top, inst);
		r = ensure_plain(root_fd, rp, 2, 3, deadline_ms);
		if (r < 0)
			return r;
	}
	r = ensure_linked(root_fd, rpath_prefix(rp, linked, rel), privs, linked - 2, target,
			  deadline_ms);
	if (r < 0)
		return r;
	return ensure_plain(root_fd, rp, linked, rp->n - 1, deadline_ms);
}

#define TMP_NAME_EXTRA (sizeof(".") - 1 + sizeof(".tmp-") - 1 + 16) /* atomic_write_at's */

int container_write_runner(const char *root, const char *path, const char *data, size_t len,
			   int64_t deadline_ms)
{
	_cleanup_(closep) int root_fd = -1;
	_cleanup_(closep) int dir_fd = -1;
	char dir[PATH_MAX], name[NAME_MAX + 1];
	struct rpath rp;
	struct stat st;
	int r;

	if (path[0] != '/' || path[strlen(path) - 1] == '/')
		return -EINVAL;
	r = rpath_split(path, &rp);
	if (r < 0)
		return r;
	if (rp.n == 0 || rp.dots)
		return -EINVAL;
	rpath_part(&rp, rp.n - 1, name);
	if (strlen(name) + TMP_NAME_EXTRA > NAME_MAX)
		return -ENAMETOOLONG;

	root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0 && errno == ENOENT) {
		r = atomic_mkdir(root, 0755); /* first boot: no container yet */
		if (r < 0)
			return r;
		root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	}
	if (root_fd < 0)
		return -errno;

	r = ensure_parents(root_fd, &rp, deadline_ms);
	if (r < 0)
		return r;

	/* Resolved again from the root: whatever the container did meanwhile,
	 * this is a directory inside it.  O_RDONLY, not O_PATH: fsync needs it. */
	dir_fd = openat2_in_root(root_fd, rpath_prefix(&rp, rp.n - 1, dir),
				 O_RDONLY | O_DIRECTORY | O_NOCTTY | O_CLOEXEC, deadline_ms);
	if (dir_fd < 0)
		return dir_fd;
	if (fstat(dir_fd, &st) < 0)
		return -errno;
	atomic_remove_stale(dir_fd, name);
	return atomic_write_at(dir_fd, name, data, len, st.st_uid, st.st_gid, false);
}
