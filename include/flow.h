/* The boot flow: admin token, saved credentials, registration token. */
#pragma once

#include <stdint.h>

#include "options.h"

enum action {
	ACTION_PLACEHOLDER, /* forge not set up yet: placeholder written */
	ACTION_KEEP,	    /* .runner kept (verified, or unverifiable): placeholder written */
	ACTION_REGISTER,    /* no .runner: registration token written */
	ACTION_REREGISTER,  /* .runner deleted: registration token written */
	ACTION_FAIL,	    /* stopped; see the exit status */
};

struct outcome {
	enum action action;
	int exit_status;   /* sysexits.h */
	int64_t runner_id; /* 0: none known */
	char reason[512];  /* one sentence, no secrets */
};

/* Runs the flow described in the man page; fills *out.  Logs each decision
 * once.  The caller maps nothing: out->exit_status is the process's. */
void flow_run(const struct options *o, struct outcome *out);

/* "keep", "register", ... for --json. */
const char *action_name(enum action a);
