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
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>

#include "clock.h"
#include "cleanup.h"
#include "forge.h"
#include "log.h"
#include "wipe_alloc.h"

#define CONNECT_TIMEOUT_MS 3000
#define REQUEST_TIMEOUT_MS 10000
#define LOW_SPEED_TIME_S   5
#define BACKOFF_FIRST_MS   100
#define BACKOFF_MAX_MS	   200 /* a forge that comes up is noticed within ~1/4 s */

struct forge {
	CURL *curl;
	struct curl_slist *headers; /* holds the admin token: wiped by the allocator */
	char *base;		    /* forge URL without trailing slashes */
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
	if (cfg->unix_socket)
		SET(CURLOPT_UNIX_SOCKET_PATH, cfg->unix_socket);
	if (cfg->ca_file)
		SET(CURLOPT_CAINFO, cfg->ca_file);
#undef SET
	return e == CURLE_OK ? 0 : -EINVAL;
}

static void forge_freep(struct forge **f)
{
	forge_free(*f);
}

int forge_new(const struct forge_config *cfg, struct forge **out)
{
	_cleanup_(erase_and_freep) char *header = NULL;
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

	f->base = strdup(cfg->url);
	f->curl = curl_easy_init();
	if (!f->base || !f->curl)
		return -ENOMEM;
	for (size_t n = strlen(f->base); n > 0 && f->base[n - 1] == '/'; n--)
		f->base[n - 1] = '\0';

	if (asprintf(&header, "Authorization: token %s", cfg->admin_token) < 0) {
		header = NULL;
		return -ENOMEM;
	}
	f->headers = curl_slist_append(NULL, header); /* copies it */
	if (!f->headers)
		return -ENOMEM;
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

/* Sets the method: GET, POST with an empty body (Content-Length: 0) or
 * DELETE.  Every request sets all these options, so none leaks into the
 * next request on the handle.  A DELETE goes on a fresh connection: libcurl
 * silently sends a request again when a reused connection turns out to be
 * closed, and a request that deletes is sent exactly once. */
static void set_method(CURL *c, const char *method)
{
	bool post = strcmp(method, "POST") == 0, delete = strcmp(method, "DELETE") == 0;

	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, delete ? method : NULL);
	curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, delete ? 1L : 0L);
	if (post) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
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

static void request(struct forge *f, const char *method, const char *path, int64_t timeout_ms,
		    struct forge_answer *a)
{
	_cleanup_(freep) char *url = NULL;
	curl_off_t retry_after = 0;
	CURLcode e;
	long status = 0;

	explicit_bzero(f->body, f->body_len);
	f->body_len = 0;
	f->truncated = false;
	f->error[0] = '\0';
	*a = (struct forge_answer){.retry_after_ms = -1, .error = "out of memory"};

	if (asprintf(&url, "%s/api/v1%s", f->base, path) < 0) {
		url = NULL;
		return;
	}
	if (timeout_ms > REQUEST_TIMEOUT_MS)
		timeout_ms = REQUEST_TIMEOUT_MS;
	curl_easy_setopt(f->curl, CURLOPT_URL, url);
	set_method(f->curl, method);
	curl_easy_setopt(f->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(f->curl, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms : CONNECT_TIMEOUT_MS));

	e = curl_easy_perform(f->curl);
	/* A body cut off at the cap still came with a status worth reading;
	 * any other failure is no answer at all. */
	if (e == CURLE_OK || (e == CURLE_WRITE_ERROR && f->truncated))
		curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status);
	a->error = f->error[0] ? f->error : curl_easy_strerror(e);
	a->tls_failed = !status && tls_is_permanent(e);
	if (!status)
		log_debug("%s %s: %s", method, path, a->error);

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

enum verdict forge_ask(struct forge *f, const char *method, const char *path, enum route_kind kind,
		       int64_t deadline_ms, struct forge_answer *a)
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
						   .error = "--retry-timeout passed before asking"};
			log_debug("%s %s: %s", method, path, a->error);
			return answer_classify(a, kind);
		}
		request(f, method, path, left, a);
		asked = true;
		v = answer_classify(a, kind);
		if (a->status)
			log_debug("%s %s: %ld (%s)", method, path, a->status, verdict_name(v));
		if (!answer_is_retryable(v, kind))
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
