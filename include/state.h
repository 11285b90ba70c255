/* What the host remembers across boots: the last registration token written
 * and the runners of this host the forge has known.  Root-only, host-side. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atomic.h"
#include "runner.h"

#define STATE_FILE_MAX_KIB   64
#define STATE_FILE_MAX	     (STATE_FILE_MAX_KIB * 1024)
#define STATE_SUPERSEDED_MAX 16

struct state_runner {
	int64_t id; /* 0: none */
	char uuid[RUNNER_UUID_MAX + 1];
	char name[RUNNER_NAME_MAX + 1];
	char token[RUNNER_TOKEN_MAX + 1]; /* superseded, host registration: its own secret; "" */
};

struct state {
	char *token;		       /* last token written (never the placeholder); wiped */
	struct state_runner confirmed; /* the last runner the forge confirmed */
	struct state_runner written;   /* the last runner this tool registered and wrote */
	int lookup_route;	       /* the lookup route that answered last; -1: none */
	bool no_uuids;		       /* ... its runner objects show no uuid (Gitea) */
	int token_route;	       /* the registration-token route that answered; -1 */
	/* Runners this host held that were superseded, oldest first; each a
	 * candidate for the ghost clean-up.  Distinct by id and uuid. */
	struct state_runner superseded[STATE_SUPERSEDED_MAX];
	size_t n_superseded;
	char *loaded; /* the file's bytes as read, so an unchanged state is not rewritten; wiped */
	size_t loaded_len;
	bool replace; /* a file is there that was not believed: write one anyway */
};

/* Takes the lock of the state file path (its directory created 0700),
 * waiting until deadline_ms: the lock is held from reading the state to
 * writing it, so that concurrent runs take turns.  See atomic_lock. */
int state_lock(struct atomic_lock *l, const char *path, int64_t deadline_ms);

/* Reads path into *s.  A missing file is an empty state (returns 0).  A file
 * that is not a regular file owned by us that only we can read and write,
 * is over STATE_FILE_MAX bytes, or is not the expected JSON, leaves *s empty
 * (but for s->replace) and returns -errno with *why set to a static
 * description.  Never logs. */
int state_load(const char *path, struct state *s, const char **why);

/* Writes *s to the locked state file (file 0600, replaced atomically) unless
 * it would write exactly the bytes that were loaded, or there is nothing to
 * remember and no file to replace.  Returns 1 when written, 0 when
 * unchanged, or -errno. */
int state_save(const struct atomic_lock *l, const struct state *s);

/* Wipes and frees. */
void state_clear(struct state *s);

/* Remembers token (valid, copied) as the last one written.  Returns 0 or -ENOMEM. */
int state_remember_token(struct state *s, const char *token);

/* Adds a superseded runner (needs an id and a uuid) unless it is listed
 * already, with its own token when the host registered it (else NULL); the
 * oldest entry goes beyond STATE_SUPERSEDED_MAX.  Only state_confirm takes
 * a runner off the list. */
void state_supersede(struct state *s, int64_t id, const char *uuid, const char *token);

/* Remembers the runner this tool registered and wrote into the container. */
void state_remember_written(struct state *s, int64_t id, const char *uuid);

/* Forgets the registration token (a host that registers itself keeps none). */
void state_forget_token(struct state *s);

/* Records r as the confirmed runner.  A different runner remembered as
 * confirmed before is superseded; r's id leaves the list. */
void state_confirm(struct state *s, const struct runner_info *r);

/* Removes entry i of the superseded list. */
void state_forget(struct state *s, size_t i);
