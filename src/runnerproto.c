/* The runners' own protocol (FORGE-API.md, "Registering a runner from the
 * host").  Rules this file keeps:
 *  1. The registration token travels only in Register's body, a runner's
 *     own token only in Declare's x-runner-token header: never in a URL or
 *     a message.  Every buffer that held one is wiped.
 *  2. The admin token is never sent here (forge_call_runner).
 *  3. Only Register and Declare are called. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cleanup.h"
#include "jsonutil.h"
#include "program.h"
#include "runnerproto.h"

#define PROTO_VERSION PROGRAM_NAME "/" VERSION

/* The body: {"version": ..., "labels": [names], and what more holds}.
 * Returns it as a string to wipe and free with free() (its length in
 * *len), or NULL. */
static char *body(json_t *more, const char *const *labels, size_t n_labels, size_t *len)
{
	json_t *names = json_array();
	char *text = NULL;

	for (size_t i = 0; names && i < n_labels; i++)
		json_array_append_new(names, json_stringn(labels[i], strcspn(labels[i], ":")));
	if (more && names &&
	    json_object_set_new(more, "version", json_string(PROTO_VERSION)) == 0 &&
	    json_object_set(more, "labels", names) == 0)
		text = json_text(more, JSON_COMPACT, false, len);
	json_decref(names);
	json_decref(more); /* the wiping allocator zeroes its copy of the token */
	return text;
}

enum verdict runnerproto_register(struct forge *f, const char *registration_token, const char *name,
				  const char *const *labels, size_t n_labels, int64_t deadline_ms,
				  struct forge_answer *a, struct proto_runner *r)
{
	_cleanup_(erase_and_freep) char *text = NULL;
	size_t len = 0;
	enum verdict v;

	*r = (struct proto_runner){0};
	text = body(json_pack("{s:s, s:s}", "name", name, "token", registration_token), labels,
		    n_labels, &len);
	if (!text) {
		*a = (struct forge_answer){.retry_after_ms = -1, .error = "out of memory"};
		return VERDICT_NO_ANSWER;
	}
	v = forge_call_runner(f, "Register", text, len, NULL, ROUTE_REGISTER, deadline_ms, a);
	if (v == VERDICT_OK && answer_proto_runner(a, true, r) < 0)
		v = VERDICT_UNEXPECTED;
	return v;
}

enum verdict runnerproto_declare(struct forge *f, const char *uuid, const char *token,
				 const char *const *labels, size_t n_labels, int64_t deadline_ms,
				 struct forge_answer *a, int64_t *id)
{
	_cleanup_(erase_and_freep) char *text = NULL;
	_cleanup_(freep) char *uuid_header = NULL;
	_cleanup_(erase_and_freep) char *token_header = NULL;
	struct proto_runner r;
	size_t len = 0;
	enum verdict v;

	*id = 0;
	text = body(json_object(), labels, n_labels, &len);
	if (text && asprintf(&uuid_header, "x-runner-uuid: %s", uuid) < 0)
		uuid_header = NULL;
	if (uuid_header && asprintf(&token_header, "x-runner-token: %s", token) < 0)
		token_header = NULL;
	if (!token_header) {
		*a = (struct forge_answer){.retry_after_ms = -1, .error = "out of memory"};
		return VERDICT_NO_ANSWER;
	}
	v = forge_call_runner(f, "Declare", text, len,
			      (const char *const[]){uuid_header, token_header, NULL}, ROUTE_DECLARE,
			      deadline_ms, a);
	if (v == VERDICT_OK && answer_proto_runner(a, false, &r) == 0)
		*id = r.id;
	return v;
}
