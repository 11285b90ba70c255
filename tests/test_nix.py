"""The NixOS modules and the package, evaluated: nix/module.nix
(services.hive-ci-prefetch), nix/hive-ci.nix (services.hyperhive.ci) and
nix/package.nix go through the offline kit in ../shared/nix-eval (nixpkgs'
real lib and option types, NixOS's own unit generation, nixos-containers'
real options, the four generations of nixpkgs' runner modules) and the
generated units are checked line by line.

Nothing here builds or starts anything: see README.md in the kit for what an
evaluation proves. Without the kit or nix-instantiate (the Nix sandbox, a
user's clone) every case skips and says why; HIVE_NIX_EVAL names another
kit directory. Evaluations are cached for the whole run: the cases share
them.
"""

import atexit
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading

import runner_sim
import sys
from harness import Env, Skip, case, write_executable

TOP = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
KIT = os.environ.get("HIVE_NIX_EVAL") or os.path.join(TOP, "..", "shared", "nix-eval")

# Unprivileged, a Nix installed by root cannot set up its own state
# directory: give the evaluations one of their own (set at import, before
# any case runs on a thread).
if os.geteuid() != 0 and "NIX_STATE_DIR" not in os.environ:
    os.environ["NIX_STATE_DIR"] = tempfile.mkdtemp(prefix="hcp-nix-state-")
    atexit.register(shutil.rmtree, os.environ["NIX_STATE_DIR"], True)
OPT = "services.hive-ci-prefetch."

# The runner module generations the kit has, as the container's nixpkgs
# would offer them ("envhash,forgejo": nixpkgs 26.05+, both option trees).
GENERATIONS = ("labels", "envhash", "tokenhash", "forgejo", "envhash,forgejo")

_tmp = None
_cache = {}


def tmpdir():
    global _tmp
    if _tmp is None:
        _tmp = tempfile.mkdtemp(prefix="hcp-nix-")
        atexit.register(shutil.rmtree, _tmp, True)
    return _tmp


def need_kit():
    # .ci/run sets HIVE_NIX_EVAL_REQUIRED: in CI these cases must run.
    missing = AssertionError if os.environ.get("HIVE_NIX_EVAL_REQUIRED") else Skip
    if not os.path.isfile(os.path.join(KIT, "eval.sh")):
        raise missing("../shared/nix-eval not found")
    if not shutil.which("nix-instantiate"):
        raise missing("nix-instantiate not installed")


def nix(v):
    """A Python value as a Nix expression (strings, numbers, bools, None,
    lists, dicts; a Raw is written as is)."""
    if isinstance(v, Raw):
        return v.text
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if v >= 0 else "(%d)" % v
    if isinstance(v, str):
        s = v.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
        return '"%s"' % s.replace("\n", "\\n").replace("\t", "\\t")
    if isinstance(v, list):
        return "[ " + " ".join(nix(x) for x in v) + " ]"
    if isinstance(v, dict):
        return "{ " + " ".join("%s = %s;" % (nix(k) if "." in k or "@" in k else k, nix(x))
                               for k, x in v.items()) + " }"
    raise TypeError(v)


class Raw:
    def __init__(self, text):
        self.text = text


def module_text(text):
    """A host module from Nix text: a file, named by its content."""
    path = os.path.join(tmpdir(), "host-%s.nix" % hashlib.sha256(text.encode()).hexdigest()[:16])
    if not os.path.exists(path):
        # by rename: prefetch() writes from two threads
        tmp = "%s.%d.tmp" % (path, threading.get_ident())
        with open(tmp, "w") as fh:
            fh.write(text)
        os.rename(tmp, path)
    return path


def module_file(options=None, extra=(), imports=()):
    """Writes a host module: services.hive-ci-prefetch = options, plus
    Nix text in extra (attribute definitions) and imports (files)."""
    body = ""
    if options:
        body += "services.hive-ci-prefetch = %s;\n" % nix(options)
    body += "\n".join(extra)
    return module_text("{ config, lib, ... }: {\nimports = [ %s ];\n%s\n}\n" % (" ".join(imports), body))


# The kit's `full` base declares services.forgejo/gitea and systemd.tmpfiles
# (copied from nixpkgs); these modules only set or read them.
FORGEJO = "{ services.forgejo.enable = true; }"
GITEA = "{ services.gitea.enable = true; }"
TMPFILES_REPORT = """{ config, ... }: {
  warnings = [ ("tmpfiles=" + builtins.toJSON (config.systemd.tmpfiles.settings.hive-ci-prefetch or null)) ];
}"""


# One evaluation of a configuration gives every view the cases ask for: the
# kit's shim/eval.nix (what eval.sh runs; its README documents the
# attributes) called once, with the same arguments eval.sh would pass.
BUNDLE = """
{ kit, args, parts }:
let
  e = import (kit + "/shim/eval.nix") args;
  # Parts a configuration may legitimately lack (no runner instance, no
  # ExecStartPre in host registration): null instead of an error.
  try = v: let r = builtins.tryEval (builtins.deepSeq v v); in if r.success then r.value else null;
  all = {
    package = e.packageInfo;
    service = e.hostService;
    unit = if e.hostService == null then null else e.hostUnitText;
    assertions = e.assertions;
    warnings = e.warnings;
    host-units = e.hostUnits;
    container-config = if e.hasContainer then e.containerConfig else null;
    runner-unit = try (if e.flavour == "forgejo" || !args.fixture then e.runnerUnitsText else e.runnerUnitText);
    runner-script = try e.runnerScriptText;
    runner-service = try e.runnerService;
    runner-scripts = try e.runnerScripts;
  };
in
builtins.listToAttrs (map (n: { name = n; value = all.${n}; }) parts)
"""
PARTS = ("service", "unit", "assertions", "warnings", "host-units", "container-config",
         "runner-unit", "runner-script", "runner-service", "runner-scripts")


def bundle_file():
    path = os.path.join(tmpdir(), "bundle.nix")
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write(BUNDLE)
    return path


def _prepare(what, host=None, hosts=(), runner=None, project=TOP, state_version=None,
             fixture=True, base=None, container=None):
    """(cache key, Nix expression of the bundle) of one configuration."""
    need_kit()
    if container == "hive-ci":
        container = None  # the kit's default, one cache entry
    files = [h if h.endswith(".nix") and os.path.isfile(h) else module_text(h)
             for h in ([host] if host else []) + list(hosts)]
    parts = ("package",) if what == "package" else PARTS
    key = (parts, tuple(open(f).read() for f in files), runner, project, state_version,
           fixture, base, container)
    args = {"libPath": kit_lib(), "project": project, "hostExtras": files,
            "runnerModules": runner or "labels", "fixture": fixture}
    for name, value in (("stateVersion", state_version), ("base", base),
                        ("containerName", container)):
        if value:
            args[name] = value
    expr = "import %s { kit = %s; args = %s; parts = %s; }" % (
        bundle_file(), nix(KIT), nix(args), nix(list(parts)))
    return key, expr


def _instantiate(expr):
    return subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--readonly-mode",
                           "--store", "dummy://", "-E", expr],
                          capture_output=True, text=True, timeout=300)


def evaluate(what, **kw):
    """(rc, value, stderr) of one evaluation; cached, and one evaluation
    serves every WHAT but "package" (which reads the project's tree).
    host/hosts: module files or Nix text (written to a file); runner: a
    generation or "a,b"."""
    key, expr = _prepare(what, **kw)
    if key not in _cache:
        p = _instantiate(expr)
        _cache[key] = (p.returncode, json.loads(p.stdout) if p.returncode == 0 else None, p.stderr)
    rc, value, err = _cache[key]
    return rc, None if value is None else value[what], err


def prefetch(calls):
    """Evaluates configurations (dicts of evaluate's keywords) into the
    cache, several in one nix-instantiate (lib and the modules are read
    once) and two of those at a time (most cases of the other pass are
    waiting, not computing). One that fails is left out: the case's own
    call gives its error."""
    todo = {}
    for kw in calls:
        key, expr = _prepare("unit", **kw)
        if key not in _cache:
            todo[key] = expr
    items = list(todo.items())

    def run(chunk):
        if not chunk:
            return
        expr = "[ %s ]" % " ".join(
            "(let b = %s; r = builtins.tryEval (builtins.deepSeq b b); in if r.success then r.value else null)"
            % e for _, e in chunk)
        p = _instantiate(expr)
        if p.returncode == 0:
            for (key, _), value in zip(chunk, json.loads(p.stdout)):
                if value is not None:
                    _cache[key] = (0, value, "")

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(run, [items[0::2], items[1::2]]))


def ok(what, **kw):
    rc, value, err = evaluate(what, **kw)
    assert rc == 0, "evaluating %s failed (%d):\n%s" % (what, rc, err)
    assert value is not None, "%s: the configuration has none" % what
    return value


def unit_keys(text):
    """Unit file text -> {key: [values]} (all sections)."""
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("[", "#")):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    return keys


def words(keys, k):
    return [w for v in keys.get(k, []) for w in v.split()]


def exec_argv(line):
    """ExecStart= value -> argv as systemd runs it: words split outside
    double quotes, C escapes in quotes decoded, %% -> % and $$ -> $; a lone
    % or $ (a specifier or a variable systemd would expand) fails. A
    leading "+" (full privileges) is dropped."""
    argv, i = [], 0
    if line.startswith("+"):
        line = line[1:]
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        if line[i] == '"':
            j = i + 1
            while line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            word, i = json.loads(line[i:j + 1]), j + 1
        else:
            j = line.find(" ", i)
            j = len(line) if j < 0 else j
            word, i = line[i:j], j
        for ch in "%$":
            assert not re.search(re.escape(ch) + "(?!" + re.escape(ch) + ")",
                                 word.replace(ch * 2, "")), \
                "unescaped %s in ExecStart= word %r" % (ch, word)
        argv.append(word.replace("%%", "%").replace("$$", "$"))
    return argv


def unit(host=None, **kw):
    keys = unit_keys(ok("unit", host=host, **kw))
    assert len(keys["ExecStart"]) == 1, keys["ExecStart"]
    return keys, exec_argv(keys["ExecStart"][0])


def exe():
    return ok("package")["exe"]


def tmpfiles(host):
    for w in ok("warnings", host=host, hosts=[TMPFILES_REPORT], base="full")["host"]:
        if w.startswith("tmpfiles="):
            return json.loads(w[len("tmpfiles="):])
    raise AssertionError("the tmpfiles report is missing")


def rejected(options, option, host_extra=(), **kw):
    """The module must refuse these options: a type error (eval.sh exit 1)
    or a failed assertion, either naming the option."""
    host = module_file(options, imports=host_extra)
    # Option values are checked when used: the unit's text uses them all.
    rc, out, err = evaluate("unit", host=host, **kw)
    if rc == 0:
        failed = ok("assertions", host=host, **kw)["host"]
        assert any(OPT + option in m for m in failed), \
            "%s accepted %r (failed assertions: %s)" % (option, options, failed)
    else:
        assert rc == 1 and re.search(r"`%s(\.\"\[definition [^]]*\]\")?'" % re.escape(OPT + option), err), \
            "%r: eval.sh exit %d without naming %s:\n%s" % (options, rc, option, err)


DEFAULT_ARGS = [
    "--forge-url=http://127.0.0.1:3000",
    "--core-token-file=/var/lib/hyperhive/forge-core-token",
    "--container-root=/var/lib/nixos-containers/hive-ci",
    "--runner-file=/var/lib/gitea-runner/hive/.runner",
    "--output=/run/hive-ci/runner-token",
    "--retry-timeout=30",
    "--state-file=/var/lib/hive-ci-prefetch/hive-ci.json",
    "--token-format=env",
    "--registration=container",
]


@case(sanitize=False)
def nix_files_parse(env):
    need_kit()
    files = ["flake.nix"] + sorted("nix/" + n for n in os.listdir(os.path.join(TOP, "nix"))
                                   if n.endswith(".nix"))
    assert "nix/hive-ci.nix" in files, files
    for f in files:
        p = subprocess.run(["nix-instantiate", "--parse", os.path.join(TOP, f)],
                           capture_output=True, text=True)
        assert p.returncode == 0, "%s does not parse:\n%s" % (f, p.stderr)


@case(sanitize=False)
def nix_module_defaults_give_the_documented_unit(env):
    keys, argv = unit()
    assert argv == [exe()] + DEFAULT_ARGS, argv
    for k in ("Before", "PartOf", "WantedBy"):
        assert keys.get(k) == ["container@hive-ci.service"], (k, keys.get(k))
    assert keys["Documentation"] == ["man:hive-ci-prefetch(8)"], keys.get("Documentation")
    assert keys["RuntimeDirectory"] == ["hive-ci"] and keys["RuntimeDirectoryMode"] == ["0700"]
    assert keys["RuntimeDirectoryPreserve"] == ["true"]
    assert keys.get("StateDirectory") == ["hive-ci-prefetch"], keys.get("StateDirectory")
    assert keys.get("StateDirectoryMode") == ["0700"], keys.get("StateDirectoryMode")
    assert keys["ReadWritePaths"] == ["-/var/lib/nixos-containers/hive-ci"], keys["ReadWritePaths"]
    assert keys["RequiresMountsFor"] == ["/var/lib/nixos-containers/hive-ci"]
    assert keys["Type"] == ["oneshot"] and keys["RemainAfterExit"] == ["true"]
    # container registration, no forge on this host: the least privilege
    assert keys["CapabilityBoundingSet"] == ["CAP_DAC_OVERRIDE"], keys["CapabilityBoundingSet"]
    assert keys["RestrictAddressFamilies"] == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "ExecStartPre" not in keys, keys["ExecStartPre"]
    assert ok("assertions") == {"container": [], "host": []}
    assert ok("warnings") == {"container": [], "host": []}
    # the README's option table lists every option with this default
    readme = open(os.path.join(TOP, "README.md")).read()
    for opt, default in (("stateFile", "/var/lib/hive-ci-prefetch/<containerName>.json"),
                         ("tokenFormat", '"env"'), ("placeholderOnKeep", "false"),
                         ("cleanup", "true"), ("registration", '"container"'),
                         ("runnerName", '"hive"'), ("labels", '[ "hive-ci:host" ]'),
                         ("runnerAddress", "null"), ("forgeUser", "services.forgejo.user")):
        assert re.search(r"^\| `%s` \| [^\n]*%s" % (opt, re.escape(default)), readme, re.M), \
            "README's option table lacks %s (default %s)" % (opt, default)


@case(sanitize=False)
def nix_module_passes_every_option_with_systemd_quoting(env):
    weird = 'a b %n $USER "q" \\ 100%'
    options = {
        "forgeUrl": "https://forge.example:8443/pre%2Ffix$x",
        "unixSocket": "/run/forgejo/forgejo.sock",
        "caFile": "/etc/ssl/forge ca.pem",
        "coreTokenFile": "/run/keys/forge-admin",
        "containerName": "ci2",
        "containerRoot": "/srv/containers/ci2",
        "runnerFile": "/var/lib/gitea-runner/other/.runner",
        "output": "/srv/hive-ci/token",
        "stateFile": "/var/lib/hive-ci-prefetch/sub/ci2-state.json",
        "retryTimeout": 0,
        "tokenFormat": "raw",
        "placeholderOnKeep": True,
        "cleanup": False,
        "forgeUser": 997,
        "registration": "host",
        "runnerName": "the %i $runner",
        "labels": ["hive-ci:host", "big:docker://node:20"],
        "runnerAddress": "http://10.0.0.1:3000/%x",
        "extraArgs": ["--verbose", weird],
    }
    host = module_file(options)
    keys, argv = unit(host, base="full")
    assert argv == [exe(),
                    "--forge-url=https://forge.example:8443/pre%2Ffix$x",
                    "--core-token-file=/run/keys/forge-admin",
                    "--container-root=/srv/containers/ci2",
                    "--runner-file=/var/lib/gitea-runner/other/.runner",
                    "--output=/srv/hive-ci/token",
                    "--retry-timeout=0",
                    "--state-file=/var/lib/hive-ci-prefetch/sub/ci2-state.json",
                    "--token-format=raw",
                    "--placeholder-on-keep",
                    "--no-cleanup",
                    "--unix-socket=/run/forgejo/forgejo.sock",
                    "--ca-file=/etc/ssl/forge ca.pem",
                    "--forge-user=997",
                    "--registration=host",
                    "--runner-name=the %i $runner",
                    "--labels=hive-ci:host,big:docker://node:20",
                    "--runner-address=http://10.0.0.1:3000/%x",
                    "--verbose", weird], argv
    for k in ("Before", "PartOf", "WantedBy"):
        assert keys.get(k) == ["container@ci2.service"], (k, keys.get(k))
    assert keys["RequiresMountsFor"] == ["/srv/containers/ci2"]
    # outside /run: no RuntimeDirectory, a tmpfiles rule, writable without "-"
    assert "RuntimeDirectory" not in keys, keys.get("RuntimeDirectory")
    assert keys["ReadWritePaths"] == ["-/srv/containers/ci2", "/srv/hive-ci"], keys["ReadWritePaths"]
    assert keys.get("StateDirectory") == ["hive-ci-prefetch/sub"], keys.get("StateDirectory")
    # host registration: chown what it writes; --forge-user: sock_diag
    assert keys["CapabilityBoundingSet"] == ["CAP_DAC_OVERRIDE", "CAP_CHOWN"], keys["CapabilityBoundingSet"]
    assert "AF_NETLINK" in keys["RestrictAddressFamilies"], keys["RestrictAddressFamilies"]
    # ...and the container root made before the sandbox needs it
    assert [exec_argv(v) for v in keys["ExecStartPre"]] == [
        [argv_store("coreutils", "mkdir"), "-p", "-m", "0755", "/srv/containers/ci2"]], keys["ExecStartPre"]
    assert keys["ExecStartPre"][0].startswith("+"), keys["ExecStartPre"]
    rules = tmpfiles(host)
    assert rules == {"/srv/hive-ci": {"d": {
        "type": "d", "mode": "0700", "user": "root", "group": "root",
        "age": "-", "argument": ""}}}, rules
    assert ok("assertions", host=host, base="full") == {"container": [], "host": []}


def argv_store(package, program):
    """The stub store path of a package's program, as the kit has it."""
    text = ok("unit", host=module_file({"registration": "host"}))
    m = re.search(r'"(/nix/store/[a-z0-9]{32}-%s/bin/%s)"' % (package, program), text)
    assert m, "no %s/bin/%s in %s" % (package, program, text)
    return m.group(1)


@case(sanitize=False)
def nix_module_defaults_follow_container_name(env):
    host = module_file({"containerName": "ci2"})
    keys, argv = unit(host)
    assert "--container-root=/var/lib/nixos-containers/ci2" in argv, argv
    assert "--state-file=/var/lib/hive-ci-prefetch/ci2.json" in argv, argv
    for k in ("Before", "PartOf", "WantedBy"):
        assert keys.get(k) == ["container@ci2.service"], (k, keys.get(k))
    # renaming the container moves RequiresMountsFor= too
    assert keys["RequiresMountsFor"] == ["/var/lib/nixos-containers/ci2"], keys["RequiresMountsFor"]
    assert keys["Description"] == ["Check the ci2 CI runner's registration and fetch its token"]
    # before stateVersion 22.05 nixos-containers keeps roots in /var/lib/containers
    keys, argv = unit(host, state_version="21.11")
    assert "--container-root=/var/lib/containers/ci2" in argv, argv
    assert keys["ReadWritePaths"] == ["-/var/lib/containers/ci2"], keys["ReadWritePaths"]


@case(sanitize=False)
def nix_module_state_file_off(env):
    for off in (None, ""):
        keys, argv = unit(module_file({"stateFile": off}))
        assert "--state-file=" in argv, (off, argv)
        assert "StateDirectory" not in keys and "StateDirectoryMode" not in keys, (off, keys)
    # elsewhere than /var/lib/hive-ci-prefetch: its own directory, by tmpfiles
    host = module_file({"stateFile": "/srv/hive-state/ci.json"})
    keys, argv = unit(host, base="full")
    assert "--state-file=/srv/hive-state/ci.json" in argv, argv
    assert "StateDirectory" not in keys, keys.get("StateDirectory")
    assert "/srv/hive-state" in keys["ReadWritePaths"], keys["ReadWritePaths"]
    assert list(tmpfiles(host)) == ["/srv/hive-state"]


@case(sanitize=False)
def nix_module_output_directory(env):
    keys, argv = unit(module_file({"output": "/run/ci/deep/token"}))
    assert keys["RuntimeDirectory"] == ["ci/deep"], keys.get("RuntimeDirectory")
    assert keys["ReadWritePaths"] == ["-/var/lib/nixos-containers/hive-ci"]
    # a system without systemd.tmpfiles (the kit's minimal base) says so
    host = module_file({"output": "/srv/hive-ci/token"})
    assert ok("warnings", host=host)["host"] == [
        "services.hive-ci-prefetch: this system has no systemd.tmpfiles; "
        "/srv/hive-ci will not be created."], ok("warnings", host=host)
    # no rule at all for the default paths
    assert tmpfiles(module_file()) == {}


@case(sanitize=False)
def nix_module_rejects_bad_values(env):
    bad = [({"retryTimeout": -1}, "retryTimeout"),
           ({"retryTimeout": 86401}, "retryTimeout"),
           ({"containerName": "hive ci"}, "containerName"),
           ({"containerName": "../x"}, "containerName")]
    for opt in ("output", "coreTokenFile", "containerRoot", "runnerFile", "stateFile"):
        bad += [({opt: "relative/file"}, opt), ({opt: "/a/../b"}, opt),
                ({opt: "/with space/x"}, opt), ({opt: "/100%/x"}, opt)]
    bad += [
        ({"output": Raw("/run/hive-ci/path-literal")}, "output"),  # a Nix path
        ({"output": "/run/token"}, "output"),  # all of /run writable
        ({"output": "/token"}, "output"),
        ({"output": "/var/lib/token"}, "output"),
        ({"stateFile": "/run/state.json"}, "stateFile"),
        # the container controls everything below its root (issue 19, item 4)
        ({"output": "/var/lib/nixos-containers/hive-ci/run/token"}, "output"),
        ({"stateFile": "/var/lib/nixos-containers/hive-ci/state.json"}, "stateFile"),
        ({"containerRoot": "/srv/ci", "output": "/srv/ci/hive/token"}, "output"),
        ({"tokenFormat": "json"}, "tokenFormat"),
        ({"cleanup": "no"}, "cleanup"),
        ({"registration": "both"}, "registration"),
        # (used, so type-checked, in host registration)
        ({"registration": "host", "labels": ["a,b"]}, "labels"),
        ({"registration": "host", "labels": ["a b"]}, "labels"),
        ({"registration": "host", "runnerName": ""}, "runnerName"),
        # the binary's own rules: a label's name, a printable ASCII name
        ({"registration": "host", "labels": ["\u00e9:host"]}, "labels"),
        ({"registration": "host", "labels": [":host"]}, "labels"),
        ({"registration": "host", "runnerName": " hive"}, "runnerName"),
        ({"registration": "host", "runnerName": "h\u00efve"}, "runnerName"),
        ({"forgeUser": "two words"}, "forgeUser"),
        # host registration over a Unix socket needs the URL the runner uses
        ({"registration": "host", "unixSocket": "/run/forgejo/forgejo.sock"}, "registration"),
    ]
    # --forge-user over plain http to a forge that is not on loopback: the
    # tool would refuse it (exit 64); so does the module
    for url in ("http://forge.example:3000", "http://10.0.0.1:3000/"):
        bad.append(({"forgeUser": "forgejo", "forgeUrl": url}, "forgeUser"))
    good = [{"forgeUser": "forgejo", "forgeUrl": "http://[::1]:3000/"},
            {"forgeUser": "forgejo", "forgeUrl": "https://forge.example"},
            {"registration": "host", "unixSocket": "/run/forgejo/forgejo.sock",
             "runnerAddress": "http://127.0.0.1:3000"}]
    # (no prefetch: each refused one must fail on its own, with its message)
    for options, option in bad:
        rejected(options, option)
    # ...and these are fine
    for options in good:
        assert ok("assertions", host=module_file(options))["host"] == [], options


def runner_unit(generation, host=None):
    return unit_keys(ok("runner-unit", runner=generation, host=host))


@case(sanitize=False)
def nix_container_runner_reads_the_token_file(env):
    for output in ("/run/hive-ci/runner-token", "/srv/hive-ci/token"):
        host = module_file({"output": output}) if output[1:4] != "run" else None
        old = runner_unit("labels", host)
        assert old.get("EnvironmentFile") == [output], old.get("EnvironmentFile")
        new = runner_unit("tokenhash", host)
        assert new.get("LoadCredential") == ["token:" + output], new.get("LoadCredential")
        assert "EnvironmentFile" not in new, new["EnvironmentFile"]
        for gen in ("labels", "tokenhash"):
            assert ok("assertions", host=host, runner=gen)["container"] == []


def check_module(host_options=None, extra=(), imports=(), runner=None, **kw):
    """nix/check-module.nix (the flake's module check) on the kit's host."""
    text_arg = ""
    if runner:
        path = os.path.join(tmpdir(), "runner-%s.service" % runner)
        with open(path, "w") as fh:
            fh.write(ok("runner-unit", runner=runner,
                        host=module_file(host_options) if host_options else None))
        text_arg = "runnerUnitText = builtins.readFile %s;" % path
    reporter = ('warnings = map (m: "check-module: " + m) (import %s/nix/check-module.nix '
                '{ inherit lib config; %s });' % (TOP, text_arg))
    host = module_file(host_options, extra=list(extra) + [reporter], imports=imports)
    return [w[len("check-module: "):] for w in ok("warnings", host=host, **kw)["host"]
            if w.startswith("check-module: ")]


@case(sanitize=False)
def nix_flake_module_check_passes_and_can_fail(env):
    for gen in ("labels", "tokenhash"):
        assert check_module(runner=gen) == [], gen
    assert check_module({"tokenFormat": "raw"}, runner="tokenhash") == []
    assert check_module({"tokenFormat": "raw"}, runner="labels") == [
        'the runner reads /run/hive-ci/runner-token as an EnvironmentFile, '
        'but tokenFormat is not "env"']
    assert check_module({"tokenFormat": "raw", "runnerFile": "/var/lib/forgejo-runner/hive/.runner"},
                        runner="forgejo") == []
    assert check_module(runner="forgejo") == [
        'the runner reads /run/hive-ci/runner-token as the bare token (LoadCredential=TOKEN:), '
        'but tokenFormat is not "raw"']
    forgejo = module_text(FORGEJO)
    assert check_module(imports=[forgejo], base="full") == []
    broken = check_module(extra=[
        "systemd.services.hive-ci-prefetch.before = lib.mkForce [ ];",
        "systemd.services.hive-ci-prefetch.after = lib.mkForce [ ];",
        "systemd.services.hive-ci-prefetch.wants = [ \"forgejo.service\" ];",
        "systemd.services.hive-ci-prefetch.serviceConfig.ExecStart = "
        "lib.mkForce \"/bin/hive-ci-prefetch --output=/run/x\";"],
        imports=[forgejo], base="full")
    assert broken[:3] == ["Before= does not name container@hive-ci.service",
                          "After= lacks the forge's unit (forgejo.service)",
                          "the unit requires or wants the forge's unit; After= only"], broken
    assert "ExecStart= does not start with the package's binary" in broken, broken
    assert "ExecStart= lacks --output=/run/hive-ci/runner-token" in broken, broken
    assert "ExecStart= lacks --forge-user=forgejo" in broken, broken
    # host registration: the sandbox and the runner module's own registration
    assert check_module({"registration": "host"}, runner="labels") == [
        'registration is "host" but the runner unit still registers itself (ExecStartPre=)']
    assert check_module({"registration": "host"}, extra=[
        "systemd.services.hive-ci-prefetch.serviceConfig.CapabilityBoundingSet = "
        "lib.mkForce [ \"CAP_DAC_OVERRIDE\" ];",
        "systemd.services.hive-ci-prefetch.serviceConfig.RestrictAddressFamilies = "
        "lib.mkForce [ \"AF_UNIX\" ];"], imports=[forgejo], base="full") == [
        'registration is "host" but CapabilityBoundingSet= lacks CAP_CHOWN',
        "--forge-user is given but RestrictAddressFamilies= lacks AF_NETLINK"]


@case(sanitize=False)
def nix_module_orders_after_the_forge_on_this_host(env):
    # the minimal base has no services.forgejo/gitea: the module must evaluate anyway
    assert ok("service")["after"] == ["network.target"]
    for forge, text in (("forgejo", FORGEJO), ("gitea", GITEA)):
        svc = ok("service", host=text, base="full")
        assert svc["after"] == ["network.target", forge + ".service"], svc["after"]
        assert svc["requires"] == [] and svc["wants"] == [], (svc["requires"], svc["wants"])
        # the forge's own user guards the admin token (issue 19, item 2)
        keys, argv = unit(text, base="full")
        assert "--forge-user=" + forge in argv, argv
        assert "AF_NETLINK" in keys["RestrictAddressFamilies"], keys["RestrictAddressFamilies"]
        # ...also under another name
        keys, argv = unit("{ services.%s = { enable = true; user = \"git\"; }; }" % forge,
                          base="full")
        assert "--forge-user=git" in argv, argv
    svc = ok("service", base="full")
    assert svc["after"] == ["network.target"], svc["after"]
    keys, argv = unit(base="full")
    assert not [a for a in argv if a.startswith("--forge-user")], argv
    assert "AF_NETLINK" not in keys["RestrictAddressFamilies"], keys["RestrictAddressFamilies"]
    svc = ok("service", hosts=[FORGEJO, GITEA], base="full")
    assert svc["after"] == ["network.target", "forgejo.service", "gitea.service"], svc["after"]


def tracked_copy():
    """A copy of the checkout's tracked files (and no build products)."""
    p = subprocess.run(["git", "-C", TOP, "ls-files", "-z"], capture_output=True)
    if p.returncode != 0:
        raise Skip("not a git checkout")
    dest = tempfile.mkdtemp(prefix="tree-", dir=tmpdir())
    for name in p.stdout.decode().split("\0"):
        if name and os.path.isfile(os.path.join(TOP, name)):
            os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(os.path.join(TOP, name), os.path.join(dest, name))
    return dest


def src_path(project):
    for key in [k for k in _cache if k[0] == ("package",) and k[3] == project]:
        del _cache[key]
    return ok("package", project=project)["src"]


@case(sanitize=False)
def nix_package_source_has_what_the_build_reads_and_no_build_products(env):
    need_kit()
    tree = tracked_copy()
    clean = src_path(tree)
    strays = ["hive-ci-prefetch", "build/main.o", "build/main.d", "build/test_token",
              "build/asan/hive-ci-prefetch", "build/fuzz/corpus-runner/0a1b", "src/main.o",
              "src/main.d", "src/main.c.orig", "tests/__pycache__/harness.cpython-313.pyc",
              "tests/unit/test_token", "tests/fuzz/fuzz_runner", "crash-da39a3ee5e6b",
              "a.out", "core", "out-2027/anything", "man/hive-ci-prefetch.8.html",
              "nix/admin-token.sh.orig", "nix/.admin-token.sh.swp"]
    for name in strays:
        path = os.path.join(tree, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"\x7fELF stale build product")
    os.symlink("/nix/store/00000000000000000000000000000000-hive-ci-prefetch", os.path.join(tree, "result"))
    assert src_path(tree) == clean, "a build product reached the package source"
    # ...while each kind of file the build and make check read is in it
    needed = ["Makefile", "VERSION", "README.md", "man/hive-ci-prefetch.8", "src/main.c",
              "include/log.h", "tests/harness.py", "tests/deps.sh", "tests/unit/test_token.c",
              "tests/fuzz/replay.c", "tests/fuzz/corpus/runner/gitea", "tests/tls/ca.crt",
              "tests/tls/server.key", "tests/sleep_overshoot.c",
              # tests/test_admin_token.py runs the script the module installs
              "nix/admin-token.sh", "tests/test_admin_token.py"]
    for name in needed:
        path = os.path.join(tree, name)
        with open(path, "rb") as fh:
            before = fh.read()
        with open(path, "wb") as fh:
            fh.write(b"9.9.9\n" if name == "VERSION" else before + b"\n")
        try:
            assert src_path(tree) != clean, name + " is not in the package source"
        finally:
            with open(path, "wb") as fh:
                fh.write(before)
    with open(os.path.join(tree, "tests", "test_new.py"), "w") as fh:
        fh.write("# a test file not committed yet\n")
    assert src_path(tree) != clean, "a new test file is not in the package source"


# A stand-in for nixpkgs' lib.nixosSystem over the kit's NixOS (full base,
# every runner module), plus the two options of a real NixOS host that the
# flake's check sets and the kit does not have.
FLAKE_EVAL = """
  let
    kit = %(kit)s;
    lib0 = import %(lib)s;
    pkgs = import (kit + "/shim/pkgs.nix") { lib = lib0; };
    mods = import (kit + "/shim/nixos/modules/module-list.nix");
    evalConfig = import (kit + "/shim/nixos/lib/eval-config.nix");
    hostOnly = { lib, ... }: {
      options.boot.loader.grub.enable = lib.mkOption { type = lib.types.bool; };
      options.fileSystems = lib.mkOption { type = lib.types.attrsOf (lib.types.attrsOf lib.types.str); };
    };
    lib = lib0 // {
      nixosSystem = { modules }: evalConfig {
        lib = lib0;
        inherit pkgs;
        baseModules = mods.full;
        modules = [ hostOnly { debug.containerSystemModules = mods.full ++ [ %(runners)s ]; } ] ++ modules;
      };
    };
    flake = import %(top)s/flake.nix;
    out = flake.outputs {
      self = out;
      nixpkgs = { inherit lib; legacyPackages.x86_64-linux = pkgs; };
    };
    m = out.nixosModules.default;
  in {
    type = builtins.typeOf m;
    imports = map toString (m.imports or [ ]);
    checks = builtins.attrNames out.checks.x86_64-linux;
    module = %(force)s;
  }"""


_lib = None


def kit_lib():
    """The kit's nixpkgs lib, in a temporary copy whose pathType falls back
    to the kit's polyfill on a Nix without builtins.readFileType (< 2.14),
    as eval.sh does."""
    with _lib_lock:
        return _kit_lib()


_lib_lock = threading.Lock()


def _kit_lib():
    global _lib
    if _lib is None:
        lib = os.path.join(KIT, "nixpkgs-lib", "lib")
        p = subprocess.run(["nix-instantiate", "--eval", "--readonly-mode", "--store", "dummy://",
                            "-E", "builtins ? readFileType"], capture_output=True, text=True)
        if p.stdout.strip() == "true":
            _lib = lib
        else:
            _lib = os.path.join(tmpdir(), "lib")
            shutil.copytree(lib, _lib)
            os.chmod(_lib, 0o755)  # the kit may be read-only, and its copy with it
            shutil.copy(os.path.join(KIT, "shim", "readfiletype-polyfill.nix"), _lib)
            fs = os.path.join(_lib, "filesystem.nix")
            os.chmod(fs, 0o644)
            text = open(fs).read()
            old = "  pathType = builtins.readFileType;\n"
            assert old in text, "cannot polyfill builtins.readFileType"
            with open(fs, "w") as fh:
                fh.write(text.replace(old, "  pathType = builtins.readFileType or "
                                           "(import ./readfiletype-polyfill.nix);\n"))
    return _lib


def flake_eval(top=TOP, runners="forgejo", force="out.checks.x86_64-linux.module.drvPath"):
    need_kit()
    lib = kit_lib()
    expr = FLAKE_EVAL % {"kit": KIT, "lib": lib, "top": top, "force": force,
                         "runners": " ".join("(mods.runners.%s)" % r for r in runners.split(","))}
    p = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--readonly-mode",
                        "--store", "dummy://", "-E", expr], capture_output=True, text=True)
    return p


@case(sanitize=False)
def nix_flake_exports_a_module_value_and_a_module_check(env):
    for runners in ("labels", "envhash,forgejo"):
        p = flake_eval(runners=runners)
        assert p.returncode == 0, p.stderr
        got = json.loads(p.stdout)
        # `nix flake check` wants a module (a function or an attribute set), not a path
        assert got["type"] in ("set", "lambda"), got
        assert got["imports"] == [os.path.join(TOP, "nix", "module.nix")], got
        assert "module" in got["checks"] and "default" in got["checks"], got
    # the module check covers services.hyperhive.ci: a copy whose container
    # keeps the runner module's own registration fails it
    tree = tracked_copy()
    path = os.path.join(tree, "nix", "hive-ci.nix")
    text = open(path).read()
    broken = text.replace("systemd.services.${unit}.serviceConfig.ExecStartPre = mkForce [ ];",
                          "systemd.services.${unit}.serviceConfig.ExecStartPre = [ ];")
    assert broken != text
    with open(path, "w") as fh:
        fh.write(broken)
    p = flake_eval(top=tree, runners="envhash,forgejo")
    assert p.returncode == 1, p.stdout
    assert "services.hyperhive.ci: registration is \"host\" but the runner unit still registers itself" \
        in p.stderr, p.stderr


# --- services.hyperhive.ci ------------------------------------------------

def two_lines(forge="forgejo", extra=""):
    return "{ lib, ... }: { services.%s.enable = true; services.hyperhive.ci.enable = true; %s }" % (
        forge, extra)


def hive(what, host, runner, hosts=(), container=None):
    return ok(what, host=host, hosts=hosts, runner=runner, fixture=False, container=container)


def failed(host, runner="labels", hosts=(), container=None):
    a = hive("assertions", host, runner, hosts, container)
    return a["host"] + a["container"]


def expect_flavour(generation, forge):
    return "forgejo" if "forgejo" in generation.split(",") and forge == "forgejo" else "gitea"


def check_wiring(generation, forge, host, registration="host", name="hive", labels=("hive-ci:host",),
                 url="http://127.0.0.1:3000", capacity=1, container="hive-ci",
                 output="/run/hive-ci/runner-token"):
    """Everything agrees: the container, its bind mount, the runner instance
    and its units, nix settings, and the prefetch unit's arguments. What the
    runner module needs is read from its own units, not assumed."""
    where = "%s, %s forge: " % (generation, forge)
    bad = failed(host, generation, container=container)
    assert bad == [], where + str(bad)
    warnings = hive("warnings", host, generation, container=container)
    assert warnings == {"container": [], "host": []}, where + str(warnings)

    cc = hive("container-config", host, generation, container=container)
    assert cc["name"] == container, cc["name"]
    h, c = cc["host"], cc["config"]
    assert h["autoStart"] and not h["privateNetwork"] and not h["ephemeral"], where + str(h)
    assert h["privateUsers"] == "no", h["privateUsers"]
    r = c["runner"]
    assert r is not None, where + "no runner instance in the container"
    assert r["flavour"] == expect_flavour(generation, forge), where + r["flavour"]
    inst = r["instance"]
    assert inst["enable"] and inst["name"] == name and inst["url"] == url, where + str(inst)
    assert inst["labels"] == list(labels), where + str(inst["labels"])
    assert inst["settings"]["runner"] == {"capacity": capacity}, where + str(inst["settings"])
    # the design's nix settings (sandbox-fallback with mkForce: the kit's
    # nix-daemon.nix defines false at normal priority, as NixOS does)
    assert c["nix"]["settings"]["sandbox-fallback"] is True, c["nix"]["settings"]
    assert {"nix-command", "flakes"} <= set(c["nix"]["settings"]["experimental-features"])

    # the bind mount: read-only, the host unit's output, where tokenFile is
    mounts = [b for b in h["bindMounts"].values() if b["mountPoint"] == inst["tokenFile"]]
    assert len(mounts) == 1 and mounts[0]["isReadOnly"] and mounts[0]["hostPath"] == output, \
        where + str(h["bindMounts"])

    # the runner's units, as its module wrote them
    services = r["services"]
    if r["flavour"] == "forgejo":
        template, instance = services["forgejo-runner@.service"], services["forgejo-runner@%s.service" % name]
        state = template["serviceConfig"]["WorkingDirectory"].replace("%i", name)
    else:
        template, instance = {"serviceConfig": {}}, services["gitea-runner-hive.service"]
        state = instance["serviceConfig"]["WorkingDirectory"].lstrip("-")
    sc = dict(template["serviceConfig"], **instance["serviceConfig"])
    if "EnvironmentFile" in sc:
        assert sc["EnvironmentFile"] == inst["tokenFile"], sc
        fmt = "env"
    else:
        creds = [x.split(":", 1) for x in sc["LoadCredential"]]
        assert [p for _, p in creds] == [inst["tokenFile"]], sc["LoadCredential"]
        fmt = "raw"
    pre = sc.get("ExecStartPre", [])
    if registration == "host":
        assert pre == [], where + "the runner module still registers: %s" % pre
    else:
        assert len(pre) == 1, where + str(pre)
    # a :host label puts the host packages on the runner's path
    path = instance["environment"].get("PATH", "")
    for pkg in ("nix", "git", "bash", "coreutils", "nodejs"):
        assert re.search(r"/nix/store/[a-z0-9]{32}-%s/bin(:|$)" % pkg, path), \
            where + "%s not on the runner's PATH" % pkg

    # the host unit agrees with all of it
    keys, argv = unit(host, runner=generation, fixture=False)
    args = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
    assert args["forge-url"] == url, where + str(args)
    assert args["runner-file"] == state + "/.runner", where + "%s vs %s" % (args["runner-file"], state)
    assert args["token-format"] == fmt, where + "%s vs %s" % (args["token-format"], fmt)
    assert args["output"] == output, args
    assert args["container-root"] == "/var/lib/nixos-containers/" + container, args
    assert args["registration"] == registration, args
    assert args["forge-user"] == forge, args
    assert "AF_NETLINK" in keys["RestrictAddressFamilies"], keys["RestrictAddressFamilies"]
    for k in ("Before", "PartOf", "WantedBy"):
        assert keys.get(k) == ["container@%s.service" % container], (k, keys.get(k))
    if registration == "host":
        assert args["runner-name"] == inst["name"], args
        assert args["labels"].split(",") == inst["labels"], args
        assert "CAP_CHOWN" in keys["CapabilityBoundingSet"], keys["CapabilityBoundingSet"]
        assert "ExecStartPre" in keys, keys
    else:
        assert "labels" not in args and "runner-name" not in args, args
        assert "CAP_CHOWN" not in keys["CapabilityBoundingSet"], keys["CapabilityBoundingSet"]
        assert "ExecStartPre" not in keys, keys

    # the forge's admin token is made first, after the forge
    units = hive("host-units", host, generation)
    admin = units["hive-ci-admin-token.service"]
    assert admin["before"] == ["hive-ci-prefetch.service"], admin
    assert admin["after"] == [forge + ".service"] and admin["requires"] == [forge + ".service"], admin
    assert units["container@%s.service" % container]["wantedBy"] == ["machines.target"]
    return cc, keys, argv


@case(sanitize=False)
def nix_hive_ci_two_lines_wire_a_runner_under_every_generation(env):
    prefetch([dict(host=two_lines(), runner=g, fixture=False) for g in GENERATIONS]
             + [dict(host=two_lines("gitea"), runner=g, fixture=False)
                for g in ("labels", "tokenhash", "envhash,forgejo")])
    for generation in GENERATIONS:
        check_wiring(generation, "forgejo", two_lines())
    # Gitea: services.gitea-actions-runner, also where forgejo's exists
    for generation in ("labels", "tokenhash", "envhash,forgejo"):
        check_wiring(generation, "gitea", two_lines("gitea"))


@case(sanitize=False)
def nix_hive_ci_container_registration_keeps_the_module_registering(env):
    host = two_lines(extra='services.hyperhive.ci.registration = "container";')
    prefetch([dict(host=host, runner=g, fixture=False) for g in GENERATIONS]
             + [dict(host=two_lines("gitea", 'services.hyperhive.ci.registration = "container";'),
                     runner=g, fixture=False) for g in ("labels", "envhash,forgejo")])
    for generation in GENERATIONS:
        check_wiring(generation, "forgejo", host, registration="container")


@case(sanitize=False)
def nix_hive_ci_settings_and_overrides_that_agree(env):
    checks = []
    # the options move everything together
    host = two_lines(extra="""services.hyperhive.ci = {
        name = "ci_runner"; concurrency = 4; labels = [ "hive-ci:host" "nix:host" ];
        containerName = "ci2"; forgeUrl = "http://127.0.0.1:3001"; };
      services.forgejo.settings.server.HTTP_PORT = 3001;""")
    for generation in ("labels", "forgejo"):
        checks.append((generation, host, dict(name="ci_runner", labels=("hive-ci:host", "nix:host"),
                                              url="http://127.0.0.1:3001", capacity=4, container="ci2")))
    # derived from the forge's own settings
    for extra, url in (("services.forgejo.settings.server.HTTP_PORT = 3002;", "http://127.0.0.1:3002"),
                       ('services.forgejo.settings.server.HTTP_ADDR = "127.0.0.1";', "http://127.0.0.1:3000"),
                       ('services.forgejo.settings.server.HTTP_ADDR = "::1";', "http://[::1]:3000"),
                       ('services.forgejo.settings.server.PROTOCOL = "https";', "https://127.0.0.1:3000")):
        checks.append(("forgejo", two_lines(extra=extra), dict(url=url)))
    # an operator moves the token file: the bind mount and tokenFile follow
    host = two_lines(extra='services.hive-ci-prefetch.output = "/run/hive-ci-token/token";')
    for generation in ("envhash", "forgejo"):
        checks.append((generation, host, dict(output="/run/hive-ci-token/token")))
    prefetch([dict(host=h, runner=g, fixture=False, container=kw.get("container")) for g, h, kw in checks]
             + [dict(host=h, runner=g, fixture=False) for g, h, kw in checks if kw.get("container")])
    for generation, host, kw in checks:
        check_wiring(generation, "forgejo", host, **kw)


# Each configuration with what its failed assertions must say (one pattern
# per failed assertion, host and container together).
ASSERTIONS = [
    ("{ services.hyperhive.ci.enable = true; }", "labels",
     [r"needs a forge: enable services\.forgejo .* or set services\.hyperhive\.ci\.forgeUrl"]),
    (two_lines(extra="services.gitea.enable = true;"), "labels",
     [r"both services\.forgejo and services\.gitea .* set services\.hyperhive\.ci\.forgeUrl"]),
    (two_lines(extra='services.forgejo.settings.server.PROTOCOL = "http+unix";'), "labels",
     [r"cannot reach the forge at 127\.0\.0\.1 .*PROTOCOL = \"http\+unix\".* set services\.hyperhive\.ci\.forgeUrl"
      r".*services\.hive-ci-prefetch\.unixSocket"]),
    (two_lines(extra='services.forgejo.settings.server.HTTP_ADDR = "192.0.2.7";'), "labels",
     [r"HTTP_ADDR = \"192\.0\.2\.7\".*set services\.hyperhive\.ci\.forgeUrl"]),
    (two_lines(extra="services.hyperhive.ci.labels = [ ];"), "labels",
     [r"services\.hyperhive\.ci\.labels is empty.*\[ \"hive-ci:host\" \]",
      # the runner module's own (an empty list means docker's defaults)
      r"requires either docker or podman"]),
    (two_lines(extra='services.hyperhive.ci.labels = [ "hive-ci" "x:host" ];'), "labels",
     [r"labels: \"hive-ci\" is not of the form name:host .* or name:docker://image"]),
    (two_lines(extra='services.hyperhive.ci.labels = [ "ubuntu:docker://node:20" ];'), "labels",
     [r"docker:// labels \(ubuntu:docker://node:20\): enable a container runtime in the container "
      r"\(containers\.hive-ci\.config\.virtualisation\.podman\.enable = true",
      r"requires either docker or podman"]),
    (two_lines(extra='services.hyperhive.ci.runner = "forgejo-runner";'), "envhash",
     [r"runner = \"forgejo-runner\": the container's nixpkgs has no services\.forgejo\.runner"
      r".*set services\.hyperhive\.ci\.runner = \"auto\""]),
    (two_lines(extra='services.hyperhive.ci.name = "my-runner";'), "forgejo",
     [r"name = \"my-runner\": under services\.forgejo\.runner .* \[A-Za-z0-9_\]\{1,16\}"]),
    (two_lines(extra='services.hyperhive.ci.name = "a23456789012345678";'), "forgejo",
     [r"name = \"a23456789012345678\": under services\.forgejo\.runner"]),
    (two_lines(extra='services.hive-ci-prefetch.containerName = "other";'), "labels",
     [r"services\.hive-ci-prefetch\.containerName = \"other\" but the CI container is hive-ci; "
      r"set services\.hyperhive\.ci\.containerName only"]),
    (two_lines(extra='services.hive-ci-prefetch.containerRoot = "/srv/hive-ci";'), "labels",
     [r"containerRoot = \"/srv/hive-ci\" but nixos-containers keeps hive-ci's root in "
      r"/var/lib/nixos-containers/hive-ci"]),
    (two_lines(extra="containers.hive-ci.ephemeral = true;"), "labels",
     [r"containers\.hive-ci\.ephemeral = true: .* lost at every start"]),
    (two_lines(extra="containers.hive-ci.privateNetwork = true;"), "labels",
     [r"containers\.hive-ci\.privateNetwork = true: .* needs privateNetwork = false"]),
    (two_lines(extra='services.hive-ci-prefetch.runnerFile = "/var/lib/gitea-runner/other/.runner";'),
     "labels",
     [r"runnerFile = \"/var/lib/gitea-runner/other/\.runner\" but the container's gitea-actions-runner "
      r"keeps \.runner at /var/lib/gitea-runner/hive/\.runner"]),
    (two_lines(extra='services.hive-ci-prefetch.runnerFile = "/var/lib/gitea-runner/hive/.runner";'),
     "forgejo",
     [r"but the container's forgejo-runner keeps \.runner at /var/lib/forgejo-runner/hive/\.runner"]),
    (two_lines(extra='services.hive-ci-prefetch.tokenFormat = "raw";'), "envhash",
     [r"tokenFormat = \"raw\" but the container's gitea-actions-runner \(gitea-runner-hive\) needs \"env\""]),
    (two_lines(extra='services.hive-ci-prefetch.tokenFormat = "env";'), "forgejo",
     [r"tokenFormat = \"env\" but the container's forgejo-runner \(forgejo-runner@hive\) needs \"raw\""]),
    (two_lines(extra='services.hive-ci-prefetch.registration = "container";'), "labels",
     [r"registration = \"container\" but services\.hyperhive\.ci\.registration = \"host\"; "
      r"set services\.hyperhive\.ci\.registration only"]),
    (two_lines(extra='containers.hive-ci.bindMounts."/run/hive-ci/runner-token".isReadOnly = lib.mkForce false;'),
     "labels",
     [r"no read-only bind mount brings the token file /run/hive-ci/runner-token .* to "
      r"/run/hive-ci/runner-token, where the runner's tokenFile points"]),
    (two_lines(extra='containers.hive-ci.config.services.gitea-actions-runner.instances.hive.tokenFile = '
                     'lib.mkForce "/run/other";'), "labels",
     [r"no read-only bind mount .* to /run/other, where the runner's tokenFile points"]),
    (two_lines(extra='containers.hive-ci.config.systemd.services.gitea-runner-hive.serviceConfig.ExecStartPre = '
                     'lib.mkOverride 10 [ "/bin/true" ];'), "labels",
     [r"registration = \"host\" but gitea-runner-hive in the container still has an ExecStartPre"]),
    (two_lines(extra='services.hive-ci-prefetch.labels = [ "other:host" ];'), "labels",
     [r"registers the runner as \"hive\" with labels \[\"other:host\"\], but the runner instance in the "
      r"container is \"hive\" with \[\"hive-ci:host\"\]; set services\.hyperhive\.ci\.name and "
      r"services\.hyperhive\.ci\.labels only"]),
    (two_lines(extra='services.hive-ci-prefetch.runnerName = "other";'), "forgejo",
     [r"registers the runner as \"other\" .* the runner instance in the container is \"hive\""]),
    (two_lines(extra='services.hive-ci-prefetch.stateFile = "/var/lib/nixos-containers/hive-ci/s.json";'),
     "labels",
     [r"services\.hive-ci-prefetch\.stateFile = .* is inside the container root"]),
    (two_lines(extra='services.hyperhive.ci.forgeUrl = "http://forge.example:3000";'), "labels",
     [r"services\.hive-ci-prefetch\.forgeUser = \"forgejo\" with forgeUrl = \"http://forge\.example:3000\""]),
    ("{ services.hyperhive.ci = { enable = true; forgeUrl = \"https://forge.example\"; adminToken.enable = true; }; }",
     "labels",
     [r"adminToken\.enable: no forge runs on this host .* write services\.hyperhive\.ci\.coreTokenFile yourself"]),
]


@case(sanitize=False)
def nix_hive_ci_assertions_say_what_to_set(env):
    prefetch([dict(host=h, runner=g, fixture=False) for h, g, _ in ASSERTIONS])
    for host, generation, patterns in ASSERTIONS:
        got = failed(host, generation)
        assert len(got) == len(patterns), "%s (%s):\n%s" % (host, generation, "\n".join(got))
        for pattern in patterns:
            assert any(re.search(pattern, m, re.S) for m in got), \
                "%s (%s): no message matches %r:\n%s" % (host, generation, pattern, "\n".join(got))
    # ...and what is fine: a remote forge with its URL (no admin token unit,
    # no --forge-user), a runtime for docker labels, a dash in a gitea name
    remote = "{ services.hyperhive.ci = { enable = true; forgeUrl = \"https://forge.example\"; }; }"
    assert failed(remote) == [], failed(remote)
    assert "hive-ci-admin-token.service" not in hive("host-units", remote, "labels")
    keys, argv = unit(remote, runner="labels", fixture=False)
    assert "--forge-url=https://forge.example" in argv and not [a for a in argv if "forge-user" in a], argv
    docker = two_lines(extra='services.hyperhive.ci.labels = [ "ubuntu:docker://node:20" ]; '
                             "containers.hive-ci.config.virtualisation.podman.enable = true;")
    assert failed(docker) == [], failed(docker)
    dash = two_lines(extra='services.hyperhive.ci.name = "my-runner";')
    assert failed(dash, "envhash") == [], failed(dash, "envhash")


@case(sanitize=False)
def nix_hive_ci_two_lines_pass_the_kits_own_driver(env):
    # eval.sh's `all` (what a person runs) exits 1 on any failed assertion
    need_kit()
    for generation in ("envhash,forgejo",):
        p = subprocess.run([os.path.join(KIT, "eval.sh"), TOP, "all", "--no-fixture",
                            "--host-extra", module_text(two_lines()), "--runner-modules", generation],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, "%s:\n%s%s" % (generation, p.stdout[-2000:], p.stderr)
        assert "### failed assertions\n{\"container\":[],\"host\":[]}" in p.stdout, p.stdout[-2000:]


# --- the runner module's own registration, run for real -------------------

# act_runner / forgejo-runner as far as the modules' ExecStartPre uses them:
# `register --no-interactive --instance URL (--token T | --token-file F)
# --name N --labels L --config C` sends the runners' protocol Register to the
# forge (the test forge stands at HIVE_TEST_FORGE for the unit's URL) and
# writes .runner in the working directory, as the real ones do.
FAKE_RUNNER = r"""#!%(python)s
import json, os, sys, urllib.error, urllib.request
args = sys.argv[1:]
log = {"argv0": os.path.basename(sys.argv[0]), "cwd": os.getcwd()}
if not args or args[0] != "register":
    sys.exit("fake runner: only register")
opts, i = {}, 1
while i < len(args):
    if args[i] == "--no-interactive":
        opts["no-interactive"] = True
        i += 1
    else:
        opts[args[i][2:]] = args[i + 1]
        i += 2
log["options"] = sorted(opts)
log["instance"] = opts.get("instance")
if "token-file" in opts:
    token = open(opts["token-file"]).read().strip()
else:
    token = opts.get("token", "")
with open(os.environ["HIVE_TEST_LOG"], "a") as fh:
    fh.write(json.dumps(log) + "\n")
if not token:
    sys.exit("Error: token is empty")
labels = opts["labels"].split(",")
body = json.dumps({"name": opts["name"], "token": token, "version": "fake-runner",
                   "labels": [l.split(":", 1)[0] for l in labels]}).encode()
req = urllib.request.Request(os.environ["HIVE_TEST_FORGE"] + "/api/actions/runner.v1.RunnerService/Register",
                             data=body, headers={"Content-Type": "application/json"})
try:
    answer = json.load(urllib.request.urlopen(req, timeout=10))
except urllib.error.HTTPError as e:
    sys.exit("Error: register: %%d %%s" %% (e.code, e.read().decode(errors="replace")))
r = answer["runner"]
with open(".runner", "w") as fh:
    json.dump({"WARNING": "fake", "id": int(r["id"]), "uuid": r["uuid"], "name": r["name"],
               "token": r["token"], "address": opts["instance"], "labels": labels}, fh, indent=2)
    fh.write("\n")
print("INFO Runner registered successfully.")
"""


class Container:
    """The CI container's side of a boot, played from the evaluated
    configuration: the bind mounts, the runner unit's state, runtime and
    credential directories as systemd (DynamicUser=) makes them, its
    EnvironmentFile=, and its real ExecStartPre under bash."""

    def __init__(self, env, cc, forge, output_on_host):
        self.env, self.root, self.forge = env, env.root, forge
        self.mounts = {b["mountPoint"]: b["hostPath"] for b in cc["host"]["bindMounts"].values()}
        self.output_on_host = output_on_host
        runner = cc["config"]["runner"]
        self.instance = runner["instance"]
        services = runner["services"]
        self.name = self.instance["name"]
        if runner["flavour"] == "forgejo":
            t = services["forgejo-runner@.service"]
            s = services["forgejo-runner@%s.service" % self.name]
            self.config = dict(t["serviceConfig"], **s["serviceConfig"])
            self.environment = dict(t["environment"], **s["environment"])
        else:
            s = services["gitea-runner-hive.service"]
            self.config, self.environment = dict(s["serviceConfig"]), dict(s["environment"])
        self.log = os.path.join(env.dir, "runner-calls")
        self.fake = os.path.join(env.dir, "fake-runner")
        write_executable(self.fake, FAKE_RUNNER % {"python": sys.executable})

    def spec(self, v):
        return v.replace("%i", self.name).replace("%I", self.name)

    def host(self, inside):
        """A path in the container, on the host: through a bind mount (the
        token file: on to where the test put the host unit's output), else
        in the container root."""
        if inside in self.mounts:
            assert self.mounts[inside] == self.output_on_host[0], (inside, self.mounts)
            return self.output_on_host[1]
        return os.path.join(self.root, inside.lstrip("/"))

    def directories(self, key, base):
        """StateDirectory=/RuntimeDirectory=: the real directories under
        private/ and systemd's symlink for the outermost listed one."""
        entries = [self.spec(e) for e in _list(self.config.get(key, []))]
        paths = []
        for e in entries:
            real = os.path.join(self.root, base.lstrip("/"), "private" if key == "StateDirectory" else "", e)
            os.makedirs(real, exist_ok=True)
            if key == "StateDirectory" and not any(e.startswith(o + "/") for o in entries if o != e):
                link = os.path.join(self.root, base.lstrip("/"), e)
                os.makedirs(os.path.dirname(link), exist_ok=True)
                if not os.path.lexists(link):
                    os.symlink(os.path.relpath(real, os.path.dirname(link)), link)
            paths.append(os.path.join(self.root, base.lstrip("/"), e))
        return ":".join(paths)

    def boot(self, scripts):
        """Runs ExecStartPre as systemd would start the unit; returns the
        bash process."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
               "HIVE_TEST_FORGE": self.forge.url, "HIVE_TEST_LOG": self.log}
        for k, v in self.environment.items():
            if k != "PATH":
                v = self.spec(v)
                env[k] = self.host(v) if v.startswith(("/var/", "/run/")) else v
        env["STATE_DIRECTORY"] = self.directories("StateDirectory", "/var/lib")
        if self.config.get("RuntimeDirectory"):
            env["RUNTIME_DIRECTORY"] = self.directories("RuntimeDirectory", "/run")
        if "EnvironmentFile" in self.config:
            with open(self.host(self.config["EnvironmentFile"]), "rb") as fh:
                env.update(runner_sim.parse_environment_file(fh.read()))
        creds = os.path.join(self.env.dir, "credentials")
        os.makedirs(creds, exist_ok=True)
        for entry in _list(self.config.get("LoadCredential", [])):
            cname, path = entry.split(":", 1)
            shutil.copyfile(self.host(path), os.path.join(creds, cname))
            env["CREDENTIALS_DIRECTORY"] = creds
        cwd = self.host(self.spec(self.config["WorkingDirectory"]).lstrip("-"))
        if not os.path.isdir(cwd):
            cwd = self.root  # "-": systemd starts the unit anyway
        assert len(scripts) == 1, scripts
        script = scripts[0]
        text = re.sub(r"/nix/store/[a-z0-9]{32}-[^/ ]+/bin/(act_runner|forgejo-runner)", self.fake, script["text"])
        assert self.fake in text, "the script does not call the runner's register"
        argv = ["bash"] + [x for o in script["bashOptions"] for x in ("-o", o)] + ["-c", text]
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)

    def calls(self):
        try:
            return [json.loads(line) for line in open(self.log)]
        except FileNotFoundError:
            return []


def _list(v):
    return v if isinstance(v, list) else [v]


def host_unit_run(env, argv, forge, output_on_host):
    """The host unit's ExecStart= with the test's paths and forge: the real
    binary writes the token file the container reads. Options this build of
    the binary does not know yet are left out (the lead adds them: see
    the contract); --forge-user names the test forge's own user."""
    usage = subprocess.run([env.binary, "--help"], capture_output=True, text=True).stdout
    subst = {"forge-url": forge.url, "core-token-file": env.token_file, "container-root": env.root,
             "output": env.output, "state-file": env.state_file, "retry-timeout": "5",
             "forge-user": str(os.getuid())}
    out = [env.binary]
    for a in argv[1:]:
        name = a[2:].split("=", 1)[0]
        if "--" + name not in usage:
            continue
        if name == "output":
            assert a.split("=", 1)[1] == output_on_host[0], a
        out.append("--%s=%s" % (name, subst[name]) if name in subst else a)
    return env.run(argv=out)


@case(sanitize=False)
def nix_hive_ci_container_registration_registers_against_the_test_forge(env):
    """registration = "container": the host unit writes the token file, the
    runner module's real ExecStartPre registers with it at the test forge
    (its Register of the runners' protocol), and the .runner it writes is
    where the host unit looks; on the next boot nothing registers again."""
    configs = [(g, "forgejo", "forgejo15") for g in GENERATIONS] + [("labels", "gitea", "gitea124"),
                                                                      ("envhash,forgejo", "gitea", "gitea124")]
    for generation, forge_name, flavour in configs:
        sub = Env()
        try:
            sub.binary = env.binary
            one_container_registration(sub, generation, forge_name, flavour)
        finally:
            sub.close()


def one_container_registration(env, generation, forge_name, flavour):
    where = "%s (%s forge, %s): " % (generation, forge_name, flavour)
    host = two_lines(forge_name, 'services.hyperhive.ci.registration = "container";')
    cc = hive("container-config", host, generation)
    scripts = hive("runner-scripts", host, generation)
    keys, argv = unit(host, runner=generation, fixture=False)
    args = dict(a[2:].split("=", 1) for a in argv[1:] if "=" in a)
    f = env.forge(flavour=flavour)
    output_on_host = (args["output"], env.output)
    box = Container(env, cc, f, output_on_host)

    for boot in (1, 2):
        r = host_unit_run(env, argv, f, output_on_host)
        assert r.rc == 0, where + "boot %d: the host unit failed: %r" % (boot, r)
        p = box.boot(scripts)
        assert p.returncode == 0, where + "boot %d: ExecStartPre failed (%d):\n%s%s" % (
            boot, p.returncode, p.stdout, p.stderr)
        runner_file = runner_sim.in_root(env.root, args["runner-file"])
        assert os.path.isfile(runner_file), where + "no .runner at %s (the host unit's --runner-file)" % (
            args["runner-file"])
        with open(runner_file) as fh:
            registration = json.load(fh)
        works, why = f.runner_works(registration)
        assert works, where + "boot %d: the runner does not work: %s" % (boot, why)
        calls = box.calls()
        assert len(calls) == 1, where + "boot %d: register ran %d times" % (boot, len(calls))
        assert calls[0]["instance"] == box.instance["url"] == args["forge-url"], where + str(calls)
        record = f.record(registration["id"])
        assert record.name == box.instance["name"] and list(record.labels) == ["hive-ci"], \
            where + repr(record)
        if boot == 1:
            first = registration
        else:
            assert registration == first, where + "the second boot replaced .runner"
    registers = [q for q in f.requests if q["path"] == "/api/actions/runner.v1.RunnerService/Register"]
    assert len(registers) == 1, where + "%d Register requests" % len(registers)


ADMIN_UNIT_REPORT = """{ config, ... }: {
  warnings = [ ("admin-unit=" + config.systemd.units."hive-ci-admin-token.service".text) ];
}"""


@case(sanitize=False)
def nix_hive_ci_admin_token_unit_runs_the_script_as_the_forge(env):
    """hive-ci-admin-token.service as evaluated: the forge's user and
    environment, the order, the condition, and its two command lines run
    (the script from nix/, the forge's command line stood in for): the
    token file appears once, root 0600, with nothing shown."""
    import test_admin_token as at
    for forge_name in ("forgejo", "gitea"):
        warnings = hive("warnings", two_lines(forge_name), "labels", hosts=[ADMIN_UNIT_REPORT])["host"]
        text, = [w[len("admin-unit="):] for w in warnings if w.startswith("admin-unit=")]
        keys = unit_keys(text)
        assert keys["User"] == [forge_name] and keys["Group"] == [forge_name], keys
        assert keys["Type"] == ["oneshot"] and keys["RuntimeDirectory"] == ["hive-ci-admin-token"], keys
        assert keys["RuntimeDirectoryMode"] == ["0700"] and keys["UMask"] == ["0077"], keys
        assert keys["After"] == [forge_name + ".service"] == keys["Requires"], keys
        assert keys["Before"] == ["hive-ci-prefetch.service"] == keys["WantedBy"], keys
        target = "/var/lib/hyperhive/forge-core-token"
        assert keys["ConditionFileNotEmpty"] == ["!" + target], keys
        environment = dict(json.loads(v) .split("=", 1) if v.startswith('"') else v.split("=", 1)
                           for v in keys["Environment"])
        prefix = forge_name.upper()
        assert environment["%s_WORK_DIR" % prefix] == "/var/lib/" + forge_name, environment
        assert environment["%s_CUSTOM" % prefix] == "/var/lib/%s/custom" % forge_name, environment
        assert environment["USER"] == forge_name and environment["HOME"] == "/var/lib/" + forge_name
        (mint,), (install,) = keys["ExecStart"], keys["ExecStartPost"]
        assert install.startswith("+") and not mint.startswith("+"), (mint, install)
        mint, install = exec_argv(mint), exec_argv(install)
        script = mint[0]
        assert re.match(r"/nix/store/[a-z0-9]{32}-hive-ci-admin-token/bin/hive-ci-admin-token$", script), mint
        assert mint[1] == "mint" and re.match(r"/nix/store/[a-z0-9]{32}-[^/]+/bin/%s$" % forge_name, mint[2]), mint
        assert mint[3:] == ["hive-ci-admin", "hive-ci-admin@localhost", "/run/hive-ci-admin-token/token"], mint
        assert install[0] == script, (mint, install)
        assert install[1:] == ["install", "/run/hive-ci-admin-token/token", target, forge_name], install

        # run them, with the test's paths
        w = at.World(env, sub=forge_name)
        subst = {script: None, mint[2]: w.cli, "/run/hive-ci-admin-token/token": w.stage,
                 target: w.target, forge_name: w.owner, "hive-ci-admin": w.user}
        def local(argv):
            return ["bash", at.SCRIPT] + [subst.get(a, a) for a in argv[1:]]
        unit_env = {k: v for k, v in environment.items() if k != "PATH"}
        assert w.unit(local(mint), local(install), unit_env) is None, w.outputs
        (_, _, token, scope), = w.tokens()
        assert scope == "write:admin"
        w.assert_installed(token)
        w.assert_no_secret_shown()
        for _, (work, custom, uid) in w.calls():
            assert (work, custom) == ("/var/lib/%s" % forge_name, "/var/lib/%s/custom" % forge_name), (work, custom)
            assert int(uid) == w.uid
        assert w.unit(local(mint), local(install), unit_env) == "skipped"
    # off: no unit
    off = two_lines(extra="services.hyperhive.ci.adminToken.enable = false;")
    assert "hive-ci-admin-token.service" not in hive("host-units", off, "labels")


OPTION_NAMES = """{ options, lib, ... }: {
  warnings = [ ("options=" + builtins.toJSON {
    ci = lib.attrNames options.services.hyperhive.ci;
    adminToken = lib.attrNames options.services.hyperhive.ci.adminToken;
    prefetch = lib.attrNames options.services.hive-ci-prefetch;
    defaultLabels = options.services.hyperhive.ci.labels.default;
  }) ];
}"""


@case(sanitize=False)
def nix_docs_name_the_options_that_exist(env):
    """README's NixOS section and docs/hive-ci.md name only options the
    modules have, their tables list every option, and the example workflow
    runs on the module's default label."""
    warnings = ok("warnings", hosts=[OPTION_NAMES], fixture=False)["host"]
    names, = [json.loads(w[len("options="):]) for w in warnings if w.startswith("options=")]
    readme = open(os.path.join(TOP, "README.md")).read()
    section = readme[readme.index("## Using it from NixOS"):readme.index("## Using it from plain systemd")]
    guide = open(os.path.join(TOP, "docs", "hive-ci.md")).read()
    for text, where in ((section, "README"), (guide, "docs/hive-ci.md")):
        for opt in re.findall(r"services\.hyperhive\.ci\.([A-Za-z]+(?:\.[A-Za-z]+)?)", text):
            top, _, sub = opt.partition(".")
            assert top in names["ci"] and (not sub or top != "adminToken" or sub in names["adminToken"]), \
                "%s names services.hyperhive.ci.%s, which does not exist" % (where, opt)
        for opt in re.findall(r"services\.hive-ci-prefetch\.([A-Za-z]+)", text):
            assert opt in names["prefetch"], "%s names services.hive-ci-prefetch.%s" % (where, opt)
    ci_rows = re.findall(r"^\| `([A-Za-z.]+)`(?:, `([A-Za-z.]+)`)? \|", section[section.index(
        "| option (`services.hyperhive.ci.`)"):section.index("### The host unit alone")], re.M)
    listed = {n for row in ci_rows for n in row if n}
    wanted = {n for n in names["ci"] if n != "adminToken"} | {"adminToken." + n for n in names["adminToken"]}
    assert listed == wanted, "README's services.hyperhive.ci table: %s" % sorted(listed ^ wanted)
    prefetch_rows = set(re.findall(r"^\| `([A-Za-z]+)` \|", section[section.index(
        "### The host unit alone"):], re.M))
    assert prefetch_rows == set(names["prefetch"]) - {"enable"}, \
        "README's services.hive-ci-prefetch table: %s" % sorted(prefetch_rows ^ (set(names["prefetch"]) - {"enable"}))
    workflow = open(os.path.join(TOP, "contrib", "forgejo", "workflows", "ci.yml")).read()
    runs_on, = re.findall(r"^\s*runs-on: \[([^]]+)\]$", workflow, re.M)
    assert [l.split(":")[0] for l in names["defaultLabels"]] == [runs_on], (runs_on, names["defaultLabels"])
    assert "nix flake check" in workflow
