/* Whole reads and writes on an fd, through EINTR and short transfers. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Reads until size bytes or end of file.  Returns the count, or -errno. */
ssize_t read_full(int fd, char *buf, size_t size);

/* Writes all len bytes.  Returns 0, or -errno (ENOSPC on a full disk). */
int write_full(int fd, const char *buf, size_t len);
