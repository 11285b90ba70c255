/* The boot flow's rules, top to bottom (README, "The flow"):
 *
 *   no admin token      .runner kept whatever it holds, nothing asked; the
 *                       output gets the remembered token, else the placeholder
 *   .runner unreadable  fail (71, 74)
 *   --reregister, malformed .runner   discard
 *   no .runner          register
 *   a runner id         look it up:
 *     200 same runner   confirmed; fetch (--placeholder-on-keep: placeholder)
 *     200 another one, JSON 404, any other status      discard
 *     no lookup route   unverified; fetch; a token that differs from the
 *                       remembered one means a new forge: discard
 *     no answer, busy at the deadline   unverified; remembered token
 *     401/403, TLS      fail (77, 69), .runner kept
 *   the fetch           a token: written; no token: registering fails
 *                       (75, 76), a kept .runner goes on with the remembered
 *                       token and a warning; 401/403, TLS: fail (77, 69)
 *   then                write the output; after a confirmed .runner, clean up
 *
 * Host registration (--registration=host) changes this:
 *
 *   .runner             without a uuid or token: discard
 *   the lookup          where it cannot compare uuids (no lookup route;
 *                       Gitea's objects have none, also remembered from an
 *                       earlier boot): Declare with .runner's credentials:
 *                       200 confirmed; "unregistered runner" discard; else
 *                       unverified.  No token-change rule.
 *   kept                no token is fetched; .runner rewritten when its
 *                       labels or address differ
 *   register            fetch the token, Register (no answer: 75; no
 *                       runner: 76), write .runner (74 when it cannot be)
 *   the output          the placeholder, always
 *
 * A dry run takes the same decisions but pretends every step it would take:
 * it deletes, fetches (assuming the forge would give a token), registers,
 * declares and writes nothing. */
#include "decide.h"

static const char *const action_names[] = {
    [ACTION_PLACEHOLDER] = "placeholder", [ACTION_KEEP] = "keep", [ACTION_REGISTER] = "register",
    [ACTION_REREGISTER] = "reregister",	  [ACTION_FAIL] = "fail",
};

static const char *const token_source_names[] = {
    [TOKEN_CURRENT] = "current",
    [TOKEN_REMEMBERED] = "remembered",
    [TOKEN_PLACEHOLDER] = "placeholder",
    [TOKEN_UNCHANGED] = "unchanged",
};

const char *action_name(enum action a)
{
	return action_names[a];
}

const char *token_source_name(enum token_source t)
{
	return token_source_names[t];
}

static struct decision fail(struct decision d, enum failure failure, enum reason reason)
{
	d.next = STEP_DONE;
	d.action = ACTION_FAIL;
	d.output = TOKEN_UNCHANGED;
	d.failure = failure;
	d.reason = reason;
	d.warning = REASON_NONE;
	d.worth_a_warning = false;
	return d;
}

static struct decision fated(enum fate fate, enum reason reason)
{
	return (struct decision){.next = STEP_DONE, .fate = fate, .reason = reason};
}

/* Host registration, where the lookup cannot compare uuids (no lookup
 * route; Gitea's runner objects have none): .runner's own credentials are
 * tried with Declare, as the daemon will at its start.  A dry run asks
 * nothing. */
static struct decision judge_declare(const struct facts *f)
{
	struct decision kept = fated(FATE_UNVERIFIED, REASON_NONE);

	if (f->dry_run)
		return fated(FATE_UNVERIFIED, REASON_WOULD_DECLARE);
	if (!f->declared) {
		kept.next = STEP_DECLARE;
		return kept;
	}
	switch (f->declare) {
	case VERDICT_OK:
		return fated(FATE_CONFIRMED, REASON_DECLARED);
	case VERDICT_GONE: /* "unregistered runner" */
		return fated(FATE_DISCARDED, REASON_UNREGISTERED);
	case VERDICT_TLS_FAILED:
		return fail(kept, FAILURE_TLS, REASON_TLS);
	case VERDICT_WRONG_PEER:
		return fail(kept, FAILURE_WRONG_PEER, REASON_WRONG_PEER);
	default:
		return fated(FATE_UNVERIFIED, REASON_DECLARE_UNKNOWN);
	}
}

/* The fate of .runner once it was read (and looked up, where it can be);
 * next is STEP_LOOKUP (or STEP_DECLARE) while that is still to be done. */
static struct decision judge_runner(const struct facts *f)
{
	struct decision kept = fated(FATE_UNVERIFIED, REASON_NONE);

	if (f->reregister)
		return fated(FATE_DISCARDED, REASON_REREGISTER);
	switch (f->held) {
	case HELD_NOTHING:
		return fated(FATE_ABSENT, REASON_NO_RUNNER);
	case HELD_NOT_REGULAR:
		return fated(FATE_DISCARDED, REASON_NOT_REGULAR);
	case HELD_TOO_LARGE:
		return fated(FATE_DISCARDED, REASON_TOO_LARGE);
	case HELD_MALFORMED:
		return fated(FATE_DISCARDED, REASON_MALFORMED);
	case HELD_NO_OPENAT2:
		return fail(kept, FAILURE_NO_OPENAT2, REASON_NO_OPENAT2);
	case HELD_NO_PROC:
		return fail(kept, FAILURE_RUNNER_IO, REASON_NO_PROC);
	case HELD_UNREADABLE:
		return fail(kept, FAILURE_RUNNER_IO, REASON_UNREADABLE);
	case HELD_RUNNER:
		break;
	}
	if (f->host && !f->creds) /* the daemon could not work with it either */
		return fated(FATE_DISCARDED, REASON_NO_CREDENTIALS);
	/* A forge whose lookup could never compare uuids: Declare alone tells. */
	if (f->host && f->no_uuids)
		return judge_declare(f);
	if (!f->looked_up) {
		kept.next = STEP_LOOKUP;
		return kept;
	}

	switch (f->lookup) {
	case VERDICT_OK:
		if (!f->runner_object) /* an HTML page, a proxy's answer, ... */
			return fated(FATE_UNVERIFIED, REASON_NOT_A_RUNNER);
		if (f->host && !f->forge_uuid)
			return judge_declare(f);
		if (runner_match_is_same(f->match))
			return fated(FATE_CONFIRMED, REASON_STILL_REGISTERED);
		return fated(FATE_DISCARDED,
			     f->match == RUNNER_OTHER_UUID ? REASON_OTHER_UUID : REASON_OTHER_NAME);
	case VERDICT_GONE:
		return fated(FATE_DISCARDED, REASON_GONE);
	case VERDICT_NO_ROUTE:
		if (f->host)
			return judge_declare(f);
		/* Only a changed registration token can tell that such a forge
		 * was reset or wiped since the runner registered. */
		if (f->fetched && f->fetch == VERDICT_OK && f->token_valid && f->token_changed)
			return fated(FATE_DISCARDED, REASON_TOKEN_CHANGED);
		return fated(FATE_UNVERIFIED, REASON_NO_LOOKUP_ROUTE);
	case VERDICT_NO_ANSWER:
		return fated(FATE_UNVERIFIED, REASON_NO_ANSWER);
	case VERDICT_TRANSIENT:
		return fated(FATE_UNVERIFIED, REASON_STILL_BUSY);
	case VERDICT_AUTH_REJECTED:
		return fail(kept, FAILURE_AUTH, REASON_AUTH);
	case VERDICT_TLS_FAILED:
		return fail(kept, FAILURE_TLS, REASON_TLS);
	case VERDICT_WRONG_PEER:
		return fail(kept, FAILURE_WRONG_PEER, REASON_WRONG_PEER);
	case VERDICT_UNEXPECTED:
		break;
	}
	return fated(FATE_DISCARDED, REASON_LOOKUP_UNEXPECTED);
}

/* Whether this fate wants the forge's current registration token. */
static bool wants_token(const struct facts *f, const struct decision *d)
{
	switch (d->fate) {
	case FATE_ABSENT:
	case FATE_DISCARDED:
		return true; /* to register with */
	case FATE_CONFIRMED:
		return !f->placeholder_on_keep; /* so the output's bytes stay the same */
	case FATE_UNVERIFIED: /* where the forge answers, though it could not tell */
		return f->lookup == VERDICT_NO_ROUTE || f->lookup == VERDICT_OK;
	}
	return false;
}

/* After the fetch: a token, or why there is none.  A kept .runner still
 * works without one (a warning); a registration does not (a failure). */
static struct decision judge_fetch(const struct facts *f, struct decision d)
{
	enum failure failure = FAILURE_NOT_A_TOKEN;
	enum reason why;

	switch (f->fetch) {
	case VERDICT_OK:
		if (f->token_valid) {
			d.output = TOKEN_CURRENT;
			return d;
		}
		why = REASON_NOT_A_TOKEN;
		break;
	case VERDICT_AUTH_REJECTED:
		return fail(d, FAILURE_AUTH, REASON_AUTH);
	case VERDICT_TLS_FAILED:
		return fail(d, FAILURE_TLS, REASON_TLS);
	case VERDICT_WRONG_PEER:
		return fail(d, FAILURE_WRONG_PEER, REASON_WRONG_PEER);
	case VERDICT_NO_ANSWER:
	case VERDICT_TRANSIENT: /* retryable: so the deadline passed */
		failure = FAILURE_NO_TOKEN;
		why = REASON_NO_TOKEN_IN_TIME;
		break;
	case VERDICT_NO_ROUTE:
		why = REASON_NO_TOKEN_ROUTE;
		break;
	default:
		why = REASON_TOKEN_UNEXPECTED;
		break;
	}
	if (!fate_is_kept(d.fate))
		return fail(d, failure, why);
	d.warning = why;
	d.output = f->remembered ? TOKEN_REMEMBERED : TOKEN_PLACEHOLDER;
	return d;
}

static enum action action_of(enum fate fate)
{
	switch (fate) {
	case FATE_ABSENT:
		return ACTION_REGISTER;
	case FATE_DISCARDED:
		return ACTION_REREGISTER;
	case FATE_CONFIRMED:
	case FATE_UNVERIFIED:
		break;
	}
	return ACTION_KEEP;
}

/* The steps that follow once the output's content is known. */
static struct decision finish(const struct facts *f, struct decision d)
{
	if (!f->written)
		d.next = STEP_WRITE;
	else if (d.fate == FATE_CONFIRMED && f->cleanup && !f->cleaned &&
		 f->lookup != VERDICT_NO_ROUTE) /* the clean-up looks runners up */
		d.next = STEP_CLEANUP;
	else
		d.next = STEP_DONE;
	return d;
}

/* Host registration: the output holds a constant (the registration token
 * never leaves the host); a kept runner needs no registration token, only
 * its .runner rewritten when its labels or address changed; a new one is
 * registered and written into the container.  A dry run fetches and
 * registers nothing. */
static struct decision host_steps(const struct facts *f, struct decision d)
{
	if (fate_is_kept(d.fate)) {
		d.output = TOKEN_PLACEHOLDER;
		if (f->differs && !f->runner_written) {
			d.next = STEP_WRITE_RUNNER;
			return d;
		}
		return finish(f, d);
	}
	if (f->dry_run) {
		d.output = TOKEN_PLACEHOLDER;
		return finish(f, d);
	}
	if (!f->fetched) {
		d.next = STEP_FETCH;
		return d;
	}
	d = judge_fetch(f, d); /* registering: no token is a failure */
	if (d.failure != FAILURE_NONE)
		return d;
	d.output = TOKEN_PLACEHOLDER;
	if (!f->registered) {
		d.next = STEP_REGISTER;
		return d;
	}
	switch (f->registration) {
	case VERDICT_OK:
		break;
	case VERDICT_NO_ANSWER:
	case VERDICT_TRANSIENT: /* so the deadline passed */
		return fail(d, FAILURE_REGISTER_NO_ANSWER, REASON_REGISTER_NO_ANSWER);
	case VERDICT_TLS_FAILED:
		return fail(d, FAILURE_TLS, REASON_TLS);
	case VERDICT_WRONG_PEER:
		return fail(d, FAILURE_WRONG_PEER, REASON_WRONG_PEER);
	default: /* a refused registration token, no runner protocol, ... */
		return fail(d, FAILURE_REGISTER_REFUSED, REASON_REGISTER_REFUSED);
	}
	if (!f->runner_written) {
		d.next = STEP_WRITE_RUNNER;
		return d;
	}
	return finish(f, d);
}

struct decision decide(const struct facts *f)
{
	struct decision d;

	if (!f->admin && f->reregister) /* it could not fetch a token anyway */
		return fail(fated(FATE_UNVERIFIED, REASON_NONE), FAILURE_ADMIN_TOKEN,
			    REASON_REREGISTER_NO_ADMIN);
	if (!f->admin) {
		/* Without an admin token nothing is deleted: whatever .runner
		 * holds is the runner module's to judge. */
		d = (struct decision){
		    .fate = f->held == HELD_NOTHING ? FATE_ABSENT : FATE_UNVERIFIED,
		    .action = ACTION_PLACEHOLDER,
		    .output = f->remembered && !f->host ? TOKEN_REMEMBERED : TOKEN_PLACEHOLDER,
		    .reason = REASON_NO_ADMIN_TOKEN,
		    .worth_a_warning = f->waited,
		};
		return finish(f, d);
	}

	d = judge_runner(f);
	if (d.failure != FAILURE_NONE || d.next == STEP_LOOKUP || d.next == STEP_DECLARE)
		return d;
	d.action = action_of(d.fate);
	d.worth_a_warning = d.fate == FATE_UNVERIFIED;
	if (d.fate == FATE_DISCARDED && !f->discarded) {
		d.next = STEP_DISCARD;
		return d;
	}
	if (f->host)
		return host_steps(f, d);

	if (d.fate == FATE_CONFIRMED && f->placeholder_on_keep)
		d.output = TOKEN_PLACEHOLDER; /* the original design */
	else if (!wants_token(f, &d))
		d.output = f->remembered ? TOKEN_REMEMBERED : TOKEN_PLACEHOLDER;
	else if (f->dry_run)
		d.output = TOKEN_CURRENT; /* a dry run assumes the forge would give one */
	else if (!f->fetched) {
		d.next = STEP_FETCH;
		return d;
	} else {
		d = judge_fetch(f, d);
		if (d.failure != FAILURE_NONE)
			return d;
	}
	return finish(f, d);
}
