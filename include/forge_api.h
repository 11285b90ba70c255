/* The forge's verbs: look a runner up, fetch the registration token, delete
 * a runner.  Which routes each forge version has, and the fallbacks between
 * them, live here (README, "Forge compatibility"). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "forge.h"

/* The runner lookup routes, in the order they are tried. */
enum lookup_route {
	LOOKUP_DESIGN,	/* GET /admin/runners/{id}: the hive's design */
	LOOKUP_ACTIONS, /* GET /admin/actions/runners/{id}: Forgejo 15+, Gitea 1.24+ */
	LOOKUP_ROUTES,
};

/* GET the runner with this id on each lookup route in turn, while the one
 * before says it does not exist: first the route in *route when it names
 * one (the one that answered on an earlier boot), then the others in their
 * order.  Sets *route to the route that answered (the last one tried).
 * Returns the verdict (VERDICT_NO_ROUTE: the forge has no lookup route at
 * all). */
enum verdict forge_lookup(struct forge *f, int64_t id, int64_t deadline_ms, struct forge_answer *a,
			  enum lookup_route *route);

/* The same for a superseded runner of the clean-up: only the route that
 * answered forge_lookup, asked once. */
enum verdict forge_lookup_listed(struct forge *f, enum lookup_route route, int64_t id,
				 int64_t deadline_ms, struct forge_answer *a);

/* The registration-token routes, in the order they are tried. */
enum token_route {
	TOKEN_ROUTE_GET_ADMIN,	  /* GET /admin/runners/registration-token */
	TOKEN_ROUTE_GET_ACTIONS,  /* GET /admin/actions/runners/registration-token */
	TOKEN_ROUTE_POST_ACTIONS, /* POST /admin/actions/runners/registration-token */
	TOKEN_ROUTES,
};

/* The registration token: each token route in turn while the one before
 * does not exist, the one in *route first when it names one (as
 * forge_lookup), and *route set to the one that answered.
 * VERDICT_NO_ROUTE: none of them does (forge_token_routes names them). */
enum verdict forge_registration_token(struct forge *f, int64_t deadline_ms, struct forge_answer *a,
				      enum token_route *route);

/* "GET /api/v1/..., GET /api/v1/..., POST /api/v1/...": the token routes,
 * for a message. */
const char *forge_token_routes(void);

/* DELETE the runner with this id, once (Forgejo 15+, Gitea 1.24+). */
enum verdict forge_delete_runner(struct forge *f, int64_t id, int64_t deadline_ms,
				 struct forge_answer *a);
