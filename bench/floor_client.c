/* Benchmark floor (b): the least possible client for a boot.
 *
 *   floor_client FORGE_URL ADMIN_TOKEN_FILE OUTPUT [RUNNER_ID [placeholder]]
 *
 * With RUNNER_ID: GET /api/v1/admin/runners/RUNNER_ID, then, on the same easy
 * handle (so the same connection), GET /api/v1/admin/runners/registration-token;
 * without it only the token.  The token is taken from the JSON with jansson
 * and OUTPUT.tmp is written with write, fsync, then renamed over OUTPUT.
 * With "placeholder" after RUNNER_ID (a steady boot in host registration,
 * where a kept runner needs no registration token): only the lookup, and
 * TOKEN=placeholder written the same way.
 * No checks and no policy: the floor the tool's own work is measured from.
 * Linked exactly as hive-ci-prefetch is. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

static char body[65536];
static size_t body_len;

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	size_t n = size * nmemb;

	(void)userdata;
	if (n > sizeof(body) - body_len)
		return 0;
	memcpy(body + body_len, data, n);
	body_len += n;
	return n;
}

int main(int argc, char **argv)
{
	char admin[512], header[600], url[2048], tmp[4096], line[1024];
	ssize_t n;
	int fd, len;
	const char *token;
	int lookup_only;
	json_t *j = NULL;
	CURL *c;

	if (argc < 4)
		return 64;
	lookup_only = argc > 5 && strcmp(argv[5], "placeholder") == 0;
	fd = open(argv[2], O_RDONLY | O_CLOEXEC);
	n = read(fd, admin, sizeof(admin) - 1);
	close(fd);
	admin[n > 0 ? n : 0] = '\0';
	admin[strcspn(admin, "\n")] = '\0';
	snprintf(header, sizeof(header), "Authorization: token %s", admin);

	curl_global_init(CURL_GLOBAL_DEFAULT);
	c = curl_easy_init();
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, curl_slist_append(NULL, header));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	if (argc > 4) {
		snprintf(url, sizeof(url), "%s/api/v1/admin/runners/%s", argv[1], argv[4]);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_perform(c);
		body_len = 0;
	}
	if (lookup_only) {
		token = "placeholder";
	} else {
		snprintf(url, sizeof(url), "%s/api/v1/admin/runners/registration-token",
			 argv[1]);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_perform(c);
		j = json_loadb(body, body_len, 0, NULL);
		token = json_string_value(json_object_get(j, "token"));
	}
	len = snprintf(line, sizeof(line), "TOKEN=%s\n", token ? token : "");
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[3]);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	n = write(fd, line, (size_t)len);
	fsync(fd);
	close(fd);
	rename(tmp, argv[3]);
	return n == len ? 0 : 1;
}
