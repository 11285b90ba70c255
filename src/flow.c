/* The boot flow's driver.  It reads the world (the state file, the admin
 * token file, .runner), then asks decide() what to do next and does it, one
 * step at a time, until decide() says it is done: every rule is in
 * decide.c, every sentence in reason.c, and what is here is I/O and its
 * order.
 *
 * The output always holds the forge's current registration token when it
 * gives one, so its bytes stay the same from boot to boot while all is well:
 * the runner module re-registers whenever they change.  On a failure after
 * the command line was understood, an existing output is left as it was and
 * a missing one gets the remembered token or the placeholder, so the
 * container's bind mount always has a source. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "answer.h"
#include "atomic.h"
#include "cleanup.h"
#include "clock.h"
#include "container.h"
#include "decide.h"
#include "flow.h"
#include "forge.h"
#include "forge_api.h"
#include "ghosts.h"
#include "log.h"
#include "output.h"
#include "reason.h"
#include "runner.h"
#include "secret.h"
#include "state.h"

#define ADMIN_TOKEN_POLL_MS   50   /* a token file that appears is noticed within this */
#define ADMIN_TOKEN_SETTLE_MS 2000 /* a rejected token file this young may still be written */
#define CLEANUP_SHARE	      4	   /* the clean-up may spend 1/4 of --retry-timeout */

struct flow {
	const struct options *o;
	struct outcome *out;
	struct facts facts;	   /* what decide() is asked about */
	struct reason_context say; /* what the sentences name */
	struct admin_token admin;
	struct forge *forge; /* NULL: no admin token, the forge cannot be asked */
	struct runner_file rf;
	struct runner_info info;	/* from .runner; id 0: none */
	struct state state;		/* what the host remembers */
	struct atomic_lock state_lock;	/* held from reading the state to writing it */
	char *token;			/* the forge's registration token, once fetched; wiped */
	enum fate recorded;		/* the fate the state was told of */
	enum lookup_route lookup_route; /* the lookup route the forge answered on */
	int64_t deadline;		/* the admin token's wait and the lookup share it */
	bool announced;			/* the decision was said before its steps ran */
	char forge_name[RUNNER_NAME_MAX + 1]; /* the forge's name for the runner; "": none */
	char lookup_error[256];
	char fetch_error[256];
};

/* The run stops: says why, once. */
static void stop(struct flow *fl, const struct decision *d)
{
	fl->out->action = ACTION_FAIL;
	fl->out->failure = d->failure;
	fl->out->token = TOKEN_UNCHANGED;
	reason_conclude(fl->out->reason, sizeof(fl->out->reason), d, &fl->say);
	log_error("%s", fl->out->reason);
}

/* An I/O failure of the driver's own (error: its errno). */
static int fail(struct flow *fl, enum fate fate, enum failure failure, enum reason reason,
		int error)
{
	struct decision d = {.fate = fate, .failure = failure, .reason = reason};

	fl->say.error = error;
	stop(fl, &d);
	return -1;
}

/* Says the decision while its steps are under way (a dry run says it only
 * at the end).  The run's reason stays this sentence. */
static void announce(struct flow *fl, const struct decision *d)
{
	reason_announce(fl->out->reason, sizeof(fl->out->reason), d, &fl->say);
	log_info("%s", fl->out->reason);
	fl->announced = true;
}

/* The run is done as intended: says so, as a warning where it is one. */
static void conclude(struct flow *fl, const struct decision *d)
{
	char sentence[sizeof(fl->out->reason)];

	fl->out->action = d->action;
	fl->out->token = d->output;
	reason_conclude(sentence, sizeof(sentence), d, &fl->say);
	if (!fl->announced)
		memcpy(fl->out->reason, sentence, sizeof(sentence));
	if (!fl->o->dry_run) /* main prints a dry run's sentence */
		log_msg(d->worth_a_warning ? LOG_WARNING : LOG_INFO, "%s", sentence);
}

/* Tells the state what became of .runner: a confirmed runner is this
 * host's; one that stays unverified or goes may live on at the forge as a
 * ghost, since the runner module may replace it before the next boot. */
static void record_fate(struct flow *fl, const struct decision *d)
{
	if (d->next == STEP_LOOKUP || d->fate == fl->recorded)
		return;
	fl->recorded = d->fate;
	if (d->fate == FATE_CONFIRMED)
		state_confirm(&fl->state, &fl->info);
	else if (d->fate != FATE_ABSENT)
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

		sleep_ms(left < ADMIN_TOKEN_POLL_MS ? left : ADMIN_TOKEN_POLL_MS);
		r = admin_token_read(o->core_token_file, &fl->admin, why);
		if (r < 0 || fl->admin.value)
			break;
	}
	fl->say.waited_ms = clock_now_ms() - start;
	return r;
}

/* Takes the state file's lock (not in a dry run, which writes nothing) and
 * reads it.  A lock another run holds for --retry-timeout stops the run; a
 * lock that cannot be had otherwise, like a state file that cannot be read,
 * is a warning, and the run remembers nothing. */
static int load_state(struct flow *fl)
{
	const char *path = fl->o->state_file, *why;
	int r;

	if (!path)
		return 0;
	if (!fl->o->dry_run) {
		r = state_lock(&fl->state_lock, path, clock_now_ms() + fl->o->retry_timeout_ms);
		if (r == -EWOULDBLOCK)
			return fail(fl, FATE_ABSENT, FAILURE_OUTPUT, REASON_STATE_LOCKED, -r);
		if (r < 0) {
			log_warning(
			    "cannot lock state file %s: %s; remembering nothing in this run", path,
			    r == -ENOLCK ? "its lock file is not ours alone" : strerror(-r));
			return 0;
		}
	}
	if (state_load(path, &fl->state, &why) < 0)
		log_warning("state file %s %s; ignoring it", path, why);
	return 0;
}

/* Writes the state, where its lock is held. */
static void save_state(struct flow *fl)
{
	int r;

	if (fl->state_lock.fd < 0)
		return;
	r = state_save(&fl->state_lock, &fl->state);
	if (r < 0)
		log_warning("cannot write state file %s: %s", fl->o->state_file, strerror(-r));
	else if (r > 0)
		log_debug("state file %s updated", fl->o->state_file);
}

/* Reads the admin token (waiting for it) and sets the forge client up.
 * No token is no failure: the forge cannot be asked yet. */
static int read_admin_token(struct flow *fl)
{
	const struct options *o = fl->o;
	int r;

	r = admin_token_read(o->core_token_file, &fl->admin, &fl->say.admin_token_why);
	/* A dry run waits for nothing; --reregister refuses at once. */
	if (r == 0 && !fl->admin.value && !o->dry_run && !o->reregister)
		r = wait_for_admin_token(fl, &fl->say.admin_token_why);
	if (r < 0)
		return fail(fl, FATE_ABSENT, FAILURE_ADMIN_TOKEN, REASON_ADMIN_TOKEN_UNUSABLE, -r);
	if (!fl->admin.value) {
		fl->facts.waited = fl->say.waited_ms > 0;
		return 0;
	}
	if (fl->admin.world_readable)
		log_warning("admin token file %s is world-readable", o->core_token_file);
	if (!o->forge_user && !o->unix_socket && o->forge_loopback && !o->forge_https &&
	    o->verbosity > 0)
		log_warning(
		    "plain http to a loopback port, and no --forge-user: whatever holds the "
		    "forge's port (a CI job, while the forge restarts) gets the admin token");
	if (o->ca_file && (r = forge_check_ca_file(o->ca_file)) < 0)
		return fail(fl, FATE_ABSENT, FAILURE_CA_FILE, REASON_CA_FILE, -r);

	r = forge_new(&(struct forge_config){.url = o->forge_url,
					     .unix_socket = o->unix_socket,
					     .ca_file = o->ca_file,
					     .admin_token = fl->admin.value,
					     .peer_user = o->forge_user,
					     .peer_uid = o->forge_uid},
		      &fl->forge);
	admin_token_clear(&fl->admin); /* the forge client holds its own copy */
	if (r < 0)
		return fail(fl, FATE_ABSENT, FAILURE_SETUP, REASON_SETUP, -r);
	fl->facts.admin = true;
	return 0;
}

/* After the forge rejected the admin token: a file that the forge's set-up
 * may still be writing (it changed since it was read, or is younger than
 * ADMIN_TOKEN_SETTLE_MS) is watched until it changes, settles or the
 * deadline passes, and read again.  Returns true when the client now holds
 * what the file holds, and the request is worth making once more. */
static bool reread_admin_token(struct flow *fl, int64_t deadline)
{
	const char *path = fl->o->core_token_file, *why;

	for (;;) {
		struct timespec now;
		struct stat st;
		int64_t age_ms;
		int r;

		if (lstat(path, &st) < 0)
			return false;
		if (admin_token_changed(&fl->admin.st, &st)) {
			r = admin_token_read(path, &fl->admin, &why);
			if (r == 0 && fl->admin.value)
				r = forge_set_admin_token(fl->forge, fl->admin.value);
			else if (r == 0)
				r = -ENODATA;
			admin_token_clear(&fl->admin);
			if (r == 0)
				log_info("admin token file %s changed; asking again", path);
			return r == 0;
		}
		clock_gettime(CLOCK_REALTIME, &now);
		age_ms = (int64_t)(now.tv_sec - st.st_mtim.tv_sec) * 1000 +
			 (now.tv_nsec - st.st_mtim.tv_nsec) / 1000000;
		if (age_ms >= ADMIN_TOKEN_SETTLE_MS || clock_now_ms() >= deadline)
			return false;
		sleep_ms(ADMIN_TOKEN_POLL_MS);
	}
}

/* What .runner holds, as far as can be told without the runner's secret. */
static enum held read_runner(struct flow *fl)
{
	const char *path = fl->o->runner_file;
	int r = container_open_runner(fl->o->container_root, path, &fl->rf,
				      clock_now_ms() + fl->o->retry_timeout_ms);

	fl->say.error = -r;
	switch (r) {
	case 0:
		break;
	case -ENOSYS:
		return HELD_NO_OPENAT2;
	case -ENOMEDIUM:
		return HELD_NO_PROC;
	default:
		return HELD_UNREADABLE;
	}
	switch (fl->rf.state) {
	case RUNNER_ABSENT:
		if (fl->forge && !fl->o->reregister)
			log_debug("%s does not exist in the container", path);
		return HELD_NOTHING;
	case RUNNER_NOT_REGULAR:
		return HELD_NOT_REGULAR;
	case RUNNER_TOO_LARGE:
		return HELD_TOO_LARGE;
	case RUNNER_READ:
		break;
	}
	r = runner_parse(fl->rf.data, fl->rf.len, &fl->info);
	container_drop_data(&fl->rf); /* the runner's own secret is not needed */
	if (r < 0)
		return HELD_MALFORMED;
	fl->out->runner_id = fl->say.id = fl->info.id;
	log_debug("%s holds runner %" PRId64, path, fl->info.id);
	return HELD_RUNNER;
}

static void lookup(struct flow *fl)
{
	struct runner_info theirs;
	int64_t deadline = forge_deadline(fl->deadline);
	struct forge_answer a;
	enum verdict v;

	do
		v = forge_lookup(fl->forge, fl->info.id, deadline, &a, &fl->lookup_route);
	while (v == VERDICT_AUTH_REJECTED && reread_admin_token(fl, deadline));
	fl->facts.looked_up = true;
	fl->facts.lookup = v;
	fl->say.lookup_status = a.status;
	fl->say.lookup_auth = answer_auth_problem(&a);
	fl->say.lookup_error = fl->lookup_error;
	snprintf(fl->lookup_error, sizeof(fl->lookup_error), "%s", a.error);
	if (v != VERDICT_OK)
		return;
	fl->facts.runner_object = answer_runner(&a, fl->info.id, &theirs) == 0;
	if (!fl->facts.runner_object)
		return;
	fl->facts.match = runner_compare(&fl->info, &theirs);
	if (theirs.name_field == FIELD_SET)
		memcpy(fl->forge_name, theirs.name, sizeof(fl->forge_name));
	if (fl->facts.match == RUNNER_SAME_ID)
		log_debug("runner %" PRId64
			  ": no uuid or name on both sides to compare; judged by id",
			  fl->info.id);
}

static int discard(struct flow *fl, const struct decision *d)
{
	int r;

	fl->facts.discarded = true;
	if (fl->o->dry_run)
		return 0;
	save_state(fl); /* the runner it names is listed before its credentials go */
	r = container_remove_runner(&fl->rf);
	if (r < 0) {
		fl->say.cause = d->reason;
		return fail(fl, d->fate, FAILURE_RUNNER_IO, REASON_CANNOT_DELETE, -r);
	}
	announce(fl, d);
	log_debug("deleted %s", fl->o->runner_file);
	return 0;
}

static void fetch(struct flow *fl, const struct decision *d)
{
	struct forge_answer a;
	int64_t deadline;
	enum verdict v;

	if (d->fate == FATE_ABSENT)
		announce(fl, d);
	deadline = forge_deadline(clock_now_ms() + fl->o->retry_timeout_ms);
	do
		v = forge_registration_token(fl->forge, deadline, &a);
	while (v == VERDICT_AUTH_REJECTED && reread_admin_token(fl, deadline));
	fl->facts.fetched = true;
	fl->facts.fetch = v;
	fl->say.fetch_status = a.status;
	fl->say.fetch_auth = answer_auth_problem(&a);
	fl->say.fetch_verdict = v;
	fl->say.fetch_error = fl->fetch_error;
	snprintf(fl->fetch_error, sizeof(fl->fetch_error), "%s", a.error);
	if (v == VERDICT_OK && answer_token(&a, &fl->token) == 0) {
		fl->facts.token_valid = true;
		fl->facts.token_changed =
		    fl->state.token && strcmp(fl->state.token, fl->token) != 0;
	}
}

/* The token the output is to hold (NULL: the placeholder). */
static const char *output_token(const struct flow *fl, enum token_source t)
{
	switch (t) {
	case TOKEN_CURRENT:
		return fl->token;
	case TOKEN_REMEMBERED:
		return fl->state.token;
	case TOKEN_PLACEHOLDER:
	case TOKEN_UNCHANGED:
		break;
	}
	return NULL;
}

static int write_output(struct flow *fl, const struct decision *d)
{
	char why[256]; /* a cause is cut at 255 bytes */
	int r;

	fl->facts.written = true;
	if (d->warning != REASON_NONE)
		log_warning("%s", reason_say(why, sizeof(why), d->warning, d, &fl->say));
	if (!fl->o->dry_run) {
		r = output_write(fl->o->output, output_token(fl, d->output), fl->o->token_format,
				 clock_now_ms() + fl->o->retry_timeout_ms);
		if (r < 0)
			return fail(fl, d->fate, FAILURE_OUTPUT, REASON_OUTPUT, -r);
		if (d->output == TOKEN_CURRENT && state_remember_token(&fl->state, fl->token) < 0)
			log_warning("cannot remember the registration token: out of memory");
	}
	conclude(fl, d);
	return 0;
}

static void cleanup(struct flow *fl)
{
	int64_t deadline = forge_deadline(clock_now_ms() + fl->o->retry_timeout_ms / CLEANUP_SHARE);

	fl->facts.cleaned = true;
	ghosts_clean(fl->forge, fl->lookup_route, &fl->state, fl->forge_name, deadline,
		     fl->o->dry_run, fl->out->deleted, &fl->out->n_deleted);
}

static void drive(struct flow *fl)
{
	for (;;) {
		struct decision d = decide(&fl->facts);

		if (d.failure != FAILURE_NONE) {
			stop(fl, &d);
			return;
		}
		record_fate(fl, &d);
		switch (d.next) {
		case STEP_LOOKUP:
			lookup(fl);
			break;
		case STEP_DISCARD:
			if (discard(fl, &d) < 0)
				return;
			break;
		case STEP_FETCH:
			fetch(fl, &d);
			break;
		case STEP_WRITE:
			if (write_output(fl, &d) < 0)
				return;
			break;
		case STEP_CLEANUP:
			cleanup(fl);
			break;
		case STEP_DONE:
			return;
		}
	}
}

/* After a failure: a missing output gets the remembered token or the
 * placeholder; an existing one is left as it was. */
static void ensure_output(struct flow *fl)
{
	const struct options *o = fl->o;
	enum token_source t = fl->state.token ? TOKEN_REMEMBERED : TOKEN_PLACEHOLDER;
	int r;

	if (o->dry_run)
		return;
	r = output_ensure(o->output, fl->state.token, o->token_format,
			  clock_now_ms() + o->retry_timeout_ms);
	if (r > 0)
		fl->out->token = t;
	/* When the output itself could not be written, that was said already:
	 * one failure, one line. */
	if (r < 0 && fl->out->failure != FAILURE_OUTPUT)
		log_error("cannot write %s to %s either: %s", reason_token_words(t), o->output,
			  strerror(-r));
}

void flow_run(const struct options *o, struct outcome *out)
{
	struct flow fl = {
	    .o = o,
	    .out = out,
	    .rf = {.dir_fd = -1},
	    .state_lock = {.dir_fd = -1, .fd = -1},
	    .facts = {.reregister = o->reregister,
		      .placeholder_on_keep = o->placeholder_on_keep,
		      .dry_run = o->dry_run,
		      .cleanup = o->cleanup},
	    .say = {.runner_file = o->runner_file,
		    .container_root = o->container_root,
		    .output = o->output,
		    .state_file = o->state_file,
		    .admin_token_file = o->core_token_file,
		    .ca_file = o->ca_file,
		    .token_routes = forge_token_routes(),
		    .dry_run = o->dry_run},
	    /* The admin token's wait and the lookup share one --retry-timeout;
	     * the registration token has its own (see fetch). */
	    .deadline = clock_now_ms() + o->retry_timeout_ms,
	};

	*out = (struct outcome){.action = ACTION_FAIL, .token = TOKEN_UNCHANGED};
	if (load_state(&fl) == 0 && read_admin_token(&fl) == 0) {
		fl.facts.remembered = fl.state.token != NULL;
		fl.facts.held = read_runner(&fl);
		drive(&fl);
	}

	if (out->failure != FAILURE_NONE)
		ensure_output(&fl);
	save_state(&fl);
	atomic_unlock(&fl.state_lock);

	admin_token_clear(&fl.admin);
	erase_and_freep(&fl.token);
	forge_free(fl.forge);
	container_close_runner(&fl.rf);
	state_clear(&fl.state);
}
