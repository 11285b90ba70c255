#!/usr/bin/env python3
"""A fake Forgejo forge for the hive-ci-prefetch tests.

It serves the few admin API routes hive-ci-prefetch uses, and answers them
the way a real Forgejo does (see FORGE-API.md): auth runs before routing, a
missing route is a plain-text 404 while a missing runner is a JSON 404, and
JSON bodies are compact with a trailing newline, as Go's encoder writes them.
Standard library only: it runs offline in the Nix build sandbox and in CI.

Used as a module::

    sys.path.insert(0, "tests")
    import forge

    with forge.Forge(flavour="f15", admin_token="adm_x",
                     runners={1: "uuid-1"}) as f:
        f.script("lookup", {"status": 503, "body": "busy"})
        ...                        # run the client against f.url
        assert f.requests[0]["path"] == "/api/v1/admin/actions/runners/1"

Forge(flavour, admin_token, nonadmin_token, reg_token, runners, unix_socket,
tls, port, scopeless_token, log_path); start(delay=0) -> self; stop();
script(kind, *responses); and, to look at:

    url          "http://127.0.0.1:PORT", "https://..." with tls, or
                 "http://forge.invalid" on a Unix socket
    port         the TCP port (known right after start(), even delayed)
    requests     one dict per request: method, path, query (the raw query
                 string), headers (lower-case names; repeats joined by ", "),
                 conn (connection serial, from 1), status (None if unanswered)
    connections  connections accepted so far
    runners      id -> uuid (or -> dict of fields overriding the default
                 runner object); live, tests may change it at any time

Auth, before routing, on every path: "Authorization: token X" (the word
"token" in lower case, as Forgejo wants it) or "Bearer X" (any case). No
usable header -> 401 "token is required" (query-string tokens are not
usable); nonadmin_token -> 403 "user should be the site admin";
scopeless_token -> 403 about scopes; any other token -> 401 "user does not
exist [uid: 0, name: ]". A non-GET request on a route that exists -> 405.

Flavours, i.e. which routes (under /api/v1, GET only) the forge has:

    design  /admin/runners/registration-token, /admin/runners/{id}
    v7      /admin/runners/registration-token            (Forgejo v7..v13)
    f15     /admin/actions/runners/registration-token,
            /admin/runners/registration-token (deprecated),
            /admin/actions/runners/{id}                  (Forgejo 15)
    future  /admin/actions/runners/registration-token,
            /admin/actions/runners/{id}

Scripted responses (Forge.script) replace the normal answer to the next
request of a kind: "token", "lookup" (routes the flavour has; auth still
applies) or "any" (every request, before auth and routing). A response is a
dict with any of these keys:

    status    HTTP status (default 200)
    body      dict/list (sent as JSON), str or bytes (sent as is), or None
    headers   dict of extra headers; they override the defaults, and a
              Content-Length or Transfer-Encoding given here is sent as is
    delay     seconds to wait before answering (or before the mode starts)
    mode      "hang":    read the request, never answer
              "endless": 200, chunked, one chunk after another until the
                         client goes away (first chunk is `body`, default
                         '{"token":"', then `chunk` every `interval` seconds,
                         default 4096 x "A" every 0.01 s)
              "close":   close the connection without answering; with
                         "reset": True, with a TCP reset instead of a FIN

Run as a program it serves until SIGTERM/SIGINT; see --help.
Set FORGE_DEBUG=1 to log requests and handler errors to stderr.
"""

import argparse
import collections
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import stat
import struct
import sys
import threading
import time
import traceback

API_PREFIX = "/api/v1"
TLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tls")
UNIX_SOCKET_URL = "http://forge.invalid"

DEFAULT_ADMIN_TOKEN = "adm_0123456789abcdef0123456789abcdef0123"
DEFAULT_REG_TOKEN = "A" * 40

# flavour -> (registration-token routes, runner lookup route prefixes)
FLAVOURS = {
    "design": (
        ("/admin/runners/registration-token",),
        ("/admin/runners/",),
    ),
    "v7": (
        ("/admin/runners/registration-token",),
        (),
    ),
    "f15": (
        ("/admin/actions/runners/registration-token",
         "/admin/runners/registration-token"),
        ("/admin/actions/runners/",),
    ),
    "future": (
        ("/admin/actions/runners/registration-token",),
        ("/admin/actions/runners/",),
    ),
}

SCRIPT_KINDS = ("lookup", "token", "any")
SCRIPT_MODES = (None, "hang", "endless", "close")
SCRIPT_KEYS = {"status", "body", "headers", "delay", "mode", "reset",
               "chunk", "interval"}

JSON_TYPE = "application/json;charset=utf-8"  # what Forgejo's ctx.JSON sends
TEXT_TYPE = "text/plain; charset=utf-8"       # what Go's http.Error sends

# Go's strconv.ParseInt(s, 10, 64); Forgejo reads an unparsable id as 0.
_INT64 = re.compile(r"[+-]?[0-9]+\Z")


def _debug():
    return os.environ.get("FORGE_DEBUG") == "1"


def _encode(text):
    # Lone surrogates U+DC80..U+DCFF become raw bytes 0x80..0xFF, so a test
    # can put invalid UTF-8 into a str such as reg_token.
    return text.encode("utf-8", "surrogateescape")


def _json_bytes(value):
    return _encode(json.dumps(value, ensure_ascii=False,
                              separators=(",", ":")) + "\n")


def _parse_id(text):
    if _INT64.match(text):
        value = int(text)
        if -2**63 <= value < 2**63:
            return value
    return 0


def runner_object(runner_id, uuid):
    """The runner object Forgejo 15 returns for a lookup.

    `uuid` is the value from Forge.runners: a str, or a dict whose keys
    override (or add to) the default fields.
    """
    runner = {
        "id": runner_id,
        "uuid": uuid,
        "owner_id": 0,
        "repo_id": 0,
        "name": "runner-%d" % runner_id,
        "status": "idle",
        "version": "v11.1.1",
        "labels": ["native:host"],
        "description": "",
        "ephemeral": False,
    }
    if isinstance(uuid, dict):
        runner["uuid"] = None
        runner.update(uuid)
    return runner


class Forge:
    """A fake forge: configure, start(), point the client at .url, stop()."""

    def __init__(self, flavour="design", admin_token=DEFAULT_ADMIN_TOKEN,
                 nonadmin_token=None, reg_token=DEFAULT_REG_TOKEN,
                 runners=None, unix_socket=None, tls=False, port=0,
                 scopeless_token=None, log_path=None, host="127.0.0.1"):
        if flavour not in FLAVOURS:
            raise ValueError("unknown flavour %r" % (flavour,))
        self.flavour = flavour
        self.admin_token = admin_token
        self.nonadmin_token = nonadmin_token
        self.scopeless_token = scopeless_token
        self.reg_token = reg_token
        self.runners = {} if runners is None else runners
        self.unix_socket = unix_socket
        self.tls = tls
        self.log_path = log_path
        self.requests = []
        self.port = None if unix_socket else port
        self.host = host  # a loopback address; 127.0.0.2 is not in the certificate

        self._lock = threading.Lock()
        self._scripts = {kind: collections.deque() for kind in SCRIPT_KINDS}
        self._connections = 0
        self._fds = {}               # connection serial -> socket fd
        self._threads = set()
        self._stopping = threading.Event()
        self._state_lock = threading.Lock()
        self._serving = False
        self._started = False
        self._stopped = False
        self._bound_unix = False
        self._server = None
        self._thread = None
        self._tls_context = self._make_tls_context() if tls else None

    # -- public interface ------------------------------------------------

    @property
    def url(self):
        if self.unix_socket:
            return UNIX_SOCKET_URL
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host,
                                self.port)

    @property
    def connections(self):
        """Number of connections accepted so far."""
        with self._lock:
            return self._connections

    def script(self, kind, *responses):
        """Queue responses to serve, in order, to requests of `kind`."""
        if kind not in SCRIPT_KINDS:
            raise ValueError("script kind must be one of %s" % (SCRIPT_KINDS,))
        for response in responses:
            if not isinstance(response, dict):
                raise TypeError("a scripted response is a dict")
            unknown = set(response) - SCRIPT_KEYS
            if unknown:
                raise ValueError("unknown keys in scripted response: %s"
                                 % sorted(unknown))
            if response.get("mode") not in SCRIPT_MODES:
                raise ValueError("unknown mode %r" % (response["mode"],))
        with self._lock:
            self._scripts[kind].extend(responses)
        return self

    def start(self, delay=0):
        """Start serving in daemon threads; returns self.

        With a delay the forge comes up late: a TCP port is bound (so .port
        and .url are known) but only listens after `delay` seconds, so
        connections are refused until then; a Unix socket is only created
        after the delay.
        """
        if self._started or self._stopped:
            raise RuntimeError("a forge starts once")
        if self.unix_socket:
            self._server = _UnixServer(self, self.unix_socket)
        else:
            self._server = _TCPServer(self, (self.host, self.port))
        try:
            if self.unix_socket and not delay:
                self._bind_unix()
            elif not self.unix_socket:
                # SO_REUSEADDR only to rebind a fixed port in TIME_WAIT: it
                # would let others bind a port reserved but not listening.
                reuse = bool(self.port) and not delay
                self._server.allow_reuse_address = reuse
                self._server.server_bind()
                self.port = self._server.server_address[1]
                if not delay:
                    self._server.server_activate()
        except BaseException:
            self._server.server_close()
            raise
        self._thread = threading.Thread(target=self._serve, args=(delay,),
                                        name="forge", daemon=True)
        self._thread.start()
        self._started = True
        return self

    def stop(self, timeout=2.0):
        """Stop serving, drop every connection, and join the threads."""
        with self._state_lock:
            if self._stopped or not self._started:
                self._stopped = True
                return
            self._stopped = True
            self._stopping.set()
            serving = self._serving
        if serving:
            self._server.shutdown()
        with self._lock:
            # Under the lock: a connection leaves _fds before its fd closes.
            for fd in self._fds.values():
                _drop(fd)
        self._server.server_close()
        if self._bound_unix:
            _remove_socket_file(self.unix_socket)
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in [self._thread] + threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- serving ---------------------------------------------------------

    def _make_tls_context(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(TLS_DIR, "server.crt"),
                                os.path.join(TLS_DIR, "server.key"))
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _bind_unix(self):
        _remove_socket_file(self.unix_socket)
        self._server.server_bind()
        self._bound_unix = True
        self._server.server_activate()

    def _serve(self, delay):
        if delay and self._stopping.wait(delay):
            return
        with self._state_lock:
            if self._stopping.is_set():
                return
            try:
                if self.unix_socket and not self._bound_unix:
                    self._bind_unix()
                elif delay:
                    self._server.server_activate()
            except OSError as e:
                sys.stderr.write("forge: cannot listen: %s\n" % e)
                return
            self._serving = True
        self._server.serve_forever(poll_interval=0.05)

    def _connection_opened(self, sock):
        with self._lock:
            self._connections += 1
            self._fds[self._connections] = sock.fileno()
            return self._connections

    def _connection_closing(self, serial):
        with self._lock:
            self._fds.pop(serial, None)

    def _track_thread(self, thread):
        with self._lock:
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(thread)

    # -- what the forge answers ------------------------------------------

    def _record(self, method, path, query, headers, serial):
        names = {}
        for name, value in headers.items():
            name = name.lower()
            if name in names:
                value = names[name] + ", " + value
            names[name] = value
        record = {"method": method, "path": path, "query": query,
                  "headers": names, "conn": serial, "status": None}
        with self._lock:
            self.requests.append(record)
        return record

    def _log(self, method, path, outcome):
        if _debug():
            sys.stderr.write("forge: %s %s -> %s\n" % (method, path, outcome))
        if self.log_path:
            with self._lock, open(self.log_path, "a") as log:
                log.write("%s %s -> %s\n" % (method, path, outcome))

    def _next_scripted(self, kind):
        with self._lock:
            queue = self._scripts[kind]
            return queue.popleft() if queue else None

    def _swagger_url(self):
        return self.url + "/api/swagger"

    def _authenticate(self, header):
        """None if `header` carries the admin token, else (status, body).

        Parsed like Forgejo's services/auth: two whitespace-separated fields,
        the scheme exactly "token" or any case of "bearer".
        """
        token = None
        if header:
            fields = header.split()
            if len(fields) == 2 and (fields[0] == "token"
                                     or fields[0].lower() == "bearer"):
                token = fields[1]
        if not token:
            message, status = "token is required", 401
        elif token == self.admin_token:
            return None
        elif self.nonadmin_token is not None and token == self.nonadmin_token:
            message, status = "user should be the site admin", 403
        elif (self.scopeless_token is not None
              and token == self.scopeless_token):
            message, status = ("token does not have at least one of required "
                               "scope(s): [read:admin]"), 403
        else:
            message, status = "user does not exist [uid: 0, name: ]", 401
        return status, {"message": message, "url": self._swagger_url()}

    def _route(self, path):
        """("token", None), ("lookup", runner id) or (None, None)."""
        if not path.startswith(API_PREFIX + "/"):
            return None, None
        route = path[len(API_PREFIX):]
        token_routes, lookup_prefixes = FLAVOURS[self.flavour]
        if route in token_routes:
            return "token", None
        for prefix in lookup_prefixes:
            segment = route[len(prefix):]
            if route.startswith(prefix) and segment and "/" not in segment:
                return "lookup", _parse_id(segment)
        return None, None

    def _lookup(self, runner_id):
        """(status, body) of a runner lookup."""
        for key, uuid in list(self.runners.items()):
            if str(key) == str(runner_id):
                return 200, runner_object(runner_id, uuid)
        return 404, {"message": "runner with id %d: resource does not exist"
                                % runner_id,
                     "url": self._swagger_url(), "errors": []}


def _drop(fd):
    """Shut a connection down under its handler's feet (unblocks its reads).

    Works on the fd: the handler thread may be wrapping the socket in TLS
    (which moves the fd to a new socket object) or using its SSL object.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


def _remove_socket_file(path):
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


class _ConnectionMixin:
    """One daemon thread per connection, tracked so stop() can end them."""

    request_queue_size = 64

    def __init__(self, forge, address):
        self.forge = forge
        super().__init__(address, _Handler, bind_and_activate=False)

    def process_request(self, request, client_address):
        serial = self.forge._connection_opened(request)
        if self.address_family != socket.AF_UNIX:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address, serial),
            name="forge-conn-%d" % serial, daemon=True)
        self.forge._track_thread(thread)
        thread.start()

    def _serve_connection(self, sock, client_address, serial):
        handler = None
        try:
            if self.forge._tls_context is not None:
                sock.settimeout(5)
                sock = self.forge._tls_context.wrap_socket(sock,
                                                           server_side=True)
                sock.settimeout(None)
            handler = _Handler(sock, client_address, self, serial)
        except Exception:
            self.handle_error(sock, client_address)
        finally:
            self.forge._connection_closing(serial)
            if handler is not None and handler.reset_connection:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
            else:
                _shutdown_write(sock)
            sock.close()

    def handle_error(self, request, client_address):
        if _debug():
            traceback.print_exc()


def _shutdown_write(sock):
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        pass


class _TCPServer(_ConnectionMixin, socketserver.TCPServer):
    pass


class _UnixServer(_ConnectionMixin, socketserver.UnixStreamServer):
    pass


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 requests, kept alive until told otherwise."""

    protocol_version = "HTTP/1.1"
    server_version = "forge.py"
    max_body = 1 << 20

    def __init__(self, request, client_address, server, serial):
        self.forge = server.forge
        self.serial = serial
        self.reset_connection = False
        super().__init__(request, client_address, server)

    def version_string(self):
        return self.server_version

    def address_string(self):
        if isinstance(self.client_address, tuple) and self.client_address:
            return str(self.client_address[0])
        return "unix"

    def log_message(self, format, *args):
        if _debug():
            super().log_message(format, *args)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        record = self.forge._record(self.command, path, query, self.headers,
                                    self.serial)
        self._discard_body()

        scripted = self.forge._next_scripted("any")
        if scripted is not None:
            return self._send_scripted(record, scripted)

        denied = self.forge._authenticate(self.headers.get("Authorization"))
        if denied is not None:
            return self._send_json(record, *denied)

        kind, runner_id = self.forge._route(path)
        if kind is None:
            # The router's default handler (Go's http.NotFound).
            return self._send(record, 404, b"404 page not found\n",
                              {"Content-Type": TEXT_TYPE,
                               "X-Content-Type-Options": "nosniff"})
        if self.command != "GET":
            return self._send(record, 405, b"", {"Allow": "GET"})

        scripted = self.forge._next_scripted(kind)
        if scripted is not None:
            return self._send_scripted(record, scripted)
        if kind == "token":
            return self._send_json(record, 200,
                                   {"token": self.forge.reg_token})
        return self._send_json(record, *self.forge._lookup(runner_id))

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # -- plumbing --------------------------------------------------------

    def _discard_body(self):
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            return
        length = self.headers.get("Content-Length")
        if length is None:
            return
        if not length.isdigit() or int(length) > self.max_body:
            self.close_connection = True
            return
        remaining = int(length)
        while remaining:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                self.close_connection = True
                return
            remaining -= len(data)

    def _finish(self, record, status, note=""):
        """Note the outcome in f.requests and in the log."""
        record["status"] = status
        outcome = " ".join(str(part) for part in (status, note) if part)
        self.forge._log(self.command, record["path"], outcome)

    def _send(self, record, status, body, headers):
        # Noted before answering: a test may look as soon as it has the answer.
        self._finish(record, status)
        self.send_response(status)
        names = {name.lower() for name in headers}
        for name, value in headers.items():
            self.send_header(name, str(value))
        if not names & {"content-length", "transfer-encoding"}:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, record, status, value):
        self._send(record, status, _json_bytes(value),
                   {"Content-Type": JSON_TYPE})

    def _send_scripted(self, record, response):
        delay = response.get("delay", 0)
        if delay and self.forge._stopping.wait(delay):
            self.close_connection = True
            return self._finish(record, None, "(stopped)")
        mode = response.get("mode")
        if mode == "hang":
            return self._hang(record)
        if mode == "close":
            self.close_connection = True
            self.reset_connection = bool(response.get("reset"))
            return self._finish(record, None, "(closed)")
        if mode == "endless":
            return self._endless(record, response)

        body = response.get("body")
        headers = {}
        if isinstance(body, (dict, list)):
            body, headers["Content-Type"] = _json_bytes(body), JSON_TYPE
        elif isinstance(body, str):
            body, headers["Content-Type"] = _encode(body), TEXT_TYPE
        elif isinstance(body, bytes):
            headers["Content-Type"] = TEXT_TYPE
        else:
            body = b""
        given = response.get("headers", {})
        if "content-type" in {name.lower() for name in given}:
            headers.pop("Content-Type", None)
        headers.update(given)
        self._send(record, response.get("status", 200), body, headers)

    def _hang(self, record):
        """Read what comes, never answer, until the peer or stop() ends it."""
        self.close_connection = True
        self._finish(record, None, "(hang)")
        while not self.forge._stopping.is_set():
            try:
                if not self.connection.recv(65536):
                    return
            except OSError:
                return

    def _endless(self, record, response):
        """A 200 whose chunked body never ends."""
        self.close_connection = True
        first = response.get("body", '{"token":"')
        chunk = response.get("chunk", b"A" * 4096)
        interval = response.get("interval", 0.01)
        first = _encode(first) if isinstance(first, str) else first
        chunk = _encode(chunk) if isinstance(chunk, str) else chunk
        status = response.get("status", 200)
        self._finish(record, status, "(endless)")
        self.send_response(status)
        headers = {"Content-Type": JSON_TYPE}
        headers.update(response.get("headers", {}))
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            data = first
            while not self.forge._stopping.is_set():
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                data = chunk
                if interval:
                    self.forge._stopping.wait(interval)
        except OSError:
            pass


# -- command line ------------------------------------------------------------

def _runner_arg(text):
    runner_id, sep, uuid = text.partition(":")
    if not sep or not uuid or _INT64.match(runner_id) is None:
        raise argparse.ArgumentTypeError("expected ID:UUID, got %r" % text)
    return int(runner_id), uuid


def _write_atomically(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Serve a fake Forgejo admin API until SIGTERM/SIGINT.")
    parser.add_argument("--flavour", choices=sorted(FLAVOURS),
                        default="design", help="which routes the forge has")
    parser.add_argument("--admin-token-file", required=True, metavar="PATH",
                        help="file holding the site-admin token")
    parser.add_argument("--reg-token", default=DEFAULT_REG_TOKEN, metavar="T",
                        help="registration token to hand out")
    parser.add_argument("--runner", action="append", default=[],
                        type=_runner_arg, metavar="ID:UUID",
                        help="a runner the forge knows (repeatable)")
    parser.add_argument("--port", type=int, default=0,
                        help="TCP port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--unix-socket", metavar="PATH",
                        help="listen on a Unix socket instead of TCP")
    parser.add_argument("--tls", action="store_true",
                        help="serve https with tests/tls/server.crt")
    parser.add_argument("--port-file", metavar="PATH",
                        help="write the port here once listening")
    parser.add_argument("--log", metavar="PATH",
                        help="append 'METHOD PATH -> STATUS' per request")
    args = parser.parse_args(argv)
    if args.port_file and args.unix_socket:
        parser.error("--port-file needs TCP, not --unix-socket")
    try:
        with open(args.admin_token_file) as f:
            admin_token = f.read().strip()
    except OSError as e:
        parser.error("cannot read admin token: %s" % e)
    if not admin_token:
        parser.error("admin token file is empty")

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())

    forge = Forge(flavour=args.flavour, admin_token=admin_token,
                  reg_token=args.reg_token, runners=dict(args.runner),
                  unix_socket=args.unix_socket, tls=args.tls, port=args.port,
                  log_path=args.log)
    try:
        forge.start()
    except OSError as e:
        sys.stderr.write("forge: cannot listen: %s\n" % e)
        return 1
    if args.port_file:
        _write_atomically(args.port_file, "%d\n" % forge.port)
    where = "unix:" + args.unix_socket if args.unix_socket else forge.url
    sys.stderr.write("forge: listening on %s (flavour %s)\n"
                     % (where, args.flavour))
    sys.stderr.flush()
    while not done.wait(0.2):
        pass
    forge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
