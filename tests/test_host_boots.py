"""The boot story in host mode (issue 20): the tool registers the runner
itself through the runners' own protocol and writes .runner into the
container; the runner module's ExecStartPre is disabled (`lib.mkForce [ ]`),
so only the daemon runs (tests/runner_sim.py, exec_start_pre=False).  On
every flavour and every module generation:

- after every boot with the forge up the runner works; .runner survives
  every boot with the forge down;
- the output always holds the placeholder constant, and no registration
  token (nor the admin token) is in any file under the container root, in
  the output or in the state file, on any boot;
- a label change keeps the runner's uuid (the daemon declares the labels);
- at the end the forge holds one runner record of this host where it can
  delete (forgejo15, forgejo16, gitea124, gitea126).

Run as a program it prints the figures for every flavour and generation:
python3 tests/test_host_boots.py BINARY
"""

import os
import sys
import time

import runner_sim
from harness import Env, case, files_holding
from test_boots import FLAVOURS, Host, story

DELETING = ("forgejo15", "forgejo16", "gitea124", "gitea126")
PLACEHOLDERS = {"env": "TOKEN=placeholder\n", "raw": "placeholder\n"}



class HostModeHost(Host):
    """A host whose tool registers the runner (--registration=host)."""

    def __init__(self, env, flavour, generation, *tool_args):
        super().__init__(env, flavour, generation, "--registration=host",
                         "--runner-name=hive", *tool_args, exec_start_pre=False)
        self.scanned = 0

    def run_tool(self, *extra, retry_timeout="1"):
        labels = "--labels=" + ",".join(self.sim.labels)
        r = super().run_tool(labels, *extra, retry_timeout=retry_timeout)
        # Nor the runners' own tokens, of any record the forge holds.
        with self.forge._data:
            own = [v.token for v in self.forge.runners.values()
                   if getattr(v, "token", None)]
        for token in own:
            assert token not in r.stdout + r.stderr, \
                "%s: a runner's own token in the output\n%r" % (self.what, r)
        return r

    def boot(self, what, *extra, labels=None, **kw):
        before = self.sim.read_runner()
        up = not kw.get("forge_down")
        r, b = super().boot(what, *extra, labels=labels, **kw)
        self.check_no_secret_written(what)
        after = self.sim.read_runner()
        if labels is not None and up and before is not None:
            assert after is not None and after["uuid"] == before["uuid"], \
                "%s: a label change registered another runner" % what
            assert after["labels"] == list(labels), after
        return r, b

    def check_no_secret_written(self, what):
        """The output is the placeholder; no registration token or admin
        token in it, in the state file, or in any file under the
        container root."""
        assert self.env.output_text() == PLACEHOLDERS[self.token_format], \
            "%s: the output is %r" % (what, self.env.output_text())
        found, read = files_holding(self.env.secrets,  # ADMIN among them
                                    self.env.root, self.env.output, self.env.state_file)
        assert not found, "%s: a secret in %s" % (what, found)
        self.scanned += read

    def records_of_ours(self):
        with self.forge._data:
            return sorted(key for key, value in self.forge.runners.items()
                          if getattr(value, "name", None) == "hive")


def host_boots(flavour, generation):
    def test(env):
        host = HostModeHost(env, flavour, generation)
        story(host)
        assert host.working == host.up_boots
        assert host.scanned > 0
        if flavour in DELETING:
            assert host.records_of_ours() == [host.runner_id()], \
                "runner records left: %s" % host.records_of_ours()
    test.__name__ = "host_boots_%s_%s" % (flavour, generation)
    return test


# The whole matrix on the plain binary; one combination under the
# sanitizers too.
REPRESENTATIVE = ("gitea124", "labels")
for _flavour in FLAVOURS:
    for _generation in runner_sim.GENERATIONS:
        case(host_boots(_flavour, _generation),
             sanitize=(_flavour, _generation) == REPRESENTATIVE)


def report(binary):
    """Working boots / boots with the forge up, runner records of this host
    left, and files scanned for a secret, per flavour and generation."""
    Env.binary = os.path.abspath(binary)
    print("%-10s %-10s %8s %8s %8s" % ("flavour", "module", "working", "records", "scanned"))
    for flavour in FLAVOURS:
        for generation in runner_sim.GENERATIONS:
            env = Env()
            try:
                host = HostModeHost(env, flavour, generation)
                story(host)
                print("%-10s %-10s %4d/%-3d %8d %8d" % (
                    flavour, generation, host.working, host.up_boots,
                    len(host.records_of_ours()), host.scanned))
            finally:
                env.close()


if __name__ == "__main__":
    start = time.monotonic()
    report(sys.argv[1] if len(sys.argv) > 1 else "./hive-ci-prefetch")
    print("%.1fs" % (time.monotonic() - start))
