#!/usr/bin/env python3
"""The NixOS runner modules and the runner daemon, emulated in Python.

A runner module starts the runner in the container as a systemd unit with
DynamicUser=: systemd sets up its state directories, hands it the token
file (EnvironmentFile= or LoadCredential=), runs an ExecStartPre script
that may delete `.runner` and register again with that token, then runs
the daemon, which needs a `.runner` it can read as the dynamic user and
whose credentials the forge still knows (its Declare). This module plays
all of it, step by step from the modules' own text (FORGE-API.md, "The
NixOS runner modules" and "The runner's state directory"; the scripts as
`../shared/nix-eval/eval.sh . runner-script --runner-module NAME` prints
them, the units from `runner-unit`), against a stateful tests/forge.py
forge. Standard library only.

    import forge, runner_sim

    f = forge.Forge(flavour="forgejo15", ...).start()
    sim = runner_sim.RunnerModule(generation="forgejo",
                                  container_root=ROOT, token_file=OUTPUT,
                                  forge=f, name="hive",
                                  labels=["native:host"], instance="hive")
    result = sim.boot()
    assert result.works, result.why
    sim.labels = ["native:host", "big:host"]    # before the next boot

RunnerModule(generation, container_root, token_file, forge, name="hive",
labels=("native:host",), instance="hive", url=None, exec_start_pre=True)

    generation    one of GENERATIONS (the kit's names; FORGE-API.md's table):
        "labels"     services.gitea-actions-runner, NixOS 25.11 and older
                     (gitea-actions-runner.nix). Token via EnvironmentFile=
                     (a `TOKEN=` line; a bare token sets no variable, so
                     $TOKEN is empty); re-registers when `.runner` is
                     missing or the sorted labels differ from `.labels`;
                     `act_runner register --token "$TOKEN"`.
        "envhash"    the same module after PR 516679 (NixOS 26.05,
                     gitea-actions-runner-envhash.nix): still
                     EnvironmentFile=, and also re-registers when the
                     sha256 of `printf %s "$TOKEN"` differs from
                     `.token-hash`.
        "tokenhash"  the same module with PR 559010 (open, not merged;
                     gitea-actions-runner-tokenhash.nix): LoadCredential=
                     token:, the file is the token, or (a line matching
                     `^[[:space:]]*TOKEN=`, deprecated, warned) the value
                     of the last such line (sed | tail -n1); also
                     re-registers when the sha256 of that token file
                     differs from `.token-hash`; `register --token-file`
                     (whitespace trimmed).
        "forgejo"    services.forgejo.runner (forgejo-runner.nix), unit
                     forgejo-runner@<escaped name>: LoadCredential=TOKEN:,
                     `--token "$(cat ...)"`, so the whole file (trailing
                     newlines dropped) is the token: `TOKEN=x` is sent as
                     is and fails; re-registers when `.runner` is missing
                     or the sha256 of the sorted labels differs from
                     `.labels.sha256`, never on a token change; bash with
                     errexit, nounset, pipefail; UMask=0077.
    container_root  host path of the container's root directory
    token_file    host path of the module's tokenFile (the tool's --output)
    forge         a forge.Forge; its register() and declare() are used
    name          the runner's name (instance.name)
    labels        the configured labels, full form (a list; may be changed
                  between boots); register and Declare send their names
    instance      the gitea modules' instance attribute name: unit
                  gitea-runner-<instance>, state in
                  /var/lib/gitea-runner/<instance>. The forgejo module
                  names its unit and directory after `name` instead
                  (escapeSystemdPath), as nixpkgs does.
    url           instance.url: `--instance`, written as `address`, and
                  where the daemon must find the forge (default forge.url)
    exec_start_pre  False: the module's ExecStartPre is `lib.mkForce [ ]`
                  (the host registers the runner): the token file is still
                  loaded (a missing one still stops the unit), the state
                  directories are still set up, then only the daemon runs.

Methods and attributes:

    boot() -> BootResult   stop the previous daemon (this name's records go
                  offline), then start the unit as systemd does: load the
                  EnvironmentFile=, set up the state directories and pick
                  the dynamic user, load the credential, run ExecStartPre,
                  set up the directories again and run the daemon
    stop()        the container stops: this name's records go offline
    read_runner() -> dict or None    `.runner` (at runner_inside, read as
                  root) parsed as the daemon would, or None
    unit          "gitea-runner-<instance>" or "forgejo-runner@<name>"
    instance_dir  the instance directory inside the container
    runner_inside instance_dir + "/.runner": the tool's --runner-file
    state_dir     host path of the real instance directory under
                  /var/lib/private/
    runner_file, labels_file (.labels, or .labels.sha256 for forgejo),
    token_hash_file   host paths in state_dir
    uid, gid      the dynamic user of the last boot (None before one)

BootResult: works (bool: the daemon runs against the forge), registered
(bool: register was called), register_ok (bool, None if not called),
unit_started (False: systemd stopped the unit before ExecStartPre: token
file missing or unusable, state directory or credential set-up failed),
status ("ok", or how the unit failed: "resources" (EnvironmentFile=),
"238/STATE_DIRECTORY", "243/CREDENTIALS", "ExecStartPre exit N", or the
daemon's "exit 1"), reasons (why it re-registered: "no .runner", "labels
changed", "token hash changed"), why (one line: "ok", or why the runner does
not work), runner (the `.runner` dict after the boot, or None), uid (the
dynamic user), log (what the unit would print, without secrets).

The dynamic user: as root (can_chown()), a uid of systemd's dynamic range
(61184-65519): the owner of a state directory's private path if it is in
the range, else one derived from the user name (User=, as systemd hashes
it); directories are really chowned to it, and what the scripts and the
daemon do as that user is checked against modes and owners (read, write,
search) before it is done. Unprivileged (also root in a user namespace that maps only our own
uid), everything is ours: our uid and gid are the dynamic user and nothing
is chowned.

Helpers: parse_environment_file(bytes) -> dict (systemd's EnvironmentFile=
parser; ValueError for invalid UTF-8), extract_token_file(bytes) -> (bytes,
deprecated form used) (the tokenhash script's grep/sed/tail), runner_json(dict)
-> str (`.runner` text), in_root(root, path, follow_last=True) -> host path,
escape_systemd_path(str) -> str (nixpkgs' utils.escapeSystemdPath),
label_names(labels) -> [names], can_chown() -> bool, TOKEN_FORMAT (the format each generation
wants from the tool: "env" or "raw"), RUNNER_DIRS (the instance directory
per generation, with "%s" for the instance).

Paths inside the container are resolved in the root (absolute symlinks
start again at the root), as the runner in the container sees them.

Shell details kept: `$(...)` drops trailing newlines and NUL bytes; `.labels`
is written with echo (trailing newline), `.token-hash` and `.labels.sha256`
with printf '%s' (none); the gitea scripts have no `set -e`, so they write
their bookkeeping even when register fails and their status is that of the
last command; the forgejo one stops at the first failing command (a failed
register leaves `.labels.sha256` as it was); `sort` orders the labels by
bytes (the module's sort runs in the unit's locale; both sides of the
comparison come from the same sort, so only the file's bytes differ). Not
modelled: the daemon rewriting `.runner` (act_runner when the labels'
normal form differs), RuntimeDirectory= (the extracted token lives in the
unit's /run, not under the container root), Restart= loops (the next boot
is the next try).
"""

import errno
import hashlib
import json
import os
import re
import stat

import forge as forgemod

GENERATIONS = ("labels", "envhash", "tokenhash", "forgejo")
# What each generation needs in its token file (FORGE-API.md): TOKEN=<value>
# for the EnvironmentFile= ones, the bare token for forgejo, either for
# tokenhash (the bare one is recommended: TOKEN= is deprecated there).
TOKEN_FORMAT = {"labels": "env", "envhash": "env", "tokenhash": "raw",
                "forgejo": "raw"}
RUNNER_DIRS = {"labels": "/var/lib/gitea-runner/%s",
               "envhash": "/var/lib/gitea-runner/%s",
               "tokenhash": "/var/lib/gitea-runner/%s",
               "forgejo": "/var/lib/forgejo-runner/%s"}

DYNAMIC_UIDS = range(61184, 65520)          # systemd's dynamic user range
SERVICE_UMASK = {"labels": 0o022, "envhash": 0o022, "tokenhash": 0o022,
                 "forgejo": 0o077}          # forgejo-runner@.service UMask=
STATE_MODE = 0o755                          # StateDirectoryMode= default
RUNNER_VERSION = {"act_runner": "v0.2.11", "forgejo-runner": "v11.1.1"}

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
        self.status = "ok"
        self.reasons = []
        self.why = ""
        self.runner = None
        self.uid = None
        self.log = []

    def __repr__(self):
        return ("BootResult(works=%r, registered=%r, register_ok=%r, "
                "status=%r, why=%r)" % (self.works, self.registered,
                                        self.register_ok, self.status,
                                        self.why))


class _Failed(Exception):
    """A command failed; errexit (forgejo) ends the script with it."""

    def __init__(self, status=1):
        super().__init__(status)
        self.status = status


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


def walk(root, path, follow_last=True):
    """(host path, directories searched) of container path `path`: as
    in_root(), plus the host path of every directory whose entries were
    looked up on the way (the root, each component's parent, the
    directories a symlink's target crosses), in order."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved, links, searched = [], 0, []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        searched.append(os.path.join(root, *resolved))
        host = os.path.join(root, *(resolved + [part]))
        if os.path.islink(host) and (parts or follow_last):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, "Too many levels of symbolic "
                              "links", path)
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] \
                + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved), searched


def escape_systemd_path(text):
    """nixpkgs' utils.escapeSystemdPath: what the forgejo module makes of
    the runner's name for its unit and directories."""
    path = re.sub("/+", "/", text)
    if path != "/":
        path = path.strip("/")
    out = "".join("\\x%02x" % ord(c) if c in " !\"#$%&'()*;<=>?@[\\]^`{|}~-"
                  else c for c in path)
    if out.startswith("."):
        out = "\\x2e" + out[1:]
    return out.replace("/", "-")


def label_names(labels):
    """What register and Declare send: each label's name, the part before
    its first ':' (act_runner's and forgejo-runner's labels.Parse)."""
    return [label.split(":", 1)[0] for label in labels]


_CHOWN = []


def can_chown():
    """Whether this process can give files to other users (root, not a
    user namespace that maps only our own uid, as `unshare -r` makes)."""
    if not _CHOWN:
        ok = False
        if os.geteuid() == 0:
            import tempfile
            with tempfile.NamedTemporaryFile() as fh:
                try:
                    os.chown(fh.name, DYNAMIC_UIDS.start, DYNAMIC_UIDS.start)
                    ok = True
                except OSError:
                    pass
        _CHOWN.append(ok)
    return _CHOWN[0]


def _systemd_uid_hash(user):
    """The uid systemd tries for a dynamic user when no state directory
    suggests one (it hashes the name; any stable choice in the range)."""
    digest = hashlib.sha256(user.encode()).digest()
    return DYNAMIC_UIDS.start + int.from_bytes(digest[:4], "big") % len(
        DYNAMIC_UIDS)


def _may(st, uid, gid, bit):
    """Whether uid:gid (no supplementary groups) has permission `bit` (4
    read, 2 write, 1 search) on a file with stat `st`."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode >> 6 & bit)
    if st.st_gid == gid:
        return bool(st.st_mode >> 3 & bit)
    return bool(st.st_mode & bit)


class RunnerModule:
    """One runner instance of one module generation, in one container."""

    def __init__(self, generation, container_root, token_file, forge,
                 name="hive", labels=("native:host",), instance="hive",
                 url=None, exec_start_pre=True):
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
        self.exec_start_pre = exec_start_pre
        self.uid = self.gid = None
        self._cwd = "/"

    # -- what the module declares -------------------------------------------

    @property
    def forgejo(self):
        return self.generation == "forgejo"

    @property
    def _unit_instance(self):
        return escape_systemd_path(self.name) if self.forgejo \
            else self.instance

    @property
    def unit(self):
        if self.forgejo:
            return "forgejo-runner@%s" % self._unit_instance
        return "gitea-runner-%s" % escape_systemd_path(self.instance)

    @property
    def user(self):
        """User= (the dynamic user's name)."""
        if self.forgejo:
            return "forgejo-runner-%s" % self._unit_instance
        return "gitea-runner"

    @property
    def program(self):
        return "forgejo-runner" if self.forgejo else "act_runner"

    @property
    def state_directories(self):
        """StateDirectory=, relative to /var/lib, in order."""
        if self.forgejo:
            return ["forgejo-runner/%s" % self._unit_instance]
        if self.generation == "tokenhash":
            return ["gitea-runner", "gitea-runner/%s" % self.instance]
        return ["gitea-runner"]

    @property
    def working_directory(self):
        """(WorkingDirectory=, may be missing: the "-" prefix)."""
        return self.instance_dir, self.generation in ("labels", "envhash")

    @property
    def state_directory_env(self):
        """$STATE_DIRECTORY: the listed directories, as the unit sees them."""
        return ":".join("/var/lib/" + d for d in self.state_directories)

    @property
    def token_via(self):
        return "EnvironmentFile=" if self.generation in ("labels", "envhash") \
            else "LoadCredential="

    # -- paths ---------------------------------------------------------------

    @property
    def instance_dir(self):
        """INSTANCE_DIR inside the container."""
        return RUNNER_DIRS[self.generation] % self._unit_instance

    @property
    def runner_inside(self):
        return self.instance_dir + "/.runner"

    @property
    def state_dir(self):
        return os.path.join(self.root, "var/lib/private",
                            self.instance_dir[len("/var/lib/"):])

    @property
    def runner_file(self):
        return os.path.join(self.state_dir, ".runner")

    @property
    def labels_file(self):
        return os.path.join(self.state_dir, ".labels.sha256" if self.forgejo
                            else ".labels")

    @property
    def token_hash_file(self):
        return os.path.join(self.state_dir, ".token-hash")

    def _host(self, inside, follow_last=True):
        return in_root(self.root, inside, follow_last)

    # -- the unit -------------------------------------------------------------

    def stop(self):
        """The container (and so the daemon) stops: every record of this
        name goes offline."""
        with self.forge._data:
            for key, value in list(self.forge.runners.items()):
                view = forgemod._as_runner(forgemod._parse_id(str(key)), value)
                if view.name == self.name and view.status != "offline":
                    self.forge.set_status(key, "offline")

    def boot(self):
        """One start of the container's runner unit; a BootResult."""
        self.stop()
        result = BootResult()
        try:
            self._start(result)
        finally:
            result.runner = self.read_runner()
            result.uid = self.uid
        return result

    def _start(self, result):
        # The container's start script makes its root (0755) if missing.
        if not os.path.isdir(self.root):
            os.makedirs(self.root, 0o755)
            os.chmod(self.root, 0o755)
        # PID 1 reads EnvironmentFile= before it forks anything of the unit.
        environment = {}
        if self.token_via == "EnvironmentFile=":
            data = self._load_token_file(result)
            if data is None:
                return
            environment = parse_environment_file(data)
        # Then, in the forked child: the state directories (and the dynamic
        # user), then LoadCredential=, for every command it runs.
        if not self._state_directories(result):
            return
        credential = None
        if self.token_via == "LoadCredential=":
            credential = self._load_token_file(result)
            if credential is None:
                result.status = "243/CREDENTIALS"
                return
        if self.exec_start_pre:
            status = self._exec_start_pre(result, environment, credential)
            if status != 0:
                result.status = "ExecStartPre exit %d" % status
                result.why = "ExecStartPre failed (status %d)" % status
                return
        if not self._state_directories(result):
            return
        self._daemon(result)

    def _load_token_file(self, result):
        """The token file's bytes, or None if systemd stops the unit."""
        try:
            with open(self.token_file, "rb") as fh:
                data = fh.read()
        except OSError as e:
            result.why = "token file unusable, %s failed: %s" % (
                self.token_via, e.strerror)
            result.log.append(result.why)
            result.unit_started = False
            result.status = "resources"
            return None
        if self.token_via == "EnvironmentFile=":
            try:
                parse_environment_file(data)
            except ValueError as e:
                result.why = "%s failed: %s" % (self.token_via, e)
                result.log.append(result.why)
                result.unit_started = False
                result.status = "resources"
                return None
        return data

    # -- systemd's StateDirectory= with DynamicUser= ---------------------------

    def _pick_uid(self):
        """systemd's pick_uid(): the owner of a state directory's private
        path if it is in the dynamic range, else the hash of the name.
        Unprivileged: ours."""
        if not can_chown():
            return os.getuid(), os.getgid()
        for directory in self.state_directories:
            try:
                st = os.lstat(os.path.join(self.root, "var/lib/private",
                                           directory))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_uid in DYNAMIC_UIDS:
                return st.st_uid, st.st_uid
        uid = _systemd_uid_hash(self.user)
        return uid, uid

    def _state_directories(self, result):
        """setup_exec_directory() for StateDirectory= under DynamicUser=, at
        the start of every command of the unit; False if the unit fails
        (238/STATE_DIRECTORY)."""
        self.uid, self.gid = self._pick_uid()
        varlib = "/var/lib"
        private_root = os.path.join(self._mkdirs(varlib), "private")
        if not os.path.lexists(private_root):
            os.mkdir(private_root, 0o700)      # mkdir_safe: root, 0700
            os.chmod(private_root, 0o700)
        nested = set()
        for d in self.state_directories:
            if any(d.startswith(o + "/") for o in self.state_directories):
                nested.add(d)                  # EXEC_DIRECTORY_ONLY_CREATE
        for d in self.state_directories:
            p_inside = varlib + "/" + d
            # mkdir_parents_label(p, 0755), then the private path and its
            # parents (0755, root).
            self._mkdirs(os.path.dirname(p_inside))
            p = self._host(p_inside, follow_last=False)
            pp = os.path.join(private_root, d)
            self._mkdirs("/var/lib/private/" + os.path.dirname(d)
                         if "/" in d else "/var/lib/private")
            if os.path.isdir(p) and not os.path.islink(p) \
                    and not os.path.lexists(pp):
                # A pre-DynamicUser= directory migrates.
                os.rename(p, pp)
                result.log.append("Found pre-existing public StateDirectory="
                                  " directory %s, migrating to %s." % (
                                      p_inside, "/var/lib/private/" + d))
            else:
                try:
                    os.mkdir(pp, STATE_MODE)
                except FileExistsError:
                    pass
            if d not in nested:
                # symlink_idempotent(pp, p, make_relative=True)
                target = os.path.relpath(
                    "/var/lib/private/" + d, os.path.dirname(p_inside))
                if os.path.islink(p) and os.readlink(p) == target:
                    pass
                elif os.path.lexists(p):
                    return self._state_failed(result, p_inside)
                else:
                    os.symlink(target, p)
            if not os.path.isdir(pp) or os.path.islink(pp):
                return self._state_failed(result, "/var/lib/private/" + d)
            os.chmod(pp, STATE_MODE)
            self._chown_recursive(pp)
        return True

    def _state_failed(self, result, inside):
        result.unit_started = False
        result.status = "238/STATE_DIRECTORY"
        result.why = "Failed to set up special execution directory in " \
            "/var/lib: File exists (%s)" % inside
        result.log.append(result.why)
        return False

    def _mkdirs(self, inside):
        """mkdir -p as root, 0755 (systemd's mkdir_parents); host path."""
        parts = [p for p in inside.split("/") if p]
        for i in range(1, len(parts) + 1):
            host = self._host("/" + "/".join(parts[:i]))
            if not os.path.isdir(host):
                os.mkdir(host, 0o755)
                os.chmod(host, 0o755)
        return self._host(inside)

    def _chown_recursive(self, top):
        """path_chown_recursive(): nothing if the top is already owned by
        the dynamic uid and gid (and has no set-id bits); else every entry,
        symlinks not followed, set-id bits dropped. Unprivileged: nothing
        can be chowned, and nothing needs to be."""
        st = os.lstat(top)
        if st.st_uid == self.uid and st.st_gid == self.gid \
                and not st.st_mode & 0o6000:
            return
        if not can_chown():
            return
        for path in [top] + [os.path.join(d, n) for d, dirs, files
                             in os.walk(top) for n in dirs + files]:
            os.lchown(path, self.uid, self.gid)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o6000:
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o1777)

    # -- what the unit's processes do, as the dynamic user --------------------

    def _searchable(self, searched):
        """0 if the dynamic user can search every directory on the way,
        else the errno the lookup fails with. /var/lib/private is 0700
        root, but systemd makes it reachable in the unit's own mount
        namespace."""
        private = os.path.join(self.root, "var/lib/private")
        for d in searched:
            try:
                st = os.stat(d)
            except OSError as e:
                return e.errno
            if not stat.S_ISDIR(st.st_mode):
                return errno.ENOTDIR
            if d != private and not _may(st, self.uid, self.gid, 1):
                return errno.EACCES
        return 0

    def _resolve(self, inside):
        """(host path, errno or 0) of `inside` relative to the cwd."""
        if not inside.startswith("/"):
            inside = self._cwd.rstrip("/") + "/" + inside
        try:
            host, searched = walk(self.root, inside)
        except OSError as e:
            return None, e.errno
        return host, self._searchable(searched)

    def _u_exists(self, inside):
        """[ -e FILE ]"""
        host, err = self._resolve(inside)
        return not err and os.path.exists(host)

    def _u_read(self, inside):
        """The bytes of FILE read as the dynamic user, or an errno."""
        host, err = self._resolve(inside)
        if err:
            return err
        try:
            st = os.stat(host)
        except OSError as e:
            return e.errno
        if stat.S_ISDIR(st.st_mode):
            return errno.EISDIR
        if not _may(st, self.uid, self.gid, 4):
            return errno.EACCES
        with open(host, "rb") as fh:
            return fh.read()

    def _u_cat(self, inside, missing):
        """$(cat FILE 2>/dev/null || echo MISSING)"""
        data = self._u_read(inside)
        return missing if isinstance(data, int) else _cmdsubst(data)

    def _u_write(self, inside, data):
        """`... > FILE` (or os.Create) as the dynamic user under the unit's
        umask: 0 or an errno."""
        host, err = self._resolve(inside)
        if err:
            return err
        parent = os.path.dirname(host)
        try:
            st = os.stat(host)
        except FileNotFoundError:
            try:
                pst = os.stat(parent)
            except OSError as e:
                return e.errno
            if not _may(pst, self.uid, self.gid, 3):
                return errno.EACCES
            mode = 0o666 & ~SERVICE_UMASK[self.generation]
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            os.fchmod(fd, mode)
            if can_chown():
                os.fchown(fd, self.uid, self.gid)
        except OSError as e:
            return e.errno
        else:
            if stat.S_ISDIR(st.st_mode):
                return errno.EISDIR
            if not _may(st, self.uid, self.gid, 2):
                return errno.EACCES
            fd = os.open(host, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return 0

    def _u_unlink(self, inside):
        """unlink as the dynamic user: 0 or an errno."""
        if not inside.startswith("/"):
            inside = self._cwd.rstrip("/") + "/" + inside
        try:
            host, searched = walk(self.root, inside, follow_last=False)
        except OSError as e:
            return e.errno
        err = self._searchable(searched)
        if err:
            return err
        if not os.path.lexists(host):
            return errno.ENOENT
        if os.path.isdir(host) and not os.path.islink(host):
            return errno.EISDIR
        if not _may(os.stat(os.path.dirname(host)), self.uid, self.gid, 3):
            return errno.EACCES
        os.unlink(host)
        return 0

    def _u_mkdir_p(self, inside):
        """mkdir -p as the dynamic user under the unit's umask: 0 or an
        errno."""
        parts = [p for p in inside.split("/") if p]
        for i in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:i])
            host, err = self._resolve(path)
            if err:
                return err
            if os.path.isdir(host):
                continue
            if os.path.lexists(host):
                return errno.EEXIST
            try:
                pst = os.stat(os.path.dirname(host))
            except OSError as e:
                return e.errno
            if not _may(pst, self.uid, self.gid, 3):
                return errno.EACCES
            mode = 0o777 & ~SERVICE_UMASK[self.generation]
            os.mkdir(host, mode)
            os.chmod(host, mode)
            if can_chown():
                os.chown(host, self.uid, self.gid)
        return 0

    def _u_cd(self, inside):
        host, err = self._resolve(inside)
        if not err and not os.path.isdir(host):
            err = errno.ENOENT
        if not err and not _may(os.stat(host), self.uid, self.gid, 1):
            err = errno.EACCES
        if not err:
            self._cwd = inside
        return err

    def _start_cwd(self, result, what):
        """WorkingDirectory=: the cwd of a command of the unit ("/" if it
        may be missing and is)."""
        directory, optional = self.working_directory
        self._cwd = "/"
        err = self._u_cd(directory)
        if err and not optional:
            result.log.append("%s: Changing to the requested working "
                              "directory failed: %s" % (what,
                                                        os.strerror(err)))
            return False
        return True

    # -- ExecStartPre -----------------------------------------------------------

    def _labels_wanted(self):
        # echo '<labels joined by \n>' | sort, inside $(...)
        lines = "\n".join(self.labels).split("\n")
        out = "".join(line + "\n" for line in sorted(
            lines, key=lambda s: s.encode("utf-8", "surrogateescape")))
        return _cmdsubst(out.encode("utf-8", "surrogateescape"))

    def _run(self, result, err, what):
        """A command's status, logged; errexit (forgejo) stops on failure."""
        if err:
            result.log.append("%s: %s" % (what, os.strerror(err)))
            if self.forgejo:
                raise _Failed(1)
            return 1
        return 0

    def _exec_start_pre(self, result, environment, credential):
        """The generation's ExecStartPre script; its exit status."""
        if not self._start_cwd(result, "ExecStartPre"):
            return 200
        try:
            return getattr(self, "_script_" + self.generation)(
                result, environment, credential)
        except _Failed as e:
            return e.status

    def _script_labels(self, result, environment, credential):
        """gitea-actions-runner.nix (labels), line by line."""
        token = environment.get("TOKEN", "")
        # export INSTANCE_DIR="$STATE_DIRECTORY/${name}"
        instance_dir = self.state_directory_env + "/" + self.instance
        # mkdir -vp "$INSTANCE_DIR"; cd "$INSTANCE_DIR"
        self._run(result, self._u_mkdir_p(instance_dir), "mkdir")
        self._run(result, self._u_cd(instance_dir), "cd")
        labels_file = instance_dir + "/.labels"
        wanted = self._labels_wanted()
        current = self._u_cat(labels_file, b"0")
        # if [ ! -e "$INSTANCE_DIR/.runner" ] || [ "$LABELS_WANTED" != ...
        if not self._u_exists(instance_dir + "/.runner"):
            result.reasons.append("no .runner")
        if wanted != current:
            result.reasons.append("labels changed")
        if not result.reasons:
            return 0
        # rm -v "$INSTANCE_DIR/.runner" || true
        self._rm(result, instance_dir + "/.runner")
        # act_runner register --no-interactive ... --token "$TOKEN" ...
        self._register(result, token)
        # echo "$LABELS_WANTED" > "$LABELS_FILE"
        return self._run(result, self._u_write(labels_file, wanted + b"\n"),
                         labels_file)

    def _script_envhash(self, result, environment, credential):
        """gitea-actions-runner-envhash.nix (PR 516679), line by line."""
        token = environment.get("TOKEN", "")
        instance_dir = self.state_directory_env + "/" + self.instance
        self._run(result, self._u_mkdir_p(instance_dir), "mkdir")
        self._run(result, self._u_cd(instance_dir), "cd")
        # TOKEN_HASH_CURRENT="$(printf '%s' "$TOKEN" | sha256sum | cut ...)"
        hash_file = instance_dir + "/.token-hash"
        hash_current = hashlib.sha256(
            token.encode("utf-8", "surrogateescape")).hexdigest().encode()
        hash_stored = self._u_cat(hash_file, b"")
        labels_file = instance_dir + "/.labels"
        wanted = self._labels_wanted()
        current = self._u_cat(labels_file, b"0")
        if not self._u_exists(instance_dir + "/.runner"):
            result.reasons.append("no .runner")
        if wanted != current:
            result.reasons.append("labels changed")
        if hash_current != hash_stored:
            result.reasons.append("token hash changed")
        if not result.reasons:
            return 0
        self._rm(result, instance_dir + "/.runner")
        self._register(result, token)
        # printf '%s' "$TOKEN_HASH_CURRENT" > "$TOKEN_HASH_FILE"
        self._run(result, self._u_write(hash_file, hash_current), hash_file)
        # echo "$LABELS_WANTED" > "$LABELS_FILE"
        return self._run(result, self._u_write(labels_file, wanted + b"\n"),
                         labels_file)

    def _script_tokenhash(self, result, environment, credential):
        """gitea-actions-runner-tokenhash.nix (PR 559010), line by line;
        INSTANCE_DIR, TOKEN_HASH_FILE and LABELS_FILE come from the unit's
        environment, the cwd is WorkingDirectory=."""
        instance_dir = self.instance_dir
        # if grep -q -m1 -E '^[[:space:]]*TOKEN=' "$CREDENTIALS_DIRECTORY/
        # token"; then (warn; sed ... | tail -n1 > "$RUNTIME_DIRECTORY/token")
        token_file, deprecated = extract_token_file(credential)
        if deprecated:
            result.log.append(
                "gitea-actions-runner: providing 'tokenFile' as an "
                "environment file with a TOKEN= assignment is deprecated.")
        hash_file = instance_dir + "/.token-hash"
        labels_file = instance_dir + "/.labels"
        # TOKEN_HASH_CURRENT="$(sha256sum "$TOKEN_FILE" | cut -d' ' -f1)"
        hash_current = hashlib.sha256(token_file).hexdigest().encode()
        hash_stored = self._u_cat(hash_file, b"")
        wanted = self._labels_wanted()
        current = self._u_cat(labels_file, b"0")
        if not self._u_exists(instance_dir + "/.runner"):
            result.reasons.append("no .runner")
        if wanted != current:
            result.reasons.append("labels changed")
        if hash_current != hash_stored:
            result.reasons.append("token hash changed")
        if not result.reasons:
            return 0
        self._rm(result, instance_dir + "/.runner")
        # act_runner register ... --token-file "$TOKEN_FILE" (trimmed)
        token = go_trim_space(token_file.decode("utf-8", "surrogateescape"))
        self._register(result, token)
        self._run(result, self._u_write(hash_file, hash_current), hash_file)
        return self._run(result, self._u_write(labels_file, wanted + b"\n"),
                         labels_file)

    def _script_forgejo(self, result, environment, credential):
        """forgejo-runner.nix, line by line, under errexit/nounset/
        pipefail (a failing command raises _Failed)."""
        # INSTANCE_DIR="$STATE_DIRECTORY"; mkdir -vp; cd
        instance_dir = self.state_directory_env
        self._run(result, self._u_mkdir_p(instance_dir), "mkdir")
        self._run(result, self._u_cd(instance_dir), "cd")
        labels_file = instance_dir + "/.labels.sha256"
        # LABELS_WANTED_HASH="$(printf '%s' "$LABELS_WANTED" | sha256sum |
        # cut -d' ' -f1)"
        wanted = hashlib.sha256(self._labels_wanted()).hexdigest().encode()
        # LABELS_CURRENT_HASH="$(cat "$LABELS_FILE" 2>/dev/null || true)"
        current = self._u_cat(labels_file, b"")
        if not self._u_exists(instance_dir + "/.runner"):
            result.reasons.append("no .runner")
        if wanted != current:
            result.reasons.append("labels changed")
        if not result.reasons:
            return 0
        # rm -vf "$INSTANCE_DIR/.runner" || true
        self._rm(result, instance_dir + "/.runner", force=True)
        # forgejo-runner register ... --token "$(cat "$CREDENTIALS_DIRECTORY/
        # TOKEN")": the file, trailing newlines and NULs dropped
        token = _cmdsubst(credential).decode("utf-8", "surrogateescape")
        if not self._register(result, token):
            raise _Failed(1)
        # printf '%s' "$LABELS_WANTED_HASH" > "$LABELS_FILE"
        return self._run(result, self._u_write(labels_file, wanted),
                         labels_file)

    def _rm(self, result, inside, force=False):
        """rm -v FILE || true  (rm -vf: a missing file is no error)"""
        err = self._u_unlink(inside)
        if not err:
            result.log.append("removed '%s'" % inside)
        elif not (force and err == errno.ENOENT):
            result.log.append("rm: cannot remove '%s': %s"
                              % (inside, os.strerror(err)))

    def _register(self, result, token):
        """`<program> register --no-interactive ...`: registers at the
        forge with the label names and writes `.runner` in the cwd; True
        if it did."""
        result.registered = True
        result.register_ok = False
        labels = ",".join(self.labels)
        labels = labels.split(",") if labels else []
        if not token:
            result.log.append("register: token is empty")
            return False
        try:
            reg = self.forge.register(
                token, self.name, label_names(labels), address=self.url,
                version=RUNNER_VERSION[self.program])
        except forgemod.RegisterError as e:
            result.log.append("register: Failed to register runner: %s" % e)
            return False
        registration = {
            "WARNING": forgemod.RUNNER_WARNING, "id": reg["id"],
            "uuid": reg["uuid"], "name": reg["name"], "token": reg["token"],
            "address": reg["address"], "labels": labels}
        if self.program == "act_runner":
            registration["ephemeral"] = False
        # os.Create(".runner") in the cwd: follows a symlink.
        err = self._u_write(".runner", runner_json(registration).encode())
        if err:
            result.log.append("register: failed to save runner config: %s"
                              % os.strerror(err))
            return False
        result.log.append("register: Runner registered successfully.")
        result.register_ok = True
        return True

    # -- the daemon -------------------------------------------------------------

    def read_runner(self):
        """`.runner` as the daemon parses it (read as root, from
        runner_inside): a dict, or None if it is missing or not a
        registration Go's json.Unmarshal would accept."""
        try:
            with open(self._host(self.runner_inside), "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        return _parse_registration(data)

    def _daemon(self, result):
        """`<program> daemon`: load `.runner` from the cwd as the dynamic
        user, then Declare to the forge at its `address`."""
        if not self._start_cwd(result, "ExecStart"):
            result.status = "200/CHDIR"
            result.why = "working directory missing"
            return
        data = self._u_read(".runner")
        if data == errno.ENOENT:
            return self._daemon_failed(result, "registration file not found")
        if isinstance(data, int):
            return self._daemon_failed(
                result, "failed to load registration file: open .runner: %s"
                % os.strerror(data).lower())
        registration = _parse_registration(data)
        if registration is None:
            return self._daemon_failed(result,
                                       "failed to load registration file")
        address = self.url if self.url is not None else self.forge.url
        if registration.get("address") != address:
            return self._daemon_failed(
                result, "fail to invoke Declare: cannot reach %r"
                % registration.get("address"))
        try:
            self.forge.declare(registration.get("uuid"),
                               registration.get("token"),
                               label_names(registration.get("labels") or []),
                               RUNNER_VERSION[self.program])
        except forgemod.DeclareError as e:
            return self._daemon_failed(result, str(e))
        result.works, result.why = True, "ok"
        result.log.append("daemon: runner %s is online"
                          % registration.get("id"))

    def _daemon_failed(self, result, why):
        result.status = "exit 1"
        result.why = why
        result.log.append("daemon: " + why)


def _parse_registration(data):
    """`.runner` bytes as config.LoadRegistration takes them, or None."""
    try:
        registration = json.loads(data.decode("utf-8"))
    except ValueError:
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
