#!/usr/bin/env python3
"""make check: unit tests (cmocka), integration tests against the test forge,
and the integration tests once more under AddressSanitizer and
UndefinedBehaviorSanitizer.  Ends with "N passed, N failed, N skipped".

The two integration passes run side by side: most of a case's time is spent
waiting (for a deadline, a retry, a forge that comes up late), and each case
has its own directory, forge and port."""

import argparse
import glob
import importlib
import os
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


def run_cases(binary, label, only_sanitize=False, pattern=None):
    binary = os.path.abspath(binary)
    for fn in harness.CASES:
        name = "%s/%s" % (label, fn.__name__)
        if only_sanitize and not fn.sanitize:
            continue
        if pattern and not re.search(pattern, name):
            continue
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--asan-binary")
    ap.add_argument("-k", dest="pattern", help="only cases whose name matches")
    ap.add_argument("--replay", action="append", default=[], metavar="BINARY=CORPUS")
    ap.add_argument("units", nargs="*")
    args = ap.parse_args()

    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        importlib.import_module(os.path.basename(path)[:-3])

    start = time.monotonic()
    if not args.pattern:
        for u in args.units:
            run_unit(u)
        for spec in args.replay:
            run_replay(spec)
    passes = [threading.Thread(target=run_cases, args=(args.binary, "it", False, args.pattern))]
    if args.asan_binary:
        # Read by the sanitizer build only; the plain one ignores them.
        os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=99"
        os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=99"
        passes.append(threading.Thread(target=run_cases,
                                       args=(args.asan_binary, "asan", True, args.pattern)))
    for t in passes:
        t.start()
    for t in passes:
        t.join()
    print("%.1fs" % (time.monotonic() - start))
    print("%d passed, %d failed, %d skipped" % (counts["passed"], counts["failed"],
                                                counts["skipped"]))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
