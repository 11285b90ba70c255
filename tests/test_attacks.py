"""The container is hostile and the tokens are secrets (issue: treat the
container as hostile).  Each case attacks one path with the real binary and
checks that nothing outside the container root changed, no secret leaked,
and the outcome is the designed one."""

import ctypes
import hashlib
import os
import socket
import stat
import threading
import time

from harness import (ADMIN, REG, UUID, Skip, case, expect, needs_root, paths_seen,
                     runner_json)

TOKEN_LINE = "TOKEN=%s\n" % REG
DESIGN_LOOKUP = "/api/v1/admin/runners/1"
DESIGN_TOKEN = "/api/v1/admin/runners/registration-token"


class HostFiles:
    """Files outside the container root that an attack points at; each must
    end exactly as it began."""

    def __init__(self, env):
        self.dir = os.path.join(env.dir, "host")
        os.makedirs(os.path.join(self.dir, "hive"))
        self.secret = os.path.join(self.dir, "shadow")
        with open(self.secret, "w") as fh:
            fh.write("root:$6$secret-hash:19000:0:99999:7:::\n")
        # A valid, registered-looking .runner outside the root: following a
        # link to it would make the tool keep credentials it never saw.
        self.runner = os.path.join(self.dir, "hive", ".runner")
        with open(self.runner, "w") as fh:
            fh.write(runner_json(1, UUID))
        self.before = self.snapshot()

    def snapshot(self):
        out = {}
        for d, _, files in os.walk(self.dir):
            for name in files:
                p = os.path.join(d, name)
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
        return out

    def assert_untouched(self):
        assert self.snapshot() == self.before, "a host file changed"


def registered_forge(env):
    return env.forge(runners={1: UUID})


def assert_link_leads_nowhere(env, host, link, target):
    """Replaces link with a symlink to target; resolved inside the root it
    must lead nowhere: no .runner, so the runner registers."""
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)
    f = registered_forge(env)
    r = env.run(f)
    expect(r, 0)
    env.assert_output(TOKEN_LINE)
    assert paths_seen(f) == [DESIGN_TOKEN], (target, paths_seen(f))
    host.assert_untouched()
    assert host.dir not in r.stderr, r
    f.stop()


def assert_rejected_and_reregistered(env, f, r):
    expect(r, 0)
    assert not os.path.lexists(env.runner), "the link/file was not removed"
    env.assert_output(TOKEN_LINE)
    assert DESIGN_LOOKUP not in paths_seen(f), "asked the forge about a file it should not trust"


# -- container paths ------------------------------------------------------------

@case
def runner_symlink_to_host_file_is_removed_not_followed(env):
    host = HostFiles(env)
    for target in (host.runner, host.secret):
        os.makedirs(os.path.dirname(env.runner), exist_ok=True)
        os.symlink(target, env.runner)
        f = registered_forge(env)
        r = env.run(f)
        assert_rejected_and_reregistered(env, f, r)
        host.assert_untouched()
        assert host.dir not in r.stderr, "named a host path: %r" % r
        f.stop()


@case
def runner_directory_swapped_for_symlinks_out_of_root(env):
    host = HostFiles(env)
    hive = os.path.dirname(env.runner)  # root/var/lib/gitea-runner/hive
    depth = env.runner_inside.count("/") + env.root.count("/") + 2
    targets = [
        os.path.join(host.dir, "hive"),                                  # absolute
        "../" * depth + host.dir.lstrip("/") + "/hive",                  # relative, .. chain
        "/../../../../../.." + os.path.join(host.dir, "hive"),           # absolute with ..
    ]
    os.makedirs(os.path.dirname(hive))
    for target in targets:
        assert_link_leads_nowhere(env, host, hive, target)


@case
def directory_above_swapped_for_symlink_out_of_root(env):
    host = HostFiles(env)
    os.makedirs(os.path.join(host.dir, "gitea-runner"))
    os.rename(os.path.join(host.dir, "hive"), os.path.join(host.dir, "gitea-runner", "hive"))
    host.before = host.snapshot()
    var_lib = env.host_path("/var/lib")
    os.makedirs(os.path.dirname(var_lib))
    for target in (host.dir, "../../../" + "../" * env.root.count("/") + host.dir.lstrip("/")):
        assert_link_leads_nowhere(env, host, var_lib, target)


@case
def dynamicuser_symlink_layout_still_validates(env):
    # /var/lib/gitea-runner -> private/gitea-runner, as systemd's DynamicUser makes it
    real = env.host_path("/var/lib/private/gitea-runner/hive")
    os.makedirs(real)
    os.symlink("private/gitea-runner", env.host_path("/var/lib/gitea-runner"))
    with open(os.path.join(real, ".runner"), "w") as fh:
        fh.write(runner_json(1, UUID))
    f = registered_forge(env)
    r = env.run(f)
    expect(r, 0)
    assert "runner 1 still registered" in r.stderr, r
    assert os.path.exists(os.path.join(real, ".runner"))
    f.stop()
    # and when the forge forgot it, the real file is the one deleted
    f = env.forge(runners={})
    r = env.run(f)
    expect(r, 0)
    assert not os.path.exists(os.path.join(real, ".runner"))
    assert os.path.islink(env.host_path("/var/lib/gitea-runner"))
    env.assert_output(TOKEN_LINE)


@case
def absolute_symlink_inside_root_is_resolved_in_root(env):
    # An absolute link means the container's /, not the host's.
    real = env.host_path("/srv/runner-state")
    os.makedirs(real)
    with open(os.path.join(real, ".runner"), "w") as fh:
        fh.write(runner_json(1, UUID))
    os.makedirs(env.host_path("/var/lib/gitea-runner"))
    os.symlink("/srv/runner-state", env.host_path("/var/lib/gitea-runner/hive"))
    f = registered_forge(env)
    r = env.run(f)
    expect(r, 0)
    assert "runner 1 still registered" in r.stderr, r


@case
def fifo_socket_directory_are_malformed(env):
    def make_fifo(p):
        os.mkfifo(p)

    def make_socket(p):
        s = socket.socket(socket.AF_UNIX)
        s.bind(p)
        s.close()

    def make_dir(p):
        os.mkdir(p)

    for make in (make_fifo, make_socket, make_dir):
        os.makedirs(os.path.dirname(env.runner), exist_ok=True)
        make(env.runner)
        f = registered_forge(env)
        r = env.run(f, timeout=10)
        assert_rejected_and_reregistered(env, f, r)
        assert "is not a regular file" in r.stderr, r
        f.stop()


@case
def device_node_is_never_opened(env):
    needs_root()
    os.makedirs(os.path.dirname(env.runner))
    try:
        os.mknod(env.runner, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    except PermissionError:  # uid 0 in a user namespace
        raise Skip("needs root")
    f = registered_forge(env)
    r = env.run(f, timeout=10)
    assert_rejected_and_reregistered(env, f, r)


@case
def huge_runner_file_is_malformed(env):
    os.makedirs(os.path.dirname(env.runner))
    with open(env.runner, "wb") as fh:
        fh.truncate(100 * 1024 * 1024)  # 100 MiB, sparse
    f = registered_forge(env)
    r = env.run(f)
    assert_rejected_and_reregistered(env, f, r)
    assert "larger than 64 KiB" in r.stderr, r


@case
def runner_file_at_64k_limit(env):
    body = runner_json(1, UUID)
    padded = body[:-2] + " " * (64 * 1024 - len(body)) + "}\n"
    assert len(padded) == 64 * 1024, len(padded)
    env.write_runner(padded)
    f = registered_forge(env)
    r = env.run(f)
    expect(r, 0)
    assert os.path.exists(env.runner), r  # exactly 64 KiB is still a file to judge


_libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2


def rename_exchange(a, b):
    if _libc.renameat2(-100, a.encode(), -100, b.encode(), RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@case(slow=True)
def runner_swapped_by_racing_thread(env):
    host = HostFiles(env)
    d = os.path.dirname(env.runner)
    os.makedirs(d)
    decoy = os.path.join(d, "decoy")
    stop = threading.Event()
    swaps = [0]

    def racer():
        while not stop.is_set():
            try:
                rename_exchange(env.runner, decoy)
                swaps[0] += 1
            except OSError:
                time.sleep(0.0005)

    f = registered_forge(env)
    t = threading.Thread(target=racer, daemon=True)
    t.start()
    try:
        for i in range(40):
            for p in (env.runner, decoy):
                if os.path.lexists(p):
                    os.unlink(p)
            env.write_runner()
            os.symlink(host.runner if i % 2 else host.secret, decoy)
            r = env.run(f)
            expect(r, 0)
            host.assert_untouched()
            assert host.dir not in r.stderr, r
    finally:
        stop.set()
        t.join()
    assert swaps[0] > 100, "the race never ran: %d swaps" % swaps[0]


# -- secrets ----------------------------------------------------------------------

@case
def admin_token_file_attacks_exit_78(env):
    f = env.forge()
    env.write_admin_token(ADMIN + "\n", 0o602)
    r = env.run(f)
    expect(r, 78)
    assert "group- or world-writable" in r.stderr
    real = os.path.join(env.dir, "real-token")
    with open(real, "w") as fh:
        fh.write(ADMIN + "\n")
    os.chmod(real, 0o600)
    os.unlink(env.token_file)
    os.symlink(real, env.token_file)
    r = env.run(f)
    expect(r, 78)
    assert "symbolic link" in r.stderr, r
    for text, why in ((ADMIN[:10] + "\r\n" + ADMIN[10:] + "\n", "printable ASCII"),
                      (ADMIN + "\r\nsecond\n", "printable ASCII"),
                      ("x" * (1024 * 1024), "4 KiB")):
        env.write_admin_token(text)
        r = env.run(f)
        expect(r, 78)
        assert why in r.stderr, r
    assert f.requests == []


@case
def world_readable_admin_token_warns_but_works(env):
    env.write_admin_token(ADMIN + "\n", 0o644)
    f = env.forge()
    r = env.run(f)
    expect(r, 0)
    assert "world-readable" in r.stderr, r


@case
def admin_token_crlf_line_end_is_stripped(env):
    env.write_admin_token(ADMIN + "\r\n")
    f = env.forge()
    expect(env.run(f), 0)
    assert f.requests[0]["headers"]["authorization"] == "token " + ADMIN


@case
def forbidden_characters_in_registration_token_exit_76(env):
    base = "Abc123"
    bad = [base + "\n", base + "\nEVIL=1", base + '"', base + "\\", base + "#x", base + "=x",
           base + " x", base + "\u00e9", base + ";x", base + "'", "a" * 256, base + "\t",
           base + "\x00x"]
    old = TOKEN_LINE.replace("Reg", "Old")
    for token in bad:
        env.write_output(old)
        f = env.forge(reg_token=token)
        r = env.run(f)
        expect(r, 76)
        env.assert_output(old)
        f.stop()


@case
def endless_chunked_body_is_cut_off(env):
    f = env.forge()
    f.script("token", {"mode": "endless"})
    p = env.spawn(f, retry_timeout="5")
    _, status, usage = os.wait4(p.pid, 0)
    elapsed_rc = os.waitstatus_to_exitcode(status)
    assert elapsed_rc == 76, elapsed_rc
    p.stdout.close()
    p.stderr.close()
    if "asan" not in env.binary:
        assert usage.ru_maxrss < 32 * 1024, "peak RSS %d KiB" % usage.ru_maxrss


@case
def forge_that_accepts_and_never_answers_cannot_hold_the_boot(env):
    f = env.forge()
    f.script("token", *[{"mode": "hang"}] * 10)
    r = env.run(f, retry_timeout="1.5")
    expect(r, 75)
    assert 1.4 < r.elapsed < 2.2, r


@case
def redirect_is_not_followed_and_other_server_sees_nothing(env):
    other = env.forge()
    env.write_runner()
    f = env.forge(runners={1: UUID})
    for kind, status in (("lookup", 302), ("token", 307)):
        f.script(kind, {"status": status,
                        "headers": {"Location": other.url + "/api/v1/admin/runners/1"}})
    r = env.run(f)
    expect(r, 76)  # the lookup's 302 discards .runner; the token's 307 is no token
    assert other.requests == [], other.requests
    assert other.connections == 0


def descendants(pid):
    """pid and every process below it, from /proc."""
    children = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % name) as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


@case
def secrets_absent_from_proc_while_waiting(env):
    """While the tool waits on the forge, neither it nor anything it started
    shows a secret in its argv or environment, and it is not dumpable: its
    /proc files belong to root, not to the user it runs as.  As root it runs
    as nobody, so that ownership tells, and every /proc file can be read."""
    env.write_runner()
    f = env.forge(runners={})
    f.script("token", {"mode": "hang"})
    user = None
    if os.geteuid() == 0:
        user = 65534
        env.give_to(user)
    p = env.spawn(f, retry_timeout="3", user=user)
    try:
        deadline = time.monotonic() + 3
        while DESIGN_TOKEN not in paths_seen(f) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert DESIGN_TOKEN in paths_seen(f), "never got to the token request"
        for pid in descendants(p.pid):
            for name in ("cmdline", "environ"):
                try:
                    with open("/proc/%d/%s" % (pid, name), "rb") as fh:
                        blob = fh.read()
                except PermissionError:
                    assert os.geteuid() != 0, "/proc/%d unreadable as root" % pid
                    continue  # not dumpable, and we are not root
                for secret in (ADMIN, REG, "RunnerOwnSecretCanary"):
                    assert secret.encode() not in blob, "secret in /proc/%d/%s" % (pid, name)
        # PR_SET_DUMPABLE 0 hands /proc/<pid> to root (or, in a user
        # namespace such as Nix's sandbox, to the unmapped overflow uid).
        st = os.stat("/proc/%d/environ" % p.pid)
        assert st.st_uid != (user if user is not None else os.getuid()), \
            "process is dumpable: its environ belongs to its own user"
    finally:
        p.kill()
        out, err = p.communicate()
    for secret in (ADMIN, REG):
        assert secret not in out + err


@case
def nonempty_directory_is_set_aside_not_walked(env):
    host = HostFiles(env)
    os.makedirs(os.path.join(env.runner, "sub"))
    os.symlink(host.dir, os.path.join(env.runner, "sub", "escape"))
    f = registered_forge(env)
    r = env.run(f)
    assert_rejected_and_reregistered(env, f, r)
    aside = [n for n in os.listdir(os.path.dirname(env.runner))
             if n.startswith(".runner.discarded-")]
    assert len(aside) == 1, os.listdir(os.path.dirname(env.runner))
    assert os.path.islink(os.path.join(os.path.dirname(env.runner), aside[0], "sub", "escape"))
    host.assert_untouched()
