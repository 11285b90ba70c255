/* The boot flow's driver: reads the world, asks decide.c, does what it says. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "decide.h"
#include "options.h"
#include "state.h"

struct outcome {
	enum action action;
	enum failure failure; /* FAILURE_NONE: done as intended; main maps it to the exit status */
	int64_t runner_id;    /* 0: none known */
	enum token_source token;
	int64_t deleted[STATE_SUPERSEDED_MAX]; /* superseded runners deleted (dry run: would be) */
	size_t n_deleted;
	char reason[512]; /* one sentence, no secrets */
};

/* Runs the flow described in the man page; fills *out.  Logs each decision
 * once. */
void flow_run(const struct options *o, struct outcome *out);
