/* What a forge's answer means: pure classification, no I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANSWER_BODY_MAX (64 * 1024)

struct forge_answer {
	long status;	  /* HTTP status; 0: no answer (refused, reset, timed out) */
	const char *body; /* not NUL-terminated; owned by the forge client */
	size_t body_len;
	bool body_truncated;	/* more than ANSWER_BODY_MAX was sent */
	int64_t retry_after_ms; /* -1: no usable Retry-After */
	const char *error;	/* status 0: why, for messages (never holds a secret) */
};

enum route_kind {
	ROUTE_LOOKUP, /* GET .../runners/{id} */
	ROUTE_TOKEN,  /* GET .../runners/registration-token */
};

enum verdict {
	VERDICT_OK,	       /* 200 */
	VERDICT_GONE,	       /* 404 with a JSON object: the forge does not know the runner */
	VERDICT_NO_ROUTE,      /* 404 without one: the forge has no such route */
	VERDICT_NO_ANSWER,     /* refused, reset, timed out */
	VERDICT_AUTH_REJECTED, /* 401, 403 */
	VERDICT_TRANSIENT,     /* worth asking again */
	VERDICT_UNEXPECTED,    /* any other status */
};

/* Classifies an answer to a request of the given kind.  Only a 404 body is
 * parsed (to tell a JSON error from the router's plain-text page). */
enum verdict answer_classify(const struct forge_answer *a, enum route_kind kind);

/* True when a request that got this verdict should be asked again. */
bool answer_is_retryable(enum verdict v, enum route_kind kind);

/* From a 200 lookup answer, copies the runner's "uuid" into uuid (size n).
 * Returns 1 when there is one, 0 when the body has none (or is not JSON). */
int answer_runner_uuid(const struct forge_answer *a, char *uuid, size_t n);

/* From a 200 token answer: a JSON object whose "token" is a valid
 * registration token.  Returns 0 and a malloc'ed copy in *token (the caller
 * wipes it), or -EBADMSG when the body is not that. */
int answer_token(const struct forge_answer *a, char **token);

/* A short human name for a verdict, for messages. */
const char *verdict_name(enum verdict v);
