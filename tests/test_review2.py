"""Findings of the second outside review and a newcomer's trial (issue 19).
Each case is named after the finding it pins; each failed on the code the
review ran against (the closing note says how)."""

import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time

from harness import (ADMIN, PLACEHOLDER, REG, UUID, Skip, case, expect, needs_root, needs_tool,
                     run_env, says)
from test_cleanup import GHOST_UUID, listed, seen, superseded
from test_operator import json_outcome
from test_review import run_bounded

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN_LINE = "TOKEN=%s\n" % REG
ACTIONS = "/api/v1/admin/actions/runners/"


def forgejo15(env, runners):
    env.write_runner()
    return env.forge("forgejo15", runners=runners)


# -- 1. the clean-up deletes only this host's runners ---------------------------

@case
def cleanup_never_deletes_a_user_or_repository_runner(env):
    for scope in ({"owner_id": 7}, {"repo_id": 9}):
        listed(env, (2, GHOST_UUID))
        f = forgejo15(env, {1: {"uuid": UUID, "name": "hive", "status": "idle"},
                            2: dict({"uuid": GHOST_UUID, "name": "hive", "status": "offline"},
                                    **scope)})
        r = env.run(f)
        expect(r, 0)
        assert "GET " + ACTIONS + "2" in seen(f), seen(f)
        assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)
        assert f.record(2) is not None
        assert says(r.stderr, "runner 2", "user or a repository", "not deleted"), r
        assert superseded(env) == []  # forgotten: never this host's
        f.stop()


@case
def cleanup_never_deletes_a_runner_of_another_name(env):
    listed(env, (2, GHOST_UUID))
    f = forgejo15(env, {1: {"uuid": UUID, "name": "hive", "status": "idle"},
                        2: {"uuid": GHOST_UUID, "name": "build-box", "status": "offline"}})
    r = env.run(f)
    expect(r, 0)
    assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)
    assert f.record(2) is not None
    assert says(r.stderr, "runner 2", "build-box", "hive", "not deleted"), r
    assert superseded(env) == []


@case
def planted_runner_file_cannot_make_the_tool_delete_another_runner(env):
    """A process in the container plants a .runner naming someone else's
    runner for one boot, then puts ours back: neither boot deletes it."""
    f = env.forge("forgejo15", runners={
        1: {"uuid": UUID, "name": "hive", "status": "idle"},
        2: {"uuid": "uuid-of-a-users-runner", "name": "alice-laptop", "status": "offline",
            "owner_id": 5},
        3: {"uuid": "uuid-of-another-host", "name": "other-host", "status": "offline"},
    })
    env.write_runner()
    expect(env.run(f), 0)  # ours, confirmed
    for victim, uuid in ((2, "uuid-of-a-users-runner"), (3, "uuid-of-another-host")):
        env.write_runner(runner_id=victim, uuid=uuid)  # planted
        expect(env.run(f), 0)
        env.write_runner()  # ours again: the planted one is superseded now
        r = env.run(f)
        expect(r, 0)
    assert not any(q["method"] == "DELETE" for q in f.requests), seen(f)
    assert f.record(2) is not None and f.record(3) is not None


# -- 2. the admin token goes only to the forge ------------------------------------

@case
def forge_port_held_by_another_user_gets_nothing(env):
    """Whoever holds the forge's end is not --forge-user: nothing is sent on
    that connection, one line names the port and the uid, .runner is kept,
    exit 69, not retried."""
    other = 65534 if os.getuid() != 65534 else 0
    for unix in (False, True):
        env.write_runner()
        sock = os.path.join(env.dir, "forge.sock") if unix else None
        f = env.forge(runners={1: UUID}, unix_socket=sock)
        r = env.run(f, "--forge-user=%d" % other, retry_timeout="3")
        expect(r, 69)
        assert f.requests == [], f.requests
        assert r.elapsed < 1.5, r  # not retried
        where = sock if unix else "127.0.0.1 port %d" % f.port
        assert says(r.stderr, where, "held by uid %d" % os.getuid(), "(uid %d)" % other), r
        assert len(r.stderr.splitlines()) == 1, r
        assert env.runner_kept()
        env.assert_output(PLACEHOLDER)  # the on-failure rule
        # The right user: the same forge is asked.
        r = env.run(f, "--forge-user=%d" % os.getuid())
        expect(r, 0)
        env.assert_output(TOKEN_LINE)
        f.stop()
        os.unlink(env.output)
        os.unlink(env.state_file)  # else the remembered token is the on-failure one


class Squatter:
    """A listener on a loopback port, as nobody: records what it receives."""

    def __init__(self):
        self.r, self.w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self.r)
                os.setgid(65534)
                os.setuid(65534)
                listener = socket.socket()  # created as nobody: nobody holds it
                listener.bind(("127.0.0.1", 0))
                listener.listen(8)
                os.write(self.w, b"%05d\n" % listener.getsockname()[1])
                listener.settimeout(5)
                while True:
                    conn, _ = listener.accept()
                    conn.settimeout(2)
                    data = b""
                    try:
                        while True:
                            chunk = conn.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                    except OSError:
                        pass
                    os.write(self.w, b"got %d\n" % len(data))
                    conn.close()
            except Exception:
                pass
            finally:
                os._exit(0)
        os.close(self.w)
        up = os.read(self.r, 6)
        assert len(up) == 6, "the squatter did not start"
        self.port = int(up)

    def received(self):
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        data = b""
        while True:
            chunk = os.read(self.r, 4096)
            if not chunk:
                break
            data += chunk
        os.close(self.r)
        return [int(line.split()[1]) for line in data.decode().splitlines()]


@case
def a_ci_job_squatting_the_forge_port_receives_nothing(env):
    needs_root()  # a listener of another user
    env.write_runner()
    squatter = Squatter()
    try:
        r = env.run(None, "--forge-user=root", "--forge-url=http://127.0.0.1:%d" % squatter.port,
                    retry_timeout="1")
    finally:
        got = squatter.received()
    expect(r, 69)
    assert says(r.stderr, "port %d" % squatter.port, "held by uid 65534", "root"), r
    assert got and all(n == 0 for n in got), "the squatter received %s bytes" % got
    assert env.runner_kept()


@case
def forge_user_needs_loopback_or_https(env):
    for url in ("http://10.1.2.3:3000", "http://forge.example.org"):
        r = env.run(argv=env.args(None, "--forge-user=0") + ["--forge-url=" + url])
        expect(r, 64)
        assert says(r.stderr, "--forge-user", "loopback", "https"), r
    for url in ("https://forge.example.org", "http://localhost:3000", "http://[::1]:3000"):
        os.unlink(env.token_file)  # no admin token: a dry run asks nothing
        r = env.run(argv=env.args(None, "--forge-user=0", "--dry-run") + ["--forge-url=" + url])
        expect(r, 0)
        env.write_admin_token(ADMIN + "\n")


@case
def plain_http_to_loopback_without_forge_user_is_a_warning_at_v(env):
    f = env.forge()
    r = env.run(f, "-v")
    expect(r, 0)
    assert len([l for l in r.stderr.splitlines() if "--forge-user" in l]) == 1, r
    assert "--forge-user" not in env.run(f).stderr
    assert "--forge-user" not in env.run(f, "-v", "--forge-user=%d" % os.getuid()).stderr


# -- 3. a 200 lookup that is not a runner object cannot check ---------------------

@case
def lookup_200_that_is_not_a_runner_object_cannot_check(env):
    bodies = ["", "<html><body>Sign in</body></html>", "not json", "[]", '{"id": 99}',
              '{"id": 1, "pad": "%s"}' % ("x" * (64 * 1024))]  # over the cap
    for body in bodies:
        listed(env, (2, GHOST_UUID))
        f = forgejo15(env, {1: {"uuid": UUID, "name": "hive"},
                            2: {"uuid": GHOST_UUID, "name": "hive", "status": "offline"}})
        f.script("lookup", {"status": 200, "body": body,
                            "headers": {"Content-Type": "text/html"}})
        r = env.run(f)
        expect(r, 0)
        assert env.runner_kept(), r
        assert says(r.stderr, "runner 1", "not a runner object", "keeping .runner unverified"), r
        assert not any(ACTIONS + "2" in s for s in seen(f)), seen(f)  # no clean-up
        assert (2, GHOST_UUID) in superseded(env)  # listed ghosts stay listed
        f.stop()


@case
def cleanup_lookup_that_is_not_a_runner_object_keeps_the_ghost_listed(env):
    listed(env, (2, GHOST_UUID))
    f = forgejo15(env, {1: {"uuid": UUID, "name": "hive"},
                        2: {"uuid": GHOST_UUID, "name": "hive", "status": "offline"}})
    f.script("lookup", {"status": 200, "body": {"id": 1, "uuid": UUID, "name": "hive",
                                               "owner_id": 0, "repo_id": 0}},
             {"status": 200, "body": "<html>maintenance</html>"})
    r = env.run(f)
    expect(r, 0)
    assert not any(s.startswith("DELETE") for s in seen(f)), seen(f)
    assert superseded(env) == [(2, GHOST_UUID)]


# -- 4. no file of ours at or below the container root ---------------------------

@case
def output_or_state_file_in_the_container_root_is_refused(env):
    inside = [("--output=", os.path.join(env.root, "run", "token")),
              ("--state-file=", os.path.join(env.root, "var", "state.json")),
              ("--output=", env.root + "/x/../token"),
              ("--state-file=", os.path.join(env.dir, "elsewhere", "..", "root", "s.json"))]
    for opt, path in inside:
        argv = [a for a in env.args(None) if not a.startswith(opt)] + [opt + path]
        r = env.run(argv=argv)
        expect(r, 64)
        assert says(r.stderr, opt.rstrip("="), "container-root"), r
    assert not os.path.exists(os.path.join(env.root, "run"))


# -- 5. a state file others can read is not believed ------------------------------

@case
def world_readable_state_file_is_ignored_and_replaced_0600(env):
    planted = "PlantedToken0123456789abcdefghijklmnopqrstu"
    os.makedirs(os.path.dirname(env.state_file), mode=0o700)
    with open(env.state_file, "w") as fh:
        fh.write(json.dumps({"token": planted, "superseded": []}) + "\n")
    os.chmod(env.state_file, 0o644)
    env.write_runner()
    r = env.run(None)  # the forge is down: a believed state would give its token
    expect(r, 0)
    env.assert_output(PLACEHOLDER)
    warnings = [l for l in r.stderr.splitlines() if "state file" in l]
    assert len(warnings) == 1 and "readable" in warnings[0], r
    st = os.stat(env.state_file)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    with open(env.state_file) as fh:
        assert planted not in fh.read()


# -- 6, 7. nothing lost: a kill, concurrent runs ----------------------------------

def strace_works():
    needs_tool("strace")
    p = subprocess.run(["strace", "-f", "-o", "/dev/null", "true"], capture_output=True)
    if p.returncode != 0:
        raise Skip("needs ptrace")


@case(sanitize=False)
def kill_before_runner_is_deleted_keeps_it_listed(env):
    """The runner .runner names is listed (the state written) before .runner
    goes: killed at the unlink, the next boot still knows the ghost."""
    strace_works()
    env.write_runner()
    f = env.forge(runners={})  # runner 1 is gone: .runner is deleted
    argv = ["strace", "-f", "-o", "/dev/null", "-e", "trace=unlinkat,unlink",
            "-e", "inject=unlinkat,unlink:signal=KILL"] + env.args(f)
    p = subprocess.run(argv, capture_output=True, text=True, env=run_env(None), timeout=30)
    assert p.returncode != 0, p
    assert env.runner_kept()  # killed at the unlink itself
    with open(env.state_file) as fh:
        listed_now = [(e["id"], e["uuid"]) for e in json.load(fh)["superseded"]]
    assert (1, UUID) in listed_now, listed_now


@case
def concurrent_runs_take_turns_on_the_state(env):
    """Run A holds the state from reading it to writing it; run B, started
    meanwhile, waits and then adds to what A wrote instead of A writing
    over what B wrote."""
    env.write_runner()
    a = env.forge(runners={1: UUID})
    a.script("lookup", {"status": 200, "body": {"id": 1, "uuid": UUID, "name": "hive"},
                        "delay": 0.8})
    other_root = os.path.join(env.dir, "root-b")
    os.makedirs(os.path.join(other_root, "var/lib/gitea-runner/hive"))
    with open(os.path.join(other_root, "var/lib/gitea-runner/hive/.runner"), "w") as fh:
        fh.write(json.dumps({"id": 5, "uuid": "uuid-of-b", "name": "hive", "token": "t"}))
    argv_b = [x for x in env.args(None, retry_timeout="4")
              if not x.startswith(("--container-root=", "--output="))]
    argv_b += ["--container-root=" + other_root,
               "--output=" + os.path.join(env.dir, "b", "token")]
    p = env.spawn(a, retry_timeout="4")
    time.sleep(0.3)
    rb = env.run(argv=argv_b)  # the forge down for B: runner 5 kept, listed
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    expect(rb, 0)
    assert rb.elapsed > 0.3, "B did not wait for A: %r" % rb
    with open(env.state_file) as fh:
        state = json.load(fh)
    assert state["runner"]["id"] == 1, state                       # A's
    assert (5, "uuid-of-b") in [(e["id"], e["uuid"]) for e in state["superseded"]], state  # B's


# -- 8. a reader that went away stops nothing --------------------------------------

@case
def closed_stderr_and_stdout_stop_nothing(env):
    env.write_runner()
    f = env.forge(runners={})  # .runner is deleted, the output written
    r, w = os.pipe()
    os.close(r)  # nobody reads stderr: every line meets EPIPE
    p = subprocess.run(env.args(f, "-v"), stdout=subprocess.PIPE, stderr=w,
                       env=run_env(None), timeout=30)
    os.close(w)
    assert p.returncode == 0, p.returncode
    assert not env.runner_kept()
    env.assert_output(TOKEN_LINE)
    # --json on a stdout nobody reads: said on stderr, the run done.
    env.write_runner()
    r, w = os.pipe()
    os.close(r)
    p = subprocess.run(env.args(f, "--json"), stdout=w, stderr=subprocess.PIPE,
                       env=run_env(None), timeout=30, text=True)
    os.close(w)
    assert "cannot write to standard output" in p.stderr, p.stderr
    assert p.returncode == 74, p.returncode  # EX_IOERR: the run itself went well
    assert not env.runner_kept()


# -- 9, 15. locks: bounded, and only of ours ---------------------------------------

def hold_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@case
def held_locks_end_at_retry_timeout_with_73(env):
    f = env.forge()
    os.makedirs(os.path.dirname(env.output))
    out_lock = os.path.join(os.path.dirname(env.output), ".runner-token.lock")
    os.makedirs(os.path.dirname(env.state_file), mode=0o700)
    state_lock = os.path.join(os.path.dirname(env.state_file), ".hive-ci.json.lock")
    for lock in (out_lock, state_lock):
        fd = hold_lock(lock)
        try:
            r = run_bounded(env, env.args(f, "-q", retry_timeout="0.5"), 0.5)
        finally:
            os.close(fd)
        expect(r, 73)
        assert 0.45 < r.elapsed < 1.5, r
        assert len(r.stderr.splitlines()) == 1 and says(r.stderr, lock, "held"), r
    expect(env.run(f), 0)


@case
def lock_files_are_exactly_ours_and_0600(env):
    f = env.forge()
    out_dir = os.path.dirname(env.output)
    lock = os.path.join(out_dir, ".runner-token.lock")
    # Created 0600 whatever the umask, even 0777.
    expect(env.run(f, umask=0o777), 0)
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600, oct(os.stat(lock).st_mode)
    # One of another mode is refused, 0400 too.
    for mode in (0o400, 0o640, 0o000):
        os.chmod(lock, mode)
        r = env.run(f)
        expect(r, 73)
        assert says(r.stderr, lock, "0600"), r
    os.chmod(lock, 0o600)
    expect(env.run(f), 0)


# -- 10, 11. the forge's set-up and the container's renames ------------------------

@case
def half_written_admin_token_is_read_again(env):
    """The forge's set-up writes the token in two parts; the tool reads the
    first, gets 401, and reads the file again when it changes."""
    half = len(ADMIN) // 2
    env.write_admin_token(ADMIN[:half], fresh=True)
    f = env.forge()
    p = env.spawn(f, retry_timeout="5")
    time.sleep(0.5)
    with open(env.token_file, "a") as fh:
        fh.write(ADMIN[half:] + "\n")
    out, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    env.assert_output(TOKEN_LINE)
    assert [q["status"] for q in f.requests][:1] == [401], f.requests
    # A token that stays wrong is given up within the same deadline.
    env.write_admin_token("adm_wrong_token_0123456789", fresh=True)
    r = env.run(f, retry_timeout="5")
    expect(r, 77)
    assert r.elapsed < 3.5, r  # the settle time, not the whole deadline


@case(sanitize=False)
def rename_storm_in_the_container_does_not_fail_the_read(env):
    """A container process renames without pause while the tool resolves a
    path through a symlink of hundreds of "..": openat2 says EAGAIN to
    nearly every try.  The tool keeps trying, with pauses, and reads
    .runner within its deadline."""
    inside = "/var/lib/forgejo-runner/hive/.runner"
    os.makedirs(env.host_path("/var/lib/private/forgejo-runner/hive"))
    os.makedirs(env.host_path("/var/lib/forgejo-runner"))
    os.symlink("../private" + "/../private" * 300 + "/forgejo-runner/hive",
               env.host_path("/var/lib/forgejo-runner/hive"))
    env.runner_inside = inside
    env.write_runner()
    f = env.forge(runners={1: UUID})
    pid = os.fork()
    if pid == 0:
        try:
            c, d = os.path.join(env.root, "c"), os.path.join(env.root, "d")
            open(c, "w").close()
            while True:
                os.rename(c, d)
                os.rename(d, c)
        finally:
            os._exit(0)
    try:
        for _ in range(5):
            r = env.run(f, retry_timeout="3")
            expect(r, 0)
            assert env.runner_kept(), r
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# -- the contract as written: 12, 13, 16 to 22 ---------------------------------------

@case
def reregister_without_admin_token_refuses_78(env):
    os.unlink(env.token_file)
    env.write_runner()
    before = open(env.runner).read()
    r = env.run(None, "--reregister", retry_timeout="5")
    expect(r, 78)
    assert r.elapsed < 1, r  # no wait for a token it could not use
    assert len(r.stderr.splitlines()) == 1 and says(r.stderr, "--reregister", "admin token"), r
    assert open(env.runner).read() == before


@case(sanitize=False)  # the shim must come first; the sanitizers' runtime wants that place
def json_is_printed_on_exit_70(env):
    shim = os.path.join(HERE, "..", "build", "curl_init_fails.so")
    if not os.path.exists(shim):
        raise Skip("build/curl_init_fails.so not built")
    f = env.forge()
    r = env.run(f, "--json", env={"LD_PRELOAD": shim})
    expect(r, 70)
    obj = json.loads(r.stdout)
    assert obj["exit"] == 70 and obj["action"] == "fail", obj


@case
def retry_timeout_is_0_to_86400(env):
    os.unlink(env.token_file)
    for value, rc in (("86400.5", 64), ("86400.001", 64), ("86401", 64), ("86400", 0),
                      ("0", 0)):
        r = env.run(None, "--dry-run", retry_timeout=value)
        expect(r, rc)


@case
def dry_run_json_without_runner_says_register(env):
    f = env.forge()
    action, rc, _, obj = json_outcome(env, f, "--dry-run")
    assert (action, rc) == ("register", 0), obj


@case
def urls_are_checked_when_read(env):
    bad = ["http://", "http://[::1", "http://[::1]x", "http://[zz::1]:3000", "http://h:99999",
           "http://h:0", "http://h:", "http://h:12ab", "http://user:pw@h", "ftp://h",
           "http://h h", "http://h/?q=1", "http://h!x:3000", "http://%68/"]
    for url in bad:
        r = env.run(None, "--forge-url=" + url, retry_timeout="5")
        expect(r, 64)
        assert r.elapsed < 1 and len(r.stderr.splitlines()) == 1, r
    for url in ("http://[::1]:3000", "https://forge.example.org/sub/path/", "http://h:65535"):
        os.unlink(env.token_file)
        expect(env.run(None, "--forge-url=" + url, "--dry-run"), 0)
        env.write_admin_token(ADMIN + "\n")


@case
def missing_unix_socket_is_named(env):
    sock = os.path.join(env.dir, "no", "forge.sock")
    r = env.run(None, "--unix-socket=" + sock, retry_timeout="0.3")
    expect(r, 75)
    assert sock in r.stderr, r
    assert "127.0.0.1" not in r.stderr, r


@case
def relative_output_is_refused(env):
    argv = [a for a in env.args(None) if not a.startswith("--output=")] + ["--output=run/token"]
    r = env.run(argv=argv)
    expect(r, 64)
    assert says(r.stderr, "--output", "absolute"), r


@case
def rejected_admin_token_says_scope_or_site_admin(env):
    for kw, words in (({"nonadmin_token": "adm_plain_user_token_0123456789"},
                       "not a site admin"),
                      ({"scopeless_token": "adm_plain_user_token_0123456789"}, "scope")):
        env.write_admin_token("adm_plain_user_token_0123456789\n")
        f = env.forge(**kw)
        r = env.run(f)
        expect(r, 77)
        assert says(r.stderr, "rejected the admin token", "403", words), r
        f.stop()
