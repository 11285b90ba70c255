/* The forge client: libcurl, one keep-alive connection, retries and a deadline. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "answer.h"

struct forge_config {
	const char *url;	 /* http:// or https://, no query */
	const char *unix_socket; /* NULL: TCP */
	const char *ca_file;	 /* NULL: system trust store */
	const char *admin_token; /* sent only in the Authorization header */
	const char *peer_user;	 /* NULL: who holds the forge's end is not checked; */
	uid_t peer_uid;		 /* ... else its uid must be this */
};

struct forge;

/* Creates a client, setting libcurl up on first use with the wiping
 * allocator.  The admin token is copied into the header list (wiped on
 * forge_free); cfg need not outlive the call.  Returns 0 or -errno. */
int forge_new(const struct forge_config *cfg, struct forge **out);

/* Replaces the admin token the client sends (copied; the old copy wiped).
 * Returns 0 or -errno. */
int forge_set_admin_token(struct forge *f, const char *admin_token);

/* Checks that the --ca-file can be used, before any request: it opens for
 * reading and is a regular file.  Returns 0 or -errno (-EISDIR for a
 * directory, -EINVAL for another kind of file). */
int forge_check_ca_file(const char *path);

/* Wipes and frees everything the client holds.  NULL is fine. */
void forge_free(struct forge *f);

/* The deadline for the requests of a step that should end at step_deadline
 * (monotonic ms): that, but at least FORGE_FIRST_REQUEST_MIN_MS from now, so
 * that even --retry-timeout=0, or a wait for the admin token that used the
 * step's time up, asks once.  Computed once per step, before its first
 * request; every route of the step shares it. */
int64_t forge_deadline(int64_t step_deadline_ms);

#define FORGE_FIRST_REQUEST_MIN_MS 1000

/* Sends method ("GET", "POST" with an empty body, or "DELETE") to path
 * (under /api/v1), asking again while the answer is retryable for kind and
 * the monotonic deadline (ms) has not passed: backoff starts at 100 ms and
 * doubles up to 200 ms, a Retry-After is honoured but clamped to the time
 * left, and no request runs past the deadline or starts after it.  The
 * last answer is left in *a (its body is valid until the next call); the
 * verdict is returned.  A retryable verdict comes back only when the
 * deadline passed; when it had passed before anything was asked, that is
 * VERDICT_NO_ANSWER. */
enum verdict forge_ask(struct forge *f, const char *method, const char *path, enum route_kind kind,
		       int64_t deadline_ms, struct forge_answer *a);

/* POSTs body (JSON) to the runners' own protocol, method ("Register",
 * "Declare") at /api/actions/runner.v1.RunnerService/, with the header lines
 * given (NULL-terminated; they may hold a runner's credentials: libcurl's
 * copies are wiped) and never the admin token.  Asks again as forge_ask
 * does; a Register only while it cannot have reached the forge. */
enum verdict forge_call_runner(struct forge *f, const char *method, const char *body,
			       size_t body_len, const char *const *headers, enum route_kind kind,
			       int64_t deadline_ms, struct forge_answer *a);
