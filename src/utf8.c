#include <stdbool.h>
#include <string.h>

#include "utf8.h"

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

static bool cont(unsigned char c, unsigned char lo, unsigned char hi)
{
	return c >= lo && c <= hi;
}

/* The length of the valid character at s, or 0.  The checks stop at the
 * first byte out of range, so the terminating NUL is never passed. */
static size_t char_len(const unsigned char *s)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return cont(s[1], 0x80, 0xbf) ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = c == 0xe0 ? 0xa0 : 0x80; /* no overlong forms */
		unsigned char hi = c == 0xed ? 0x9f : 0xbf; /* no surrogates */

		return cont(s[1], lo, hi) && cont(s[2], 0x80, 0xbf) ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = c == 0xf0 ? 0x90 : 0x80; /* no overlong forms */
		unsigned char hi = c == 0xf4 ? 0x8f : 0xbf; /* nothing above U+10FFFF */

		return cont(s[1], lo, hi) && cont(s[2], 0x80, 0xbf) && cont(s[3], 0x80, 0xbf) ? 4
											      : 0;
	}
	return 0;
}

size_t utf8_sanitize(char *dst, size_t n, const char *src)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t out = 0;

	while (*s) {
		size_t len = char_len(s);
		const char *from = len ? (const char *)s : REPLACEMENT;
		size_t put = len ? len : sizeof(REPLACEMENT) - 1;

		if (out + put >= n)
			break;
		memcpy(dst + out, from, put);
		out += put;
		s += len ? len : 1;
	}
	dst[out] = '\0';
	return out;
}
