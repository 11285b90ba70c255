"""Many boots, not one run (issues: a stable token file; no ghost runners;
the very first boot works).  The real binary runs before each boot against
a test forge that keeps real registration state; after it, the NixOS runner
module of each of the four generations (labels, envhash, tokenhash,
forgejo) is emulated exactly as it is written (tests/runner_sim.py), then
the runner's daemon.  The tool writes the token file in the format the
generation wants (TOKEN= for labels/envhash, the bare token for tokenhash
and forgejo) and names the generation's .runner.  After every boot on which
the forge is up the runner must work; .runner must survive every boot on
which the forge is down; two steady boots write the same bytes and do not
rewrite the state file; and where the forge can delete runners, no ghost of
ours is left once a boot has confirmed the current runner.

Run as a program it prints the figures for every flavour and generation,
with and without the clean-up:  python3 tests/test_boots.py BINARY
"""

import os
import random
import sys
import threading
import time

import forge
import runner_sim
from harness import ADMIN, Env, case

FLAVOURS = ("design", "forgejo11", "forgejo15", "forgejo16", "gitea122", "gitea124",
            "gitea126", "future")
CLEANING = ("forgejo15", "forgejo16")  # DELETE, and runner objects with a uuid
LABELS = ["native:host"]


class Host:
    """One NixOS host: the forge, the tool's boot unit, the container.
    token_format: what the tool writes (default: what the generation
    wants); exec_start_pre: False when the host registers the runner."""

    def __init__(self, env, flavour, generation, *tool_args, token_format=None,
                 exec_start_pre=True):
        self.env = env
        self.forge = env.forge(flavour, reg_token=forge.new_token())
        self.token_format = token_format or runner_sim.TOKEN_FORMAT[generation]
        self.tool_args = list(tool_args)
        if self.token_format == "raw":
            self.tool_args.append("--token-format=raw")
        self.sim = runner_sim.RunnerModule(generation, env.root, env.output, self.forge,
                                           name="hive", labels=list(LABELS),
                                           exec_start_pre=exec_start_pre)
        env.runner_inside = self.sim.runner_inside
        env.secrets.append(self.forge.reg_token)
        self.log = []        # (what, tool result, boot result)
        self.up_boots = self.working = 0

    # -- what happens to the world between boots ------------------------------

    def reset_token(self):
        self.env.secrets.append(self.forge.reset_token())

    def wipe(self):
        self.env.secrets.append(self.forge.wipe())

    def squat_id(self):
        """After a wipe someone else registers first, taking our old id."""
        self.forge.register(self.forge.reg_token, "someone-else", ["other:host"])

    def runner_id(self):
        r = self.sim.read_runner()
        return r and r.get("id")

    def ghosts(self):
        return self.forge.ghosts(current_id=self.runner_id(), name="hive")

    # -- one boot --------------------------------------------------------------

    def run_tool(self, *extra, retry_timeout="1"):
        r = self.env.run(self.forge, *(self.tool_args + list(extra)),
                         retry_timeout=retry_timeout)
        assert r.rc == 0, "%s: the tool failed\n%r" % (self.what, r)
        return r

    def boot(self, what, *extra, forge_down=False, admin="there", labels=None):
        """A reboot: the container stops, /run is emptied, the tool runs,
        the container starts.  admin: "there", "missing" or "late"."""
        self.what = what
        self.sim.stop()
        if os.path.exists(self.env.output):
            os.unlink(self.env.output)
        if labels is not None:
            self.sim.labels = labels
        had_runner = self.sim.read_runner()
        if forge_down:
            self.forge.down()
        if admin != "there":
            os.unlink(self.env.token_file)
        if admin == "late":
            # The tool polls every 50 ms: it has started and looked a few
            # times by then (were it slower, the boot is an ordinary one).
            threading.Timer(0.12, self.env.write_admin_token, (ADMIN + "\n",)).start()
        r = self.run_tool(*extra, retry_timeout="0.15" if admin == "missing" else "2")
        if admin == "missing":
            self.env.write_admin_token(ADMIN + "\n")
        b = self.sim.boot()
        self.log.append((what, r, b))
        if forge_down:
            self.forge.up()
            if labels is None:
                assert self.sim.read_runner() == had_runner, \
                    "%s: .runner did not survive a boot with the forge down" % what
        else:
            self.up_boots += 1
            self.working += b.works
            assert b.works, "%s: the runner does not work: %s\ntool: %r\nunit: %s" % (
                what, b.why, r, b.log)
        return r, b

    def by_hand(self, what, *extra):
        """An operator runs the tool (the container is running), then
        restarts the container, which runs the boot unit again (PartOf=)."""
        self.what = what
        r = self.run_tool(*extra)
        self.boot(what + ", container restarted")
        return r

    def steady(self, what):
        """Two boots in a row with nothing in between: the same bytes, and
        the state file not rewritten by the second."""
        self.boot(what)
        before, st = self.env.output_text(), os.stat(self.env.state_file)
        self.boot(what + " again")
        after = os.stat(self.env.state_file)
        assert self.env.output_text() == before, "%s: the output's bytes changed" % what
        assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), \
            "%s: a steady boot rewrote the state file" % what


def story(host):
    """The boots every flavour and generation goes through."""
    host.boot("first boot, the admin token comes late", admin="late")
    host.steady("reboot")
    host.boot("forge down", forge_down=True)
    host.boot("forge back")
    host.boot("labels changed", labels=["native:host", "big:host"])
    host.steady("reboot after the label change")
    host.reset_token()
    host.boot("token reset by an admin")
    host.boot("admin token file missing", admin="missing")
    host.boot("reboot")
    host.wipe()
    host.boot("forge wiped")
    host.wipe()
    host.squat_id()
    host.boot("forge wiped, our id reused by another runner")
    host.by_hand("--reregister", "--reregister")
    host.by_hand("--reregister twice", "--reregister")
    host.boot("labels changed right after", labels=list(LABELS))
    host.steady("reboot")


def multi_boot(flavour, generation):
    def test(env):
        host = Host(env, flavour, generation)
        story(host)
        assert host.working == host.up_boots
        if flavour in CLEANING:
            assert host.ghosts() == [], "ghosts left: %s" % host.ghosts()
    test.__name__ = "boots_%s_%s" % (flavour, generation)
    return test


# The whole matrix on the plain binary; one combination (a forge that can
# delete, a generation that hashes the token) under the sanitizers too.
REPRESENTATIVE = ("forgejo15", "tokenhash")
for _flavour in FLAVOURS:
    for _generation in runner_sim.GENERATIONS:
        case(multi_boot(_flavour, _generation),
             sanitize=(_flavour, _generation) == REPRESENTATIVE)


@case(sanitize=False)
def boots_forgejo_module_with_the_env_format_never_works(env):
    """By design: services.forgejo.runner sends the file as the token, so
    "TOKEN=<t>" is refused, on the first boot and every one after."""
    host = Host(env, "forgejo15", "forgejo", token_format="env")
    for what in ("first boot", "reboot"):
        try:
            host.boot(what)
        except AssertionError as e:
            assert "the runner does not work: ExecStartPre failed" in str(e), e
        else:
            raise AssertionError("TOKEN= worked with the forgejo module")
        assert host.log[-1][2].registered and not host.log[-1][2].register_ok
    assert host.sim.read_runner() is None


@case(sanitize=False)
def boots_without_cleanup_leave_ghosts(env):
    """What the clean-up is for: the same story leaves ghosts without it."""
    host = Host(env, "forgejo15", "tokenhash", "--no-cleanup")
    story(host)
    # The registrations superseded since the last wipe: --reregister twice
    # and a label change.
    assert len(host.ghosts()) >= 3, host.ghosts()


def placeholder_on_keep_breaks(generation):
    def test(env):
        """What the stable token is for: with the placeholder after a 200
        lookup, the hash generations delete a working .runner on the next
        boot and register with "placeholder", which fails; the others keep
        it until a label change makes them register with it.  This story
        must notice either way."""
        host = Host(env, "forgejo15", generation, "--placeholder-on-keep")
        host.boot("first boot")
        steps = [("reboot", None)]
        if generation not in ("envhash", "tokenhash"):
            host.boot("reboot")        # survives: the token is not looked at
            steps = [("labels changed", ["native:host", "big:host"])]
        for what, labels in steps:
            try:
                host.boot(what, labels=labels)
            except AssertionError as e:
                assert "the runner does not work" in str(e), e
            else:
                raise AssertionError("the placeholder on keep did not break %s"
                                     % generation)
            assert host.log[-1][2].registered and not host.log[-1][2].register_ok
    test.__name__ = "boots_with_the_original_placeholder_design_break_%s" % generation
    return test


for _generation in runner_sim.GENERATIONS:
    case(placeholder_on_keep_breaks(_generation), sanitize=False)


@case(sanitize=False)
def boots_in_a_seeded_random_order_leave_no_ghost(env):
    rng = random.Random(20261128)
    host = Host(env, "forgejo16", "tokenhash")
    host.boot("first boot")
    for i in range(24):
        event = rng.choice(("reboot", "labels", "reset", "reregister", "down", "admin"))
        what = "%d: %s" % (i, event)
        if event == "labels":
            host.boot(what, labels=rng.choice((LABELS, ["native:host", "big:host"])))
        elif event == "reset":
            host.reset_token()
            host.boot(what)
        elif event == "reregister":
            host.by_hand(what, "--reregister")
        elif event == "down":
            host.boot(what, forge_down=True)
        elif event == "admin":
            host.boot(what, admin="missing")
        else:
            host.boot(what)
    host.steady("the end")
    assert host.working == host.up_boots
    assert host.ghosts() == [], "ghosts left: %s" % host.ghosts()


def report(binary):
    """Working boots / boots with the forge up, and ghosts left, per
    flavour, generation and clean-up."""
    Env.binary = os.path.abspath(binary)
    print("%-10s %-10s %-8s %8s %7s" % ("flavour", "module", "cleanup", "working", "ghosts"))
    for flavour in FLAVOURS:
        for generation in runner_sim.GENERATIONS:
            for extra in ((), ("--no-cleanup",)):
                env = Env()
                try:
                    host = Host(env, flavour, generation, *extra)
                    story(host)
                    print("%-10s %-10s %-8s %4d/%-3d %7d" % (
                        flavour, generation, "off" if extra else "on", host.working,
                        host.up_boots, len(host.ghosts())))
                finally:
                    env.close()


if __name__ == "__main__":
    start = time.monotonic()
    report(sys.argv[1] if len(sys.argv) > 1 else "./hive-ci-prefetch")
    print("%.1fs" % (time.monotonic() - start))
