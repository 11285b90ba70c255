/* The clean-up of superseded runners, with the admin token that reaches
 * every runner of the forge.  Rules this file keeps:
 *  1. A listed runner is deleted only when the forge shows it with the uuid
 *     this host listed, with instance scope (owner_id and repo_id both 0),
 *     with the name the forge shows for this host's confirmed runner, and
 *     offline: a runner in use, an id the forge gave another runner since
 *     (a wipe), a user's or a repository's runner, or one a planted,
 *     cloned or restored .runner named is never touched.
 *  2. What fails scope or name is forgotten with a warning, never deleted;
 *     what the forge does not tell about stays listed for a later boot.
 *  3. Each request is made once, within the caller's deadline. */
#include <inttypes.h>
#include <string.h>

#include "clock.h"
#include "ghosts.h"
#include "log.h"
#include "runnerproto.h"

#define JUDGED(f, r) ((struct ghost_judgement){(f), (r)})

struct ghost_judgement ghosts_judge(const struct state_runner *listed, const char *name,
				    enum verdict v, const struct runner_info *shown,
				    enum ghost_proof proof)
{
	bool by_credentials;

	if (v == VERDICT_GONE)
		return JUDGED(GHOST_FORGET, GHOST_GONE);
	if (v != VERDICT_OK)
		return JUDGED(GHOST_LISTED, GHOST_NO_ANSWER);
	if (!shown)
		return JUDGED(GHOST_LISTED, GHOST_NOT_A_RUNNER);
	/* Gitea shows no uuid, nor a scope: the listed runner's own
	 * credentials, if the host registered it, tell instead. */
	by_credentials = shown->uuid_field == FIELD_ABSENT;
	if (by_credentials) {
		if (!listed->token[0])
			return JUDGED(GHOST_FORGET, GHOST_NO_UUID);
	} else {
		if (shown->uuid_field != FIELD_SET || strcmp(shown->uuid, listed->uuid) != 0)
			return JUDGED(GHOST_FORGET, GHOST_OTHER_RUNNER);
		if (!shown->instance_scope)
			return JUDGED(GHOST_FORGET, GHOST_NOT_INSTANCE);
	}
	if (!name[0] || shown->name_field != FIELD_SET || strcmp(shown->name, name) != 0)
		return JUDGED(GHOST_FORGET, GHOST_OTHER_NAME);
	if (strcmp(shown->status, "offline") != 0)
		return JUDGED(GHOST_SPARE, GHOST_IN_USE);
	if (!by_credentials)
		return JUDGED(GHOST_DELETE, GHOST_OURS_OFFLINE);
	/* Asked only now: a Declare sets the labels of the runner it names. */
	switch (proof) {
	case PROOF_NONE:
		return JUDGED(GHOST_PROVE, GHOST_NO_UUID);
	case PROOF_ANSWERED:
		return JUDGED(GHOST_DELETE, GHOST_PROVEN);
	case PROOF_REFUSED:
		return JUDGED(GHOST_FORGET, GHOST_NOT_PROVEN);
	case PROOF_FAILED:
		break;
	}
	return JUDGED(GHOST_LISTED, GHOST_NO_ANSWER);
}

/* Says what the judgement means for runner id; false when the loop should
 * stop asking. */
static bool say_judgement(int64_t id, const char *name, struct ghost_judgement j,
			  const struct runner_info *shown, const struct forge_answer *a,
			  enum verdict v)
{
	switch (j.reason) {
	case GHOST_GONE:
		log_debug("superseded runner %" PRId64 " is gone from the forge already", id);
		break;
	case GHOST_NO_ANSWER:
		log_warning("cannot look up superseded runner %" PRId64
			    " (%s); next boot tries again",
			    id, a->status ? verdict_name(v) : a->error);
		return false; /* a forge that does not answer one will not answer the next */
	case GHOST_NOT_A_RUNNER:
		log_warning("the forge's answer to the lookup of superseded runner %" PRId64
			    " is not a runner object; next boot tries again",
			    id);
		return false;
	case GHOST_NOT_INSTANCE:
		log_warning("runner %" PRId64
			    " on the forge belongs to a user or a repository, not "
			    "to the instance: never this host's; forgotten, not deleted",
			    id);
		break;
	case GHOST_OTHER_NAME:
		log_warning("runner %" PRId64 " on the forge is named \"%s\", not \"%s\" as this "
			    "host's runner: not proven ours; forgotten, not deleted",
			    id, shown->name_field == FIELD_SET ? shown->name : "", name);
		break;
	case GHOST_NO_UUID:
		log_debug("superseded runner %" PRId64 ": the forge shows no uuid, so it cannot be "
			  "proven ours; never deleted, forgotten",
			  id);
		break;
	case GHOST_OTHER_RUNNER:
		log_debug("runner %" PRId64 " on the forge is another runner now; forgotten", id);
		break;
	case GHOST_IN_USE:
		log_warning("superseded runner %" PRId64 " is %s, not offline: something uses its "
			    "credentials; not deleting it",
			    id, shown->status[0] ? shown->status : "of unknown status");
		break;
	case GHOST_NOT_PROVEN:
		log_warning("superseded runner %" PRId64 ": the forge does not take its own "
			    "credentials as that runner's; forgotten, not deleted",
			    id);
		break;
	case GHOST_OURS_OFFLINE:
	case GHOST_PROVEN:
		break;
	}
	return true;
}

/* Deletes runner id.  Returns false when the loop should stop. */
static bool delete_ghost(struct forge *f, int64_t id, int64_t deadline, bool *deleted)
{
	struct forge_answer a;
	enum verdict v = forge_delete_runner(f, id, deadline, &a);

	*deleted = false;
	if (v == VERDICT_NO_ROUTE) {
		log_debug("forge has no DELETE /api/v1/admin/actions/runners/{id}; no clean-up");
		return false;
	}
	if (v != VERDICT_OK && v != VERDICT_GONE) {
		log_warning("cannot delete superseded runner %" PRId64
			    " (%s); next boot tries again",
			    id, a.status ? verdict_name(v) : a.error);
		return false;
	}
	if (v == VERDICT_OK) {
		log_info("deleted superseded runner %" PRId64 " from the forge", id);
		*deleted = true;
	}
	return true;
}

/* A Declare with listed's own credentials: are they runner listed->id's? */
static enum ghost_proof prove(struct forge *f, const struct state_runner *listed,
			      int64_t deadline_ms)
{
	struct forge_answer a;
	int64_t id;
	enum verdict v =
	    runnerproto_declare(f, listed->uuid, listed->token, NULL, 0, deadline_ms, &a, &id);

	if (v == VERDICT_OK)
		return id == listed->id ? PROOF_ANSWERED : PROOF_REFUSED;
	return v == VERDICT_GONE ? PROOF_REFUSED : PROOF_FAILED;
}

void ghosts_clean(struct forge *f, enum lookup_route route, struct state *s, const char *name,
		  int64_t deadline_ms, bool dry_run, int64_t *deleted, size_t *n_deleted)
{
	size_t i = 0;

	while (i < s->n_superseded) {
		const struct state_runner *e = &s->superseded[i];
		int64_t id = e->id;
		struct runner_info shown;
		struct forge_answer a;
		struct ghost_judgement j;
		const struct runner_info *object;
		enum verdict v;
		bool gone;

		if (clock_now_ms() >= deadline_ms) {
			log_warning(
			    "clean-up of superseded runners ran out of time; next boot goes on");
			return;
		}
		v = forge_lookup_listed(f, route, id, deadline_ms, &a);
		object = v == VERDICT_OK && answer_runner(&a, id, &shown) == 0 ? &shown : NULL;
		j = ghosts_judge(e, name, v, object, PROOF_NONE);
		if (j.fate == GHOST_PROVE && dry_run) {
			log_info("would delete superseded runner %" PRId64
				 " from the forge once its own credentials prove it ours",
				 id);
			deleted[(*n_deleted)++] = id;
			i++;
			continue;
		}
		if (j.fate == GHOST_PROVE)
			j = ghosts_judge(e, name, v, object, prove(f, e, deadline_ms));
		if (!say_judgement(id, name, j, &shown, &a, v))
			return;
		switch (j.fate) {
		case GHOST_FORGET:
			state_forget(s, i);
			continue;
		case GHOST_SPARE:
		case GHOST_LISTED:
		case GHOST_PROVE:
			i++;
			continue;
		case GHOST_DELETE:
			break;
		}
		if (dry_run) {
			log_info("would delete superseded runner %" PRId64 " from the forge", id);
			deleted[(*n_deleted)++] = id;
			i++;
			continue;
		}
		if (!delete_ghost(f, id, deadline_ms, &gone))
			return;
		if (gone)
			deleted[(*n_deleted)++] = id;
		state_forget(s, i);
	}
}
