/* LD_PRELOAD shim for the tests: libcurl cannot be set up (exit 70). */
#include <stddef.h>

void *curl_easy_init(void);

void *curl_easy_init(void)
{
	return NULL;
}
