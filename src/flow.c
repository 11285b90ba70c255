/* The boot flow, as a small state machine.  Each step looks at what it was
 * given, does at most one thing to the world, and names the next step:
 *
 *   ADMIN_TOKEN  absent/empty -> placeholder, done; unusable -> 78
 *   RUNNER       absent -> FETCH; malformed -> DISCARD; --reregister -> DISCARD;
 *                an id -> LOOKUP
 *   LOOKUP       200 same runner -> KEEP; 404 JSON, other status, uuid
 *                differs -> DISCARD; no route on either API, no answer, still
 *                busy at the deadline -> KEEP unverified; 401/403 -> 77
 *   DISCARD      delete .runner -> FETCH
 *   FETCH        valid token -> written; 401/403 -> 77; deadline -> 75;
 *                anything else -> 76
 *
 * On a failure after the command line was understood, an existing output is
 * left as it was and a missing one gets the placeholder, so the container's
 * bind mount always has a source. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "answer.h"
#include "clock.h"
#include "cleanup.h"
#include "container.h"
#include "flow.h"
#include "forge.h"
#include "log.h"
#include "output.h"
#include "runner.h"
#include "secret.h"

enum step {
	STEP_ADMIN_TOKEN,
	STEP_RUNNER,
	STEP_LOOKUP,
	STEP_DISCARD,
	STEP_FETCH,
	STEP_DONE,
};

struct flow {
	const struct options *o;
	struct outcome *out;
	struct admin_token admin;
	struct forge *forge;
	struct runner_file rf;
	struct runner_info info;
	char cause[256]; /* why .runner is being discarded */
};

static const char *const lookup_routes[] = {
    "/admin/runners/",	       /* the hive's design */
    "/admin/actions/runners/", /* Forgejo 15 */
};

static const char *const token_routes[] = {
    "/admin/runners/registration-token",	 /* Forgejo 7..15 */
    "/admin/actions/runners/registration-token", /* Forgejo 15 and later */
};

const char *action_name(enum action a)
{
	switch (a) {
	case ACTION_PLACEHOLDER:
		return "placeholder";
	case ACTION_KEEP:
		return "keep";
	case ACTION_REGISTER:
		return "register";
	case ACTION_REREGISTER:
		return "reregister";
	case ACTION_FAIL:
		return "fail";
	}
	return "?";
}

/* Records the outcome and logs the sentence at level, except a dry run's
 * decision, which main prints on stdout.  A failure's sentence becomes the
 * reason; a success keeps the decision already announced, if any. */
static enum step conclude(struct flow *fl, enum action a, int status, int level, const char *fmt,
			  ...) __attribute__((format(printf, 5, 6)));

static enum step conclude(struct flow *fl, enum action a, int status, int level, const char *fmt,
			  ...)
{
	char sentence[sizeof(fl->out->reason)];
	va_list ap;

	fl->out->action = a;
	fl->out->exit_status = status;
	va_start(ap, fmt);
	vsnprintf(sentence, sizeof(sentence), fmt, ap);
	va_end(ap);
	if (status != EX_OK || fl->out->reason[0] == '\0')
		memcpy(fl->out->reason, sentence, sizeof(sentence));
	if (!fl->o->dry_run || status != EX_OK)
		log_msg(level, "%s", sentence);
	return STEP_DONE;
}

/* Announces a decision that more steps will carry out. */
static void announce(struct flow *fl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void announce(struct flow *fl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fl->out->reason, sizeof(fl->out->reason), fmt, ap);
	va_end(ap);
	log_info("%s", fl->out->reason);
}

/* Writes the placeholder and finishes with action a (ACTION_KEEP or
 * ACTION_PLACEHOLDER), saying the cause and what follows from it. */
static enum step keep(struct flow *fl, enum action a, bool unverified, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum step keep(struct flow *fl, enum action a, bool unverified, const char *fmt, ...)
{
	const char *kept = unverified ? " unverified" : "";
	int level = unverified ? LOG_WARNING : LOG_INFO;
	char cause[sizeof(fl->out->reason)];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(cause, sizeof(cause), fmt, ap);
	va_end(ap);
	if (fl->o->dry_run && a == ACTION_KEEP)
		return conclude(fl, a, EX_OK, level,
				"%s: would keep .runner%s and write the placeholder", cause, kept);
	if (fl->o->dry_run)
		return conclude(fl, a, EX_OK, level, "%s: would write the placeholder", cause);
	r = output_write(fl->o->output, NULL);
	if (r < 0)
		return conclude(fl, ACTION_FAIL, EX_CANTCREAT, LOG_ERR, "cannot write %s: %s",
				fl->o->output, strerror(-r));
	if (a == ACTION_KEEP)
		return conclude(fl, a, EX_OK, level, "%s; keeping .runner%s", cause, kept);
	return conclude(fl, a, EX_OK, level, "%s; wrote the placeholder", cause);
}

static enum step step_admin_token(struct flow *fl)
{
	const struct options *o = fl->o;
	const char *why;
	int r;

	r = admin_token_read(o->core_token_file, &fl->admin, &why);
	if (r < 0)
		return conclude(fl, ACTION_FAIL, EX_CONFIG, LOG_ERR, "admin token file %s %s",
				o->core_token_file, why);
	if (!fl->admin.value)
		return keep(fl, ACTION_PLACEHOLDER, false,
			    "no admin token yet (forge still initialising)");
	if (fl->admin.world_readable)
		log_warning("admin token file %s is world-readable", o->core_token_file);

	r = forge_new(&(struct forge_config){.url = o->forge_url,
					     .unix_socket = o->unix_socket,
					     .ca_file = o->ca_file,
					     .admin_token = fl->admin.value},
		      &fl->forge);
	admin_token_clear(&fl->admin); /* the forge client holds its own copy */
	if (r < 0)
		return conclude(fl, ACTION_FAIL, EX_SOFTWARE, LOG_ERR, "cannot set up HTTP: %s",
				strerror(-r));
	return STEP_RUNNER;
}

static enum step step_runner(struct flow *fl)
{
	const struct options *o = fl->o;
	const char *path = o->runner_file;
	int r;

	r = container_open_runner(o->container_root, path, &fl->rf);
	if (r == -ENOSYS)
		return conclude(fl, ACTION_FAIL, EX_OSERR, LOG_ERR,
				"the kernel has no openat2(2): cannot resolve %s safely inside %s",
				path, o->container_root);
	if (r < 0)
		return conclude(fl, ACTION_FAIL, EX_IOERR, LOG_ERR, "cannot read %s inside %s: %s",
				path, o->container_root, strerror(-r));

	if (o->reregister) {
		if (fl->rf.state == RUNNER_READ &&
		    runner_parse(fl->rf.data, fl->rf.len, &fl->info) == 0)
			fl->out->runner_id = fl->info.id; /* for --json; the forge is not asked */
		snprintf(fl->cause, sizeof(fl->cause), "--reregister");
		return STEP_DISCARD;
	}
	switch (fl->rf.state) {
	case RUNNER_ABSENT:
		log_debug("%s does not exist in the container", path);
		return STEP_FETCH;
	case RUNNER_NOT_REGULAR:
		snprintf(fl->cause, sizeof(fl->cause), "%s is not a regular file", path);
		return STEP_DISCARD;
	case RUNNER_TOO_LARGE:
		snprintf(fl->cause, sizeof(fl->cause), "%s is larger than 64 KiB", path);
		return STEP_DISCARD;
	case RUNNER_READ:
		break;
	}
	if (runner_parse(fl->rf.data, fl->rf.len, &fl->info) < 0) {
		snprintf(fl->cause, sizeof(fl->cause), "%s is malformed (no runner id)", path);
		return STEP_DISCARD;
	}
	fl->out->runner_id = fl->info.id;
	log_debug("%s holds runner %" PRId64, path, fl->info.id);
	return STEP_LOOKUP;
}

static enum step step_lookup(struct flow *fl)
{
	int64_t id = fl->info.id, deadline = clock_now_ms() + fl->o->retry_timeout_ms;
	char path[64], uuid[RUNNER_UUID_MAX + 1];
	struct forge_answer a;
	enum verdict v = VERDICT_NO_ROUTE;

	for (size_t i = 0; i < sizeof(lookup_routes) / sizeof(lookup_routes[0]); i++) {
		snprintf(path, sizeof(path), "%s%" PRId64, lookup_routes[i], id);
		v = forge_ask(fl->forge, path, ROUTE_LOOKUP, deadline, &a);
		if (v != VERDICT_NO_ROUTE)
			break;
	}

	switch (v) {
	case VERDICT_OK:
		if (fl->info.has_uuid && answer_runner_uuid(&a, uuid, sizeof(uuid)) &&
		    strcmp(uuid, fl->info.uuid) != 0) {
			snprintf(fl->cause, sizeof(fl->cause),
				 "runner %" PRId64
				 " on the forge is a different runner (uuid differs)",
				 id);
			return STEP_DISCARD;
		}
		return keep(fl, ACTION_KEEP, false, "runner %" PRId64 " still registered", id);
	case VERDICT_GONE:
		snprintf(fl->cause, sizeof(fl->cause),
			 "runner %" PRId64 " is gone from the forge (404)", id);
		return STEP_DISCARD;
	case VERDICT_NO_ROUTE:
		return keep(fl, ACTION_KEEP, true, "forge has no runner lookup API");
	case VERDICT_NO_ANSWER:
		return keep(fl, ACTION_KEEP, true, "forge did not answer (%s)", a.error);
	case VERDICT_TRANSIENT:
		return keep(fl, ACTION_KEEP, true, "forge still answered %ld at --retry-timeout",
			    a.status);
	case VERDICT_AUTH_REJECTED:
		return conclude(fl, ACTION_FAIL, EX_NOPERM, LOG_ERR,
				"forge rejected the admin token (%ld); keeping .runner", a.status);
	case VERDICT_UNEXPECTED:
		break;
	}
	snprintf(fl->cause, sizeof(fl->cause),
		 "forge answered %ld to the lookup of runner %" PRId64, a.status, id);
	return STEP_DISCARD;
}

static enum step step_discard(struct flow *fl)
{
	int r;

	if (fl->o->dry_run)
		return conclude(fl, ACTION_REREGISTER, EX_OK, LOG_INFO,
				"%s: would delete .runner and fetch a registration token",
				fl->cause);
	r = container_remove_runner(&fl->rf);
	if (r < 0)
		return conclude(fl, ACTION_FAIL, EX_IOERR, LOG_ERR,
				"%s, but it cannot be deleted: %s", fl->cause, strerror(-r));
	announce(fl, "%s: re-registering", fl->cause);
	log_debug("deleted %s", fl->o->runner_file);
	fl->out->action = ACTION_REREGISTER;
	return STEP_FETCH;
}

static enum step step_fetch(struct flow *fl)
{
	_cleanup_(erase_and_freep) char *token = NULL;
	int64_t deadline = clock_now_ms() + fl->o->retry_timeout_ms;
	enum action action =
	    fl->out->action == ACTION_REREGISTER ? ACTION_REREGISTER : ACTION_REGISTER;
	struct forge_answer a;
	enum verdict v = VERDICT_NO_ROUTE;
	int r;

	if (fl->o->dry_run)
		return conclude(fl, ACTION_REGISTER, EX_OK, LOG_INFO,
				"no .runner: would fetch a registration token");
	if (action == ACTION_REGISTER)
		announce(fl, "no .runner: registering");

	for (size_t i = 0; i < sizeof(token_routes) / sizeof(token_routes[0]); i++) {
		v = forge_ask(fl->forge, token_routes[i], ROUTE_TOKEN, deadline, &a);
		if (v != VERDICT_NO_ROUTE)
			break;
	}

	if (answer_is_retryable(v, ROUTE_TOKEN)) /* so the deadline passed */
		return conclude(fl, ACTION_FAIL, EX_TEMPFAIL, LOG_ERR,
				"no registration token within --retry-timeout (last answer: %s)",
				a.status ? verdict_name(v) : a.error);
	switch (v) {
	case VERDICT_OK:
		break;
	case VERDICT_NO_ROUTE:
		return conclude(fl, ACTION_FAIL, EX_PROTOCOL, LOG_ERR,
				"forge has neither /api/v1%s nor /api/v1%s", token_routes[0],
				token_routes[1]);
	case VERDICT_AUTH_REJECTED:
		return conclude(fl, ACTION_FAIL, EX_NOPERM, LOG_ERR,
				"forge rejected the admin token (%ld)", a.status);
	default:
		return conclude(fl, ACTION_FAIL, EX_PROTOCOL, LOG_ERR,
				"forge answered %ld to the registration-token request", a.status);
	}

	if (answer_token(&a, &token) < 0)
		return conclude(fl, ACTION_FAIL, EX_PROTOCOL, LOG_ERR,
				"forge's answer is not a valid registration token");
	r = output_write(fl->o->output, token);
	if (r < 0)
		return conclude(fl, ACTION_FAIL, EX_CANTCREAT, LOG_ERR, "cannot write %s: %s",
				fl->o->output, strerror(-r));
	return conclude(fl, action, EX_OK, LOG_INFO, "registration token written to %s",
			fl->o->output);
}

static enum step (*const steps[])(struct flow *) = {
    [STEP_ADMIN_TOKEN] = step_admin_token, [STEP_RUNNER] = step_runner, [STEP_LOOKUP] = step_lookup,
    [STEP_DISCARD] = step_discard,	   [STEP_FETCH] = step_fetch,
};

void flow_run(const struct options *o, struct outcome *out)
{
	struct flow fl = {.o = o, .out = out, .rf = {.dir_fd = -1}};
	enum step s = STEP_ADMIN_TOKEN;

	*out = (struct outcome){.action = ACTION_FAIL, .exit_status = EX_SOFTWARE};
	while (s != STEP_DONE)
		s = steps[s](&fl);

	admin_token_clear(&fl.admin);
	forge_free(fl.forge);
	container_close_runner(&fl.rf);

	if (out->exit_status != EX_OK && !o->dry_run) {
		int r = output_ensure(o->output);

		if (r < 0)
			log_error("cannot write the placeholder to %s: %s", o->output,
				  strerror(-r));
	}
}
