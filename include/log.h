/* The one place that formats messages.  Callers never pass a secret. */
#pragma once

#include <stdbool.h>
#include <syslog.h>

/* Sets the most verbose level shown (LOG_ERR, LOG_INFO or LOG_DEBUG) and
 * whether stderr is the journal, in which case every line carries its
 * syslog priority as "<N>". */
void log_setup(int max_level);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...)	 log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)	 log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)	 log_msg(LOG_DEBUG, __VA_ARGS__)
