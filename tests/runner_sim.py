#!/usr/bin/env python3
"""The NixOS runner module and the runner daemon, emulated in Python.

`services.gitea-actions-runner` starts the runner in the container with an
ExecStartPre script that may delete `.runner` and register again with the
token from `tokenFile`, then runs the daemon, which needs a `.runner` the
forge still knows. This module plays both, step by step from the module's
own text (../shared/nix-eval/shim/nixos/modules/gitea-actions-runner.nix
and gitea-actions-runner-tokenhash.nix; FORGE-API.md, "The NixOS runner
module"), against a stateful tests/forge.py forge. Standard library only.

    import forge, runner_sim

    f = forge.Forge(flavour="forgejo15", ...).start()
    sim = runner_sim.RunnerModule(generation="tokenhash",
                                  container_root=ROOT, token_file=OUTPUT,
                                  forge=f, name="hive",
                                  labels=["native:host"], instance="hive")
    result = sim.boot()
    assert result.works, result.why
    sim.labels = ["native:host", "big:host"]    # before the next boot

RunnerModule(generation, container_root, token_file, forge, name="hive",
labels=("native:host",), instance="hive", url=None)

    generation    "labels": before May 2026. The token reaches the unit via
                  EnvironmentFile= (a `TOKEN=` line; a raw token line sets
                  no variable, so $TOKEN is empty); re-registers when
                  `.runner` is missing or the sorted labels differ from
                  `.labels`; `register --token "$TOKEN"`.
                  "tokenhash": nixpkgs PR 516679 and later. The token file
                  arrives via LoadCredential=; if a line matches
                  `^[[:space:]]*TOKEN=` the value of the last such line is
                  extracted (sed | tail -n1, deprecated form), else the file
                  is the token; also re-registers when the sha256 of that
                  token file differs from `.token-hash`;
                  `register --token-file` (whitespace trimmed).
    container_root  host path of the container's root directory
    token_file    host path of the module's tokenFile (the tool's --output)
    forge         a forge.Forge; register() and runner_works() are used
    name          the runner's name (instance.name)
    labels        the configured labels (a list; may be changed between
                  boots)
    instance      the instance's attribute name: the unit is
                  gitea-runner-<instance>, the state is in
                  /var/lib/gitea-runner/<instance>
    url           instance.url, written as `address` (default forge.url)

Methods and attributes:

    boot() -> BootResult   stop the previous daemon (this name's records go
                  offline), set up the state directories as systemd does,
                  run ExecStartPre, then the daemon
    stop()        the container stops: this name's records go offline
    read_runner() -> dict or None    `.runner` as the daemon reads it
    state_dir     host path of /var/lib/private/gitea-runner/<instance>
    runner_file, labels_file, token_hash_file   host paths in state_dir
    runner_inside "/var/lib/gitea-runner/<instance>/.runner", the path the
                  tool's --runner-file names inside the container

BootResult: works (bool: the daemon runs against the forge), registered
(bool: register was called), register_ok (bool, None if not called),
unit_started (False: the token file was missing or unusable, so systemd
stopped the unit before ExecStartPre), reasons (why it re-registered:
"no .runner", "labels changed", "token hash changed"), why (one line:
"ok", or why the runner does not work), runner (the `.runner` dict after
the boot, or None), log (what the unit would print, without secrets).

Helpers: parse_environment_file(bytes) -> dict (systemd's EnvironmentFile=
parser; ValueError for invalid UTF-8), extract_token_file(bytes) -> (bytes,
deprecated form used) (the tokenhash script's grep/sed/tail), runner_json(dict)
-> str (`.runner` text), in_root(root, path, follow_last=True) -> host path.

The container layout is DynamicUser's: the state is in
<root>/var/lib/private/gitea-runner/<instance>/ and
<root>/var/lib/gitea-runner is the relative symlink private/gitea-runner.
Paths inside the container are resolved in the root (absolute symlinks
start again at the root), as the runner in the container sees them.

Shell details kept: `$(...)` drops trailing newlines and NUL bytes; `.labels`
is written with echo (trailing newline), `.token-hash` with printf '%s' (none);
the bookkeeping files are written even when register fails; `sort` orders
the labels by bytes (the module's sort runs in the unit's locale; both sides
of the comparison come from the same sort, so only the file's bytes differ).
"""

import hashlib
import json
import os
import re

import forge as forgemod

GENERATIONS = ("labels", "tokenhash")

_SPACE = b" \t\n\v\f\r"                     # [[:space:]] in the C locale
_TOKEN_LINE = re.compile(rb"[ \t\n\v\f\r]*TOKEN=")
_GO_SPACE = " \t\n\v\f\r\x85\xa0"            # strings.TrimSpace (Latin-1 part)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class BootResult:
    """What one boot of the runner unit came to."""

    def __init__(self):
        self.works = False
        self.registered = False
        self.register_ok = None
        self.unit_started = True
        self.reasons = []
        self.why = ""
        self.runner = None
        self.log = []

    def __repr__(self):
        return ("BootResult(works=%r, registered=%r, register_ok=%r, "
                "why=%r)" % (self.works, self.registered, self.register_ok,
                             self.why))


def parse_environment_file(data):
    """The variables systemd's EnvironmentFile= sets from `data` (bytes).

    systemd's parse_env_file_internal() state machine: newline-separated
    assignments, `#`/`;` comments, backslash escapes and continuation
    lines, single and double quotes, surrounding whitespace stripped; a
    line without `=` sets nothing; invalid names are dropped; the last
    assignment wins. Raises ValueError for invalid UTF-8 (systemd then
    refuses to start the unit).
    """
    data = data.split(b"\0", 1)[0]          # read as a C string
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("EnvironmentFile is not valid UTF-8")
    newline, whitespace, comments = "\n\r", " \t\n\r", "#;"
    need_escape = "\"\\`$"
    result = {}
    state = "PRE_KEY"
    key, value = [], None
    last_key_ws = last_value_ws = None

    def push():
        k = "".join(key if last_key_ws is None else key[:last_key_ws])
        v = "".join(value or [])
        if _ENV_NAME.match(k):
            result[k] = v

    for c in text:
        if state == "PRE_KEY":
            if c in comments:
                state = "COMMENT"
            elif c not in whitespace:
                state, key, last_key_ws = "KEY", [c], None
        elif state == "KEY":
            if c in newline:
                state, key = "PRE_KEY", []
            elif c == "=":
                state, value, last_value_ws = "PRE_VALUE", None, None
            else:
                if c not in whitespace:
                    last_key_ws = None
                elif last_key_ws is None:
                    last_key_ws = len(key)
                key.append(c)
        elif state == "PRE_VALUE":
            if c in newline:
                push()
                state, key, value = "PRE_KEY", [], None
            elif c == "'":
                state = "SINGLE_QUOTE_VALUE"
            elif c == '"':
                state = "DOUBLE_QUOTE_VALUE"
            elif c == "\\":
                state = "VALUE_ESCAPE"
            elif c not in whitespace:
                state = "VALUE"
                value = (value or []) + [c]
        elif state == "VALUE":
            if c in newline:
                if last_value_ws is not None:
                    value = value[:last_value_ws]
                push()
                state, key, value = "PRE_KEY", [], None
            elif c == "\\":
                state, last_value_ws = "VALUE_ESCAPE", None
            else:
                if c not in whitespace:
                    last_value_ws = None
                elif last_value_ws is None:
                    last_value_ws = len(value)
                value.append(c)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            value = value if value is not None else []
            if c not in newline:
                value.append(c)
        elif state == "SINGLE_QUOTE_VALUE":
            if c == "'":
                state = "PRE_VALUE"
            else:
                value = (value or []) + [c]
        elif state == "DOUBLE_QUOTE_VALUE":
            if c == '"':
                state = "PRE_VALUE"
            elif c == "\\":
                state = "DOUBLE_QUOTE_VALUE_ESCAPE"
            else:
                value = (value or []) + [c]
        elif state == "DOUBLE_QUOTE_VALUE_ESCAPE":
            state = "DOUBLE_QUOTE_VALUE"
            value = value if value is not None else []
            if c in need_escape:
                value.append(c)
            elif c != "\n":
                value.extend(["\\", c])
        elif state == "COMMENT":
            if c == "\\":
                state = "COMMENT_ESCAPE"
            elif c in newline:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "PRE_KEY" if c in newline else "COMMENT"
    if state in ("PRE_VALUE", "VALUE", "VALUE_ESCAPE", "SINGLE_QUOTE_VALUE",
                 "DOUBLE_QUOTE_VALUE", "DOUBLE_QUOTE_VALUE_ESCAPE"):
        if state == "VALUE" and last_value_ws is not None:
            value = value[:last_value_ws]
        push()
    return result


def extract_token_file(credential):
    """What the tokenhash script hands to `register --token-file`: the
    credential itself, or (when a line matches ^[[:space:]]*TOKEN=) the
    output of `sed -n -E 's/^[[:space:]]*TOKEN=//p' | tail -n1`. Returns
    (bytes, deprecated form used)."""
    lines = credential.split(b"\n")
    terminated = [True] * (len(lines) - 1) + [False]
    if lines[-1] == b"":                     # the file ends with a newline
        lines, terminated = lines[:-1], terminated[:-1]
    out = []
    for line, nl in zip(lines, terminated):
        match = _TOKEN_LINE.match(line)
        if match:
            out.append(line[match.end():] + (b"\n" if nl else b""))
    if not out:
        return credential, False
    return _tail_1(b"".join(out)), True


def _tail_1(data):
    """tail -n1: the last line, with its newline if it has one."""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    return data[data.rfind(b"\n", 0, end) + 1:]


def go_trim_space(text):
    return text.strip(_GO_SPACE)


def runner_json(registration):
    """`.runner` as act_runner/forgejo-runner write it: Go's json.Encoder
    with SetIndent("", "  "): two-space indent, HTML characters escaped,
    trailing newline."""
    text = json.dumps(registration, indent=2, ensure_ascii=False)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"),
                          (">", "\\u003e"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text + "\n"


def _cmdsubst(data):
    """$(...) of output `data`: NUL bytes and trailing newlines dropped."""
    return data.replace(b"\0", b"").rstrip(b"\n")


def in_root(root, path, follow_last=True):
    """Host path of container path `path`, symlinks resolved inside `root`
    (an absolute link target starts again at the root, `..` stops there)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved, links = [], 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = os.path.join(root, *(resolved + [part]))
        if os.path.islink(host) and (parts or follow_last):
            links += 1
            if links > 40:
                raise OSError(40, "Too many levels of symbolic links", path)
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] \
                + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


class RunnerModule:
    """services.gitea-actions-runner.instances.<instance> in one container."""

    def __init__(self, generation, container_root, token_file, forge,
                 name="hive", labels=("native:host",), instance="hive",
                 url=None):
        if generation not in GENERATIONS:
            raise ValueError("generation must be one of %s" % (GENERATIONS,))
        self.generation = generation
        self.root = container_root
        self.token_file = token_file
        self.forge = forge
        self.name = name
        self.labels = list(labels)
        self.instance = instance
        self.url = url

    # -- paths -------------------------------------------------------------

    @property
    def instance_dir(self):
        """INSTANCE_DIR inside the container."""
        return "/var/lib/gitea-runner/%s" % self.instance

    @property
    def runner_inside(self):
        return self.instance_dir + "/.runner"

    @property
    def state_dir(self):
        return os.path.join(self.root, "var/lib/private/gitea-runner",
                            self.instance)

    @property
    def runner_file(self):
        return os.path.join(self.state_dir, ".runner")

    @property
    def labels_file(self):
        return os.path.join(self.state_dir, ".labels")

    @property
    def token_hash_file(self):
        return os.path.join(self.state_dir, ".token-hash")

    def _host(self, inside, follow_last=True):
        return in_root(self.root, inside, follow_last)

    def _exists(self, inside):
        """[ -e FILE ]"""
        try:
            return os.path.exists(self._host(inside))
        except OSError:
            return False

    # -- the unit ----------------------------------------------------------

    def stop(self):
        """The container (and so the daemon) stops: every record of this
        name goes offline."""
        self._all_offline()

    def _all_offline(self):
        with self.forge._data:
            for key, value in list(self.forge.runners.items()):
                view = forgemod._as_runner(forgemod._parse_id(str(key)), value)
                if view.name == self.name and view.status != "offline":
                    self.forge.set_status(key, "offline")

    def boot(self):
        """One start of the container's runner unit; a BootResult."""
        self.stop()
        result = BootResult()
        credential = self._load_token_file(result)
        if credential is None:
            result.unit_started = False
            result.runner = self.read_runner()
            return result
        self._state_directories()
        if self.generation == "labels":
            status = self._exec_start_pre_labels(result, credential)
        else:
            status = self._exec_start_pre_tokenhash(result, credential)
        result.runner = self.read_runner()
        if status != 0:
            result.why = "ExecStartPre failed (status %d)" % status
            return result
        self._daemon(result)
        return result

    def _load_token_file(self, result):
        """EnvironmentFile= / LoadCredential= happen before ExecStartPre;
        the bytes of the token file, or None if systemd stops the unit."""
        directive = ("EnvironmentFile=" if self.generation == "labels"
                     else "LoadCredential=")
        try:
            with open(self.token_file, "rb") as fh:
                data = fh.read()
        except OSError as e:
            result.why = "token file unusable, %s failed: %s" % (
                directive, e.strerror)
            result.log.append(result.why)
            return None
        if self.generation == "labels":
            try:
                parse_environment_file(data)
            except ValueError as e:
                result.why = "%s failed: %s" % (directive, e)
                result.log.append(result.why)
                return None
        return data

    def _state_directories(self):
        """StateDirectory= with DynamicUser=true, at every unit start."""
        private = os.path.join(self.root, "var/lib/private")
        os.makedirs(private, exist_ok=True)
        os.chmod(private, 0o700)
        target = os.path.join(private, "gitea-runner")
        link = os.path.join(self.root, "var/lib/gitea-runner")
        if os.path.isdir(link) and not os.path.islink(link) \
                and not os.path.lexists(target):
            os.rename(link, target)      # a non-dynamic state dir migrates
        os.makedirs(target, exist_ok=True)
        if os.path.islink(link):
            if os.readlink(link) != "private/gitea-runner":
                os.unlink(link)
        if not os.path.lexists(link):
            os.symlink("private/gitea-runner", link)
        if self.generation == "tokenhash":   # StateDirectory=gitea-runner/<n>
            os.makedirs(os.path.join(target, self.instance), exist_ok=True)

    def _labels_wanted(self):
        # echo '<labels joined by \n>' | sort, inside $(...)
        lines = "\n".join(self.labels).split("\n")
        out = "".join(line + "\n" for line in sorted(
            lines, key=lambda s: s.encode("utf-8", "surrogateescape")))
        return _cmdsubst(out.encode("utf-8", "surrogateescape"))

    def _cat(self, inside, missing):
        """$(cat FILE 2>/dev/null || echo MISSING)."""
        try:
            with open(self._host(inside), "rb") as fh:
                return _cmdsubst(fh.read())
        except OSError:
            return missing

    def _bookkeeping(self, result, inside, data):
        """`... > FILE` in the script; the shell's status."""
        try:
            with open(self._host(inside), "wb") as fh:
                fh.write(data)
            return 0
        except OSError as e:
            result.log.append("%s: %s" % (inside, e.strerror))
            return 1

    def _remove_runner(self, result):
        """rm -v "$INSTANCE_DIR/.runner" || true"""
        path = self._host(self.runner_inside, follow_last=False)
        try:
            os.unlink(path)
            result.log.append("removed '%s'" % self.runner_inside)
        except OSError as e:
            result.log.append("rm: cannot remove '%s': %s"
                              % (self.runner_inside, e.strerror))

    def _register(self, result, token):
        """act_runner register --no-interactive ...; True if it wrote
        .runner."""
        result.registered = True
        labels = ",".join(self.labels)
        labels = labels.split(",") if labels else []
        if not token:
            result.log.append("register: token is empty")
            result.register_ok = False
            return False
        try:
            registration = self.forge.register(token, self.name, labels,
                                               address=self.url)
        except forgemod.RegisterError as e:
            result.log.append("register: Failed to register runner: %s" % e)
            result.register_ok = False
            return False
        try:
            # os.Create in the working directory: follows a symlink.
            with open(self._host(self.runner_inside), "w") as fh:
                fh.write(runner_json(registration))
        except OSError as e:
            result.log.append("register: failed to save runner config: %s"
                              % e.strerror)
            result.register_ok = False
            return False
        result.log.append("register: Runner registered successfully.")
        result.register_ok = True
        return True

    def _exec_start_pre_labels(self, result, credential):
        """gitea-actions-runner.nix (before May 2026), line by line."""
        token = parse_environment_file(credential).get("TOKEN", "")
        # export INSTANCE_DIR="$STATE_DIRECTORY/${name}"; mkdir -vp; cd
        try:
            os.makedirs(self._host(self.instance_dir), exist_ok=True)
        except OSError as e:
            result.log.append("mkdir: %s: %s" % (self.instance_dir,
                                                 e.strerror))
        labels_file = self.instance_dir + "/.labels"
        wanted = self._labels_wanted()
        current = self._cat(labels_file, b"0")
        if not self._exists(self.runner_inside):
            result.reasons.append("no .runner")
        if wanted != current:
            result.reasons.append("labels changed")
        if not result.reasons:
            return 0
        self._remove_runner(result)
        self._register(result, token)
        return self._bookkeeping(result, labels_file, wanted + b"\n")

    def _exec_start_pre_tokenhash(self, result, credential):
        """gitea-actions-runner-tokenhash.nix, line by line."""
        token_file, deprecated = extract_token_file(credential)
        if deprecated:
            result.log.append(
                "gitea-actions-runner: providing 'tokenFile' as an "
                "environment file with a TOKEN= assignment is deprecated.")
        hash_file = self.instance_dir + "/.token-hash"
        labels_file = self.instance_dir + "/.labels"
        hash_current = hashlib.sha256(token_file).hexdigest().encode()
        hash_stored = self._cat(hash_file, b"")
        wanted = self._labels_wanted()
        current = self._cat(labels_file, b"0")
        if not self._exists(self.runner_inside):
            result.reasons.append("no .runner")
        if wanted != current:
            result.reasons.append("labels changed")
        if hash_current != hash_stored:
            result.reasons.append("token hash changed")
        if not result.reasons:
            return 0
        self._remove_runner(result)
        token = go_trim_space(token_file.decode("utf-8", "surrogateescape"))
        self._register(result, token)
        self._bookkeeping(result, hash_file, hash_current)
        return self._bookkeeping(result, labels_file, wanted + b"\n")

    # -- the daemon --------------------------------------------------------

    def read_runner(self):
        """`.runner` as the daemon loads it: a dict, or None if it is
        missing or not a registration Go's json.Unmarshal would accept."""
        try:
            with open(self._host(self.runner_inside), "rb") as fh:
                data = fh.read()
            registration = json.loads(data.decode("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(registration, dict):
            return None
        types = {"WARNING": str, "id": int, "uuid": str, "name": str,
                 "token": str, "address": str, "labels": list,
                 "ephemeral": bool}
        for field, kind in types.items():
            value = registration.get(field)
            if value is None:
                continue
            if not isinstance(value, kind) or (kind is int
                                               and isinstance(value, bool)):
                return None
            if kind is list and not all(isinstance(x, str) for x in value):
                return None
        return registration

    def _daemon(self, result):
        """act_runner daemon: load .runner, then declare to the forge."""
        if not self._exists(self.runner_inside):
            result.why = "registration file not found"
            result.log.append("daemon: " + result.why)
            return
        registration = self.read_runner()
        if registration is None:
            result.why = "failed to load registration file"
            result.log.append("daemon: " + result.why)
            return
        works, reason = self.forge.runner_works(registration)
        if not works:
            result.why = reason
            result.log.append("daemon: " + reason)
            return
        runner_id = registration["id"]
        # boot() stopped the previous daemon: the others of this name are
        # offline already.
        self.forge.set_status(runner_id, "idle")
        result.works, result.why = True, "ok"
        result.log.append("daemon: runner %d is online" % runner_id)
