/* The registration-token alphabet: the only bytes ever written to the output. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define TOKEN_MAX 255

/* True when s[0..len) is 1 to TOKEN_MAX characters of [A-Za-z0-9_-]. */
bool token_is_valid(const char *s, size_t len);
