/* Replacing a file so that no reader ever sees it partial, under a lock
 * that serialises the runs that write it. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Creates every missing directory of dir (like mkdir -p): dir itself with
 * mode, its missing parents 0755, whatever the umask.  Returns 0 (also when
 * dir exists) or -errno.  For host paths: it follows names. */
int atomic_mkdir(const char *dir, mode_t mode);

/* A target file, locked: its directory and the lock beside it. */
struct atomic_lock {
	int dir_fd;		 /* the target's directory; -1: none */
	int fd;			 /* the lock file, flocked; -1: not held */
	char base[NAME_MAX + 1]; /* the target's name in dir_fd */
};

/* Opens the directory of path (created with dir_mode when missing, its
 * missing parents 0755, whatever the umask) and takes the lock of path: an
 * exclusive flock on ".<name>.lock" beside it, waiting for another run to
 * let go until deadline_ms (monotonic).  Returns 0; -EWOULDBLOCK when the
 * lock was held all that time; -ENOLCK when the lock file is not exactly a
 * regular file of ours with mode 0600 (another user could hold it); or
 * -errno.  *l is to be released with atomic_unlock, whatever this returns. */
int atomic_lock(struct atomic_lock *l, const char *path, mode_t dir_mode, int64_t deadline_ms);

/* Lets go of the lock and closes the directory.  Fine on a lock not held. */
void atomic_unlock(struct atomic_lock *l);

/* The lock file's path for path, for messages. */
void atomic_lock_name(const char *path, char *buf, size_t n);

/* Replaces the locked target with data[0..len), mode 0600 (see
 * atomic_write_at), after removing the temporaries of killed runs.  The
 * caller holds the lock. */
int atomic_replace(const struct atomic_lock *l, const char *data, size_t len, bool only_if_absent);

/* Removes the ".<base>.tmp-*" that killed runs left in dir_fd (the names
 * themselves, with unlinkat: never what a symlink points to; directories
 * are left).  Only safe while no other run can be writing base: the caller
 * holds the lock, or the host-side lock that serialises runs.  Errors are
 * ignored: a temporary left over is harmless. */
void atomic_remove_stale(int dir_fd, const char *base);

/* The one replace-a-file routine: a temporary ".<base>.tmp-<random>" in
 * dir_fd, created O_EXCL and never through a symlink, given uid:gid
 * ((uid_t)-1, (gid_t)-1: ours) and mode 0600, written, fsynced, renamed over
 * base, and the directory fsynced.  With only_if_absent, an existing base,
 * whatever it is, is left exactly as it is.  No temporary survives any
 * return.  Returns 1 when base was written, 0 when it was left as it was,
 * or -errno (ENOSPC on a full disk: base intact).  data may be a secret:
 * nothing here logs. */
int atomic_write_at(int dir_fd, const char *base, const char *data, size_t len, uid_t uid,
		    gid_t gid, bool only_if_absent);
