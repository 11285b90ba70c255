#include <errno.h>
#include <stdio.h>
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

/* A connect-go error, {"code": ..., "message": ...}: is it code, and (when
 * words is not NULL) does its message hold words? */
static bool connect_error(const struct forge_answer *a, const char *code, const char *words)
{
	json_t *j = body_json(a);
	const char *c = json_string_value(json_object_get(j, "code"));
	const char *m = json_string_value(json_object_get(j, "message"));
	bool is = c && strcmp(c, code) == 0 && (!words || (m && strstr(m, words)));

	json_decref(j);
	return is;
}

/* The runners' protocol (FORGE-API.md): its errors are connect-go's. */
static enum verdict classify_runner_call(const struct forge_answer *a, enum route_kind kind)
{
	long s = a->status;

	if (s == 200)
		return VERDICT_OK;
	if (s == 404) /* no such service: Actions disabled, or a forge before 1.21/7 */
		return VERDICT_NO_ROUTE;
	/* Declare with credentials the forge does not know: Forgejo 11+ says
	 * 401 unauthenticated; Gitea and Forgejo 7 to 10 500 unknown. */
	if (kind == ROUTE_DECLARE &&
	    ((s == 401 && connect_error(a, "unauthenticated", NULL)) ||
	     (s == 500 && connect_error(a, "unknown", "unregistered runner"))))
		return VERDICT_GONE;
	/* A refused registration token is 400 invalid_argument, or a 500 unknown:
	 * a connect-go error is an answer, not a busy forge. */
	if (s == 500 && (connect_error(a, "unknown", NULL) || connect_error(a, "internal", NULL)))
		return VERDICT_UNEXPECTED;
	if (s == 408 || s == 429 || (s >= 500 && s <= 599))
		return VERDICT_TRANSIENT;
	return VERDICT_UNEXPECTED;
}

enum verdict answer_classify(const struct forge_answer *a, enum route_kind kind)
{
	long s = a->status;

	if (s == 0 && a->wrong_peer)
		return VERDICT_WRONG_PEER;
	if (s == 0)
		return a->tls_failed ? VERDICT_TLS_FAILED : VERDICT_NO_ANSWER;
	if (kind == ROUTE_REGISTER || kind == ROUTE_DECLARE)
		return classify_runner_call(a, kind);
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

bool answer_is_retryable(const struct forge_answer *a, enum verdict v, enum route_kind kind)
{
	/* A lookup (or a Declare) with no answer keeps .runner at once: the
	 * runner that the forge cannot be asked about is given the benefit of
	 * the doubt.  The clean-up is never worth a retry: a later boot tries
	 * again.  A Register that may have reached the forge is not sent again:
	 * it would leave a runner behind. */
	if (kind == ROUTE_CLEANUP)
		return false;
	if (v == VERDICT_NO_ANSWER)
		return kind == ROUTE_TOKEN || (kind == ROUTE_REGISTER && a->not_sent);
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

int answer_proto_runner(const struct forge_answer *a, bool need_token, struct proto_runner *r)
{
	json_t *j = body_json(a), *runner = json_object_get(j, "runner");
	const char *id = json_string_value(json_object_get(runner, "id"));
	json_t *token = json_object_get(runner, "token");
	char *end;
	int r_ = -EBADMSG;

	*r = (struct proto_runner){0};
	if (!json_is_object(j) || !json_is_object(runner) || !id || id[0] < '1' || id[0] > '9')
		goto out;
	errno = 0;
	r->id = strtoll(id, &end, 10);
	if (errno || *end || r->id < 1)
		goto out;
	if (field_copy(json_object_get(runner, "uuid"), r->uuid, sizeof(r->uuid)) != FIELD_SET ||
	    field_copy(json_object_get(runner, "name"), r->name, sizeof(r->name)) != FIELD_SET)
		goto out;
	if (need_token) {
		if (!json_is_string(token) ||
		    !token_is_valid(json_string_value(token), json_string_length(token)))
			goto out;
		memcpy(r->token, json_string_value(token), json_string_length(token) + 1);
	}
	r_ = 0;
out:
	if (r_ < 0)
		explicit_bzero(r, sizeof(*r));
	json_decref(j); /* the wiping allocator zeroes jansson's copy of the token */
	return r_;
}

char *answer_message(const struct forge_answer *a, char *buf, size_t n)
{
	json_t *j = body_json(a);
	const char *m = json_string_value(json_object_get(j, "message"));
	size_t len = 0;

	for (; m && *m && len + 1 < n; m++)
		buf[len++] = *m >= ' ' && *m <= '~' ? *m : '?';
	buf[len] = '\0';
	json_decref(j);
	return buf;
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
