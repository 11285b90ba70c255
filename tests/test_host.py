"""Registration from the host (issue 20), one run at a time: the tool
registers the runner through the runners' own protocol, writes .runner into
the container, checks a kept runner with Declare where the lookup cannot,
and the output only ever holds the placeholder.  The multi-boot stories are
in tests/test_host_boots.py."""

import json
import os
import stat

from harness import ADMIN, REG, case, expect, files_holding, needs_root, says

FORGEJO_RUNNER = "/var/lib/forgejo-runner/hive/.runner"
GITEA_RUNNER = "/var/lib/gitea-runner/hive/.runner"
REGISTER = "/api/actions/runner.v1.RunnerService/Register"
DECLARE = "/api/actions/runner.v1.RunnerService/Declare"
PLACEHOLDER = "TOKEN=placeholder\n"


def host(env, *extra):
    return ("--registration=host",) + extra


def seen(f):
    return ["%s %s" % (q["method"], q["path"]) for q in f.requests]


def read_runner(env):
    with open(env.runner) as fh:
        return json.load(fh)


def assert_token_nowhere(env, token):
    """The forge-wide registration token is in no file under the container
    root, nor in the output or the state file."""
    found, _ = files_holding([token], env.root, env.output, env.state_file)
    assert not found, "the registration token is in %s" % found


def assert_no_fetch_task(f):
    assert not any("FetchTask" in q["path"] for q in f.requests), seen(f)


# -- a first boot: nothing there ----------------------------------------------------

@case
def host_first_boot_creates_the_dynamicuser_layout_and_writes_runner(env):
    """No container root at all: the layout systemd and nixos-container would
    make is created, .runner written as `register` writes it, 0600."""
    for flavour, inside, link, target in (
            ("forgejo15", FORGEJO_RUNNER, "var/lib/forgejo-runner/hive",
             "../private/forgejo-runner/hive"),
            ("gitea124", GITEA_RUNNER, "var/lib/gitea-runner", "private/gitea-runner")):
        env.root = os.path.join(env.dir, "root-" + flavour)  # not there at all
        env.runner_inside = inside
        f = env.forge(flavour)
        r = env.run(f, *host(env, "--labels=hive-ci:host,big:host", "--runner-name=box"))
        expect(r, 0)
        assert says(r.stderr, "registered runner 1", "wrote .runner", "placeholder"), r
        assert os.readlink(os.path.join(env.root, link)) == target
        for d, mode in (("", 0o755), ("var", 0o755), ("var/lib", 0o755),
                        ("var/lib/private", 0o700)):
            st = os.stat(os.path.join(env.root, d))
            assert stat.S_IMODE(st.st_mode) == mode, (d, oct(st.st_mode))
        st = os.lstat(env.runner)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        runner = read_runner(env)
        record = f.record(1)
        assert runner["id"] == 1 and isinstance(runner["id"], int), runner
        assert (runner["uuid"], runner["name"], runner["token"]) == \
            (record.uuid, "box", record.token), runner
        assert runner["address"] == f.url and runner["labels"] == ["hive-ci:host", "big:host"]
        assert list(runner)[:2] == ["WARNING", "id"], list(runner)
        assert record.labels == ["hive-ci", "big"], record.labels  # the names were sent
        assert f.runner_works(runner) == (True, "ok")
        env.assert_output(PLACEHOLDER)
        assert_token_nowhere(env, f.reg_token)
        # What Register was sent, and where the admin token went: not there.
        body = json.loads([q for q in f.requests if q["path"] == REGISTER][0]["body"])
        assert body["name"] == "box" and body["labels"] == ["hive-ci", "big"], body
        assert body["version"].startswith("hive-ci-prefetch/"), body
        for q in f.requests:
            if q["path"].startswith("/api/actions/"):
                assert ADMIN not in json.dumps({k: v for k, v in q["headers"].items()})
        assert_no_fetch_task(f)
        f.stop()
        os.unlink(env.state_file)  # the next host


@case
def host_runner_file_gets_the_owner_of_its_directory(env):
    needs_root()  # a directory of another owner
    env.runner_inside = GITEA_RUNNER
    inst = env.host_path("/var/lib/private/gitea-runner/hive")
    os.makedirs(inst)
    os.chmod(env.host_path("/var/lib/private"), 0o700)
    os.symlink("private/gitea-runner", env.host_path("/var/lib/gitea-runner"))
    for d in (env.host_path("/var/lib/private/gitea-runner"), inst):
        os.chown(d, 61234, 61234)
    f = env.forge("forgejo15")
    expect(env.run(f, *host(env)), 0)
    st = os.lstat(env.runner)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (61234, 61234, 0o600), st


@case
def host_never_writes_outside_the_container_root(env):
    """The container made /var/lib/gitea-runner an absolute link to a host
    directory: it is followed inside the root, never on the host."""
    outside = os.path.join(env.dir, "outside")
    os.makedirs(os.path.join(outside, "hive"))
    os.makedirs(env.host_path("/var/lib"))
    os.symlink(outside, env.host_path("/var/lib/gitea-runner"))
    env.runner_inside = GITEA_RUNNER
    f = env.forge("forgejo15")
    r = env.run(f, *host(env))
    assert os.listdir(os.path.join(outside, "hive")) == [], r
    assert r.rc in (0, 74), r


# -- kept runners: the lookup, or Declare ----------------------------------------------

def registered(env, f, inside=GITEA_RUNNER, labels="hive-ci:host"):
    """A first host-mode boot: the tool registers and writes .runner."""
    env.runner_inside = inside
    expect(env.run(f, *host(env, "--labels=" + labels)), 0)
    f.requests.clear()
    return read_runner(env)


@case
def host_steady_boot_asks_one_request_where_the_forge_can_look_up(env):
    for flavour in ("forgejo15", "forgejo16", "gitea124", "gitea126", "future", "design"):
        f = env.forge(flavour)
        runner = registered(env, f)
        before = os.stat(env.runner)
        for _ in range(2):  # the first learns the route that answers
            f.requests.clear()
            r = env.run(f, *host(env))
            expect(r, 0)
        assert len(f.requests) == 1, (flavour, seen(f))
        assert env.runner_kept() and read_runner(env) == runner
        assert os.stat(env.runner).st_ino == before.st_ino  # not rewritten
        assert not any("registration-token" in s for s in seen(f)), seen(f)
        env.assert_output(PLACEHOLDER)
        assert_no_fetch_task(f)
        f.stop()
        os.unlink(env.state_file)


@case
def host_declare_confirms_and_discards_where_the_lookup_cannot(env):
    """No lookup route (Forgejo 11 to 14, Gitea 1.22/1.23) or no uuid in the
    runner object (Gitea 1.24+): Declare with .runner's own credentials."""
    for flavour in ("forgejo11", "gitea122", "gitea124", "gitea126"):
        f = env.forge(flavour)
        runner = registered(env, f)
        r = env.run(f, *host(env))
        expect(r, 0)
        assert DECLARE in [q["path"] for q in f.requests], seen(f)
        assert says(r.stderr, "runner 1", "credentials still work"), r
        q = [q for q in f.requests if q["path"] == DECLARE][0]
        assert q["headers"]["x-runner-uuid"] == runner["uuid"]
        assert q["headers"]["x-runner-token"] == runner["token"]
        # The forge forgets the runner (wiped, or deleted in its panel):
        # "unregistered runner" in either shape discards it.
        f.wipe()
        env.secrets.append(f.reg_token)
        f.requests.clear()
        r = env.run(f, *host(env))
        expect(r, 0)
        assert says(r.stderr, "does not know runner 1", "unregistered runner") or \
            (flavour.startswith("gitea12") and says(r.stderr, "runner 1", "gone")), r
        assert REGISTER in [q["path"] for q in f.requests], seen(f)
        assert read_runner(env)["uuid"] != runner["uuid"]
        assert f.runner_works(read_runner(env)) == (True, "ok")
        assert_no_fetch_task(f)
        f.stop()
        os.unlink(env.state_file)


@case
def host_declare_that_cannot_tell_keeps_runner_unverified(env):
    for scripted in ({"status": 503, "body": "busy"},
                     {"status": 400, "body": {"code": "invalid_argument", "message": "?"}},
                     {"mode": "close"}):
        f = env.forge("forgejo11")
        runner = registered(env, f)
        f.script("declare", *[scripted] * 40)
        r = env.run(f, *host(env), retry_timeout="0.5")
        expect(r, 0)
        assert read_runner(env) == runner, r
        assert says(r.stderr, "could not tell", "keeping .runner unverified"), r
        assert REGISTER not in [q["path"] for q in f.requests]
        f.stop()
        os.unlink(env.state_file)


@case
def host_label_or_address_change_rewrites_runner_with_the_same_credentials(env):
    f = env.forge("forgejo15")
    runner = registered(env, f)
    r = env.run(f, *host(env, "--labels=hive-ci:host,gpu:host"))
    expect(r, 0)
    assert says(r.stderr, "rewrote .runner"), r
    again = read_runner(env)
    assert again["labels"] == ["hive-ci:host", "gpu:host"]
    for k in ("id", "uuid", "name", "token", "address"):
        assert again[k] == runner[k], k
    assert REGISTER not in [q["path"] for q in f.requests]
    r = env.run(f, *host(env, "--labels=hive-ci:host,gpu:host",
                         "--runner-address=http://forge.internal:3000"))
    expect(r, 0)
    assert read_runner(env)["address"] == "http://forge.internal:3000"
    assert read_runner(env)["uuid"] == runner["uuid"]
    assert f.record(2) is None  # no new record


# -- Register's failures -----------------------------------------------------------------

@case
def host_register_failures(env):
    env.runner_inside = GITEA_RUNNER
    cases = [
        # A refused registration token, in either family's shape: 76, with the
        # forge's message.
        ("forgejo15", {"status": 400, "body": {"code": "invalid_argument",
                                                "message": "runner registration token not found"}},
         76, "registration token not found"),
        ("gitea124", {"status": 500, "body": {"code": "unknown",
                                               "message": "runner registration token not found"}},
         76, "registration token not found"),
        # An answer without a runner: 76.
        ("forgejo15", {"status": 200, "body": {"runner": {"id": 7, "uuid": "u", "token": "t",
                                                          "name": "hive"}}}, 76, "no runner"),
        ("forgejo15", {"status": 200, "body": "<html>maintenance</html>"}, 76, "no runner"),
        # No answer by --retry-timeout: 75.
        ("forgejo15", {"mode": "hang"}, 75, "Register"),
    ]
    for flavour, scripted, rc, words in cases:
        f = env.forge(flavour)
        f.script("proto-register", scripted)
        r = env.run(f, *host(env), retry_timeout="0.5")
        expect(r, rc)
        assert words in r.stderr, r
        assert not os.path.lexists(env.runner)
        env.assert_output(PLACEHOLDER)
        assert_token_nowhere(env, f.reg_token)
        # Register is sent once: a second one could leave a runner behind.
        assert [q["path"] for q in f.requests].count(REGISTER) == 1, seen(f)
        f.stop()


@case
def host_register_without_the_runner_protocol_is_76(env):
    f = env.forge("forgejo15", actions=False)
    env.runner_inside = GITEA_RUNNER
    r = env.run(f, *host(env))
    expect(r, 76)
    assert says(r.stderr, "registered no runner", "404"), r


@case
def host_register_over_tls_that_fails_is_69(env):
    f = env.forge("forgejo15", tls=True)
    env.runner_inside = GITEA_RUNNER
    r = env.run(f, *host(env))  # the test CA is not trusted
    expect(r, 69)


# -- dry runs, --json, and a host leaving container mode --------------------------

@case
def host_dry_run_sends_no_register_and_no_declare(env):
    f = env.forge("forgejo11")
    env.runner_inside = GITEA_RUNNER
    r = env.run(f, *host(env, "--dry-run"))
    expect(r, 0)
    assert says(r.stdout, "no .runner", "would register a runner", "placeholder"), r
    assert not any(q["path"].startswith("/api/actions/") for q in f.requests), seen(f)
    assert not os.path.exists(env.output)
    runner = registered(env, f)
    r = env.run(f, *host(env, "--dry-run", "--json"))
    expect(r, 0)
    obj = json.loads(r.stdout)
    assert obj["registration"] == "host" and obj["action"] == "keep", obj
    assert "Declare" in obj["reason"], obj
    assert not any(q["path"].startswith("/api/actions/") for q in f.requests), seen(f)
    r = env.run(f, *host(env, "--dry-run", "--labels=other:host"))
    assert says(r.stdout, "would keep .runner", "rewrite"), r
    assert read_runner(env) == runner


@case
def host_json_says_host_and_container(env):
    f = env.forge("forgejo15")
    env.runner_inside = GITEA_RUNNER
    for extra, mode in (((), "container"), (("--registration=host",), "host")):
        r = env.run(f, "--json", *extra)
        expect(r, 0)
        assert json.loads(r.stdout)["registration"] == mode, r.stdout


@case
def host_mode_takes_the_registration_token_out_of_output_and_state(env):
    """A host that ran in container mode: its output and state file hold the
    registration token.  The first host-mode run leaves it in neither."""
    f = env.forge("forgejo15")
    env.runner_inside = GITEA_RUNNER
    expect(env.run(f), 0)  # container mode, no .runner
    env.assert_output("TOKEN=%s\n" % REG)
    with open(env.state_file) as fh:
        assert REG in fh.read()
    r = env.run(f, *host(env))
    expect(r, 0)
    env.assert_output(PLACEHOLDER)
    assert_token_nowhere(env, REG)
    # On a failure too: the output is replaced, not left as it was.
    env.write_output("TOKEN=%s\n" % REG)
    os.unlink(env.runner)
    f.script("proto-register", {"status": 500, "body": {"code": "unknown", "message": "no"}})
    r = env.run(f, *host(env))
    expect(r, 76)
    env.assert_output(PLACEHOLDER)


@case
def host_warns_when_something_in_the_container_replaced_runner(env):
    """The runner module's own registration (ExecStartPre left on) deletes
    the host's .runner: the next boot says what happened."""
    f = env.forge("forgejo15")
    first = registered(env, f)
    os.unlink(env.runner)
    r = env.run(f, *host(env))
    expect(r, 0)
    assert says(r.stderr, "missing", "still shows runner %d" % first["id"], "ExecStartPre"), r
    assert env.runner_kept()  # registered again: the runner works


# -- ghosts, host mode: Gitea's proven with their own credentials ----------------------

@case
def host_gitea_ghost_is_proven_with_its_credentials_and_deleted(env):
    for flavour in ("gitea124", "gitea126"):
        f = env.forge(flavour)
        old = registered(env, f)
        expect(env.run(f, *host(env, "--reregister")), 0)  # supersedes runner 1
        new = read_runner(env)
        assert new["id"] != old["id"]
        f.requests.clear()
        r = env.run(f, *host(env))  # confirmed (Declare), then the clean-up
        expect(r, 0)
        assert f.record(old["id"]) is None, (flavour, seen(f))
        assert f.record(new["id"]) is not None
        proofs = [q for q in f.requests if q["path"] == DECLARE and
                  q["headers"].get("x-runner-uuid") == old["uuid"]]
        assert len(proofs) == 1, seen(f)
        f.stop()
        os.unlink(env.state_file)


@case
def host_state_keeps_no_registration_token_but_superseded_runners_own(env):
    f = env.forge("gitea124")
    old = registered(env, f)
    f.set_status(1, "idle")  # in use: not deleted on the next boot
    expect(env.run(f, *host(env, "--reregister")), 0)
    with open(env.state_file) as fh:
        state = json.load(fh)
    assert "token" not in state, state
    listed = {e["id"]: e for e in state["superseded"]}
    assert listed[old["id"]]["token"] == old["token"], state  # root only, host-side
    assert stat.S_IMODE(os.stat(env.state_file).st_mode) == 0o600


@case
def host_runner_that_cannot_be_written_is_listed_as_a_ghost(env):
    """Registered, but .runner cannot be written (the container put a FIFO
    where its directory goes): 74, and the new runner, which no .runner
    names, is listed for the clean-up with its own credentials."""
    env.runner_inside = GITEA_RUNNER
    os.makedirs(env.host_path("/var/lib/private/gitea-runner"))
    os.symlink("private/gitea-runner", env.host_path("/var/lib/gitea-runner"))
    os.mkfifo(env.host_path("/var/lib/private/gitea-runner/hive"))
    f = env.forge("forgejo15")
    r = env.run(f, *host(env))
    expect(r, 74)
    assert says(r.stderr, "registered runner 1", "cannot write", GITEA_RUNNER), r
    with open(env.state_file) as fh:
        listed = {e["id"]: e for e in json.load(fh)["superseded"]}
    assert listed[1]["uuid"] == f.record(1).uuid and listed[1]["token"] == f.record(1).token
    env.assert_output(PLACEHOLDER)


@case
def host_forge_message_that_repeats_the_token_is_not_shown(env):
    f = env.forge("forgejo15")
    env.runner_inside = GITEA_RUNNER
    f.script("proto-register", {"status": 400, "body": {
        "code": "invalid_argument", "message": "bad token %s" % REG}})
    r = env.run(f, *host(env))  # the harness checks REG is not printed
    expect(r, 76)
    assert "a message not shown" in r.stderr, r
