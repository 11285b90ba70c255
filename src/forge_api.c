#include <inttypes.h>
#include <stdio.h>

#include "forge_api.h"

#define API "/api/v1"

static const char *const lookup_routes[LOOKUP_ROUTES] = {
    [LOOKUP_DESIGN] = "/admin/runners/",
    [LOOKUP_ACTIONS] = "/admin/actions/runners/",
};

#define TOKEN_GET_ADMIN	   "/admin/runners/registration-token" /* Forgejo 7+, Gitea 1.22-1.25 */
#define TOKEN_GET_ACTIONS  "/admin/actions/runners/registration-token" /* Forgejo 15+ */
#define TOKEN_POST_ACTIONS "/admin/actions/runners/registration-token" /* Gitea 1.24+ */

static const struct {
	const char *method, *path;
} token_routes[TOKEN_ROUTES] = {
    [TOKEN_ROUTE_GET_ADMIN] = {"GET", TOKEN_GET_ADMIN},
    [TOKEN_ROUTE_GET_ACTIONS] = {"GET", TOKEN_GET_ACTIONS},
    [TOKEN_ROUTE_POST_ACTIONS] = {"POST", TOKEN_POST_ACTIONS},
};

/* The k-th route to ask of n: the remembered one (when first names one),
 * then the others in their order.  -1: none is left. */
static int route_order(int first, int n, int k)
{
	if (first < 0 || first >= n)
		return k < n ? k : -1;
	if (k == 0)
		return first;
	k--;
	if (k >= first)
		k++; /* asked first already */
	return k < n ? k : -1;
}

#define DELETE_ROUTE "/admin/actions/runners/" /* Forgejo 15+, Gitea 1.24+ */

enum verdict forge_lookup(struct forge *f, int64_t id, int64_t deadline_ms, struct forge_answer *a,
			  enum lookup_route *route)
{
	enum verdict v = VERDICT_NO_ROUTE;
	int first = (int)*route, i;
	char path[64];

	for (int k = 0; (i = route_order(first, LOOKUP_ROUTES, k)) >= 0; k++) {
		snprintf(path, sizeof(path), "%s%" PRId64, lookup_routes[i], id);
		v = forge_ask(f, "GET", path, ROUTE_LOOKUP, deadline_ms, a);
		*route = (enum lookup_route)i;
		if (v != VERDICT_NO_ROUTE)
			break;
	}
	return v;
}

enum verdict forge_lookup_listed(struct forge *f, enum lookup_route route, int64_t id,
				 int64_t deadline_ms, struct forge_answer *a)
{
	char path[64];

	snprintf(path, sizeof(path), "%s%" PRId64, lookup_routes[route], id);
	return forge_ask(f, "GET", path, ROUTE_CLEANUP, deadline_ms, a);
}

enum verdict forge_registration_token(struct forge *f, int64_t deadline_ms, struct forge_answer *a,
				      enum token_route *route)
{
	enum verdict v = VERDICT_NO_ROUTE;
	int first = (int)*route, i;

	for (int k = 0; (i = route_order(first, TOKEN_ROUTES, k)) >= 0; k++) {
		v = forge_ask(f, token_routes[i].method, token_routes[i].path, ROUTE_TOKEN,
			      deadline_ms, a);
		*route = (enum token_route)i;
		if (v != VERDICT_NO_ROUTE)
			break;
	}
	return v;
}

const char *forge_token_routes(void)
{
	return "GET " API TOKEN_GET_ADMIN ", GET " API TOKEN_GET_ACTIONS
	       ", POST " API TOKEN_POST_ACTIONS;
}

enum verdict forge_delete_runner(struct forge *f, int64_t id, int64_t deadline_ms,
				 struct forge_answer *a)
{
	char path[64];

	snprintf(path, sizeof(path), DELETE_ROUTE "%" PRId64, id);
	return forge_ask(f, "DELETE", path, ROUTE_CLEANUP, deadline_ms, a);
}
