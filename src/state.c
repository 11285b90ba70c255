/* The state file.
 *
 * Rules this file keeps:
 *  1. It holds a secret (the registration token): every buffer that held
 *     the file's bytes or the token is wiped before it is freed, and nothing
 *     here logs.
 *  2. It is read leniently: anything unexpected makes an empty state, never
 *     a failed run.  Only a regular file that we own and that nobody else can
 *     write is believed.
 *  3. It is written only when its content changes, atomically, 0600 in a
 *     0700 directory, so a steady boot writes nothing but the output.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "atomic.h"
#include "cleanup.h"
#include "fileio.h"
#include "state.h"
#include "token.h"

#define STATE_DIR_MODE	0700
#define STATE_ROUTE_MAX 7 /* above any route index forge_api has */

void state_clear(struct state *s)
{
	erase_and_freep(&s->token);
	erase_and_free_sized(s->loaded, s->loaded_len);
	explicit_bzero(s, sizeof(*s)); /* the superseded runners' own tokens */
	*s = (struct state){.lookup_route = -1, .token_route = -1};
}

/* A string field of ours: a string we can hold whole (or absent). */
static bool copy_string(json_t *j, char *buf, size_t n)
{
	return !j || (json_is_string(j) && field_copy(j, buf, n) != FIELD_TOO_LONG);
}

/* {"id": N, "uuid": "...", "name": "...", "token": "..."}: id required, the
 * rest optional; a token is one of the token alphabet. */
static bool runner_from_json(json_t *j, struct state_runner *r)
{
	json_t *id = json_object_get(j, "id"), *token = json_object_get(j, "token");

	*r = (struct state_runner){0};
	if (!json_is_object(j) || !json_is_integer(id) || json_integer_value(id) < 1)
		return false;
	r->id = json_integer_value(id);
	if (token && (!json_is_string(token) ||
		      !token_is_valid(json_string_value(token), json_string_length(token))))
		return false;
	return copy_string(json_object_get(j, "uuid"), r->uuid, sizeof(r->uuid)) &&
	       copy_string(json_object_get(j, "name"), r->name, sizeof(r->name)) &&
	       copy_string(token, r->token, sizeof(r->token));
}

/* A remembered route: a small index (its meaning is forge_api's), or -1
 * when absent. */
static bool route_from_json(json_t *j, int *route)
{
	if (j && (!json_is_integer(j) || json_integer_value(j) < 0 ||
		  json_integer_value(j) > STATE_ROUTE_MAX))
		return false;
	*route = j ? (int)json_integer_value(j) : -1;
	return true;
}

static int from_json(json_t *root, struct state *s)
{
	json_t *token = json_object_get(root, "token");
	json_t *runner = json_object_get(root, "runner");
	json_t *written = json_object_get(root, "written");
	json_t *route = json_object_get(root, "lookup_route");
	json_t *uuids = json_object_get(root, "lookup_shows_uuids");
	json_t *troute = json_object_get(root, "token_route");
	json_t *list = json_object_get(root, "superseded");
	size_t i;
	json_t *e;

	if (!json_is_object(root))
		return -EBADMSG;
	if (token) {
		if (!json_is_string(token) ||
		    !token_is_valid(json_string_value(token), json_string_length(token)))
			return -EBADMSG;
		s->token = strdup(json_string_value(token));
		if (!s->token)
			return -ENOMEM;
	}
	if (runner && !runner_from_json(runner, &s->confirmed))
		return -EBADMSG;
	if (written && !runner_from_json(written, &s->written))
		return -EBADMSG;
	if (!route_from_json(route, &s->lookup_route) || !route_from_json(troute, &s->token_route))
		return -EBADMSG;
	if (uuids && !json_is_boolean(uuids))
		return -EBADMSG;
	s->no_uuids = uuids && json_is_false(uuids);
	if (list && (!json_is_array(list) || json_array_size(list) > STATE_SUPERSEDED_MAX))
		return -EBADMSG;
	json_array_foreach(list, i, e)
	{
		struct state_runner r;

		if (!runner_from_json(e, &r) || r.uuid[0] == '\0')
			return -EBADMSG;
		s->superseded[s->n_superseded++] = r;
	}
	return 0;
}

int state_load(const char *path, struct state *s, const char **why)
{
	_cleanup_(closep) int fd = -1;
	json_t *root;
	struct stat st;
	ssize_t n;
	int r;

	*s = (struct state){.lookup_route = -1, .token_route = -1};
	*why = NULL;
	fd = open_host_file(path, STATE_FILE_MAX, &st, why);
	if (fd == -ENOENT)
		return 0;
	if (fd == -EFBIG)
		*why = "is larger than " KIB_TEXT(STATE_FILE_MAX_KIB);
	if (fd < 0) {
		s->replace = true;
		return fd;
	}
	s->replace = true; /* from here on, a file that is not believed is replaced */
	if (st.st_uid != geteuid()) {
		*why = "is not owned by us";
		return -EPERM;
	}
	if (st.st_mode & (S_IRGRP | S_IROTH)) { /* it holds the registration token */
		*why = "is group- or world-readable";
		return -EPERM;
	}
	s->loaded = malloc(STATE_FILE_MAX + 1);
	if (!s->loaded) {
		*why = "cannot be held in memory";
		return -ENOMEM;
	}
	n = read_full(fd, s->loaded, STATE_FILE_MAX + 1);
	if (n < 0 || n > STATE_FILE_MAX) {
		*why = n < 0 ? "cannot be read" : "is larger than " KIB_TEXT(STATE_FILE_MAX_KIB);
		r = n < 0 ? (int)n : -EFBIG;
		goto bad;
	}
	s->loaded_len = (size_t)n;

	root = json_loadb(s->loaded, s->loaded_len, JSON_REJECT_DUPLICATES, NULL);
	r = root ? from_json(root, s) : -EBADMSG;
	json_decref(root);
	if (r == 0)
		return 0;
	*why = r == -ENOMEM ? "cannot be held in memory" : "is not a hive-ci-prefetch state file";
bad:
	state_clear(s);
	s->replace = true;
	return r;
}

static json_t *runner_to_json(const struct state_runner *r)
{
	json_t *j = json_pack("{s:I}", "id", (json_int_t)r->id);

	if (j && r->uuid[0])
		json_object_set_new(j, "uuid", json_string(r->uuid));
	if (j && r->name[0])
		json_object_set_new(j, "name", json_string(r->name));
	if (j && r->token[0])
		json_object_set_new(j, "token", json_string(r->token));
	return j;
}

/* The file's bytes for *s: one line of compact JSON, keys in a fixed order,
 * so equal states give equal bytes.  Returns a string to wipe and free. */
static char *serialize(const struct state *s, size_t *len)
{
	json_t *root = json_object(), *list = json_array();
	char *text = NULL;

	if (root && list) {
		if (s->token)
			json_object_set_new(root, "token", json_string(s->token));
		if (s->confirmed.id)
			json_object_set_new(root, "runner", runner_to_json(&s->confirmed));
		if (s->written.id)
			json_object_set_new(root, "written", runner_to_json(&s->written));
		if (s->lookup_route >= 0)
			json_object_set_new(root, "lookup_route", json_integer(s->lookup_route));
		if (s->lookup_route >= 0 && s->no_uuids)
			json_object_set_new(root, "lookup_shows_uuids", json_false());
		if (s->token_route >= 0)
			json_object_set_new(root, "token_route", json_integer(s->token_route));
		for (size_t i = 0; i < s->n_superseded; i++)
			json_array_append_new(list, runner_to_json(&s->superseded[i]));
		json_object_set(root, "superseded", list);
		text = json_text(root, JSON_COMPACT | JSON_PRESERVE_ORDER, true, len);
	}
	json_decref(list);
	json_decref(root); /* the wiping allocator zeroes its copies of the secrets */
	return text;
}

int state_lock(struct atomic_lock *l, const char *path, int64_t deadline_ms)
{
	return atomic_lock(l, path, STATE_DIR_MODE, deadline_ms);
}

int state_save(const struct atomic_lock *l, const struct state *s)
{
	_cleanup_(erase_and_freep) char *text = NULL;
	size_t len = 0;

	text = serialize(s, &len);
	if (!text)
		return -ENOMEM;
	if (s->loaded && len == s->loaded_len && memcmp(text, s->loaded, len) == 0)
		return 0;
	/* Nothing remembered and no file (or one to keep): nothing to write. */
	if (!s->replace && !s->loaded && !s->token && !s->confirmed.id && !s->written.id &&
	    !s->n_superseded && s->lookup_route < 0 && s->token_route < 0)
		return 0;
	int r = atomic_replace(l, text, len, false);

	return r < 0 ? r : 1;
}

int state_remember_token(struct state *s, const char *token)
{
	char *copy;

	if (s->token && strcmp(s->token, token) == 0)
		return 0;
	copy = strdup(token);
	if (!copy)
		return -ENOMEM;
	erase_and_freep(&s->token);
	s->token = copy;
	return 0;
}

void state_forget(struct state *s, size_t i)
{
	if (i >= s->n_superseded)
		return;
	memmove(&s->superseded[i], &s->superseded[i + 1],
		(s->n_superseded - i - 1) * sizeof(s->superseded[0]));
	s->n_superseded--;
}

void state_supersede(struct state *s, int64_t id, const char *uuid, const char *token)
{
	if (id < 1 || !uuid || uuid[0] == '\0' || strlen(uuid) > RUNNER_UUID_MAX)
		return;
	for (size_t i = 0; i < s->n_superseded; i++)
		if (s->superseded[i].id == id && strcmp(s->superseded[i].uuid, uuid) == 0)
			return;
	if (s->n_superseded == STATE_SUPERSEDED_MAX)
		state_forget(s, 0);
	struct state_runner *e = &s->superseded[s->n_superseded++];

	*e = (struct state_runner){.id = id};
	memcpy(e->uuid, uuid, strlen(uuid) + 1);
	if (token && token_is_valid(token, strlen(token)))
		memcpy(e->token, token, strlen(token) + 1);
}

void state_remember_written(struct state *s, int64_t id, const char *uuid)
{
	s->written = (struct state_runner){.id = id};
	if (strlen(uuid) <= RUNNER_UUID_MAX)
		memcpy(s->written.uuid, uuid, strlen(uuid) + 1);
}

void state_forget_token(struct state *s)
{
	erase_and_freep(&s->token);
}

void state_confirm(struct state *s, const struct runner_info *r)
{
	struct state_runner now = {.id = r->id};

	if (r->uuid_field == FIELD_SET)
		memcpy(now.uuid, r->uuid, sizeof(now.uuid));
	if (r->name_field == FIELD_SET)
		memcpy(now.name, r->name, sizeof(now.name));
	if (s->confirmed.id &&
	    (s->confirmed.id != now.id || strcmp(s->confirmed.uuid, now.uuid) != 0))
		state_supersede(s, s->confirmed.id, s->confirmed.uuid, NULL);
	s->confirmed = now;
	for (size_t i = s->n_superseded; i-- > 0;)
		if (s->superseded[i].id == now.id)
			state_forget(s, i);
}
