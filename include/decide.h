/* The boot flow's decisions, as pure functions: the facts a run has
 * gathered so far in, the next step and the runner's fate out.  No libcurl,
 * no jansson, no clock, no files: every rule of the flow lives here and is
 * tested by table (tests/unit/test_decide.c). */
#pragma once

#include <stdbool.h>

#include "answer.h"
#include "runner.h"

/* What the driver does next.  Reading the admin token and .runner always
 * come first and are not decisions. */
enum step {
	STEP_LOOKUP,	   /* ask the forge about the runner in .runner */
	STEP_DISCARD,	   /* delete .runner */
	STEP_FETCH,	   /* fetch the registration token */
	STEP_DECLARE,	   /* host registration: check .runner's credentials with Declare */
	STEP_REGISTER,	   /* host registration: register a runner */
	STEP_WRITE_RUNNER, /* host registration: write .runner (the new one, or new labels) */
	STEP_WRITE,	   /* write the output */
	STEP_CLEANUP,	   /* delete superseded runners (ghosts.c) */
	STEP_DONE,
};

/* What .runner held when it was read. */
enum held {
	HELD_NOTHING,	  /* no such file (or no directory above it) */
	HELD_RUNNER,	  /* JSON with a runner id */
	HELD_NOT_REGULAR, /* a symlink, FIFO, directory, ... */
	HELD_TOO_LARGE,
	HELD_MALFORMED,	 /* not JSON, or no integer id of at least 1 */
	HELD_NO_OPENAT2, /* could not be read safely: the kernel lacks openat2 */
	HELD_NO_PROC,	 /* ... /proc is not mounted */
	HELD_UNREADABLE, /* ... another error */
};

/* What becomes of the runner in .runner. */
enum fate {
	FATE_ABSENT,	 /* there is none: register */
	FATE_CONFIRMED,	 /* the forge confirmed it: kept */
	FATE_UNVERIFIED, /* the forge could not be asked or could not tell: kept */
	FATE_DISCARDED,	 /* deleted: re-register */
};

/* Whether .runner stays (confirmed or unverified). */
static inline bool fate_is_kept(enum fate fate)
{
	return fate == FATE_CONFIRMED || fate == FATE_UNVERIFIED;
}

enum action {
	ACTION_PLACEHOLDER, /* no admin token (yet): the forge was not asked */
	ACTION_KEEP,	    /* .runner kept (verified, or unverifiable) */
	ACTION_REGISTER,    /* no .runner: registration token written */
	ACTION_REREGISTER,  /* .runner deleted: registration token written */
	ACTION_FAIL,	    /* stopped; see the failure */
};

/* What the output holds after the run. */
enum token_source {
	TOKEN_CURRENT,	   /* the token the forge gave in this run */
	TOKEN_REMEMBERED,  /* the last one written, from the state file */
	TOKEN_PLACEHOLDER, /* "placeholder" */
	TOKEN_UNCHANGED,   /* an existing output left as it was (failure, or nothing to do) */
};

/* Why a run stopped; main maps each to an exit status. */
enum failure {
	FAILURE_NONE,
	FAILURE_ADMIN_TOKEN,	    /* the admin token file is unusable */
	FAILURE_CA_FILE,	    /* --ca-file cannot be read */
	FAILURE_TLS,		    /* TLS failed in a way asking again cannot fix */
	FAILURE_WRONG_PEER,	    /* another user than --forge-user holds the forge's end */
	FAILURE_SETUP,		    /* libcurl could not be set up */
	FAILURE_NO_OPENAT2,	    /* the kernel lacks openat2 */
	FAILURE_OUTPUT,		    /* the output cannot be written */
	FAILURE_RUNNER_IO,	    /* .runner cannot be read or removed */
	FAILURE_NO_TOKEN,	    /* no registration token within --retry-timeout */
	FAILURE_NOT_A_TOKEN,	    /* the forge's answer is not a registration token */
	FAILURE_AUTH,		    /* the forge rejected the admin token */
	FAILURE_REGISTER_NO_ANSWER, /* host registration: no answer to Register in time */
	FAILURE_REGISTER_REFUSED,   /* host registration: an answer without a runner */
};

/* Why: the cause of a fate, or of a failure.  Sentences: reason.h. */
enum reason {
	REASON_NONE,
	/* why .runner stays or goes */
	REASON_NO_ADMIN_TOKEN,	  /* the forge cannot be asked yet */
	REASON_NO_RUNNER,	  /* nothing to keep: registering */
	REASON_STILL_REGISTERED,  /* the forge confirmed it */
	REASON_NO_LOOKUP_ROUTE,	  /* the forge cannot look runners up */
	REASON_NO_ANSWER,	  /* the lookup got no answer */
	REASON_NOT_A_RUNNER,	  /* a 200 lookup whose body is no runner object */
	REASON_STILL_BUSY,	  /* the lookup was still busy at the deadline */
	REASON_REREGISTER,	  /* --reregister */
	REASON_NOT_REGULAR,	  /* .runner is a symlink, FIFO, ... */
	REASON_TOO_LARGE,	  /* .runner is over RUNNER_FILE_MAX */
	REASON_MALFORMED,	  /* .runner has no runner id */
	REASON_OTHER_UUID,	  /* the id now names another runner */
	REASON_OTHER_NAME,	  /* ... told by name (no uuid to compare) */
	REASON_GONE,		  /* the forge does not know the runner */
	REASON_LOOKUP_UNEXPECTED, /* any other answer to the lookup */
	REASON_TOKEN_CHANGED,	  /* a new token where the forge cannot look up */
	REASON_NO_CREDENTIALS,	  /* host registration: .runner has no uuid or token */
	REASON_DECLARED,	  /* host registration: Declare took .runner's credentials */
	REASON_UNREGISTERED,	  /* ... the forge does not know them */
	REASON_DECLARE_UNKNOWN,	  /* ... it could not tell */
	REASON_WOULD_DECLARE,	  /* ... a dry run asks no Declare */
	/* why a run stops (or, with .runner kept, warns and goes on) */
	REASON_ADMIN_TOKEN_UNUSABLE,
	REASON_REREGISTER_NO_ADMIN, /* --reregister, and no admin token to do it with */
	REASON_STATE_LOCKED,	    /* another run held the state file's lock throughout */
	REASON_CA_FILE,
	REASON_SETUP,
	REASON_NO_OPENAT2,
	REASON_NO_PROC,
	REASON_UNREADABLE,
	REASON_CANNOT_DELETE,
	REASON_AUTH, /* the admin token was rejected */
	REASON_TLS,
	REASON_WRONG_PEER,	   /* the forge's end is not --forge-user's: nothing sent */
	REASON_NO_TOKEN_IN_TIME,   /* the fetch was still failing at the deadline */
	REASON_NO_TOKEN_ROUTE,	   /* the forge has none of the token routes */
	REASON_TOKEN_UNEXPECTED,   /* any other answer to the fetch */
	REASON_NOT_A_TOKEN,	   /* a 200 without a valid token */
	REASON_OUTPUT,		   /* the output cannot be written */
	REASON_REGISTER_NO_ANSWER, /* no answer to Register in time */
	REASON_REGISTER_REFUSED,   /* an answer without a runner */
	REASON_RUNNER_UNWRITABLE,  /* .runner cannot be written into the container */
};

/* Everything a decision depends on.  The driver sets each fact once it
 * knows it; the "asked" flags say which steps have run (a dry run marks a
 * step it only pretends to do). */
struct facts {
	/* the command line */
	bool host; /* --registration=host */
	bool reregister;
	bool placeholder_on_keep;
	bool dry_run;
	bool cleanup;

	bool admin;	 /* an admin token was read: the forge can be asked */
	bool waited;	 /* there is none after a wait for it */
	enum held held;	 /* what .runner held */
	bool creds;	 /* ... HELD_RUNNER: a uuid and a token (host registration needs them) */
	bool differs;	 /* ... its labels or address are not the options' */
	bool remembered; /* the state file holds a registration token */
	bool no_uuids;	 /* the forge's runner objects showed no uuid on an earlier boot */

	bool looked_up;		   /* STEP_LOOKUP ran */
	enum verdict lookup;	   /* its verdict */
	bool runner_object;	   /* VERDICT_OK: the answer is the runner's object, */
	bool forge_uuid;	   /* ... it shows a uuid (Forgejo; Gitea's has none), */
	enum runner_match match;   /* ... and how the forge's runner compares */
	bool discarded;		   /* STEP_DISCARD ran */
	bool fetched;		   /* STEP_FETCH ran */
	enum verdict fetch;	   /* its verdict */
	bool token_valid;	   /* VERDICT_OK: the answer holds a valid token */
	bool token_changed;	   /* ... that differs from the remembered one */
	bool declared;		   /* STEP_DECLARE ran */
	enum verdict declare;	   /* its verdict */
	bool registered;	   /* STEP_REGISTER ran */
	enum verdict registration; /* its verdict (VERDICT_OK: a runner) */
	bool runner_written;	   /* STEP_WRITE_RUNNER ran */
	bool written;		   /* STEP_WRITE ran */
	bool cleaned;		   /* STEP_CLEANUP ran */
};

struct decision {
	enum step next;
	enum fate fate;
	enum action action;
	enum token_source output; /* what STEP_WRITE writes; TOKEN_UNCHANGED on a failure */
	enum failure failure;	  /* FAILURE_NONE, or why the run stops now */
	enum reason reason;	  /* why: the failure's, else the fate's cause */
	enum reason warning;	  /* REASON_NONE, or a problem the run goes on despite */
	bool worth_a_warning;	  /* the final sentence is a warning, not news */
};

/* The next thing to do, given the facts.  Pure; total over every
 * combination of facts. */
struct decision decide(const struct facts *f);

/* "keep", "register", ... and "current", "remembered", ... for --json. */
const char *action_name(enum action a);
const char *token_source_name(enum token_source t);
