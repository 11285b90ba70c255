/* LD_PRELOAD shim for the tests: every relative clock_nanosleep sleeps
 * $HCP_SLEEP_OVERSHOOT_MS longer than asked, as on a loaded machine, so a
 * wait that should end before a deadline ends after it. */
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem)
{
	int (*real)(clockid_t, int, const struct timespec *, struct timespec *) =
	    (int (*)(clockid_t, int, const struct timespec *, struct timespec *))dlsym(
		RTLD_NEXT, "clock_nanosleep");
	const char *e = getenv("HCP_SLEEP_OVERSHOOT_MS");
	struct timespec t = *req;

	if (e && !(flags & TIMER_ABSTIME)) {
		long ms = atol(e);

		t.tv_sec += ms / 1000;
		t.tv_nsec += (ms % 1000) * 1000000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000;
		}
	}
	return real(clock, flags, &t, rem);
}
