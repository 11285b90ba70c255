"""Faults while the output is written: ENOSPC and EIO injected with strace
on the write, fsync and rename of the output, and a SIGKILL at each
successive system call of the writing path.  Afterwards the output is
absent, the old file or the new file, never partial, and no temporary is
left that a later run does not clean up."""

import os
import re
import subprocess

from harness import PLACEHOLDER, REG, UUID, Skip, case, expect

TOKEN_LINE = "TOKEN=%s\n" % REG
OLD = "TOKEN=OldToken0123456789\n"
_strace_ok = None


def needs_strace():
    global _strace_ok
    if _strace_ok is None:
        try:
            _strace_ok = subprocess.run(["strace", "-qq", "-o", "/dev/null", "true"],
                                        capture_output=True).returncode == 0
        except FileNotFoundError:
            _strace_ok = False
    if not _strace_ok:
        raise Skip("needs strace and ptrace")


def run_under_strace(env, f, strace_args, quiet=True):
    argv = ["strace", "-f", "-qq", "-o", "/dev/null"] + strace_args + \
        env.args(f, *(["-q"] if quiet else []))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    for secret in env.secrets:
        assert secret not in p.stdout + p.stderr
    return p


def leftovers(env):
    d = os.path.dirname(env.output)
    return [n for n in os.listdir(d) if n not in env.output_names()] if os.path.isdir(d) else []


@case(sanitize=False)
def enospc_and_eio_on_write_fsync_rename_keep_old_output(env):
    needs_strace()
    f = env.forge()
    # glibc's renameat2 with no flags may enter the kernel as renameat
    for syscall in ("write", "fsync", "renameat,renameat2"):
        for err in ("ENOSPC", "EIO"):
            env.write_output(OLD)
            p = run_under_strace(env, f, ["-e", "trace=" + syscall,
                                          "-e", "inject=%s:error=%s:when=1" % (syscall, err)])
            assert p.returncode == 73, (syscall, err, p.returncode, p.stderr)
            assert env.output_text() == OLD, (syscall, err)
            assert leftovers(env) == [], (syscall, err, leftovers(env))
            assert "cannot write" in p.stderr, p.stderr


@case(sanitize=False)
def persistent_enospc_without_old_output_leaves_nothing_partial(env):
    needs_strace()
    f = env.forge()
    for syscall in ("write", "fsync", "renameat,renameat2"):
        if os.path.exists(env.output):
            os.unlink(env.output)
        p = run_under_strace(env, f, ["-e", "trace=" + syscall,
                                      "-e", "inject=%s:error=ENOSPC:when=1+" % syscall])
        assert p.returncode == 73, (syscall, p.returncode, p.stderr)
        assert not os.path.exists(env.output), syscall
        assert leftovers(env) == [], leftovers(env)
    # A transient fault on the token's write: the placeholder rule still
    # leaves the container a source to bind-mount.
    p = run_under_strace(env, f, ["-e", "trace=write", "-e", "inject=write:error=EIO:when=1"])
    assert p.returncode == 73
    assert env.output_text() == PLACEHOLDER


WRITE_PATH = ("mkdir", "openat", "flock", "getdents64", "unlinkat", "getrandom", "write",
              "fchmod", "fsync", "close", "renameat", "renameat2")


@case(slow=True, sanitize=False)
def sigkill_at_each_system_call_leaves_old_or_new(env):
    needs_strace()
    f = env.forge()
    env.write_output(OLD)
    counts_file = os.path.join(env.dir, "counts")
    p = subprocess.run(["strace", "-f", "-qq", "-c", "-o", counts_file,
                        "-e", "trace=" + ",".join(WRITE_PATH)]
                       + env.args(f, "-q", "--state-file="),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    counts = {}
    for line in open(counts_file):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) in WRITE_PATH:
            counts[m.group(2)] = int(m.group(1))
    assert counts.get("renameat", 0) + counts.get("renameat2", 0) == 1, counts
    assert counts.get("write") and counts.get("fsync") == 2, counts
    kills = 0
    for syscall, n in sorted(counts.items()):
        for when in range(1, n + 1):
            env.write_output(OLD)
            p = run_under_strace(env, f, ["-e", "trace=" + syscall,
                                          "-e", "inject=%s:signal=KILL:when=%d" % (syscall, when)])
            assert p.returncode != 0 or env.output_text() == TOKEN_LINE
            text = env.output_text()
            assert text in (OLD, TOKEN_LINE), (syscall, when, text)
            kills += 1
            r = env.run(f)  # the next boot cleans up after the killed one
            expect(r, 0)
            env.assert_output(TOKEN_LINE)
    assert kills >= 10, counts


@case(sanitize=False)
def kernel_without_openat2_fails_closed_71(env):
    needs_strace()
    env.write_runner()
    f = env.forge(runners={})
    p = run_under_strace(env, f, ["-e", "trace=openat2", "-e", "inject=openat2:error=ENOSYS"],
                         quiet=False)
    assert p.returncode == 71, (p.returncode, p.stderr)
    assert "openat2" in p.stderr, p.stderr
    assert os.path.exists(env.runner), "touched .runner without openat2"
    assert env.output_text() == PLACEHOLDER
    assert f.requests == [] or all("registration-token" not in q["path"] for q in f.requests)


@case(sanitize=False)
def openat2_eagain_is_retried(env):
    needs_strace()
    env.write_runner()
    f = env.forge(runners={1: UUID})
    p = run_under_strace(env, f, ["-e", "trace=openat2",
                                  "-e", "inject=openat2:error=EAGAIN:when=1..5"], quiet=False)
    assert p.returncode == 0, p.stderr
    assert "still registered" in p.stderr, p.stderr
    p = run_under_strace(env, f, ["-e", "trace=openat2",
                                  "-e", "inject=openat2:error=EAGAIN"], quiet=False)
    assert p.returncode == 74, (p.returncode, p.stderr)  # bounded: gives up
    assert os.path.exists(env.runner)
