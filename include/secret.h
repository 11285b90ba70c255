/* The forge's admin token file. */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>

struct admin_token {
	char *value; /* NUL-terminated; NULL when absent or empty; wiped by admin_token_clear */
	bool world_readable; /* worth a warning, not a refusal */
	struct stat st;	     /* the file as it was read */
};

/* Reads the admin token from path: one line of printable ASCII without
 * spaces, surrounding whitespace stripped, in a regular file opened without
 * following a symlink, not group- or world-writable, at most 4 KiB.
 * A file that changes while it is read is read again.  Returns 0 (t->value
 * NULL when the file is absent or empty), or -errno with *why set to a
 * static description of the problem.  Never logs. */
int admin_token_read(const char *path, struct admin_token *t, const char **why);

/* Whether the file now is another than, or has changed since, then. */
bool admin_token_changed(const struct stat *then, const struct stat *now);

/* Wipes and frees the token. */
void admin_token_clear(struct admin_token *t);
