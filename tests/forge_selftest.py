#!/usr/bin/env python3
"""Self-test of tests/forge.py, the fake Forgejo forge (standard library only).

Run: python3 tests/forge_selftest.py [NAME-SUBSTRING ...]
Prints one line per failure and "N passed, N failed"; exits 1 on failure.
"""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import forge  # noqa: E402

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


ROUTES = {
    # flavour: (token routes, lookup prefix or None, routes it lacks)
    "design": (["/admin/runners/registration-token"], "/admin/runners/",
               ["/admin/actions/runners/registration-token",
                "/admin/actions/runners/1"]),
    "v7": (["/admin/runners/registration-token"], None,
           ["/admin/actions/runners/registration-token",
            "/admin/runners/1", "/admin/actions/runners/1"]),
    "f15": (["/admin/actions/runners/registration-token",
             "/admin/runners/registration-token"], "/admin/actions/runners/",
            ["/admin/runners/1"]),
    "future": (["/admin/actions/runners/registration-token"],
               "/admin/actions/runners/",
               ["/admin/runners/registration-token", "/admin/runners/1"]),
}


# -- routes -------------------------------------------------------------------

@test
def flavour_routes():
    for flavour, (tokens, lookup, missing) in ROUTES.items():
        with make(flavour=flavour, runners={1: "uuid-1", 2: "uuid-2"}) as f:
            for route in tokens:
                check_json(*request(f, V1 + route), 200, {"token": REG})
            for route in missing:
                check_plain_404(*request(f, V1 + route))
            if lookup:
                got = check_json(*request(f, V1 + lookup + "2"), 200,
                                 {"id": 2, "uuid": "uuid-2", "status": "idle"})
                assert set(got) == {"id", "uuid", "owner_id", "repo_id",
                                    "name", "status", "version", "labels",
                                    "description", "ephemeral"}, got
                assert all(isinstance(x, str) for x in got["labels"]), got
                url = f.url + "/api/swagger"
                got = check_json(*request(f, V1 + lookup + "7"), 404, {
                    "message": "runner with ID 7: resource does not exist",
                    "url": url})
                assert set(got) == {"message", "url"}, got
                check_json(*request(f, V1 + lookup + "abc"), 404, {
                    "message": "runner with ID 0: resource does not exist"})
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
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(5) == 0
            err = proc.stderr.read().decode()
            assert err == "forge: listening on http://127.0.0.1:%d " \
                "(flavour f15)\n" % port, err
            with open(log) as f:
                lines = f.read().splitlines()
            assert lines == [
                "GET /api/v1/admin/actions/runners/4 -> 200",
                "GET /api/v1/admin/runners/registration-token -> 200",
                "GET /api/v1/x -> 401"], lines
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
