/* hive-ci-prefetch: decide whether the CI runner's saved credentials are
 * still good and, if not, fetch a fresh registration token from the forge. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sysexits.h>

#include <jansson.h>

#include "flow.h"
#include "log.h"
#include "options.h"
#include "program.h"
#include "utf8.h"
#include "wipe_alloc.h"

/* The exit status of each way a run can end (sysexits.h). */
static const int exit_statuses[] = {
    /* clang-format off */
    [FAILURE_NONE] = EX_OK,
    [FAILURE_ADMIN_TOKEN] = EX_CONFIG,
    [FAILURE_CA_FILE] = EX_NOINPUT,
    [FAILURE_TLS] = EX_UNAVAILABLE,
    [FAILURE_WRONG_PEER] = EX_UNAVAILABLE,
    [FAILURE_SETUP] = EX_SOFTWARE,
    [FAILURE_NO_OPENAT2] = EX_OSERR,
    [FAILURE_OUTPUT] = EX_CANTCREAT,
    [FAILURE_RUNNER_IO] = EX_IOERR,
    [FAILURE_NO_TOKEN] = EX_TEMPFAIL,
    [FAILURE_NOT_A_TOKEN] = EX_PROTOCOL,
    [FAILURE_AUTH] = EX_NOPERM,
    [FAILURE_REGISTER_NO_ANSWER] = EX_TEMPFAIL,
    [FAILURE_REGISTER_REFUSED] = EX_PROTOCOL,
    /* clang-format on */
};

/* Prints the outcome as one JSON object.  The reason may hold bytes of a
 * path that are not UTF-8, or a character cut by its buffer: it is made
 * valid first, as JSON must be.  Returns false when there was no memory
 * for it (said on stderr). */
static bool print_json(const struct outcome *out, int status, const struct options *o)
{
	char reason[sizeof(out->reason) * 3];
	json_t *deleted = json_array();
	json_t *j;

	utf8_sanitize(reason, sizeof(reason), out->reason);
	for (size_t i = 0; deleted && i < out->n_deleted; i++)
		json_array_append_new(deleted, json_integer(out->deleted[i]));
	j = json_pack("{s:s, s:s, s:o, s:s, s:o, s:i, s:b, s:s}", "action",
		      action_name(out->action), "reason", reason, "runner_id",
		      out->runner_id ? json_integer(out->runner_id) : json_null(), "token",
		      token_source_name(out->token), "deleted", deleted, "exit", status, "dry_run",
		      o->dry_run, "registration", o->host_registration ? "host" : "container");
	if (!j || json_dumpf(j, stdout, JSON_COMPACT) < 0) {
		json_decref(j);
		log_error("cannot print --json: out of memory");
		return false;
	}
	fputc('\n', stdout);
	json_decref(j);
	return true;
}

/* Flushes stdout; on failure says so in one line and returns status, or
 * EX_IOERR when status was EX_OK (a failed run keeps its own status). */
static int flush_stdout(int status)
{
	errno = 0;
	if (fflush(stdout) == 0 && !ferror(stdout))
		return status;
	log_error("cannot write to standard output: %s", strerror(errno ? errno : EIO));
	return status == EX_OK ? EX_IOERR : status;
}

int main(int argc, char **argv)
{
	struct options o;
	struct outcome out;
	char err[512];
	int status;

	/* No core dumps and no ptrace by others of our uid: we hold secrets. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	/* A reader of stderr or stdout that went away (2>&1 | head -1) must not
	 * stop a run between deleting .runner and writing the output: a failed
	 * write is said where it can be, and the run goes on. */
	signal(SIGPIPE, SIG_IGN);

	log_setup(LOG_INFO); /* so that even a usage error carries its priority */
	switch (options_parse(argc, argv, &o, err, sizeof(err))) {
	case OPTIONS_HELP:
		options_usage(stdout);
		return flush_stdout(EX_OK);
	case OPTIONS_VERSION:
		puts(PROGRAM_NAME " " VERSION);
		return flush_stdout(EX_OK);
	case OPTIONS_BAD:
		log_error("%s (see --help)", err);
		return EX_USAGE;
	case OPTIONS_RUN:
		break;
	}

	log_setup(o.verbosity < 0 ? LOG_ERR : o.verbosity > 0 ? LOG_DEBUG : LOG_INFO);
	wipe_alloc_install_jansson();

	flow_run(&o, &out);
	status = exit_statuses[out.failure];

	if (o.json) {
		if (!print_json(&out, status, &o) && status == EX_OK)
			status = EX_OSERR;
	} else if (o.dry_run && status == EX_OK) {
		puts(out.reason);
	}
	return flush_stdout(status);
}
