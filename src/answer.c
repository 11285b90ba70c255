#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "answer.h"
#include "runner.h"
#include "token.h"

static json_t *body_json(const struct forge_answer *a)
{
	if (!a->body || a->body_len == 0 || a->body_truncated)
		return NULL;
	return json_loadb(a->body, a->body_len, JSON_REJECT_DUPLICATES, NULL);
}

static bool body_is_json_object(const struct forge_answer *a)
{
	json_t *j = body_json(a);
	bool is_object = json_is_object(j);

	json_decref(j);
	return is_object;
}

enum verdict answer_classify(const struct forge_answer *a, enum route_kind kind)
{
	long s = a->status;

	if (s == 0 && a->wrong_peer)
		return VERDICT_WRONG_PEER;
	if (s == 0)
		return a->tls_failed ? VERDICT_TLS_FAILED : VERDICT_NO_ANSWER;
	if (s == 200)
		return VERDICT_OK;
	if (s == 401 || s == 403)
		return VERDICT_AUTH_REJECTED;
	/* On a token route a 404 of either kind and a 405 mean "not this route
	 * here": Gitea 1.24+ routes a GET of the actions token path into its
	 * runner lookup, which answers a JSON 404. */
	if (kind == ROUTE_TOKEN && (s == 404 || s == 405))
		return VERDICT_NO_ROUTE;
	if (s == 404)
		return body_is_json_object(a) ? VERDICT_GONE : VERDICT_NO_ROUTE;
	if (kind == ROUTE_CLEANUP && s == 204)
		return VERDICT_OK;
	if (kind == ROUTE_CLEANUP && s == 405)
		return VERDICT_NO_ROUTE;
	if (s == 408 || s == 429)
		return VERDICT_TRANSIENT;
	/* The lookup waits out any server error; the token fetch only those
	 * that mean "busy" (a 501 or 505 will not get better by waiting). */
	if (kind != ROUTE_TOKEN && s >= 500 && s <= 599)
		return VERDICT_TRANSIENT;
	if (kind == ROUTE_TOKEN && (s == 500 || s == 502 || s == 503 || s == 504))
		return VERDICT_TRANSIENT;
	return VERDICT_UNEXPECTED;
}

bool answer_is_retryable(enum verdict v, enum route_kind kind)
{
	/* A lookup with no answer keeps .runner at once: the runner that the
	 * forge cannot be asked about is given the benefit of the doubt.  The
	 * clean-up is never worth a retry: a later boot tries again. */
	if (kind == ROUTE_CLEANUP)
		return false;
	if (v == VERDICT_NO_ANSWER)
		return kind == ROUTE_TOKEN;
	return v == VERDICT_TRANSIENT;
}

int answer_runner(const struct forge_answer *a, int64_t id, struct runner_info *info)
{
	if (!a->body || a->body_truncated || runner_parse_object(a->body, a->body_len, info) < 0 ||
	    info->id != id)
		return -EBADMSG;
	return 0;
}

int answer_token(const struct forge_answer *a, char **token)
{
	json_t *j = body_json(a);
	json_t *t = json_object_get(j, "token");
	int r = -EBADMSG;

	*token = NULL;
	if (json_is_object(j) && json_is_string(t) &&
	    token_is_valid(json_string_value(t), json_string_length(t))) {
		*token = strdup(json_string_value(t));
		r = *token ? 0 : -ENOMEM;
	}
	json_decref(j); /* the wiping allocator zeroes jansson's copy */
	return r;
}

enum auth_problem answer_auth_problem(const struct forge_answer *a)
{
	json_t *j = body_json(a);
	const char *m = json_string_value(json_object_get(j, "message"));
	enum auth_problem p = AUTH_REJECTED;

	if (a->status == 403 && m && strstr(m, "site admin"))
		p = AUTH_NOT_SITE_ADMIN;
	else if (a->status == 403 && m && strstr(m, "scope"))
		p = AUTH_NO_SCOPE;
	json_decref(j);
	return p;
}

const char *verdict_name(enum verdict v)
{
	switch (v) {
	case VERDICT_OK:
		return "ok";
	case VERDICT_GONE:
		return "not found";
	case VERDICT_NO_ROUTE:
		return "no such route";
	case VERDICT_NO_ANSWER:
		return "no answer";
	case VERDICT_TLS_FAILED:
		return "TLS failed";
	case VERDICT_WRONG_PEER:
		return "not the forge's user";
	case VERDICT_AUTH_REJECTED:
		return "admin token rejected";
	case VERDICT_TRANSIENT:
		return "busy";
	case VERDICT_UNEXPECTED:
		return "unexpected answer";
	}
	return "?";
}
