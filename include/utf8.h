/* Valid UTF-8 for output that must be valid UTF-8 (JSON). */
#pragma once

#include <stddef.h>

/* Copies the string src into dst (size n, at least 1; always NUL-terminated)
 * as valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF).  Each byte that does not begin a whole valid character is
 * replaced by U+FFFD, so a character cut off at the end of src becomes one
 * or more U+FFFD.  The copy stops before a character that would not fit
 * whole, so it never cuts one.  Returns the length of dst.  A dst of 3 times
 * src's length plus 1 always holds everything. */
size_t utf8_sanitize(char *dst, size_t n, const char *src);
