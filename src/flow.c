/* The boot flow's driver.  It reads the world (the state file, the admin
 * token file, .runner), then asks decide() what to do next and does it, one
 * step at a time, until decide() says it is done: every rule is in
 * decide.c, every sentence in reason.c, and what is here is I/O and its
 * order.
 *
 * In container registration the output always holds the forge's current
 * registration token when it gives one, so its bytes stay the same from boot
 * to boot while all is well: the runner module re-registers whenever they
 * change.  On a failure after the command line was understood, an existing
 * output is left as it was and a missing one gets the remembered token or
 * the placeholder, so the container's bind mount always has a source.  In
 * host registration the tool registers the runner and writes .runner
 * itself, and the output holds the placeholder, whatever happens. */
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
#include "runnerproto.h"
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
	struct runner_creds creds;	/* host registration: .runner's secret and more; wiped */
	struct proto_runner registered; /* ... the runner registered in this run; wiped */
	char *token;			/* the forge's registration token, once fetched; wiped */
	enum fate recorded;		/* the fate the state was told of */
	enum lookup_route lookup_route; /* the lookup route the forge answered on */
	int64_t deadline;		/* the admin token's wait and the lookup share it */
	bool announced;			/* the decision was said before its steps ran */
	char forge_name[RUNNER_NAME_MAX + 1]; /* the forge's name for the runner; "": none */
	char lookup_error[256];
	char last_error[256];
	char last_message[200];
};

/* What the last request's answer says, for a failure it may end in. */
static void heard(struct flow *fl, const struct forge_answer *a, enum verdict v)
{
	fl->say.last_status = a->status;
	fl->say.last_verdict = v;
	fl->say.last_auth = answer_auth_problem(a);
	snprintf(fl->last_error, sizeof(fl->last_error), "%s", a->error);
	fl->say.last_error = fl->last_error;
	fl->say.last_message = answer_message(a, fl->last_message, sizeof(fl->last_message));
	/* A forge's message is shown, but never one that repeats a secret sent. */
	if ((fl->token && strstr(fl->last_message, fl->token)) ||
	    (fl->creds.token[0] && strstr(fl->last_message, fl->creds.token)))
		snprintf(fl->last_message, sizeof(fl->last_message), "a message not shown");
}

/* Whether the forge answered on the route asked (whatever it said): the
 * route to ask first on the next boot. */
static bool route_answered(enum verdict v)
{
	return v != VERDICT_NO_ROUTE && v != VERDICT_NO_ANSWER && v != VERDICT_WRONG_PEER &&
	       v != VERDICT_TLS_FAILED;
}

/* A route the state remembers, as an index below n (n: none). */
static int remembered_route(int route, int n)
{
	return route >= 0 && route < n ? route : n;
}

/* The runner in .runner is the one this tool wrote: its own token may be
 * kept in the state, to prove it ours once superseded. */
static const char *own_token(const struct flow *fl)
{
	const struct state_runner *w = &fl->state.written;

	if (!fl->o->host_registration || fl->creds.token_field != FIELD_SET || !w->id ||
	    w->id != fl->info.id || fl->info.uuid_field != FIELD_SET ||
	    strcmp(w->uuid, fl->info.uuid) != 0)
		return NULL;
	return fl->creds.token;
}

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
	if (d->next == STEP_LOOKUP || d->next == STEP_DECLARE || d->fate == fl->recorded)
		return;
	fl->recorded = d->fate;
	if (d->fate == FATE_CONFIRMED)
		state_confirm(&fl->state, &fl->info);
	else if (d->fate != FATE_ABSENT)
		state_supersede(&fl->state, fl->info.id, fl->info.uuid, own_token(fl));
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

/* Host registration: .runner's own credentials, and whether its labels
 * and address are the ones it should have. */
static void read_creds(struct flow *fl)
{
	const struct options *o = fl->o;
	char want[RUNNER_LABELS_TEXT];
	size_t used = 0;

	runner_parse_creds(fl->rf.data, fl->rf.len, &fl->creds);
	fl->facts.creds = fl->info.uuid_field == FIELD_SET && fl->creds.token_field == FIELD_SET;
	want[0] = '\0';
	for (size_t i = 0; i < o->n_labels; i++)
		used += (size_t)snprintf(want + used, sizeof(want) - used, "%s%s", i ? "," : "",
					 o->labels[i]);
	fl->facts.differs = !fl->creds.labels_ok || strcmp(fl->creds.labels, want) != 0 ||
			    fl->creds.address_field != FIELD_SET ||
			    strcmp(fl->creds.address, o->runner_address) != 0;
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
	if (r == 0 && fl->o->host_registration)
		read_creds(fl);
	container_drop_data(&fl->rf); /* the runner's own secret is taken, or not needed */
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
	fl->say.lookup_error = fl->lookup_error;
	snprintf(fl->lookup_error, sizeof(fl->lookup_error), "%s", a.error);
	heard(fl, &a, v);
	if (route_answered(v))
		fl->state.lookup_route = (int)fl->lookup_route;
	if (v != VERDICT_OK)
		return;
	fl->facts.runner_object = answer_runner(&a, fl->info.id, &theirs) == 0;
	if (!fl->facts.runner_object)
		return;
	fl->facts.forge_uuid = theirs.uuid_field != FIELD_ABSENT;
	fl->state.no_uuids = !fl->facts.forge_uuid;
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
	enum token_route route =
	    (enum token_route)remembered_route(fl->state.token_route, TOKEN_ROUTES);
	int64_t deadline = forge_deadline(clock_now_ms() + fl->o->retry_timeout_ms);
	struct forge_answer a;
	enum verdict v;

	if (d->fate == FATE_ABSENT)
		announce(fl, d);

	do
		v = forge_registration_token(fl->forge, deadline, &a, &route);
	while (v == VERDICT_AUTH_REJECTED && reread_admin_token(fl, deadline));
	if (route_answered(v))
		fl->state.token_route = (int)route;
	fl->facts.fetched = true;
	fl->facts.fetch = v;
	heard(fl, &a, v);
	if (v == VERDICT_OK && answer_token(&a, &fl->token) == 0) {
		fl->facts.token_valid = true;
		fl->facts.token_changed =
		    fl->state.token && strcmp(fl->state.token, fl->token) != 0;
	}
}

/* Host registration: is .runner's runner the one the forge knows?  Its own
 * credentials are tried, as the daemon will at its start. */
static void declare(struct flow *fl)
{
	const struct options *o = fl->o;
	struct proto_runner r;
	struct forge_answer a;
	int64_t id;
	enum verdict v;

	v = runnerproto_declare(fl->forge, fl->info.uuid, fl->creds.token, o->labels, o->n_labels,
				forge_deadline(fl->deadline), &a, &id);
	fl->facts.declared = true;
	fl->facts.declare = v;
	heard(fl, &a, v);
	/* The name the forge gives the runner, for the clean-up, where no
	 * lookup said it. */
	if (v == VERDICT_OK && !fl->forge_name[0] && answer_proto_runner(&a, false, &r) == 0)
		memcpy(fl->forge_name, r.name, sizeof(fl->forge_name));
	if (v == VERDICT_OK && id && id != fl->info.id)
		log_warning("the forge knows the credentials in %s as runner %" PRId64
			    ", not %" PRId64,
			    o->runner_file, id, fl->info.id);
}

/* Host registration, before a new runner is registered: the runner this
 * tool wrote on an earlier boot should be in .runner.  When it is not
 * there but the forge still shows it, something in the container removed
 * or replaced it: most likely the runner module's own registration. */
static void check_written(struct flow *fl)
{
	const struct state_runner *w = &fl->state.written;
	struct runner_info theirs;
	struct forge_answer a;
	enum verdict v;

	if (!w->id || (fl->info.uuid_field == FIELD_SET && strcmp(fl->info.uuid, w->uuid) == 0))
		return;
	v = forge_lookup(fl->forge, w->id, forge_deadline(fl->deadline), &a, &fl->lookup_route);
	if (v != VERDICT_OK || answer_runner(&a, w->id, &theirs) < 0 ||
	    (theirs.uuid_field == FIELD_SET && strcmp(theirs.uuid, w->uuid) != 0))
		return;
	log_warning(
	    "%s %s, but the forge still shows runner %" PRId64
	    " that this host wrote there: something in the container removed or "
	    "re-registered it, most likely the runner module's own registration "
	    "(its ExecStartPre must be disabled, lib.mkForce [ ], with --registration=host)",
	    fl->o->runner_file, fl->info.id ? "holds another runner" : "is missing", w->id);
}

static void register_runner(struct flow *fl)
{
	const struct options *o = fl->o;
	struct forge_answer a;
	enum verdict v;

	check_written(fl);
	v = runnerproto_register(fl->forge, fl->token, o->runner_name, o->labels, o->n_labels,
				 forge_deadline(clock_now_ms() + o->retry_timeout_ms), &a,
				 &fl->registered);
	fl->facts.registered = true;
	fl->facts.registration = v;
	heard(fl, &a, v);
	if (v == VERDICT_OK)
		log_debug("the forge registered runner %" PRId64, fl->registered.id);
}

/* Host registration: writes .runner into the container, for the runner
 * registered in this run, or with the kept runner's credentials and the
 * new labels or address. */
static int write_runner(struct flow *fl, const struct decision *d)
{
	const struct options *o = fl->o;
	bool fresh = fl->facts.registered;
	struct runner_record rec = {
	    .id = fresh ? fl->registered.id : fl->info.id,
	    .uuid = fresh ? fl->registered.uuid : fl->info.uuid,
	    .name = fresh ? fl->registered.name : fl->info.name,
	    .token = fresh ? fl->registered.token : fl->creds.token,
	    .address = o->runner_address,
	    .labels = o->labels,
	    .n_labels = o->n_labels,
	};
	_cleanup_(erase_and_freep) char *text = NULL;
	size_t len = 0;
	int r;

	fl->facts.runner_written = true;
	fl->say.rewrote = !fresh;
	if (o->dry_run)
		return 0;
	text = runner_format(&rec, &len);
	r = text ? container_write_runner(o->container_root, o->runner_file, text, len,
					  clock_now_ms() + o->retry_timeout_ms)
		 : -ENOMEM;
	if (r < 0) {
		fl->say.registered_id = rec.id;
		if (fresh) /* a runner at the forge no .runner names: a ghost to clean up */
			state_supersede(&fl->state, rec.id, rec.uuid, rec.token);
		return fail(fl, d->fate, FAILURE_RUNNER_IO, REASON_RUNNER_UNWRITABLE, -r);
	}
	if (fresh) {
		state_remember_written(&fl->state, rec.id, rec.uuid);
		fl->say.registered_id = rec.id;
	}
	log_debug("wrote %s", o->runner_file);
	return 0;
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
		case STEP_DECLARE:
			declare(fl);
			break;
		case STEP_REGISTER:
			register_runner(fl);
			break;
		case STEP_WRITE_RUNNER:
			if (write_runner(fl, &d) < 0)
				return;
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
 * placeholder; an existing one is left as it was.  Under host registration
 * the output holds the placeholder whatever happened, so that no token a
 * host wrote in container mode stays there. */
static void ensure_output(struct flow *fl)
{
	const struct options *o = fl->o;
	enum token_source t = fl->state.token ? TOKEN_REMEMBERED : TOKEN_PLACEHOLDER;
	int64_t deadline = clock_now_ms() + o->retry_timeout_ms;
	int r;

	if (o->dry_run)
		return;
	if (o->host_registration) {
		t = TOKEN_PLACEHOLDER;
		r = output_write(o->output, NULL, o->token_format, deadline);
	} else {
		r = output_ensure(o->output, fl->state.token, o->token_format, deadline);
	}
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
	    .facts = {.host = o->host_registration,
		      .reregister = o->reregister,
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
		    .host = o->host_registration,
		    .dry_run = o->dry_run},
	    /* The admin token's wait and the lookup share one --retry-timeout;
	     * the registration token has its own (see fetch). */
	    .deadline = clock_now_ms() + o->retry_timeout_ms,
	};

	*out = (struct outcome){.action = ACTION_FAIL, .token = TOKEN_UNCHANGED};
	if (load_state(&fl) == 0 && read_admin_token(&fl) == 0) {
		if (o->host_registration) /* a host that registers keeps no forge-wide secret */
			state_forget_token(&fl.state);
		fl.lookup_route =
		    (enum lookup_route)remembered_route(fl.state.lookup_route, LOOKUP_ROUTES);
		fl.facts.remembered = fl.state.token != NULL;
		fl.facts.no_uuids = fl.state.no_uuids && fl.lookup_route < LOOKUP_ROUTES;
		fl.facts.held = read_runner(&fl);
		drive(&fl);
	}

	if (out->failure != FAILURE_NONE)
		ensure_output(&fl);
	save_state(&fl);
	atomic_unlock(&fl.state_lock);

	admin_token_clear(&fl.admin);
	erase_and_freep(&fl.token);
	explicit_bzero(&fl.creds, sizeof(fl.creds));
	explicit_bzero(&fl.registered, sizeof(fl.registered));
	forge_free(fl.forge);
	container_close_runner(&fl.rf);
	state_clear(&fl.state);
}
