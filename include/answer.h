/* What a forge's answer means: pure classification, no I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runner.h"
#include "token.h"

#define ANSWER_BODY_MAX (64 * 1024)

struct forge_answer {
	long status;	  /* HTTP status; 0: no answer (refused, reset, timed out) */
	const char *body; /* not NUL-terminated; owned by the forge client */
	size_t body_len;
	bool body_truncated;	/* more than ANSWER_BODY_MAX was sent */
	int64_t retry_after_ms; /* -1: no usable Retry-After */
	const char *error;	/* status 0: why, for messages (never holds a secret) */
	bool tls_failed;	/* status 0: TLS failed in a way asking again cannot fix */
	bool wrong_peer;	/* status 0: the forge's end is not --forge-user's: nothing sent */
	bool not_sent;		/* status 0: the request never left (no connection) */
};

enum route_kind {
	ROUTE_LOOKUP,	/* GET .../runners/{id} of the runner in .runner */
	ROUTE_TOKEN,	/* GET or POST .../runners/registration-token */
	ROUTE_CLEANUP,	/* GET or DELETE .../runners/{id} of a superseded runner */
	ROUTE_REGISTER, /* the runners' protocol: Register */
	ROUTE_DECLARE,	/* the runners' protocol: Declare, with a runner's credentials */
};

enum verdict {
	VERDICT_OK,	       /* 200 (a clean-up's DELETE: also 204) */
	VERDICT_GONE,	       /* 404 with a JSON object: the forge does not know the runner */
	VERDICT_NO_ROUTE,      /* 404 without one (a token route: any 404), 405 on a token
				  or clean-up route: the forge has no such route */
	VERDICT_NO_ANSWER,     /* refused, reset, timed out */
	VERDICT_TLS_FAILED,    /* certificate not verified, CA file unusable: permanent */
	VERDICT_WRONG_PEER,    /* another user than --forge-user holds the forge's end: permanent */
	VERDICT_AUTH_REJECTED, /* 401, 403 */
	VERDICT_TRANSIENT,     /* worth asking again */
	VERDICT_UNEXPECTED,    /* any other status */
};

/* Classifies an answer to a request of the given kind.  Only a 404 body is
 * parsed (to tell a JSON error from the router's plain-text page). */
enum verdict answer_classify(const struct forge_answer *a, enum route_kind kind);

/* True when a request that got answer a and this verdict should be asked
 * again. */
bool answer_is_retryable(const struct forge_answer *a, enum verdict v, enum route_kind kind);

/* From a 200 lookup answer: the object of runner id, its identity, status
 * and scope (see runner_parse_object).  Returns 0, or -EBADMSG when the
 * body is not that: cut off at the cap, empty, not JSON, not an object, or
 * an object without that id (an HTML page, a proxy's answer, ...). */
int answer_runner(const struct forge_answer *a, int64_t id, struct runner_info *info);

/* From a 200 token answer: a JSON object whose "token" is a valid
 * registration token.  Returns 0 and a malloc'ed copy in *token (the caller
 * wipes it), or -EBADMSG when the body is not that. */
int answer_token(const struct forge_answer *a, char **token);

/* A runner the runners' protocol answered with: Register's, or Declare's
 * (whose token is left empty). */
struct proto_runner {
	int64_t id;
	char uuid[RUNNER_UUID_MAX + 1];
	char name[RUNNER_NAME_MAX + 1];
	char token[TOKEN_MAX + 1]; /* the runner's own secret: wiped by its holder */
};

/* From a 200 answer of Register (need_token) or Declare: a JSON object whose
 * "runner" has an "id" that is a decimal string of at least 1 (protojson
 * writes int64 as strings), a "uuid", a "name" and, for Register, a "token"
 * of the token alphabet.  Returns 0, or -EBADMSG when the body is not
 * that. */
int answer_proto_runner(const struct forge_answer *a, bool need_token, struct proto_runner *r);

/* The forge's JSON "message", made printable and cut to fit buf ("" when
 * there is none): for the sentences of a refusal.  Returns buf. */
char *answer_message(const struct forge_answer *a, char *buf, size_t n);

/* What a 401 or 403 says about the admin token, from the forge's JSON
 * message. */
enum auth_problem {
	AUTH_REJECTED,	     /* nothing more is said (401: unknown, missing) */
	AUTH_NO_SCOPE,	     /* the token lacks the scope the route needs (write:admin) */
	AUTH_NOT_SITE_ADMIN, /* the token's user is not a site admin */
};

enum auth_problem answer_auth_problem(const struct forge_answer *a);

/* A short human name for a verdict, for messages. */
const char *verdict_name(enum verdict v);
