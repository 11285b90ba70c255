#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "program.h"

static int log_max_level = LOG_INFO;
static bool log_to_journal;

/* True when $JOURNAL_STREAM names stderr's device and inode. */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char tail;

	/* systemd sets "DEVICE:INODE" of the stream it connected; it is only
	 * ours if stderr is still that very stream (a redirect breaks it). */
	if (!e || sscanf(e, "%llu:%llu%c", &dev, &ino, &tail) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

void log_setup(int max_level)
{
	log_max_level = max_level;
	log_to_journal = stderr_is_journal();
}

void log_msg(int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level > log_max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line, so lines of concurrent runs do not interleave. */
	if (log_to_journal)
		fprintf(stderr, "<%d>" PROGRAM_NAME ": %s\n", level, line);
	else
		fprintf(stderr, PROGRAM_NAME ": %s\n", line);
}
