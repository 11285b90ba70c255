"""Every forge the hive will meet, over every transport it offers (issue:
work with every forge).  The same three stories run against each flavour of
the test forge: a registered runner is kept, a deleted one is re-registered,
and an absent .runner registers."""

import os
import time

from harness import (PLACEHOLDER, REG, UUID, case, expect, paths_seen, says,
                     assert_auth_header_only)
import forge

TOKEN_LINE = "TOKEN=%s\n" % REG
DESIGN_LOOKUP, ACTIONS_LOOKUP = "/api/v1/admin/runners/1", "/api/v1/admin/actions/runners/1"
DESIGN_TOKEN = "/api/v1/admin/runners/registration-token"
ACTIONS_TOKEN = "/api/v1/admin/actions/runners/registration-token"
DL, AL = "GET " + DESIGN_LOOKUP, "GET " + ACTIONS_LOOKUP
DT, AT, PT = "GET " + DESIGN_TOKEN, "GET " + ACTIONS_TOKEN, "POST " + ACTIONS_TOKEN

# flavour -> (requests for a registered runner, for a deleted one (None: the
# forge cannot tell), for no .runner).  Every route is asked once: a route
# that answered "no such route" is not asked again, and each token route
# only when the one before is not there.
STORIES = {
    "design": ([DL, DT], [DL, DT], [DT]),
    "forgejo11": ([DL, AL, DT], None, [DT]),
    "forgejo15": ([DL, AL, DT], [DL, AL, DT], [DT]),
    "forgejo16": ([DL, AL, DT], [DL, AL, DT], [DT]),
    "gitea122": ([DL, AL, DT], None, [DT]),
    "gitea124": ([DL, AL, DT], [DL, AL, DT], [DT]),
    # 1.26: the GET token routes are gone; the actions one falls into the
    # runner lookup and answers a JSON 404; only the POST gives a token.
    "gitea126": ([DL, AL, DT, AT, PT], [DL, AL, DT, AT, PT], [DT, AT, PT]),
    "future": ([DL, AL, DT, AT], [DL, AL, DT, AT], [DT, AT]),
}


def seen(f):
    return ["%s %s" % (q["method"], q["path"]) for q in f.requests]


def answered(sequence):
    """What a host that remembers the routes that answered asks: the last
    lookup route of sequence that was tried (if the forge has one) and its
    last token route."""
    lookups = [q for q in sequence if q in (DL, AL)]
    tokens = [q for q in sequence if q not in (DL, AL)]
    return lookups[-1:] + tokens[-1:]


def flavour_stories(flavour):
    kept, gone, absent = STORIES[flavour]

    def stories(env):
        # A registered runner is kept, and is never re-registered; the file
        # gets the current token.
        env.write_runner()
        f = env.forge(flavour, runners={1: {"uuid": UUID, "name": "hive"}})
        r = env.run(f)
        expect(r, 0)
        assert env.runner_kept(), r
        env.assert_output(TOKEN_LINE)
        assert seen(f) == kept, seen(f)
        assert f.connections == 1, "one keep-alive connection, not %d" % f.connections
        assert_auth_header_only(f)
        for q in f.requests:
            if q["method"] == "POST":  # an empty body, said so
                assert q["headers"].get("content-length") == "0", q
        if gone is None:
            assert says(r.stderr, "no runner lookup", "keeping .runner unverified"), r
        f.stop()

        # A runner the forge no longer knows is re-registered (where the
        # forge cannot tell, and the token did not change, it is kept).
        env.write_runner()
        f = env.forge(flavour, runners={})
        r = env.run(f)
        expect(r, 0)
        env.assert_output(TOKEN_LINE)
        if gone is None:
            assert env.runner_kept()
        else:
            assert not env.runner_kept(), r
            # The routes that answered on the boot before are asked first
            # (the state remembers them): one lookup, one token request.
            assert seen(f) == answered(kept), seen(f)
            assert f.connections == 1, f.connections
        f.stop()

        # No .runner: register.
        os.path.lexists(env.runner) and os.unlink(env.runner)
        f = env.forge(flavour)
        r = env.run(f)
        expect(r, 0)
        env.assert_output(TOKEN_LINE)
        assert seen(f) == answered(absent)[-1:], seen(f)
        # A host that remembers nothing asks every route in turn.
        os.unlink(env.state_file)
        f.requests.clear()
        expect(env.run(f), 0)
        assert seen(f) == absent, seen(f)

    stories.__name__ = "forge_%s_keeps_reregisters_registers" % flavour
    return stories


for _flavour in STORIES:
    case(flavour_stories(_flavour))


@case
def reused_id_with_another_uuid_reregisters(env):
    for flavour in ("design", "forgejo15", "forgejo16", "future"):
        env.write_runner(runner_id=1, uuid=UUID)
        f = env.forge(flavour, runners={1: "a-different-runner-after-a-forge-wipe"})
        r = env.run(f)
        expect(r, 0)
        assert not env.runner_kept()
        env.assert_output(TOKEN_LINE)
        assert says(r.stderr, "runner 1", "different runner", "uuid", "re-registering"), r
        f.stop()


@case
def gitea_wipe_with_id_reused_by_another_name_reregisters(env):
    for flavour in ("gitea124", "gitea126"):
        env.write_runner(runner_id=1, uuid=UUID)  # name "hive"
        f = env.forge(flavour)
        f.wipe()
        f.register(f.reg_token, "someone-else", ["other:host"])  # takes id 1
        env.secrets.append(f.reg_token)
        r = env.run(f)
        expect(r, 0)
        assert not env.runner_kept(), r
        assert says(r.stderr, "runner 1", "different runner", "name", "re-registering"), r
        env.assert_output("TOKEN=%s\n" % f.reg_token)
        f.stop()


@case
def gitea_runner_of_the_same_name_is_kept(env):
    env.write_runner(runner_id=1, uuid=UUID)
    f = env.forge("gitea124", runners={1: {"uuid": UUID, "name": "hive",
                                           "labels": ["native:host"]}})
    r = env.run(f, "-v")
    expect(r, 0)
    assert env.runner_kept(), r
    assert "judged by id" not in r.stderr, r


@case
def runner_file_without_uuid_or_name_is_judged_by_id_and_says_so(env):
    env.write_runner('{"id": 1, "token": "RunnerOwnSecretCanary0123456789abcdef"}\n')
    for flavour in ("forgejo15", "gitea126"):
        f = env.forge(flavour, runners={1: "whatever"})
        r = env.run(f, "-v")
        expect(r, 0)
        assert env.runner_kept()
        assert says(r.stderr, "runner 1", "no uuid or name", "judged by id"), r
        f.stop()


@case
def no_token_route_at_all_exits_76_naming_all_three(env):
    f = env.forge("forgejo11")
    f.script("token", {"status": 404, "body": "404 page not found\n",
                       "headers": {"Content-Type": "text/plain; charset=utf-8"}})
    r = env.run(f)
    expect(r, 76)
    assert says(r.stderr, "GET /api/v1/admin/runners/registration-token",
                "GET /api/v1/admin/actions/runners/registration-token",
                "POST /api/v1/admin/actions/runners/registration-token"), r
    assert seen(f) == [DT, AT, PT], seen(f)
    env.assert_output(PLACEHOLDER)


@case
def token_route_405_means_try_the_next(env):
    f = env.forge("forgejo15")
    f.script("token", {"status": 405, "headers": {"Allow": "POST"}})
    r = env.run(f)
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert seen(f) == [DT, AT], seen(f)


@case
def unix_socket_forge(env):
    sock = os.path.join(env.dir, "forge.sock")
    env.write_runner()
    f = env.forge("f15", runners={}, unix_socket=sock)
    r = env.run(f)
    expect(r, 0)
    assert not env.runner_kept()
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [DESIGN_LOOKUP, ACTIONS_LOOKUP, DESIGN_TOKEN]
    assert all(q["headers"]["host"] == "forge.invalid" for q in f.requests), f.requests


@case
def https_forge_needs_its_ca(env):
    f = env.forge("f15", tls=True)
    r = env.run(f, retry_timeout="0")
    expect(r, 69)  # certificate not trusted: a TLS failure, not asked again
    assert "certificate" in r.stderr, r
    assert f.requests == []
    ca = os.path.join(forge.TLS_DIR, "ca.crt")
    r = env.run(f, "--ca-file=" + ca)
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [DESIGN_TOKEN]


@case
def https_host_is_verified(env):
    # Reachable at 127.0.0.2, trusted CA, but the certificate names only
    # 127.0.0.1 and localhost: the connection is made, the request never is.
    f = env.forge("f15", tls=True, host="127.0.0.2")
    ca = os.path.join(forge.TLS_DIR, "ca.crt")
    r = env.run(f, "--ca-file=" + ca, retry_timeout="0")
    expect(r, 69)
    assert f.connections >= 1, "never reached the forge: the test proves nothing"
    assert f.requests == []
    assert "127.0.0.2" in r.stderr, r


@case
def dead_proxy_in_environment_does_not_matter(env):
    env.write_runner()
    f = env.forge("design", runners={1: UUID})
    dead = "http://127.0.0.1:9"
    proxies = {k: dead for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                 "ALL_PROXY", "all_proxy")}
    proxies["no_proxy"] = proxies["NO_PROXY"] = ""
    r = env.run(f, env=proxies)
    expect(r, 0)
    assert "still registered" in r.stderr, r
    assert paths_seen(f) == [DESIGN_LOOKUP, DESIGN_TOKEN]


@case
def retry_after_is_honoured(env):
    f = env.forge("f15")
    f.script("token", {"status": 429, "headers": {"Retry-After": "1"},
                       "body": {"message": "slow down"}})
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert 0.95 < r.elapsed < 1.5, r


@case
def retry_after_as_http_date(env):
    f = env.forge("f15")
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
    f.script("token", {"status": 503, "headers": {"Retry-After": when}})
    r = env.run(f, retry_timeout="5")
    expect(r, 0)
    assert 0.9 < r.elapsed < 2.6, r


@case
def huge_retry_after_is_clamped_to_the_deadline(env):
    f = env.forge("f15")
    f.script("token", {"status": 503, "headers": {"Retry-After": "86400"}})
    r = env.run(f, retry_timeout="1")
    expect(r, 75)
    assert 0.95 < r.elapsed < 1.4, r
    assert len(f.requests) == 1
