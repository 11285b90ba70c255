"""No ghost runners (issue: superseded registrations of this runner are
removed from the forge): what is deleted, what never is, and that a failed
clean-up changes nothing else."""

import json
import os

import forge
from harness import REG, UUID, case, expect
from test_operator import json_outcome

TOKEN_LINE = "TOKEN=%s\n" % REG
GHOST_UUID = "0b7e6d1c-9a44-4c1e-8f3e-00000000ghost"
GHOST = "/api/v1/admin/actions/runners/2"


def listed(env, *ghosts, confirmed=1):
    """A state file naming runner `confirmed` as confirmed and ghosts as
    superseded (id, uuid)."""
    os.makedirs(os.path.dirname(env.state_file), mode=0o700, exist_ok=True)
    state = {"token": REG, "runner": {"id": confirmed, "uuid": UUID, "name": "hive"},
             "superseded": [{"id": i, "uuid": u} for i, u in ghosts]}
    with open(env.state_file, "w") as fh:
        fh.write(json.dumps(state, separators=(",", ":")) + "\n")
    os.chmod(env.state_file, 0o600)


def superseded(env):
    with open(env.state_file) as fh:
        return [(e["id"], e["uuid"]) for e in json.load(fh)["superseded"]]


def seen(f):
    return ["%s %s" % (q["method"], q["path"]) for q in f.requests]


def ghost_forge(env, flavour="forgejo15", status="offline", uuid=GHOST_UUID):
    """Runner 1 is .runner's, runner 2 a ghost of ours.  On Gitea the runner
    objects have no uuid."""
    env.write_runner()
    gitea = flavour.startswith("gitea")
    return env.forge(flavour, runners={
        1: dict({} if gitea else {"uuid": UUID}, name="hive", status="idle"),
        2: dict({} if gitea else {"uuid": uuid}, name="hive", status=status),
    })


@case
def offline_ghost_of_ours_is_deleted_on_a_confirmed_boot(env):
    listed(env, (2, GHOST_UUID))
    f = ghost_forge(env)
    action, rc, _, obj = json_outcome(env, f)
    assert (action, rc, obj["deleted"]) == ("keep", 0, [2]), obj
    assert "GET " + GHOST in seen(f) and "DELETE " + GHOST in seen(f), seen(f)
    assert f.record(2) is None
    assert superseded(env) == []
    env.assert_output(TOKEN_LINE)
    # Its lookup reuses the connection; the DELETE gets one of its own, so
    # that libcurl never sends it twice.
    assert f.connections == 2, f.connections


@case
def cleanup_asks_only_the_lookup_route_that_answered(env):
    listed(env, (2, GHOST_UUID))
    f = ghost_forge(env)
    expect(env.run(f), 0)
    # The design route answered "no such route" for runner 1: never again;
    # the route that answered is asked.
    assert seen(f).count("GET /api/v1/admin/runners/2") == 0, seen(f)
    assert seen(f).count("GET " + GHOST) == 1, seen(f)


@case
def id_now_held_by_another_runner_is_never_deleted(env):
    listed(env, (2, GHOST_UUID))
    f = ghost_forge(env, uuid="a-runner-that-took-id-2-after-a-wipe")
    action, rc, _, obj = json_outcome(env, f)
    assert (rc, obj["deleted"]) == (0, []), obj
    assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)
    assert f.record(2) is not None
    assert superseded(env) == []  # forgotten: it is not ours


@case
def runner_in_use_is_never_deleted_and_stays_listed(env):
    for status in ("idle", "active"):
        listed(env, (2, GHOST_UUID))
        f = ghost_forge(env, status=status)
        r = env.run(f)
        expect(r, 0)
        assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)
        assert "superseded runner 2 is %s, not offline" % status in r.stderr, r
        assert superseded(env) == [(2, GHOST_UUID)]
        f.stop()


@case
def forge_without_uuid_never_deletes_and_says_so(env):
    for flavour in ("gitea124", "gitea126"):
        listed(env, (2, GHOST_UUID))
        f = ghost_forge(env, flavour=flavour)
        r = env.run(f, "-v")
        expect(r, 0)
        assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)
        assert "the forge shows no uuid" in r.stderr, r
        assert f.record(2) is not None and superseded(env) == []
        f.stop()


@case
def forge_without_delete_route_keeps_the_list(env):
    listed(env, (2, GHOST_UUID))
    f = ghost_forge(env, flavour="design")
    r = env.run(f, "-v")
    expect(r, 0)
    assert "DELETE " + GHOST in seen(f), seen(f)
    assert "forge has no DELETE" in r.stderr, r
    assert f.record(2) is not None and superseded(env) == [(2, GHOST_UUID)]


@case
def ghost_already_gone_is_forgotten(env):
    listed(env, (3, GHOST_UUID))
    f = ghost_forge(env)
    expect(env.run(f), 0)
    assert superseded(env) == []
    assert "GET /api/v1/admin/actions/runners/3" in seen(f), seen(f)  # asked, then forgotten
    assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)


@case
def dry_run_and_no_cleanup_delete_nothing(env):
    listed(env, (2, GHOST_UUID))
    f = ghost_forge(env)
    _, rc, _, obj = json_outcome(env, f, "--dry-run")
    assert (rc, obj["deleted"], obj["dry_run"]) == (0, [2], True), obj  # would delete
    assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)
    f.requests.clear()
    r = env.run(f, "--no-cleanup")
    expect(r, 0)
    assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)
    assert "GET " + GHOST not in seen(f), seen(f)
    assert f.record(2) is not None and superseded(env) == [(2, GHOST_UUID)]


@case
def nothing_is_deleted_in_the_run_that_discards_runner(env):
    listed(env, (2, GHOST_UUID))
    f = ghost_forge(env)
    r = env.run(f, "--reregister")
    expect(r, 0)
    assert seen(f) == ["GET /api/v1/admin/runners/registration-token"], seen(f)
    assert (1, UUID) in superseded(env) and (2, GHOST_UUID) in superseded(env)


@case
def failed_delete_changes_neither_exit_nor_output(env):
    failures = [{"mode": "close", "reset": True}, {"status": 500, "body": {"message": "db"}},
                {"status": 403, "body": {"message": "no"}}]
    for failure in failures:
        listed(env, (2, GHOST_UUID), (4, GHOST_UUID + "4"))
        f = ghost_forge(env)
        f.runners[4] = {"uuid": GHOST_UUID + "4", "name": "hive", "status": "offline"}
        f.script("delete", failure)
        r = env.run(f)
        expect(r, 0)
        env.assert_output(TOKEN_LINE)
        warnings = [line for line in r.stderr.splitlines() if "superseded runner" in line]
        assert len(warnings) == 1 and "next boot tries again" in warnings[0], r
        assert seen(f).count("DELETE " + GHOST) == 1, seen(f)  # never retried in the run
        assert superseded(env) == [(2, GHOST_UUID), (4, GHOST_UUID + "4")]
        f.stop()


@case
def hanging_cleanup_is_bounded(env):
    listed(env, (2, GHOST_UUID))
    f = ghost_forge(env)
    runner_1 = forge.runner_object(1, {"uuid": UUID, "name": "hive", "status": "idle"})
    f.script("lookup", {"body": runner_1}, {"mode": "hang"})
    r = env.run(f, retry_timeout="2")
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert r.elapsed < 1.6, r
    assert "cannot look up superseded runner 2" in r.stderr, r
    assert superseded(env) == [(2, GHOST_UUID)]
