/* A runner's identity: from .runner (as forgejo-runner and act_runner write
 * it) and from the forge's runner object.  Pure: no I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jsonutil.h"

#define RUNNER_UUID_MAX	  64
#define RUNNER_NAME_MAX	  255
#define RUNNER_STATUS_MAX 15
#define RUNNER_TOKEN_MAX  255

struct runner_info {
	int64_t id; /* 0: none */
	enum field uuid_field;
	char uuid[RUNNER_UUID_MAX + 1];
	enum field name_field;
	char name[RUNNER_NAME_MAX + 1];
	char status[RUNNER_STATUS_MAX + 1]; /* forge objects: "offline", "idle", ...; "" if none */
	bool instance_scope; /* forge objects: shown with owner_id and repo_id both 0 (Forgejo) */
};

/* How two records of the same id relate. */
enum runner_match {
	RUNNER_SAME_UUID,  /* both have a uuid, equal */
	RUNNER_SAME_NAME,  /* no uuid to compare; both have a name, equal */
	RUNNER_SAME_ID,	   /* neither a uuid nor a name on both sides: judged by id */
	RUNNER_OTHER_UUID, /* the uuids differ (or one is over-long) */
	RUNNER_OTHER_NAME, /* no uuid to compare; the names differ */
};

/* Parses .runner: a JSON object (no duplicate keys) whose "id" is an integer
 * in 1..2^63-1; "uuid" and "name" are taken when they are strings.  Only the
 * identity is kept: the caller may wipe data as soon as this returns.
 * Returns 0, or -EINVAL when the file is malformed. */
int runner_parse(const char *data, size_t len, struct runner_info *info);

#define RUNNER_ADDRESS_MAX 2048
#define RUNNER_LABELS_TEXT (32 * 256)

/* What a runner needs of .runner beyond its identity, to talk to the forge
 * and to be written again: its own secret, the forge's address, its
 * labels.  The token is a secret: wipe the struct after use. */
struct runner_creds {
	enum field token_field;
	char token[RUNNER_TOKEN_MAX + 1];
	enum field address_field;
	char address[RUNNER_ADDRESS_MAX + 1];
	bool labels_ok;			 /* "labels" is an array of strings that fit */
	char labels[RUNNER_LABELS_TEXT]; /* them, joined with ',' */
};

/* Parses .runner's "token", "address" and "labels" (see struct
 * runner_creds).  Returns 0, or -EINVAL when the file is not a JSON object. */
int runner_parse_creds(const char *data, size_t len, struct runner_creds *c);

/* What .runner holds, as `register` writes it. */
struct runner_record {
	int64_t id;
	const char *uuid, *name, *token, *address;
	const char *const *labels; /* full form: name:host, name:docker://image */
	size_t n_labels;
};

/* Formats r as `register` writes .runner: a JSON object of WARNING, id (a
 * number), uuid, name, token, address and labels, two-space indented, with
 * a final newline.  Returns a string the caller wipes and frees (its length
 * in *len), or NULL when out of memory. */
char *runner_format(const struct runner_record *r, size_t *len);

/* Parses a forge's runner object (Forgejo's or Gitea's shape; unknown fields
 * are ignored): "id", "uuid", "name", "status" as far as they are there, and
 * whether "owner_id" and "repo_id" are both there and 0.
 * Returns 0, or -EINVAL when data is not a JSON object. */
int runner_parse_object(const char *data, size_t len, struct runner_info *info);

/* Compares the runner in .runner with the forge's object of the same id:
 * by uuid when both have one, else by name when both have one, else by id. */
enum runner_match runner_compare(const struct runner_info *local, const struct runner_info *forge);

/* True for the matches that mean "the same runner". */
bool runner_match_is_same(enum runner_match m);
