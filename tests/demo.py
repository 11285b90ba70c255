#!/usr/bin/env python3
"""make demo: the real binary against the test forge (Forgejo 15), in a
temporary directory, with the NixOS runner module (the newer generation)
emulated in the container: a first boot whose admin token comes late,
steady reboots, a label change and the ghost it leaves, a forge that is down,
and an operator's re-registration.  Every line it prints is what the tool
said or did, or what the runner and the forge saw."""

import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forge  # noqa: E402
import runner_sim  # noqa: E402

BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
ADMIN = "adm_demo0123456789abcdef0123456789abcdef"


def main():
    binary = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="hive-ci-prefetch-demo-")
    root = os.path.join(tmp, "nixos-containers", "hive-ci")
    token_file = os.path.join(tmp, "hyperhive", "forge-core-token")
    output = os.path.join(tmp, "run", "hive-ci", "runner-token")
    state = os.path.join(tmp, "hive-ci-prefetch", "hive-ci.json")
    f = forge.Forge(flavour="forgejo15", admin_token=ADMIN)
    sim = runner_sim.RunnerModule("tokenhash", root, output, f, name="hive",
                                  labels=["native:host"])

    def write_admin_token():
        os.makedirs(os.path.dirname(token_file), exist_ok=True)
        with open(token_file, "w") as fh:
            fh.write(ADMIN + "\n")
        os.chmod(token_file, 0o600)

    def tool(*extra):
        argv = [binary, "--forge-url=" + f.url, "--core-token-file=" + token_file,
                "--container-root=" + root, "--output=" + output, "--state-file=" + state,
                "--token-format=raw", "--retry-timeout=3", *extra]
        print("%s$ hive-ci-prefetch %s%s" % (DIM, " ".join(extra), OFF))
        p = subprocess.run(argv, capture_output=True, text=True,
                           env={"PATH": os.environ.get("PATH", "")})
        for line in (p.stderr + p.stdout).splitlines():
            print("  " + line.replace(f.reg_token, "<token>"))
        text = open(output).read().strip() if os.path.exists(output) else "(none)"
        shown = "<registration token>" if text == f.reg_token else text
        print("  %sexit %d · output %s%s" % (DIM, p.returncode, shown, OFF))

    def boot(title, *extra, admin_late=False):
        print("\n%s== %s%s" % (BOLD, title, OFF))
        sim.stop()
        if os.path.exists(output):
            os.unlink(output)  # /run is emptied on every boot
        if admin_late:
            threading.Timer(0.5, write_admin_token).start()
        tool(*extra)
        container()

    def container():
        b = sim.boot()
        why = ", ".join(b.reasons) or "nothing changed"
        runners = ", ".join("%d %s" % (i, f.status(i)) for i in sorted(f.runners))
        print("  %scontainer: %s (%s); %s · forge's runners: %s%s" % (
            DIM, "registered again" if b.registered else "no registration", why,
            "the runner works" if b.works
            else "the runner waits for the forge" if not f.is_up
            else "the runner is DOWN: " + b.why,
            runners or "none", OFF))

    try:
        f.start()
        print("test forge (Forgejo 15) at %s; work directory %s" % (f.url, tmp))
        boot("first boot: the forge writes its admin token half a second late",
             admin_late=True)
        boot("reboot: registered; the same token, so the runner module does nothing")
        print("\n%s== what would happen? (--dry-run changes nothing)%s" % (BOLD, OFF))
        tool("--dry-run")
        sim.labels = ["native:host", "big:host"]
        boot("the runner's labels changed: the module registers again, leaving a ghost")
        boot("reboot: the forge confirms the new runner, so the ghost is deleted")
        f.down()
        boot("the forge is down: keep what works, with the remembered token")
        f.up()
        print("\n%s== an operator re-registers by hand, asking for JSON%s" % (BOLD, OFF))
        tool("--reregister", "--json")
        boot("systemctl restart container@hive-ci (runs the unit again, PartOf=)")
        boot("reboot: the runner the operator replaced is deleted from the forge")
    finally:
        f.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
