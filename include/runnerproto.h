/* The runners' own protocol, as the host speaks it when it registers the
 * runner itself (--registration=host): Register and Declare, never
 * FetchTask (it would take a job). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "answer.h"
#include "forge.h"

/* Registers a runner with the registration token: its name, the names of
 * its labels (given in full form, name:host ...) and the version
 * "hive-ci-prefetch/<version>".  On VERDICT_OK, *r is the runner the forge
 * made, its own token in r->token (the caller wipes it); a 200 that is not
 * such a runner is VERDICT_UNEXPECTED.  Other verdicts as forge_call_runner's. */
enum verdict runnerproto_register(struct forge *f, const char *registration_token, const char *name,
				  const char *const *labels, size_t n_labels, int64_t deadline_ms,
				  struct forge_answer *a, struct proto_runner *r);

/* Declares, with a runner's own credentials, its labels (names) and the
 * tool's version: what the daemon does at every start.  VERDICT_OK: the
 * forge knows the credentials, *id is the runner they are (0 when the
 * answer does not say); VERDICT_GONE: it does not ("unregistered runner");
 * anything else: it could not tell. */
enum verdict runnerproto_declare(struct forge *f, const char *uuid, const char *token,
				 const char *const *labels, size_t n_labels, int64_t deadline_ms,
				 struct forge_answer *a, int64_t *id);
