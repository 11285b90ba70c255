#!/usr/bin/env python3
"""Self-test of tests/forge.py, the fake Forgejo/Gitea forge, and of
tests/runner_sim.py, the emulated NixOS runner module (standard library only).

Run: python3 tests/forge_selftest.py [NAME-SUBSTRING ...]
Prints one line per failure and "N passed, N failed"; exits 1 on failure.
"""

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import forge  # noqa: E402
import runner_sim  # noqa: E402

ADMIN = "adm_selftest_0123456789"
USER = "usr_selftest_0123456789"
REG = "R" * 43
CA = os.path.join(HERE, "tls", "ca.crt")
V1 = "/api/v1"
JSON_TYPE = "application/json;charset=utf-8"
PLAIN_404 = b"404 page not found\n"

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def make(**kw):
    kw.setdefault("admin_token", ADMIN)
    kw.setdefault("reg_token", REG)
    return forge.Forge(**kw)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5):
        super().__init__("forge.invalid", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def connect(f, timeout=5, context=None):
    if f.unix_socket:
        return UnixHTTPConnection(f.unix_socket, timeout)
    if f.tls:
        if context is None:
            context = ssl.create_default_context(cafile=CA)
        return http.client.HTTPSConnection("127.0.0.1", f.port,
                                           timeout=timeout, context=context)
    return http.client.HTTPConnection("127.0.0.1", f.port, timeout=timeout)


def request(f, path, token=ADMIN, scheme="token", method="GET",
            headers=None, conn=None, body=None):
    """(status, lower-case headers, body) of one request."""
    own = conn is None
    conn = conn or connect(f)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = "%s %s" % (scheme, token)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        if own:
            conn.close()


def check_json(status, headers, body, want_status, want):
    assert status == want_status, (status, body)
    assert headers["content-type"] == JSON_TYPE, headers
    assert body.endswith(b"\n"), body
    got = json.loads(body)
    for key, value in want.items():
        assert got.get(key) == value, (key, got)
    return got


def check_plain_404(status, headers, body):
    assert status == 404, (status, body)
    assert headers["content-type"].startswith("text/plain"), headers
    assert body == PLAIN_404, body


TA = "/admin/runners/registration-token"          # GET: the oldest route
TX = "/admin/actions/runners/registration-token"
LD = "/admin/runners/"                            # + id: the design's lookup
LA = "/admin/actions/runners/"                    # + id
LIST = "/admin/actions/runners"

FORGEJO_KEYS = {"id", "uuid", "owner_id", "repo_id", "name", "status",
                "version", "labels", "description", "ephemeral"}
GITEA_KEYS = {"id", "name", "status", "busy", "ephemeral", "labels"}

# Every flavour's answer to every (method, route), written out from
# FORGE-API.md's route table, not from forge.py's. Answers: "token" (200
# {"token"}), "object" (200 runner 1), "204", "list", "201", "json404" (the
# family's runner-not-found, for runner id `7` or `0`), "404" (plain text),
# ("405", "ALLOW").
COMMON = [("GET", LD + "1"), ("DELETE", LD + "1"), ("GET", TA), ("POST", TA),
          ("DELETE", TA), ("GET", TX), ("POST", TX), ("DELETE", TX),
          ("PUT", TX), ("GET", LA + "1"), ("PUT", LA + "1"),
          ("POST", LA + "1"), ("GET", LA + "7"), ("DELETE", LA + "7"),
          ("GET", LA + "x1"), ("GET", LIST), ("POST", LIST),
          ("DELETE", LIST), ("DELETE", LA + "2")]


def _answers(**given):
    answers = {m + " " + r: "404" for m, r in COMMON}
    answers.update(given)
    return answers


FORGEJO15 = _answers(**{
    "GET " + TA: "token", "POST " + TA: ("405", "GET"),
    "DELETE " + TA: ("405", "GET"),
    "GET " + TX: "token", "POST " + TX: ("405", "DELETE, GET"),
    "DELETE " + TX: ("json404", 0), "PUT " + TX: ("405", "DELETE, GET"),
    "GET " + LA + "1": "object", "PUT " + LA + "1": ("405", "DELETE, GET"),
    "POST " + LA + "1": ("405", "DELETE, GET"),
    "GET " + LA + "7": ("json404", 7), "DELETE " + LA + "7": ("json404", 7),
    "GET " + LA + "x1": ("json404", 0), "GET " + LIST: "list",
    "POST " + LIST: "201", "DELETE " + LIST: ("405", "GET, POST"),
    "DELETE " + LA + "2": "204"})
GITEA124 = dict(FORGEJO15, **{
    "GET " + TX: ("json404", 0), "POST " + TX: "token",
    "DELETE " + TX: ("json404", 0), "PUT " + TX: ("405", "DELETE, GET, POST"),
    "POST " + LIST: ("405", "GET"), "DELETE " + LIST: ("405", "GET")})
GITEA126 = dict(GITEA124, **{"GET " + TA: "404", "POST " + TA: "404",
                              "DELETE " + TA: "404"})
OLD = _answers(**{"GET " + TA: "token", "POST " + TA: ("405", "GET"),
                  "DELETE " + TA: ("405", "GET")})
MATRIX = {
    "design": _answers(**{
        "GET " + TA: "token", "POST " + TA: ("405", "GET"),
        "DELETE " + TA: ("405", "GET"), "GET " + LD + "1": "object",
        "DELETE " + LD + "1": ("405", "GET")}),
    "forgejo11": OLD, "v7": OLD, "gitea122": OLD,
    "forgejo15": FORGEJO15, "f15": FORGEJO15, "forgejo16": FORGEJO15,
    "gitea124": GITEA124, "gitea126": GITEA126,
    "future": _answers(**{
        "GET " + TX: "token", "POST " + TX: ("405", "GET"),
        "DELETE " + TX: ("405", "GET"), "PUT " + TX: ("405", "GET"),
        "GET " + LA + "1": "object", "PUT " + LA + "1": ("405", "GET"),
        "POST " + LA + "1": ("405", "GET"),
        "DELETE " + LA + "7": ("405", "GET"),
        "GET " + LA + "7": ("json404", 7), "GET " + LA + "x1": ("json404", 0),
        "DELETE " + LA + "2": ("405", "GET")}),
}
GITEA = {"gitea122", "gitea124", "gitea126"}


def check_json_404(f, got, runner_id):
    status, headers, body = got
    url = f.url + "/api/swagger"
    if f.family == "gitea":
        value = check_json(status, headers, body, 404, {
            "message": "Runner not found", "url": url, "errors": None})
        assert set(value) == {"message", "url", "errors"}, value
    else:
        value = check_json(status, headers, body, 404, {
            "message": "runner with ID %d: resource does not exist"
                       % runner_id, "url": url})
        assert set(value) == {"message", "url"}, value


def check_answer(f, method, route, want):
    body = None
    if method in ("POST", "PUT"):
        body = b'{"name":"made-by-post"}' if route == LIST else b""
    got = request(f, V1 + route, method=method, body=body)
    status, headers, data = got
    what = (f.flavour, method, route, want, status, data)
    if want == "token":
        check_json(*got, 200, {"token": REG})
    elif want == "object":
        value = check_json(*got, 200, {"id": 1, "name": "runner-1"})
        keys = GITEA_KEYS | ({"disabled"} if f.flavour == "gitea126" else
                             set()) if f.family == "gitea" else FORGEJO_KEYS
        assert set(value) == keys, (what, value)
    elif want == "204":
        assert (status, data) == (204, b""), what
        assert "content-length" not in headers, headers
        assert 2 not in f.runners, f.runners
        check_json_404(f, request(f, V1 + route), 2)
    elif want == "201":
        value = check_json(*got, 201, {})
        assert set(value) == {"id", "uuid", "token"}, value
        assert f.record(value["id"]).name == "made-by-post", f.runners
    elif want == "list":
        value = check_json(*got, 200, {}) if f.family == "gitea" else \
            json.loads(data)
        if f.family == "gitea":
            assert set(value) == {"runners", "total_count"}, value
            assert value["total_count"] == len(value["runners"]) >= 2, value
            value = value["runners"]
        assert [r["id"] for r in value] == sorted(r["id"] for r in value)
        assert value[0]["name"] == "runner-1", value
    elif want == "404":
        check_plain_404(*got)
    elif want[0] == "json404":
        check_json_404(f, got, want[1])
    else:
        assert status == 405 and data == b"", what
        assert headers.get("allow") == want[1], (what, headers)
    return status


# -- routes -------------------------------------------------------------------

@test
def every_flavour_answers_every_route_and_method():
    assert set(MATRIX) == set(forge.FLAVOURS) | set(forge.ALIASES)
    for flavour, answers in MATRIX.items():
        with make(flavour=flavour, runners={1: "uuid-1", 2: "uuid-2"}) as f:
            assert f.family == ("gitea" if flavour in GITEA else "forgejo")
            for method, route in COMMON:
                seen = len(f.requests)
                status = check_answer(f, method, route,
                                      answers[method + " " + route])
                record = f.requests[seen]
                assert (record["method"], record["path"], record["status"]) \
                    == (method, V1 + route, status), record


@test
def design_and_forgejo_lookup_answers_stay_as_they_were():
    for flavour, lookup in (("design", LD), ("f15", LA), ("future", LA)):
        with make(flavour=flavour, runners={1: "uuid-1", 2: "uuid-2"}) as f:
            got = check_json(*request(f, V1 + lookup + "2"), 200, {
                "id": 2, "uuid": "uuid-2", "owner_id": 0, "repo_id": 0,
                "name": "runner-2", "status": "idle", "version": "v11.1.1",
                "labels": ["native:host"], "description": "",
                "ephemeral": False})
            assert set(got) == FORGEJO_KEYS, got
            check_json_404(f, request(f, V1 + lookup + "abc"), 0)
            check_plain_404(*request(f, V1 + lookup + "1/extra"))


@test
def other_paths_are_plain_404():
    with make(flavour="f15") as f:
        for path in ("/", "/api/v1", "/api/v1/version", "/admin/runners/1",
                     V1 + "/admin/actions/runners/registration-token/",
                     V1 + "/admin/actions/runners/"):
            check_plain_404(*request(f, path))


@test
def runners_dict_is_live():
    runners = {1: "uuid-1"}
    with make(flavour="design", runners=runners) as f:
        check_json(*request(f, V1 + "/admin/runners/1"), 200, {"id": 1})
        del runners[1]
        f.runners[3] = {"uuid": "uuid-3", "status": "offline"}
        check_json(*request(f, V1 + "/admin/runners/1"), 404, {})
        check_json(*request(f, V1 + "/admin/runners/3"), 200,
                   {"id": 3, "uuid": "uuid-3", "status": "offline"})


@test
def non_get_is_405():
    with make(flavour="f15") as f:
        for route in ("/admin/actions/runners/registration-token",
                      "/admin/actions/runners/1"):
            status, _, _ = request(f, V1 + route, method="POST", body=b"{}")
            assert status == 405, status
        check_plain_404(*request(f, V1 + "/nope", method="POST", body=b"x"))
        assert f.requests[0]["method"] == "POST"


@test
def odd_reg_token_is_served_verbatim():
    token = 'evil"\nTOKEN=x \\ ;#'
    with make(reg_token=token) as f:
        check_json(*request(f, V1 + "/admin/runners/registration-token"),
                   200, {"token": token})


# -- runner objects and state ------------------------------------------------

@test
def runner_objects_per_family_and_status_words():
    words = {"offline": ("offline", "offline", False),
             "idle": ("idle", "online", False),
             "online": ("idle", "online", False),
             "active": ("active", "online", True),
             "busy": ("active", "online", True)}
    for flavour in ("forgejo15", "gitea124", "gitea126"):
        with make(flavour=flavour) as f:
            reg = f.register(REG, "hive", ["native:host", "big:host"])
            for status, (forgejo, gitea, busy) in words.items():
                f.set_status(reg["id"], status)
                assert f.status(reg["id"]) == forgejo
                got = check_json(*request(f, V1 + LA + str(reg["id"])), 200,
                                 {"id": reg["id"], "name": "hive"})
                if f.family == "forgejo":
                    assert got["status"] == forgejo, got
                    assert got["uuid"] == reg["uuid"], got
                    assert got["labels"] == ["native:host", "big:host"], got
                    assert set(got) == FORGEJO_KEYS, got
                else:
                    assert (got["status"], got["busy"]) == (gitea, busy), got
                    assert got["labels"] == [
                        {"id": 0, "name": "native:host", "type": "custom"},
                        {"id": 1, "name": "big:host", "type": "custom"}], got
                    assert "uuid" not in got and reg["uuid"] not in str(got)
                    want = GITEA_KEYS | ({"disabled"}
                                         if flavour == "gitea126" else set())
                    assert set(got) == want, got
                    if flavour == "gitea126":
                        assert got["disabled"] is False, got
            try:
                f.set_status(reg["id"], "gone")
            except ValueError:
                pass
            else:
                raise AssertionError("accepted a status that does not exist")


@test
def legacy_entries_on_gitea_and_overrides():
    with make(flavour="gitea124", runners={1: "uuid-1", 2: {
            "status": "offline", "name": "x", "extra": 1}}) as f:
        got = check_json(*request(f, V1 + LA + "1"), 200, {
            "id": 1, "name": "runner-1", "status": "online", "busy": False})
        assert "uuid" not in got, got
        check_json(*request(f, V1 + LA + "2"), 200, {
            "status": "offline", "name": "x", "extra": 1})
        assert f.ghosts() == [2] and f.status(1) == "idle"
        f.set_status(2, "idle")             # overrides the dict's "status"
        check_json(*request(f, V1 + LA + "2"), 200, {"status": "online"})
        assert f.ghosts() == []


@test
def delete_route_and_script_and_keep_alive():
    with make(flavour="forgejo15", runners={1: "u1", 2: "u2", 3: "u3"}) as f:
        conn = connect(f)
        status, headers, body = request(f, V1 + LA + "2", method="DELETE",
                                        conn=conn)
        assert (status, body) == (204, b"") and 2 not in f.runners
        check_json(*request(f, V1 + LA + "1", conn=conn), 200, {"id": 1})
        f.script("delete", {"status": 500, "body": {"message": "db"}})
        check_json(*request(f, V1 + LA + "3", method="DELETE", conn=conn),
                   500, {"message": "db"})
        assert 3 in f.runners                # the scripted answer won
        f.script("delete", {"status": 403, "body": {"message": "no"}})
        check_json(*request(f, V1 + LA + "3", conn=conn), 200, {"id": 3})
        check_json(*request(f, V1 + LA + "3", method="DELETE", conn=conn),
                   403, {})
        conn.close()
        assert f.connections == 1, f.connections


@test
def post_token_route_and_its_script():
    with make(flavour="gitea126") as f:
        check_json(*request(f, V1 + TX, method="POST", body=b"",
                            headers={"Content-Length": "0"}), 200,
                   {"token": REG})
        f.script("token", {"status": 503, "body": "busy"})
        status, _, _ = request(f, V1 + TX, method="POST", body=b"")
        assert status == 503, status
        check_json(*request(f, V1 + TX, method="POST", body=b""), 200,
                   {"token": REG})
        f.script("lookup", {"status": 500})  # GET TX falls into the lookup
        status, _, _ = request(f, V1 + TX)
        assert status == 500, status


@test
def register_reset_wipe():
    for flavour in ("forgejo15", "gitea124"):
        with make(flavour=flavour, runners={5: "legacy"}) as f:
            for bad in ("", "placeholder", REG + "x", "R" * 42):
                try:
                    f.register(bad, "hive")
                except forge.RegisterError:
                    pass
                else:
                    raise AssertionError("registered with %r" % bad)
            assert list(f.runners) == [5]
            a = f.register(REG, "hive", ["native:host"])
            b = f.register(REG, "hive", ["native:host"])
            keys = ["WARNING", "id", "uuid", "name", "token", "address",
                    "labels"] + (["ephemeral"] if flavour == "gitea124"
                                 else [])
            assert list(a) == keys, a
            assert (a["id"], b["id"]) == (6, 7), (a, b)
            assert a["uuid"] != b["uuid"] and a["token"] != b["token"]
            assert a["name"] == b["name"] == "hive" and a["address"] == f.url
            assert a["labels"] == ["native:host"]
            assert f.status(6) == "offline"  # until its daemon starts
            # The token is stable: every route gives it, registering keeps it.
            for _ in range(2):
                check_json(*request(f, V1 + TA), 200, {"token": REG})
            request(f, V1 + LA + "7", method="DELETE")
            c = f.register(REG, "hive")
            assert c["id"] == 8, c             # ids are not reused
            new = f.reset_token()
            assert new == f.reg_token != REG and len(new) == 43, new
            assert all(ch.isalnum() or ch in "-_" for ch in new), new
            check_json(*request(f, V1 + TA), 200, {"token": new})
            try:
                f.register(REG, "hive")
            except forge.RegisterError:
                pass
            else:
                raise AssertionError("the old token still registers")
            assert f.register(new, "hive")["id"] == 9
            assert set(f.runners) == {5, 6, 8, 9}   # a reset keeps runners
            runners = f.runners
            wiped = f.wipe()
            assert wiped == f.reg_token != new and f.runners is runners
            assert f.runners == {}
            d = f.register(wiped, "other")
            assert d["id"] == 1 and d["uuid"] not in (a["uuid"], b["uuid"])


@test
def runner_works_is_the_daemons_check():
    with make(flavour="forgejo15") as f:
        a = f.register(REG, "hive")
        assert f.runner_works(a) == (True, "ok")
        assert f.runner_works(dict(a, token="x" * 40))[1].startswith(
            "unregistered runner")
        assert f.runner_works(dict(a, uuid="other"))[1].startswith(
            "unregistered runner")
        assert not f.runner_works(dict(a, id=2))[0]
        assert not f.runner_works({"uuid": a["uuid"]})[0]
        assert not f.runner_works(None)[0]
        f.runners[2] = a["uuid"]            # by hand: no runner secret
        assert not f.runner_works(dict(a, id=2))[0]
        f.down()
        assert f.runner_works(a) == (False, "forge down")
        f.up()
        assert f.runner_works(a) == (True, "ok")
        request(f, V1 + LA + str(a["id"]), method="DELETE")
        works, why = f.runner_works(a)
        assert not works and why.startswith("unregistered runner"), why
        # After a wipe, id 1 belongs to a new runner: the old .runner fails.
        f.wipe()
        b = f.register(f.reg_token, "hive")
        assert b["id"] == a["id"] == 1
        assert not f.runner_works(a)[0] and f.runner_works(b)[0]


@test
def ghosts_and_status():
    with make(flavour="forgejo16") as f:
        ids = [f.register(REG, "hive")["id"] for _ in range(3)]
        other = f.register(REG, "elsewhere")["id"]
        assert f.ghosts() == ids + [other]
        f.set_status(ids[2], "idle")
        assert f.ghosts(current_id=ids[2]) == ids[:2] + [other]
        assert f.ghosts(current_id=ids[0], name="hive") == [ids[1]]
        assert f.status(99) is None and f.record(99) is None
        try:
            f.set_status(99, "idle")
        except KeyError:
            pass
        else:
            raise AssertionError("set the status of no runner")


# -- down and up --------------------------------------------------------------

@test
def down_refuses_and_up_serves_the_same_port_with_state():
    with make(flavour="forgejo15") as f:
        a = f.register(REG, "hive")
        port, url = f.port, f.url
        idle = connect(f)
        request(f, V1 + TA, conn=idle)       # an idle keep-alive connection
        t0 = time.monotonic()
        f.down()
        assert time.monotonic() - t0 < 1 and not f.is_up
        try:
            request(f, V1 + TA, conn=idle)
        except (OSError, http.client.HTTPException):
            pass
        else:
            raise AssertionError("a kept-alive connection survived down()")
        idle.close()
        for _ in range(3):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1)
            except ConnectionRefusedError:
                pass
            else:
                raise AssertionError("connected to a forge that is down")
        squatter = socket.socket()
        try:
            squatter.bind(("127.0.0.1", port))
        except OSError:
            pass
        else:
            raise AssertionError("the port was free while the forge was down")
        finally:
            squatter.close()
        try:
            f.register(REG, "hive")
        except forge.RegisterError:
            pass
        else:
            raise AssertionError("registered on a forge that is down")
        n = len(f.requests)
        f.down()                               # idempotent
        f.up()
        f.up()                                 # idempotent
        assert f.is_up and (f.port, f.url) == (port, url)
        assert len(f.requests) == n
        check_json(*request(f, V1 + TA), 200, {"token": REG})
        check_json(*request(f, V1 + LA + str(a["id"])), 200,
                   {"uuid": a["uuid"]})
        assert f.runner_works(a)[0]
        f.down()
        f.up()
        check_json(*request(f, V1 + TA), 200, {"token": REG})
    t0 = time.monotonic()
    f = make().start()
    f.down()
    f.stop()                                   # stop while down
    assert time.monotonic() - t0 < 1
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", f.port))          # released
    assert not [t for t in threading.enumerate()
                if t.name.startswith("forge")], threading.enumerate()


@test
def down_and_up_on_tls_and_unix_socket():
    with make(tls=True) as f:
        f.down()
        f.up()
        check_json(*request(f, V1 + TA), 200, {"token": REG})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "forge.sock")
        with make(unix_socket=path) as f:
            f.down()
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
            except ConnectionRefusedError:
                pass
            else:
                raise AssertionError("connected to a forge that is down")
            finally:
                s.close()
            f.up()
            check_json(*request(f, V1 + TA), 200, {"token": REG})
        assert not os.path.exists(path)


@test
def no_delayed_ack_stall_on_keep_alive():
    # Go sets TCP_NODELAY; without it each answer waits ~40 ms for an ACK.
    with make() as f:
        conn = connect(f)
        t0 = time.monotonic()
        for _ in range(10):
            request(f, V1 + TA, conn=conn)
        took = time.monotonic() - t0
        conn.close()
        assert f.connections == 1 and took < 0.2, took


# -- runner_sim: the NixOS runner module and the daemon ----------------------

class Host:
    """A container root, a token file and a forge, for runner_sim tests."""

    def __init__(self, d, flavour="forgejo15", generation="labels"):
        self.root = os.path.join(d, "root")
        os.makedirs(self.root)
        self.token_file = os.path.join(d, "runner-token")
        self.forge = make(flavour=flavour).start()
        self.sim = runner_sim.RunnerModule(
            generation=generation, container_root=self.root,
            token_file=self.token_file, forge=self.forge, name="hive",
            labels=["native:host"], instance="hive")

    def write(self, text):
        with open(self.token_file, "wb") as fh:
            fh.write(text.encode() if isinstance(text, str) else text)

    def runner(self):
        path = self.sim.runner_file
        return json.load(open(path)) if os.path.exists(path) else None


def hosts(**kw):
    """One Host per generation, each in its own directory."""
    for generation in runner_sim.GENERATIONS:
        with tempfile.TemporaryDirectory() as d:
            host = Host(d, generation=generation, **kw)
            try:
                yield generation, host
            finally:
                host.forge.stop()


@test
def sim_first_boot_registers_layout_and_files():
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        r = h.sim.boot()
        assert (r.works, r.registered, r.register_ok, r.why) == (
            True, True, True, "ok"), (generation, r, r.log)
        assert r.reasons[0] == "no .runner", r.reasons
        link = os.path.join(h.root, "var/lib/gitea-runner")
        assert os.readlink(link) == "private/gitea-runner"
        assert stat.S_IMODE(os.stat(os.path.join(
            h.root, "var/lib/private")).st_mode) == 0o700
        assert h.sim.runner_file == os.path.join(
            h.root, "var/lib/private/gitea-runner/hive/.runner")
        # The tool's default --runner-file, resolved in the root, is it.
        inside = os.path.join(h.root, "var/lib/gitea-runner/hive/.runner")
        assert os.path.realpath(inside) == os.path.realpath(
            h.sim.runner_file)
        assert h.sim.runner_inside == "/var/lib/gitea-runner/hive/.runner"
        text = open(h.sim.runner_file).read()
        reg = json.loads(text)
        assert text == json.dumps(reg, indent=2) + "\n", text
        assert list(reg) == ["WARNING", "id", "uuid", "name", "token",
                             "address", "labels"], reg
        assert (reg["id"], reg["name"], reg["labels"]) == (
            1, "hive", ["native:host"]), reg
        assert r.runner == reg and h.forge.status(1) == "idle"
        assert open(h.sim.labels_file, "rb").read() == b"native:host\n"
        if generation == "tokenhash":
            # The hash of the extracted value's file, "<token>\n"; printf
            # writes it without a newline.
            assert open(h.sim.token_hash_file, "rb").read() == \
                hashlib.sha256((REG + "\n").encode()).hexdigest().encode()
            assert any("deprecated" in line for line in r.log), r.log
        else:
            assert not os.path.exists(h.sim.token_hash_file)
        assert not any(REG in line or reg["token"] in line
                       for line in r.log), r.log


@test
def sim_same_bytes_do_not_reregister():
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        first = h.sim.boot().runner
        for _ in range(2):
            r = h.sim.boot()
            assert (r.works, r.registered, r.reasons) == (True, False, []), \
                (generation, r, r.reasons)
            assert r.runner == first
        assert list(h.forge.runners) == [1] and h.forge.ghosts() == []


@test
def sim_env_and_raw_forms_of_one_token_hash_alike():
    # sed | tail -n1 turns "TOKEN=<t>\n" into "<t>\n", the raw form's bytes.
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        if generation == "tokenhash":
            h.write(REG + "\n")
            r = h.sim.boot()
            assert (r.works, r.registered) == (True, False), (r, r.reasons)
            assert not any("deprecated" in line for line in r.log), r.log
        h.write(REG)                         # no newline: other bytes
        r = h.sim.boot()
        assert r.registered == (generation == "tokenhash"), (r, r.reasons)
        assert r.works, r


@test
def sim_changed_token_reregisters_only_under_tokenhash():
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        new = h.forge.reset_token()
        h.write("TOKEN=%s\n" % new)
        r = h.sim.boot()
        if generation == "labels":
            assert (r.works, r.registered) == (True, False), r
            assert h.runner()["id"] == 1
        else:
            assert (r.works, r.registered, r.reasons) == (
                True, True, ["token hash changed"]), (r, r.reasons)
            assert h.runner()["id"] == 2 and h.forge.ghosts() == [1]
            assert open(h.sim.token_hash_file, "rb").read() == \
                hashlib.sha256((new + "\n").encode()).hexdigest().encode()


@test
def sim_placeholder_after_a_label_change_leaves_the_runner_down():
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        h.write("TOKEN=placeholder\n")
        h.sim.labels = ["native:host", "big:host"]
        r = h.sim.boot()
        assert (r.works, r.registered, r.register_ok) == (True and False,
                                                          True, False), r
        assert "labels changed" in r.reasons, r.reasons
        assert r.why == "registration file not found", r.why
        assert not os.path.lexists(h.sim.runner_file) and r.runner is None
        # Bookkeeping is written although register failed.
        assert open(h.sim.labels_file, "rb").read() == \
            b"big:host\nnative:host\n"
        if generation == "tokenhash":
            assert open(h.sim.token_hash_file, "rb").read() == \
                hashlib.sha256(b"placeholder\n").hexdigest().encode()
        # Still down on the next boot with the same bytes: .runner missing.
        r = h.sim.boot()
        assert (r.works, r.registered, r.register_ok) == (False, True, False)
        # The real token brings it back, under a new id.
        h.write("TOKEN=%s\n" % REG)
        r = h.sim.boot()
        assert r.works and h.runner()["id"] == 2, r
        assert h.runner()["labels"] == ["native:host", "big:host"]
        assert h.forge.ghosts(current_id=2) == [1]


@test
def sim_placeholder_design_breaks_the_tokenhash_generation():
    # FORGE-API.md: TOKEN=<real> then TOKEN=placeholder flips the hash.
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        h.write("TOKEN=placeholder\n")
        r = h.sim.boot()
        if generation == "labels":
            assert (r.works, r.registered) == (True, False), r
        else:
            assert (r.works, r.registered, r.register_ok) == (
                False, True, False), r
            assert r.why == "registration file not found"


@test
def sim_token_file_forms():
    # A raw token: under EnvironmentFile= it sets no TOKEN, so register gets
    # an empty token; under LoadCredential= it is the token.
    for generation, h in hosts():
        h.write(REG + "\n")
        r = h.sim.boot()
        assert r.registered and r.works == (generation == "tokenhash"), \
            (generation, r, r.log)
        if generation == "labels":
            assert r.log[-2:] == ["register: token is empty",
                                  "daemon: registration file not found"], \
                r.log
    for generation, h in hosts():
        h.write("# made by hand\n  TOKEN=stale\n TOKEN = %s  \n" % REG)
        r = h.sim.boot()
        # EnvironmentFile: the last TOKEN wins, whitespace stripped. The
        # tokenhash sed needs "TOKEN=" right after the leading space: it
        # takes "stale".
        assert r.works == (generation == "labels"), (generation, r, r.log)


@test
def sim_missing_token_file_stops_the_unit():
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        before = open(h.sim.runner_file).read()
        os.unlink(h.token_file)
        h.sim.labels = ["changed:host"]
        r = h.sim.boot()
        assert (r.unit_started, r.works, r.registered) == (False, False,
                                                          False), r
        assert ("EnvironmentFile=" if generation == "labels"
                else "LoadCredential=") in r.why, r.why
        assert open(h.sim.runner_file).read() == before
        assert h.forge.status(1) == "offline"   # its daemon is not running
    for generation, h in hosts():
        h.write(b"TOKEN=\xff\n")                 # systemd refuses the file
        r = h.sim.boot()
        assert r.unit_started == (generation == "tokenhash"), r


@test
def sim_forge_down_keeps_or_loses_runner():
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        h.forge.down()
        r = h.sim.boot()                     # nothing to re-register
        assert (r.works, r.registered, r.why) == (False, False,
                                                  "forge down"), r
        assert h.runner()["id"] == 1
        h.sim.labels = ["native:host", "more:host"]
        r = h.sim.boot()                     # must re-register: it cannot
        assert (r.works, r.registered, r.register_ok) == (False, True,
                                                          False), r
        assert h.runner() is None
        h.forge.up()
        r = h.sim.boot()                     # .runner missing: registers
        assert r.works and r.reasons == ["no .runner"], (r, r.reasons)
        assert h.runner()["id"] == 2


@test
def sim_wiped_forge_reuses_the_id():
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        new = h.forge.wipe()
        other = h.forge.register(new, "someone-else")
        assert other["id"] == 1
        r = h.sim.boot()
        assert (r.works, r.registered) == (False, False), r
        assert r.why.startswith("unregistered runner"), r.why
        h.write("TOKEN=%s\n" % new)
        r = h.sim.boot()
        assert r.works == (generation == "tokenhash"), r   # hash changed
        os.unlink(h.sim.runner_file)         # what the tool would do
        r = h.sim.boot()
        assert r.works and h.runner()["id"] in (2, 3), r


@test
def sim_daemon_puts_others_of_its_name_offline():
    for generation, h in hosts(flavour="gitea124"):
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        stranger = h.forge.register(REG, "stranger")["id"]
        h.forge.set_status(stranger, "idle")
        h.sim.labels = ["native:host", "x:host"]
        r = h.sim.boot()
        assert r.works and h.runner()["id"] == 3, r
        assert "ephemeral" in h.runner(), h.runner()
        assert h.forge.status(1) == "offline" and h.forge.status(3) == "idle"
        assert h.forge.status(stranger) == "idle"
        assert h.forge.ghosts(current_id=3, name="hive") == [1]
        h.sim.stop()
        assert h.forge.status(3) == "offline"


@test
def sim_corrupt_runner_file():
    for generation, h in hosts():
        h.write("TOKEN=%s\n" % REG)
        h.sim.boot()
        with open(h.sim.runner_file, "w") as fh:
            fh.write('{"id": 1, "uuid": ')     # truncated by a crash
        r = h.sim.boot()
        assert (r.works, r.registered, r.why) == (
            False, False, "failed to load registration file"), r


@test
def environment_file_parsing():
    parse = runner_sim.parse_environment_file
    cases = [
        (b"TOKEN=abc\n", {"TOKEN": "abc"}),
        (b"TOKEN=abc", {"TOKEN": "abc"}),
        (b"abc\n", {}),
        (b"abc", {}),
        (b"placeholder\n", {}),
        (b"# TOKEN=x\n;TOKEN=y\n", {}),
        (b"  TOKEN  =  a b  \n", {"TOKEN": "a b"}),
        (b"TOKEN=a\nTOKEN=b\n", {"TOKEN": "b"}),
        (b"TOKEN='a b' \n", {"TOKEN": "a b"}),
        (b'TOKEN="a\\"b\\x"\n', {"TOKEN": 'a"b\\x'}),
        (b"TOKEN=a\\\nb\n", {"TOKEN": "ab"}),
        (b"TOKEN=a\\ \n", {"TOKEN": "a "}),
        (b"TOKEN=\n", {"TOKEN": ""}),
        (b"TOKEN-X=1\n1A=2\nB=3\n", {"B": "3"}),
        (b"# comment \\\nTOKEN=x\n", {"TOKEN": "x"}),
        (b"TOKEN=a\r\nX=b\r\n", {"TOKEN": "a", "X": "b"}),
    ]
    for data, want in cases:
        got = parse(data)
        assert got == want, (data, got, want)
    try:
        parse(b"TOKEN=\xff\n")
    except ValueError:
        pass
    else:
        raise AssertionError("accepted invalid UTF-8")


@test
def token_credential_extraction():
    extract = runner_sim.extract_token_file
    cases = [
        (b"TOKEN=abc\n", b"abc\n", True),
        (b"TOKEN=abc", b"abc", True),
        (b"abc\n", b"abc\n", False),
        (b"\t TOKEN=a\nTOKEN=b\n", b"b\n", True),
        (b"TOKEN=q\nTOKEN=", b"q\n", True),   # tail -n1 skips the empty end
        (b"x TOKEN=a\n", b"x TOKEN=a\n", False),
        (b"", b"", False),
    ]
    for data, want, deprecated in cases:
        assert extract(data) == (want, deprecated), (data, extract(data))


@test
def in_root_resolves_symlinks_inside_the_root():
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "var/lib/private/x"))
        os.symlink("/var/lib/private", os.path.join(d, "var/lib/abs"))
        os.symlink("../../../../..", os.path.join(d, "var/lib/private/x/up"))
        got = runner_sim.in_root(d, "/var/lib/abs/x/up/etc")
        assert got == os.path.join(d, "etc"), got
        loop = os.path.join(d, "loop")
        os.symlink("loop", loop)
        try:
            runner_sim.in_root(d, "/loop/x")
        except OSError:
            pass
        else:
            raise AssertionError("followed a loop forever")
        assert runner_sim.in_root(d, "/loop", follow_last=False) == loop


# -- the runners' own protocol ------------------------------------------------

RS = "/api/actions/runner.v1.RunnerService/"
PROTO_TYPE = "application/json"
CONNECT_FORGES = {"forgejo11", "forgejo15", "forgejo16", "future", "v7",
                  "f15"}                      # FORGE-API.md: Forgejo 11+
EPHEMERAL_FORGES = {"forgejo15", "forgejo16", "gitea124", "gitea126",
                    "future", "f15"}


def proto(f, method, message=None, runner=None, body=None,
          content_type="application/json", headers=None, verb="POST",
          token=None):
    """(status, lower-case headers, body) of one runner-protocol call;
    `runner` is a dict with uuid and token for the x-runner-* headers."""
    hdrs = {}
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    if runner is not None:
        hdrs["x-runner-uuid"] = runner["uuid"]
        hdrs["x-runner-token"] = runner["token"]
    hdrs.update(headers or {})
    if body is None and message is not None:
        body = json.dumps(message).encode()
    return request(f, RS + method, token=token, method=verb, headers=hdrs,
                   body=body)


def check_proto(got, want_status, want=None):
    """The answer is connect-go's JSON: application/json, compact, and (for
    an error) exactly {"code","message"}."""
    status, headers, body = got
    assert status == want_status, (status, body)
    assert headers["content-type"] == PROTO_TYPE, headers
    value = json.loads(body)
    assert body == json.dumps(value, separators=(",", ":")).encode() + \
        b"\n", body
    for key, item in (want or {}).items():
        assert value.get(key) == item, (key, value)
    if status != 200:
        assert set(value) == {"code", "message"}, value
    return value


def check_refused(f, got, code, message):
    """A refusal per family: Forgejo 11+ its code; Gitea and Forgejo 7-10
    500 "unknown" (a gRPC status in the text for unauthenticated)."""
    if f.flavour in CONNECT_FORGES:
        status = {"invalid_argument": 400, "unauthenticated": 401}[code]
        return check_proto(got, status, {"code": code, "message": message})
    if code == "unauthenticated":
        message = "rpc error: code = Unauthenticated desc = " + message
    return check_proto(got, 500, {"code": "unknown", "message": message})


@test
def proto_register_on_every_flavour():
    for flavour in sorted(set(forge.FLAVOURS) | set(forge.ALIASES)):
        with make(flavour=flavour, runners={3: "legacy"}) as f:
            msg = {"name": "hive", "token": REG, "version": "hcp/1",
                   "labels": ["hive-ci", "big"], "ephemeral": True}
            got = check_proto(proto(f, "Register", msg), 200)
            assert list(got) == ["runner"], got
            runner = got["runner"]
            assert runner["id"] == "4", runner         # a JSON string
            ephemeral = flavour in EPHEMERAL_FORGES
            keys = ["id", "uuid", "token", "name", "version", "labels"] + \
                (["ephemeral"] if ephemeral else [])
            assert list(runner) == keys, (flavour, runner)
            assert runner.get("ephemeral", False) is ephemeral
            assert (runner["name"], runner["version"], runner["labels"]) \
                == ("hive", "hcp/1", ["hive-ci", "big"]), runner
            assert len(runner["token"]) == 40 and \
                int(runner["token"], 16) >= 0, runner
            record = f.record(4)
            assert (record.uuid, record.token, record.name, record.labels,
                    record.version, record.status, record.ephemeral) == (
                runner["uuid"], runner["token"], "hive", ["hive-ci", "big"],
                "hcp/1", "offline", ephemeral), record
            # Reusable: the same token registers again, the routes still
            # hand it out, and a name that exists gets a new record.
            again = check_proto(proto(f, "Register", {"name": "hive",
                                                      "token": REG}), 200)
            assert again["runner"]["id"] == "5", again
            assert again["runner"]["uuid"] != runner["uuid"]
            # Empty fields are left out: no version, labels, ephemeral.
            assert list(again["runner"]) == ["id", "uuid", "token", "name"]
            assert f.reg_token == REG and f.record(5).labels == []
            # What register() makes, from the same numbering.
            assert f.register(REG, "hive")["id"] == 6
            # Recorded with its body; no admin auth was asked for.
            first = f.requests[0]
            assert (first["method"], first["path"], first["status"]) == (
                "POST", RS + "Register", 200), first
            assert json.loads(first["body"]) == msg, first
            assert "authorization" not in first["headers"], first


@test
def proto_register_refusals_per_flavour():
    for flavour in sorted(forge.FLAVOURS):
        with make(flavour=flavour) as f:
            new = f.reset_token()
            for msg, message in (
                    ({"name": "hive", "token": "bad"},
                     "runner registration token not found"),
                    ({"name": "hive", "token": "placeholder"},
                     "runner registration token not found"),
                    ({"name": "hive", "token": REG},
                     "runner registration token has been invalidated, "
                     "please use the latest one"),
                    ({"name": "hive"}, "missing runner token, name"),
                    ({"name": "", "token": new},
                     "missing runner token, name")):
                check_refused(f, proto(f, "Register", msg),
                              "invalid_argument", message)
            assert f.runners == {}, f.runners
            # The admin token is no registration token.
            check_refused(f, proto(f, "Register", {"name": "h",
                                                   "token": ADMIN}),
                          "invalid_argument",
                          "runner registration token not found")
            check_proto(proto(f, "Register", {"name": "h", "token": new}),
                        200, {})
            # A wiped forge has never seen the old tokens.
            f.wipe()
            check_refused(f, proto(f, "Register", {"name": "h",
                                                   "token": new}),
                          "invalid_argument",
                          "runner registration token not found")


@test
def proto_declare_sets_labels_and_version():
    for flavour in sorted(forge.FLAVOURS):
        with make(flavour=flavour, runners={1: "by-hand"}) as f:
            reg = f.register(REG, "hive", ["native:host"], version="v0")
            got = check_proto(proto(f, "Declare", {
                "version": "v12", "labels": ["native", "big"]}, runner=reg),
                200)
            runner = got["runner"]
            assert list(got) == ["runner"], got
            assert runner == {"id": "2", "uuid": reg["uuid"],
                              "token": reg["token"], "name": "hive",
                              "version": "v12", "labels": ["native", "big"]}, \
                runner
            record = f.record(2)
            assert (record.labels, record.version, record.status) == (
                ["native", "big"], "v12", "idle"), record
            if f.family == "gitea" and flavour != "gitea122":
                obj = check_json(*request(f, V1 + LA + "2"), 200, {})
                assert [x["name"] for x in obj["labels"]] == ["native",
                                                              "big"], obj
                assert obj["status"] == "online", obj
            # An empty Declare clears them, as the forge's update does.
            check_proto(proto(f, "Declare", {}, runner=reg), 200)
            assert (f.record(2).labels, f.record(2).version) == ([], "")
            for who in (dict(reg, token="0" * 40), dict(reg, uuid="nope"),
                        {"uuid": "by-hand", "token": ""},
                        {"uuid": "", "token": reg["token"]}, None):
                check_refused(f, proto(f, "Declare", {"labels": ["x"]},
                                       runner=who),
                              "unauthenticated", "unregistered runner")
            assert f.record(2).labels == [], f.record(2)
            # The state-level declare() the emulated daemon uses.
            f.set_status(2, "offline")
            assert f.declare(reg["uuid"], reg["token"], ["a"], "v1") is \
                f.record(2) and f.status(2) == "idle"
            for uuid, token in ((reg["uuid"], "x"), ("nope", reg["token"]),
                                ("by-hand", None)):
                try:
                    f.declare(uuid, token)
                except forge.DeclareError as e:
                    assert str(e) == "unregistered runner", e
                else:
                    raise AssertionError("declared %r" % uuid)
            f.down()
            try:
                f.declare(reg["uuid"], reg["token"])
            except forge.DeclareError as e:
                assert str(e) == "forge down", e
            else:
                raise AssertionError("declared with the forge down")
            f.up()
            assert f.record(2).labels == ["a"]


@test
def proto_fetch_task_and_the_other_methods():
    for flavour in ("forgejo15", "gitea124"):
        with make(flavour=flavour) as f:
            reg = f.register(REG, "hive")
            for method in ("FetchTask", "UpdateTask", "UpdateLog"):
                check_proto(proto(f, method, {}, runner=reg), 200)
                check_refused(f, proto(f, method, {}), "unauthenticated",
                              "unregistered runner")
            assert f.status(reg["id"]) == "idle"   # they count as online
            check_proto(proto(f, "FetchTask", {"tasksVersion": "3"},
                              runner=reg), 200)
            got = request(f, "/api/actions/ping.v1.PingService/Ping",
                          token=None, method="POST", body=b'{"data":"x"}',
                          headers={"Content-Type": "application/json"})
            check_proto(got, 200, {"data": "Hello, x!"})
            fetched = [r for r in f.requests
                       if r["path"] == RS + "FetchTask"]
            assert len(fetched) == 3, f.requests
            refused = 401 if flavour in CONNECT_FORGES else 500
            assert [r["status"] for r in fetched] == [200, refused, 200], \
                fetched


@test
def proto_transport_checks_in_connect_gos_order():
    with make(flavour="forgejo15") as f:
        good = {"name": "hive", "token": REG}
        for verb in ("GET", "PUT", "DELETE"):
            status, headers, body = proto(f, "Register", good, verb=verb)
            assert (status, body, headers.get("allow")) == (405, b"",
                                                            "POST"), status
        status, _, _ = proto(f, "Nope", good, verb="GET")
        assert status == 405, status
        for path in (RS + "Nope", RS, "/api/actions/x.v1.X/Register",
                     "/api/actions/", "/api/actions/runner.v1.RunnerService"):
            check_plain_404(*request(f, path, token=None, method="POST",
                                     body=b"{}", headers={
                                         "Content-Type": PROTO_TYPE}))
        for ctype in (None, "text/plain", "application/proto",
                      "application/json; charset=latin1",
                      "application/json; x=y", "application/jsonx"):
            status, headers, body = proto(f, "Register", good,
                                          content_type=ctype)
            assert (status, body) == (415, b""), (ctype, status, body)
            assert "application/json" in headers["accept-post"], headers
        for ctype in ("application/json; charset=utf-8",
                      "Application/JSON", "application/json;charset=UTF-8"):
            check_proto(proto(f, "Register", good, content_type=ctype), 200)
        check_proto(proto(f, "Register", good, headers={
            "Connect-Protocol-Version": "1"}), 200)
        for version in ("2", "", "1.0"):
            got = check_proto(proto(f, "Register", good, headers={
                "Connect-Protocol-Version": version}), 400,
                {"code": "invalid_argument"})
            assert "Connect-Protocol-Version" in got["message"], got
        for body in (b"", b"[]", b"null", b"{", b'{"name":1}',
                     b'{"labels":"a"}', b'{"labels":[1]}',
                     b'{"ephemeral":"yes"}', b'{"name":"a","name":"b"}',
                     b'{"name":"a","token":"b","agent_labels":[],'
                     b'"agentLabels":[]}', b"\xff"):
            got = check_proto(proto(f, "Register", body=body), 400,
                              {"code": "invalid_argument"})
            assert got["message"].startswith(
                "unmarshal into *runnerv1.RegisterRequest: "), got
        # Unknown fields and nulls are ignored; proto names work too.
        check_proto(proto(f, "Register", dict(good, extra=1, labels=None,
                                              agent_labels=["x"])), 200)
        # The admin auth does not run there: a bad admin token changes
        # nothing, and none is needed.
        check_proto(proto(f, "Register", good, token="not-the-admin"), 200)
        assert len(f.runners) == 6, f.runners
    with make(flavour="gitea124", actions=False) as f:
        check_plain_404(*proto(f, "Register", {"name": "h", "token": REG}))
        check_plain_404(*proto(f, "Register", {}, verb="GET"))
        assert f.runners == {}


@test
def proto_scripted_kinds():
    with make(flavour="forgejo15") as f:
        reg = f.register(REG, "hive")
        f.script("proto-register", {"status": 503, "body": {"code": "x",
                                                           "message": "y"}})
        f.script("declare", {"status": 200, "body": b"not json"})
        f.script("fetch-task", {"mode": "close"})
        f.script("proto", {"status": 418})
        # Refused before the script: not POST, not JSON.
        assert proto(f, "Register", {}, verb="GET")[0] == 405
        assert proto(f, "Register", {}, content_type="text/plain")[0] == 415
        status, headers, body = proto(f, "Register", {"name": "h",
                                                      "token": REG})
        assert (status, headers["content-type"], json.loads(body)) == (
            503, PROTO_TYPE, {"code": "x", "message": "y"}), (status, body)
        assert len(f.runners) == 1         # the script answered, no record
        status, _, body = proto(f, "Declare", {}, runner=reg)
        assert (status, body) == (200, b"not json"), (status, body)
        try:
            proto(f, "FetchTask", {}, runner=reg)
        except (http.client.HTTPException, OSError):
            pass
        else:
            raise AssertionError("the scripted close answered")
        assert proto(f, "UpdateLog", {}, runner=reg)[0] == 418
        # Used up: the normal answers again.
        check_proto(proto(f, "Register", {"name": "h", "token": REG}), 200)
        check_proto(proto(f, "Declare", {}, runner=reg), 200)
        # "register" is still Forgejo 15's admin POST, not the protocol's.
        f.script("register", {"status": 500})
        check_proto(proto(f, "Register", {"name": "h", "token": REG}), 200)
        assert request(f, V1 + LIST, method="POST",
                       body=b'{"name":"x"}')[0] == 500


@test
def requests_record_their_body():
    with make(flavour="forgejo15") as f:
        request(f, V1 + LIST, method="POST", body=b'{"name":"x"}')
        request(f, V1 + TA)
        s = socket.create_connection(("127.0.0.1", f.port), timeout=3)
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                  b"chunked\r\n\r\n0\r\n\r\n" % (RS + "Register").encode())
        s.recv(65536)
        s.close()
        bodies = [r["body"] for r in f.requests]
        assert bodies == [b'{"name":"x"}', b"", None], bodies


@test
def harness_checks_where_the_admin_token_goes():
    import harness
    with make(flavour="forgejo15", admin_token=harness.ADMIN) as f:
        request(f, V1 + TA, token=harness.ADMIN)
        proto(f, "Register", {"name": "h", "token": REG})
        harness.assert_auth_header_only(f)          # as it should be
        for bad in (
                lambda: request(f, V1 + TA, token=None),
                lambda: request(f, V1 + LIST, token=harness.ADMIN,
                                method="POST", body=json.dumps(
                                    {"name": harness.ADMIN}).encode()),
                lambda: proto(f, "Register", {"name": "h", "token": REG},
                              token=harness.ADMIN),
                lambda: proto(f, "Register", {"name": "h",
                                              "token": harness.ADMIN}),
                lambda: proto(f, "Declare", {}, headers={
                    "x-runner-token": harness.ADMIN}),
                lambda: request(f, RS + "Register?t=" + harness.ADMIN,
                                token=None, method="POST", body=b"{}")):
            mark = len(f.requests)
            bad()
            try:
                harness.assert_auth_header_only(f)
            except AssertionError:
                pass
            else:
                raise AssertionError("not caught: %r" % f.requests[mark])
            del f.requests[mark:]


# -- auth ---------------------------------------------------------------------

@test
def auth_errors():
    with make(nonadmin_token=USER, scopeless_token="scp_1") as f:
        route = V1 + "/admin/runners/registration-token"
        url = f.url + "/api/swagger"
        check_json(*request(f, route, token=None), 401,
                   {"message": "token is required", "url": url})
        check_json(*request(f, route, token="wrong"), 401,
                   {"message": "user does not exist [uid: 0, name: ]",
                    "url": url})
        check_json(*request(f, route, token=USER), 403,
                   {"message": "user should be the site admin"})
        status, _, body = request(f, route, token="scp_1")
        assert status == 403 and b"scope" in body, (status, body)
        for scheme in ("token", "Bearer", "bearer", "BEARER"):
            check_json(*request(f, route, scheme=scheme), 200, {"token": REG})
        # Forgejo matches the word "token" case-sensitively.
        check_json(*request(f, route, scheme="Token"), 401,
                   {"message": "token is required"})
        check_json(*request(f, route, scheme="Basic"), 401,
                   {"message": "token is required"})
        check_json(*request(f, route, token=ADMIN + " extra"), 401,
                   {"message": "token is required"})


@test
def auth_runs_before_routing():
    with make(flavour="v7") as f:
        for path in (V1 + "/admin/runners/1", V1 + "/nope", "/nope"):
            check_json(*request(f, path, token="wrong"), 401,
                       {"message": "user does not exist [uid: 0, name: ]"})
            check_json(*request(f, path, token=None), 401,
                       {"message": "token is required"})
            check_plain_404(*request(f, path))
        status, _, _ = request(f, V1 + "/admin/runners/registration-token",
                               token=None, method="POST")
        assert status == 401, status


@test
def query_tokens_are_refused_but_recorded():
    with make() as f:
        route = V1 + "/admin/runners/registration-token"
        for query in ("token=" + ADMIN, "access_token=" + ADMIN):
            check_json(*request(f, route + "?" + query, token=None), 401,
                       {"message": "token is required"})
        assert [r["query"] for r in f.requests] == [
            "token=" + ADMIN, "access_token=" + ADMIN], f.requests
        assert all(r["path"] == route for r in f.requests)


@test
def requests_are_recorded():
    with make() as f:
        request(f, V1 + "/admin/runners/1", headers={"X-Thing": "a"})
        r = f.requests[0]
        assert r["method"] == "GET" and r["path"] == V1 + "/admin/runners/1"
        assert r["query"] == "" and r["conn"] == 1 and r["status"] == 404
        assert r["headers"]["authorization"] == "token " + ADMIN
        assert r["headers"]["x-thing"] == "a", r


# -- HTTP ---------------------------------------------------------------------

@test
def keep_alive_reuses_one_connection():
    with make(runners={1: "u"}) as f:
        conn = connect(f)
        request(f, V1 + "/admin/runners/1", conn=conn)
        request(f, V1 + "/admin/runners/registration-token", conn=conn)
        request(f, V1 + "/nope", token="bad", conn=conn)
        conn.close()
        assert f.connections == 1, f.connections
        assert [r["conn"] for r in f.requests] == [1, 1, 1]
        request(f, V1 + "/admin/runners/1")
        assert f.connections == 2 and f.requests[-1]["conn"] == 2


@test
def connection_close_is_honoured():
    with make() as f:
        s = socket.create_connection(("127.0.0.1", f.port), timeout=3)
        s.sendall(("GET %s/admin/runners/registration-token HTTP/1.1\r\n"
                   "Host: x\r\nAuthorization: token %s\r\n"
                   "Connection: close\r\n\r\n" % (V1, ADMIN)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data
        assert data.endswith(b'{"token":"%s"}\n' % REG.encode()), data


# -- scripted responses -------------------------------------------------------

@test
def scripted_status_body_headers_fifo():
    with make(flavour="f15", runners={1: "u"}) as f:
        lookup = V1 + "/admin/actions/runners/1"
        f.script("lookup", {"status": 503, "body": "busy"},
                 {"status": 500, "body": {"message": "db"}},
                 {"status": 200, "body": b"<html>",
                  "headers": {"Content-Type": "text/html"}})
        status, h, body = request(f, lookup)
        assert (status, body) == (503, b"busy"), (status, body)
        assert h["content-type"].startswith("text/plain"), h
        check_json(*request(f, lookup), 500, {"message": "db"})
        status, h, body = request(f, lookup)
        assert (status, h["content-type"], body) == (200, "text/html",
                                                     b"<html>")
        check_json(*request(f, lookup), 200, {"id": 1})   # script used up
        f.script("token", {"status": 302, "headers": {
            "Location": "http://127.0.0.1:1/x"}})
        status, h, body = request(f, V1 + "/admin/runners/registration-token")
        assert status == 302 and h["location"] == "http://127.0.0.1:1/x"
        assert body == b""


@test
def scripted_kinds_respect_auth_and_routes():
    with make(flavour="v7") as f:
        f.script("lookup", {"status": 500})     # v7 has no lookup route
        check_plain_404(*request(f, V1 + "/admin/runners/1"))
        f.script("token", {"status": 503})
        check_json(*request(f, V1 + "/admin/runners/registration-token",
                            token="bad"), 401, {})
        status, _, _ = request(f, V1 + "/admin/runners/registration-token")
        assert status == 503, status
        f.script("any", {"status": 418, "body": "teapot"})
        status, _, body = request(f, "/whatever", token=None)
        assert (status, body) == (418, b"teapot"), (status, body)
        check_json(*request(f, "/whatever", token=None), 401, {})


@test
def scripted_delay():
    with make() as f:
        f.script("token", {"status": 200, "body": {"token": "x"},
                           "delay": 0.3})
        t0 = time.monotonic()
        check_json(*request(f, V1 + "/admin/runners/registration-token"),
                   200, {"token": "x"})
        assert time.monotonic() - t0 >= 0.3


@test
def scripted_hang_times_out_client():
    with make() as f:
        f.script("any", {"mode": "hang"})
        conn = connect(f, timeout=0.3)
        t0 = time.monotonic()
        try:
            request(f, "/x", conn=conn)
        except socket.timeout:
            pass
        else:
            raise AssertionError("hang answered")
        finally:
            conn.close()
        assert time.monotonic() - t0 < 2
        assert f.requests[0]["status"] is None


@test
def scripted_endless_streams_chunks():
    with make() as f:
        f.script("token", {"mode": "endless"})
        conn = connect(f, timeout=2)
        conn.request("GET", V1 + "/admin/runners/registration-token",
                     headers={"Authorization": "token " + ADMIN})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") == "chunked"
        got = resp.read(40000)
        assert got.startswith(b'{"token":"AAAA') and len(got) == 40000
        conn.close()


@test
def scripted_close_and_reset():
    with make() as f:
        f.script("any", {"mode": "close"}, {"mode": "close", "reset": True})
        try:
            request(f, "/x")
        except http.client.RemoteDisconnected:
            pass
        else:
            raise AssertionError("close answered")
        s = socket.create_connection(("127.0.0.1", f.port), timeout=3)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = None
        s.close()
        assert data is None, data
        check_json(*request(f, "/x", token=None), 401, {})


@test
def script_rejects_typos():
    f = make()
    for kind, response in (("lookups", {}), ("any", {"mode": "hung"}),
                           ("any", {"staus": 200}), ("any", "503")):
        try:
            f.script(kind, response)
        except (ValueError, TypeError):
            continue
        raise AssertionError("accepted %r %r" % (kind, response))


# -- start and stop -----------------------------------------------------------

@test
def delayed_start():
    f = make().start(delay=0.5)
    try:
        assert f.port and f.url == "http://127.0.0.1:%d" % f.port
        try:
            socket.create_connection(("127.0.0.1", f.port), timeout=1).close()
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError("connected before the forge came up")
        time.sleep(0.7)
        check_json(*request(f, V1 + "/admin/runners/registration-token"),
                   200, {"token": REG})
    finally:
        f.stop()


@test
def stop_before_delayed_start():
    f = make().start(delay=5)
    t0 = time.monotonic()
    f.stop()
    assert time.monotonic() - t0 < 1
    f.stop()    # idempotent


@test
def stop_does_not_hang():
    f = make().start()
    f.script("any", {"mode": "hang"}, {"mode": "endless"},
             {"status": 200, "delay": 30})
    conns = []
    for _ in range(3):
        conn = connect(f, timeout=10)
        conn.putrequest("GET", "/x")
        conn.endheaders()
        conns.append(conn)
    deadline = time.monotonic() + 2
    while len(f.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    idle = connect(f)
    request(f, "/y", conn=idle)       # an idle keep-alive connection
    t0 = time.monotonic()
    f.stop()
    took = time.monotonic() - t0
    for conn in conns + [idle]:
        conn.close()
    assert took < 1, took
    assert not [t for t in threading.enumerate()
                if t.name.startswith("forge")], threading.enumerate()
    try:
        socket.create_connection(("127.0.0.1", f.port), timeout=1).close()
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("still listening")


@test
def stop_with_silent_tls_client():
    f = make(tls=True).start()
    raw = socket.create_connection(("127.0.0.1", f.port))  # no handshake
    deadline = time.monotonic() + 2
    while f.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    f.stop()
    raw.close()
    assert time.monotonic() - t0 < 1


@test
def fixed_port():
    with make() as first:
        port = first.port
    with make(port=port) as f:
        assert f.port == port
        check_json(*request(f, V1 + "/admin/runners/registration-token"),
                   200, {})


# -- transports ---------------------------------------------------------------

@test
def unix_socket():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "forge.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()                   # leaves a stale socket file
        with make(unix_socket=path, runners={5: "u5"}) as f:
            assert f.url == "http://forge.invalid" and f.port is None
            conn = connect(f)
            check_json(*request(f, V1 + "/admin/runners/5", conn=conn),
                       200, {"uuid": "u5"})
            check_json(*request(f, V1 + "/admin/runners/6", conn=conn),
                       404, {"url": "http://forge.invalid/api/swagger"})
            conn.close()
            assert f.connections == 1
        assert not os.path.exists(path)


@test
def unix_socket_delayed():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "forge.sock")
        f = make(unix_socket=path).start(delay=0.3)
        try:
            assert not os.path.exists(path)
            time.sleep(0.5)
            check_json(*request(f, V1 + "/admin/runners/registration-token"),
                       200, {"token": REG})
        finally:
            f.stop()


@test
def tls():
    with make(tls=True) as f:
        assert f.url == "https://127.0.0.1:%d" % f.port
        conn = connect(f)
        check_json(*request(f, V1 + "/admin/runners/registration-token",
                            conn=conn), 200, {"token": REG})
        check_plain_404(*request(f, V1 + "/nope", conn=conn))
        conn.close()
        assert f.connections == 1
        for host in ("localhost",):
            ctx = ssl.create_default_context(cafile=CA)
            with socket.create_connection(("127.0.0.1", f.port)) as raw:
                with ctx.wrap_socket(raw, server_hostname=host):
                    pass
        try:
            system_cas = ssl.create_default_context()
            request(f, "/", conn=connect(f, context=system_cas))
        except ssl.SSLCertVerificationError:
            pass
        else:
            raise AssertionError("verified without the test CA")
        f.script("any", {"mode": "hang"})
        conn = connect(f, timeout=0.3)
        try:
            request(f, "/", conn=conn)
        except socket.timeout:
            pass
        else:
            raise AssertionError("hang answered over TLS")
        conn.close()


# -- command line -------------------------------------------------------------

@test
def cli():
    with tempfile.TemporaryDirectory() as d:
        token_file = os.path.join(d, "admin-token")
        with open(token_file, "w") as f:
            f.write(ADMIN + "\n")
        port_file = os.path.join(d, "port")
        log = os.path.join(d, "log")
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "forge.py"),
             "--flavour", "f15", "--admin-token-file", token_file,
             "--reg-token", REG, "--runner", "4:uuid-4", "--port-file",
             port_file, "--log", log],
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "FORGE_DEBUG"})
        try:
            deadline = time.monotonic() + 5
            while not os.path.exists(port_file):
                assert time.monotonic() < deadline, "no port file"
                time.sleep(0.02)
            with open(port_file) as f:
                port = int(f.read())
            cli_forge = forge.Forge()
            cli_forge.port = port         # only to reuse request()
            check_json(*request(cli_forge, V1 + "/admin/actions/runners/4"),
                       200, {"uuid": "uuid-4"})
            check_json(*request(cli_forge, V1 + "/admin/runners/"
                                "registration-token"), 200, {"token": REG})
            request(cli_forge, V1 + "/x?token=" + ADMIN, token="bad")
            # SIGUSR1 takes it down, SIGUSR2 brings it back on the same port.
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 5
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                except ConnectionRefusedError:
                    break
                assert time.monotonic() < deadline, "still up"
                time.sleep(0.02)
            proc.send_signal(signal.SIGUSR2)
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, "not up again"
                    time.sleep(0.02)
            check_json(*request(cli_forge, V1 + "/admin/actions/runners/4"),
                       200, {"uuid": "uuid-4"})
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(5) == 0
            err = proc.stderr.read().decode()
            assert err == "forge: listening on http://127.0.0.1:%d " \
                "(flavour f15)\nforge: down\nforge: up\n" % port, err
            with open(log) as f:
                lines = f.read().splitlines()
            assert lines == [
                "GET /api/v1/admin/actions/runners/4 -> 200",
                "GET /api/v1/admin/runners/registration-token -> 200",
                "GET /api/v1/x -> 401",
                "GET /api/v1/admin/actions/runners/4 -> 200"], lines
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()


def main(argv):
    selected = [t for t in TESTS
                if not argv[1:] or any(a in t.__name__ for a in argv[1:])]
    passed = failed = 0
    t_all = time.monotonic()
    for t in selected:
        t0 = time.monotonic()
        try:
            t()
        except Exception as e:  # noqa: BLE001 - report every kind of failure
            failed += 1
            print("FAIL %s: %s: %s" % (t.__name__, type(e).__name__, e))
        else:
            passed += 1
            if os.environ.get("FORGE_DEBUG") == "1":
                print("ok   %s (%.2fs)" % (t.__name__, time.monotonic() - t0))
    print("%d passed, %d failed (%.1fs)" % (passed, failed,
                                            time.monotonic() - t_all))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
