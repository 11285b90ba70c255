"""A stable token file, remembered across boots (issue: a working runner stays
working on every boot).  One case per output rule, the state file's own
rules, --token-format, --placeholder-on-keep and --json's "token" field."""

import json
import os
import stat

from harness import PLACEHOLDER, REG, UUID, case, expect, needs_root, paths_seen, says
from test_operator import json_outcome

TOKEN_LINE = "TOKEN=%s\n" % REG
NEW_REG = "NewRegCanary_after-a-reset-0123456789abcdefgh"
LOOKUP = "/api/v1/admin/runners/1"
TOKEN = "/api/v1/admin/runners/registration-token"


def remember(env, token=REG):
    """A state file as an earlier boot left it: token remembered."""
    os.makedirs(os.path.dirname(env.state_file), mode=0o700, exist_ok=True)
    with open(env.state_file, "w") as fh:
        fh.write(json.dumps({"token": token, "superseded": []}, separators=(",", ":")) + "\n")
    os.chmod(env.state_file, 0o600)


def state(env):
    with open(env.state_file) as fh:
        return json.load(fh)


# -- rule 1: the forge's token, on the fast path too -----------------------------

@case
def kept_runner_gets_the_current_token_and_it_is_remembered(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    r = env.run(f)
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [LOOKUP, TOKEN] and f.connections == 1, paths_seen(f)
    assert state(env)["token"] == REG
    assert state(env)["runner"] == {"id": 1, "uuid": UUID, "name": "hive"}, state(env)
    st = os.stat(env.state_file)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert stat.S_IMODE(os.stat(os.path.dirname(env.state_file)).st_mode) == 0o700


@case
def steady_boot_keeps_output_bytes_and_does_not_rewrite_state(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    expect(env.run(f), 0)
    first = env.output_text()
    before = os.stat(env.state_file)
    os.unlink(env.output)  # /run is emptied on every boot
    r = env.run(f, "-v")
    expect(r, 0)
    assert env.output_text() == first == TOKEN_LINE
    after = os.stat(env.state_file)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), \
        "a steady boot rewrote the state file"
    assert "state file" not in r.stderr, r


# -- rule 2: no token from the forge: the remembered one, else the placeholder ----

@case
def forge_down_keeps_runner_and_writes_the_remembered_token(env):
    env.write_runner()
    remember(env)
    r = env.run(None, retry_timeout="5")  # nothing listens
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert r.elapsed < 1.0, r
    assert "wrote the remembered registration token" in r.stderr, r


@case
def forge_down_with_nothing_remembered_writes_the_placeholder(env):
    env.write_runner()
    r = env.run(None)
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(PLACEHOLDER)
    assert "wrote the placeholder" in r.stderr, r


@case
def busy_forge_at_deadline_writes_the_remembered_token(env):
    env.write_runner()
    remember(env)
    f = env.forge(runners={1: UUID})
    f.script("lookup", *[{"status": 503}] * 50)
    r = env.run(f, retry_timeout="0.5")
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)


@case
def no_admin_token_writes_the_remembered_token(env):
    os.unlink(env.token_file)
    env.write_runner()
    remember(env)
    f = env.forge(runners={1: UUID})
    r = env.run(f, retry_timeout="0.2")
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert f.requests == []


@case
def kept_runner_without_token_route_writes_the_remembered_token(env):
    env.write_runner()
    remember(env)
    f = env.forge(runners={1: UUID})
    f.script("token", {"status": 404, "body": "404 page not found\n"})
    r = env.run(f)
    expect(r, 0)  # the runner works: no failure
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert "forge has none of" in r.stderr and "wrote the remembered" in r.stderr, r


@case
def kept_runner_with_token_still_busy_writes_the_remembered_token(env):
    env.write_runner()
    remember(env)
    f = env.forge(runners={1: UUID})
    f.script("token", *[{"status": 503}] * 50)
    r = env.run(f, retry_timeout="0.5")
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert "no registration token within --retry-timeout" in r.stderr, r


# -- rule 3: failure: existing output left, missing one remembered or placeholder --

@case
def failure_without_output_writes_the_remembered_token(env):
    remember(env)
    f = env.forge()
    f.script("token", *[{"status": 503}] * 50)
    r = env.run(f, retry_timeout="0.3")
    expect(r, 75)
    env.assert_output(TOKEN_LINE)


@case
def failure_leaves_an_existing_output_as_it_was(env):
    remember(env)
    env.write_output("TOKEN=older\n")
    f = env.forge()
    f.script("token", {"status": 401, "body": {"message": "no"}})
    r = env.run(f)
    expect(r, 77)
    assert env.output_text() == "TOKEN=older\n"


# -- rule 4: no lookup route: a changed token means a reset or wiped forge ---------

@case
def legacy_forge_changed_token_discards_runner(env):
    env.write_runner()
    remember(env, REG)
    f = env.forge("v7", runners={1: UUID}, reg_token=NEW_REG)
    r = env.run(f)
    expect(r, 0)
    assert not env.runner_kept(), r
    env.assert_output("TOKEN=%s\n" % NEW_REG)
    assert ("registration token changed and the forge cannot look runners up"
            in r.stderr), r
    assert state(env)["token"] == NEW_REG


@case
def legacy_forge_same_or_unremembered_token_keeps_runner(env):
    env.write_runner()
    f = env.forge("v7", runners={1: UUID})
    expect(env.run(f), 0)  # nothing remembered: keep
    assert env.runner_kept()
    r = env.run(f)  # the same token: keep
    expect(r, 0)
    assert env.runner_kept()
    env.assert_output(TOKEN_LINE)


# -- rule 5 and the formats ----------------------------------------------------------

@case
def placeholder_on_keep_restores_the_original_design(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    r = env.run(f, "--placeholder-on-keep")
    expect(r, 0)
    env.assert_output(PLACEHOLDER)
    assert paths_seen(f) == [LOOKUP]
    os.unlink(env.runner)  # registering still writes the token
    expect(env.run(f, "--placeholder-on-keep"), 0)
    env.assert_output(TOKEN_LINE)


@case
def raw_token_format(env):
    f = env.forge()
    expect(env.run(f, "--token-format=raw"), 0)
    env.assert_output(REG + "\n")
    r = env.run(None, "--token-format", "raw", "--state-file=", retry_timeout="0.2")
    expect(r, 75)  # registering with the forge down: the existing output stays
    env.assert_output(REG + "\n")
    os.unlink(env.output)
    expect(env.run(None, "--token-format=raw", "--state-file=", retry_timeout="0.2"), 75)
    env.assert_output("placeholder\n")
    r = env.run(f, "--token-format=json")
    expect(r, 64)


# -- the state file itself -----------------------------------------------------------

@case
def state_file_off_remembers_nothing(env):
    f = env.forge()
    expect(env.run(f, "--state-file="), 0)
    env.assert_output(TOKEN_LINE)
    assert not os.path.exists(os.path.dirname(env.state_file))
    env.write_runner()
    os.unlink(env.output)
    r = env.run(None, "--state-file=")
    expect(r, 0)
    env.assert_output(PLACEHOLDER)


@case
def corrupt_or_oversized_state_file_is_ignored_with_one_warning_and_replaced(env):
    os.makedirs(os.path.dirname(env.state_file), mode=0o700)
    f = env.forge()
    for content in ("not json", '{"token": "bad token!"}', '{"token": 7}', "[]",
                    '{"token": "%s", "token": "x"}' % REG, "x" * (64 * 1024 + 1)):
        with open(env.state_file, "w") as fh:
            fh.write(content)
        os.chmod(env.state_file, 0o600)
        r = env.run(f)
        expect(r, 0)
        warnings = [line for line in r.stderr.splitlines() if "state file" in line]
        assert len(warnings) == 1 and "ignoring it" in warnings[0], r
        env.assert_output(TOKEN_LINE)
        assert state(env)["token"] == REG  # replaced on this write


@case
def state_file_writable_by_others_is_not_believed(env):
    remember(env, NEW_REG)
    os.chmod(env.state_file, 0o622)
    env.write_runner()
    r = env.run(None)
    expect(r, 0)
    env.assert_output(PLACEHOLDER)  # the injected token is not used
    assert "is group- or world-writable; ignoring it" in r.stderr, r


@case
def state_file_not_ours_is_not_believed(env):
    needs_root()  # a file of another owner
    remember(env, NEW_REG)
    os.chown(env.state_file, 65534, 65534)
    env.write_runner()
    r = env.run(None)
    expect(r, 0)
    env.assert_output(PLACEHOLDER)  # the planted token is not used
    assert "is not owned by us; ignoring it" in r.stderr, r


@case
def unwritable_state_file_is_a_warning_not_a_failure(env):
    # A regular file where the state directory should be: nothing can be
    # created below it, as root or not.
    os.makedirs(os.path.dirname(os.path.dirname(env.state_file)), exist_ok=True)
    with open(os.path.dirname(env.state_file), "w") as fh:
        fh.write("in the way\n")
    f = env.forge()
    r = env.run(f)
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert says(r.stderr, "cannot", "state file", env.state_file), r


@case
def json_token_field_names_every_source(env):
    f = env.forge(runners={1: UUID})
    env.write_runner()
    assert json_outcome(env, f)[3]["token"] == "current"
    assert json_outcome(env, None)[3]["token"] == "remembered"
    _, rc, _, obj = json_outcome(env, None, "--state-file=")
    assert (rc, obj["token"]) == (0, "placeholder"), obj
    f.script("token", {"status": 403, "body": {"message": "no"}})
    _, rc, _, obj = json_outcome(env, f)
    assert (rc, obj["token"]) == (77, "unchanged"), obj
    _, rc, _, obj = json_outcome(env, f, "--dry-run")
    assert (rc, obj["token"], obj["dry_run"]) == (0, "current", True), obj
    # A dry run says what a run would write: with the forge down, not the
    # current token but the remembered one.
    _, rc, _, obj = json_outcome(env, None, "--dry-run")
    assert (rc, obj["token"], obj["action"]) == (0, "remembered", "keep"), obj
