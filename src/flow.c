/* The boot flow, as a small state machine.  Each step looks at what it was
 * given, does at most one thing to the world, and names the next step:
 *
 *   ADMIN_TOKEN  unusable -> 78; absent/empty -> wait for it up to
 *                --retry-timeout, then RUNNER without a forge
 *   RUNNER       no forge: .runner kept unverified -> WRITE; --reregister or
 *                malformed -> DISCARD; absent -> FETCH; an id -> LOOKUP
 *   LOOKUP       200 same runner -> FETCH (kept, confirmed); no lookup route
 *                -> FETCH (kept unless the token changed); 404 JSON, other
 *                status, uuid or name differs -> DISCARD; no answer, still
 *                busy at the deadline -> WRITE (kept unverified); 401/403 -> 77
 *   DISCARD      delete .runner -> FETCH (or WRITE with the token in hand)
 *   FETCH        valid token -> WRITE; no token: registering -> 75/76,
 *                .runner kept -> WRITE the remembered one; 401/403 -> 77
 *   WRITE        the current token, else the remembered one, else the
 *                placeholder -> CLEANUP
 *   CLEANUP      only after the forge confirmed .runner: delete superseded
 *                runners that are offline and provably ours
 *
 * The output always holds the forge's current registration token when it
 * gives one, so its bytes stay the same from boot to boot while all is well:
 * the runner module re-registers whenever they change.  On a failure after
 * the command line was understood, an existing output is left as it was and
 * a missing one gets the remembered token or the placeholder, so the
 * container's bind mount always has a source. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

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
#include "state.h"

#define ADMIN_TOKEN_POLL_MS 50	 /* a token file that appears is noticed within this */
#define CLEANUP_SHARE	    4	 /* the clean-up may spend 1/4 of --retry-timeout ... */
#define CLEANUP_MIN_MS	    1000 /* ... but at least the first request's second */

enum step {
	STEP_ADMIN_TOKEN,
	STEP_RUNNER,
	STEP_LOOKUP,
	STEP_DISCARD,
	STEP_FETCH,
	STEP_WRITE,
	STEP_CLEANUP,
	STEP_DONE,
};

struct flow {
	const struct options *o;
	struct outcome *out;
	struct admin_token admin;
	struct forge *forge; /* NULL: no admin token, the forge cannot be asked */
	struct runner_file rf;
	struct runner_info info; /* from .runner; id 0: none */
	struct state state;	 /* what the host remembers */
	char *token;		 /* the forge's registration token, once fetched; wiped */
	int64_t deadline;	 /* of the current step, monotonic ms */
	int64_t waited_ms;	 /* for the admin token file */
	bool kept;		 /* .runner stays (confirmed or unverified) */
	bool confirmed;		 /* the forge confirmed .runner in this run */
	bool check_token;	 /* no lookup route: a changed token means a new forge */
	bool would_fetch;	 /* a dry run got to the token fetch */
	size_t lookup_route;	 /* the lookup route the forge answered on */
	char decision[256];	 /* why .runner stays or goes, for the last sentence */
	char cause[256];	 /* why .runner is being discarded */
};

static const char *const lookup_routes[] = {
    "/admin/runners/",	       /* the hive's design */
    "/admin/actions/runners/", /* Forgejo 15+, Gitea 1.24+ */
};

static const struct {
	const char *method, *path;
} token_routes[] = {
    {"GET", "/admin/runners/registration-token"},	   /* Forgejo 7+, Gitea 1.22-1.25 */
    {"GET", "/admin/actions/runners/registration-token"},  /* Forgejo 15+ */
    {"POST", "/admin/actions/runners/registration-token"}, /* Gitea 1.24+ */
};

#define DELETE_ROUTE "/admin/actions/runners/" /* Forgejo 15+, Gitea 1.24+ */

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

const char *token_source_name(enum token_source t)
{
	switch (t) {
	case TOKEN_CURRENT:
		return "current";
	case TOKEN_REMEMBERED:
		return "remembered";
	case TOKEN_PLACEHOLDER:
		return "placeholder";
	case TOKEN_UNCHANGED:
		return "unchanged";
	}
	return "?";
}

/* How the output's content is named in messages. */
static const char *token_words(enum token_source t)
{
	switch (t) {
	case TOKEN_CURRENT:
		return "the current registration token";
	case TOKEN_REMEMBERED:
		return "the remembered registration token";
	case TOKEN_PLACEHOLDER:
		return "the placeholder";
	case TOKEN_UNCHANGED:
		break;
	}
	return "nothing";
}

/* Adds to a sentence how long the run waited for the admin token file. */
static void say_wait(const struct flow *fl, char *sentence, size_t n)
{
	size_t len = strlen(sentence);

	if (fl->waited_ms > 0)
		snprintf(sentence + len, n - len,
			 " (waited %" PRId64 ".%01" PRId64 " s for the admin token file)",
			 fl->waited_ms / 1000, fl->waited_ms % 1000 / 100);
}

/* Ends the run (or its decision, when a clean-up follows): records the
 * outcome and logs the sentence at level, except a dry run's decision,
 * which main prints on stdout.  A failure's sentence becomes the reason; a
 * success keeps the decision already announced, if any. */
static void conclude(struct flow *fl, enum action a, int status, int level, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void conclude(struct flow *fl, enum action a, int status, int level, const char *fmt, ...)
{
	char sentence[sizeof(fl->out->reason)];
	va_list ap;

	fl->out->action = a;
	fl->out->exit_status = status;
	va_start(ap, fmt);
	vsnprintf(sentence, sizeof(sentence), fmt, ap);
	va_end(ap);
	say_wait(fl, sentence, sizeof(sentence));
	if (status != EX_OK || fl->out->reason[0] == '\0')
		memcpy(fl->out->reason, sentence, sizeof(sentence));
	if (!fl->o->dry_run || status != EX_OK)
		log_msg(level, "%s", sentence);
}

static enum step fail(struct flow *fl, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum step fail(struct flow *fl, int status, const char *fmt, ...)
{
	char sentence[sizeof(fl->out->reason)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sentence, sizeof(sentence), fmt, ap);
	va_end(ap);
	conclude(fl, ACTION_FAIL, status, LOG_ERR, "%s", sentence);
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
	say_wait(fl, fl->out->reason, sizeof(fl->out->reason));
	log_info("%s", fl->out->reason);
}

/* .runner stays: says why (for the last sentence) and, when the forge could
 * not confirm it, lists it as a candidate for a later clean-up, since the
 * runner module may replace it before the next boot. */
static void keep_runner(struct flow *fl, bool unverified, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void keep_runner(struct flow *fl, bool unverified, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fl->decision, sizeof(fl->decision), fmt, ap);
	va_end(ap);
	fl->kept = true;
	fl->out->action = ACTION_KEEP;
	if (unverified)
		state_supersede(&fl->state, fl->info.id, fl->info.uuid);
}

/* Waits until the admin token file holds a token, is unusable, or the
 * deadline passes.  Returns admin_token_read's result. */
static int wait_for_admin_token(struct flow *fl, const char **why)
{
	const struct options *o = fl->o;
	int64_t start = clock_now_ms();
	int r = 0;

	log_info("no admin token in %s yet; waiting up to --retry-timeout for it",
		 o->core_token_file);
	while (clock_now_ms() < fl->deadline) {
		int64_t left = fl->deadline - clock_now_ms();
		int64_t nap = left < ADMIN_TOKEN_POLL_MS ? left : ADMIN_TOKEN_POLL_MS;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = nap * 1000000};

		if (nap > 0)
			clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
		r = admin_token_read(o->core_token_file, &fl->admin, why);
		if (r < 0 || fl->admin.value)
			break;
	}
	fl->waited_ms = clock_now_ms() - start;
	return r;
}

static enum step step_admin_token(struct flow *fl)
{
	const struct options *o = fl->o;
	const char *why;
	int r;

	r = admin_token_read(o->core_token_file, &fl->admin, &why);
	if (r == 0 && !fl->admin.value && !o->dry_run)
		r = wait_for_admin_token(fl, &why);
	if (r < 0)
		return fail(fl, EX_CONFIG, "admin token file %s %s", o->core_token_file, why);
	if (!fl->admin.value)
		return STEP_RUNNER; /* the forge cannot be asked */
	if (fl->admin.world_readable)
		log_warning("admin token file %s is world-readable", o->core_token_file);
	if (o->ca_file && (r = forge_check_ca_file(o->ca_file)) < 0)
		return fail(fl, EX_NOINPUT, "--ca-file %s cannot be read: %s", o->ca_file,
			    strerror(-r));

	r = forge_new(&(struct forge_config){.url = o->forge_url,
					     .unix_socket = o->unix_socket,
					     .ca_file = o->ca_file,
					     .admin_token = fl->admin.value},
		      &fl->forge);
	admin_token_clear(&fl->admin); /* the forge client holds its own copy */
	if (r < 0)
		return fail(fl, EX_SOFTWARE, "cannot set up HTTP: %s", strerror(-r));
	return STEP_RUNNER;
}

static enum step step_runner(struct flow *fl)
{
	const struct options *o = fl->o;
	const char *path = o->runner_file;
	int r;

	r = container_open_runner(o->container_root, path, &fl->rf);
	if (r == -ENOSYS && fl->forge)
		return fail(fl, EX_OSERR,
			    "the kernel has no openat2(2): cannot resolve %s safely inside %s",
			    path, o->container_root);
	if (r == -ENOMEDIUM && fl->forge)
		return fail(fl, EX_IOERR, "/proc is not mounted: cannot read %s safely", path);
	if (r < 0 && fl->forge)
		return fail(fl, EX_IOERR, "cannot read %s inside %s: %s", path, o->container_root,
			    strerror(-r));
	if (fl->rf.state == RUNNER_READ) {
		r = runner_parse(fl->rf.data, fl->rf.len, &fl->info);
		container_drop_data(&fl->rf); /* the runner's own secret is not needed */
		if (r == 0) {
			fl->out->runner_id = fl->info.id;
			log_debug("%s holds runner %" PRId64, path, fl->info.id);
		}
	}

	if (!fl->forge) {
		/* Without an admin token nothing is deleted: whatever .runner
		 * holds is the module's to judge.  (Reading it was best effort.) */
		fl->out->action = ACTION_PLACEHOLDER;
		snprintf(fl->decision, sizeof(fl->decision),
			 o->dry_run ? "no admin token yet (forge still initialising; a run would "
				      "wait up to --retry-timeout for it)"
				    : "no admin token yet (forge still initialising)");
		state_supersede(&fl->state, fl->info.id, fl->info.uuid);
		return STEP_WRITE;
	}
	if (o->reregister) {
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
	if (fl->info.id == 0) {
		snprintf(fl->cause, sizeof(fl->cause), "%s is malformed (no runner id)", path);
		return STEP_DISCARD;
	}
	return STEP_LOOKUP;
}

/* A 200 lookup: the same runner, or another one that took its id. */
static enum step judge_runner(struct flow *fl, const struct forge_answer *a)
{
	int64_t id = fl->info.id;
	struct runner_info theirs;

	if (answer_runner(a, &theirs) < 0)
		theirs = (struct runner_info){0};
	switch (runner_compare(&fl->info, &theirs)) {
	case RUNNER_OTHER_UUID:
		snprintf(fl->cause, sizeof(fl->cause),
			 "runner %" PRId64 " on the forge is a different runner (uuid differs)",
			 id);
		return STEP_DISCARD;
	case RUNNER_OTHER_NAME:
		snprintf(fl->cause, sizeof(fl->cause),
			 "runner %" PRId64 " on the forge is a different runner (name differs)",
			 id);
		return STEP_DISCARD;
	case RUNNER_SAME_ID:
		log_debug("runner %" PRId64
			  ": no uuid or name on both sides to compare; judged by id",
			  id);
		break;
	case RUNNER_SAME_UUID:
	case RUNNER_SAME_NAME:
		break;
	}
	fl->confirmed = true;
	state_confirm(&fl->state, &fl->info);
	keep_runner(fl, false, "runner %" PRId64 " still registered", id);
	return fl->o->placeholder_on_keep ? STEP_WRITE : STEP_FETCH;
}

static enum step step_lookup(struct flow *fl)
{
	int64_t id = fl->info.id;
	char path[64];
	struct forge_answer a;
	enum verdict v = VERDICT_NO_ROUTE;

	for (size_t i = 0; i < sizeof(lookup_routes) / sizeof(lookup_routes[0]); i++) {
		snprintf(path, sizeof(path), "%s%" PRId64, lookup_routes[i], id);
		v = forge_ask(fl->forge, "GET", path, ROUTE_LOOKUP, fl->deadline, &a);
		fl->lookup_route = i;
		if (v != VERDICT_NO_ROUTE)
			break;
	}

	switch (v) {
	case VERDICT_OK:
		return judge_runner(fl, &a);
	case VERDICT_GONE:
		snprintf(fl->cause, sizeof(fl->cause),
			 "runner %" PRId64 " is gone from the forge (404)", id);
		return STEP_DISCARD;
	case VERDICT_NO_ROUTE:
		/* Forgejo 11 to 14: only a changed registration token can tell
		 * that the forge was reset or wiped since the runner registered. */
		fl->check_token = true;
		keep_runner(fl, true, "forge has no runner lookup API");
		return STEP_FETCH;
	case VERDICT_NO_ANSWER:
		keep_runner(fl, true, "forge did not answer (%s)", a.error);
		return STEP_WRITE;
	case VERDICT_TRANSIENT:
		keep_runner(fl, true, "forge still answered %ld at --retry-timeout", a.status);
		return STEP_WRITE;
	case VERDICT_AUTH_REJECTED:
		return fail(fl, EX_NOPERM, "forge rejected the admin token (%ld); keeping .runner",
			    a.status);
	case VERDICT_TLS_FAILED:
		return fail(fl, EX_UNAVAILABLE, "TLS with the forge failed: %s; keeping .runner",
			    a.error);
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

	fl->kept = false;
	fl->confirmed = false;
	fl->out->action = ACTION_REREGISTER;
	memcpy(fl->decision, fl->cause, sizeof(fl->decision));
	if (fl->o->dry_run)
		return STEP_FETCH;
	r = container_remove_runner(&fl->rf);
	if (r < 0)
		return fail(fl, EX_IOERR, "%s, but it cannot be deleted: %s", fl->cause,
			    strerror(-r));
	/* The runner it named may live on at the forge as a ghost. */
	state_supersede(&fl->state, fl->info.id, fl->info.uuid);
	announce(fl, "%s: re-registering", fl->cause);
	log_debug("deleted %s", fl->o->runner_file);
	return fl->token ? STEP_WRITE : STEP_FETCH;
}

/* No token from the forge: a kept .runner still works, so the run goes on
 * with the remembered token; a registration cannot, so the run fails. */
static enum step no_token(struct flow *fl, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum step no_token(struct flow *fl, int status, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (!fl->kept)
		return fail(fl, status, "%s", why);
	log_warning("%s", why);
	return STEP_WRITE;
}

static enum step step_fetch(struct flow *fl)
{
	struct forge_answer a;
	enum verdict v = VERDICT_NO_ROUTE;

	if (fl->o->dry_run) {
		fl->would_fetch = true; /* a dry run fetches nothing */
		return STEP_WRITE;
	}
	if (fl->out->action != ACTION_KEEP && fl->out->action != ACTION_REREGISTER) {
		fl->out->action = ACTION_REGISTER;
		announce(fl, "no .runner: registering");
	}

	fl->deadline = clock_now_ms() + fl->o->retry_timeout_ms;
	for (size_t i = 0; i < sizeof(token_routes) / sizeof(token_routes[0]); i++) {
		v = forge_ask(fl->forge, token_routes[i].method, token_routes[i].path, ROUTE_TOKEN,
			      fl->deadline, &a);
		if (v != VERDICT_NO_ROUTE)
			break;
	}

	if (answer_is_retryable(v, ROUTE_TOKEN)) /* so the deadline passed */
		return no_token(fl, EX_TEMPFAIL,
				"no registration token within --retry-timeout (last answer: %s)",
				a.status ? verdict_name(v) : a.error);
	switch (v) {
	case VERDICT_OK:
		break;
	case VERDICT_NO_ROUTE:
		return no_token(
		    fl, EX_PROTOCOL, "forge has none of %s /api/v1%s, %s /api/v1%s, %s /api/v1%s",
		    token_routes[0].method, token_routes[0].path, token_routes[1].method,
		    token_routes[1].path, token_routes[2].method, token_routes[2].path);
	case VERDICT_AUTH_REJECTED:
		return fail(fl, EX_NOPERM, "forge rejected the admin token (%ld)%s", a.status,
			    fl->kept ? "; keeping .runner" : "");
	case VERDICT_TLS_FAILED:
		return fail(fl, EX_UNAVAILABLE, "TLS with the forge failed: %s%s", a.error,
			    fl->kept ? "; keeping .runner" : "");
	default:
		return no_token(fl, EX_PROTOCOL,
				"forge answered %ld to the registration-token request", a.status);
	}
	if (answer_token(&a, &fl->token) < 0)
		return no_token(fl, EX_PROTOCOL,
				"forge's answer is not a valid registration token");

	if (fl->check_token && fl->state.token && strcmp(fl->state.token, fl->token) != 0) {
		snprintf(fl->cause, sizeof(fl->cause),
			 "registration token changed and the forge cannot look runners up");
		return STEP_DISCARD;
	}
	return STEP_WRITE;
}

/* What the output will hold. */
static enum token_source choose_token(const struct flow *fl)
{
	if (fl->confirmed && fl->o->placeholder_on_keep)
		return TOKEN_PLACEHOLDER;
	if (fl->token || fl->would_fetch)
		return TOKEN_CURRENT; /* a dry run assumes the forge would give one */
	if (fl->state.token)
		return TOKEN_REMEMBERED;
	return TOKEN_PLACEHOLDER;
}

static enum step step_write(struct flow *fl)
{
	const struct options *o = fl->o;
	enum token_source t = choose_token(fl);
	const char *token = t == TOKEN_CURRENT	    ? fl->token
			    : t == TOKEN_REMEMBERED ? fl->state.token
						    : NULL;
	bool unverified = fl->kept && !fl->confirmed;
	const char *what = fl->decision[0] ? fl->decision : "no .runner";
	const char *runner =
	    fl->kept ? (unverified ? "; keeping .runner unverified" : "; keeping .runner")
	    : fl->out->action == ACTION_REREGISTER ? "; deleted .runner"
						   : "";
	enum step next = fl->confirmed && o->cleanup ? STEP_CLEANUP : STEP_DONE;
	int level = unverified ? LOG_WARNING : LOG_INFO;
	int r;

	if (!fl->forge) /* worth a warning only once a wait was in vain */
		level = fl->waited_ms > 0 ? LOG_WARNING : LOG_INFO;
	fl->out->token = t;
	if (o->dry_run) {
		conclude(fl, fl->out->action, EX_OK, level, "%s: would %swrite %s", what,
			 fl->kept				? "keep .runner and "
			 : fl->out->action == ACTION_REREGISTER ? "delete .runner and "
								: "",
			 token_words(t));
		return next;
	}
	r = output_write(o->output, token, o->token_format);
	if (r < 0) {
		fl->out->token = TOKEN_UNCHANGED;
		return fail(fl, EX_CANTCREAT, "cannot write %s: %s", o->output, strerror(-r));
	}
	if (t == TOKEN_CURRENT && state_remember_token(&fl->state, token) < 0)
		log_warning("cannot remember the registration token: out of memory");
	conclude(fl, fl->out->action, EX_OK, level, "%s%s; wrote %s to %s", what, runner,
		 token_words(t), o->output);
	return next;
}

/* Superseded runners of this host: each is deleted only when the forge
 * shows it with our uuid and offline, so a runner that is in use, or an id
 * the forge gave to another runner since, is never touched.  One attempt
 * per request, in a bounded share of --retry-timeout; any failure is one
 * warning and leaves the list for a later boot. */
static enum step step_cleanup(struct flow *fl)
{
	struct state *s = &fl->state;
	int64_t share = fl->o->retry_timeout_ms / CLEANUP_SHARE;
	int64_t deadline = clock_now_ms() + (share > CLEANUP_MIN_MS ? share : CLEANUP_MIN_MS);
	char path[64];
	size_t i = 0;

	while (i < s->n_superseded) {
		const struct state_runner *e = &s->superseded[i];
		int64_t id = e->id;
		struct runner_info theirs;
		struct forge_answer a;
		enum verdict v;

		if (clock_now_ms() >= deadline) {
			log_warning(
			    "clean-up of superseded runners ran out of time; next boot goes on");
			break;
		}
		snprintf(path, sizeof(path), "%s%" PRId64, lookup_routes[fl->lookup_route], id);
		v = forge_ask(fl->forge, "GET", path, ROUTE_CLEANUP, deadline, &a);
		if (v == VERDICT_GONE) {
			log_debug("superseded runner %" PRId64 " is gone from the forge already",
				  id);
			state_forget(s, i);
			continue;
		}
		if (v != VERDICT_OK) {
			log_warning("cannot look up superseded runner %" PRId64
				    " (%s); next boot tries again",
				    id, a.status ? verdict_name(v) : a.error);
			break;
		}
		if (answer_runner(&a, &theirs) < 0 || theirs.uuid_field == FIELD_ABSENT) {
			log_debug("superseded runner %" PRId64 ": the forge shows no uuid, so it "
				  "cannot be proven ours; never deleted, forgotten",
				  id);
			state_forget(s, i);
			continue;
		}
		if (theirs.uuid_field != FIELD_SET || strcmp(theirs.uuid, e->uuid) != 0) {
			log_debug(
			    "runner %" PRId64 " on the forge is another runner now; forgotten", id);
			state_forget(s, i);
			continue;
		}
		if (strcmp(theirs.status, "offline") != 0) {
			log_warning("superseded runner %" PRId64
				    " is %s, not offline: something uses "
				    "its credentials; not deleting it",
				    id, theirs.status[0] ? theirs.status : "of unknown status");
			i++;
			continue;
		}
		if (fl->o->dry_run) {
			log_info("would delete superseded runner %" PRId64 " from the forge", id);
			fl->out->deleted[fl->out->n_deleted++] = id;
			i++;
			continue;
		}
		snprintf(path, sizeof(path), DELETE_ROUTE "%" PRId64, id);
		v = forge_ask(fl->forge, "DELETE", path, ROUTE_CLEANUP, deadline, &a);
		if (v == VERDICT_NO_ROUTE) {
			log_debug("forge has no DELETE /api/v1" DELETE_ROUTE "{id}; no clean-up");
			break;
		}
		if (v != VERDICT_OK && v != VERDICT_GONE) {
			log_warning("cannot delete superseded runner %" PRId64
				    " (%s); next boot tries again",
				    id, a.status ? verdict_name(v) : a.error);
			break;
		}
		if (v == VERDICT_OK) {
			log_info("deleted superseded runner %" PRId64 " from the forge", id);
			fl->out->deleted[fl->out->n_deleted++] = id;
		}
		state_forget(s, i);
	}
	return STEP_DONE;
}

static enum step (*const steps[])(struct flow *) = {
    [STEP_ADMIN_TOKEN] = step_admin_token, [STEP_RUNNER] = step_runner, [STEP_LOOKUP] = step_lookup,
    [STEP_DISCARD] = step_discard,	   [STEP_FETCH] = step_fetch,	[STEP_WRITE] = step_write,
    [STEP_CLEANUP] = step_cleanup,
};

/* After a failure: a missing output gets the remembered token or the
 * placeholder; an existing one is left as it was. */
static void ensure_output(struct flow *fl)
{
	const struct options *o = fl->o;
	const char *token = fl->state.token;
	int r;

	fl->out->token = TOKEN_UNCHANGED;
	if (o->dry_run)
		return;
	enum token_source t = token ? TOKEN_REMEMBERED : TOKEN_PLACEHOLDER;

	r = output_ensure(o->output, token, o->token_format);
	if (r > 0)
		fl->out->token = t;
	/* When the output itself could not be written, that was said already:
	 * one failure, one line. */
	if (r < 0 && fl->out->exit_status != EX_CANTCREAT)
		log_error("cannot write %s to %s either: %s", token_words(t), o->output,
			  strerror(-r));
}

static void load_state(struct flow *fl)
{
	const char *why;

	if (fl->o->state_file && state_load(fl->o->state_file, &fl->state, &why) < 0)
		log_warning("state file %s %s; ignoring it", fl->o->state_file, why);
}

static void save_state(struct flow *fl)
{
	int r;

	if (!fl->o->state_file || fl->o->dry_run)
		return;
	r = state_save(fl->o->state_file, &fl->state);
	if (r < 0)
		log_warning("cannot write state file %s: %s", fl->o->state_file, strerror(-r));
	else if (r > 0)
		log_debug("state file %s updated", fl->o->state_file);
}

void flow_run(const struct options *o, struct outcome *out)
{
	struct flow fl = {.o = o, .out = out, .rf = {.dir_fd = -1}};
	enum step s = STEP_ADMIN_TOKEN;

	*out = (struct outcome){.action = ACTION_FAIL, .exit_status = EX_SOFTWARE};
	/* The admin token's wait and the lookup share one --retry-timeout;
	 * the registration token has its own (see step_fetch). */
	fl.deadline = clock_now_ms() + o->retry_timeout_ms;
	load_state(&fl);
	while (s != STEP_DONE)
		s = steps[s](&fl);

	if (out->exit_status != EX_OK)
		ensure_output(&fl);
	save_state(&fl);

	admin_token_clear(&fl.admin);
	erase_and_freep(&fl.token);
	forge_free(fl.forge);
	container_close_runner(&fl.rf);
	state_clear(&fl.state);
}
