/* Superseded runners of this host ("ghosts"): a pure judge of what the
 * forge shows for each, and the bounded loop that asks and deletes. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "answer.h"
#include "forge_api.h"
#include "runner.h"
#include "state.h"

enum ghost_fate {
	GHOST_DELETE, /* provably ours and dead */
	GHOST_SPARE,  /* ours, but something uses it: stays listed */
	GHOST_FORGET, /* not ours (any more), or gone: off the list, never deleted */
	GHOST_LISTED, /* the forge did not tell: stays listed for a later boot */
	GHOST_PROVE,  /* to be proven ours with its own credentials (Declare) */
};

/* What a Declare with a listed runner's own credentials said. */
enum ghost_proof {
	PROOF_NONE,	/* none was made */
	PROOF_ANSWERED, /* the forge took them, for this very id */
	PROOF_REFUSED,	/* it does not know them, or they are another runner's */
	PROOF_FAILED,	/* it did not tell */
};

enum ghost_reason {
	GHOST_OURS_OFFLINE, /* the listed uuid, instance scope, our name, offline */
	GHOST_IN_USE,	    /* the listed uuid, not offline */
	GHOST_GONE,	    /* the forge does not know the id */
	GHOST_NO_UUID,	    /* the forge shows no uuid: cannot be proven ours */
	GHOST_OTHER_RUNNER, /* the id now names another runner */
	GHOST_NOT_INSTANCE, /* a user's or a repository's runner: never this host's */
	GHOST_OTHER_NAME,   /* not the name the forge shows for this host's runner */
	GHOST_NO_ANSWER,    /* the lookup failed */
	GHOST_NOT_A_RUNNER, /* a 200 whose body is no runner object */
	GHOST_PROVEN,	    /* no uuid shown, its own credentials answered for it; offline */
	GHOST_NOT_PROVEN,   /* ... they were refused, or are another runner's */
};

struct ghost_judgement {
	enum ghost_fate fate;
	enum ghost_reason reason;
};

/* Judges a listed runner by the forge's answer to its lookup: the verdict,
 * and for VERDICT_OK the runner object it showed (NULL when the body is not
 * one).  name is what the forge calls this host's confirmed runner ("":
 * unknown).  On a forge that shows no uuid (Gitea), a runner this host
 * registered itself (its own token listed) can still be proven ours: the
 * judgement is GHOST_PROVE until proof says what a Declare with its
 * credentials answered.  Pure. */
struct ghost_judgement ghosts_judge(const struct state_runner *listed, const char *name,
				    enum verdict v, const struct runner_info *shown,
				    enum ghost_proof proof);

/* Looks each listed runner up (route: the lookup route that answered this
 * run; name: the forge's name for the runner it confirmed) and deletes those
 * judged GHOST_DELETE, or with dry_run only says it would.  One attempt per request, until
 * deadline_ms; any failure is one warning and leaves the rest of the list for a later boot.
 * Forgotten and deleted runners leave s's list; the ids deleted (a dry run: that would be) are
 * added to deleted[*n_deleted], which has room for STATE_SUPERSEDED_MAX. */
void ghosts_clean(struct forge *f, enum lookup_route route, struct state *s, const char *name,
		  int64_t deadline_ms, bool dry_run, int64_t *deleted, size_t *n_deleted);
