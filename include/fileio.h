/* Whole reads and writes on an fd, through EINTR and short transfers, and
 * the careful open of a host file that holds a secret. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)
/* "64 KiB" for KIB_TEXT(64): a size limit and its words from one number. */
#define KIB_TEXT(n) STRINGIFY(n) " KiB"

/* Reads until size bytes or end of file.  Returns the count, or -errno. */
ssize_t read_full(int fd, char *buf, size_t size);

/* Writes all len bytes.  Returns 0, or -errno (ENOSPC on a full disk). */
int write_full(int fd, const char *buf, size_t len);

/* Calls attempt(name, userdata) with names "<stem><digits random hex
 * digits>" (into name, of size n) until it returns anything but -EEXIST,
 * at most 16 times.  Returns that result, -EEXIST, -EIO when there is no
 * randomness, or -ENAMETOOLONG. */
int try_random_names(char *name, size_t n, const char *stem, int digits,
		     int (*attempt)(const char *name, void *userdata), void *userdata);

struct stat;

/* Opens path read-only without following a symlink (O_NOFOLLOW | O_NONBLOCK
 * | O_NOCTTY | O_CLOEXEC) and checks the fd: a regular file that neither
 * group nor others can write, of at most max bytes.  Fills *st.  Returns
 * the fd, -ENOENT when there is no such file, or -errno with *why set to a
 * static description ("is a symbolic link", ...; -EFBIG: "is larger than
 * the limit", which the caller may say better). */
int open_host_file(const char *path, off_t max, struct stat *st, const char **why);
