/* Writing .runner into a container root that a hostile container controls:
 * the DynamicUser= layouts created as systemd would, existing ones used as
 * they are, and nothing ever written outside the root or through a link. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "container.h"

#define GITEA	"/var/lib/gitea-runner/hive/.runner"
#define FORGEJO "/var/lib/forgejo-runner/hive/.runner"
#define DATA	"{\n  \"id\": 7,\n  \"token\": \"0123456789abcdef0123456789abcdef01234567\"\n}\n"
#define OLD	"{\n  \"id\": 6\n}\n"
#define VICTIM	"the host's own file\n"

#define OTHER_UID 61234 /* a runner's dynamic user from an earlier boot */
#define OTHER_GID 61235

#define WATCHDOG_S 60 /* a test that hangs (a FIFO opened) is killed */

/* A scratch directory: "root" is the container root (not created), and
 * "outside" a host directory the container would love to write into,
 * shaped so that any escape would succeed in writing there. */
struct box {
	char base[64];
	char root[128];
	char outside[128];
};

static const char *at(const char *dir, const char *rel)
{
	static char bufs[8][PATH_MAX];
	static int next;
	char *b = bufs[next++ % 8];

	snprintf(b, PATH_MAX, "%s/%s", dir, rel);
	return b;
}

/* at() for a path kept longer than the next few calls. */
static char *held(char *buf, const char *dir, const char *rel)
{
	snprintf(buf, PATH_MAX, "%s/%s", dir, rel);
	return buf;
}

static int64_t deadline(void)
{
	return clock_now_ms() + 5000;
}

static void mkdirs(const char *dir, const char *rel, mode_t mode)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s/%s", dir, rel);
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;

			*p = '\0';
			if (mkdir(buf, mode) == 0)
				assert_int_equal(chmod(buf, mode), 0);
			else
				assert_int_equal(errno, EEXIST);
			*p = c;
			if (c == '\0')
				return;
		}
	}
}

static void put(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

static void link_to(const char *target, const char *path)
{
	assert_int_equal(symlink(target, path), 0);
}

static void fifo(const char *path)
{
	assert_int_equal(mkfifo(path, 0600), 0);
}

static void assert_dir(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		fail_msg("%s: %s", path, strerror(errno));
	if (!S_ISDIR(st.st_mode) || (st.st_mode & 07777) != mode || st.st_uid != uid ||
	    st.st_gid != gid)
		fail_msg("%s: type %o mode %04o owner %d:%d, expected a directory %04o %d:%d", path,
			 st.st_mode & S_IFMT, st.st_mode & 07777, (int)st.st_uid, (int)st.st_gid,
			 mode, (int)uid, (int)gid);
}

static void assert_link(const char *path, const char *target)
{
	char buf[PATH_MAX];
	ssize_t n = readlink(path, buf, sizeof(buf) - 1);

	if (n < 0)
		fail_msg("%s: not a symlink: %s", path, strerror(errno));
	buf[n] = '\0';
	assert_string_equal(buf, target);
}

static void assert_absent(const char *path)
{
	struct stat st;

	if (lstat(path, &st) == 0 || errno != ENOENT)
		fail_msg("%s exists", path);
}

static void assert_contents(const char *path, const char *data)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		fail_msg("%s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
	assert_string_equal(buf, data);
}

static void assert_file(const char *path, const char *data, uid_t uid, gid_t gid)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), 0);
	if (!S_ISREG(st.st_mode) || (st.st_mode & 07777) != 0600 || st.st_uid != uid ||
	    st.st_gid != gid)
		fail_msg("%s: type %o mode %04o owner %d:%d, expected a file 0600 %d:%d", path,
			 st.st_mode & S_IFMT, st.st_mode & 07777, (int)st.st_uid, (int)st.st_gid,
			 (int)uid, (int)gid);
	assert_contents(path, data);
}

/* No temporary of atomic_write_at's ("..runner.tmp-*") in dir. */
static void assert_no_temporaries(const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strncmp(de->d_name, "..runner.tmp-", 13) == 0)
			fail_msg("%s/%s left behind", dir, de->d_name);
	closedir(d);
}

/* What a tree holds, down to each entry's mtime: a write anywhere in it
 * changes this. */
static char snap[65536];

static int snap_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	size_t n = strlen(snap);

	(void)type;
	(void)ftw;
	snprintf(snap + n, sizeof(snap) - n, "%s %o %04o %lld %lld.%09ld\n", path,
		 st->st_mode & S_IFMT, st->st_mode & 07777, (long long)st->st_size,
		 (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
	return 0;
}

static char *snapshot(const char *dir)
{
	snap[0] = '\0';
	assert_int_equal(nftw(dir, snap_one, 16, FTW_PHYS), 0);
	assert_true(strlen(snap) < sizeof(snap) - 1);
	return strdup(snap);
}

static void assert_unchanged(const char *dir, char *before)
{
	char *after = snapshot(dir);

	if (strcmp(before, after) != 0) {
		fprintf(stderr, "before:\n%s\nafter:\n%s\n", before, after);
		fail_msg("%s changed", dir);
	}
	free(before);
	free(after);
	assert_contents(at(dir, "victim"), VICTIM);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

static int setup(void **state)
{
	struct box *b = calloc(1, sizeof(*b));

	if (!b)
		return -1;
	snprintf(b->base, sizeof(b->base), "/tmp/test-container-XXXXXX");
	if (!mkdtemp(b->base)) {
		free(b);
		return -1;
	}
	snprintf(b->root, sizeof(b->root), "%s/root", b->base);
	snprintf(b->outside, sizeof(b->outside), "%s/outside", b->base);
	/* Whatever a path that escaped could land on exists out here. */
	mkdirs(b->outside, "hive", 0755);
	mkdirs(b->outside, "private/gitea-runner/hive", 0755);
	mkdirs(b->outside, "var/lib/private/gitea-runner/hive", 0755);
	mkdirs(b->outside, "var/lib/gitea-runner/hive", 0755);
	put(at(b->outside, "victim"), VICTIM);
	alarm(WATCHDOG_S);
	*state = b;
	return 0;
}

static int teardown(void **state)
{
	struct box *b = *state;

	alarm(0);
	nftw(b->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(b);
	return 0;
}

/* The layout of a previous boot under services.gitea-actions-runner. */
static void gitea_layout(const struct box *b)
{
	mkdirs(b->root, "var/lib", 0755);
	mkdirs(b->root, "var/lib/private", 0700);
	mkdirs(b->root, "var/lib/private/gitea-runner/hive", 0755);
	link_to("private/gitea-runner", at(b->root, "var/lib/gitea-runner"));
	put(at(b->root, "var/lib/private/gitea-runner/hive/.runner"), OLD);
}

static bool can_chown_to_others(const struct box *b)
{
	char probe[PATH_MAX];
	bool ok;

	held(probe, b->base, "probe");
	put(probe, "");
	ok = chown(probe, OTHER_UID, OTHER_GID) == 0;
	unlink(probe);
	return ok;
}

#define NEEDS_ROOT(b)                                                                              \
	do {                                                                                       \
		if (!can_chown_to_others(b)) {                                                     \
			fprintf(stderr, "skipped: needs root (to chown to uid %d)\n", OTHER_UID);  \
			skip();                                                                    \
		}                                                                                  \
	} while (0)

static void read_back(const char *root, const char *path)
{
	struct runner_file rf;

	assert_int_equal(container_open_runner(root, path, &rf, deadline()), 0);
	assert_int_equal(rf.state, RUNNER_READ);
	assert_int_equal(rf.len, strlen(DATA));
	assert_memory_equal(rf.data, DATA, rf.len);
	container_close_runner(&rf);
}

static void layouts(void **unused)
{
	(void)unused;
	static const struct {
		const char *path;
		enum runner_layout layout;
	} cases[] = {
	    {GITEA, LAYOUT_LINKED_TOP},
	    {FORGEJO, LAYOUT_LINKED_INSTANCE},
	    {"/var/lib/act-runner/x/.runner", LAYOUT_LINKED_TOP},
	    {"/var/lib/gitea-runner/hive/sub/.runner", LAYOUT_LINKED_TOP},
	    {"/var/lib/forgejo-runner/hive/sub/.runner", LAYOUT_LINKED_INSTANCE},
	    {"//var//lib/gitea-runner/hive//.runner", LAYOUT_LINKED_TOP},
	    {"/var/lib/gitea-runner/.runner", LAYOUT_PLAIN},
	    {"/var/lib/forgejo-runner/.runner", LAYOUT_PLAIN},
	    {"/var/lib/.runner", LAYOUT_PLAIN},
	    {"/var/lib/private/gitea-runner/hive/.runner", LAYOUT_PLAIN},
	    {"/var/libx/gitea-runner/hive/.runner", LAYOUT_PLAIN},
	    {"/srv/var/lib/gitea-runner/hive/.runner", LAYOUT_PLAIN},
	    {"/srv/gitea-runner/hive/.runner", LAYOUT_PLAIN},
	    {"/var/lib/../lib/gitea-runner/hive/.runner", LAYOUT_PLAIN},
	    {"/var/lib/./gitea-runner/hive/.runner", LAYOUT_PLAIN},
	    {"/.runner", LAYOUT_PLAIN},
	    {"var/lib/gitea-runner/hive/.runner", LAYOUT_PLAIN},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (container_runner_layout(cases[i].path) != cases[i].layout)
			fail_msg("%s: layout %d, expected %d", cases[i].path,
				 container_runner_layout(cases[i].path), cases[i].layout);
}

static void bad_paths_are_refused(void **state)
{
	struct box *b = *state;
	static const char *const paths[] = {
	    "var/lib/gitea-runner/hive/.runner",
	    "/",
	    "//",
	    "/var/lib/gitea-runner/hive/",
	    "/var/lib/gitea-runner/hive/..",
	    "/var/lib/gitea-runner/hive/.",
	    "/var/lib/../../../outside/.runner",
	    "/var/./lib/gitea-runner/hive/.runner",
	};

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		assert_int_equal(
		    container_write_runner(b->root, paths[i], DATA, strlen(DATA), deadline()),
		    -EINVAL);
	assert_absent(b->root);
}

/* Nothing there at all, not even the directory of the container roots:
 * all of it made, whatever the umask. */
static void first_boot_gitea(void **state)
{
	struct box *b = *state;
	char root[PATH_MAX];
	uid_t u = geteuid();
	gid_t g = getegid();
	mode_t old = umask(077);
	int r;

	snprintf(root, sizeof(root), "%s/containers/hive-ci", b->base);
	r = container_write_runner(root, GITEA, DATA, strlen(DATA), deadline());
	umask(old);
	assert_int_equal(r, 1);
	assert_dir(at(b->base, "containers"), 0755, u, g);
	assert_dir(root, 0755, u, g);
	assert_dir(at(root, "var"), 0755, u, g);
	assert_dir(at(root, "var/lib"), 0755, u, g);
	assert_dir(at(root, "var/lib/private"), 0700, u, g);
	assert_dir(at(root, "var/lib/private/gitea-runner"), 0755, u, g);
	assert_link(at(root, "var/lib/gitea-runner"), "private/gitea-runner");
	assert_dir(at(root, "var/lib/private/gitea-runner/hive"), 0755, u, g);
	assert_file(at(root, "var/lib/private/gitea-runner/hive/.runner"), DATA, u, g);
	assert_no_temporaries(at(root, "var/lib/private/gitea-runner/hive"));
	read_back(root, GITEA);
}

static void first_boot_forgejo(void **state)
{
	struct box *b = *state;
	uid_t u = geteuid();
	gid_t g = getegid();
	mode_t old = umask(077);
	int r;

	r = container_write_runner(b->root, FORGEJO, DATA, strlen(DATA), deadline());
	umask(old);
	assert_int_equal(r, 1);
	assert_dir(b->root, 0755, u, g);
	assert_dir(at(b->root, "var/lib"), 0755, u, g);
	assert_dir(at(b->root, "var/lib/private"), 0700, u, g);
	assert_dir(at(b->root, "var/lib/forgejo-runner"), 0755, u, g);
	assert_dir(at(b->root, "var/lib/private/forgejo-runner"), 0755, u, g);
	assert_dir(at(b->root, "var/lib/private/forgejo-runner/hive"), 0755, u, g);
	assert_link(at(b->root, "var/lib/forgejo-runner/hive"), "../private/forgejo-runner/hive");
	assert_file(at(b->root, "var/lib/private/forgejo-runner/hive/.runner"), DATA, u, g);
	read_back(b->root, FORGEJO);
}

static void first_boot_plain(void **state)
{
	struct box *b = *state;
	uid_t u = geteuid();
	gid_t g = getegid();
	mode_t old = umask(077);
	int r1, r2;

	r1 = container_write_runner(b->root, "/srv/ci/runner/.runner", DATA, strlen(DATA),
				    deadline());
	/* Under /var/lib but not a state directory's: systemd's private/ is
	 * still 0700. */
	r2 = container_write_runner(b->root, "/var/lib/private/mine/.runner", DATA, strlen(DATA),
				    deadline());
	umask(old);
	assert_int_equal(r1, 1);
	assert_int_equal(r2, 1);
	assert_dir(at(b->root, "srv"), 0755, u, g);
	assert_dir(at(b->root, "srv/ci"), 0755, u, g);
	assert_dir(at(b->root, "srv/ci/runner"), 0755, u, g);
	assert_file(at(b->root, "srv/ci/runner/.runner"), DATA, u, g);
	assert_dir(at(b->root, "var/lib/private"), 0700, u, g);
	assert_dir(at(b->root, "var/lib/private/mine"), 0755, u, g);
	assert_file(at(b->root, "var/lib/private/mine/.runner"), DATA, u, g);
	read_back(b->root, "/srv/ci/runner/.runner");
}

/* A previous boot's layout, modes as someone left them: used as it is. */
static void existing_layout_is_used_as_it_is(void **state)
{
	struct box *b = *state;
	struct stat before, after;

	gitea_layout(b);
	assert_int_equal(chmod(at(b->root, "var/lib/private/gitea-runner/hive"), 0750), 0);
	assert_int_equal(lstat(at(b->root, "var/lib/private/gitea-runner/hive"), &before), 0);
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()), 1);
	assert_int_equal(lstat(at(b->root, "var/lib/private/gitea-runner/hive"), &after), 0);
	assert_int_equal(before.st_ino, after.st_ino);
	assert_int_equal(after.st_mode & 07777, 0750);
	assert_link(at(b->root, "var/lib/gitea-runner"), "private/gitea-runner");
	assert_file(at(b->root, "var/lib/private/gitea-runner/hive/.runner"), DATA, geteuid(),
		    getegid());
}

/* A real directory where systemd wants its link (a module from before
 * DynamicUser=): systemd moves it to private/ at the unit's start, and
 * fails the unit if private/ has one too, so none is made there. */
static void real_directory_at_the_link_is_left_for_systemd(void **state)
{
	struct box *b = *state;

	mkdirs(b->root, "var/lib/gitea-runner", 0755);
	mkdirs(b->root, "var/lib/forgejo-runner/hive", 0755);
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()), 1);
	assert_int_equal(container_write_runner(b->root, FORGEJO, DATA, strlen(DATA), deadline()),
			 1);
	assert_absent(at(b->root, "var/lib/private/gitea-runner"));
	assert_absent(at(b->root, "var/lib/private/forgejo-runner"));
	assert_dir(at(b->root, "var/lib/gitea-runner/hive"), 0755, geteuid(), getegid());
	assert_file(at(b->root, "var/lib/gitea-runner/hive/.runner"), DATA, geteuid(), getegid());
	assert_file(at(b->root, "var/lib/forgejo-runner/hive/.runner"), DATA, geteuid(), getegid());
}

/* systemd's link there, its target gone (private/ wiped): made again, as
 * systemd would. */
static void dangling_link_gets_its_target(void **state)
{
	struct box *b = *state;

	mkdirs(b->root, "var/lib/forgejo-runner", 0755);
	link_to("../private/forgejo-runner/hive", at(b->root, "var/lib/forgejo-runner/hive"));
	assert_int_equal(container_write_runner(b->root, FORGEJO, DATA, strlen(DATA), deadline()),
			 1);
	assert_link(at(b->root, "var/lib/forgejo-runner/hive"), "../private/forgejo-runner/hive");
	assert_file(at(b->root, "var/lib/private/forgejo-runner/hive/.runner"), DATA, geteuid(),
		    getegid());
}

static void runner_owned_directory_gives_its_owner(void **state)
{
	struct box *b = *state;

	NEEDS_ROOT(b);
	gitea_layout(b);
	assert_int_equal(chown(at(b->root, "var/lib/private/gitea-runner"), OTHER_UID, OTHER_GID),
			 0);
	assert_int_equal(
	    chown(at(b->root, "var/lib/private/gitea-runner/hive"), OTHER_UID, OTHER_GID), 0);
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()), 1);
	assert_file(at(b->root, "var/lib/private/gitea-runner/hive/.runner"), DATA, OTHER_UID,
		    OTHER_GID);
}

/* systemd does not chown below a top the runner already owns: an instance
 * directory made by root inside it would stay root's, unwritable. */
static void new_instance_in_owned_state_directory_gets_its_owner(void **state)
{
	struct box *b = *state;

	NEEDS_ROOT(b);
	mkdirs(b->root, "var/lib/private/gitea-runner", 0755);
	assert_int_equal(chmod(at(b->root, "var/lib/private"), 0700), 0);
	assert_int_equal(chown(at(b->root, "var/lib/private/gitea-runner"), OTHER_UID, OTHER_GID),
			 0);
	link_to("private/gitea-runner", at(b->root, "var/lib/gitea-runner"));
	assert_int_equal(container_write_runner(b->root, "/var/lib/gitea-runner/hive/sub/.runner",
						DATA, strlen(DATA), deadline()),
			 1);
	assert_dir(at(b->root, "var/lib/private/gitea-runner/hive"), 0755, OTHER_UID, OTHER_GID);
	assert_dir(at(b->root, "var/lib/private/gitea-runner/hive/sub"), 0755, OTHER_UID,
		   OTHER_GID);
	assert_file(at(b->root, "var/lib/private/gitea-runner/hive/sub/.runner"), DATA, OTHER_UID,
		    OTHER_GID);
	/* systemd's own stay root's. */
	assert_dir(at(b->root, "var/lib/private"), 0700, 0, 0);
}

/* The unit grants CAP_CHOWN but not CAP_FOWNER: every mode is set before
 * the owner is given away. */
static void works_without_cap_fowner(void **state)
{
	struct box *b = *state;
	int status;
	pid_t pid;

	NEEDS_ROOT(b);
	mkdirs(b->root, "var/lib/private/gitea-runner", 0755);
	assert_int_equal(chown(at(b->root, "var/lib/private/gitea-runner"), OTHER_UID, OTHER_GID),
			 0);
	link_to("private/gitea-runner", at(b->root, "var/lib/gitea-runner"));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
		struct __user_cap_data_struct d[2];
		int r;

		if (syscall(SYS_capget, &h, d) < 0)
			_exit(2);
		d[0].effective &= ~(1u << CAP_FOWNER);
		d[0].permitted &= ~(1u << CAP_FOWNER);
		if (syscall(SYS_capset, &h, d) < 0)
			_exit(3);
		r = container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline());
		if (r != 1)
			fprintf(stderr, "without CAP_FOWNER: %s\n", strerror(-r));
		_exit(r == 1 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_dir(at(b->root, "var/lib/private/gitea-runner/hive"), 0755, OTHER_UID, OTHER_GID);
	assert_file(at(b->root, "var/lib/private/gitea-runner/hive/.runner"), DATA, OTHER_UID,
		    OTHER_GID);
}

static void stale_temporaries_are_removed(void **state)
{
	struct box *b = *state;
	char dir[PATH_MAX];

	gitea_layout(b);
	held(dir, b->root, "var/lib/private/gitea-runner/hive");
	put(at(dir, "..runner.tmp-0123456789abcdef"), "a killed run's");
	link_to(at(b->outside, "victim"), at(dir, "..runner.tmp-link"));
	put(at(dir, ".other.tmp-0123"), "not ours");
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()), 1);
	assert_no_temporaries(dir);
	assert_contents(at(dir, ".other.tmp-0123"), "not ours");
	assert_contents(at(b->outside, "victim"), VICTIM);
}

/* An absolute link to a host directory is taken as the container would
 * see it: inside the root. */
static void absolute_link_resolves_inside_the_root(void **state)
{
	struct box *b = *state;
	char *before = snapshot(b->outside);
	char inside[PATH_MAX];

	mkdirs(b->root, "var/lib", 0755);
	link_to(b->outside, at(b->root, "var/lib/gitea-runner"));
	/* Where it leads inside the root does not exist: nothing to write. */
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()),
			 -ENOENT);
	/* Once it does, that is where the file goes. */
	snprintf(inside, sizeof(inside), "%s%s", b->root, b->outside);
	mkdirs(b->root, b->outside + 1, 0755);
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()), 1);
	assert_file(at(inside, "hive/.runner"), DATA, geteuid(), getegid());
	assert_unchanged(b->outside, before);
}

/* ".." in links stops at the root, as at "/". */
static void dotdot_stops_at_the_root(void **state)
{
	struct box *b = *state;
	char *before = snapshot(b->outside);
	char up[PATH_MAX], inside[PATH_MAX];

	snprintf(up, sizeof(up), "../../../../../../../../../../../../../..%s", b->outside);
	snprintf(inside, sizeof(inside), "%s%s", b->root, b->outside);
	mkdirs(b->root, b->outside + 1, 0755);

	mkdirs(b->root, "var/lib", 0755);
	link_to(up, at(b->root, "var/lib/gitea-runner"));
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()), 1);
	assert_file(at(inside, "hive/.runner"), DATA, geteuid(), getegid());

	/* The instance directory itself a link up and out. */
	mkdirs(b->root, "var/lib/forgejo-runner", 0755);
	snprintf(up, sizeof(up), "../../../../../../../../../../../../../..%s/hive", b->outside);
	link_to(up, at(b->root, "var/lib/forgejo-runner/hive"));
	assert_int_equal(container_write_runner(b->root, FORGEJO, "x", 1, deadline()), 1);
	assert_contents(at(inside, "hive/.runner"), "x");
	assert_unchanged(b->outside, before);
}

/* A link at .runner itself is replaced, never written through, wherever
 * it points (existing, relative, dangling). */
static void link_at_the_file_is_replaced(void **state)
{
	struct box *b = *state;
	char *before = snapshot(b->outside);
	char file[PATH_MAX], up[PATH_MAX], victim[PATH_MAX], new[PATH_MAX];
	const char *targets[3] = {victim, up, new};

	snprintf(up, sizeof(up), "../../../../../../../../../../../../../..%s/victim", b->outside);
	held(file, b->root, "var/lib/private/gitea-runner/hive/.runner");
	held(victim, b->outside, "victim");
	held(new, b->outside, "new");
	gitea_layout(b);
	for (size_t i = 0; i < 3; i++) {
		unlink(file);
		link_to(targets[i], file);
		assert_int_equal(
		    container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()), 1);
		assert_file(file, DATA, geteuid(), getegid());
	}
	assert_absent(at(b->outside, "new"));
	assert_unchanged(b->outside, before);
}

/* A FIFO at the name is replaced without ever being opened (it would
 * hang); a directory cannot be, and is an error that leaves nothing. */
static void fifo_or_directory_at_the_file(void **state)
{
	struct box *b = *state;
	char dir[PATH_MAX], file[PATH_MAX];
	struct stat st;

	gitea_layout(b);
	held(dir, b->root, "var/lib/private/gitea-runner/hive");
	held(file, dir, ".runner");
	unlink(file);
	fifo(file);
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()), 1);
	assert_file(file, DATA, geteuid(), getegid());

	unlink(file);
	mkdirs(dir, ".runner/sub", 0755);
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()),
			 -EISDIR);
	assert_int_equal(lstat(file, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_no_temporaries(dir);
}

/* A FIFO, a file or a link loop where a directory should be: an error,
 * nothing opened, nothing made beyond it. */
static void non_directory_in_the_way(void **state)
{
	struct box *b = *state;
	char *before = snapshot(b->outside);

	gitea_layout(b);
	unlink(at(b->root, "var/lib/private/gitea-runner/hive/.runner"));
	assert_int_equal(rmdir(at(b->root, "var/lib/private/gitea-runner/hive")), 0);
	fifo(at(b->root, "var/lib/private/gitea-runner/hive"));
	assert_int_equal(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()),
			 -ENOTDIR);

	/* The link's place: no private/ directory made for it either. */
	fifo(at(b->root, "var/lib/forgejo-runner"));
	assert_int_equal(container_write_runner(b->root, FORGEJO, DATA, strlen(DATA), deadline()),
			 -ENOTDIR);
	assert_absent(at(b->root, "var/lib/private/forgejo-runner"));

	link_to("loop", at(b->root, "loop"));
	assert_int_equal(
	    container_write_runner(b->root, "/loop/.runner", DATA, strlen(DATA), deadline()),
	    -ELOOP);

	put(at(b->root, "srv"), "a file");
	assert_int_equal(
	    container_write_runner(b->root, "/srv/ci/.runner", DATA, strlen(DATA), deadline()),
	    -ENOTDIR);
	assert_unchanged(b->outside, before);
}

/* The container swaps directories and the file for links out of the
 * root, FIFOs and files, as fast as it can, while the host writes again
 * and again: whatever each write returns, nothing outside ever changes. */
struct swap {
	const char *real, *decoy;
};

static void attacker(const struct box *b, volatile unsigned long *swaps)
{
	char hive[PATH_MAX], up[PATH_MAX];
	struct swap s[8];
	size_t n = 0;

	held(hive, b->root, "var/lib/private/gitea-runner/hive");
#define DECOY(real_, decoy_) (s[n].real = strdup(real_), s[n].decoy = strdup(decoy_), n++)
	snprintf(up, sizeof(up), "../../../../../../../../../../../../../..%s", b->outside);
	DECOY(at(b->root, "var/lib/gitea-runner"), at(b->root, "var/lib/gitea-runner.abs"));
	(void)!symlink(b->outside, s[n - 1].decoy);
	DECOY(at(b->root, "var/lib/gitea-runner"), at(b->root, "var/lib/gitea-runner.up"));
	(void)!symlink(up, s[n - 1].decoy);
	DECOY(hive, at(b->root, "var/lib/private/gitea-runner/hive.abs"));
	(void)!symlink(at(b->outside, "hive"), s[n - 1].decoy);
	DECOY(at(b->root, "var/lib/private"), at(b->root, "var/lib/private.abs"));
	(void)!symlink(at(b->outside, "var/lib/private"), s[n - 1].decoy);
	DECOY(at(b->root, "var"), at(b->root, "var.abs"));
	(void)!symlink(at(b->outside, "var"), s[n - 1].decoy);
	DECOY(at(hive, ".runner"), at(hive, ".runner.abs"));
	(void)!symlink(at(b->outside, "victim"), s[n - 1].decoy);
	DECOY(hive, at(b->root, "var/lib/private/gitea-runner/hive.fifo"));
	mkfifo(s[n - 1].decoy, 0600);
	DECOY(hive, at(b->root, "var/lib/private/gitea-runner/hive.file"));
	close(open(s[n - 1].decoy, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
#undef DECOY

	for (unsigned long i = 0;; i++) {
		const struct swap *w = &s[random() % n];
		struct stat st;

		/* The writer's rename replaced the link at .runner: again. */
		if (w->real == s[5].real && lstat(w->decoy, &st) == 0 && !S_ISLNK(st.st_mode)) {
			unlink(w->decoy);
			(void)!symlink(at(b->outside, "victim"), w->decoy);
		}
		if (renameat2(AT_FDCWD, w->real, AT_FDCWD, w->decoy, RENAME_EXCHANGE) < 0)
			continue;
		for (volatile long spin = random() % 20000; spin > 0; spin--)
			;
		/* Back, before the next: a swap inside a swapped directory
		 * would be the attacker's own write outside. */
		renameat2(AT_FDCWD, w->real, AT_FDCWD, w->decoy, RENAME_EXCHANGE);
		*swaps = i + 1;
	}
}

static void racing_container_never_gets_a_write_outside(void **state)
{
	struct box *b = *state;
	char *before = snapshot(b->outside);
	volatile unsigned long *swaps;
	int64_t end = clock_now_ms() + 3000;
	unsigned long written = 0, tries = 0, errors[256] = {0};
	int status;
	pid_t pid;

	gitea_layout(b);
	swaps =
	    mmap(NULL, sizeof(*swaps), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(swaps != MAP_FAILED);
	*swaps = 0;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		attacker(b, swaps);
		_exit(0);
	}
	while (*swaps == 0 && clock_now_ms() < end)
		sleep_ms(1);
	while (clock_now_ms() < end && tries < 5000) {
		int r = container_write_runner(b->root, GITEA, DATA, strlen(DATA),
					       clock_now_ms() + 500);
		tries++;
		if (r == 1)
			written++;
		else if (-r < (int)(sizeof(errors) / sizeof(errors[0])))
			errors[-r]++;
		else
			fail_msg("unexpected %d", r);
	}
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	fprintf(stderr, "race: %lu written, %lu swaps, failed:", written, *swaps);
	for (size_t e = 0; e < sizeof(errors) / sizeof(errors[0]); e++)
		if (errors[e])
			fprintf(stderr, " %lu %s;", errors[e], strerrorname_np((int)e));
	fprintf(stderr, "\n");
	assert_true(*swaps > 100);
	assert_true(written > 0);
	assert_unchanged(b->outside, before);
	munmap((void *)(uintptr_t)swaps, sizeof(*swaps));
}

/* A private mount namespace to mount a tmpfs in: as root, or as a user
 * with user namespaces.  Returns false when neither works here. */
static bool private_mounts(void)
{
	uid_t uid = geteuid();
	gid_t gid = getegid();
	char map[64];
	int fd;

	if (unshare(CLONE_NEWNS) < 0) {
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			return false;
		fd = open("/proc/self/setgroups", O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			(void)!write(fd, "deny", 4);
			close(fd);
		}
		snprintf(map, sizeof(map), "0 %d 1", (int)uid);
		fd = open("/proc/self/uid_map", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, map, strlen(map)) < 0)
			return false;
		close(fd);
		snprintf(map, sizeof(map), "0 %d 1", (int)gid);
		fd = open("/proc/self/gid_map", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, map, strlen(map)) < 0)
			return false;
		close(fd);
	}
	return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
}

#define CHILD_CHECK(cond)                                                                          \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
			_exit(1);                                                                  \
		}                                                                                  \
	} while (0)

/* In a child, in its own mount namespace: the state directory a 64 KiB
 * tmpfs, filled up. */
static void full_file_system_child(const struct box *b)
{
	char state_dir[PATH_MAX], dir[PATH_MAX];
	static char block[4096];
	char buf[64];
	struct dirent *de;
	int fd, r;
	DIR *d;

	held(state_dir, b->root, "var/lib/private/gitea-runner");
	held(dir, state_dir, "hive");
	if (!private_mounts())
		_exit(77);
	CHILD_CHECK(mount("tmpfs", state_dir, "tmpfs", 0, "size=64k,mode=0755") == 0);
	CHILD_CHECK(mkdir(dir, 0755) == 0);
	fd = open(at(dir, ".runner"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHILD_CHECK(fd >= 0 && write(fd, OLD, strlen(OLD)) == (ssize_t)strlen(OLD));
	close(fd);
	fd = open(at(state_dir, "filler"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHILD_CHECK(fd >= 0);
	memset(block, 'x', sizeof(block));
	while (write(fd, block, sizeof(block)) > 0)
		;
	while (write(fd, block, 1) > 0)
		;
	CHILD_CHECK(errno == ENOSPC);
	close(fd);

	r = container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline());
	CHILD_CHECK(r == -ENOSPC);
	fd = open(at(dir, ".runner"), O_RDONLY | O_CLOEXEC);
	CHILD_CHECK(fd >= 0);
	r = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	CHILD_CHECK(r == (int)strlen(OLD) && memcmp(buf, OLD, strlen(OLD)) == 0);
	d = opendir(dir);
	CHILD_CHECK(d != NULL);
	while ((de = readdir(d)))
		CHILD_CHECK(strncmp(de->d_name, "..runner.tmp-", 13) != 0);
	closedir(d);

	/* Room again: it writes (so the failure above was the full disk). */
	CHILD_CHECK(unlink(at(state_dir, "filler")) == 0);
	CHILD_CHECK(container_write_runner(b->root, GITEA, DATA, strlen(DATA), deadline()) == 1);
	_exit(0);
}

static void full_file_system_keeps_the_old_file(void **state)
{
	struct box *b = *state;
	int status;
	pid_t pid;

	mkdirs(b->root, "var/lib/private/gitea-runner", 0755);
	link_to("private/gitea-runner", at(b->root, "var/lib/gitea-runner"));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		full_file_system_child(b);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77) {
		fprintf(stderr, "skipped: needs root or user namespaces (to mount a tmpfs)\n");
		skip();
	}
	assert_int_equal(WEXITSTATUS(status), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(layouts),
	    T(bad_paths_are_refused),
	    T(first_boot_gitea),
	    T(first_boot_forgejo),
	    T(first_boot_plain),
	    T(existing_layout_is_used_as_it_is),
	    T(real_directory_at_the_link_is_left_for_systemd),
	    T(dangling_link_gets_its_target),
	    T(runner_owned_directory_gives_its_owner),
	    T(new_instance_in_owned_state_directory_gets_its_owner),
	    T(works_without_cap_fowner),
	    T(stale_temporaries_are_removed),
	    T(absolute_link_resolves_inside_the_root),
	    T(dotdot_stops_at_the_root),
	    T(link_at_the_file_is_replaced),
	    T(fifo_or_directory_at_the_file),
	    T(non_directory_in_the_way),
	    T(racing_container_never_gets_a_write_outside),
	    T(full_file_system_keeps_the_old_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
