#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "wipe_alloc.h"

/* Each block is preceded by its size, so free() knows how much to wipe. */
#define HEADER alignof(max_align_t)

void *wipe_malloc(size_t size)
{
	unsigned char *p;

	if (size > SIZE_MAX - HEADER)
		return NULL;
	p = malloc(size + HEADER);
	if (!p)
		return NULL;
	memcpy(p, &size, sizeof(size));
	return p + HEADER;
}

static size_t block_size(void *p)
{
	size_t size;

	memcpy(&size, (unsigned char *)p - HEADER, sizeof(size));
	return size;
}

void wipe_free(void *p)
{
	if (!p)
		return;
	explicit_bzero(p, block_size(p));
	free((unsigned char *)p - HEADER);
}

void *wipe_calloc(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = wipe_malloc(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

/* Never realloc in place: the C library could leave the old bytes behind. */
void *wipe_realloc(void *p, size_t size)
{
	void *q;
	size_t old;

	if (!p)
		return wipe_malloc(size);
	q = wipe_malloc(size);
	if (!q)
		return NULL;
	old = block_size(p);
	memcpy(q, p, old < size ? old : size);
	wipe_free(p);
	return q;
}

char *wipe_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = wipe_malloc(n);

	if (p)
		memcpy(p, s, n);
	return p;
}

void wipe_alloc_install_jansson(void)
{
	json_set_alloc_funcs(wipe_malloc, wipe_free);
}
