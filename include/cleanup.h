/* Scope-bound cleanup for fds, heap memory and secrets, in systemd's shapes. */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

/* Hands over what a variable holds and leaves it empty, so that its cleanup
 * does nothing: `return TAKE_FD(fd);`, `*out = TAKE_PTR(p);`. */
#define TAKE_GENERIC(var, empty)                                                                   \
	({                                                                                         \
		__typeof__(var) _taken = (var);                                                    \
		(var) = (empty);                                                                   \
		_taken;                                                                            \
	})
#define TAKE_FD(fd) TAKE_GENERIC(fd, -1)
#define TAKE_PTR(p) TAKE_GENERIC(p, NULL)

static inline void freep(void *p)
{
	free(*(void **)p);
}

/* Closes *fd if open, keeping errno: a failing close must not hide why we are leaving. */
static inline void closep(const int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

/* Wipes n bytes of p and frees it.  Returns NULL, for `p = erase_and_free_sized(p, n)`. */
static inline void *erase_and_free_sized(void *p, size_t n)
{
	if (p) {
		explicit_bzero(p, n);
		free(p);
	}
	return NULL;
}

/* Wipes and frees a NUL-terminated secret.  Returns NULL, for `s = erase_and_free(s)`. */
static inline void *erase_and_free(char *s)
{
	return erase_and_free_sized(s, s ? strlen(s) : 0);
}

/* For _cleanup_ and struct fields: wipes, frees and sets *p to NULL. */
static inline void erase_and_freep(char **p)
{
	*p = erase_and_free(*p);
}
