#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "atomic.h"
#include "container.h"
#include "reason.h"

static const char *const token_words[] = {
    [TOKEN_CURRENT] = "the current registration token",
    [TOKEN_REMEMBERED] = "the remembered registration token",
    [TOKEN_PLACEHOLDER] = "the placeholder",
    [TOKEN_UNCHANGED] = "nothing",
};

const char *reason_token_words(enum token_source t)
{
	return token_words[t];
}

static const char *const auth_words[] = {
    [AUTH_REJECTED] = "",
    [AUTH_NO_SCOPE] = ": the token lacks the admin scope, write:admin",
    [AUTH_NOT_SITE_ADMIN] = ": the token's user is not a site admin",
};

/* The last answer, in words: its verdict, or why there was none. */
static const char *last_answer(const struct reason_context *c)
{
	return c->last_status ? verdict_name(c->last_verdict) : c->last_error;
}

char *reason_say(char *buf, size_t n, enum reason r, const struct decision *d,
		 const struct reason_context *c)
{
	const char *keeping = fate_is_kept(d->fate) ? "; keeping .runner" : "";
	char cause[256], lock[PATH_MAX];

	buf[0] = '\0';
	switch (r) {
	case REASON_NONE:
		break;
	case REASON_NO_ADMIN_TOKEN:
		snprintf(buf, n, "%s",
			 c->dry_run ? "no admin token yet (forge still initialising; a run would "
				      "wait up to --retry-timeout for it)"
				    : "no admin token yet (forge still initialising)");
		break;
	case REASON_NO_RUNNER:
		snprintf(buf, n, "no .runner");
		break;
	case REASON_STILL_REGISTERED:
		snprintf(buf, n, "runner %" PRId64 " still registered", c->id);
		break;
	case REASON_NO_LOOKUP_ROUTE:
		snprintf(buf, n, "forge has no runner lookup API");
		break;
	case REASON_NO_ANSWER:
		snprintf(buf, n, "forge did not answer (%s)", c->lookup_error);
		break;
	case REASON_NOT_A_RUNNER:
		snprintf(buf, n,
			 "forge's answer to the lookup of runner %" PRId64
			 " is not a runner object (cannot check)",
			 c->id);
		break;
	case REASON_STILL_BUSY:
		snprintf(buf, n, "forge still answered %ld at --retry-timeout", c->lookup_status);
		break;
	case REASON_REREGISTER:
		snprintf(buf, n, "--reregister");
		break;
	case REASON_NOT_REGULAR:
		snprintf(buf, n, "%s is not a regular file", c->runner_file);
		break;
	case REASON_TOO_LARGE:
		snprintf(buf, n, "%s is larger than " RUNNER_FILE_MAX_TEXT, c->runner_file);
		break;
	case REASON_MALFORMED:
		snprintf(buf, n, "%s is malformed (no runner id)", c->runner_file);
		break;
	case REASON_OTHER_UUID:
		snprintf(buf, n,
			 "runner %" PRId64 " on the forge is a different runner (uuid differs)",
			 c->id);
		break;
	case REASON_OTHER_NAME:
		snprintf(buf, n,
			 "runner %" PRId64 " on the forge is a different runner (name differs)",
			 c->id);
		break;
	case REASON_GONE:
		snprintf(buf, n, "runner %" PRId64 " is gone from the forge (404)", c->id);
		break;
	case REASON_LOOKUP_UNEXPECTED:
		snprintf(buf, n, "forge answered %ld to the lookup of runner %" PRId64,
			 c->lookup_status, c->id);
		break;
	case REASON_NO_CREDENTIALS:
		snprintf(buf, n, "%s has no uuid or token a runner can work with", c->runner_file);
		break;
	case REASON_DECLARED:
		snprintf(buf, n, "runner %" PRId64 "'s credentials still work (Declare)", c->id);
		break;
	case REASON_UNREGISTERED:
		snprintf(buf, n,
			 "the forge does not know runner %" PRId64
			 "'s credentials (unregistered runner)",
			 c->id);
		break;
	case REASON_DECLARE_UNKNOWN:
		snprintf(buf, n,
			 "the forge could not tell whether runner %" PRId64
			 "'s credentials still work (Declare: %s)",
			 c->id, last_answer(c));
		break;
	case REASON_WOULD_DECLARE:
		snprintf(buf, n,
			 "runner %" PRId64 " is to be checked with Declare, which a dry run "
			 "does not send",
			 c->id);
		break;
	case REASON_TOKEN_CHANGED:
		snprintf(buf, n, "registration token changed and the forge cannot look runners up");
		break;
	case REASON_REREGISTER_NO_ADMIN:
		snprintf(buf, n,
			 "--reregister needs the admin token, and %s holds none: changed nothing",
			 c->admin_token_file);
		break;
	case REASON_STATE_LOCKED:
		atomic_lock_name(c->state_file, lock, sizeof(lock));
		snprintf(buf, n,
			 "state file %s: its lock %s was held by another run for all of "
			 "--retry-timeout",
			 c->state_file, lock);
		break;
	case REASON_ADMIN_TOKEN_UNUSABLE:
		snprintf(buf, n, "admin token file %s %s", c->admin_token_file, c->admin_token_why);
		break;
	case REASON_CA_FILE:
		snprintf(buf, n, "--ca-file %s cannot be read: %s", c->ca_file, strerror(c->error));
		break;
	case REASON_SETUP:
		snprintf(buf, n, "cannot set up HTTP: %s", strerror(c->error));
		break;
	case REASON_NO_OPENAT2:
		snprintf(buf, n, "the kernel has no openat2(2): cannot resolve %s safely inside %s",
			 c->runner_file, c->container_root);
		break;
	case REASON_NO_PROC:
		snprintf(buf, n, "/proc is not mounted: cannot read %s safely", c->runner_file);
		break;
	case REASON_UNREADABLE:
		snprintf(buf, n, "cannot read %s inside %s: %s", c->runner_file, c->container_root,
			 strerror(c->error));
		break;
	case REASON_CANNOT_DELETE:
		snprintf(buf, n, "%s, but it cannot be deleted: %s",
			 reason_say(cause, sizeof(cause), c->cause, d, c), strerror(c->error));
		break;
	case REASON_AUTH:
		snprintf(buf, n, "forge rejected the admin token (%ld%s)%s", c->last_status,
			 auth_words[c->last_auth], keeping);
		break;
	case REASON_TLS:
		snprintf(buf, n, "TLS with the forge failed: %s%s", c->last_error, keeping);
		break;
	case REASON_WRONG_PEER:
		snprintf(buf, n, "%s: sent it nothing%s", c->last_error, keeping);
		break;
	case REASON_NO_TOKEN_IN_TIME:
		snprintf(buf, n, "no registration token within --retry-timeout (last answer: %s)",
			 last_answer(c));
		break;
	case REASON_NO_TOKEN_ROUTE:
		snprintf(buf, n, "forge has none of %s", c->token_routes);
		break;
	case REASON_TOKEN_UNEXPECTED:
		snprintf(buf, n, "forge answered %ld to the registration-token request",
			 c->last_status);
		break;
	case REASON_NOT_A_TOKEN:
		snprintf(buf, n, "forge's answer is not a valid registration token");
		break;
	case REASON_REGISTER_NO_ANSWER:
		snprintf(buf, n, "no answer to Register within --retry-timeout (last answer: %s)",
			 last_answer(c));
		break;
	case REASON_REGISTER_REFUSED:
		snprintf(buf, n, "the forge registered no runner (%ld%s%s)", c->last_status,
			 c->last_message && c->last_message[0] ? ": " : "",
			 c->last_message ? c->last_message : "");
		break;
	case REASON_RUNNER_UNWRITABLE:
		if (c->rewrote)
			snprintf(buf, n, "cannot rewrite %s inside %s: %s", c->runner_file,
				 c->container_root, strerror(c->error));
		else
			snprintf(buf, n,
				 "registered runner %" PRId64 ", but cannot write %s inside %s: %s",
				 c->registered_id, c->runner_file, c->container_root,
				 strerror(c->error));
		break;
	case REASON_OUTPUT:
		atomic_lock_name(c->output, lock, sizeof(lock));
		if (c->error == EWOULDBLOCK)
			snprintf(buf, n,
				 "cannot write %s: its lock %s was held by another run for all "
				 "of --retry-timeout",
				 c->output, lock);
		else if (c->error == ENOLCK)
			snprintf(buf, n,
				 "cannot write %s: its lock %s is not a regular file of ours "
				 "with mode 0600",
				 c->output, lock);
		else
			snprintf(buf, n, "cannot write %s: %s", c->output, strerror(c->error));
		break;
	}
	return buf;
}

/* Adds how long the run waited for the admin token file. */
static char *say_wait(char *buf, size_t n, const struct reason_context *c)
{
	size_t len = strlen(buf);
	int64_t tenths = (c->waited_ms + 50) / 100; /* to the nearest tenth */

	if (c->waited_ms > 0 && len < n)
		snprintf(buf + len, n - len,
			 " (waited %" PRId64 ".%01" PRId64 " s for the admin token file)",
			 tenths / 10, tenths % 10);
	return buf;
}

/* What became of .runner, as the end of a sentence. */
static const char *runner_words(const struct decision *d)
{
	if (d->action == ACTION_PLACEHOLDER)
		return ""; /* nothing was decided about it */
	switch (d->fate) {
	case FATE_CONFIRMED:
		return "; keeping .runner";
	case FATE_UNVERIFIED:
		return "; keeping .runner unverified";
	case FATE_DISCARDED:
		return "; deleted .runner";
	case FATE_ABSENT:
		break;
	}
	return "";
}

/* What a dry run would do to .runner, as the start of "would ...". */
static const char *dry_runner_words(const struct decision *d, const struct reason_context *c)
{
	if (d->action == ACTION_KEEP)
		return c->rewrote ? "keep .runner, rewrite it with the new labels or address, and "
				  : "keep .runner and ";
	if (d->action == ACTION_REREGISTER)
		return c->host ? "delete .runner, register a runner, write .runner and "
			       : "delete .runner and ";
	if (d->action == ACTION_REGISTER && c->host)
		return "register a runner, write .runner and ";
	return "";
}

/* What host registration did to .runner besides, as a sentence's middle. */
static void host_words(char *buf, size_t n, const struct decision *d,
		       const struct reason_context *c)
{
	buf[0] = '\0';
	if (c->dry_run || !c->host || d->action == ACTION_PLACEHOLDER)
		return;
	if (c->registered_id)
		snprintf(buf, n, "; registered runner %" PRId64 " and wrote .runner",
			 c->registered_id);
	else if (c->rewrote)
		snprintf(buf, n, "; rewrote .runner with the new labels or address");
}

char *reason_conclude(char *buf, size_t n, const struct decision *d, const struct reason_context *c)
{
	char why[256]; /* a cause is cut at 255 bytes */
	char more[96];

	reason_say(why, sizeof(why), d->reason, d, c);
	host_words(more, sizeof(more), d, c);
	if (d->failure != FAILURE_NONE)
		snprintf(buf, n, "%s", why);
	else if (c->dry_run)
		snprintf(buf, n, "%s: would %swrite %s", why, dry_runner_words(d, c),
			 reason_token_words(d->output));
	else
		snprintf(buf, n, "%s%s%s; wrote %s to %s", why, runner_words(d), more,
			 reason_token_words(d->output), c->output);
	return say_wait(buf, n, c);
}

char *reason_announce(char *buf, size_t n, const struct decision *d, const struct reason_context *c)
{
	char why[256]; /* a cause is cut at 255 bytes */

	if (d->fate == FATE_DISCARDED)
		snprintf(buf, n, "%s: re-registering",
			 reason_say(why, sizeof(why), d->reason, d, c));
	else
		snprintf(buf, n, "%s: registering", reason_say(why, sizeof(why), d->reason, d, c));
	return say_wait(buf, n, c);
}
