/* Whole reads and writes on an fd, through EINTR and short transfers, and
 * the careful open of a host file that holds a secret. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Reads until size bytes or end of file.  Returns the count, or -errno. */
ssize_t read_full(int fd, char *buf, size_t size);

/* Writes all len bytes.  Returns 0, or -errno (ENOSPC on a full disk). */
int write_full(int fd, const char *buf, size_t len);

struct stat;

/* Opens path read-only without following a symlink (O_NOFOLLOW | O_NONBLOCK
 * | O_NOCTTY | O_CLOEXEC) and checks the fd: a regular file that neither
 * group nor others can write, of at most max bytes.  Fills *st.  Returns
 * the fd, -ENOENT when there is no such file, or -errno with *why set to a
 * static description ("is a symbolic link", ...; -EFBIG: "is larger than
 * the limit", which the caller may say better). */
int open_host_file(const char *path, off_t max, struct stat *st, const char **why);
