#!/usr/bin/env python3
"""make check: unit tests (cmocka), integration tests against the test forge,
and the integration tests once more under AddressSanitizer and
UndefinedBehaviorSanitizer.  Ends with "N passed, N failed, N skipped".

Everything runs a few jobs at once (-j, HIVE_CHECK_JOBS): most of a case's
time is spent waiting (for a deadline, a retry, a forge that comes up late),
and each case has its own directory, forge and ports."""

import argparse
import glob
import importlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

counts = {"passed": 0, "failed": 0, "skipped": 0}
lock = threading.Lock()


def report(status, name, detail=""):
    word = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip"}[status]
    line = "%s %s" % (word, name)
    if detail:
        line += ("\n" + detail) if status == "failed" else " (skipped: %s)" % detail
    with lock:
        counts[status] += 1
        print(line, flush=True)


def run_unit(binary, env=None):
    p = subprocess.run([binary], capture_output=True, text=True, env=env)
    name = os.path.basename(binary)
    for m in re.finditer(r"^\[\s+OK\s+\] (\S+)", p.stdout, re.M):
        report("passed", "unit/%s/%s" % (name, m.group(1)))
    # A case that cannot run here calls skip() after saying why on stderr
    # ("skipped: needs root ..."), which is shown with it.
    for m in re.finditer(r"^\[\s+SKIPPED\s+\] (\S+)$", p.stdout, re.M):
        why = re.search(r"skipped: (.*)", p.stderr + p.stdout)
        report("skipped", "unit/%s/%s" % (name, m.group(1)), why.group(1) if why else "skip()")
    failed = re.findall(r"^\[\s+FAILED\s+\] (\S+)$", p.stdout, re.M)
    for t in failed:
        report("failed", "unit/%s/%s" % (name, t), p.stdout + p.stderr)
    if p.returncode != 0 and not failed:
        report("failed", "unit/%s" % name, "exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr))


def run_replay(spec):
    """BINARY=DIR: feed every file of a fuzz corpus to a replay driver."""
    binary, corpus = spec.split("=", 1)
    files = sorted(os.path.join(corpus, n) for n in os.listdir(corpus))
    p = subprocess.run([binary] + files, capture_output=True, text=True)
    name = "fuzz-corpus/%s (%d inputs)" % (os.path.basename(corpus), len(files))
    if p.returncode == 0:
        report("passed", name)
    else:
        report("failed", name, p.stdout + p.stderr)


def run_case(binary, label, fn):
    name = "%s/%s" % (label, fn.__name__)
    env = harness.Env()
    env.binary = binary
    start = time.monotonic()
    try:
        fn(env)
    except harness.Skip as e:
        report("skipped", name, str(e))
    except Exception:
        report("failed", name, traceback.format_exc())
    else:
        report("passed", name + " (%.2fs)" % (time.monotonic() - start))
    finally:
        env.close()


def cases(binary, label, only_sanitize=False, pattern=None, alone=False):
    """The jobs of one pass: each case against binary (those to run alone,
    or the others)."""
    binary = os.path.abspath(binary)
    for fn in harness.CASES:
        if (only_sanitize and not fn.sanitize) or fn.alone != alone:
            continue
        if pattern and not re.search(pattern, "%s/%s" % (label, fn.__name__)):
            continue
        yield lambda fn=fn: run_case(binary, label, fn)


def run_all(jobs, workers):
    """Runs the jobs on a few threads: most of a case's time is spent
    waiting (for a deadline, a retry, a forge that comes up late), and each
    case has its own directory, forge and ports."""
    todo = queue.Queue()
    for job in jobs:
        todo.put(job)

    def work():
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            job()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--asan-binary")
    ap.add_argument("-k", dest="pattern", help="only cases whose name matches")
    ap.add_argument("--replay", action="append", default=[], metavar="BINARY=CORPUS")
    ap.add_argument("-j", dest="jobs", type=int,
                    default=int(os.environ.get("HIVE_CHECK_JOBS", "0")) or
                    2 + 2 * (os.cpu_count() or 1), help="cases at once")
    ap.add_argument("units", nargs="*")
    args = ap.parse_args()

    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        importlib.import_module(os.path.basename(path)[:-3])

    start = time.monotonic()
    # Read by the sanitizer builds only; the plain one ignores them.
    os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=99"
    os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=99"
    jobs = []
    if not args.pattern:
        jobs += [lambda u=u: run_unit(u) for u in args.units]
        jobs += [lambda s=s: run_replay(s) for s in args.replay]
    # The slow cases first, so that none is left alone at the end.
    slow = [fn for fn in harness.CASES if fn.slow]
    harness.CASES[:] = slow + [fn for fn in harness.CASES if not fn.slow]
    jobs += list(cases(args.binary, "it", False, args.pattern))
    if args.asan_binary:
        jobs += list(cases(args.asan_binary, "asan", True, args.pattern))
    run_all(jobs, args.jobs)
    run_all(list(cases(args.binary, "it", False, args.pattern, alone=True)), 1)
    print("%.1fs" % (time.monotonic() - start))
    print("%d passed, %d failed, %d skipped" % (counts["passed"], counts["failed"],
                                                counts["skipped"]))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
