/* The command line: an exact contract (see the man page). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "output.h"
#include "program.h"

#define OPTIONS_LABELS_MAX 32
#define OPTIONS_LABELS_BUF 2048

struct options {
	const char *forge_url;
	bool forge_https;	 /* its scheme */
	bool forge_loopback;	 /* its host is a loopback address (a literal, or localhost) */
	const char *unix_socket; /* NULL: TCP */
	const char *forge_user;	 /* NULL: whoever holds the forge's port is not checked */
	uid_t forge_uid;	 /* ... else the uid that must */
	const char *ca_file;	 /* NULL: the system's trust store */
	const char *core_token_file;
	const char *container_root;
	const char *runner_file; /* absolute, inside the container */
	const char *output;
	int64_t retry_timeout_ms;
	const char *state_file; /* NULL: remember nothing */
	enum token_format token_format;
	bool host_registration; /* --registration=host: the tool registers, and writes .runner */
	const char *runner_name;
	const char *runner_address; /* as the container reaches the forge: --forge-url by default */
	const char
	    *labels[OPTIONS_LABELS_MAX]; /* full form, name:host ...; point into labels_buf */
	size_t n_labels;
	char labels_buf[OPTIONS_LABELS_BUF];
	bool placeholder_on_keep;
	bool cleanup;
	bool reregister;
	bool dry_run;
	bool json;
	int verbosity; /* -1 quiet, 0 default, 1 verbose */
};

enum options_result {
	OPTIONS_RUN,
	OPTIONS_HELP,
	OPTIONS_VERSION,
	OPTIONS_BAD = -1,
};

/* Parses argv into *o (strings point into argv).  On OPTIONS_BAD, err holds
 * one line saying what is wrong (no trailing newline).  Prints nothing. */
enum options_result options_parse(int argc, char **argv, struct options *o, char *err,
				  size_t errlen);

/* Writes the --help text. */
void options_usage(FILE *f);
