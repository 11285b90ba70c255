/* Every sentence the boot flow says, composed from the decision's reason
 * codes in one place.  Pure: no I/O, and no secret is ever among what a
 * sentence names. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "answer.h"
#include "decide.h"

/* What sentences name: everything a run may need to say, filled in by the
 * driver as it learns it.  Strings are borrowed. */
struct reason_context {
	int64_t id; /* the runner in .runner */
	const char *runner_file;
	const char *container_root;
	const char *output;
	const char *state_file;
	const char *admin_token_file;
	const char *admin_token_why; /* what is wrong with that file */
	const char *ca_file;
	int error;		  /* errno of the failed I/O */
	long lookup_status;	  /* the lookup's answer, for the causes it gives; 0: none */
	const char *lookup_error; /* ... and why */
	long last_status;	  /* the last request's answer, for a failure it ends in */
	enum verdict last_verdict;
	enum auth_problem last_auth; /* ... 401, 403: what the forge said */
	const char *last_error;	     /* ... status 0: why */
	const char *last_message;    /* ... the forge's JSON message, "" if none */
	bool host;		     /* host registration */
	int64_t registered_id;	     /* ... the runner registered in this run; 0: none */
	bool rewrote;		     /* ... .runner rewritten with new labels or address */
	const char *token_routes;    /* the routes asked for a token, for a message */
	enum reason cause;	     /* why .runner was being discarded */
	int64_t waited_ms;	     /* for the admin token file; 0: no wait */
	bool dry_run;
};

/* The sentence for r, with what c names.  A sentence that says the run
 * stops names whether .runner stays (per d's fate).  Always
 * NUL-terminated; returns buf. */
char *reason_say(char *buf, size_t n, enum reason r, const struct decision *d,
		 const struct reason_context *c);

/* The sentence that ends a run: "<why>; keeping .runner; wrote <what> to
 * <output>", a dry run's "<why>: would ...", or a failure's sentence; all
 * with the admin token file's wait, if there was one.  Returns buf. */
char *reason_conclude(char *buf, size_t n, const struct decision *d,
		      const struct reason_context *c);

/* The decision announced while its steps are still under way: "no .runner:
 * registering", "<cause>: re-registering".  Returns buf. */
char *reason_announce(char *buf, size_t n, const struct decision *d,
		      const struct reason_context *c);

/* How the output's content is named in messages ("the current registration
 * token", "the placeholder", ...). */
const char *reason_token_words(enum token_source t);
