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

int admin_token_read(const char *path, struct admin_token *t, const char **why)
{
	_cleanup_(closep) int fd = -1;
	char buf[ADMIN_TOKEN_FILE_MAX + 1];
	size_t start = 0, end;
	struct stat st;
	ssize_t n;
	int r;

	*t = (struct admin_token){0};
	*why = NULL;
	fd = open_host_file(path, ADMIN_TOKEN_FILE_MAX, &st, why);
	if (fd == -ENOENT)
		return 0; /* the forge has not written it yet */
	if (fd == -EFBIG)
		*why = TOO_LONG;
	if (fd < 0)
		return fd;

	n = read_full(fd, buf, sizeof(buf));
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
	t->world_readable = st.st_mode & S_IROTH;
out:
	explicit_bzero(buf, sizeof(buf));
	return r;
}

void admin_token_clear(struct admin_token *t)
{
	erase_and_freep(&t->value);
}
