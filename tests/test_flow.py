"""The boot flow (issue: the boot flow, end to end): one case per row of the
decision table and per exit status, on the routes the hive's design names."""

import os
import random
import shutil
import signal
import stat
import time

from harness import (ADMIN, PLACEHOLDER, REG, UUID, case, expect, paths_seen, says,
                     assert_auth_header_only)

LOOKUP = "/api/v1/admin/runners/1"
TOKEN = "/api/v1/admin/runners/registration-token"
TOKEN_LINE = "TOKEN=%s\n" % REG


# -- step 1: the admin token ---------------------------------------------------

@case
def admin_token_absent_writes_placeholder_and_asks_nothing(env):
    os.unlink(env.token_file)
    env.write_runner()
    f = env.forge(runners={1: UUID})
    r = env.run(f, retry_timeout="0.2")
    expect(r, 0)
    env.assert_output(PLACEHOLDER)
    assert env.runner_kept()
    assert f.requests == [], paths_seen(f)


@case
def admin_token_empty_or_blank_writes_placeholder(env):
    f = env.forge()
    for text in ("", "\n", "  \n\t\n"):
        env.write_admin_token(text)
        r = env.run(f, retry_timeout="0.2")
        expect(r, 0)
        env.assert_output(PLACEHOLDER)
    assert f.requests == []


@case
def admin_token_is_stripped_and_sent_only_as_header(env):
    env.write_admin_token("  " + ADMIN + "  \n")
    env.write_runner()
    f = env.forge(runners={1: UUID})
    expect(env.run(f), 0)
    assert paths_seen(f) == [LOOKUP, TOKEN]
    assert_auth_header_only(f)


# -- step 2: the lookup, one case per row --------------------------------------

@case
def registered_runner_is_kept(env):
    env.write_runner()
    env.write_output(PLACEHOLDER)  # the placeholder gives way to the current token
    f = env.forge(runners={1: UUID})
    r = env.run(f)
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [LOOKUP, TOKEN]
    assert f.connections == 1, "lookup and token on one connection"
    assert says(r.stderr, "runner 1", "still registered", "keeping .runner", "current",
                env.output), r


@case
def deleted_runner_is_reregistered(env):
    env.write_runner()
    f = env.forge(runners={})  # JSON 404: the forge does not know runner 1
    r = env.run(f)
    expect(r, 0)
    assert not env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [LOOKUP, TOKEN]
    assert "runner 1 is gone from the forge (404)" in r.stderr, r


@case
def no_answer_keeps_runner_at_once(env):
    env.write_runner()
    r = env.run(None, retry_timeout="5")  # nothing listens on the port
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(PLACEHOLDER)
    assert r.elapsed < 1.0, "retried a lookup that had no answer: %r" % r


@case
def reset_connection_keeps_runner(env):
    env.write_runner()
    f = env.forge(runners={})
    f.script("any", {"mode": "close", "reset": True})
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(PLACEHOLDER)
    assert len(f.requests) == 1


@case
def stalled_lookup_keeps_runner_within_deadline(env):
    env.write_runner()
    f = env.forge(runners={})
    f.script("lookup", {"mode": "hang"})
    r = env.run(f, retry_timeout="1")
    expect(r, 0)
    assert env.runner_kept()
    assert r.elapsed < 2.0, r


@case
def rejected_admin_token_keeps_runner_and_exits_77(env):
    env.write_runner()
    env.write_admin_token("adm_rotated_token_the_forge_does_not_know\n")
    f = env.forge(runners={})
    r = env.run(f)
    expect(r, 77)
    assert env.runner_kept()
    env.assert_output(PLACEHOLDER)  # none existed: the placeholder rule
    assert paths_seen(f) == [LOOKUP]


@case
def nonadmin_token_keeps_runner_and_keeps_previous_output(env):
    env.write_runner()
    env.write_admin_token("usr_valid_but_not_site_admin_0123456789\n")
    env.write_output(TOKEN_LINE)
    f = env.forge(runners={}, nonadmin_token="usr_valid_but_not_site_admin_0123456789")
    r = env.run(f)
    expect(r, 77)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)


@case
def busy_forge_is_asked_again_then_keeps(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    f.script("lookup", {"status": 503, "body": {"message": "busy"}},
             {"status": 500, "body": {"message": "db"}}, {"status": 429})
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [LOOKUP] * 4 + [TOKEN]
    assert "still registered" in r.stderr


@case
def busy_until_deadline_keeps_runner_with_warning(env):
    env.write_runner()
    f = env.forge(runners={})
    f.script("lookup", *[{"status": 502, "body": "bad gateway"}] * 100)
    r = env.run(f, retry_timeout="1")
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(PLACEHOLDER)
    assert 0.9 < r.elapsed < 1.6, r
    assert "keeping .runner unverified" in r.stderr, r
    assert TOKEN not in paths_seen(f)


@case
def request_timeout_408_is_retried(env):
    env.write_runner()
    f = env.forge(runners={})
    f.script("lookup", {"status": 408})
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    assert paths_seen(f) == [LOOKUP, LOOKUP, TOKEN]  # then the JSON 404
    env.assert_output(TOKEN_LINE)


@case
def other_statuses_delete_runner(env):
    for status, headers in ((400, {}), (405, {}), (410, {}),
                            (302, {"Location": "http://127.0.0.1:9/elsewhere"}),
                            (301, {"Location": "/api/v1/admin/runners/2"})):
        env.write_runner()
        f = env.forge(runners={1: UUID})
        f.script("lookup", {"status": status, "body": {"message": "x"}, "headers": headers})
        r = env.run(f)
        expect(r, 0)
        assert not env.runner_kept(), status
        env.assert_output(TOKEN_LINE)
        assert paths_seen(f) == [LOOKUP, TOKEN], (status, paths_seen(f))
        f.stop()


@case
def malformed_runner_files_are_deleted(env):
    bad = ["", "{", '{"id": 1', "[1]", "null", "{}", '{"id": "1"}', '{"id": 1.0}',
           '{"id": 0}', '{"id": -4}', '{"id": null}', '{"id": 9223372036854775808}',
           '{"id": 1, "id": 2}', "\x00\x01garbage"]
    f = env.forge(runners={1: UUID})
    for text in bad:
        env.write_runner(text)
        r = env.run(f)
        expect(r, 0)
        assert not env.runner_kept(), text
        env.assert_output(TOKEN_LINE)
        assert "malformed" in r.stderr, r
    assert LOOKUP not in paths_seen(f)


@case
def absent_runner_registers(env):
    f = env.forge()
    r = env.run(f)
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [TOKEN]


@case
def absent_container_root_registers(env):
    os.rmdir(env.root)  # first boot: the container was never started
    f = env.forge()
    expect(env.run(f), 0)
    env.assert_output(TOKEN_LINE)


# -- step 3: the registration token --------------------------------------------

@case
def forge_starting_late_is_noticed_soon(env):
    f = env.forge(start=False)
    f.start(delay=1.2)
    t0 = time.monotonic()
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert r.elapsed < 1.2 + 0.45, "noticed %.2fs after it came up" % (r.elapsed - 1.2)
    assert time.monotonic() - t0 >= 1.2


@case
def forge_never_up_exits_75_at_deadline(env):
    r = env.run(None, retry_timeout="1")
    expect(r, 75)
    assert 0.95 < r.elapsed < 1.5, r
    env.assert_output(PLACEHOLDER)


@case
def busy_then_token(env):
    f = env.forge()
    f.script("token", *[{"status": s} for s in (503, 503, 500, 502, 504, 429, 408)])
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [TOKEN] * 8


@case
def busy_past_deadline_exits_75_and_keeps_previous_output(env):
    env.write_output(PLACEHOLDER)
    before = os.stat(env.output)
    f = env.forge()
    f.script("token", *[{"status": 503}] * 100)
    r = env.run(f, retry_timeout="0.6")
    expect(r, 75)
    after = os.stat(env.output)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


@case
def token_route_rejects_admin_token_77(env):
    f = env.forge()
    f.script("token", {"status": 403, "body": {"message": "user should be the site admin"}})
    r = env.run(f, retry_timeout="5")
    expect(r, 77)
    assert r.elapsed < 1, r
    env.assert_output(PLACEHOLDER)


@case
def token_answers_that_are_not_tokens_exit_76(env):
    bodies = [{"token": ""}, {"token": 42}, {"tok": "abc"}, ["abc"], "abc",
              {"token": "a" * 256}, "", {"token": None}]
    for body in bodies:
        env.write_output(TOKEN_LINE.replace("Reg", "Old"))
        f = env.forge()
        f.script("token", {"status": 200, "body": body})
        r = env.run(f)
        expect(r, 76)
        env.assert_output(TOKEN_LINE.replace("Reg", "Old"))
        f.stop()


@case
def token_other_status_exits_76(env):
    for status in (400, 501, 302, 410):
        f = env.forge()
        f.script("token", {"status": status, "body": {"message": "no"}})
        r = env.run(f)
        expect(r, 76)
        f.stop()


# -- operator flags ------------------------------------------------------------

@case
def dry_run_says_and_changes_nothing(env):
    stories = [
        ({1: UUID}, ("runner 1", "still registered", "would keep .runner", "current")),
        ({}, ("runner 1", "gone from the forge", "would delete .runner", "current")),
    ]
    for runners, parts in stories:
        env.write_runner()
        f = env.forge(runners=runners)
        r = env.run(f, "--dry-run")
        expect(r, 0)
        assert r.stdout.count("\n") == 1 and says(r.stdout, *parts), r
        assert env.runner_kept()
        assert not os.path.exists(env.output)
        assert TOKEN not in paths_seen(f)
        f.stop()
    os.unlink(env.runner)
    f = env.forge()
    r = env.run(f, "-n")
    expect(r, 0)
    assert r.stdout.count("\n") == 1 and says(r.stdout, "no .runner", "would write", "current"), r
    assert f.requests == [] and not os.path.exists(env.output)
    assert not os.path.exists(env.state_file)


@case
def reregister_discards_a_registered_runner(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    r = env.run(f, "--reregister")
    expect(r, 0)
    assert not env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [TOKEN]


# -- the output file -----------------------------------------------------------

@case
def output_parent_created_0755_file_0600(env):
    f = env.forge()
    # Under umask 077 a plain mkdir would give 0700: 0755 is the tool's doing
    # (its file 0600 under umask 0, too).
    expect(env.run(f, umask=0o077), 0)
    env.assert_output(TOKEN_LINE)
    assert stat.S_IMODE(os.stat(os.path.dirname(env.output)).st_mode) == 0o755
    shutil.rmtree(os.path.dirname(env.output))
    expect(env.run(f, umask=0), 0)
    env.assert_output(TOKEN_LINE)
    assert stat.S_IMODE(os.stat(os.path.dirname(env.output)).st_mode) == 0o755


@case(slow=True)
def kill_at_random_moments_leaves_old_or_new(env):
    old = TOKEN_LINE.replace("Reg", "Old")
    f = env.forge()
    rnd = random.Random(2026)
    outcomes = set()
    for i in range(25):
        env.write_output(old)
        f.script("token", {"status": 200, "body": {"token": REG},
                           "delay": rnd.choice([0, 0.002, 0.01])})
        p = env.spawn(f)
        time.sleep(rnd.uniform(0, 0.03))
        p.send_signal(signal.SIGKILL)
        p.communicate()
        text = env.output_text()
        assert text in (old, TOKEN_LINE), repr(text)
        outcomes.add(text)
        # a later run cleans up whatever temporary the killed one left
        expect(env.run(f), 0)
        env.assert_output(TOKEN_LINE)
    assert len(f.requests) >= 25


# -- exit statuses of the command line and the admin token file ----------------

@case
def bad_usage_exits_64_with_one_line(env):
    for bad in (["--frobnicate"], ["--retry-timeout=abc"], ["--retry-timeout=-3"],
                ["--runner-file=relative/.runner"], ["--retry-timeout"], ["stray"]):
        r = env.run(argv=[env.binary] + bad)
        expect(r, 64)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("hive-ci-prefetch: "), r
        assert r.stdout == ""


@case
def help_and_version_on_stdout(env):
    for flag in ("--help", "-h"):
        r = env.run(argv=[env.binary, flag])
        expect(r, 0)
        assert r.stdout.startswith("Usage: hive-ci-prefetch") and r.stderr == ""
    for flag in ("--version", "-V"):
        r = env.run(argv=[env.binary, flag])
        expect(r, 0)
        assert r.stdout.startswith("hive-ci-prefetch ") and r.stderr == ""


@case
def unusable_admin_token_file_exits_78(env):
    f = env.forge()
    stories = [
        ("a token\n", 0o600, "printable ASCII"),
        ("abc\x01def\n", 0o600, "printable ASCII"),
        ("two\nlines\n", 0o600, "printable ASCII"),
        ("x" * 5000, 0o600, "4 KiB"),
        (ADMIN + "\n", 0o666, "writable"),
        (ADMIN + "\n", 0o620, "writable"),
    ]
    for text, mode, why in stories:
        env.write_admin_token(text, mode)
        r = env.run(f)
        expect(r, 78)
        assert why in r.stderr, r
    os.unlink(env.token_file)
    os.mkdir(env.token_file)
    r = env.run(f)
    expect(r, 78)
    assert "not a regular file" in r.stderr
    assert f.requests == []
    env.assert_output(PLACEHOLDER)


@case
def quiet_says_only_errors_verbose_says_steps(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    r = env.run(f, "-q")
    expect(r, 0)
    assert r.stderr == "", r
    r = env.run(f, "-v")
    expect(r, 0)
    assert "GET /admin/runners/1: 200" in r.stderr, r
    env.write_admin_token("wrong\n")
    r = env.run(f, "-q")
    expect(r, 77)
    assert "rejected the admin token" in r.stderr
