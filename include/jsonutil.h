/* JSON in and out for the files and bodies this tool writes, through
 * jansson and its wiping allocator. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* A string field: absent, held, or present but longer than we hold.  An
 * over-long value is never taken for an absent one: it compares unequal. */
enum field {
	FIELD_ABSENT,
	FIELD_SET,
	FIELD_TOO_LONG,
};

/* Copies the JSON string s into buf (size n): FIELD_SET; FIELD_ABSENT when
 * s is not a string or is empty; FIELD_TOO_LONG when it does not fit or
 * holds a NUL (which would make two different strings look equal).  buf
 * is left "" unless the result is FIELD_SET. */
enum field field_copy(const json_t *s, char *buf, size_t n);

/* j as text (json_dumps's flags), with a final newline when newline is
 * set.  Returns a string the caller wipes and frees with free() (its length
 * in *len), or NULL when out of memory.  jansson's own copy is wiped. */
char *json_text(const json_t *j, size_t flags, bool newline, size_t *len);
