/* The forge client.
 *
 * Rules this file keeps:
 *  1. The admin token travels only in the Authorization header; never in a
 *     URL, never in a message.  libcurl's verbose output is never enabled.
 *  2. Only http and https; redirects are never followed; proxies named in
 *     the environment are ignored; TLS verification is always on.
 *  3. A body is kept up to ANSWER_BODY_MAX bytes and cut off beyond, so an
 *     endless body costs bounded memory; every byte is wiped after use.
 *  4. No request runs past the caller's deadline.
 *  5. With a peer user, nothing is sent on a connection until the kernel
 *     says that user holds its other end (a loopback port, a Unix socket):
 *     a CI job that squats the forge's port while it restarts gets nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>

#include <curl/curl.h>

#include "clock.h"
#include "cleanup.h"
#include "forge.h"
#include "log.h"
#include "peer.h"
#include "wipe_alloc.h"

#define CONNECT_TIMEOUT_MS 3000
#define REQUEST_TIMEOUT_MS 10000
#define LOW_SPEED_TIME_S   5
#define BACKOFF_FIRST_MS   100
#define BACKOFF_MAX_MS	   200 /* a forge that comes up is noticed within ~1/4 s */
#define FORGE_SOCKETS_MAX  8   /* more than one easy handle ever keeps open */

struct forge {
	CURL *curl;
	struct curl_slist *headers; /* holds the admin token: wiped by the allocator */
	char *base;		    /* forge URL without trailing slashes */
	const char *unix_socket;    /* the config's: NULL for TCP */
	const char *peer_user;	    /* the config's: NULL, no check */
	uid_t peer_uid;
	int sockets[FORGE_SOCKETS_MAX]; /* libcurl's open sockets; -1: a free slot */
	bool wrong_peer;		/* the last request was refused by the check, */
	char peer_error[512];		/* ... and why */
	char error[CURL_ERROR_SIZE];
	size_t body_len;
	bool truncated;
	char body[ANSWER_BODY_MAX];
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct forge *f = userdata;
	size_t n = size * nmemb;

	if (n > ANSWER_BODY_MAX - f->body_len) {
		f->truncated = true;
		return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
	}
	memcpy(f->body + f->body_len, data, n);
	f->body_len += n;
	return n;
}

/* libcurl's sockets go through these, so that the check below can find the
 * one a request is about to use: its callback is told addresses, and
 * CURLINFO_ACTIVESOCKET knows no socket yet at that point. */
static curl_socket_t on_open_socket(void *userdata, curlsocktype purpose,
				    struct curl_sockaddr *address)
{
	struct forge *f = userdata;

	(void)purpose;
	for (size_t i = 0; i < FORGE_SOCKETS_MAX; i++) {
		if (f->sockets[i] >= 0)
			continue;
		f->sockets[i] =
		    socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
		return f->sockets[i] < 0 ? CURL_SOCKET_BAD : f->sockets[i];
	}
	return CURL_SOCKET_BAD; /* more connections at once than one handle ever keeps */
}

static int on_close_socket(void *userdata, curl_socket_t fd)
{
	struct forge *f = userdata;

	for (size_t i = 0; i < FORGE_SOCKETS_MAX; i++)
		if (f->sockets[i] == fd)
			f->sockets[i] = -1;
	return close(fd);
}

static int port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return -1;
}

/* Who holds the forge's end of the TCP connection between these ports. */
static int tcp_owner(const struct forge *f, int primary_port, int local_port, uid_t *uid)
{
	for (size_t i = 0; i < FORGE_SOCKETS_MAX; i++) {
		struct sockaddr_storage here, there;
		socklen_t here_len = sizeof(here), there_len = sizeof(there);
		int fd = f->sockets[i];

		if (fd < 0 || getsockname(fd, (struct sockaddr *)&here, &here_len) < 0 ||
		    getpeername(fd, (struct sockaddr *)&there, &there_len) < 0)
			continue;
		if (port_of(&here) == local_port && port_of(&there) == primary_port)
			return peer_socket_owner(fd, uid);
	}
	return -EBADF;
}

/* Who holds the forge's end of our Unix socket connections.  All of them
 * go to the one path and each was checked before its first request, so
 * all must be the peer user's: the first that is not is the answer. */
static int unix_owner(const struct forge *f, uid_t *uid)
{
	int r = -EBADF;

	for (size_t i = 0; i < FORGE_SOCKETS_MAX; i++) {
		if (f->sockets[i] < 0)
			continue;
		r = peer_socket_owner(f->sockets[i], uid);
		if (r < 0 || *uid != f->peer_uid)
			return r;
	}
	return r;
}

/* Runs between connect and the first byte of each request (after TLS's
 * handshake, before anything of ours): refuses a connection whose other
 * end is not held by the peer user.  An https forge elsewhere is proven by
 * its certificate alone (who holds a port can only be told on this host);
 * plain http elsewhere cannot be proven at all. */
static int on_connected(void *userdata, char *primary_ip, char *local_ip, int primary_port,
			int local_port)
{
	struct forge *f = userdata;
	char end[200];
	uid_t uid;
	int r;

	(void)local_ip;
	if (!f->peer_user)
		return CURL_PREREQFUNC_OK;
	if (f->unix_socket) {
		snprintf(end, sizeof(end), "%s", f->unix_socket);
		r = unix_owner(f, &uid);
	} else if (peer_ip_is_loopback(primary_ip)) {
		snprintf(end, sizeof(end), "%s port %d", primary_ip, primary_port);
		r = tcp_owner(f, primary_port, local_port, &uid);
	} else if (strncasecmp(f->base, "https:", 6) == 0) {
		return CURL_PREREQFUNC_OK;
	} else {
		snprintf(end, sizeof(end), "%s port %d", primary_ip, primary_port);
		r = -EADDRNOTAVAIL;
	}
	if (r == 0 && uid == f->peer_uid)
		return CURL_PREREQFUNC_OK;
	f->wrong_peer = true;
	if (r == 0)
		snprintf(f->peer_error, sizeof(f->peer_error),
			 "%s is held by uid %u, not by %s (uid %u)", end, (unsigned)uid,
			 f->peer_user, (unsigned)f->peer_uid);
	else
		snprintf(f->peer_error, sizeof(f->peer_error), "cannot tell who holds %s (%s)", end,
			 strerror(-r));
	return CURL_PREREQFUNC_ABORT;
}

static int set_options(struct forge *f, const struct forge_config *cfg)
{
	CURL *c = f->curl;
	CURLcode e = CURLE_OK;

#define SET(opt, val)                                                                              \
	do {                                                                                       \
		if (e == CURLE_OK)                                                                 \
			e = curl_easy_setopt(c, opt, val);                                         \
	} while (0)
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
	SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_PROXY, ""); /* "" overrides http_proxy, HTTPS_PROXY, ALL_PROXY */
	SET(CURLOPT_NOPROXY, "*");
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
	SET(CURLOPT_LOW_SPEED_TIME, (long)LOW_SPEED_TIME_S);
	SET(CURLOPT_USERAGENT, "hive-ci-prefetch");
	SET(CURLOPT_HTTPHEADER, f->headers);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, f);
	SET(CURLOPT_ERRORBUFFER, f->error);
	SET(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
	SET(CURLOPT_OPENSOCKETDATA, f);
	SET(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
	SET(CURLOPT_CLOSESOCKETDATA, f);
	SET(CURLOPT_PREREQFUNCTION, on_connected);
	SET(CURLOPT_PREREQDATA, f);
	if (cfg->unix_socket)
		SET(CURLOPT_UNIX_SOCKET_PATH, cfg->unix_socket);
	if (cfg->ca_file)
		SET(CURLOPT_CAINFO, cfg->ca_file);
#undef SET
	return e == CURLE_OK ? 0 : -EINVAL;
}

int forge_set_admin_token(struct forge *f, const char *admin_token)
{
	_cleanup_(erase_and_freep) char *header = NULL;
	struct curl_slist *headers;

	if (asprintf(&header, "Authorization: token %s", admin_token) < 0) {
		header = NULL;
		return -ENOMEM;
	}
	headers = curl_slist_append(NULL, header); /* copies it */
	if (!headers)
		return -ENOMEM;
	curl_slist_free_all(f->headers); /* the wiping allocator zeroes the old one */
	f->headers = headers;
	return curl_easy_setopt(f->curl, CURLOPT_HTTPHEADER, f->headers) == CURLE_OK ? 0 : -EINVAL;
}

static void forge_freep(struct forge **f)
{
	forge_free(*f);
}

int forge_new(const struct forge_config *cfg, struct forge **out)
{
	struct forge *f;
	int r;

	*out = NULL;
	/* libcurl is set up only once the forge is to be asked: a run that
	 * stops before (no admin token yet, an unusable one) loads no TLS. */
	if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, wipe_malloc, wipe_free, wipe_realloc,
				 wipe_strdup, wipe_calloc) != CURLE_OK)
		return -EIO;
	f = calloc(1, sizeof(*f));
	if (!f) {
		curl_global_cleanup();
		return -ENOMEM;
	}
	/* From here on forge_free undoes everything, curl_global_init too. */
	_cleanup_(forge_freep) struct forge *owned = f;

	for (size_t i = 0; i < FORGE_SOCKETS_MAX; i++)
		f->sockets[i] = -1;
	f->unix_socket = cfg->unix_socket;
	f->peer_user = cfg->peer_user;
	f->peer_uid = cfg->peer_uid;
	f->base = strdup(cfg->url);
	f->curl = curl_easy_init();
	if (!f->base || !f->curl)
		return -ENOMEM;
	for (size_t n = strlen(f->base); n > 0 && f->base[n - 1] == '/'; n--)
		f->base[n - 1] = '\0';

	r = forge_set_admin_token(f, cfg->admin_token);
	if (r < 0)
		return r;
	r = set_options(f, cfg);
	if (r < 0)
		return r;
	*out = TAKE_PTR(owned);
	return 0;
}

void forge_free(struct forge *f)
{
	if (!f)
		return;
	curl_easy_cleanup(f->curl);
	curl_slist_free_all(f->headers);
	free(f->base);
	explicit_bzero(f->body, sizeof(f->body));
	free(f);
	curl_global_cleanup();
}

/* One request: what forge_ask and forge_call_runner send. */
struct request {
	const char *method; /* GET, POST or DELETE */
	const char *path;   /* below the forge's URL */
	const char *shown;  /* how messages name it */
	enum route_kind kind;
	const char *body; /* POST: the body, NULL for an empty one */
	size_t body_len;
	struct curl_slist *headers; /* the header lines (the admin token's, or others) */
};

/* Sets the method and body: GET, POST (with the body, or an empty one:
 * Content-Length: 0) or DELETE.  Every request sets all these options, so
 * none leaks into the next request on the handle.  A DELETE goes on a fresh
 * connection: libcurl silently sends a request again when a reused
 * connection turns out to be closed, and a request that deletes is sent
 * exactly once. */
static void set_method(CURL *c, const struct request *r)
{
	bool post = strcmp(r->method, "POST") == 0, delete = strcmp(r->method, "DELETE") == 0;

	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, delete ? r->method : NULL);
	curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, delete ? 1L : 0L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers);
	if (post) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body ? r->body : "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(r->body ? r->body_len : 0));
	}
}

/* TLS failures that asking again cannot fix: the forge's certificate or
 * our trust in it (a handshake cut short, CURLE_SSL_CONNECT_ERROR, may be a
 * forge restarting, and is not among them). */
static bool tls_is_permanent(CURLcode e)
{
	switch (e) {
	case CURLE_PEER_FAILED_VERIFICATION: /* untrusted, expired, wrong host name */
	case CURLE_SSL_CACERT_BADFILE:	     /* the CA file holds no usable certificate */
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
		return true;
	default:
		return false;
	}
}

int forge_check_ca_file(const char *path)
{
	_cleanup_(closep) int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	return 0;
}

static void request(struct forge *f, const struct request *r, int64_t timeout_ms,
		    struct forge_answer *a)
{
	_cleanup_(freep) char *url = NULL;
	curl_off_t retry_after = 0;
	CURLcode e;
	long status = 0;

	explicit_bzero(f->body, f->body_len);
	f->body_len = 0;
	f->truncated = false;
	f->wrong_peer = false;
	f->error[0] = '\0';
	*a = (struct forge_answer){.retry_after_ms = -1, .error = "out of memory"};

	if (asprintf(&url, "%s%s", f->base, r->path) < 0) {
		url = NULL;
		return;
	}
	if (timeout_ms > REQUEST_TIMEOUT_MS)
		timeout_ms = REQUEST_TIMEOUT_MS;
	curl_easy_setopt(f->curl, CURLOPT_URL, url);
	set_method(f->curl, r);
	curl_easy_setopt(f->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(f->curl, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms : CONNECT_TIMEOUT_MS));

	e = curl_easy_perform(f->curl);
	/* A body cut off at the cap still came with a status worth reading;
	 * any other failure is no answer at all. */
	if (e == CURLE_OK || (e == CURLE_WRITE_ERROR && f->truncated))
		curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status);
	if (e == CURLE_COULDNT_CONNECT && f->unix_socket) { /* curl names the URL's host */
		long os_errno = 0;

		curl_easy_getinfo(f->curl, CURLINFO_OS_ERRNO, &os_errno);
		snprintf(f->error, sizeof(f->error), "cannot connect to %s: %s", f->unix_socket,
			 strerror(os_errno ? (int)os_errno : ECONNREFUSED));
	}
	a->error = f->error[0] ? f->error : curl_easy_strerror(e);
	a->tls_failed = !status && tls_is_permanent(e);
	a->wrong_peer = !status && f->wrong_peer;
	a->not_sent =
	    e == CURLE_COULDNT_CONNECT || e == CURLE_COULDNT_RESOLVE_HOST || a->wrong_peer;
	if (a->wrong_peer)
		a->error = f->peer_error;
	if (!status)
		log_debug("%s %s: %s", r->method, r->shown, a->error);

	a->status = status;
	a->body = f->body;
	a->body_len = f->body_len;
	a->body_truncated = f->truncated;
	if (status && curl_easy_getinfo(f->curl, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
	    retry_after > 0)
		a->retry_after_ms = retry_after > INT64_MAX / 1000 ? INT64_MAX : retry_after * 1000;
}

int64_t forge_deadline(int64_t step_deadline_ms)
{
	int64_t floor = clock_now_ms() + FORGE_FIRST_REQUEST_MIN_MS;

	return step_deadline_ms > floor ? step_deadline_ms : floor;
}

/* Sends r, asking again while the answer is retryable and the deadline has
 * not passed (see forge_ask). */
static enum verdict ask(struct forge *f, const struct request *r, int64_t deadline_ms,
			struct forge_answer *a)
{
	int64_t backoff = BACKOFF_FIRST_MS;
	enum verdict v = VERDICT_NO_ANSWER;
	bool asked = false;

	for (;;) {
		/* Decided before sending: a request always has a positive bound
		 * (libcurl takes a timeout of 0 as none at all), and a sleep that
		 * overshot the deadline ends the asking. */
		int64_t left = deadline_ms - clock_now_ms();

		if (left <= 0) {
			if (asked)
				return v; /* the last answer stands */
			*a = (struct forge_answer){.retry_after_ms = -1,
						   .not_sent = true,
						   .error = "--retry-timeout passed before asking"};
			log_debug("%s %s: %s", r->method, r->shown, a->error);
			return answer_classify(a, r->kind);
		}
		request(f, r, left, a);
		asked = true;
		v = answer_classify(a, r->kind);
		if (a->status)
			log_debug("%s %s: %ld (%s)", r->method, r->shown, a->status,
				  verdict_name(v));
		if (!answer_is_retryable(a, v, r->kind))
			return v;

		left = deadline_ms - clock_now_ms();
		if (left <= 0)
			return v;
		int64_t wait = a->retry_after_ms >= 0 ? a->retry_after_ms : backoff;
		if (wait >= left) {
			log_debug("waiting %lld ms would pass the deadline; giving up at it",
				  (long long)wait);
			sleep_ms(left);
			return v;
		}
		log_debug("asking again in %lld ms", (long long)wait);
		sleep_ms(wait);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
}

enum verdict forge_ask(struct forge *f, const char *method, const char *path, enum route_kind kind,
		       int64_t deadline_ms, struct forge_answer *a)
{
	_cleanup_(freep) char *full = NULL;

	if (asprintf(&full, "/api/v1%s", path) < 0) {
		*a = (struct forge_answer){.retry_after_ms = -1, .error = "out of memory"};
		return VERDICT_NO_ANSWER;
	}
	return ask(
	    f,
	    &(struct request){
		.method = method, .path = full, .shown = path, .kind = kind, .headers = f->headers},
	    deadline_ms, a);
}

enum verdict forge_call_runner(struct forge *f, const char *method, const char *body,
			       size_t body_len, const char *const *headers, enum route_kind kind,
			       int64_t deadline_ms, struct forge_answer *a)
{
	_cleanup_(freep) char *path = NULL;
	struct curl_slist *list = curl_slist_append(NULL, "Content-Type: application/json");
	enum verdict v;

	/* No admin token here: the runners' protocol takes the runner's own
	 * credentials, or none (Register). */
	for (size_t i = 0; list && headers && headers[i]; i++) {
		struct curl_slist *more = curl_slist_append(list, headers[i]); /* copies */

		if (!more)
			curl_slist_free_all(list);
		list = more;
	}
	if (!list || asprintf(&path, "/api/actions/runner.v1.RunnerService/%s", method) < 0) {
		curl_slist_free_all(list); /* the wiping allocator zeroes the credentials */
		*a = (struct forge_answer){.retry_after_ms = -1, .error = "out of memory"};
		return VERDICT_NO_ANSWER;
	}
	v = ask(f,
		&(struct request){.method = "POST",
				  .path = path,
				  .shown = method,
				  .kind = kind,
				  .body = body,
				  .body_len = body_len,
				  .headers = list},
		deadline_ms, a);
	curl_easy_setopt(f->curl, CURLOPT_HTTPHEADER, f->headers);
	curl_slist_free_all(list);
	return v;
}
