#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fileio.h"
#include "options.h"
#include "peer.h"

#define RETRY_TIMEOUT_MAX_S 86400
/* What a host name and a label's name are made of. */
#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

enum {
	OPT_FORGE_URL = 256,
	OPT_UNIX_SOCKET,
	OPT_FORGE_USER,
	OPT_CA_FILE,
	OPT_CORE_TOKEN_FILE,
	OPT_CONTAINER_ROOT,
	OPT_RUNNER_FILE,
	OPT_OUTPUT,
	OPT_RETRY_TIMEOUT,
	OPT_STATE_FILE,
	OPT_TOKEN_FORMAT,
	OPT_REGISTRATION,
	OPT_RUNNER_NAME,
	OPT_LABELS,
	OPT_RUNNER_ADDRESS,
	OPT_PLACEHOLDER_ON_KEEP,
	OPT_NO_CLEANUP,
	OPT_REREGISTER,
	OPT_JSON,
};

static const struct option long_options[] = {
    {"forge-url", required_argument, NULL, OPT_FORGE_URL},
    {"unix-socket", required_argument, NULL, OPT_UNIX_SOCKET},
    {"forge-user", required_argument, NULL, OPT_FORGE_USER},
    {"ca-file", required_argument, NULL, OPT_CA_FILE},
    {"core-token-file", required_argument, NULL, OPT_CORE_TOKEN_FILE},
    {"container-root", required_argument, NULL, OPT_CONTAINER_ROOT},
    {"runner-file", required_argument, NULL, OPT_RUNNER_FILE},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"retry-timeout", required_argument, NULL, OPT_RETRY_TIMEOUT},
    {"state-file", required_argument, NULL, OPT_STATE_FILE},
    {"token-format", required_argument, NULL, OPT_TOKEN_FORMAT},
    {"registration", required_argument, NULL, OPT_REGISTRATION},
    {"runner-name", required_argument, NULL, OPT_RUNNER_NAME},
    {"labels", required_argument, NULL, OPT_LABELS},
    {"runner-address", required_argument, NULL, OPT_RUNNER_ADDRESS},
    {"placeholder-on-keep", no_argument, NULL, OPT_PLACEHOLDER_ON_KEEP},
    {"no-cleanup", no_argument, NULL, OPT_NO_CLEANUP},
    {"reregister", no_argument, NULL, OPT_REREGISTER},
    {"dry-run", no_argument, NULL, 'n'},
    {"json", no_argument, NULL, OPT_JSON},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

void options_usage(FILE *f)
{
	fputs("Usage: " PROGRAM_NAME " [OPTION]...\n"
	      "Before the CI container starts: keep the runner's .runner if the forge still\n"
	      "knows it, otherwise delete it; then write the forge's registration token\n"
	      "(else the one remembered, else a placeholder) to the output file, or, with\n"
	      "--registration=host, register the runner and write .runner into the\n"
	      "container yourself, the output holding only the placeholder.\n"
	      "\n"
	      "  --forge-url=URL          forge base URL (default http://127.0.0.1:3000)\n"
	      "  --unix-socket=PATH       talk HTTP over this Unix socket; the URL's host is\n"
	      "                           then only the Host header\n"
	      "  --forge-user=USER        send nothing to a forge whose port (or socket) is\n"
	      "                           not held by this user (a name or a uid)\n"
	      "  --ca-file=PATH           trust this CA for an https forge (verification is\n"
	      "                           always on)\n"
	      "  --core-token-file=PATH   forge admin token file\n"
	      "                           (default /var/lib/hyperhive/forge-core-token)\n"
	      "  --container-root=DIR     the container's root on the host\n"
	      "                           (default /var/lib/nixos-containers/hive-ci)\n"
	      "  --runner-file=PATH       .runner path INSIDE the container\n"
	      "                           (default /var/lib/gitea-runner/hive/.runner)\n"
	      "  --output=PATH            token file to write (default /run/hive-ci/runner-token)\n"
	      "  --retry-timeout=SECONDS  how long to wait for the admin token file and the\n"
	      "                           forge's answers, per step (default 30)\n"
	      "  --state-file=PATH        what to remember across boots; empty: nothing\n"
	      "                           (default /var/lib/hive-ci-prefetch/hive-ci.json)\n"
	      "  --token-format=FORMAT    env: TOKEN=<token> (default); raw: the bare token\n"
	      "  --registration=MODE      container: the runner module registers with the\n"
	      "                           token in the output (default); host: this tool\n"
	      "                           registers the runner and writes .runner itself\n"
	      "  --runner-name=NAME       the runner's name, host registration (default hive)\n"
	      "  --labels=LABEL[,LABEL...]  the runner's labels, host registration\n"
	      "                           (default hive-ci:host)\n"
	      "  --runner-address=URL     the forge as the container reaches it, written to\n"
	      "                           .runner (default --forge-url)\n"
	      "  --placeholder-on-keep    write the placeholder when .runner is kept\n"
	      "                           (breaks the nixpkgs runner module since 26.05)\n"
	      "  --no-cleanup             do not delete superseded runners of this host\n"
	      "  --reregister             discard .runner even if the forge still knows it;\n"
	      "                           fetch a fresh token\n"
	      "  -n, --dry-run            decide and say what would happen; delete, write and\n"
	      "                           wait for nothing\n"
	      "      --json               print the decision as one JSON object on stdout\n"
	      "  -v, --verbose            say each step\n"
	      "  -q, --quiet              errors only\n"
	      "  -h, --help               show this help and exit\n"
	      "  -V, --version            show the version and exit\n"
	      "\n"
	      "Exit status: 0 done, 64 bad usage, 66 --ca-file missing or unreadable,\n"
	      "69 TLS with the forge failed (certificate not verified) or its port is held\n"
	      "by another user than --forge-user, 70 internal error, 71 kernel lacks\n"
	      "openat2, 73 output cannot be written or a lock stayed held, 74 .runner\n"
	      "cannot be read, removed or written, 75 no registration token (or no answer\n"
	      "to Register) within --retry-timeout, 76 the forge's answer is not a valid\n"
	      "registration token (or registers no runner), 77 the forge rejected the admin\n"
	      "token, 78 the admin token file is unusable (or --reregister without one).\n"
	      "See hive-ci-prefetch(8).\n",
	      f);
}

static enum options_result bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum options_result bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return OPTIONS_BAD;
}

static enum options_result bad_option(const char *arg, int opt, char *err, size_t errlen)
{
	const char *eq = strchr(arg, '=');

	/* getopt leaves optopt 0 for an unknown long option, sets it to a known
	 * long option's value when that was given "=value", and to the letter
	 * of an unknown short option, which may sit in a bundle not yet passed. */
	if (strncmp(arg, "--", 2) != 0 || (opt && !eq))
		return bad(err, errlen, "unknown option '-%c'", opt);
	if (opt)
		return bad(err, errlen, "option '%.*s' takes no value", (int)(eq - arg), arg);
	return bad(err, errlen, "unknown option '%s'", arg);
}

/* SECONDS: digits, optionally a point and up to three decimals. */
static int parse_seconds(const char *s, int64_t *ms)
{
	int64_t whole = 0, frac = 0, scale = 100;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		whole = whole * 10 + (*p - '0');
		if (whole > RETRY_TIMEOUT_MAX_S)
			return -1;
	}
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -1;
		for (; *p >= '0' && *p <= '9' && scale > 0; p++, scale /= 10)
			frac += (*p - '0') * scale;
	}
	if (*p != '\0' || whole * 1000 + frac > RETRY_TIMEOUT_MAX_S * 1000)
		return -1;
	*ms = whole * 1000 + frac;
	return 0;
}

static bool has_control_or_space(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return true;
	return false;
}

struct url {
	bool https;
	char host[256]; /* as written, an IPv6 literal with its brackets */
};

/* A forge URL: http:// or https://, a host (a name, an IPv4 address or a
 * bracketed IPv6 literal), an optional port of 1 to 65535, an optional
 * path; no user or password, query or fragment.  Fills *u; returns NULL,
 * or why the URL is refused. */
static const char *check_url(const char *url, struct url *u)
{
	const char *host, *end, *port = NULL;
	size_t len;

	if (strncasecmp(url, "http://", 7) == 0)
		host = url + 7;
	else if (strncasecmp(url, "https://", 8) == 0)
		host = url + 8;
	else
		return "must start with http:// or https://";
	u->https = host - url == 8;
	if (has_control_or_space(url))
		return "must not contain spaces or control characters";
	if (strpbrk(url, "?#"))
		return "must not contain a query or fragment";
	end = host + strcspn(host, "/");
	if (memchr(host, '@', (size_t)(end - host)))
		return "must not contain a user name or password";
	if (*host == '[') {
		const char *close = memchr(host, ']', (size_t)(end - host));
		char literal[INET6_ADDRSTRLEN + 1];
		unsigned char addr[16];

		if (!close || (size_t)(close - host - 1) >= sizeof(literal))
			return "has a malformed IPv6 address";
		memcpy(literal, host + 1, (size_t)(close - host - 1));
		literal[close - host - 1] = '\0';
		if (inet_pton(AF_INET6, literal, addr) != 1)
			return "has a malformed IPv6 address";
		if (close + 1 < end && close[1] != ':')
			return "has a malformed IPv6 address";
		if (close + 1 < end)
			port = close + 2;
		len = (size_t)(close + 1 - host);
	} else {
		const char *colon = memchr(host, ':', (size_t)(end - host));

		len = (size_t)((colon ? colon : end) - host);
		if (colon)
			port = colon + 1;
		if (strspn(host, NAME_CHARS) < len)
			return "has a host name that is not one";
	}
	if (len == 0)
		return "has no host";
	if (len >= sizeof(u->host))
		return "has a host name that is too long";
	memcpy(u->host, host, len);
	u->host[len] = '\0';
	if (port) {
		long n = 0;

		if (port == end)
			return "has an empty port";
		for (const char *p = port; p < end; p++) {
			if (*p < '0' || *p > '9' || (n = n * 10 + (*p - '0')) > 65535)
				return "has a port that is not 1 to 65535";
		}
		if (n == 0)
			return "has a port that is not 1 to 65535";
	}
	return NULL;
}

/* Normalizes path into buf (size n): absolute (a relative one from the
 * working directory), no "//", "." or ".." components.  Pure string work:
 * no symlink is followed.  Returns false when it does not fit. */
static bool normalize(const char *path, char *buf, size_t n)
{
	char joined[PATH_MAX * 2];
	size_t len = 0;

	if (path[0] == '/')
		snprintf(joined, sizeof(joined), "%s", path);
	else if (getcwd(joined, PATH_MAX))
		snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "/%s", path);
	else
		return false;
	for (char *save = NULL, *c = strtok_r(joined, "/", &save); c;
	     c = strtok_r(NULL, "/", &save)) {
		if (strcmp(c, ".") == 0)
			continue;
		if (strcmp(c, "..") == 0) {
			while (len > 0 && buf[--len] != '/')
				;
			continue;
		}
		if (len + 1 + strlen(c) + 1 > n)
			return false;
		buf[len++] = '/';
		memcpy(buf + len, c, strlen(c));
		len += strlen(c);
	}
	if (len == 0)
		buf[len++] = '/';
	buf[len] = '\0';
	return true;
}

/* Whether path is dir or lies below it, as the paths read. */
static bool at_or_below(const char *path, const char *dir)
{
	char p[PATH_MAX], d[PATH_MAX];
	size_t n;

	if (!normalize(path, p, sizeof(p)) || !normalize(dir, d, sizeof(d)))
		return true; /* cannot tell: refuse */
	n = strlen(d);
	if (strcmp(d, "/") == 0)
		return true;
	return strncmp(p, d, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

/* A label in full form, as .runner holds it: a name of [A-Za-z0-9._-], then
 * optionally ':' and a scheme (host, docker://image, ...) of printable
 * ASCII without spaces or commas. */
static const char *check_label(const char *l)
{
	size_t name = strspn(l, NAME_CHARS);

	if (name == 0)
		return "a label needs a name of letters, digits, '.', '_' or '-'";
	if (l[name] != '\0' && l[name] != ':')
		return "a label's name is letters, digits, '.', '_' or '-', then ':'";
	if (strlen(l) > 255)
		return "a label is longer than 255 characters";
	for (const char *p = l + name; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f || (unsigned char)*p > 0x7e)
			return "a label holds a space or a character that is not printable ASCII";
	return NULL;
}

/* Splits LABEL[,LABEL...] into o->labels (copied into o->labels_buf). */
static const char *parse_labels(struct options *o, const char *list)
{
	char *save = NULL;

	if (strlen(list) >= sizeof(o->labels_buf))
		return "the list is too long";
	memcpy(o->labels_buf, list, strlen(list) + 1);
	o->n_labels = 0;
	if (list[0] == '\0' || list[0] == ',' || list[strlen(list) - 1] == ',' ||
	    strstr(list, ",,"))
		return "an empty label";
	for (char *l = strtok_r(o->labels_buf, ",", &save); l; l = strtok_r(NULL, ",", &save)) {
		const char *why = check_label(l);

		if (why)
			return why;
		if (o->n_labels == OPTIONS_LABELS_MAX)
			return "more than " STRINGIFY(OPTIONS_LABELS_MAX) " labels";
		o->labels[o->n_labels++] = l;
	}
	return NULL;
}

/* A runner's name: 1 to 255 printable ASCII characters, no leading or
 * trailing space. */
static const char *check_runner_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 255)
		return "must be 1 to 255 characters";
	if (name[0] == ' ' || name[len - 1] == ' ')
		return "must not begin or end with a space";
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p > 0x7e)
			return "must be printable ASCII";
	return NULL;
}

static const char *check_runner_file(const char *path)
{
	const char *base = strrchr(path, '/');

	if (path[0] != '/')
		return "must be an absolute path inside the container";
	if (strlen(path) >= PATH_MAX)
		return "is too long";
	base++;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return "must name a file";
	if (strstr(path, "/./") || strstr(path, "/../"))
		return "must not contain . or .. components";
	if (strlen(base) > NAME_MAX)
		return "has a file name that is too long";
	return NULL;
}

enum options_result options_parse(int argc, char **argv, struct options *o, char *err,
				  size_t errlen)
{
	struct url url;
	const char *why;
	int c;

	*o = (struct options){
	    .forge_url = "http://127.0.0.1:3000",
	    .core_token_file = "/var/lib/hyperhive/forge-core-token",
	    .container_root = "/var/lib/nixos-containers/hive-ci",
	    .runner_file = "/var/lib/gitea-runner/hive/.runner",
	    .output = "/run/hive-ci/runner-token",
	    .retry_timeout_ms = 30000,
	    .state_file = "/var/lib/hive-ci-prefetch/hive-ci.json",
	    .cleanup = true,
	    .runner_name = "hive",
	};
	parse_labels(o, "hive-ci:host");

	opterr = 0;
	optind = 0; /* full reinitialisation, so the parser can run more than once */
	while ((c = getopt_long(argc, argv, ":nvqhV", long_options, NULL)) != -1) {
		switch (c) {
		case OPT_FORGE_URL:
			o->forge_url = optarg;
			break;
		case OPT_UNIX_SOCKET:
			o->unix_socket = optarg;
			break;
		case OPT_FORGE_USER:
			o->forge_user = optarg;
			break;
		case OPT_CA_FILE:
			o->ca_file = optarg;
			break;
		case OPT_CORE_TOKEN_FILE:
			o->core_token_file = optarg;
			break;
		case OPT_CONTAINER_ROOT:
			o->container_root = optarg;
			break;
		case OPT_RUNNER_FILE:
			o->runner_file = optarg;
			break;
		case OPT_OUTPUT:
			o->output = optarg;
			break;
		case OPT_RETRY_TIMEOUT:
			if (parse_seconds(optarg, &o->retry_timeout_ms) < 0)
				return bad(
				    err, errlen,
				    "--retry-timeout: '%s' is not a number of seconds from 0 "
				    "to %d",
				    optarg, RETRY_TIMEOUT_MAX_S);
			break;
		case OPT_STATE_FILE:
			o->state_file = optarg;
			break;
		case OPT_TOKEN_FORMAT:
			if (strcmp(optarg, "env") == 0)
				o->token_format = TOKEN_FORMAT_ENV;
			else if (strcmp(optarg, "raw") == 0)
				o->token_format = TOKEN_FORMAT_RAW;
			else
				return bad(err, errlen, "--token-format: '%s' is not env or raw",
					   optarg);
			break;
		case OPT_REGISTRATION:
			if (strcmp(optarg, "host") == 0)
				o->host_registration = true;
			else if (strcmp(optarg, "container") == 0)
				o->host_registration = false;
			else
				return bad(err, errlen,
					   "--registration: '%s' is not container or host", optarg);
			break;
		case OPT_RUNNER_NAME:
			o->runner_name = optarg;
			break;
		case OPT_LABELS:
			if ((why = parse_labels(o, optarg)))
				return bad(err, errlen, "--labels: %s", why);
			break;
		case OPT_RUNNER_ADDRESS:
			o->runner_address = optarg;
			break;
		case OPT_PLACEHOLDER_ON_KEEP:
			o->placeholder_on_keep = true;
			break;
		case OPT_NO_CLEANUP:
			o->cleanup = false;
			break;
		case OPT_REREGISTER:
			o->reregister = true;
			break;
		case 'n':
			o->dry_run = true;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case 'v':
			o->verbosity = 1;
			break;
		case 'q':
			o->verbosity = -1;
			break;
		case 'h':
			return OPTIONS_HELP;
		case 'V':
			return OPTIONS_VERSION;
		case ':':
			return bad(err, errlen, "option '%s' needs a value", argv[optind - 1]);
		default:
			return bad_option(argv[optind - 1], optopt, err, errlen);
		}
	}
	if (optind < argc)
		return bad(err, errlen, "unexpected argument '%s'", argv[optind]);

	if ((why = check_url(o->forge_url, &url)))
		return bad(err, errlen, "--forge-url: %s", why);
	o->forge_https = url.https;
	o->forge_loopback = peer_host_is_loopback(url.host);
	if ((why = check_runner_file(o->runner_file)))
		return bad(err, errlen, "--runner-file: %s", why);

	const struct {
		const char *name, *value;
	} paths[] = {
	    {"--unix-socket", o->unix_socket},
	    {"--ca-file", o->ca_file},
	    {"--core-token-file", o->core_token_file},
	    {"--container-root", o->container_root},
	    {"--output", o->output},
	};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (paths[i].value && paths[i].value[0] == '\0')
			return bad(err, errlen, "%s: empty path", paths[i].name);
	if (o->output[0] != '/')
		return bad(err, errlen, "--output: must be an absolute path");
	if (o->output[strlen(o->output) - 1] == '/')
		return bad(err, errlen, "--output: must name a file, not a directory");
	if (o->state_file[0] == '\0')
		o->state_file = NULL; /* memory off */
	else if (o->state_file[strlen(o->state_file) - 1] == '/')
		return bad(err, errlen, "--state-file: must name a file, not a directory");
	/* The container could redirect a directory of its own with a symlink. */
	if (at_or_below(o->output, o->container_root))
		return bad(err, errlen, "--output: must not be at or below --container-root");
	if (o->state_file && at_or_below(o->state_file, o->container_root))
		return bad(err, errlen, "--state-file: must not be at or below --container-root");

	if ((why = check_runner_name(o->runner_name)))
		return bad(err, errlen, "--runner-name: %s", why);
	if (o->runner_address && (why = check_url(o->runner_address, &url)))
		return bad(err, errlen, "--runner-address: %s", why);
	if (o->host_registration && o->unix_socket && !o->runner_address)
		return bad(err, errlen,
			   "--runner-address: needed with --unix-socket and --registration=host "
			   "(the URL the container reaches the forge at)");
	if (!o->runner_address)
		o->runner_address = o->forge_url;

	if (o->forge_user) {
		int r = peer_user_parse(o->forge_user, &o->forge_uid);

		if (r == -ENOENT)
			return bad(err, errlen, "--forge-user: no user '%s'", o->forge_user);
		if (r < 0)
			return bad(err, errlen, "--forge-user: '%s' is not a user name or uid",
				   o->forge_user);
		/* Who holds a port can only be told on this host; elsewhere
		 * only TLS proves who answers. */
		if (!o->unix_socket && !o->forge_loopback && !o->forge_https)
			return bad(err, errlen,
				   "--forge-user: the forge's host is not a loopback address; use "
				   "https to reach it");
	}
	return OPTIONS_RUN;
}
