#!/usr/bin/env python3
"""Benchmark hive-ci-prefetch against the shell script it replaces (issue 6).

Runs both programs against the project's test forge (tests/forge.py, started
in this process), interleaving them run by run (A, B, B, A, A, B, ...) so that
machine noise hits both alike, and measures:

  fast path    a registered runner: one lookup, placeholder written
               (median and p90 wall time of the whole process)
  first boot   no .runner: a registration token fetched and written
  reaction     first boot while the forge is down; it starts listening 1.2 to
               1.8 s after the program started (the phase varies run by run);
               time from the forge listening to the program's exit
  peak RSS     of the fast path, through /usr/bin/time -f %M (a small forking
               parent, so the figure is the program's, not this interpreter's)
  connections  a stale .runner (404) then a token fetch: how many TCP
               connections hive-ci-prefetch opened for the two requests

and checks the targets: fast path at least 5x faster than the baseline,
reaction median under 150 ms, peak RSS under 8 MiB, one connection.  Exits 1
if a target is missed, 2 if a program misbehaved.  Standard library only.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import signal
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
import forge  # noqa: E402  (tests/forge.py)

ADMIN_TOKEN = "adm_0123456789abcdef0123456789abcdef0123"
REG_TOKEN = "R" * 40
RUNNER_ID, RUNNER_UUID = 1, "3c5e1f0a-6a53-4a8e-9d36-1f0e5b2c7d11"
STALE_ID = 7
RUNNER_FILE = "/var/lib/gitea-runner/hive/.runner"
TIME = "/usr/bin/time"

TARGET_SPEEDUP = 5.0
TARGET_REACTION_MS = 150.0
TARGET_RSS_KIB = 8 * 1024


PROCESS_TIMEOUT = 30  # seconds: no run of either program should come near


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


# -- tools --------------------------------------------------------------------

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


def ensure_tools():
    """curl, jq (the baseline) and /usr/bin/time: present, or apt-get them."""
    def missing():
        need = [p for p, ok in (("curl", shutil.which("curl")),
                                ("jq", shutil.which("jq")),
                                ("time", os.access(TIME, os.X_OK))) if not ok]
        return need

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


# -- statistics ---------------------------------------------------------------

def median(xs):
    return statistics.median(xs)


def p90(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def ms(seconds):
    return "%.1f ms" % (seconds * 1000)


# -- one program in its own directories ---------------------------------------

class Program:
    def __init__(self, name, argv, tmp, run_dir):
        self.name = name
        self.argv = argv
        self.dir = os.path.join(tmp, name)
        self.run_dir = os.path.join(run_dir, name)
        os.makedirs(self.dir)
        self.log = open(os.path.join(self.dir, "stderr.log"), "ab")

    def paths(self, scenario):
        """Container root on disk; output on tmpfs, like /run/hive-ci."""
        root = os.path.join(self.dir, scenario, "root")
        out = os.path.join(self.run_dir, scenario, "runner-token")
        return root, root + RUNNER_FILE, out

    def command(self, scenario, url, token_file, retry_timeout=10):
        root, _, out = self.paths(scenario)
        return self.argv + [
            "--forge-url=" + url,
            "--core-token-file=" + token_file,
            "--container-root=" + root,
            "--runner-file=" + RUNNER_FILE,
            "--output=" + out,
            "--retry-timeout=%d" % retry_timeout,
        ]

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

    def check(self, scenario, rc, want_token, want_runner):
        root, runner, out = self.paths(scenario)
        try:
            with open(out) as f:
                got = f.read()
        except OSError as e:
            got = "(%s)" % e.strerror
        want = "TOKEN=%s\n" % want_token
        problems = []
        if rc != 0:
            problems.append("exit %s" % rc)
        if got != want:
            problems.append("output %r, wanted %r" % (got[:60], want))
        if os.path.exists(runner) != want_runner:
            problems.append(".runner %s" % ("kept" if not want_runner else "gone"))
        if problems:
            self.log.flush()
            raise Misbehaved("%s, %s: %s (see %s)" % (
                self.name, scenario, "; ".join(problems), self.log.name))


def prepare(prog, scenario, runner_id):
    root, runner, out = prog.paths(scenario)
    os.makedirs(os.path.dirname(runner), exist_ok=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if os.path.exists(out):
        os.unlink(out)
    if runner_id is None:
        if os.path.exists(runner):
            os.unlink(runner)
        return
    with open(runner, "w") as f:
        json.dump({"WARNING": "This file is automatically generated by act-runner.",
                   "id": runner_id, "uuid": RUNNER_UUID, "name": "hive",
                   "token": "0" * 40, "address": "http://127.0.0.1:3000",
                   "labels": ["native:host"]}, f, indent=2)
        f.write("\n")


def order(programs, i):
    """A,B / B,A / A,B ...: neither program always runs right after the other."""
    return programs if i % 2 == 0 else programs[::-1]


# -- scenarios ----------------------------------------------------------------

def timed(prog, scenario, url, token_file, env, want_token, want_runner):
    argv = prog.command(scenario, url, token_file)
    t0 = time.perf_counter()
    p = prog.spawn(argv, env)
    rc = finish(p, prog.name)
    elapsed = time.perf_counter() - t0
    prog.check(scenario, rc, want_token, want_runner)
    return elapsed


def bench_steady(programs, f, token_file, env, runs, scenario):
    """fast path ("fast": .runner known to the forge) or first boot ("first")."""
    runner_id = RUNNER_ID if scenario == "fast" else None
    want_token = "placeholder" if scenario == "fast" else REG_TOKEN
    times = {p.name: [] for p in programs}
    for p in programs:
        prepare(p, scenario, runner_id)
    for i in range(-2, runs):  # two warm-up rounds, not counted
        for p in order(programs, i):
            if scenario == "first":
                prepare(p, scenario, None)
            t = timed(p, scenario, f.url, token_file, env, want_token,
                      runner_id is not None)
            if i >= 0:
                times[p.name].append(t)
    return times


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


def bench_reaction(programs, token_file, env, runs):
    """The forge comes up 1.2 to 1.8 s after the program started."""
    out = {p.name: [] for p in programs}
    for i in range(runs):
        phase = 1.2 + 0.6 * i / runs
        for p in order(programs, i):
            prepare(p, "reaction", None)
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
                argv = p.command("reaction", f.url, token_file)
                proc = p.spawn(argv, env)
                rc = finish(proc, p.name)
                t_exit = time.monotonic()
            finally:
                f.stop()
            p.check("reaction", rc, REG_TOKEN, False)
            t_listen = listening[0] if listening else t_spawn + phase
            if t_exit < t_listen:
                raise Misbehaved("%s exited before the forge listened" % p.name)
            out[p.name].append((phase, t_exit - t_listen))
    return out


def bench_rss(programs, f, token_file, env, runs, have_time):
    """Peak RSS (KiB) of the fast path, max over runs."""
    peak = {p.name: 0 for p in programs}
    for p in programs:
        prepare(p, "fast", RUNNER_ID)
    tmp = os.path.join(os.path.dirname(programs[0].dir), "rss")
    for i in range(runs):
        for p in order(programs, i):
            argv = p.command("fast", f.url, token_file)
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
            p.check("fast", rc, "placeholder", True)
            peak[p.name] = max(peak[p.name], kib)
    return peak


def count_connections(prog, token_file, env):
    """A stale .runner: lookup (404) then token fetch. Requests, connections."""
    prepare(prog, "stale", STALE_ID)
    with forge.Forge(flavour="design", admin_token=ADMIN_TOKEN,
                     reg_token=REG_TOKEN, runners={RUNNER_ID: RUNNER_UUID}) as f:
        proc = prog.spawn(prog.command("stale", f.url, token_file), env)
        rc = finish(proc, prog.name)
        prog.check("stale", rc, REG_TOKEN, False)
        return len(f.requests), f.connections


# -- main ---------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(REPO, "hive-ci-prefetch"))
    ap.add_argument("--baseline", default=os.path.join(HERE, "baseline.sh"))
    ap.add_argument("--runs", type=int, default=30,
                    help="runs per program for the fast path and first boot")
    ap.add_argument("--reaction-runs", type=int, default=8)
    ap.add_argument("--rss-runs", type=int, default=5)
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
    try:
        token_file = os.path.join(tmp, "forge-core-token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
            fh.write(ADMIN_TOKEN + "\n")
        ours = Program("hive-ci-prefetch", [os.path.abspath(args.binary)], tmp,
                       run_dir)
        base = Program("baseline", ["bash", os.path.abspath(args.baseline)],
                       tmp, run_dir)
        programs = [ours, base]

        floor = spawn_floor(env, args.runs)
        with forge.Forge(flavour="design", admin_token=ADMIN_TOKEN,
                         reg_token=REG_TOKEN,
                         runners={RUNNER_ID: RUNNER_UUID}) as f:
            fast = bench_steady(programs, f, token_file, env, args.runs, "fast")
            first = bench_steady(programs, f, token_file, env, args.runs, "first")
            rss = bench_rss(programs, f, token_file, env, args.rss_runs, have_time)
        reaction = bench_reaction(programs, token_file, env, args.reaction_runs)
        requests, connections = count_connections(ours, token_file, env)
    except Misbehaved as e:
        print("bench: %s" % e, file=sys.stderr)
        return 2
    finally:
        for p in programs:
            p.log.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started

    rx = {name: [r for _, r in runs] for name, runs in reaction.items()}
    rss_how = "/usr/bin/time -f %M" if have_time else \
        "os.wait4 ru_maxrss (no /usr/bin/time: an upper bound, counts python)"
    print("hive-ci-prefetch vs the shell baseline (bash + curl + jq): %d runs "
          "each, %d reaction runs each, interleaved" % (args.runs, args.reaction_runs))
    print()
    head = "%-26s %18s %18s" % ("", "hive-ci-prefetch", "baseline")
    print(head)
    print("-" * len(head))
    rows = [
        ("fast path median", ms(median(fast[ours.name])), ms(median(fast[base.name]))),
        ("fast path p90", ms(p90(fast[ours.name])), ms(p90(fast[base.name]))),
        ("first boot median", ms(median(first[ours.name])), ms(median(first[base.name]))),
        ("first boot p90", ms(p90(first[ours.name])), ms(p90(first[base.name]))),
        ("reaction median", ms(median(rx[ours.name])), ms(median(rx[base.name]))),
        ("reaction p90", ms(p90(rx[ours.name])), ms(p90(rx[base.name]))),
        ("reaction min..max", "%.0f..%.0f ms" % (min(rx[ours.name]) * 1000, max(rx[ours.name]) * 1000),
         "%.0f..%.0f ms" % (min(rx[base.name]) * 1000, max(rx[base.name]) * 1000)),
        ("fast path peak RSS", "%.1f MiB" % (rss[ours.name] / 1024),
         "%.1f MiB" % (rss[base.name] / 1024)),
    ]
    for label, a, b in rows:
        print("%-26s %18s %18s" % (label, a, b))
    print()
    print("reaction by phase (forge listening after program start):")
    for (phase, a), (_, b) in zip(reaction[ours.name], reaction[base.name]):
        print("  %.3f s: %6.0f ms %6.0f ms" % (phase, a * 1000, b * 1000))
    print("spawn floor (/bin/true from this harness): %s" % ms(floor))
    print("output files on %s; peak RSS measured with %s" % (
        ("tmpfs " + run_fs) if run_fs else "the temporary directory (no tmpfs)",
        rss_how))
    print("stale .runner: %d requests on %d connection(s); bench took %.0f s"
          % (requests, connections, elapsed))
    print()

    speed_fast = median(fast[base.name]) / median(fast[ours.name])
    speed_first = median(first[base.name]) / median(first[ours.name])
    react = median(rx[ours.name]) * 1000
    checks = [
        ("fast path >= %.0fx faster than the baseline" % TARGET_SPEEDUP,
         speed_fast >= TARGET_SPEEDUP, "%.1fx" % speed_fast),
        ("reaction median < %.0f ms" % TARGET_REACTION_MS,
         react < TARGET_REACTION_MS, "%.0f ms" % react),
        ("fast path peak RSS < %d MiB" % (TARGET_RSS_KIB // 1024),
         rss[ours.name] < TARGET_RSS_KIB, "%.1f MiB" % (rss[ours.name] / 1024)),
        ("one connection for lookup + token fetch",
         connections == 1 and requests == 2,
         "%d request(s), %d connection(s)" % (requests, connections)),
    ]
    for label, ok, got in checks:
        print("%-4s %-44s %s" % ("PASS" if ok else "FAIL", label, got))
    print("fast path %.1fx faster, first boot %.1fx, reaction %.0f ms vs %.0f ms, "
          "peak RSS %.1f MiB" % (speed_fast, speed_first, react,
                                 median(rx[base.name]) * 1000, rss[ours.name] / 1024))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
