"""Every forge the hive will meet, over every transport it offers (issue:
work with every forge).  The same three stories run against each flavour of
the test forge: a registered runner is kept, a deleted one is re-registered,
and an absent .runner registers."""

import os
import time

from harness import (PLACEHOLDER, REG, UUID, case, expect, paths_seen,
                     assert_auth_header_only)
import forge

TOKEN_LINE = "TOKEN=%s\n" % REG
DESIGN_LOOKUP, ACTIONS_LOOKUP = "/api/v1/admin/runners/1", "/api/v1/admin/actions/runners/1"
DESIGN_TOKEN = "/api/v1/admin/runners/registration-token"
ACTIONS_TOKEN = "/api/v1/admin/actions/runners/registration-token"

# flavour -> (requests for a registered runner, for a deleted one, for no .runner)
STORIES = {
    "design": ([DESIGN_LOOKUP, DESIGN_TOKEN], [DESIGN_LOOKUP, DESIGN_TOKEN], [DESIGN_TOKEN]),
    "v7": ([DESIGN_LOOKUP, ACTIONS_LOOKUP, DESIGN_TOKEN], None, [DESIGN_TOKEN]),
    "f15": ([DESIGN_LOOKUP, ACTIONS_LOOKUP, DESIGN_TOKEN],
            [DESIGN_LOOKUP, ACTIONS_LOOKUP, DESIGN_TOKEN], [DESIGN_TOKEN]),
    "future": ([DESIGN_LOOKUP, ACTIONS_LOOKUP, DESIGN_TOKEN, ACTIONS_TOKEN],
               [DESIGN_LOOKUP, ACTIONS_LOOKUP, DESIGN_TOKEN, ACTIONS_TOKEN],
               [DESIGN_TOKEN, ACTIONS_TOKEN]),
}


def flavour_stories(flavour):
    kept, gone, absent = STORIES[flavour]

    def stories(env):
        # A registered runner is kept, and is never re-registered.
        env.write_runner()
        f = env.forge(flavour, runners={1: UUID})
        r = env.run(f)
        expect(r, 0)
        assert env.runner_kept(), r
        env.assert_output(TOKEN_LINE)
        assert paths_seen(f) == kept, paths_seen(f)
        assert f.connections == 1, "one keep-alive connection, not %d" % f.connections
        assert_auth_header_only(f)
        if flavour == "v7":
            assert "forge has no runner lookup API; keeping .runner unverified" in r.stderr, r
        f.stop()

        # A runner the forge no longer knows is re-registered (v7 cannot tell).
        env.write_runner()
        f = env.forge(flavour, runners={})
        r = env.run(f)
        expect(r, 0)
        if gone is None:  # the token did not change: nothing says the runner is gone
            assert env.runner_kept()
            env.assert_output(TOKEN_LINE)
        else:
            assert not env.runner_kept(), r
            env.assert_output(TOKEN_LINE)
            assert paths_seen(f) == gone, paths_seen(f)
            assert f.connections == 1, f.connections
        f.stop()

        # No .runner: register.
        os.path.lexists(env.runner) and os.unlink(env.runner)
        f = env.forge(flavour)
        r = env.run(f)
        expect(r, 0)
        env.assert_output(TOKEN_LINE)
        assert paths_seen(f) == absent, paths_seen(f)

    stories.__name__ = "forge_%s_keeps_reregisters_registers" % flavour
    return stories


for _flavour in STORIES:
    case(flavour_stories(_flavour))


@case
def reused_id_with_another_uuid_reregisters(env):
    for flavour in ("design", "f15", "future"):
        env.write_runner(runner_id=1, uuid=UUID)
        f = env.forge(flavour, runners={1: "a-different-runner-after-a-forge-wipe"})
        r = env.run(f)
        expect(r, 0)
        assert not env.runner_kept()
        env.assert_output(TOKEN_LINE)
        assert ("runner 1 on the forge is a different runner (uuid differs): re-registering"
                in r.stderr), r
        f.stop()


@case
def runner_file_without_uuid_is_judged_by_id(env):
    env.write_runner('{"id": 1, "token": "RunnerOwnSecretCanary0123456789abcdef"}\n')
    f = env.forge("f15", runners={1: "whatever"})
    expect(env.run(f), 0)
    assert env.runner_kept()


@case
def no_token_route_at_all_exits_76_naming_both(env):
    f = env.forge("v7")
    f.script("token", {"status": 404, "body": "404 page not found\n",
                       "headers": {"Content-Type": "text/plain; charset=utf-8"}})
    r = env.run(f)
    expect(r, 76)
    assert DESIGN_TOKEN in r.stderr and ACTIONS_TOKEN in r.stderr, r
    env.assert_output(PLACEHOLDER)


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
    r = env.run(f, retry_timeout="0")  # one attempt, so the last error is the TLS one
    expect(r, 75)  # certificate not trusted: no answer until the deadline
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
    expect(r, 75)
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
