/* The forge's admin token file.
 *
 * Rules this file keeps:
 *  1. The file is opened O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC and
 *     checked on the fd we got: a regular file, not group- or
 *     world-writable, at most ADMIN_TOKEN_FILE_MAX bytes.
 *  2. Every buffer that held the token is wiped before it is freed, on
 *     every path.
 *  3. Nothing here logs; *why never contains the token or the file's bytes.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fileio.h"
#include "secret.h"

#define ADMIN_TOKEN_FILE_MAX_KIB 4
#define ADMIN_TOKEN_FILE_MAX	 (ADMIN_TOKEN_FILE_MAX_KIB * 1024)
#define TOO_LONG		 "is longer than " KIB_TEXT(ADMIN_TOKEN_FILE_MAX_KIB)
#define ADMIN_TOKEN_READS	 8 /* reads of a file that keeps changing while read */

/* Reads the token once; *same says whether the file stayed as it was (the
 * same inode, size and times) from before the read to after it. */
static int read_once(const char *path, struct admin_token *t, const char **why, bool *same)
{
	_cleanup_(closep) int fd = -1;
	char buf[ADMIN_TOKEN_FILE_MAX + 1];
	size_t start = 0, end;
	struct stat after;
	ssize_t n;
	int r;

	*t = (struct admin_token){0};
	*why = NULL;
	*same = true;
	fd = open_host_file(path, ADMIN_TOKEN_FILE_MAX, &t->st, why);
	if (fd == -ENOENT)
		return 0; /* the forge has not written it yet */
	if (fd == -EFBIG)
		*why = TOO_LONG;
	if (fd < 0)
		return fd;

	n = read_full(fd, buf, sizeof(buf));
	*same = lstat(path, &after) == 0 && !admin_token_changed(&t->st, &after);
	if (n < 0) {
		*why = "cannot be read"; /* buf may hold a part of the token */
		r = (int)n;
		goto out;
	}
	end = (size_t)n;
	if (end > ADMIN_TOKEN_FILE_MAX) {
		*why = TOO_LONG;
		r = -EFBIG;
		goto out;
	}
	while (start < end && isspace((unsigned char)buf[start]))
		start++;
	while (end > start && isspace((unsigned char)buf[end - 1]))
		end--;
	r = 0;
	for (size_t i = start; i < end; i++)
		if (buf[i] < '!' || buf[i] > '~') {
			*why = "is not one line of printable ASCII without spaces";
			r = -EBADMSG;
			goto out;
		}
	if (end > start) {
		t->value = strndup(buf + start, end - start);
		if (!t->value) {
			*why = "cannot be held in memory";
			r = -ENOMEM;
			goto out;
		}
	}
	t->world_readable = t->st.st_mode & S_IROTH;
out:
	explicit_bzero(buf, sizeof(buf));
	return r;
}

int admin_token_read(const char *path, struct admin_token *t, const char **why)
{
	bool same = false;
	int r = 0;

	*t = (struct admin_token){0};
	/* A file that changed while it was read may hold half of the old and
	 * half of the new: read it again (its writer is quick, or gives up). */
	for (int tries = 0; tries < ADMIN_TOKEN_READS && !same; tries++) {
		admin_token_clear(t);
		r = read_once(path, t, why, &same);
	}
	return r;
}

bool admin_token_changed(const struct stat *then, const struct stat *now)
{
	return then->st_dev != now->st_dev || then->st_ino != now->st_ino ||
	       then->st_size != now->st_size || then->st_mtim.tv_sec != now->st_mtim.tv_sec ||
	       then->st_mtim.tv_nsec != now->st_mtim.tv_nsec ||
	       then->st_ctim.tv_sec != now->st_ctim.tv_sec ||
	       then->st_ctim.tv_nsec != now->st_ctim.tv_nsec;
}

void admin_token_clear(struct admin_token *t)
{
	erase_and_freep(&t->value);
}
