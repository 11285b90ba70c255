/* The boot flow: admin token, saved credentials, registration token,
 * clean-up of superseded runners. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "options.h"
#include "state.h"

enum action {
	ACTION_PLACEHOLDER, /* no admin token (yet): the forge was not asked */
	ACTION_KEEP,	    /* .runner kept (verified, or unverifiable) */
	ACTION_REGISTER,    /* no .runner: registration token written */
	ACTION_REREGISTER,  /* .runner deleted: registration token written */
	ACTION_FAIL,	    /* stopped; see the exit status */
};

/* What the output holds after the run. */
enum token_source {
	TOKEN_CURRENT,	   /* the token the forge gave in this run */
	TOKEN_REMEMBERED,  /* the last one written, from the state file */
	TOKEN_PLACEHOLDER, /* "placeholder" */
	TOKEN_UNCHANGED,   /* an existing output left as it was (failure, or nothing to do) */
};

struct outcome {
	enum action action;
	int exit_status;   /* sysexits.h */
	int64_t runner_id; /* 0: none known */
	enum token_source token;
	int64_t deleted[STATE_SUPERSEDED_MAX]; /* superseded runners deleted (dry run: would be) */
	size_t n_deleted;
	char reason[512]; /* one sentence, no secrets */
};

/* Runs the flow described in the man page; fills *out.  Logs each decision
 * once.  The caller maps nothing: out->exit_status is the process's. */
void flow_run(const struct options *o, struct outcome *out);

/* "keep", "register", ... and "current", "remembered", ... for --json. */
const char *action_name(enum action a);
const char *token_source_name(enum token_source t);
