"""The NixOS module and the package, evaluated: nix/module.nix and
nix/package.nix go through the offline kit in ../shared/nix-eval (nixpkgs'
real lib and option types, NixOS's own unit generation, both generations of
nixpkgs' runner module) and the generated units are checked line by line.

Nothing here builds or starts anything: see README.md in the kit for what an
evaluation proves. Without the kit or nix-instantiate (the Nix sandbox, a
user's clone) every case skips and says why; HIVE_NIX_EVAL names another
kit directory.
"""

import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile

from harness import Skip, case

TOP = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
KIT = os.environ.get("HIVE_NIX_EVAL") or os.path.join(TOP, "..", "shared", "nix-eval")
OPT = "services.hive-ci-prefetch."

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
        return "{ " + " ".join("%s = %s;" % (nix(k) if "." in k else k, nix(x))
                               for k, x in v.items()) + " }"
    raise TypeError(v)


class Raw:
    def __init__(self, text):
        self.text = text


# Stand-ins for NixOS options the kit's reduced NixOS lacks. Each reports
# what it received as a warning, so that `eval.sh warnings` shows it.
TMPFILES = """{ config, lib, ... }:
let t = lib.types; s = o: lib.mkOption { type = t.str; default = o; }; in {
  # nixpkgs' systemd.tmpfiles.settings: <name>.<path>.<type> = { mode, ... }
  options.systemd.tmpfiles.settings = lib.mkOption {
    type = t.attrsOf (t.attrsOf (t.attrsOf (t.submodule ({ name, ... }: {
      options = { type = s name; mode = s "-"; user = s "-"; group = s "-";
                  age = s "-"; argument = s ""; };
    }))));
    default = { };
  };
  config.warnings = [ ("tmpfiles=" + builtins.toJSON config.systemd.tmpfiles.settings) ];
}
"""
FORGE = """{ lib, ... }: {
  options.services.%s.enable = lib.mkEnableOption "a forge";
  config.services.%s.enable = %s;
}
"""


def module_file(options=None, extra=(), imports=()):
    """Writes a host module: services.hive-ci-prefetch = options, plus
    Nix text in extra (attribute definitions) and imports (files)."""
    body = ""
    if options:
        body += "services.hive-ci-prefetch = %s;\n" % nix(options)
    body += "\n".join(extra)
    text = "{ config, lib, ... }: {\nimports = [ %s ];\n%s\n}\n" % (" ".join(imports), body)
    path = os.path.join(tmpdir(), "host-%d.nix" % (abs(hash(text)) % 10**12))
    with open(path, "w") as fh:
        fh.write(text)
    return path


def stub(name, text):
    path = os.path.join(tmpdir(), name)
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write(text)
    return path


def tmpfiles_stub():
    return stub("tmpfiles.nix", TMPFILES)


def forge_stub(forge, enable=True):
    return stub("%s-%s.nix" % (forge, enable), FORGE % (forge, forge, nix(enable)))


def evaluate(what, host=None, runner=None, project=TOP, state_version=None):
    """(rc, stdout, stderr) of eval.sh; cached."""
    need_kit()
    key = (what, host and open(host).read(), runner, project, state_version)
    if key not in _cache:
        cmd = [os.path.join(KIT, "eval.sh"), project, what]
        if host:
            cmd += ["--host-extra", host]
        if runner:
            cmd += ["--runner-module", runner]
        if state_version:
            cmd += ["--state-version", state_version]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        _cache[key] = (p.returncode, p.stdout, p.stderr)
    return _cache[key]


def ok(what, **kw):
    rc, out, err = evaluate(what, **kw)
    assert rc == 0, "eval.sh %s failed (%d):\n%s" % (what, rc, err)
    return json.loads(out) if what in ("service", "assertions", "warnings", "package") else out


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
    % or $ (a specifier or a variable systemd would expand) fails."""
    argv, i = [], 0
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
    for w in ok("warnings", host=host)["host"]:
        if w.startswith("tmpfiles="):
            return json.loads(w[len("tmpfiles="):])
    raise AssertionError("the tmpfiles stub reported nothing")


def rejected(options, option, host_extra=()):
    """The module must refuse these options: a type error (eval.sh exit 1)
    or a failed assertion, either naming the option."""
    host = module_file(options, imports=host_extra)
    # Option values are checked when used: the unit's text uses them all.
    rc, out, err = evaluate("unit", host=host)
    if rc == 0:
        rc, out, err = evaluate("assertions", host=host)
        assert rc == 0, err
        failed = json.loads(out)["host"]
        assert any(OPT + option in m for m in failed), \
            "%s accepted %r (failed assertions: %s)" % (option, options, failed)
    else:
        assert rc == 1 and "`" + OPT + option + "'" in err, \
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
]


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
    assert ok("assertions") == {"container": [], "host": []}
    assert ok("warnings") == {"container": [], "host": []}
    # the README's option table lists every option with this default
    readme = open(os.path.join(TOP, "README.md")).read()
    for opt, default in (("stateFile", "/var/lib/hive-ci-prefetch/<containerName>.json"),
                         ("tokenFormat", '"env"'), ("placeholderOnKeep", "false"),
                         ("cleanup", "true")):
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
        "extraArgs": ["--verbose", weird],
    }
    host = module_file(options, imports=[tmpfiles_stub()])
    keys, argv = unit(host)
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
                    "--verbose", weird], argv
    for k in ("Before", "PartOf", "WantedBy"):
        assert keys.get(k) == ["container@ci2.service"], (k, keys.get(k))
    assert keys["RequiresMountsFor"] == ["/srv/containers/ci2"]
    # outside /run: no RuntimeDirectory, a tmpfiles rule, writable without "-"
    assert "RuntimeDirectory" not in keys, keys.get("RuntimeDirectory")
    assert keys["ReadWritePaths"] == ["-/srv/containers/ci2", "/srv/hive-ci"], keys["ReadWritePaths"]
    assert keys.get("StateDirectory") == ["hive-ci-prefetch/sub"], keys.get("StateDirectory")
    rules = tmpfiles(host)
    assert rules == {"hive-ci-prefetch": {"/srv/hive-ci": {"d": {
        "type": "d", "mode": "0700", "user": "root", "group": "root",
        "age": "-", "argument": ""}}}}, rules
    assert ok("assertions", host=host) == {"container": [], "host": []}


@case(sanitize=False)
def nix_module_defaults_follow_container_name(env):
    host = module_file({"containerName": "ci2"})
    keys, argv = unit(host)
    assert "--container-root=/var/lib/nixos-containers/ci2" in argv, argv
    assert "--state-file=/var/lib/hive-ci-prefetch/ci2.json" in argv, argv
    for k in ("Before", "PartOf", "WantedBy"):
        assert keys.get(k) == ["container@ci2.service"], (k, keys.get(k))
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
    host = module_file({"stateFile": "/srv/hive-state/ci.json"}, imports=[tmpfiles_stub()])
    keys, argv = unit(host)
    assert "--state-file=/srv/hive-state/ci.json" in argv, argv
    assert "StateDirectory" not in keys, keys.get("StateDirectory")
    assert "/srv/hive-state" in keys["ReadWritePaths"], keys["ReadWritePaths"]
    assert list(tmpfiles(host)["hive-ci-prefetch"]) == ["/srv/hive-state"]


@case(sanitize=False)
def nix_module_output_directory(env):
    keys, argv = unit(module_file({"output": "/run/ci/deep/token"}))
    assert keys["RuntimeDirectory"] == ["ci/deep"], keys.get("RuntimeDirectory")
    assert keys["ReadWritePaths"] == ["-/var/lib/nixos-containers/hive-ci"]
    # a system without systemd.tmpfiles (only this kit) says so
    host = module_file({"output": "/srv/hive-ci/token"})
    assert ok("warnings", host=host)["host"] == [
        "services.hive-ci-prefetch: this system has no systemd.tmpfiles; "
        "/srv/hive-ci will not be created."], ok("warnings", host=host)
    # no rule at all for the default paths
    assert tmpfiles(module_file(imports=[tmpfiles_stub()])) == {"hive-ci-prefetch": {}}


@case(sanitize=False)
def nix_module_rejects_bad_values(env):
    rejected({"retryTimeout": -1}, "retryTimeout")
    rejected({"retryTimeout": 86401}, "retryTimeout")
    rejected({"containerName": "hive ci"}, "containerName")
    rejected({"containerName": "../x"}, "containerName")
    for opt in ("output", "coreTokenFile", "containerRoot", "runnerFile", "stateFile"):
        rejected({opt: "relative/file"}, opt)
        rejected({opt: "/a/../b"}, opt)
        rejected({opt: "/with space/x"}, opt)
        rejected({opt: "/100%/x"}, opt)
    rejected({"output": Raw("/run/hive-ci/path-literal")}, "output")  # a Nix path
    rejected({"output": "/run/token"}, "output")  # all of /run writable
    rejected({"output": "/token"}, "output")
    rejected({"output": "/var/lib/token"}, "output")
    rejected({"stateFile": "/run/state.json"}, "stateFile")
    rejected({"tokenFormat": "json"}, "tokenFormat")
    rejected({"cleanup": "no"}, "cleanup")


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


def check_module(host_options=None, extra=(), imports=(), runner=None):
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
    return [w[len("check-module: "):] for w in ok("warnings", host=host)["host"]
            if w.startswith("check-module: ")]


@case(sanitize=False)
def nix_flake_module_check_passes_and_can_fail(env):
    for gen in ("labels", "tokenhash"):
        assert check_module(runner=gen) == [], gen
    assert check_module({"tokenFormat": "raw"}, runner="tokenhash") == []
    assert check_module({"tokenFormat": "raw"}, runner="labels") == [
        'the runner reads /run/hive-ci/runner-token as an EnvironmentFile, '
        'but tokenFormat is not "env"']
    assert check_module(imports=[forge_stub("forgejo")]) == []
    broken = check_module(extra=[
        "systemd.services.hive-ci-prefetch.before = lib.mkForce [ ];",
        "systemd.services.hive-ci-prefetch.after = lib.mkForce [ ];",
        "systemd.services.hive-ci-prefetch.wants = [ \"forgejo.service\" ];",
        "systemd.services.hive-ci-prefetch.serviceConfig.ExecStart = "
        "lib.mkForce \"/bin/hive-ci-prefetch --output=/run/x\";"],
        imports=[forge_stub("forgejo")])
    assert broken[:3] == ["Before= does not name container@hive-ci.service",
                          "After= lacks the forge's unit (forgejo.service)",
                          "the unit requires or wants the forge's unit; After= only"], broken
    assert "ExecStart= does not start with the package's binary" in broken, broken
    assert "ExecStart= lacks --output=/run/hive-ci/runner-token" in broken, broken


@case(sanitize=False)
def nix_module_orders_after_the_forge_on_this_host(env):
    # the kit has no services.forgejo/gitea: the module must evaluate anyway
    assert ok("service")["after"] == ["network.target"]
    for forge in ("forgejo", "gitea"):
        svc = ok("service", host=module_file(imports=[forge_stub(forge)]))
        assert svc["after"] == ["network.target", forge + ".service"], svc["after"]
        assert svc["requires"] == [] and svc["wants"] == [], (svc["requires"], svc["wants"])
        svc = ok("service", host=module_file(imports=[forge_stub(forge, False)]))
        assert svc["after"] == ["network.target"], svc["after"]
    svc = ok("service", host=module_file(imports=[forge_stub("forgejo"), forge_stub("gitea")]))
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
    _cache.pop(("package", None, None, project, None), None)
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
              "a.out", "core", "out-2027/anything", "man/hive-ci-prefetch.8.html"]
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
              "tests/tls/server.key", "tests/sleep_overshoot.c"]
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


@case(sanitize=False)
def nix_flake_exports_a_module_value_and_a_module_check(env):
    need_kit()
    expr = """
      let
        lib = import %s/nixpkgs-lib/lib;
        flake = import %s/flake.nix;
        out = flake.outputs { self = out; nixpkgs = { inherit lib; }; };
        m = out.nixosModules.default;
      in {
        type = builtins.typeOf m;
        imports = map toString (m.imports or [ ]);
        checks = builtins.attrNames out.checks.x86_64-linux;
      }""" % (KIT, TOP)
    p = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--readonly-mode",
                        "--store", "dummy://", "-E", expr], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    # `nix flake check` wants a module (a function or an attribute set), not a path
    assert got["type"] in ("set", "lambda"), got
    assert got["imports"] == [os.path.join(TOP, "nix", "module.nix")], got
    assert "module" in got["checks"] and "default" in got["checks"], got
