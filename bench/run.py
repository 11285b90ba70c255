#!/usr/bin/env python3
"""Benchmark hive-ci-prefetch against the libcurl floor (issue 14).

Four programs run against the project's test forge (tests/forge.py, started
in this process), interleaved run by run so that machine noise hits all alike:

  hive-ci-prefetch   the binary that was built
  floor (b)          bench/floor_client.c: the least possible client, the same
                     requests on one easy handle, token from the JSON with
                     jansson, write + fsync + rename; no checks, no policy
  floor (a)          bench/floor_init.c: curl_global_init + curl_easy_init
  baseline           bench/baseline.sh, the bash + curl + jq script's approach

in four scenarios:

  fast path    a registered runner (lookup 200, then the token), the tool
               with --state-file= (memory off)
  first        no .runner: the token fetched and written (the tool's state
               file absent: a fresh host)
  steady       a registered runner and a --state-file whose content will not
               change (primed by the warm-up runs): a steady reboot
  host         a steady boot with --registration=host: the .runner the tool
               registered and wrote itself on an earlier boot, and the state
               file of those boots; a kept runner needs no registration
               token, so floor (b) makes the lookup only and writes the
               placeholder

and reports median and p90 wall time, peak RSS (/usr/bin/time -f %M),
requests and connections per run, the ratios tool/(b), tool/(a) and
baseline/tool, the reaction to a forge coming up, and the test forge's own
round trip.  Then, for every flavour of the test forge and both modes, a
host from its first boot (the tool, then the container's runner unit as
tests/runner_sim.py plays it) and three steady boots: the requests and
connections of the last one, by name (f.requests).  Targets, printed as
PASS/FAIL lines:

  fast path median <= 1.15x floor (b)
  peak RSS <= floor (b) + 1 MiB (in every scenario)
  reaction to a forge coming up: median < 150 ms
  steady reboot: exactly two requests (lookup, token) on one connection, and
  only the output written (the state file's inode and mtime unchanged,
  nothing else appeared or changed), in every run
  host steady boot: exactly one request (the lookup) on one connection, and
  only the output written, in every run
  host mode, every flavour with a lookup route: one request per steady boot
  both modes, every flavour with a lookup route: the steady boot asks one
  lookup, on the route the state file remembers, answered 200
  every flavour and mode: the steady boot replaces neither the state file
  nor .runner
The baseline's speed-up and the flavours without a lookup route (what they
ask instead) are reported, not judged.

A binary that predates --state-file (its --help does not list it) is run
without it; the bench says so, and the steady-reboot target fails, as it must.
One that predates --registration gets no host scenario and no host column,
and the host-mode targets fail.

Exits 0 if every target holds, 1 if one is missed, 2 if a program misbehaved.
Every path is temporary: no run touches /run/hive-ci,
/var/lib/hive-ci-prefetch or /var/lib/hyperhive.  Standard library only.
"""

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
import forge  # noqa: E402  (tests/forge.py)
import runner_sim  # noqa: E402  (tests/runner_sim.py)

ADMIN_TOKEN = "adm_0123456789abcdef0123456789abcdef0123"
REG_TOKEN = "R" * 40
RUNNER_ID, RUNNER_UUID = 1, "3c5e1f0a-6a53-4a8e-9d36-1f0e5b2c7d11"
RUNNER_FILE = "/var/lib/gitea-runner/hive/.runner"
LOOKUP_PATH = "/api/v1/admin/runners/%d" % RUNNER_ID
TOKEN_PATH = "/api/v1/admin/runners/registration-token"
PROTOCOL = "/api/actions/runner.v1.RunnerService/"
TIME = "/usr/bin/time"
WARMUP = 2
ORDER_SEED = 14
PROCESS_TIMEOUT = 30  # seconds: no run of any program should come near
FORGE_STALL_S = 0.020  # a forge round trip this slow would be the bottleneck

TARGET_FLOOR_RATIO = 1.15
TARGET_RSS_OVER_FLOOR_KIB = 1024
TARGET_REACTION_MS = 150.0

SCENARIOS = ("fast", "first", "steady", "host")
NAMES = {"fast": "fast path", "first": "first registration",
         "steady": "steady reboot", "host": "host steady boot"}
TITLES = {
    "fast": "fast path: registered runner (tool: --state-file= , memory off)",
    "first": "first registration: no .runner (tool: state file absent)",
    "steady": "steady reboot: registered runner, state file unchanged",
    "host": "steady boot, host registration: the tool's own .runner and state "
            "file (--registration=host; floor (b): the lookup only)",
}


class Misbehaved(Exception):
    pass


def finish(proc, name):
    """Waits for proc; a program that hangs is killed and reported.

    A blocking wait (Popen.wait with a timeout polls, with sleeps that would
    be counted in the timings); a timer thread kills a hung program."""
    timer = threading.Timer(PROCESS_TIMEOUT, proc.kill)
    timer.start()
    try:
        rc = proc.wait()
    finally:
        timer.cancel()
    if rc == -signal.SIGKILL:
        raise Misbehaved("%s did not exit within %d s" % (name, PROCESS_TIMEOUT))
    return rc


# -- tools and the machine ----------------------------------------------------

def tmpfs_dir():
    """A tmpfs for the output files, as /run is in production, or None."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = {fields[1]: fields[2] for fields in
                      (line.split() for line in f) if len(fields) > 2}
    except OSError:
        return None
    for d in ("/dev/shm", "/run", "/tmp"):
        if mounts.get(d) == "tmpfs" and os.access(d, os.W_OK):
            return d
    return None


def fstype(path):
    """The type of the file system holding path ("ext4", "tmpfs", ...)."""
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2:
                    mnt = fields[1].replace("\\040", " ")
                    inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                    if inside and len(mnt) >= len(best):
                        best, kind = mnt, fields[2]
    except OSError:
        pass
    return kind


def ensure_tools():
    """curl, jq (the baseline) and /usr/bin/time: present, or apt-get them."""
    def missing():
        return [p for p, ok in (("curl", shutil.which("curl")),
                                ("jq", shutil.which("jq")),
                                ("time", os.access(TIME, os.X_OK))) if not ok]

    need = missing()
    if need and os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing %s" % " ".join(need), file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq"] + need
        if subprocess.call(cmd, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) != 0:
            subprocess.call(["apt-get", "update", "-qq"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.call(cmd, env=env, stdout=subprocess.DEVNULL)
        need = missing()
    if "curl" in need or "jq" in need:
        sys.exit("bench: the baseline needs curl and jq: run "
                 "'sudo apt-get install curl jq time'")
    return "time" not in need


def machine():
    """nproc, CPU model, kernel, libcurl and jansson versions."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def pkg(name):
        try:
            return subprocess.run(["pkg-config", "--modversion", name],
                                  capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"
    return "nproc %d, %s, kernel %s, libcurl %s, jansson %s" % (
        os.cpu_count() or 0, cpu, platform.release(), pkg("libcurl"),
        pkg("jansson"))


def help_text(binary, env):
    """The binary's --help: which options it has (--state-file since the
    stable-token change, --registration since host registration)."""
    try:
        return subprocess.run([binary, "--help"], capture_output=True,
                              text=True, env=env,
                              timeout=PROCESS_TIMEOUT).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Misbehaved("cannot run %s --help: %s" % (binary, e))


def request_name(r):
    """A request of f.requests in a few words: "lookup A 200" for
    GET /api/v1/admin/actions/runners/7 answered 200 (R: /admin/runners/,
    A: /admin/actions/runners/, both under /api/v1), "token R", "token A",
    "token A POST"; the runner protocol's methods by name ("Declare")."""
    path, method = r["path"], r.get("method", "GET")
    if path.startswith(PROTOCOL):
        name = path[len(PROTOCOL):]
    else:
        rest = path[len(forge.API_PREFIX):] if path.startswith(
            forge.API_PREFIX) else path
        for prefix, tag in (("/admin/actions/runners/", "A"),
                            ("/admin/runners/", "R")):
            if rest.startswith(prefix):
                what = rest[len(prefix):]
                name = "%s %s" % ("token" if what == "registration-token"
                                  else "lookup", tag)
                if method != "GET":
                    name += " " + method
                break
        else:
            name = "%s %s" % (method, path)
    status = r.get("status")
    return name + (" %s" % status if status is not None else "")


# -- statistics ---------------------------------------------------------------

def median(xs):
    return statistics.median(xs)


def p90(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def ms(seconds):
    return "%.1f ms" % (seconds * 1000)


def mib(kib):
    return "%.1f MiB" % (kib / 1024)


# -- one program in its own directories ---------------------------------------

class Program:
    """One program; its files per scenario under its own directories:
    container root and state file on disk (as /var/lib in production), the
    output on a tmpfs (as /run/hive-ci)."""

    # The runner the tool registered in the host scenario's set-up; the
    # others get a .runner of that id there (RUNNER_ID everywhere else).
    host_runner_id = None

    def __init__(self, name, label, argv, tmp, run_dir):
        self.name = name
        self.label = label
        self.argv = argv
        self.dir = os.path.join(tmp, name)
        self.run_dir = os.path.join(run_dir, name)
        os.makedirs(self.dir)
        self.log = open(os.path.join(self.dir, "stderr.log"), "ab")

    # what differs between programs
    def command(self, scenario, url, token_file, retry_timeout=10):
        raise NotImplementedError

    def expect(self, scenario):
        """(token written to the output, or None for no output)."""
        raise NotImplementedError

    # the rest is common
    def paths(self, scenario):
        root = os.path.join(self.dir, scenario, "root")
        state = os.path.join(self.dir, scenario, "state", "hive-ci.json")
        out = os.path.join(self.run_dir, scenario, "runner-token")
        return root, root + RUNNER_FILE, state, out

    def common_args(self, scenario, url, token_file, retry_timeout):
        root, _, _, out = self.paths(scenario)
        return ["--forge-url=" + url, "--core-token-file=" + token_file,
                "--container-root=" + root, "--runner-file=" + RUNNER_FILE,
                "--output=" + out, "--retry-timeout=%d" % retry_timeout]

    def prepare(self, scenario):
        """Before each run: .runner present or not, output gone; the state
        file gone for a first registration, kept otherwise."""
        _, runner, state, out = self.paths(scenario)
        for d in (os.path.dirname(runner), os.path.dirname(state),
                  os.path.dirname(out)):
            os.makedirs(d, exist_ok=True)
        for path in (out,) + ((runner, state) if registering(scenario) else ()):
            if os.path.lexists(path):
                os.unlink(path)
        if not registering(scenario) and not os.path.exists(runner):
            with open(runner, "w") as f:
                json.dump({"WARNING": "This file is automatically generated "
                           "by act-runner.", "id": runner_id(scenario),
                           "uuid": RUNNER_UUID, "name": "hive",
                           "token": "0" * 40,
                           "address": "http://127.0.0.1:3000",
                           "labels": ["native:host"]}, f, indent=2)
                f.write("\n")

    def spawn(self, argv, env):
        self.log.write(b"$ %s\n" % " ".join(argv).encode())
        self.log.flush()
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=self.log,
                                    env=env)
        except OSError as e:
            raise Misbehaved("%s: cannot run %s: %s" % (self.name, argv[0],
                                                       e.strerror))

    def check(self, scenario, rc):
        _, runner, _, out = self.paths(scenario)
        want = self.expect(scenario)
        try:
            with open(out) as f:
                got = f.read()
        except FileNotFoundError:
            got = None
        except OSError as e:
            got = "(%s)" % e.strerror
        problems = []
        if rc != 0:
            problems.append("exit %s" % rc)
        if want is None and got is not None:
            problems.append("wrote an output")
        elif want is not None and got != "TOKEN=%s\n" % want:
            problems.append("output %r, wanted %r" % ((got or "")[:60],
                                                       "TOKEN=%s\n" % want))
        if os.path.exists(runner) == registering(scenario):
            problems.append(".runner %s" % ("kept" if registering(scenario)
                                            else "gone"))
        if problems:
            self.log.flush()
            raise Misbehaved("%s, %s: %s (see %s)" % (
                self.name, scenario, "; ".join(problems), self.log.name))

    def snapshot(self, scenario):
        """Every file and directory of this scenario, but the output and
        the directory it is renamed into: path -> (inode, mtime, ctime, size)."""
        _, _, _, out = self.paths(scenario)
        skip = {out, os.path.dirname(out)}
        seen = {}
        for top in (os.path.join(self.dir, scenario),
                    os.path.join(self.run_dir, scenario)):
            for d, dirs, files in os.walk(top):
                for path in [d] + [os.path.join(d, n) for n in files]:
                    if path in skip:
                        continue
                    st = os.lstat(path)
                    seen[path] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns,
                                  st.st_size)
        return seen


def registering(scenario):
    return scenario in ("first", "reaction")


def runner_id(scenario):
    return Program.host_runner_id if scenario == "host" else RUNNER_ID


def expected_paths(scenario):
    """What a steady boot must ask, in this order (None: not checked)."""
    if scenario == "steady":
        return [LOOKUP_PATH, TOKEN_PATH]
    if scenario == "host":
        return ["/api/v1/admin/runners/%d" % Program.host_runner_id]
    return None


class Tool(Program):
    def __init__(self, binary, state, *rest):
        super().__init__("hive-ci-prefetch", "tool", [binary], *rest)
        self.state = state  # the binary knows --state-file

    def command(self, scenario, url, token_file, retry_timeout=10):
        argv = self.argv + self.common_args(scenario, url, token_file,
                                            retry_timeout)
        if self.state:
            # Always our own: never the default under /var/lib.
            _, _, state, _ = self.paths(scenario)
            argv.append("--state-file=" + ("" if scenario == "fast" else state))
        if scenario == "host":
            argv.append("--registration=host")
        return argv

    def expect(self, scenario):
        if scenario == "host":
            return "placeholder"
        # Before the stable-token change a kept .runner got the placeholder.
        return REG_TOKEN if self.state or registering(scenario) else "placeholder"

    def set_up_host(self, f, token_file, env):
        """The host scenario's earlier boots: the first registers the runner
        (Register) and writes .runner, the second confirms it, so the state
        file holds the runner and the lookup route that answered.  Returns
        the runner's id."""
        _, runner, state, out = self.paths("host")
        for d in (os.path.dirname(state), os.path.dirname(out)):
            os.makedirs(d, exist_ok=True)
        for what in ("first boot", "reboot"):
            if os.path.lexists(out):
                os.unlink(out)
            rc = finish(self.spawn(self.command("host", f.url, token_file), env),
                        self.name)
            try:
                with open(runner) as fh:
                    rid = json.load(fh)["id"]
                with open(out) as fh:
                    got = fh.read()
            except (OSError, ValueError, KeyError) as e:
                raise Misbehaved("%s, host set-up, %s: exit %s, %s (see %s)" % (
                    self.name, what, rc, e, self.log.name))
            if rc != 0 or got != "TOKEN=placeholder\n":
                raise Misbehaved("%s, host set-up, %s: exit %s, output %r "
                                 "(see %s)" % (self.name, what, rc, got[:60],
                                               self.log.name))
        return rid


class Baseline(Program):
    def __init__(self, script, *rest):
        super().__init__("baseline", "baseline", ["bash", script], *rest)

    def command(self, scenario, url, token_file, retry_timeout=10):
        return self.argv + self.common_args(scenario, url, token_file,
                                            retry_timeout)

    def expect(self, scenario):
        return REG_TOKEN if registering(scenario) else "placeholder"


class FloorClient(Program):
    def __init__(self, binary, *rest):
        super().__init__("floor-client", "floor (b)", [binary], *rest)

    def command(self, scenario, url, token_file, retry_timeout=10):
        _, _, _, out = self.paths(scenario)
        lookup = [] if registering(scenario) else [str(runner_id(scenario))]
        if scenario == "host":
            lookup.append("placeholder")  # the lookup only
        return self.argv + [url, token_file, out] + lookup

    def expect(self, scenario):
        return "placeholder" if scenario == "host" else REG_TOKEN


class FloorInit(Program):
    def __init__(self, binary, *rest):
        super().__init__("floor-init", "floor (a)", [binary], *rest)

    def command(self, scenario, url, token_file, retry_timeout=10):
        return list(self.argv)

    def expect(self, scenario):
        return None


def order(programs, i):
    """A fresh order each round, the same from bench to bench: no program
    always runs right after the same other one (after the baseline's eight
    processes, say), so neither the machine's drift nor what ran just before
    favours one of them."""
    return random.Random(ORDER_SEED + i).sample(programs, len(programs))


# -- scenarios ----------------------------------------------------------------

class Result:
    def __init__(self):
        self.times = []
        self.traffic = []   # (requests, connections) per counted run
        self.problems = []  # steady reboot: what went wrong, run by run
        self.rss = []       # KiB


def run_once(prog, scenario, f, token_file, env, steady_check):
    """One run: wall time, and what it did to the forge and the files."""
    prog.prepare(scenario)
    before = prog.snapshot(scenario) if steady_check else None
    n0, c0 = len(f.requests), f.connections
    argv = prog.command(scenario, f.url, token_file)
    t0 = time.perf_counter()
    proc = prog.spawn(argv, env)
    rc = finish(proc, prog.name)
    elapsed = time.perf_counter() - t0
    prog.check(scenario, rc)
    new = f.requests[n0:]
    conns = f.connections - c0
    problems = []
    if steady_check:
        paths = [r["path"] for r in new]
        if paths != expected_paths(scenario) or conns != 1 or \
                len({r["conn"] for r in new}) != 1:
            problems.append("%d request(s) %s on %d connection(s)" % (
                len(new), ", ".join(request_name(r) for r in new) or "-",
                conns))
        after = prog.snapshot(scenario)
        changed = sorted(os.path.relpath(x, prog.dir) if x.startswith(prog.dir)
                         else os.path.relpath(x, prog.run_dir)
                         for x in set(before) | set(after)
                         if before.get(x) != after.get(x))
        if changed:
            problems.append("changed or appeared: " + ", ".join(changed))
    return elapsed, (len(new), conns), problems


def bench_scenario(programs, f, token_file, env, runs, scenario):
    res = {p.name: Result() for p in programs}
    for i in range(-WARMUP, runs):  # warm-up rounds, not counted
        for p in order(programs, i):
            t, traffic, problems = run_once(
                p, scenario, f, token_file, env,
                expected_paths(scenario) is not None and i >= 0)
            if i >= 0:
                r = res[p.name]
                r.times.append(t)
                r.traffic.append(traffic)
                r.problems.extend("run %d: %s" % (i + 1, x) for x in problems)
    return res


def bench_rss(programs, f, token_file, env, runs, scenario, have_time, res):
    """Peak RSS (KiB) per run, under /usr/bin/time: a small forking parent,
    so the figure is the program's, not this interpreter's."""
    tmp = os.path.join(os.path.dirname(programs[0].dir), "rss")
    for i in range(runs):
        for p in order(programs, i):
            p.prepare(scenario)
            argv = p.command(scenario, f.url, token_file)
            if have_time:
                proc = p.spawn([TIME, "-f", "%M", "-o", tmp] + argv, env)
                rc = finish(proc, p.name)
                with open(tmp) as fh:
                    kib = int(fh.read().split()[-1])
            else:
                # A direct child of this interpreter: its ru_maxrss may count
                # the interpreter's pages at spawn, so this is an upper bound.
                proc = p.spawn(argv, env)
                _, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = rc = os.waitstatus_to_exitcode(status)
                kib = ru.ru_maxrss
            p.check(scenario, rc)
            res[p.name].rss.append(kib)


def spawn_floor(env, runs):
    """What starting any process costs this harness: /bin/true's median."""
    true = shutil.which("true") or "/bin/true"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen([true], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, env=env)
        finish(p, "true")
        times.append(time.perf_counter() - t0)
    return median(times)


def forge_round_trip(f, n=200):
    """The test forge's own cost, from a keep-alive client in this process:
    (connect + first request, median of the next n on the same connection).
    An upper bound: the client's own Python time is in it."""
    conn = http.client.HTTPConnection(f.host, f.port, timeout=5)
    headers = {"Authorization": "token " + ADMIN_TOKEN}
    times = []
    try:
        for _ in range(n + 1):
            t0 = time.perf_counter()
            if conn.sock is None:
                conn.connect()
            conn.request("GET", TOKEN_PATH, headers=headers)
            resp = conn.getresponse()
            resp.read()
            times.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise Misbehaved("test forge: token route answered %d"
                                 % resp.status)
    finally:
        conn.close()
    if median(times[1:]) > FORGE_STALL_S:
        raise Misbehaved("the test forge takes %s per request on a kept-alive "
                         "connection: is TCP_NODELAY off (a delayed-ACK stall)?"
                         % ms(median(times[1:])))
    return times[0], median(times[1:])


def bench_reaction(programs, token_file, env, runs):
    """First registration while the forge is down; it comes up 1.2 to 1.8 s
    after the program started.  Time from listen() to the program's exit."""
    out = {p.name: [] for p in programs}
    for i in range(runs):
        phase = 1.2 + 0.6 * i / runs
        for p in programs if i % 2 == 0 else programs[::-1]:
            p.prepare("reaction")
            f = forge.Forge(flavour="design", admin_token=ADMIN_TOKEN,
                            reg_token=REG_TOKEN)
            listening = []
            try:
                f.start(delay=phase)
                t_spawn = time.monotonic()
                server = getattr(f, "_server", None)
                if server is not None:  # note the moment it really listens
                    activate = server.server_activate

                    def noted(activate=activate, listening=listening):
                        activate()
                        listening.append(time.monotonic())
                    server.server_activate = noted
                proc = p.spawn(p.command("reaction", f.url, token_file), env)
                rc = finish(proc, p.name)
                t_exit = time.monotonic()
            finally:
                f.stop()
            p.check("reaction", rc)
            t_listen = listening[0] if listening else t_spawn + phase
            if t_exit < t_listen:
                raise Misbehaved("%s exited before the forge listened" % p.name)
            out[p.name].append((phase, t_exit - t_listen))
    return out


# -- requests per steady boot, every flavour and both modes --------------------

MODES = ("container", "host")
STEADY_BOOTS = 3      # after the registering boot; the last one is counted
SIM_GENERATION = "labels"
SIM_LABELS = ["hive-ci:host"]  # the tool's default --labels


def lookup_flavours():
    """The test forge's flavours that have an admin lookup route."""
    return [name for name, (_, routes) in forge.FLAVOURS.items()
            if any(kind == "lookup" for _, _, kind in routes)]


class Boots:
    """One flavour and mode: what the tool asked the forge on each boot."""

    def __init__(self, flavour, mode):
        self.flavour, self.mode = flavour, mode
        self.boots = []          # per boot: (requests, connections)
        self.rewrote = []        # what the last boot changed but the output

    @property
    def last(self):
        return self.boots[-1]


def count_boots(binary, flavour, mode, top, token_file, env, has_mode):
    """A host on this flavour, from its first boot: the tool, then the
    container's runner unit (tests/runner_sim.py, the NixOS 25.11 module;
    in host mode its ExecStartPre disabled, as the module sets it), a
    registering boot and STEADY_BOOTS steady ones.  Every boot must leave a
    working runner and the output the mode writes."""
    d = os.path.join(top, flavour + "-" + mode)
    root = os.path.join(d, "root")
    out = os.path.join(d, "run", "runner-token")
    state = os.path.join(d, "state", "hive-ci.json")
    log_path = os.path.join(d, "stderr.log")
    os.makedirs(os.path.dirname(out))
    want = "TOKEN=%s\n" % ("placeholder" if mode == "host" else REG_TOKEN)
    result = Boots(flavour, mode)
    with forge.Forge(flavour=flavour, admin_token=ADMIN_TOKEN,
                     reg_token=REG_TOKEN) as f, open(log_path, "ab") as log:
        sim = runner_sim.RunnerModule(SIM_GENERATION, root, out, f, name="hive",
                                      labels=list(SIM_LABELS),
                                      exec_start_pre=mode == "container")
        argv = [binary, "--forge-url=" + f.url,
                "--core-token-file=" + token_file, "--container-root=" + root,
                "--runner-file=" + sim.runner_inside, "--output=" + out,
                "--state-file=" + state, "--retry-timeout=5"]
        if has_mode:  # else a binary from before host registration
            argv.append("--registration=" + mode)
        kept = {"the state file": state, ".runner": sim.runner_file}
        for boot in range(1 + STEADY_BOOTS):
            sim.stop()
            if os.path.exists(out):
                os.unlink(out)  # /run is emptied on every boot
            before = {k: signature(v) for k, v in kept.items()}
            n0, c0 = len(f.requests), f.connections
            log.write(b"$ %s\n" % " ".join(argv).encode())
            log.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log,
                                    env=env)
            rc = finish(proc, "%s (%s, %s mode)" % (binary, flavour, mode))
            result.boots.append((f.requests[n0:], f.connections - c0))
            # What this boot's tool replaced (by inode, mtime and size: the
            # runner unit's systemd chowns the runner's directory on every
            # start, which moves ctimes); the last boot's is reported.
            result.rewrote = [k for k, v in kept.items()
                              if signature(v) != before[k]]
            try:
                with open(out) as fh:
                    got = fh.read()
            except OSError:
                got = None
            b = sim.boot()
            if rc != 0 or got != want or not b.works:
                raise Misbehaved(
                    "%s, %s mode, boot %d: exit %d, output %s, runner %s "
                    "(see %s)" % (flavour, mode, boot + 1, rc,
                                  "as wanted" if got == want else "wrong",
                                  "works" if b.works else "DOWN: " + b.why,
                                  log_path))
    return result


def signature(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def bench_requests(binary, modes, tmp, token_file, env):
    """{(flavour, mode): Boots} for every flavour of the test forge."""
    top = os.path.join(tmp, "flavours")
    os.makedirs(top)
    return {(fl, mode): count_boots(binary, fl, mode, top, token_file, env,
                                    "host" in modes)
            for fl in forge.FLAVOURS for mode in modes}


def lookup_route_of(flavour):
    for _, path, kind in forge.FLAVOURS[flavour][1]:
        if kind == "lookup":
            return "A" if path.startswith("/admin/actions/") else "R"
    return "none"


def boot_text(boots):
    reqs, conns = boots.last
    return "%d req / %d conn" % (len(reqs), conns)


def asked(boots):
    return ", ".join(request_name(r) for r in boots.last[0]) or "nothing"


def report_requests(counts, modes):
    print("requests per steady boot: every flavour of the test forge, both "
          "modes; each host from its first boot (the tool, then the runner "
          "unit of tests/runner_sim.py, %s generation%s), then %d steady "
          "boots; the last one counted" % (
              SIM_GENERATION, ", ExecStartPre off in host mode"
              if "host" in modes else "", STEADY_BOOTS))
    print("R = /api/v1/admin/runners/, A = /api/v1/admin/actions/runners/; "
          "\"per reboot\": requests on reboots 1..%d" % STEADY_BOOTS)
    head = "%-11s%-8s" % ("flavour", "lookup")
    for mode in modes:
        head += "%-18s%-12s" % (mode + " mode", "per reboot")
    head = head.rstrip()
    print(head)
    print("-" * len(head))
    for fl in forge.FLAVOURS:
        line = "%-11s%-8s" % (fl, lookup_route_of(fl))
        for mode in modes:
            b = counts[(fl, mode)]
            line += "%-18s%-12s" % (boot_text(b), " ".join(
                str(len(r)) for r, _ in b.boots[1:]))
        print(line.rstrip())
    print("what the last steady boot asked (and replaced, if anything):")
    for fl in forge.FLAVOURS:
        for i, mode in enumerate(modes):
            b = counts[(fl, mode)]
            print("  %-11s%-11s%s%s" % (fl if i == 0 else "", mode, asked(b),
                                       "; REPLACED " + ", ".join(b.rewrote)
                                       if b.rewrote else ""))
    print()


def request_checks(counts, modes):
    """The targets of the requests table, and its INFO lines."""
    lookups = lookup_flavours()
    others = [fl for fl in forge.FLAVOURS if fl not in lookups]
    checks, info = [], []
    if "host" not in modes:
        checks.append(("host steady boot: 1 request with a lookup route",
                       False, "the binary has no --registration"))
    else:
        host = {fl: counts[(fl, "host")] for fl in lookups}
        ok = all(len(b.last[0]) == 1 and b.last[1] == 1 for b in host.values())
        checks.append((
            "host steady boot: 1 request with a lookup route", ok,
            ", ".join("%s %d%s" % (fl, len(b.last[0]), "" if len(b.last[0]) == 1
                                   else " (%s)" % asked(b))
                      for fl, b in host.items())))
    # One lookup on the remembered route; in host mode on a forge whose
    # runner objects show no uuid (Gitea 1.24+), one Declare instead.
    wrong = []
    for fl in lookups:
        for mode in modes:
            b = counts[(fl, mode)]
            seen = [request_name(r) for r in b.last[0]
                    if request_name(r).startswith(("lookup ", "Declare"))]
            want = ["lookup %s 200" % lookup_route_of(fl)]
            if mode == "host" and forge.family_of(fl) == "gitea":
                want = ["Declare 200"]
            if seen != want:
                wrong.append("%s %s: %s" % (fl, mode, ", ".join(seen) or "none"))
    checks.append(("remembered lookup route: 1 lookup (Gitea, host: 1 Declare)",
                   not wrong, "; ".join(wrong) if wrong else
                   "%d flavours (%s mode), each on its own route, answered 200"
                   % (len(lookups), " and ".join(modes))))
    replaced = ["%s %s: %s" % (fl, mode, ", ".join(b.rewrote))
                for (fl, mode), b in counts.items() if b.rewrote]
    checks.append(("steady boots replace no state file or .runner",
                   not replaced, "; ".join(replaced) if replaced else
                   "%d flavours (%s mode)" % (len(forge.FLAVOURS),
                                              " and ".join(modes))))
    for fl in others:
        info.append("INFO no lookup route, %s (not judged): %s" % (fl, "; ".join(
            "%s mode %s (%s)" % (mode, boot_text(counts[(fl, mode)]),
                                 asked(counts[(fl, mode)])) for mode in modes)))
    more = ["%s %s (%s)" % (fl, boot_text(counts[(fl, "container")]),
                            asked(counts[(fl, "container")]))
            for fl in lookups if len(counts[(fl, "container")].last[0]) > 2]
    info.append("INFO container mode, steady boot (not judged): lookup + token "
                "= 2 on %s; more on %s" % (
                    ", ".join(fl for fl in lookups
                              if len(counts[(fl, "container")].last[0]) == 2)
                    or "none", "; ".join(more) or "none"))
    return checks, info


# -- report -------------------------------------------------------------------

def traffic_text(traffic):
    reqs = sorted({r for r, _ in traffic})
    conns = sorted({c for _, c in traffic})

    def span(xs):
        return str(xs[0]) if len(xs) == 1 else "%d..%d" % (xs[0], xs[-1])
    return "%s req / %s conn" % (span(reqs), span(conns))


def report_scenario(scenario, programs, res, tool, fb, fa, base):
    width = 22 + 18 * len(programs)
    print(TITLES[scenario])
    print("%-22s" % "" + "".join("%18s" % p.label for p in programs))
    print("-" * width)
    rows = [("median", lambda r: ms(median(r.times))),
            ("p90", lambda r: ms(p90(r.times))),
            ("peak RSS (median)", lambda r: mib(median(r.rss))),
            ("requests/connections", lambda r: traffic_text(r.traffic))]
    for label, fn in rows:
        print("%-22s" % label + "".join("%18s" % fn(res[p.name])
                                        for p in programs))
    t, b, a, s = (median(res[p.name].times) for p in (tool, fb, fa, base))
    paired = median(x / y for x, y in zip(res[tool.name].times,
                                          res[fb.name].times))
    print("tool/(b) %.2fx (round by round %.2fx)   tool/(a) %.2fx   "
          "baseline/tool %.1fx   RSS tool-(b) %+.1f MiB" % (
              t / b, paired, t / a, s / t,
              round((median(res[tool.name].rss) - median(res[fb.name].rss)) / 1024, 1)
              + 0.0))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(REPO, "hive-ci-prefetch"))
    ap.add_argument("--floor-init", default=os.path.join(REPO, "build", "floor_init"))
    ap.add_argument("--floor-client",
                    default=os.path.join(REPO, "build", "floor_client"))
    ap.add_argument("--baseline", default=os.path.join(HERE, "baseline.sh"))
    ap.add_argument("--runs", type=int, default=60,
                    help="counted runs per program and scenario")
    ap.add_argument("--reaction-runs", type=int, default=8)
    ap.add_argument("--rss-runs", type=int, default=5,
                    help="runs per program and scenario under /usr/bin/time")
    args = ap.parse_args()
    if args.runs < 1 or args.reaction_runs < 1 or args.rss_runs < 1:
        ap.error("run counts must be at least 1")

    have_time = ensure_tools()
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                "no_proxy", "journal_stream", "curl_home")}
    env["LC_ALL"] = "C"
    tmp = tempfile.mkdtemp(prefix="hive-bench-")
    run_fs = tmpfs_dir()
    run_dir = tempfile.mkdtemp(prefix="hive-bench-run-", dir=run_fs or tmp)
    programs = []
    keep = False
    try:
        usage = help_text(os.path.abspath(args.binary), env)
        state = "--state-file" in usage
        # Host registration needs the state file too (what it wrote).
        host = state and "--registration" in usage
        scenarios = SCENARIOS if host else tuple(x for x in SCENARIOS
                                                 if x != "host")
        modes = MODES if host else ("container",)
        secrets = os.path.join(tmp, "secrets")
        os.makedirs(secrets, mode=0o700)
        token_file = os.path.join(secrets, "forge-core-token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
            fh.write(ADMIN_TOKEN + "\n")
        rest = (tmp, run_dir)
        tool = Tool(os.path.abspath(args.binary), state, *rest)
        fb = FloorClient(os.path.abspath(args.floor_client), *rest)
        fa = FloorInit(os.path.abspath(args.floor_init), *rest)
        base = Baseline(os.path.abspath(args.baseline), *rest)
        programs = [tool, fb, fa, base]

        floor = spawn_floor(env, args.runs)
        results = {}
        with forge.Forge(flavour="design", admin_token=ADMIN_TOKEN,
                         reg_token=REG_TOKEN,
                         runners={RUNNER_ID: RUNNER_UUID}) as f:
            rt_first, rt = forge_round_trip(f)
            if host:
                Program.host_runner_id = tool.set_up_host(f, token_file, env)
            for scenario in scenarios:
                res = bench_scenario(programs, f, token_file, env, args.runs,
                                     scenario)
                bench_rss(programs, f, token_file, env, args.rss_runs,
                          scenario, have_time, res)
                results[scenario] = res
        reaction = bench_reaction([tool, base], token_file, env,
                                  args.reaction_runs)
        counts = bench_requests(os.path.abspath(args.binary), modes, tmp,
                                token_file, env) if state else None
    except Misbehaved as e:
        print("bench: %s" % e, file=sys.stderr)
        keep = True  # the logs the message points to
        return 2
    finally:
        for p in programs:
            p.log.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started

    print("hive-ci-prefetch against the libcurl floor: %d runs per program and "
          "scenario, interleaved; %d under /usr/bin/time; %d reaction runs"
          % (args.runs, args.rss_runs, args.reaction_runs))
    print(machine())
    if not state:
        print("NOTE: %s has no --state-file (it predates the stable-token "
              "change): it runs without one, a kept .runner gets the "
              "placeholder after ONE request, and the steady-reboot target "
              "fails" % args.binary)
    elif not host:
        print("NOTE: %s has no --registration (it predates host "
              "registration): no host-mode scenario or column, and the "
              "host-mode targets fail" % args.binary)
    print()
    for scenario in scenarios:
        report_scenario(scenario, programs, results[scenario], tool, fb, fa,
                        base)

    rx = {name: [r for _, r in runs] for name, runs in reaction.items()}
    print("reaction: first registration, the forge listening 1.2..1.8 s after "
          "the start; listen() to exit")
    print("%-22s%18s%18s" % ("", tool.label, base.label))
    for label, fn in (("median", lambda xs: ms(median(xs))),
                      ("p90", lambda xs: ms(p90(xs))),
                      ("min..max", lambda xs: "%.0f..%.0f ms" % (
                          min(xs) * 1000, max(xs) * 1000))):
        print("%-22s%18s%18s" % (label, fn(rx[tool.name]), fn(rx[base.name])))
    print("by phase: " + ", ".join(
        "%.2fs %.0f/%.0f" % (ph, a * 1000, b * 1000) for (ph, a), (_, b) in
        zip(reaction[tool.name], reaction[base.name])) + " ms")
    print()
    if counts:
        report_requests(counts, modes)
    print("test forge round trip (keep-alive client in this process): "
          "%.2f ms per request, %.2f ms connect + first request"
          % (rt * 1000, rt_first * 1000))
    print("spawn floor (/bin/true from this harness): %s" % ms(floor))
    print("output files on %s; state files and container roots in %s (%s); "
          "peak RSS with %s" % (
              ("tmpfs " + run_fs) if run_fs else "the temporary directory",
              tempfile.gettempdir(), fstype(os.path.realpath(tempfile.gettempdir())),
              "/usr/bin/time -f %M" if have_time else
              "os.wait4 ru_maxrss (no /usr/bin/time: an upper bound)"))
    print("bench took %.0f s" % elapsed)
    print()

    def t(scenario, p):
        return median(results[scenario][p.name].times)

    def rss(scenario, p):
        return median(results[scenario][p.name].rss)

    def steady_target(scenario):
        r = results[scenario][tool.name]
        if r.times and not r.problems:
            return True, "%s, state file untouched, %d runs" % (
                traffic_text(r.traffic), len(r.times))
        got = "%d of %d runs wrong; first: %s" % (
            len({x.split(":")[0] for x in r.problems}), len(r.times),
            r.problems[0])
        return False, got + ("" if state else " (binary predates --state-file)")

    fast_ratio = t("fast", tool) / t("fast", fb)
    over = {s: rss(s, tool) - rss(s, fb) for s in scenarios}
    worst = max(scenarios, key=lambda s: over[s])
    react = median(rx[tool.name]) * 1000
    steady_ok, steady_got = steady_target("steady")
    checks = [
        ("fast path <= %.2fx floor (b)" % TARGET_FLOOR_RATIO,
         fast_ratio <= TARGET_FLOOR_RATIO,
         "%.2fx (%s vs %s)" % (fast_ratio, ms(t("fast", tool)), ms(t("fast", fb)))),
        ("peak RSS <= floor (b) + %d MiB" % (TARGET_RSS_OVER_FLOOR_KIB // 1024),
         all(v <= TARGET_RSS_OVER_FLOOR_KIB for v in over.values()),
         "worst %+.1f MiB (%s: %s vs %s); %s" % (
             over[worst] / 1024, worst, mib(rss(worst, tool)), mib(rss(worst, fb)),
             ", ".join("%s %+.1f" % (x, round(over[x] / 1024, 1) + 0.0)
                       for x in scenarios))),
        ("reaction median < %.0f ms" % TARGET_REACTION_MS,
         react < TARGET_REACTION_MS, "%.0f ms" % react),
        ("steady reboot: lookup+token, 1 conn, output only", steady_ok,
         steady_got),
        ("host steady boot: lookup only, 1 conn, output only",
         *(steady_target("host") if host
           else (False, "the binary has no --registration"))),
    ]
    info = []
    if counts:
        more, info = request_checks(counts, modes)
        checks += more
    for label, ok, got in checks:
        print("%-4s %-50s %s" % ("PASS" if ok else "FAIL", label, got))
    print("INFO vs floor (b) (not judged): steady reboot %.2fx; first "
          "registration %.2fx%s" % (
              t("steady", tool) / t("steady", fb),
              t("first", tool) / t("first", fb),
              "; host steady boot %.2fx" % (t("host", tool) / t("host", fb))
              if host else ""))
    print("INFO baseline speed-up (not judged): " + ", ".join(
        "%s %.1fx" % (NAMES[x], t(x, base) / t(x, tool)) for x in scenarios))
    for line in info:
        print(line)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
