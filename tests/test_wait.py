"""The very first boot (issue: wait for the forge's admin token instead of
giving up): the admin token file appears some time after the tool starts."""

import os
import threading
import time

from harness import ADMIN, PLACEHOLDER, REG, case, expect, paths_seen

TOKEN_LINE = "TOKEN=%s\n" % REG
TOKEN = "/api/v1/admin/runners/registration-token"


def later(seconds, action):
    """Runs action after seconds in a thread; returns a dict that gets the
    monotonic time at which action finished."""
    done = {}

    def run():
        time.sleep(seconds)
        action()
        done["at"] = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    done["thread"] = t
    return done


def write_token_file(env, text=ADMIN + "\n", mode=0o600):
    tmp = env.token_file + ".new"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, env.token_file)


def run_timed(env, f, *extra, retry_timeout="5"):
    """Runs the binary; returns the result and its monotonic end time."""
    r = env.run(f, *extra, retry_timeout=retry_timeout)
    return r, time.monotonic()


@case
def admin_token_appearing_late_is_waited_for_and_used(env):
    os.unlink(env.token_file)
    f = env.forge()
    done = later(0.5, lambda: write_token_file(env))
    r, end = run_timed(env, f, "--json")
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [TOKEN]
    # Measured from the moment the file appeared to the tool's exit.
    assert end - done["at"] < 0.65, "took %.3f s after the file appeared" % (end - done["at"])
    assert "waited 0." in r.stdout, r  # --json's reason says it waited, and how long


@case
def admin_token_directory_appearing_late_then_the_file(env):
    env.token_file = os.path.join(env.dir, "hyperhive", "forge-core-token")
    f = env.forge()

    def appear():
        os.mkdir(os.path.dirname(env.token_file), 0o700)
        time.sleep(0.2)
        write_token_file(env)
    later(0.3, appear)
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert r.elapsed < 1.5, r


@case
def admin_token_never_appearing_ends_at_the_deadline_with_a_warning(env):
    os.unlink(env.token_file)
    env.write_runner()
    f = env.forge()
    r = env.run(f, retry_timeout="0.6")
    expect(r, 0)
    assert 0.55 < r.elapsed < 1.2, r
    assert env.runner_kept()
    env.assert_output(PLACEHOLDER)
    assert f.requests == []
    assert "(waited 0.6 s for the admin token file)" in r.stderr, r


@case
def admin_token_file_appearing_empty_then_filled_is_accepted(env):
    os.unlink(env.token_file)
    f = env.forge()

    def appear():
        with open(env.token_file, "w") as fh:  # created empty, as a writer would
            os.chmod(env.token_file, 0o600)
            fh.flush()
            time.sleep(0.3)
            fh.write(ADMIN + "\n")
    later(0.2, appear)
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    env.assert_output(TOKEN_LINE)


@case
def admin_token_file_appearing_unusable_fails_at_once(env):
    for make in ("world-writable", "symlink"):
        if os.path.lexists(env.token_file):
            os.unlink(env.token_file)
        f = env.forge()
        if make == "world-writable":
            action = lambda: write_token_file(env, mode=0o666)  # noqa: E731
        else:
            target = os.path.join(env.dir, "elsewhere")
            with open(target, "w") as fh:
                fh.write(ADMIN + "\n")
            action = lambda: os.symlink(target, env.token_file)  # noqa: E731
        later(0.3, action)
        r = env.run(f, retry_timeout="5")
        expect(r, 78)
        assert r.elapsed < 1.0, (make, r)
        assert f.requests == []
        f.stop()


@case
def dry_run_does_not_wait_for_the_admin_token(env):
    os.unlink(env.token_file)
    r = env.run(None, "--dry-run", retry_timeout="5")
    expect(r, 0)
    assert r.elapsed < 0.5, r
    assert "would wait up to --retry-timeout" in r.stdout, r
    assert not os.path.exists(env.output)


