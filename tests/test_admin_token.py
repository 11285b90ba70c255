"""nix/admin-token.sh, the script of hive-ci-admin-token.service (the forge's
admin token for hive-ci-prefetch, made with the forge's own command line),
run directly with a stand-in for `forgejo`/`gitea` that records its
arguments. The unit runs `mint` as the forge's user and then `install` as
root ("+"), unless its ConditionFileNotEmpty=!TARGET holds; World.unit()
plays that. As root the mint step runs as nobody, as the unit would run it
as the forge's user; unprivileged, both run as the test's own user.

tests/test_nix.py checks that the evaluated unit runs this script with the
arguments used here (and runs it through World too).
"""

import os
import pwd
import re
import shutil
import stat
import subprocess

from harness import case, write_executable

TOP = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SCRIPT = os.path.join(TOP, "nix", "admin-token.sh")
NOBODY = 65534

# The forge's command line, as far as the script uses it: `admin user list
# [--admin]` (tabwriter columns ID Username Email IsActive...), `admin user
# create` (prints the generated password on stdout), `admin user
# generate-access-token` (--raw: the token alone; a token name is unique per
# user). Each call is logged, one line of tab-separated arguments, then a
# line with the environment the forge's unit gives and the uid.
FORGE_CLI = r"""#!%(bash)s
set -eu
dir=%(dir)s
{ printf 'ARGS'; printf '\t%%s' "$@"; printf '\n'
  printf 'ENV\t%%s\t%%s\t%%s\n' "${FORGEJO_WORK_DIR-${GITEA_WORK_DIR-}}" "${FORGEJO_CUSTOM-${GITEA_CUSTOM-}}" \
	"$(id -u)"; } >>"$dir/calls"
echo "2026/01/01 00:00:00 ...s/setting/setting.go:123:LoadCommon() [I] the forge's log goes to stderr" >&2
[ ! -e "$dir/fail-$3" ] || { echo "Command error: database is locked" >&2; exit 1; }
opt() { # the value of --$1 in the rest of the arguments
	local want=$1; shift
	while [ $# -gt 0 ]; do
		case $1 in --"$want") echo "$2"; return ;; --"$want"=*) echo "${1#*=}"; return ;; esac
		shift
	done
}
rand() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
case "$1 $2 $3" in
"admin user list")
	printf 'ID   Username      Email                IsActive\n'
	i=0
	for f in "$dir"/users/*; do
		[ -e "$f" ] || continue
		i=$((i + 1))
		if [ "${4-}" = --admin ] && [ "$(cat "$f")" != admin ]; then continue; fi
		printf '%%-4s %%-13s %%-20s true\n' "$i" "${f##*/}" "${f##*/}@example.org"
	done
	;;
"admin user create")
	u=$(opt username "$@")
	[ -n "$(opt email "$@")" ] || { echo "email is required" >&2; exit 1; }
	pw=Pw$(rand 9)
	echo "$pw" >>"$dir/passwords"
	printf "generated random password is '%%s'\n" "$pw"
	[ ! -e "$dir/users/$u" ] || { echo "CreateUser: user already exists [name: $u]" >&2; exit 1; }
	case " $* " in *" --admin "*) echo admin >"$dir/users/$u" ;; *) echo user >"$dir/users/$u" ;; esac
	echo "New user '$u' has been successfully created!"
	;;
"admin user generate-access-token")
	u=$(opt username "$@") n=$(opt token-name "$@")
	[ -e "$dir/users/$u" ] || { echo "user does not exist [uid: 0, name: $u]" >&2; exit 1; }
	! grep -qx "$u $n .*" "$dir/tokens" 2>/dev/null || { echo "access token name has been used already" >&2; exit 1; }
	tok=$(rand 20)
	echo "$u $n $tok $(opt scopes "$@")" >>"$dir/tokens"
	case " $* " in *" --raw "*) echo "$tok" ;; *) echo "Access token was successfully created: $tok" ;; esac
	;;
*) echo "unknown command $*" >&2; exit 1 ;;
esac
"""


class World:
    """A forge (its users, tokens and the calls made to its command line), the
    unit's runtime directory with the stage file, and the target file."""

    def __init__(self, env, sub="a", user="hive-ci-admin", email="hive-ci-admin@localhost"):
        base = os.path.join(env.dir, sub)
        os.makedirs(base)
        os.chmod(base, 0o755)
        self.base = base
        self.root = os.geteuid() == 0
        self.uid = NOBODY if self.root else os.getuid()
        self.owner = pwd.getpwuid(self.uid).pw_name
        self.user, self.email = user, email
        self.forge_dir = os.path.join(base, "forge")
        os.makedirs(os.path.join(self.forge_dir, "users"))
        self.cli = os.path.join(self.forge_dir, "forgejo")
        write_executable(self.cli, FORGE_CLI % {"bash": shutil.which("bash"),
                                                "dir": self.forge_dir})
        self.run_dir = os.path.join(base, "run", "hive-ci-admin-token")
        os.makedirs(self.run_dir, mode=0o700)
        os.chmod(os.path.dirname(self.run_dir), 0o755)
        self.stage = os.path.join(self.run_dir, "token")
        self.target = os.path.join(base, "lib", "hyperhive", "forge-core-token")
        if self.root:
            for d in (self.forge_dir, os.path.join(self.forge_dir, "users"), self.run_dir):
                os.chown(d, NOBODY, NOBODY)
        self.outputs = []

    # -- the forge's side ------------------------------------------------------

    def add_user(self, name, admin):
        path = os.path.join(self.forge_dir, "users", name)
        with open(path, "w") as fh:
            fh.write("admin\n" if admin else "user\n")
        if self.root:
            os.chown(path, NOBODY, NOBODY)

    def calls(self):
        """[(argv, (work_dir, custom, uid))] of the forge's command line."""
        try:
            lines = open(os.path.join(self.forge_dir, "calls")).read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for a, e in zip(lines[::2], lines[1::2]):
            out.append((a.split("\t")[1:], tuple(e.split("\t")[1:])))
        return out

    def tokens(self):
        try:
            return [line.split() for line in open(os.path.join(self.forge_dir, "tokens"))]
        except FileNotFoundError:
            return []

    def secrets(self):
        pw = os.path.join(self.forge_dir, "passwords")
        return [t[2] for t in self.tokens()] + (open(pw).read().split() if os.path.exists(pw) else [])

    # -- the unit's steps -------------------------------------------------------

    def run(self, argv, as_forge=False, env=None):
        def drop():
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        # what the forge's unit gives (nixpkgs' forgejo.nix), unless given
        e.update(env or {"FORGEJO_WORK_DIR": "/var/lib/forgejo", "FORGEJO_CUSTOM": "/var/lib/forgejo/custom"})
        p = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=30,
                           preexec_fn=drop if as_forge and self.root else None)
        self.outputs.append(p.stdout + p.stderr)
        return p

    def mint(self, argv=None, env=None):
        return self.run(argv or ["bash", SCRIPT, "mint", self.cli, self.user, self.email, self.stage],
                        as_forge=True, env=env)

    def install(self, argv=None, env=None):
        return self.run(argv or ["bash", SCRIPT, "install", self.stage, self.target, self.owner], env=env)

    def unit(self, mint=None, install=None, env=None):
        """What systemd does with hive-ci-admin-token.service: "skipped"
        (ConditionFileNotEmpty=!TARGET fails), else mint, then install if
        mint succeeded; returns the failed step's process or None."""
        if os.path.isfile(self.target) and os.path.getsize(self.target) > 0:
            return "skipped"
        p = self.mint(mint, env)
        if p.returncode != 0:
            return p
        p = self.install(install, env)
        return p if p.returncode != 0 else None

    # -- what must hold ---------------------------------------------------------

    def assert_no_secret_shown(self):
        for secret in self.secrets():
            for out in self.outputs:
                assert secret not in out, "a secret was printed:\n%s" % out
            for argv, _ in self.calls():
                assert secret not in " ".join(argv), "a secret in argv: %s" % argv

    def assert_installed(self, token):
        st = os.lstat(self.target)
        assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600, oct(st.st_mode)
        assert st.st_uid == os.geteuid() and (st.st_gid == 0 or not self.root), (st.st_uid, st.st_gid)
        assert open(self.target).read() == token + "\n", "the target does not hold the token"
        left = os.listdir(os.path.dirname(self.target))
        assert left == [os.path.basename(self.target)], "left behind: %s" % left
        assert not os.path.exists(self.stage), "the stage file is still there"


def expect(p, rc):
    assert p.returncode == rc, "exit %d, not %d:\n%s%s" % (p.returncode, rc, p.stdout, p.stderr)


@case(sanitize=False)
def hive_ci_admin_token_creates_the_file_once_and_never_shows_a_secret(env):
    w = World(env)
    assert w.unit() is None, w.outputs
    calls = w.calls()
    assert [c[0][:3] for c in calls] == [["admin", "user", "list"]] * 2 + [
        ["admin", "user", "create"], ["admin", "user", "generate-access-token"]], calls
    assert calls[0][0] == ["admin", "user", "list", "--admin"], calls[0]
    assert calls[2][0] == ["admin", "user", "create", "--admin", "--username", "hive-ci-admin",
                           "--email", "hive-ci-admin@localhost", "--random-password",
                           "--must-change-password=false"], calls[2]
    gen = calls[3][0]
    assert gen[3:5] == ["--username", "hive-ci-admin"] and gen[5] == "--token-name", gen
    assert re.match(r"hive-ci-prefetch-[0-9]{8}T[0-9]{6}Z-[0-9]+$", gen[6]), gen
    assert gen[7:] == ["--scopes", "write:admin", "--raw"], gen
    # as the forge's user, with the forge's environment
    for _, (work, custom, uid) in calls:
        assert (work, custom, int(uid)) == ("/var/lib/forgejo", "/var/lib/forgejo/custom", w.uid)
    (user, name, token, scopes), = w.tokens()
    assert (user, scopes) == ("hive-ci-admin", "write:admin")
    w.assert_installed(token)
    w.assert_no_secret_shown()
    assert "created site administrator hive-ci-admin" in w.outputs[0], w.outputs[0]
    # the next boot: systemd skips the unit, the forge is not asked again
    assert w.unit() == "skipped"
    assert len(w.calls()) == 4, w.calls()
    w.assert_installed(token)


@case(sanitize=False)
def hive_ci_admin_token_reuses_a_site_admin_and_refuses_a_plain_user(env):
    w = World(env)
    w.add_user("hive-ci-admin", admin=True)
    assert w.unit() is None, w.outputs
    assert [c[0][2:4] for c in w.calls()] == [["list", "--admin"], ["generate-access-token", "--username"]], w.calls()
    w.assert_installed(w.tokens()[0][2])
    w.assert_no_secret_shown()

    w = World(env, sub="b", user="alice", email="alice@example.org")
    w.add_user("alice", admin=False)
    p = w.unit()
    expect(p, 1)
    assert "forge user alice exists but is not a site administrator" in p.stderr, p.stderr
    assert [c[0][2:] for c in w.calls()] == [["list", "--admin"], ["list"]], w.calls()
    assert not os.path.exists(w.target) and not os.path.exists(w.stage)


@case(sanitize=False)
def hive_ci_admin_token_leaves_a_file_alone_and_replaces_an_empty_one(env):
    w = World(env)
    os.makedirs(os.path.dirname(w.target))
    with open(w.target, "w") as fh:
        fh.write("theirs\n")
    # the file appeared between the unit's condition and its install step
    expect(w.mint(), 0)
    p = w.install()
    expect(p, 0)
    assert "exists and is not empty: left alone" in p.stdout, p.stdout
    assert open(w.target).read() == "theirs\n" and not os.path.exists(w.stage)
    w.assert_no_secret_shown()
    # an empty one (a forge set-up that has not written it yet) is replaced
    open(w.target, "w").close()
    assert w.unit() is None, w.outputs
    w.assert_installed(w.tokens()[-1][2])
    w.assert_no_secret_shown()


@case(sanitize=False)
def hive_ci_admin_token_install_refuses_what_the_forge_could_plant(env):
    # The stage directory is the forge user's: whatever it leaves there,
    # root must copy nothing but a token of its own into the target.
    w = World(env)
    secret = os.path.join(w.base, "root-only")
    with open(secret, "w") as fh:
        fh.write("RootsOwnSecret0123456789\n")
    os.chmod(secret, 0o600)
    for plant, why in (("symlink", "is a symlink: refused"),
                       ("not a token", "does not hold a token: refused"),
                       ("missing", "no token at")):
        if os.path.lexists(w.stage):
            os.unlink(w.stage)
        if plant == "symlink":
            os.symlink(secret, w.stage)
        elif plant == "not a token":
            with open(w.stage, "w") as fh:
                fh.write("two words\n")
            if w.root:
                os.chown(w.stage, NOBODY, NOBODY)
        p = w.install()
        expect(p, 1)
        assert why in p.stderr, (plant, p.stderr)
        assert not os.path.lexists(w.target) or os.path.getsize(w.target) == 0, plant
        assert "RootsOwnSecret" not in p.stdout + p.stderr and "two words" not in p.stdout + p.stderr
    if w.root:
        # a hard link or copy of someone else's file: not the forge's own
        shutil.copy(secret, w.stage)
        p = w.install()
        expect(p, 1)
        assert "is not a regular file of nobody: refused" in p.stderr, p.stderr
        assert not os.path.exists(w.target)
    # nothing half-written next to the target
    target_dir = os.path.dirname(w.target)
    assert not os.path.isdir(target_dir) or os.listdir(target_dir) == [], os.listdir(target_dir)


@case(sanitize=False)
def hive_ci_admin_token_a_failing_forge_leaves_nothing(env):
    for failing, step in (("list", "cannot list the forge's administrators"),
                          ("create", "cannot create the site administrator hive-ci-admin"),
                          ("generate-access-token", "cannot create an access token for hive-ci-admin")):
        w = World(env, sub=failing)
        open(os.path.join(w.forge_dir, "fail-" + failing), "w").close()
        p = w.unit()
        expect(p, 1)
        assert step in p.stderr, (failing, p.stderr)
        assert not os.path.exists(w.target) and not os.listdir(w.run_dir), (failing, os.listdir(w.run_dir))
        w.assert_no_secret_shown()
