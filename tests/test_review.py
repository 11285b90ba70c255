"""Findings of the outside attack review (issue 12).  Each case is named
after the finding it pins and failed on the code the review ran against."""

import ctypes
import fcntl
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import time

from harness import (REG, UUID, Result, Skip, case, expect, needs_root, paths_seen,
                     run_env)

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN_LINE = "TOKEN=%s\n" % REG
DESIGN_TOKEN = "/api/v1/admin/runners/registration-token"


# -- 7. an over-long path component is "no .runner", not an I/O error ------------

@case
def overlong_path_component_counts_as_no_runner(env):
    # A 300-byte component cannot be resolved (ENAMETOOLONG), exactly like a
    # missing directory: there is no .runner, so the runner registers.
    env.runner_inside = "/var/lib/" + "x" * 300 + "/.runner"
    os.makedirs(env.host_path("/var/lib"))  # so the lookup reaches the long name
    f = env.forge()
    r = env.run(f)
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [DESIGN_TOKEN], paths_seen(f)


# -- 4. a failed write to stdout is said, in one line -----------------------------

def run_to_dev_full(env, argv):
    with open("/dev/full", "w") as full:
        p = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True,
                           env=run_env(None), timeout=30)
    for secret in env.secrets:
        assert secret not in p.stderr
    return p.returncode, p.stderr.splitlines()


@case
def failed_write_to_stdout_is_said_on_stderr(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    for extra, status in ((["--dry-run"], 74), (["--json"], 74), (["--help"], 74),
                          (["--version"], 74)):
        rc, lines = run_to_dev_full(env, env.args(f, "-q", *extra))
        assert rc == status, (extra, rc, lines)
        assert lines == ["hive-ci-prefetch: cannot write to standard output: "
                         "No space left on device"], (extra, lines)
    # The run's own failure keeps its status; the lost JSON is still said.
    env.write_admin_token("not-the-admin-token\n")
    rc, lines = run_to_dev_full(env, env.args(f, "-q", "--json"))
    assert rc == 77, (rc, lines)
    assert lines[-1] == ("hive-ci-prefetch: cannot write to standard output: "
                         "No space left on device"), lines
    assert len(lines) == 2, lines


# -- 3. --json prints its object whatever bytes the reason holds ------------------

def json_of_dry_run(env, runner_inside):
    """A malformed .runner at runner_inside (bytes): the dry run's reason
    names the path.  Returns the parsed object; stdout must be UTF-8."""
    host = os.path.join(os.fsencode(env.root), runner_inside.lstrip(b"/"))
    os.makedirs(os.path.dirname(host), exist_ok=True)
    with open(host, "w") as fh:
        fh.write("not json\n")
    argv = env.args(None, "--dry-run", "--json", "-q")
    argv = [a for a in argv if not a.startswith("--runner-file=")]
    argv.append(b"--runner-file=" + runner_inside)
    p = subprocess.run(argv, capture_output=True, env=run_env(None), timeout=30)
    assert p.returncode == 0, p
    assert p.stdout.count(b"\n") == 1, p
    obj = json.loads(p.stdout.decode("utf-8"))  # strict: invalid UTF-8 raises
    assert obj["action"] == "reregister" and obj["exit"] == 0, obj
    assert ": would delete .runner and " in obj["reason"], obj
    return obj


@case
def json_is_printed_when_the_reason_is_not_utf8(env):
    obj = json_of_dry_run(env, b"/var/lib/hive\xff/.runner")
    assert obj["reason"].startswith("/var/lib/hive\ufffd/.runner is malformed"), obj
    # The sentence about the file is cut at a fixed size; with an odd
    # prefix before 2-byte characters, the cut falls inside one of them.
    obj = json_of_dry_run(env, b"/a" + "\u00e9".encode() * 127 + b"/.runner")
    cause = obj["reason"].split(": would delete", 1)[0]
    assert cause == "/a" + "\u00e9" * 126 + "\ufffd", obj  # cut byte 255 replaced


# -- 1. no request is sent after the deadline ---------------------------------

SHIM = os.path.join(HERE, "..", "build", "sleep_overshoot.so")
TRICKLE = {"mode": "endless", "chunk": "A", "interval": 0.1}  # 10 B/s: never "too slow"
SLACK = 0.25  # the man page promises 0.1 s; the rest is process start and exit


def run_bounded(env, argv, bound, env_extra=None):
    """Runs argv; kills it once it overruns bound seconds by far."""
    start = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=run_env(env_extra), text=True, errors="replace")
    try:
        out, err = p.communicate(timeout=bound + 3)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("still running %.1f s after its bound:\n%s" % (bound + 3, err))
    r = Result(p.returncode, out, err, time.monotonic() - start)
    env.assert_no_leak(r)
    return r


@case
def no_request_after_the_deadline_when_a_sleep_overshoots(env):
    if not os.path.exists(SHIM):
        raise AssertionError("build/sleep_overshoot.so missing: run make check")
    f = env.forge()
    # Busy, then a body that trickles for ever.  The 100 ms wait after the
    # 503 overshoots by 1 s, past the 1 s deadline: nothing more may be sent.
    f.script("token", {"status": 503, "body": {"message": "busy"}}, TRICKLE)
    extra = {"LD_PRELOAD": os.path.abspath(SHIM), "HCP_SLEEP_OVERSHOOT_MS": "1000",
             "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    r = run_bounded(env, env.args(f, "-v", retry_timeout="1"), 1.1, extra)
    expect(r, 75)
    assert paths_seen(f) == [DESIGN_TOKEN], "asked after the deadline: %s" % paths_seen(f)
    assert r.elapsed < 1.1 + SLACK, r
    env.assert_output("TOKEN=placeholder\n")


@case
def no_request_after_the_deadline_on_the_next_route(env):
    # The first token route answers "no such route" just before the 1 s
    # deadline; the second trickles.  The second route's first request gets
    # only what is left, not a second second of its own.
    f = env.forge("f15")
    f.script("token", {"status": 404, "body": "404 page not found\n", "delay": 0.9}, TRICKLE)
    r = run_bounded(env, env.args(f, retry_timeout="1"), 1.0)
    expect(r, 75)
    assert len(f.requests) == 2, paths_seen(f)
    assert r.elapsed < 1.0 + SLACK, r


# -- 2. the object checked is the object read: no device, no FIFO is opened --------
#
# The observable is inotify's IN_OPEN on the decoy's inode: any open(2) of it
# that succeeds, whatever its mode, reports one, and the decoy is watched by
# inode, wherever the racing renames move it.  An O_PATH open, which opens
# nothing, reports none since Linux 6.5; on a kernel that does report it the
# observable cannot tell the two apart, and the case skips.

_libc = ctypes.CDLL(None, use_errno=True)
IN_OPEN = 0x20
RENAME_EXCHANGE = 2
RACE_RUNS, RACE_SECONDS, RACERS = 100, 3.0, 2


def start_racer(a, b):
    """Forks a process that swaps a and b with RENAME_EXCHANGE until killed."""
    pid = os.fork()
    if pid == 0:
        try:
            a, b, exchange = os.fsencode(a), os.fsencode(b), _libc.renameat2
            while True:
                exchange(-100, a, -100, b, RENAME_EXCHANGE)
        finally:
            os._exit(0)
    return pid


class OpenWatch:
    """Counts IN_OPEN events on one inode."""

    def __init__(self, path):
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or _libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), "inotify")

    def opens(self):
        n = 0
        while True:
            try:
                buf = os.read(self.fd, 4096)
            except BlockingIOError:
                return n
            off = 0
            while off < len(buf):
                _, mask, _, length = struct.unpack_from("iIII", buf, off)
                n += bool(mask & IN_OPEN)
                off += 16 + length

    def close(self):
        os.close(self.fd)


def assert_swapped_in_decoy_is_never_opened(env, make_decoy):
    d = os.path.dirname(env.runner)
    os.makedirs(d)
    env.write_runner()
    decoy = os.path.join(d, "decoy")
    make_decoy(decoy)
    watch = OpenWatch(decoy)
    try:
        # The observable must see a real open and must not see O_PATH.
        os.close(os.open(decoy, os.O_PATH))
        if watch.opens():
            raise Skip("needs Linux 6.5 (inotify reports O_PATH opens here)")
        os.close(os.open(decoy, os.O_RDONLY | os.O_NONBLOCK))
        assert watch.opens() == 1, "inotify does not see an open of the decoy"

        # Racers in processes of their own (no GIL to share), one more than
        # there are cores left, so the tool is also preempted mid-check.
        racers = [start_racer(env.runner, decoy) for _ in range(RACERS)]
        seen, opened, runs = set(), 0, 0
        deadline = time.monotonic() + RACE_SECONDS
        try:
            while runs < RACE_RUNS and time.monotonic() < deadline:
                # A dry run changes nothing; the forge is down, so a regular
                # .runner is kept unverified at once.
                r = env.run(None, "--dry-run", timeout=10)
                expect(r, 0)
                seen.add("regular" if "would keep" in r.stdout else
                         "not regular" if "is not a regular file" in r.stdout else r.stdout)
                opened += watch.opens()
                runs += 1
        finally:
            for pid in racers:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        assert opened == 0, "the decoy was opened in %d of %d runs" % (opened, runs)
        assert seen == {"regular", "not regular"}, "the race never ran: %s" % seen
    finally:
        watch.close()


@case(slow=True, alone=True)
def fifo_swapped_in_by_a_race_is_never_opened(env):
    assert_swapped_in_decoy_is_never_opened(env, os.mkfifo)


@case(slow=True, alone=True)
def device_swapped_in_by_a_race_is_never_opened(env):
    needs_root()

    def make_device(p):
        try:
            os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null
        except PermissionError:  # uid 0 in a user namespace
            raise Skip("needs root")
        try:
            os.close(os.open(p, os.O_RDONLY))
        except PermissionError:  # a nodev mount: nothing could open it
            raise Skip("needs a file system that allows device nodes")

    assert_swapped_in_decoy_is_never_opened(env, make_device)


@case(sanitize=False)  # LeakSanitizer itself needs /proc
def without_proc_runner_is_not_read_by_name(env):
    # No /proc: the checked inode cannot be reopened, and the name is never
    # opened instead (fail closed): .runner stays, 74.
    needs_root()
    if not shutil.which("unshare"):
        raise Skip("needs unshare")
    env.write_runner()
    f = env.forge(runners={})
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs none /proc && exec "$@"', "sh"] + env.args(f)
    r = env.run(argv=argv)
    if "mount:" in r.stderr or "unshare:" in r.stderr:
        raise Skip("needs root (mount namespaces)")
    expect(r, 74)
    assert "/proc is not mounted" in r.stderr, r
    assert env.runner_kept()
    assert f.requests == [], f.requests
    env.assert_output("TOKEN=placeholder\n")


# -- 5. no one but root can hold the output's lock --------------------------------

@case
def output_lock_cannot_be_held_by_another_user(env):
    f = env.forge()
    out_dir = os.path.dirname(env.output)
    os.makedirs(out_dir)
    os.chmod(out_dir, 0o755)
    # Any user who can open the 0755 directory can flock it: that was the lock.
    holder = hold_flock_as_nobody(out_dir)
    try:
        r = run_bounded(env, env.args(f), 2)
        expect(r, 0)
        env.assert_output(TOKEN_LINE)
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    # What is locked now is a file only its owner (root) can open.
    lock = os.path.join(out_dir, "." + os.path.basename(env.output) + ".lock")
    st = os.lstat(lock)
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600, oct(st.st_mode)
    assert st.st_uid == os.geteuid()
    # A lock file someone else could have opened is refused, not waited on.
    os.chmod(lock, 0o644)
    r = run_bounded(env, env.args(f), 2)
    expect(r, 73)
    env.assert_output(TOKEN_LINE)


def hold_flock_as_nobody(path):
    """Forks a process that, as nobody when we are root, opens path and
    holds an exclusive flock on it until killed.  Returns its pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(w, b"locked")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 16)
    os.close(r)
    assert got == b"locked", "the holder could not lock %s" % path
    return pid


# -- 8. permanent TLS and configuration errors are not "no answer" ----------------

CA = os.path.join(HERE, "tls", "ca.crt")
OLD_OUTPUT = "TOKEN=OldToken0123456789\n"


@case
def ca_file_missing_or_unreadable_exits_66_before_anything(env):
    f = env.forge("f15", tls=True)
    env.write_runner("not json\n")  # read, it would be deleted
    unreadable = os.path.join(env.dir, "ca-0000.crt")
    with open(CA) as src, open(unreadable, "w") as dst:
        dst.write(src.read())
    os.chmod(unreadable, 0)
    bad = [os.path.join(env.dir, "no-such-ca.crt"), env.dir]  # missing, a directory
    if os.geteuid() != 0:  # root reads a mode-0000 file anyway
        bad.append(unreadable)
    for i, ca in enumerate(bad):
        if i == 1:
            env.write_output(OLD_OUTPUT)
        r = env.run(f, "--ca-file=" + ca)
        expect(r, 66)
        assert r.stderr.splitlines() == [
            "hive-ci-prefetch: --ca-file %s cannot be read: %s" % (
                ca, "Is a directory" if ca == env.dir else
                "No such file or directory" if i == 0 else "Permission denied")], r
        assert env.runner_kept() and open(env.runner).read() == "not json\n"
        env.assert_output("TOKEN=placeholder\n" if i == 0 else OLD_OUTPUT)
    assert f.connections == 0, "asked the forge with an unusable --ca-file"


@case
def tls_verification_failure_is_not_retried_exits_69(env):
    # Untrusted certificate (no --ca-file): the lookup keeps .runner and the
    # run fails 69 at once, naming curl's reason; the output follows the
    # on-failure rule.
    env.write_runner()
    f = env.forge("f15", tls=True, runners={})
    r = env.run(f, retry_timeout="3")
    expect(r, 69)
    assert r.elapsed < 1, r
    assert env.runner_kept()
    env.assert_output("TOKEN=placeholder\n")
    assert r.stderr.splitlines() == [
        "hive-ci-prefetch: TLS with the forge failed: SSL certificate problem: "
        "unable to get local issuer certificate; keeping .runner"], r
    assert f.connections == 1 and f.requests == []
    # The registration token: not asked again until the deadline either.
    os.unlink(env.runner)
    env.write_output(OLD_OUTPUT)
    r = env.run(f, retry_timeout="3")
    expect(r, 69)
    assert r.elapsed < 1, r
    env.assert_output(OLD_OUTPUT)
    assert "TLS with the forge failed: SSL certificate problem" in r.stderr, r
    assert f.connections == 2 and f.requests == []
    # A trusted CA but a certificate for another name: the same.
    g = env.forge("f15", tls=True, host="127.0.0.2")
    r = env.run(g, "--ca-file=" + CA, retry_timeout="3")
    expect(r, 69)
    assert r.elapsed < 1, r
    assert "127.0.0.2" in r.stderr, r
    assert g.connections == 1 and g.requests == []
    # A CA file that holds no certificate: curl cannot verify anything.
    junk = os.path.join(env.dir, "junk.crt")
    with open(junk, "w") as fh:
        fh.write("not a certificate\n")
    r = env.run(f, "--ca-file=" + junk, retry_timeout="3")
    expect(r, 69)
    assert r.elapsed < 1, r
    assert junk in r.stderr, r


# -- 6. an over-long uuid is a different runner, never "no uuid" ------------------

@case
def overlong_uuid_counts_as_different_not_absent(env):
    long_uuid = "f" * 100
    for mine, theirs in ((long_uuid, UUID), (UUID, long_uuid)):
        env.write_runner(runner_id=1, uuid=mine)
        f = env.forge("forgejo15", runners={1: {"uuid": theirs, "name": "hive"}})
        r = env.run(f)
        expect(r, 0)
        assert not env.runner_kept(), r
        assert "different runner (uuid differs)" in r.stderr, r
        f.stop()


# -- 9. one failure, one line ---------------------------------------------------

@case
def one_failure_one_line_when_the_output_cannot_be_written(env):
    blocker = os.path.join(env.dir, "file")
    open(blocker, "w").close()
    env.output = os.path.join(blocker, "runner-token")  # no output can ever exist
    f = env.forge()
    r = env.run(f)
    expect(r, 73)
    lines = r.stderr.splitlines()
    assert [line for line in lines if "cannot write" in line] == [
        "hive-ci-prefetch: cannot write %s: Not a directory" % env.output], r


# -- 10. the runner's own secret leaves memory once .runner is parsed -------------

def memory_holds(pid, needle):
    """True if any readable anonymous mapping of pid holds needle (root
    only), read in chunks that overlap by the needle's length."""
    chunk = 1 << 20
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb") as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            path = fields[5] if len(fields) > 5 else ""
            if "r" not in fields[1] or path.startswith("/") or path == "[vvar]":
                continue  # file mappings hold code, not what the run read
            if end - start > 256 << 20:
                continue  # no heap of this program is that large
            for at in range(start, end, chunk):
                try:
                    mem.seek(at)
                    if needle in mem.read(min(chunk + len(needle), end - at)):
                        return True
                except OSError:
                    break
    return False


@case(sanitize=False)  # ASan's shadow and quarantine are not this program's heap
def runner_secret_is_wiped_once_parsed(env):
    needs_root()
    env.write_runner()
    f = env.forge("forgejo15", runners={1: {"uuid": UUID, "name": "hive"}})
    f.script("lookup", {"mode": "hang"})
    p = env.spawn(f, retry_timeout="3")
    try:
        deadline = time.monotonic() + 3
        while len(f.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(f.requests) == 2, "never got to the lookup"
        time.sleep(0.05)  # it is waiting for the lookup's answer now
        assert memory_holds(p.pid, b"/api/v1/admin/actions/runners/1"), \
            "the scan sees nothing: it proves nothing"
        assert not memory_holds(p.pid, b"RunnerOwnSecretCanary"), \
            "the runner's own token is still in memory while the forge is asked"
    finally:
        p.kill()
        p.communicate()
