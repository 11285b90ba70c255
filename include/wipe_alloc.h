/* An allocator that wipes every block it frees.
 *
 * Handed to jansson (at start) and to libcurl (by the forge client, before
 * its first libcurl call), so their private copies of the admin token, of
 * response bodies and of .runner (which holds the runner's own token) are
 * zeroed before the memory goes back to the C library. */
#pragma once

#include <stddef.h>

void *wipe_malloc(size_t size);
void *wipe_calloc(size_t n, size_t size);
void *wipe_realloc(void *p, size_t size);
char *wipe_strdup(const char *s);
void wipe_free(void *p);

/* Installs the allocator in jansson.  Call before any other jansson call. */
void wipe_alloc_install_jansson(void);
