#include "token.h"

/* Only these bytes can neither inject nor corrupt a systemd EnvironmentFile
 * assignment: no newline, quote, backslash, '#', ';', '=' or whitespace. */
static bool token_char_ok(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

bool token_is_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len > TOKEN_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!token_char_ok((unsigned char)s[i]))
			return false;
	return true;
}
