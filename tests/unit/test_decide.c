/* The boot flow's rules, by table: each row is a world (what .runner holds,
 * what the forge answers, the options) played through decide() as the
 * driver would, step by step; the row states the steps taken and the end.
 * The rows follow the README's two decision tables, then the rules beside
 * them.  And the clean-up's judge, one row per rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "decide.h"
#include "ghosts.h"

/* What the world answers when the driver asks. */
struct world {
	bool no_admin;
	bool waited;
	enum held held;
	enum verdict lookup;
	enum runner_match match;
	enum verdict fetch;
	bool runner_object; /* a 200 lookup is the runner's object */
	bool not_a_token;   /* a 200 whose body is no token */
	bool token_changed; /* the token differs from the remembered one */
	bool remembered;
	bool reregister, placeholder_on_keep, dry_run, no_cleanup;
	/* host registration */
	bool host;
	bool no_creds;	 /* .runner has no uuid or token */
	bool differs;	 /* its labels or address are not the options' */
	bool forge_uuid; /* a 200 lookup shows a uuid */
	bool no_uuids;	 /* an earlier boot learnt that the forge shows none */
	enum verdict declare;
	enum verdict registration;
};

struct row {
	const char *name;
	struct world w;
	const char *steps;    /* the steps taken, in order */
	struct decision want; /* how it ends (next: STEP_DONE) */
};

static const char *const step_names[] = {
    [STEP_LOOKUP] = "lookup",	[STEP_DISCARD] = "discard",   [STEP_FETCH] = "fetch",
    [STEP_DECLARE] = "declare", [STEP_REGISTER] = "register", [STEP_WRITE_RUNNER] = "write_runner",
    [STEP_WRITE] = "write",	[STEP_CLEANUP] = "cleanup",   [STEP_DONE] = "done",
};

/* Plays the world through decide() as flow.c does: each step sets the
 * facts it learns.  Returns the last decision; the steps go into steps. */
static struct decision play(const struct world *w, char *steps, size_t n)
{
	struct facts f = {
	    .reregister = w->reregister,
	    .placeholder_on_keep = w->placeholder_on_keep,
	    .dry_run = w->dry_run,
	    .cleanup = !w->no_cleanup,
	    .admin = !w->no_admin,
	    .waited = w->waited,
	    .held = w->held,
	    .remembered = w->remembered,
	    .host = w->host,
	    .creds = !w->no_creds,
	    .differs = w->differs,
	    .no_uuids = w->no_uuids,
	};
	struct decision d;

	steps[0] = '\0';
	for (int i = 0; i < 10; i++) { /* a flow that does not end fails the row */
		d = decide(&f);
		if (d.failure != FAILURE_NONE || d.next == STEP_DONE)
			return d;
		snprintf(steps + strlen(steps), n - strlen(steps), "%s%s", steps[0] ? " " : "",
			 step_names[d.next]);
		switch (d.next) {
		case STEP_LOOKUP:
			f.looked_up = true;
			f.lookup = w->lookup;
			f.runner_object = w->runner_object;
			f.forge_uuid = w->forge_uuid;
			f.match = w->match;
			break;
		case STEP_DISCARD:
			f.discarded = true;
			break;
		case STEP_FETCH:
			f.fetched = true;
			f.fetch = w->fetch;
			f.token_valid = w->fetch == VERDICT_OK && !w->not_a_token;
			f.token_changed = f.token_valid && w->token_changed;
			break;
		case STEP_DECLARE:
			f.declared = true;
			f.declare = w->declare;
			break;
		case STEP_REGISTER:
			f.registered = true;
			f.registration = w->registration;
			break;
		case STEP_WRITE_RUNNER:
			f.runner_written = true;
			break;
		case STEP_WRITE:
			f.written = true;
			break;
		case STEP_CLEANUP:
			f.cleaned = true;
			break;
		case STEP_DONE:
			break;
		}
	}
	fail_msg("the flow does not end: %s", steps);
	return d;
}

#define RUNNER .held = HELD_RUNNER
#define SAME   .lookup = VERDICT_OK, .runner_object = true, .match = RUNNER_SAME_UUID
#define TOKEN  .fetch = VERDICT_OK

static const struct row rows[] = {
    /* README: how the lookup's answer decides the outcome. */
    {"200, same runner (uuid)",
     {RUNNER, SAME, TOKEN},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_STILL_REGISTERED}},
    {"200, same runner (name)",
     {RUNNER, .lookup = VERDICT_OK, .runner_object = true, .match = RUNNER_SAME_NAME, TOKEN},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_STILL_REGISTERED}},
    {"200, judged by id",
     {RUNNER, .lookup = VERDICT_OK, .runner_object = true, .match = RUNNER_SAME_ID, TOKEN},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_STILL_REGISTERED}},
    {"200, uuid differs",
     {RUNNER, .lookup = VERDICT_OK, .runner_object = true, .match = RUNNER_OTHER_UUID, TOKEN},
     "lookup discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_OTHER_UUID}},
    {"200, name differs",
     {RUNNER, .lookup = VERDICT_OK, .runner_object = true, .match = RUNNER_OTHER_NAME, TOKEN},
     "lookup discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_OTHER_NAME}},
    {"404 JSON: gone",
     {RUNNER, .lookup = VERDICT_GONE, TOKEN},
     "lookup discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_GONE}},
    {"404 plain on both routes: no lookup API",
     {RUNNER, .lookup = VERDICT_NO_ROUTE, TOKEN},
     "lookup fetch write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_NO_LOOKUP_ROUTE,
      .worth_a_warning = true}},
    {"no answer",
     {RUNNER, .lookup = VERDICT_NO_ANSWER, .remembered = true},
     "lookup write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_REMEMBERED,
      .reason = REASON_NO_ANSWER,
      .worth_a_warning = true}},
    {"no answer, nothing remembered",
     {RUNNER, .lookup = VERDICT_NO_ANSWER},
     "lookup write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_ANSWER,
      .worth_a_warning = true}},
    {"408/429/5xx at the deadline",
     {RUNNER, .lookup = VERDICT_TRANSIENT, .remembered = true},
     "lookup write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_REMEMBERED,
      .reason = REASON_STILL_BUSY,
      .worth_a_warning = true}},
    {"401/403 on the lookup",
     {RUNNER, .lookup = VERDICT_AUTH_REJECTED},
     "lookup",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_AUTH,
      .reason = REASON_AUTH}},
    {"TLS failure on the lookup",
     {RUNNER, .lookup = VERDICT_TLS_FAILED},
     "lookup",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_TLS,
      .reason = REASON_TLS}},
    {"any other answer",
     {RUNNER, .lookup = VERDICT_UNEXPECTED, TOKEN},
     "lookup discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_LOOKUP_UNEXPECTED}},

    {"200, not a runner object: cannot check",
     {RUNNER, .lookup = VERDICT_OK, .runner_object = false, TOKEN},
     "lookup fetch write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_NOT_A_RUNNER,
      .worth_a_warning = true}},
    {"the forge's port held by another user",
     {RUNNER, .lookup = VERDICT_WRONG_PEER},
     "lookup",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_WRONG_PEER,
      .reason = REASON_WRONG_PEER}},

    /* README: how step 4 (the fetch) ends, registering and with .runner kept. */
    {"register: a token",
     {.held = HELD_NOTHING, TOKEN},
     "fetch write",
     {.fate = FATE_ABSENT,
      .action = ACTION_REGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_NO_RUNNER}},
    {"kept: a token",
     {RUNNER, SAME, TOKEN},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_STILL_REGISTERED}},
    {"register: no token in time",
     {.held = HELD_NOTHING, .fetch = VERDICT_NO_ANSWER},
     "fetch",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_NO_TOKEN,
      .reason = REASON_NO_TOKEN_IN_TIME}},
    {"register: still busy",
     {.held = HELD_NOTHING, .fetch = VERDICT_TRANSIENT},
     "fetch",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_NO_TOKEN,
      .reason = REASON_NO_TOKEN_IN_TIME}},
    {"kept: no token in time",
     {RUNNER, SAME, .fetch = VERDICT_TRANSIENT, .remembered = true},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_REMEMBERED,
      .reason = REASON_STILL_REGISTERED,
      .warning = REASON_NO_TOKEN_IN_TIME}},
    {"register: 401/403",
     {.held = HELD_NOTHING, .fetch = VERDICT_AUTH_REJECTED},
     "fetch",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_AUTH,
      .reason = REASON_AUTH}},
    {"kept: 401/403",
     {RUNNER, SAME, .fetch = VERDICT_AUTH_REJECTED},
     "lookup fetch",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_AUTH,
      .reason = REASON_AUTH}},
    {"register: TLS",
     {.held = HELD_NOTHING, .fetch = VERDICT_TLS_FAILED},
     "fetch",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_TLS,
      .reason = REASON_TLS}},
    {"kept: TLS",
     {RUNNER, SAME, .fetch = VERDICT_TLS_FAILED},
     "lookup fetch",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_TLS,
      .reason = REASON_TLS}},
    {"register: no token route",
     {.held = HELD_NOTHING, .fetch = VERDICT_NO_ROUTE},
     "fetch",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_NOT_A_TOKEN,
      .reason = REASON_NO_TOKEN_ROUTE}},
    {"kept: no token route",
     {RUNNER, SAME, .fetch = VERDICT_NO_ROUTE},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_STILL_REGISTERED,
      .warning = REASON_NO_TOKEN_ROUTE}},
    {"register: not a token",
     {.held = HELD_NOTHING, TOKEN, .not_a_token = true},
     "fetch",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_NOT_A_TOKEN,
      .reason = REASON_NOT_A_TOKEN}},
    {"kept: not a token",
     {RUNNER, SAME, TOKEN, .not_a_token = true, .remembered = true},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_REMEMBERED,
      .reason = REASON_STILL_REGISTERED,
      .warning = REASON_NOT_A_TOKEN}},
    {"register: another status",
     {.held = HELD_NOTHING, .fetch = VERDICT_UNEXPECTED},
     "fetch",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_NOT_A_TOKEN,
      .reason = REASON_TOKEN_UNEXPECTED}},
    {"kept: another status",
     {RUNNER, SAME, .fetch = VERDICT_UNEXPECTED},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_STILL_REGISTERED,
      .warning = REASON_TOKEN_UNEXPECTED}},
    {"reregistering: 401/403 is no keeping",
     {RUNNER, .lookup = VERDICT_GONE, .fetch = VERDICT_AUTH_REJECTED},
     "lookup discard fetch",
     {.fate = FATE_DISCARDED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_AUTH,
      .reason = REASON_AUTH}},

    /* The no-lookup-route token-change rule. */
    {"no lookup API, the token changed",
     {RUNNER, .lookup = VERDICT_NO_ROUTE, TOKEN, .token_changed = true, .remembered = true},
     "lookup fetch discard write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_TOKEN_CHANGED}},
    {"lookup API, the token changed: no matter",
     {RUNNER, SAME, TOKEN, .token_changed = true, .remembered = true},
     "lookup fetch write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_STILL_REGISTERED}},
    {"no lookup API, no token: kept",
     {RUNNER, .lookup = VERDICT_NO_ROUTE, .fetch = VERDICT_NO_ANSWER},
     "lookup fetch write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_LOOKUP_ROUTE,
      .warning = REASON_NO_TOKEN_IN_TIME,
      .worth_a_warning = true}},

    /* What .runner held. */
    {"no .runner",
     {.held = HELD_NOTHING, TOKEN},
     "fetch write",
     {.fate = FATE_ABSENT,
      .action = ACTION_REGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_NO_RUNNER}},
    {"not a regular file",
     {.held = HELD_NOT_REGULAR, TOKEN},
     "discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_NOT_REGULAR}},
    {"too large",
     {.held = HELD_TOO_LARGE, TOKEN},
     "discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_TOO_LARGE}},
    {"malformed",
     {.held = HELD_MALFORMED, TOKEN},
     "discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_MALFORMED}},
    {"no openat2",
     {.held = HELD_NO_OPENAT2},
     "",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_NO_OPENAT2,
      .reason = REASON_NO_OPENAT2}},
    {"no /proc",
     {.held = HELD_NO_PROC},
     "",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_RUNNER_IO,
      .reason = REASON_NO_PROC}},
    {"unreadable",
     {.held = HELD_UNREADABLE},
     "",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_RUNNER_IO,
      .reason = REASON_UNREADABLE}},

    /* No admin token: nothing is asked or deleted, whatever .runner holds. */
    {"no admin token",
     {.no_admin = true, RUNNER},
     "write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_PLACEHOLDER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_ADMIN_TOKEN}},
    {"no admin token after a wait",
     {.no_admin = true, .waited = true, .held = HELD_MALFORMED, .remembered = true},
     "write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_PLACEHOLDER,
      .output = TOKEN_REMEMBERED,
      .reason = REASON_NO_ADMIN_TOKEN,
      .worth_a_warning = true}},
    {"no admin token, .runner unreadable",
     {.no_admin = true, .held = HELD_NO_OPENAT2},
     "write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_PLACEHOLDER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_ADMIN_TOKEN}},

    /* --reregister: no lookup, whatever the forge would say. */
    {"--reregister",
     {RUNNER, SAME, TOKEN, .reregister = true},
     "discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_REREGISTER}},
    {"--reregister, no .runner",
     {.held = HELD_NOTHING, TOKEN, .reregister = true},
     "discard fetch write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_REREGISTER}},

    /* --placeholder-on-keep: a confirmed runner gets the placeholder, unfetched. */
    {"--placeholder-on-keep, confirmed",
     {RUNNER, SAME, TOKEN, .placeholder_on_keep = true},
     "lookup write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_STILL_REGISTERED}},
    {"--placeholder-on-keep, registering",
     {.held = HELD_NOTHING, TOKEN, .placeholder_on_keep = true},
     "fetch write",
     {.fate = FATE_ABSENT,
      .action = ACTION_REGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_NO_RUNNER}},
    {"--placeholder-on-keep, unverified",
     {RUNNER, .lookup = VERDICT_NO_ROUTE, TOKEN, .placeholder_on_keep = true},
     "lookup fetch write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_NO_LOOKUP_ROUTE,
      .worth_a_warning = true}},

    /* --no-cleanup. */
    {"--no-cleanup",
     {RUNNER, SAME, TOKEN, .no_cleanup = true},
     "lookup fetch write",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_STILL_REGISTERED}},

    /* Dry runs: the same decisions, no fetch (a token is assumed). */
    {"dry run, confirmed",
     {RUNNER, SAME, .fetch = VERDICT_NO_ANSWER, .dry_run = true},
     "lookup write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_CURRENT,
      .reason = REASON_STILL_REGISTERED}},
    {"dry run, gone",
     {RUNNER, .lookup = VERDICT_GONE, .dry_run = true},
     "lookup discard write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_GONE}},
    {"dry run, no .runner",
     {.held = HELD_NOTHING, .dry_run = true},
     "write",
     {.fate = FATE_ABSENT,
      .action = ACTION_REGISTER,
      .output = TOKEN_CURRENT,
      .reason = REASON_NO_RUNNER}},
    {"dry run, no answer",
     {RUNNER, .lookup = VERDICT_NO_ANSWER, .remembered = true, .dry_run = true},
     "lookup write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_REMEMBERED,
      .reason = REASON_NO_ANSWER,
      .worth_a_warning = true}},
    {"dry run, 401/403",
     {RUNNER, .lookup = VERDICT_AUTH_REJECTED, .dry_run = true},
     "lookup",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_AUTH,
      .reason = REASON_AUTH}},
    {"dry run, no admin token",
     {.no_admin = true, RUNNER, .dry_run = true},
     "write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_PLACEHOLDER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_ADMIN_TOKEN}},

/* Host registration: a constant output, Declare where the lookup cannot
 * compare uuids, Register from the host, .runner written. */
#define HOST  .host = true
#define UUIDS .forge_uuid = true
    {"host: 200, same uuid",
     {HOST, RUNNER, SAME, UUIDS, .remembered = true},
     "lookup write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_STILL_REGISTERED}},
    {"host: 200, same uuid, new labels",
     {HOST, RUNNER, SAME, UUIDS, .differs = true},
     "lookup write_runner write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_STILL_REGISTERED}},
    {"host: 200, uuid differs",
     {HOST, RUNNER, .lookup = VERDICT_OK, .runner_object = true, UUIDS, .match = RUNNER_OTHER_UUID,
      TOKEN, .registration = VERDICT_OK},
     "lookup discard fetch register write_runner write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_OTHER_UUID}},
    {"host: 200 without uuid (Gitea), Declare takes it",
     {HOST, RUNNER, SAME, .declare = VERDICT_OK},
     "lookup declare write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_DECLARED}},
    {"host: a forge known to show no uuid: Declare alone",
     {HOST, RUNNER, .no_uuids = true, .declare = VERDICT_OK},
     "declare write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_DECLARED}},
    {"host: a forge known to show no uuid, unregistered",
     {HOST, RUNNER, .no_uuids = true, .declare = VERDICT_GONE, TOKEN, .registration = VERDICT_OK},
     "declare discard fetch register write_runner write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_UNREGISTERED}},
    {"host: no lookup route, Declare takes it",
     {HOST, RUNNER, .lookup = VERDICT_NO_ROUTE, .declare = VERDICT_OK},
     "lookup declare write",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_DECLARED}},
    {"host: no lookup route, unregistered runner",
     {HOST, RUNNER, .lookup = VERDICT_NO_ROUTE, .declare = VERDICT_GONE, TOKEN,
      .registration = VERDICT_OK},
     "lookup declare discard fetch register write_runner write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_UNREGISTERED}},
    {"host: no lookup route, Declare cannot tell",
     {HOST, RUNNER, .lookup = VERDICT_NO_ROUTE, .declare = VERDICT_TRANSIENT},
     "lookup declare write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_DECLARE_UNKNOWN,
      .worth_a_warning = true}},
    {"host: Declare, TLS",
     {HOST, RUNNER, .lookup = VERDICT_NO_ROUTE, .declare = VERDICT_TLS_FAILED},
     "lookup declare",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_TLS,
      .reason = REASON_TLS}},
    {"host: no lookup route, the token changed: no matter",
     {HOST, RUNNER, .lookup = VERDICT_NO_ROUTE, .declare = VERDICT_OK, .token_changed = true,
      .remembered = true},
     "lookup declare write",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_DECLARED}},
    {"host: .runner without credentials",
     {HOST, RUNNER, .no_creds = true, TOKEN, .registration = VERDICT_OK},
     "discard fetch register write_runner write",
     {.fate = FATE_DISCARDED,
      .action = ACTION_REREGISTER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_CREDENTIALS}},
    {"host: no .runner",
     {HOST, .held = HELD_NOTHING, TOKEN, .registration = VERDICT_OK},
     "fetch register write_runner write",
     {.fate = FATE_ABSENT,
      .action = ACTION_REGISTER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_RUNNER}},
    {"host: no registration token in time",
     {HOST, .held = HELD_NOTHING, .fetch = VERDICT_NO_ANSWER},
     "fetch",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_NO_TOKEN,
      .reason = REASON_NO_TOKEN_IN_TIME}},
    {"host: no answer to Register",
     {HOST, .held = HELD_NOTHING, TOKEN, .registration = VERDICT_NO_ANSWER},
     "fetch register",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_REGISTER_NO_ANSWER,
      .reason = REASON_REGISTER_NO_ANSWER}},
    {"host: Register refused",
     {HOST, .held = HELD_NOTHING, TOKEN, .registration = VERDICT_UNEXPECTED},
     "fetch register",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_REGISTER_REFUSED,
      .reason = REASON_REGISTER_REFUSED}},
    {"host: no runner protocol",
     {HOST, .held = HELD_NOTHING, TOKEN, .registration = VERDICT_NO_ROUTE},
     "fetch register",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_REGISTER_REFUSED,
      .reason = REASON_REGISTER_REFUSED}},
    {"host: Register, TLS",
     {HOST, .held = HELD_NOTHING, TOKEN, .registration = VERDICT_TLS_FAILED},
     "fetch register",
     {.fate = FATE_ABSENT,
      .action = ACTION_FAIL,
      .output = TOKEN_UNCHANGED,
      .failure = FAILURE_TLS,
      .reason = REASON_TLS}},
    {"host: no answer to the lookup",
     {HOST, RUNNER, .lookup = VERDICT_NO_ANSWER, .remembered = true},
     "lookup write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_ANSWER,
      .worth_a_warning = true}},
    {"host: no admin token",
     {HOST, .no_admin = true, RUNNER, .remembered = true},
     "write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_PLACEHOLDER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_ADMIN_TOKEN}},
    {"host: dry run, no .runner",
     {HOST, .held = HELD_NOTHING, .dry_run = true},
     "write",
     {.fate = FATE_ABSENT,
      .action = ACTION_REGISTER,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_NO_RUNNER}},
    {"host: dry run, no lookup route",
     {HOST, RUNNER, .lookup = VERDICT_NO_ROUTE, .dry_run = true},
     "lookup write",
     {.fate = FATE_UNVERIFIED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_WOULD_DECLARE,
      .worth_a_warning = true}},
    {"host: dry run, new labels",
     {HOST, RUNNER, SAME, UUIDS, .differs = true, .dry_run = true},
     "lookup write_runner write cleanup",
     {.fate = FATE_CONFIRMED,
      .action = ACTION_KEEP,
      .output = TOKEN_PLACEHOLDER,
      .reason = REASON_STILL_REGISTERED}},
};

static void decision_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		char steps[128];
		struct decision d = play(&r->w, steps, sizeof(steps));

		print_message("%s\n", r->name);
		assert_string_equal(steps, r->steps);
		assert_int_equal(d.next, STEP_DONE);
		assert_int_equal(d.fate, r->want.fate);
		assert_int_equal(d.action, r->want.action);
		assert_int_equal(d.output, r->want.output);
		assert_int_equal(d.failure, r->want.failure);
		assert_int_equal(d.reason, r->want.reason);
		assert_int_equal(d.warning, r->want.warning);
		assert_int_equal(d.worth_a_warning, r->want.worth_a_warning);
	}
}

/* The clean-up's judge: listed runner 2 with uuid U; the forge calls this
 * host's confirmed runner "hive". */
static void ghost_table(void **state)
{
	static const struct state_runner listed = {.id = 2, .uuid = "U"};
	static const struct {
		const char *name;
		enum verdict v;
		bool shown; /* a runner object came back */
		enum field uuid_field;
		const char *uuid, *status;
		bool user_or_repo; /* owner_id or repo_id not 0 */
		const char *forge_name;
		enum ghost_fate fate;
		enum ghost_reason reason;
	} judged[] = {
	    {"offline, the listed uuid", VERDICT_OK, true, FIELD_SET, "U", "offline", false, "hive",
	     GHOST_DELETE, GHOST_OURS_OFFLINE},
	    {"idle", VERDICT_OK, true, FIELD_SET, "U", "idle", false, "hive", GHOST_SPARE,
	     GHOST_IN_USE},
	    {"active", VERDICT_OK, true, FIELD_SET, "U", "active", false, "hive", GHOST_SPARE,
	     GHOST_IN_USE},
	    {"online", VERDICT_OK, true, FIELD_SET, "U", "online", false, "hive", GHOST_SPARE,
	     GHOST_IN_USE},
	    {"no status", VERDICT_OK, true, FIELD_SET, "U", "", false, "hive", GHOST_SPARE,
	     GHOST_IN_USE},
	    {"id now held by another runner", VERDICT_OK, true, FIELD_SET, "V", "offline", false,
	     "hive", GHOST_FORGET, GHOST_OTHER_RUNNER},
	    {"an over-long uuid", VERDICT_OK, true, FIELD_TOO_LONG, "", "offline", false, "hive",
	     GHOST_FORGET, GHOST_OTHER_RUNNER},
	    {"no uuid shown (Gitea)", VERDICT_OK, true, FIELD_ABSENT, "", "offline", false, "hive",
	     GHOST_FORGET, GHOST_NO_UUID},
	    {"a user's or a repository's runner", VERDICT_OK, true, FIELD_SET, "U", "offline", true,
	     "hive", GHOST_FORGET, GHOST_NOT_INSTANCE},
	    {"another name", VERDICT_OK, true, FIELD_SET, "U", "offline", false, "someone",
	     GHOST_FORGET, GHOST_OTHER_NAME},
	    {"no name shown", VERDICT_OK, true, FIELD_SET, "U", "offline", false, NULL,
	     GHOST_FORGET, GHOST_OTHER_NAME},
	    {"not a runner object", VERDICT_OK, false, FIELD_ABSENT, "", "", false, NULL,
	     GHOST_LISTED, GHOST_NOT_A_RUNNER},
	    {"gone", VERDICT_GONE, false, FIELD_ABSENT, "", "", false, NULL, GHOST_FORGET,
	     GHOST_GONE},
	    {"no answer", VERDICT_NO_ANSWER, false, FIELD_ABSENT, "", "", false, NULL, GHOST_LISTED,
	     GHOST_NO_ANSWER},
	    {"busy", VERDICT_TRANSIENT, false, FIELD_ABSENT, "", "", false, NULL, GHOST_LISTED,
	     GHOST_NO_ANSWER},
	    {"401/403", VERDICT_AUTH_REJECTED, false, FIELD_ABSENT, "", "", false, NULL,
	     GHOST_LISTED, GHOST_NO_ANSWER},
	    {"another status", VERDICT_UNEXPECTED, false, FIELD_ABSENT, "", "", false, NULL,
	     GHOST_LISTED, GHOST_NO_ANSWER},
	    {"not the forge's user", VERDICT_WRONG_PEER, false, FIELD_ABSENT, "", "", false, NULL,
	     GHOST_LISTED, GHOST_NO_ANSWER},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(judged) / sizeof(judged[0]); i++) {
		struct runner_info shown = {.id = 2,
					    .uuid_field = judged[i].uuid_field,
					    .instance_scope = !judged[i].user_or_repo,
					    .name_field =
						judged[i].forge_name ? FIELD_SET : FIELD_ABSENT};
		struct ghost_judgement j;

		snprintf(shown.uuid, sizeof(shown.uuid), "%s", judged[i].uuid);
		snprintf(shown.status, sizeof(shown.status), "%s", judged[i].status);
		if (judged[i].forge_name)
			snprintf(shown.name, sizeof(shown.name), "%s", judged[i].forge_name);
		j = ghosts_judge(&listed, "hive", judged[i].v, judged[i].shown ? &shown : NULL,
				 PROOF_NONE);
		print_message("%s\n", judged[i].name);
		assert_int_equal(j.fate, judged[i].fate);
		assert_int_equal(j.reason, judged[i].reason);
	}
	/* The forge's name for this host's runner unknown: nothing is ours. */
	struct runner_info ours = {.id = 2,
				   .uuid_field = FIELD_SET,
				   .uuid = "U",
				   .name_field = FIELD_SET,
				   .name = "",
				   .instance_scope = true,
				   .status = "offline"};
	assert_int_equal(ghosts_judge(&listed, "", VERDICT_OK, &ours, PROOF_NONE).fate,
			 GHOST_FORGET);
}

/* On a forge that shows no uuid (Gitea): a runner this host registered
 * itself, its own token listed, is proven ours by a Declare with it, asked
 * only of an offline runner of this host's name. */
static void ghost_table_by_credentials(void **state)
{
	static const struct state_runner listed = {.id = 2, .uuid = "U", .token = "T"};
	static const struct {
		const char *name;
		const char *status, *forge_name;
		enum ghost_proof proof;
		enum ghost_fate fate;
		enum ghost_reason reason;
	} judged[] = {
	    {"offline, not asked yet", "offline", "hive", PROOF_NONE, GHOST_PROVE, GHOST_NO_UUID},
	    {"offline, its credentials answer as it", "offline", "hive", PROOF_ANSWERED,
	     GHOST_DELETE, GHOST_PROVEN},
	    {"offline, its credentials refused", "offline", "hive", PROOF_REFUSED, GHOST_FORGET,
	     GHOST_NOT_PROVEN},
	    {"offline, the Declare unanswered", "offline", "hive", PROOF_FAILED, GHOST_LISTED,
	     GHOST_NO_ANSWER},
	    {"idle: no Declare", "idle", "hive", PROOF_NONE, GHOST_SPARE, GHOST_IN_USE},
	    {"another name: no Declare", "offline", "someone", PROOF_NONE, GHOST_FORGET,
	     GHOST_OTHER_NAME},
	    {"no name shown: no Declare", "offline", NULL, PROOF_NONE, GHOST_FORGET,
	     GHOST_OTHER_NAME},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(judged) / sizeof(judged[0]); i++) {
		struct runner_info shown = {.id = 2,
					    .uuid_field = FIELD_ABSENT,
					    .name_field =
						judged[i].forge_name ? FIELD_SET : FIELD_ABSENT};
		struct ghost_judgement j;

		snprintf(shown.status, sizeof(shown.status), "%s", judged[i].status);
		if (judged[i].forge_name)
			snprintf(shown.name, sizeof(shown.name), "%s", judged[i].forge_name);
		j = ghosts_judge(&listed, "hive", VERDICT_OK, &shown, judged[i].proof);
		print_message("%s\n", judged[i].name);
		assert_int_equal(j.fate, judged[i].fate);
		assert_int_equal(j.reason, judged[i].reason);
	}
}

static void names(void **state)
{
	(void)state;
	assert_string_equal(action_name(ACTION_REREGISTER), "reregister");
	assert_string_equal(action_name(ACTION_FAIL), "fail");
	assert_string_equal(token_source_name(TOKEN_REMEMBERED), "remembered");
	assert_string_equal(token_source_name(TOKEN_UNCHANGED), "unchanged");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(decision_table),
	    cmocka_unit_test(ghost_table),
	    cmocka_unit_test(ghost_table_by_credentials),
	    cmocka_unit_test(names),
	};

	return cmocka_run_group_tests_name("decide", tests, NULL, NULL);
}
