#!/usr/bin/env python3
"""make demo: the real binary against the test forge (Forgejo 15), in a
temporary directory, with the NixOS runner module (the newer generation)
emulated in the container.  First a host in the default mode: a first boot
whose admin token comes late, steady reboots, a dry run, a label change and
the ghost it leaves, a forge that is down, a forge wiped, and an operator's
re-registration.  Then a second host whose tool registers the runner itself
(--registration=host, the module's ExecStartPre off): its first boot, two
reboots, and no registration token in its container or its output.  Every
line it prints is what the tool said or did, or what the runner and the
forge saw; no token is printed."""

import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forge  # noqa: E402
from harness import files_holding  # noqa: E402
import runner_sim  # noqa: E402

BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
ADMIN = "adm_demo0123456789abcdef0123456789abcdef"
PROTOCOL = "/api/actions/runner.v1.RunnerService/"


class Host:
    """One host's files, all under the demo's temporary directory: the
    container root, the tool's --output and --state-file."""

    def __init__(self, top, name, f, *tool_args, exec_start_pre=True):
        self.name = name
        self.root = os.path.join(top, name, "nixos-containers", "hive-ci")
        self.output = os.path.join(top, name, "run", "hive-ci", "runner-token")
        self.state = os.path.join(top, name, "hive-ci-prefetch", "hive-ci.json")
        self.tool_args = list(tool_args)
        self.sim = runner_sim.RunnerModule("tokenhash", self.root, self.output, f,
                                           name=name, labels=["native:host"],
                                           exec_start_pre=exec_start_pre)


def main():
    binary = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="hive-ci-prefetch-demo-")
    token_file = os.path.join(tmp, "hyperhive", "forge-core-token")
    f = forge.Forge(flavour="forgejo15", admin_token=ADMIN)
    reg_tokens = [f.reg_token]  # every registration token the forge had

    def redact(text):
        """No secret leaves the demo, should the tool ever print one."""
        for token in reg_tokens:
            text = text.replace(token, "<token>")
        for key in list(f.runners):
            own = f.record(key).token
            if own:
                text = text.replace(own, "<runner's own token>")
        return text.replace(ADMIN, "<admin token>")

    def write_admin_token():
        os.makedirs(os.path.dirname(token_file), exist_ok=True)
        with open(token_file, "w") as fh:
            fh.write(ADMIN + "\n")
        os.chmod(token_file, 0o600)

    def tool(host, *extra, show_requests=False):
        argv = [binary, "--forge-url=" + f.url, "--core-token-file=" + token_file,
                "--container-root=" + host.root,
                "--runner-file=" + host.sim.runner_inside,
                "--output=" + host.output, "--state-file=" + host.state,
                "--token-format=raw", "--retry-timeout=3", *host.tool_args, *extra]
        print("%s$ hive-ci-prefetch %s%s" % (DIM, " ".join(host.tool_args + list(extra)),
                                             OFF))
        n0 = len(f.requests)
        p = subprocess.run(argv, capture_output=True, text=True,
                           env={"PATH": os.environ.get("PATH", "")})
        for line in (p.stderr + p.stdout).splitlines():
            print("  " + redact(line))
        text = open(host.output).read().strip() if os.path.exists(host.output) else "(none)"
        shown = "<registration token>" if text in reg_tokens else redact(text)
        print("  %sexit %d · output %s%s" % (DIM, p.returncode, shown, OFF))
        if show_requests:
            asked = ["%s %s %s" % (r["method"], r["path"].replace(PROTOCOL, ""),
                                   r["status"]) for r in f.requests[n0:]]
            print("  %sthe forge saw %d request%s: %s%s" % (
                DIM, len(asked), "" if len(asked) == 1 else "s",
                ", ".join(asked) or "none", OFF))

    def boot(host, title, *extra, admin_late=False, show_requests=False):
        print("\n%s== %s%s" % (BOLD, title, OFF))
        host.sim.stop()
        if os.path.exists(host.output):
            os.unlink(host.output)  # /run is emptied on every boot
        if admin_late:
            threading.Timer(0.5, write_admin_token).start()
        tool(host, *extra, show_requests=show_requests)
        container(host)

    def container(host):
        b = host.sim.boot()
        why = ", ".join(b.reasons) or "nothing changed"
        if host.sim.exec_start_pre:
            module = "%s (%s)" % ("registered" if b.registered
                                  else "no registration", why)
        else:
            module = "ExecStartPre off"
        runners = ", ".join("%d %s" % (i, f.status(i)) for i in sorted(f.runners)
                            if f.record(i).name == host.name)
        print("  %scontainer: %s; %s · forge's runners of %s: %s%s" % (
            DIM, module,
            "the runner works" if b.works
            else "the runner waits for the forge" if not f.is_up
            else "the runner is DOWN: " + b.why,
            host.name, runners or "none", OFF))

    def no_token_in(host):
        """Every file under the container root, the output and the state
        file, read for any registration token the forge ever had."""
        found, read = files_holding(reg_tokens, host.root, host.output, host.state)
        found = [os.path.relpath(p, tmp) for p in found]
        print("\n%s== a registration token on %s? %s%s" % (
            BOLD, host.name, "in " + ", ".join(found) if found else
            "in none of its %d files (container root, output, state file)"
            % read, OFF))

    try:
        f.start()
        print("test forge (Forgejo 15) at %s; work directory %s" % (f.url, tmp))
        hive = Host(tmp, "hive", f)
        boot(hive, "first boot: the forge writes its admin token half a second late",
             admin_late=True)
        boot(hive, "reboot: registered; the same token, so the runner module does nothing")
        print("\n%s== what would happen? (--dry-run changes nothing)%s" % (BOLD, OFF))
        tool(hive, "--dry-run")
        hive.sim.labels = ["native:host", "big:host"]
        boot(hive, "the runner's labels changed: the module registers again, "
             "leaving a ghost")
        boot(hive, "reboot: the forge confirms the new runner, so the ghost is deleted")
        f.down()
        boot(hive, "the forge is down: keep what works, with the remembered token")
        f.up()
        reg_tokens.append(f.wipe())
        boot(hive, "the forge was wiped (set up again, a new token): the tool "
             "deletes the stale .runner")
        print("\n%s== an operator re-registers by hand, asking for JSON%s" % (BOLD, OFF))
        tool(hive, "--reregister", "--json")
        boot(hive, "systemctl restart container@hive-ci (runs the unit again, PartOf=)")
        boot(hive, "reboot: the runner the operator replaced is deleted from the forge")

        second = Host(tmp, "hive-2", f, "--registration=host", "--runner-name=hive-2",
                      "--labels=native:host", exec_start_pre=False)
        boot(second, "a second host registers its runner from the host "
             "(--registration=host): the container never sees a registration token",
             show_requests=True)
        boot(second, "reboot: the forge confirms the runner; no registration token "
             "is fetched", show_requests=True)
        boot(second, "reboot: the state file remembers the lookup route that answered",
             show_requests=True)
        no_token_in(second)
    finally:
        f.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
