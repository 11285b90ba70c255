#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

ssize_t read_full(int fd, char *buf, size_t size)
{
	size_t done = 0;

	while (done < size) {
		ssize_t n = read(fd, buf + done, size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int write_full(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int open_host_file(const char *path, off_t max, struct stat *st, const char **why)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	int r;

	*why = NULL;
	if (fd < 0) {
		if (errno != ENOENT)
			*why = errno == ELOOP ? "is a symbolic link" : "cannot be opened";
		return -errno;
	}
	if (fstat(fd, st) < 0) {
		*why = "cannot be examined";
		r = -errno;
	} else if (!S_ISREG(st->st_mode)) {
		*why = "is not a regular file";
		r = -EINVAL;
	} else if (st->st_mode & (S_IWGRP | S_IWOTH)) {
		*why = "is group- or world-writable";
		r = -EPERM;
	} else if (st->st_size > max) {
		*why = "is larger than the limit";
		r = -EFBIG;
	} else {
		return fd;
	}
	close(fd);
	return r;
}

#define RANDOM_NAME_TRIES 16

int try_random_names(char *name, size_t n, const char *stem, int digits,
		     int (*attempt)(const char *name, void *userdata), void *userdata)
{
	uint64_t mask = digits >= 16 ? UINT64_MAX : (UINT64_C(1) << (4 * digits)) - 1;

	for (int tries = 0; tries < RANDOM_NAME_TRIES; tries++) {
		uint64_t rnd;
		int len, r;

		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -EIO;
		len = snprintf(name, n, "%s%0*" PRIx64, stem, digits, rnd & mask);
		if (len < 0 || (size_t)len >= n)
			return -ENAMETOOLONG;
		r = attempt(name, userdata);
		if (r != -EEXIST)
			return r;
	}
	return -EEXIST;
}
