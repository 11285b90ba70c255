#!/usr/bin/env python3
"""A fake Forgejo or Gitea forge for the hive-ci-prefetch tests.

It serves the admin API routes of runners and the runners' own protocol
(Register, Declare, ...), and answers them the way a real Forgejo or Gitea
does (see FORGE-API.md): auth runs before routing, a
missing route is a plain-text 404 while a missing runner is a JSON 404, a
route that exists only for another method is a 405, and JSON bodies are
compact with a trailing newline, as Go's encoder writes them. It also keeps
the state the runners live by: a reusable registration token, runner records
created by registration, and whether the forge is up at all.
Standard library only: it runs offline in the Nix build sandbox and in CI.

Used as a module::

    sys.path.insert(0, "tests")
    import forge

    with forge.Forge(flavour="forgejo15", admin_token="adm_x",
                     runners={1: "uuid-1"}) as f:
        f.script("lookup", {"status": 503, "body": "busy"})
        ...                        # run the client against f.url
        assert f.requests[0]["path"] == "/api/v1/admin/actions/runners/1"

Forge(flavour, admin_token, nonadmin_token, reg_token, runners, unix_socket,
tls, port, scopeless_token, log_path, host, actions=True); start(delay=0) ->
self; stop(); script(kind, *responses); and, to look at:

    url          "http://127.0.0.1:PORT", "https://..." with tls, or
                 "http://forge.invalid" on a Unix socket
    port         the TCP port (known right after start(), even delayed)
    requests     one dict per request: method, path, query (the raw query
                 string), headers (lower-case names; repeats joined by ", "),
                 body (bytes, b"" without one; None if it could not be read:
                 chunked, over 1 MiB or cut short), conn (connection serial,
                 from 1), status (None if unanswered)
    connections  connections accepted so far
    runners      id -> record; live, tests may change it at any time. A
                 record is a uuid (str), a dict of fields overriding the
                 default runner object (its "uuid", if any, is also the
                 record's uuid), or a forge.Runner (what register() makes)
    family       "forgejo" or "gitea" (the shape of objects and errors)
    reg_token    the registration token every token route returns

State, for tests that play the runner's side (thread-safe; works whether
or not the forge is serving, except where said):

    register(token, name, labels=(), address=None, ephemeral=False,
             version=None) -> dict
        what `act_runner register` / `forgejo-runner register` does: a new
        record with the next id, a fresh uuid and a fresh runner secret (40
        hex), even under a name that exists; returns the `.runner` content
        (WARNING, id, uuid, name, token, address, labels; Gitea flavours
        add ephemeral). The record gets `labels` as given (a runner sends
        the names) and `version` (None: "v0.2.11" on Gitea, "v11.1.1" on
        Forgejo). Raises RegisterError if the forge is down or `token` is
        not the current registration token ("placeholder" never is); the
        message is the forge's ("... not found", or "... has been
        invalidated ..." for a token an admin reset). The record starts
        "offline". The protocol's Register makes records the same way.
    declare(uuid, token, labels=(), version="") -> Runner
        what the daemon's Declare does: the record with this uuid and
        runner secret gets the labels and version and shows online
        ("idle"). Raises DeclareError("forge down") or
        DeclareError("unregistered runner").
    runner_works(runner) -> (bool, reason)
        the daemon's check of a `.runner` dict: the forge is up and holds a
        record with that id whose uuid and runner secret match. Reasons:
        "ok", "forge down", "unregistered runner (...)", "bad .runner (...)".
    reset_token() -> str     an admin resets the registration token (the
                 old one is now "invalidated")
    wipe() -> str            every runner gone, ids from 1 again, new token
    record(id) -> Runner or None   the record, as a Runner (a plain uuid or
                 dict entry is converted in place)
    set_status(id, status)   "offline", "idle", "active" (Forgejo's words)
                 or "online" (= idle), "busy" (= active); Gitea objects show
                 online/offline and busy
    status(id) -> "offline" | "idle" | "active" | None
    ghosts(current_id=None, name=None) -> [ids]   offline records other
                 than current_id (only those named `name`, if given)
    down() / up()  the forge goes away (connections refused, register()
                 raises, state kept) and comes back on the same port or
                 socket, so the same URL works again; is_up tells

Auth, before routing, on every path: "Authorization: token X" (the word
"token" in lower case, as Forgejo wants it) or "Bearer X" (any case). No
usable header -> 401 "token is required" (query-string tokens are not
usable); nonadmin_token -> 403 "user should be the site admin";
scopeless_token -> 403 about scopes; any other token -> 401 "user does not
exist [uid: 0, name: ]".

Flavours, i.e. which routes (under /api/v1) the forge has (FORGE-API.md,
"Routes"); T_ADMIN is /admin/runners/registration-token, A is
/admin/actions/runners:

    design     GET T_ADMIN; GET /admin/runners/{id}   (the hive's design)
    forgejo11  GET T_ADMIN                            (Forgejo 11-14; "v7")
    forgejo15  GET T_ADMIN; GET A/registration-token; GET A (bare array);
               POST A (registers, 201); GET, DELETE A/{id}   ("f15")
    forgejo16  the same as forgejo15
    gitea122   GET T_ADMIN                            (Gitea 1.22, 1.23)
    gitea124   GET T_ADMIN; POST A/registration-token;
               GET A ({"runners":[...],"total_count":N}); GET, DELETE A/{id}
               (Gitea 1.24, 1.25)
    gitea126   as gitea124 without GET T_ADMIN        (Gitea 1.26)
    future     GET A/registration-token; GET A/{id}

Routing follows the forges' router (chi): a static segment wins over {id},
but when the static route lacks the method the {id} route is tried, so a GET
or DELETE of A/registration-token on Gitea 1.24+ is a lookup or delete of
runner 0 (a JSON 404). A path some route has, but not for this method: 405
with an Allow header and no body. No route for the path at all: the
plain-text 404. An {id} that is not an int64 is runner 0 (not found).

Answers: a token route -> 200 {"token": reg_token}; a lookup -> 200 and
the family's runner object, or the family's JSON 404 (Forgejo
{"message":"runner with ID 7: resource does not exist","url":...}, Gitea
{"message":"Runner not found","url":...,"errors":null}); a delete -> 204
with no body (the record is gone), or that 404; a list -> all records by
id. Runner objects: Forgejo (design, forgejo*, future) id, uuid, owner_id,
repo_id, name, status (offline/idle/active), version, labels [str],
description, ephemeral; Gitea 1.24+ id, name, status (online/offline),
busy, ephemeral, labels [{id,name,type}], and on gitea126 disabled; no uuid
(the record keeps one for runner_works). Dict overrides are applied last.

The runners' own protocol (FORGE-API.md, "Registering a runner from the
host"), on every flavour unless actions=False (then its paths are the
plain-text 404): connect-go's unary JSON, POST
/api/actions/runner.v1.RunnerService/<Method> (and ping.v1.PingService/Ping,
which answers {"data":"Hello, <data>!"}). It is not under /api/v1 and the
admin auth does not run there: an Authorization header is neither needed
nor looked at. In connect-go's order:

    not POST                       405, Allow: POST, no body (any path of
                                   the two services)
    unknown method or service      the plain-text 404
    Content-Type not JSON          415, no body, an Accept-Post header
                                   ("application/json" in any case, with at
                                   most charset=utf-8, is JSON)
    Connect-Protocol-Version not 1 400 invalid_argument (absent is fine)
    body not a message             400 invalid_argument "unmarshal into
                                   *runnerv1.XRequest: ..." (empty, not an
                                   object, a field of the wrong type, a
                                   duplicate field; unknown fields and nulls
                                   are ignored; JSON or proto field names)

Answers are compact JSON with Content-Type: application/json; errors are
{"code","message"}. Messages, protojson style (int64 as a JSON string,
empty strings, lists and false left out):

    Register {"name","token","version","labels":[names],"ephemeral"}
        no runner credentials needed. A new record exactly as register()
        makes it (labels = the names given, version as sent; ephemeral
        only where the forge honours it: gitea124, gitea126, forgejo15,
        forgejo16, future) -> 200 {"runner":{"id":"42","uuid","token",
        "name","version","labels"[, "ephemeral":true]}}. The registration
        token stays valid. A bad, reset or placeholder token, or an empty
        token or name: Forgejo 11+ (forgejo11, forgejo15, forgejo16,
        future) 400 {"code":"invalid_argument","message":"runner
        registration token not found"} ("... has been invalidated, please
        use the latest one", "missing runner token, name"); Gitea and
        design (a Forgejo 7 to 10) 500 {"code":"unknown","message":...}.
    Declare {"version","labels":[names]}, FetchTask {"tasksVersion"},
    UpdateTask, UpdateLog
        need the headers x-runner-uuid and x-runner-token of a record a
        runner registered; otherwise (missing headers too) Forgejo 11+ 401
        {"code":"unauthenticated","message":"unregistered runner"}, the
        others 500 {"code":"unknown","message":"rpc error: code =
        Unauthenticated desc = unregistered runner"}. Known credentials put
        the runner online ("idle"). Declare sets the record's labels and
        version (declare()) -> 200 {"runner":{"id","uuid","token","name",
        "version","labels"}}; FetchTask -> 200 {} (no task; tests assert it
        is never called: f.requests); UpdateTask, UpdateLog -> 200 {}.

Scripted responses (Forge.script) replace the normal answer to the next
request of a kind: "token" (every token route, the POST one too), "lookup",
"delete", "list", "register" (Forgejo 15's admin POST
/admin/actions/runners; routes the flavour has, with the method they
take; auth still applies), "proto-register" (the protocol's Register),
"declare", "fetch-task", "proto" (UpdateTask, UpdateLog, Ping) (these four
once the request got past the method, content type and protocol version
checks, before its message is read; a dict body is sent as
application/json) or "any" (every request, before auth and routing). A
response is a dict with any of these keys:

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

The handler sets TCP_NODELAY on every TCP connection, as Go's net/http does.
Run as a program it serves until SIGTERM/SIGINT; see --help.
Set FORGE_DEBUG=1 to log requests and handler errors to stderr.
"""

import argparse
import collections
import http.server
import json
import os
import re
import secrets
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
import uuid as uuidlib

API_PREFIX = "/api/v1"
TLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tls")
UNIX_SOCKET_URL = "http://forge.invalid"

DEFAULT_ADMIN_TOKEN = "adm_0123456789abcdef0123456789abcdef0123"
DEFAULT_REG_TOKEN = "A" * 40

# Routes: (method, path under /api/v1, kind). "{id}" is one path segment.
_T_ADMIN = ("GET", "/admin/runners/registration-token", "token")
_T_ACTIONS = ("GET", "/admin/actions/runners/registration-token", "token")
_T_POST = ("POST", "/admin/actions/runners/registration-token", "token")
_L_DESIGN = ("GET", "/admin/runners/{id}", "lookup")
_L_ACTIONS = ("GET", "/admin/actions/runners/{id}", "lookup")
_D_ACTIONS = ("DELETE", "/admin/actions/runners/{id}", "delete")
_LIST = ("GET", "/admin/actions/runners", "list")
_REGISTER = ("POST", "/admin/actions/runners", "register")

# flavour -> (family, routes)
FLAVOURS = {
    "design": ("forgejo", (_T_ADMIN, _L_DESIGN)),
    "forgejo11": ("forgejo", (_T_ADMIN,)),
    "forgejo15": ("forgejo", (_T_ADMIN, _T_ACTIONS, _LIST, _REGISTER,
                              _L_ACTIONS, _D_ACTIONS)),
    "forgejo16": ("forgejo", (_T_ADMIN, _T_ACTIONS, _LIST, _REGISTER,
                              _L_ACTIONS, _D_ACTIONS)),
    "gitea122": ("gitea", (_T_ADMIN,)),
    "gitea124": ("gitea", (_T_ADMIN, _T_POST, _LIST, _L_ACTIONS,
                           _D_ACTIONS)),
    "gitea126": ("gitea", (_T_POST, _LIST, _L_ACTIONS, _D_ACTIONS)),
    "future": ("forgejo", (_T_ACTIONS, _L_ACTIONS)),
}
ALIASES = {"v7": "forgejo11", "f15": "forgejo15"}

# The runners' own protocol (connect-go, JSON), under /api/actions: path
# after the prefix -> script kind. Register, Declare and FetchTask are what
# FORGE-API.md names; the others are the rest of runner.v1.RunnerService
# and the ping service, answered plausibly.
ACTIONS_PREFIX = "/api/actions"
RUNNER_SERVICE = "/runner.v1.RunnerService/"
PING_SERVICE = "/ping.v1.PingService/"
PROCEDURES = {
    RUNNER_SERVICE + "Register": "proto-register",
    RUNNER_SERVICE + "Declare": "declare",
    RUNNER_SERVICE + "FetchTask": "fetch-task",
    RUNNER_SERVICE + "UpdateTask": "proto",
    RUNNER_SERVICE + "UpdateLog": "proto",
    PING_SERVICE + "Ping": "proto",
}
# Forges whose runner service answers connect errors with their own codes
# (Forgejo 11 and later); the others (Gitea, and Forgejo 7 to 10, which the
# design flavour stands for) return plain Go errors: 500 "unknown".
CONNECT_CODES = ("forgejo11", "forgejo15", "forgejo16", "future")
# Forges whose Register honours "ephemeral" (Gitea 1.24+, Forgejo 15+).
EPHEMERAL = ("forgejo15", "forgejo16", "gitea124", "gitea126", "future")
PROTO_JSON_TYPE = "application/json"     # connect-go, answers and errors
ACCEPT_POST = ("application/grpc, application/grpc+json, application/grpc+proto, "
               "application/grpc-web, application/grpc-web+json, "
               "application/grpc-web+proto, application/json, "
               "application/proto")

SCRIPT_KINDS = ("lookup", "token", "delete", "list", "register",
                "proto-register", "declare", "fetch-task", "proto", "any")
SCRIPT_MODES = (None, "hang", "endless", "close")
SCRIPT_KEYS = {"status", "body", "headers", "delay", "mode", "reset",
               "chunk", "interval"}

JSON_TYPE = "application/json;charset=utf-8"  # what Forgejo's ctx.JSON sends
TEXT_TYPE = "text/plain; charset=utf-8"       # what Go's http.Error sends

# What act_runner and forgejo-runner write into .runner.
RUNNER_WARNING = ("This file is automatically generated by act-runner. Do not "
                  "edit it manually unless you know what you are doing. "
                  "Removing this file will cause act runner to re-register as "
                  "a new runner.")

STATUSES = {"offline": "offline", "idle": "idle", "active": "active",
            "online": "idle", "busy": "active"}

# Go's strconv.ParseInt(s, 10, 64); both forges read an unparsable id as 0.
_INT64 = re.compile(r"[+-]?[0-9]+\Z")


class RegisterError(Exception):
    """register() refused: the forge is down or the token is not valid."""


class DeclareError(Exception):
    """declare() refused: "forge down" or "unregistered runner"."""


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


def new_token():
    """A fresh registration token, as newer Forgejo makes them (43 chars of
    [A-Za-z0-9_-])."""
    return secrets.token_urlsafe(32)


def family_of(flavour):
    """"forgejo" or "gitea" for a flavour name (aliases too)."""
    return FLAVOURS[ALIASES.get(flavour, flavour)][0]


class Runner:
    """A runner record the forge keeps.

    status is in Forgejo's words: "offline", "idle" or "active". `token` is
    the runner's own secret (None for records a test put in by hand: no
    daemon can use those). `fields` override the API object, as a dict entry
    in Forge.runners does.
    """

    def __init__(self, uuid, name, labels=(), token=None, status="offline",
                 version="v11.1.1", description="", ephemeral=False,
                 owner_id=0, repo_id=0, disabled=False, fields=None):
        self.uuid = uuid
        self.name = name
        self.labels = list(labels)
        self.token = token
        self.status = STATUSES[status]
        self.version = version
        self.description = description
        self.ephemeral = ephemeral
        self.owner_id = owner_id
        self.repo_id = repo_id
        self.disabled = disabled
        self.fields = dict(fields or {})

    def __repr__(self):
        return "Runner(uuid=%r, name=%r, status=%r)" % (self.uuid, self.name,
                                                        self.status)


def _as_runner(runner_id, value):
    """A Runner for an entry of Forge.runners (a new one for str/dict)."""
    if isinstance(value, Runner):
        return value
    if isinstance(value, dict):
        status = STATUSES.get(value.get("status"), "idle")
        if value.get("busy") is True and status == "idle":
            status = "active"
        name = value.get("name")
        return Runner(value.get("uuid"),
                      name if isinstance(name, str) else
                      "runner-%d" % runner_id,
                      labels=["native:host"], status=status, fields=value)
    return Runner(value, "runner-%d" % runner_id, labels=["native:host"],
                  status="idle")


def runner_object(runner_id, value, family="forgejo", disabled_field=False):
    """The runner object a lookup returns.

    `value` is an entry of Forge.runners: a uuid (str), a dict whose keys
    override (or add to) the default fields, or a Runner.
    """
    runner = _as_runner(runner_id, value)
    if family == "gitea":
        obj = {
            "id": runner_id,
            "name": runner.name,
            "status": "offline" if runner.status == "offline" else "online",
            "busy": runner.status == "active",
            "ephemeral": runner.ephemeral,
            "labels": [{"id": i, "name": label, "type": "custom"}
                       for i, label in enumerate(runner.labels)],
        }
        if disabled_field:
            obj["disabled"] = runner.disabled
    else:
        obj = {
            "id": runner_id,
            "uuid": runner.uuid,
            "owner_id": runner.owner_id,
            "repo_id": runner.repo_id,
            "name": runner.name,
            "status": runner.status,
            "version": runner.version,
            "labels": list(runner.labels),
            "description": runner.description,
            "ephemeral": runner.ephemeral,
        }
    obj.update(runner.fields)
    return obj


# connect-go's HTTP status per error code (the codes used here).
CONNECT_STATUS = {"invalid_argument": 400, "unauthenticated": 401,
                  "not_found": 404, "unknown": 500, "internal": 500}

# procedure -> (message type, {JSON name: (proto name, kind)})
_STR, _BOOL, _STRS, _I64 = "string", "bool", "repeated string", "int64"
PROTO_MESSAGES = {
    RUNNER_SERVICE + "Register": ("runnerv1.RegisterRequest", {
        "name": ("name", _STR), "token": ("token", _STR),
        "agentLabels": ("agent_labels", _STRS),
        "customLabels": ("custom_labels", _STRS),
        "version": ("version", _STR), "labels": ("labels", _STRS),
        "ephemeral": ("ephemeral", _BOOL)}),
    RUNNER_SERVICE + "Declare": ("runnerv1.DeclareRequest", {
        "version": ("version", _STR), "labels": ("labels", _STRS)}),
    RUNNER_SERVICE + "FetchTask": ("runnerv1.FetchTaskRequest", {
        "tasksVersion": ("tasks_version", _I64)}),
    RUNNER_SERVICE + "UpdateTask": ("runnerv1.UpdateTaskRequest", {}),
    RUNNER_SERVICE + "UpdateLog": ("runnerv1.UpdateLogRequest", {}),
    PING_SERVICE + "Ping": ("pingv1.PingRequest", {"data": ("data", _STR)}),
}


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError('duplicate field "%s"' % key)
        seen[key] = value
    return seen


def _proto_decode(body, fields):
    """protojson.Unmarshal as connect-go calls it (DiscardUnknown): the
    known fields by JSON name (null ones left out); ValueError with
    protojson's kind of message for anything else."""
    if body is None:
        raise ValueError("unreadable body")
    if not body:
        raise ValueError("zero-length payload is not a valid JSON object")
    try:
        value = json.loads(body.decode("utf-8"),
                           object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ValueError("invalid UTF-8")
    except ValueError as e:
        raise ValueError("proto: syntax error: %s" % e)
    if not isinstance(value, dict):
        raise ValueError("proto: syntax error: unexpected token %s"
                         % json.dumps(value)[:20])
    names = {}
    for json_name, (proto_name, kind) in fields.items():
        names[json_name] = names[proto_name] = (json_name, kind)
    out = {}
    for key, item in value.items():
        if key not in names or item is None:
            continue                            # unknown: discarded
        json_name, kind = names[key]
        if json_name in out:
            raise ValueError('duplicate field "%s"' % key)
        ok = {_STR: isinstance(item, str),
              _BOOL: isinstance(item, bool),
              _STRS: isinstance(item, list)
              and all(isinstance(x, str) for x in item),
              _I64: (isinstance(item, int) and not isinstance(item, bool))
              or (isinstance(item, str) and _INT64.match(item) is not None)
              }[kind]
        if not ok:
            raise ValueError("proto: invalid value for %s field %s: %s"
                             % (kind, json_name, json.dumps(item)[:40]))
        out[json_name] = int(item) if kind == _I64 else item
    return out


def _proto_omit(message):
    """protojson leaves out empty strings, empty lists, false and 0."""
    return {key: value for key, value in message.items()
            if value not in ("", [], False, 0, None)}


def _is_json_type(value):
    """connect-go's JSON codec takes "application/json", in any case, with
    at most the parameter charset=utf-8."""
    if value is None:
        return False
    base, _, params = value.partition(";")
    if base.strip().lower() != "application/json":
        return False
    params = [p.strip() for p in params.split(";") if p.strip()]
    if not params:
        return True
    if len(params) > 1:
        return False
    name, _, charset = params[0].partition("=")
    return name.strip().lower() == "charset" and \
        charset.strip().strip('"').lower() == "utf-8"


def _match(pattern, route):
    """The {id} segment of `route` if it matches `pattern` (True if the
    pattern has none), else None."""
    want, got = pattern.split("/"), route.split("/")
    if len(want) != len(got):
        return None
    found = True
    for w, g in zip(want, got):
        if w == "{id}":
            if not g:
                return None
            found = g
        elif w != g:
            return None
    return found


def _priority(pattern):
    # chi tries a static segment before a parameter at each level.
    return tuple(seg == "{id}" for seg in pattern.split("/"))


class Forge:
    """A fake forge: configure, start(), point the client at .url, stop()."""

    def __init__(self, flavour="design", admin_token=DEFAULT_ADMIN_TOKEN,
                 nonadmin_token=None, reg_token=DEFAULT_REG_TOKEN,
                 runners=None, unix_socket=None, tls=False, port=0,
                 scopeless_token=None, log_path=None, host="127.0.0.1",
                 actions=True):
        if ALIASES.get(flavour, flavour) not in FLAVOURS:
            raise ValueError("unknown flavour %r" % (flavour,))
        self.flavour = flavour
        self.family, self._routes = FLAVOURS[ALIASES.get(flavour, flavour)]
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
        self.actions = actions  # Actions enabled: the runner protocol is served

        self._lock = threading.Lock()
        self._data = threading.RLock()   # runners, reg_token, _next_id
        self._next_id = 1
        self._old_tokens = set()     # reset by an admin: "invalidated"
        self._scripts = {kind: collections.deque() for kind in SCRIPT_KINDS}
        self._connections = 0
        self._fds = {}               # connection serial -> socket fd
        self._threads = set()
        self._stopping = threading.Event()
        self._state_lock = threading.Lock()
        self._serving = False
        self._started = False
        self._stopped = False
        self._down = False
        self._reserved = None        # the port, bound but not listening
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

    @property
    def is_up(self):
        """Started, not stopped and not down (a delayed start counts as up)."""
        return self._started and not self._stopped and not self._down

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
        self._server = self._new_server()
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
                    self._activate_tcp()
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
        self._halt(timeout)
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        if self._bound_unix:
            _remove_socket_file(self.unix_socket)

    def down(self, timeout=2.0):
        """The forge goes away, its state kept; returns self.

        Every connection is dropped and new ones are refused (the TCP port
        stays bound without listening, so nothing else gets it; a Unix
        socket file stays behind, stale). register() raises and
        runner_works() says "forge down" until up().
        """
        with self._state_lock:
            if not self._started or self._stopped:
                raise RuntimeError("down() needs a started forge")
            if self._down:
                return self
            self._down = True
        self._halt(timeout)
        if not self.unix_socket:
            self._reserved = socket.socket(self._server.address_family,
                                           socket.SOCK_STREAM)
            # The dropped connections sit in TIME_WAIT on this port.
            self._reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,
                                      1)
            self._reserved.bind((self.host, self.port))
        return self

    def up(self):
        """The forge comes back on the same port or socket; returns self."""
        with self._state_lock:
            if self._stopped or not self._started:
                raise RuntimeError("up() needs a started forge")
            if not self._down:
                return self
            self._stopping = threading.Event()
            self._server = self._new_server()
            try:
                if self.unix_socket:
                    self._bind_unix()
                else:
                    self._server.socket.close()
                    self._server.socket = self._reserved
                    self._reserved = None
                    self._server.server_address = \
                        self._server.socket.getsockname()
                    self._activate_tcp()
            except BaseException:
                self._server.server_close()
                raise
            self._down = False
            self._thread = threading.Thread(target=self._serve, args=(0,),
                                            name="forge", daemon=True)
            self._thread.start()
        return self

    def __enter__(self):
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- state -------------------------------------------------------------

    def reset_token(self):
        """An admin resets the registration token; returns the new one."""
        with self._data:
            if self.reg_token:
                self._old_tokens.add(self.reg_token)
            self.reg_token = new_token()
            return self.reg_token

    def wipe(self):
        """The forge is set up again from nothing: no runners, ids from 1,
        a new registration token (returned)."""
        with self._data:
            self.runners.clear()
            self._next_id = 1
            token = self.reset_token()
            self._old_tokens.clear()
            return token

    def register(self, token, name, labels=(), address=None,
                 ephemeral=False, version=None):
        """Register a runner as the runner's `register` command does.

        Returns the `.runner` content; raises RegisterError when the forge
        is down or `token` is not the current registration token. `labels`
        are what `.runner` gets and, as given, the record's labels.
        """
        if not self.is_up:
            raise RegisterError("forge down: cannot reach %s" % self.url)
        runner_id, record = self._register_record(token, name, labels,
                                                  version, ephemeral)
        registration = {
            "WARNING": RUNNER_WARNING,
            "id": runner_id,
            "uuid": record.uuid,
            "name": record.name,
            "token": record.token,
            "address": self.url if address is None else address,
            "labels": list(record.labels),
        }
        if self.family == "gitea":
            registration["ephemeral"] = bool(ephemeral)
        return registration

    def _register_record(self, token, name, labels, version, ephemeral):
        """The forge's side of Register, for register() and the protocol's
        Register: (id, Runner), or RegisterError with the forge's message."""
        with self._data:
            if not token or token == "placeholder" \
                    or token != self.reg_token:
                if token in self._old_tokens:
                    raise RegisterError("runner registration token has been "
                                        "invalidated, please use the latest "
                                        "one")
                raise RegisterError("runner registration token not found")
            return self._create(name, labels, ephemeral=ephemeral,
                                version=version)

    def declare(self, uuid, token, labels=(), version=""):
        """What Declare (and the credential check of every runner method
        but Register) does to the forge's state: the record with this uuid
        and runner secret gets these labels and version and shows online
        ("idle"); returns it. Raises DeclareError("forge down") or
        DeclareError("unregistered runner") (unknown uuid, another secret,
        or a record no runner registered)."""
        if not self.is_up:
            raise DeclareError("forge down")
        with self._data:
            record = self._authenticate_runner(uuid, token)
            if record is None:
                raise DeclareError("unregistered runner")
            record.labels = list(labels)
            record.version = version
            record.status = "idle" if record.status == "offline" \
                else record.status
            record.fields.pop("status", None)
            record.fields.pop("busy", None)
            return record

    def _authenticate_runner(self, uuid, token):
        """The Runner with this uuid and runner secret (str), or None. A
        plain uuid or dict entry is converted to a Runner in place."""
        if not isinstance(uuid, str) or not isinstance(token, str) \
                or not uuid:
            return None
        for key, record in list(self.runners.items()):
            if not isinstance(record, Runner):
                record = self.runners[key] = _as_runner(_parse_id(str(key)),
                                                        record)
            if record.uuid != uuid:
                continue
            if record.token is None:
                return None
            if secrets.compare_digest(_encode(record.token), _encode(token)):
                return record
            return None
        return None

    def runner_works(self, runner):
        """(True, "ok") if a daemon with this `.runner` content (a dict)
        would be accepted by the forge, else (False, reason)."""
        if not self.is_up:
            return False, "forge down"
        if not isinstance(runner, dict):
            return False, "bad .runner (not a JSON object)"
        runner_id = runner.get("id")
        if isinstance(runner_id, bool) or not isinstance(runner_id, int):
            return False, "bad .runner (no integer id)"
        with self._data:
            key = self._key(runner_id)
            if key is None:
                return False, "unregistered runner (no runner %d)" % runner_id
            record = self.runners[key]
            if not isinstance(record, Runner) or record.token is None:
                return False, ("unregistered runner (runner %d was not "
                               "registered by a runner)" % runner_id)
            if record.uuid != runner.get("uuid"):
                return False, ("unregistered runner (runner %d has another "
                               "uuid)" % runner_id)
            if not secrets.compare_digest(_encode(record.token),
                                          _encode(str(runner.get("token")))):
                return False, ("unregistered runner (runner %d has another "
                               "token)" % runner_id)
        return True, "ok"

    def record(self, runner_id):
        """The Runner with this id, or None (an entry given as a uuid or a
        dict is converted to a Runner in place)."""
        with self._data:
            key = self._key(runner_id)
            if key is None:
                return None
            value = self.runners[key]
            if not isinstance(value, Runner):
                value = self.runners[key] = _as_runner(runner_id, value)
            return value

    def set_status(self, runner_id, status):
        """Set a runner's status: offline, idle, active, online or busy."""
        if status not in STATUSES:
            raise ValueError("unknown status %r" % (status,))
        with self._data:
            record = self.record(runner_id)
            if record is None:
                raise KeyError(runner_id)
            record.status = STATUSES[status]
            record.fields.pop("status", None)
            record.fields.pop("busy", None)

    def status(self, runner_id):
        """"offline", "idle" or "active"; None if there is no such runner."""
        with self._data:
            key = self._key(runner_id)
            if key is None:
                return None
            return _as_runner(runner_id, self.runners[key]).status

    def ghosts(self, current_id=None, name=None):
        """Ids of offline runners other than `current_id` (named `name`, if
        given), in order."""
        with self._data:
            found = []
            for key, value in self.runners.items():
                runner_id = _parse_id(str(key))
                runner = _as_runner(runner_id, value)
                if (str(key) != str(current_id) and runner.status == "offline"
                        and (name is None or runner.name == name)):
                    found.append(runner_id)
            return sorted(found)

    # -- serving ---------------------------------------------------------

    def _make_tls_context(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(TLS_DIR, "server.crt"),
                                os.path.join(TLS_DIR, "server.key"))
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _new_server(self):
        if self.unix_socket:
            return _UnixServer(self, self.unix_socket)
        return _TCPServer(self, (self.host, self.port))

    def _activate_tcp(self):
        # Listening now: nobody can bind the port beside us any more. The
        # accepted connections inherit SO_REUSEADDR, which lets down() bind
        # the port again while they sit in TIME_WAIT.
        self._server.socket.setsockopt(socket.SOL_SOCKET,
                                       socket.SO_REUSEADDR, 1)
        self._server.server_activate()

    def _bind_unix(self):
        _remove_socket_file(self.unix_socket)
        self._server.server_bind()
        self._bound_unix = True
        self._server.server_activate()

    def _serve(self, delay):
        stopping = self._stopping
        if delay and stopping.wait(delay):
            return
        with self._state_lock:
            if stopping.is_set():
                return
            try:
                if self.unix_socket and not self._bound_unix:
                    self._bind_unix()
                elif delay:
                    self._activate_tcp()
            except OSError as e:
                sys.stderr.write("forge: cannot listen: %s\n" % e)
                return
            self._serving = True
        self._server.serve_forever(poll_interval=0.05)

    def _halt(self, timeout):
        """Stop listening, drop every connection, join the threads."""
        with self._state_lock:
            self._stopping.set()
            serving, self._serving = self._serving, False
        if serving:
            self._server.shutdown()
        with self._lock:
            # Under the lock: a connection leaves _fds before its fd closes.
            for fd in self._fds.values():
                _drop(fd)
        self._server.server_close()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in [self._thread] + threads:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

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
                  "headers": names, "conn": serial, "status": None,
                  "body": None}
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

    def _route(self, method, path):
        """(kind, runner id or None, allowed methods or None).

        kind None with allowed None: no route has this path (plain 404);
        kind None with a list: the path exists for those methods only (405).
        """
        if not path.startswith(API_PREFIX + "/"):
            return None, None, None
        route = path[len(API_PREFIX):]
        nodes = collections.OrderedDict()
        for want_method, pattern, kind in self._routes:
            found = _match(pattern, route)
            if found is not None:
                nodes.setdefault(pattern, []).append((want_method, kind,
                                                      found))
        allowed = []
        for pattern in sorted(nodes, key=_priority):
            for want_method, kind, found in nodes[pattern]:
                if want_method == method:
                    runner_id = None if found is True else _parse_id(found)
                    return kind, runner_id, None
                allowed.append(want_method)
        if not allowed:
            return None, None, None
        return None, None, sorted(set(allowed))

    def _key(self, runner_id):
        """The key of runner `runner_id` in self.runners, or None."""
        for key in list(self.runners):
            if str(key) == str(runner_id):
                return key
        return None

    def _not_found(self, runner_id):
        if self.family == "gitea":
            return 404, {"message": "Runner not found",
                         "url": self._swagger_url(), "errors": None}
        return 404, {"message": "runner with ID %d: resource does not exist"
                                % runner_id, "url": self._swagger_url()}

    def _object(self, runner_id, value):
        return runner_object(runner_id, value, self.family,
                             disabled_field=self._gitea126())

    def _gitea126(self):
        return ALIASES.get(self.flavour, self.flavour) == "gitea126"

    def _create(self, name, labels, ephemeral=False, description="",
                version=None):
        """A new record with the next id; (id, Runner). `version` None: the
        family's usual runner version."""
        with self._data:
            ids = [_parse_id(str(key)) for key in self.runners]
            runner_id = max([self._next_id] + [i + 1 for i in ids])
            self._next_id = runner_id + 1
            if version is None:
                version = "v0.2.11" if self.family == "gitea" else "v11.1.1"
            record = Runner(str(uuidlib.uuid4()), name, labels,
                            token=secrets.token_hex(20), status="offline",
                            version=version,
                            description=description, ephemeral=ephemeral)
            self.runners[runner_id] = record
            return runner_id, record

    def _answer(self, kind, runner_id, body):
        """(status, JSON value or None) of a request the flavour routes."""
        with self._data:
            if kind == "token":
                return 200, {"token": self.reg_token}
            if kind == "list":
                objects = sorted(
                    (self._object(_parse_id(str(key)), value)
                     for key, value in self.runners.items()),
                    key=lambda obj: obj.get("id", 0)
                    if isinstance(obj.get("id"), int) else 0)
                if self.family == "gitea":
                    return 200, {"runners": objects,
                                 "total_count": len(objects)}
                return 200, objects
            if kind == "register":
                return self._register_route(body)
            key = self._key(runner_id)
            if key is None:
                return self._not_found(runner_id)
            if kind == "delete":
                del self.runners[key]
                return 204, None
            return 200, self._object(runner_id, self.runners[key])

    # -- the runners' own protocol -----------------------------------------

    def _connect_codes(self):
        return ALIASES.get(self.flavour, self.flavour) in CONNECT_CODES

    def _refused(self, code, message):
        """A refusal of the runner service: Forgejo 11+ says `code`
        ("invalid_argument" 400, "unauthenticated" 401); the others return
        a plain Go error, which connect-go sends as 500 "unknown" (a gRPC
        status error, as Gitea's interceptor makes, keeps its text)."""
        if self._connect_codes():
            return CONNECT_STATUS[code], {"code": code, "message": message}
        if code == "unauthenticated":
            message = "rpc error: code = Unauthenticated desc = " + message
        return 500, {"code": "unknown", "message": message}

    def _proto_answer(self, kind, procedure, headers, body):
        """(status, JSON value) of a well-formed runner-protocol request."""
        message, fields = PROTO_MESSAGES[procedure]
        try:
            request = _proto_decode(body, fields)
        except ValueError as e:
            return 400, {"code": "invalid_argument",
                         "message": "unmarshal into *%s: %s" % (message, e)}
        if procedure == PING_SERVICE + "Ping":
            return 200, _proto_omit({"data": "Hello, %s!"
                                     % request.get("data", "")})
        with self._data:
            if kind == "proto-register":
                return self._proto_register(request)
            record = self._authenticate_runner(
                headers.get("x-runner-uuid", ""),
                headers.get("x-runner-token", ""))
            if record is None:
                return self._refused("unauthenticated", "unregistered runner")
            if record.status == "offline":
                record.status = "idle"          # last_online: now
                record.fields.pop("status", None)
                record.fields.pop("busy", None)
            if kind == "declare":
                record = self.declare(record.uuid, record.token,
                                      request.get("labels", []),
                                      request.get("version", ""))
                return 200, {"runner": self._proto_runner(record)}
            return 200, {}                      # FetchTask: no task for you

    def _proto_register(self, request):
        token, name = request.get("token", ""), request.get("name", "")
        if not token or not name:
            return self._refused("invalid_argument",
                                 "missing runner token, name")
        ephemeral = request.get("ephemeral", False) and \
            ALIASES.get(self.flavour, self.flavour) in EPHEMERAL
        try:
            _, record = self._register_record(
                token, name, request.get("labels", []),
                request.get("version", ""), ephemeral)
        except RegisterError as e:
            return self._refused("invalid_argument", str(e))
        runner = self._proto_runner(record)
        if record.ephemeral:
            runner["ephemeral"] = True
        return 200, {"runner": runner}

    def _proto_runner(self, record):
        """runner.v1.Runner as protojson writes it: int64 id as a string,
        empty fields left out."""
        runner_id = next(_parse_id(str(key)) for key, value
                         in self.runners.items() if value is record)
        return _proto_omit({"id": str(runner_id), "uuid": record.uuid,
                            "token": record.token, "name": record.name,
                            "version": record.version,
                            "labels": list(record.labels)})

    def _register_route(self, body):
        """Forgejo 15's POST /admin/actions/runners {"name": ...}."""
        try:
            options = json.loads(body or b"null")
        except ValueError:
            options = None
        name = options.get("name") if isinstance(options, dict) else None
        if not isinstance(name, str) or not name:
            return 422, {"message": "[Name]: Required",
                         "url": self._swagger_url()}
        description = options.get("description", "")
        runner_id, record = self._create(
            name, (), ephemeral=options.get("ephemeral") is True,
            description=description if isinstance(description, str) else "")
        return 201, {"id": runner_id, "uuid": record.uuid,
                     "token": record.token}


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
        self.stopping = forge._stopping   # set when this server is halted
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
    """One connection: HTTP/1.1 requests, kept alive until told otherwise.

    TCP_NODELAY is set by the server on every TCP connection before this
    runs (disable_nagle_algorithm would fail on a Unix socket).
    """

    protocol_version = "HTTP/1.1"
    server_version = "forge.py"
    max_body = 1 << 20

    def __init__(self, request, client_address, server, serial):
        self.forge = server.forge
        self.stopping = server.stopping
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
        body = record["body"] = self._read_body()

        scripted = self.forge._next_scripted("any")
        if scripted is not None:
            return self._send_scripted(record, scripted)

        if path.startswith(ACTIONS_PREFIX + "/"):
            # Its own handler: no admin auth (the header is not looked at).
            return self._runner_protocol(record, path, body)

        denied = self.forge._authenticate(self.headers.get("Authorization"))
        if denied is not None:
            return self._send_json(record, *denied)

        kind, runner_id, allowed = self.forge._route(self.command, path)
        if kind is None and allowed is None:
            return self._plain_404(record)
        if kind is None:
            return self._send(record, 405, b"", {"Allow": ", ".join(allowed)})

        scripted = self.forge._next_scripted(kind)
        if scripted is not None:
            return self._send_scripted(record, scripted)
        status, value = self.forge._answer(kind, runner_id, body)
        if value is None:
            return self._send(record, status, b"", {})
        return self._send_json(record, status, value)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _runner_protocol(self, record, path, body):
        """connect-go's unary JSON handler of the runner and ping services,
        in its order: the router (POST only), the procedure, the content
        type, the protocol version, then the message and the method."""
        procedure = path[len(ACTIONS_PREFIX):]
        if not self.forge.actions or not procedure.startswith(
                (RUNNER_SERVICE, PING_SERVICE)):
            return self._plain_404(record)
        if self.command != "POST":
            return self._send(record, 405, b"", {"Allow": "POST"})
        kind = PROCEDURES.get(procedure)
        if kind is None:
            return self._plain_404(record)    # the service's own mux
        if not _is_json_type(self.headers.get("Content-Type")):
            return self._send(record, 415, b"", {"Accept-Post": ACCEPT_POST})
        version = self.headers.get("Connect-Protocol-Version")
        if version is not None and version != "1":
            return self._send_proto(record, 400, {
                "code": "invalid_argument",
                "message": "Connect-Protocol-Version must be \"1\": got %s"
                           % json.dumps(version)})
        scripted = self.forge._next_scripted(kind)
        if scripted is not None:
            return self._send_scripted(record, scripted, PROTO_JSON_TYPE)
        status, value = self.forge._proto_answer(kind, procedure,
                                                 record["headers"], body)
        return self._send_proto(record, status, value)

    def _send_proto(self, record, status, value):
        self._send(record, status, _json_bytes(value),
                   {"Content-Type": PROTO_JSON_TYPE})

    def _plain_404(self, record):
        """The router's default handler (Go's http.NotFound)."""
        return self._send(record, 404, b"404 page not found\n",
                          {"Content-Type": TEXT_TYPE,
                           "X-Content-Type-Options": "nosniff"})

    # -- plumbing --------------------------------------------------------

    def _read_body(self):
        """The request body (bytes; None if unusable, and the connection
        closes after the answer)."""
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.isdigit() or int(length) > self.max_body:
            self.close_connection = True
            return None
        remaining, parts = int(length), []
        while remaining:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                self.close_connection = True
                return None
            parts.append(data)
            remaining -= len(data)
        return b"".join(parts)

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
        # Go sends no Content-Length with a 204 (RFC 9110 forbids it).
        if not names & {"content-length", "transfer-encoding"} \
                and status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, record, status, value):
        self._send(record, status, _json_bytes(value),
                   {"Content-Type": JSON_TYPE})

    def _send_scripted(self, record, response, json_type=JSON_TYPE):
        delay = response.get("delay", 0)
        if delay and self.stopping.wait(delay):
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
            body, headers["Content-Type"] = _json_bytes(body), json_type
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
        while not self.stopping.is_set():
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
            while not self.stopping.is_set():
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                data = chunk
                if interval:
                    self.stopping.wait(interval)
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
        description="Serve a fake Forgejo or Gitea admin API until "
        "SIGTERM/SIGINT. SIGUSR1 takes it down (connections refused, state "
        "kept), SIGUSR2 brings it up again on the same port.")
    parser.add_argument("--flavour",
                        choices=sorted(set(FLAVOURS) | set(ALIASES)),
                        default="design", metavar="NAME",
                        help="which forge (and so which routes) to play: "
                        "%s; aliases v7 = forgejo11, f15 = forgejo15"
                        % ", ".join(FLAVOURS))
    parser.add_argument("--admin-token-file", required=True, metavar="PATH",
                        help="file holding the site-admin token")
    parser.add_argument("--reg-token", default=DEFAULT_REG_TOKEN, metavar="T",
                        help="registration token to hand out until reset")
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
    wanted = collections.deque()     # "down" / "up", acted on by the loop
    signal.signal(signal.SIGUSR1, lambda *_: wanted.append("down"))
    signal.signal(signal.SIGUSR2, lambda *_: wanted.append("up"))

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
    while not done.wait(0.05):
        while wanted:
            change = wanted.popleft()
            getattr(forge, change)()
            sys.stderr.write("forge: %s\n" % change)
            sys.stderr.flush()
    forge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
