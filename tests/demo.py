#!/usr/bin/env python3
"""make demo: the real binary against the test forge, in a temporary
directory, through a first boot, a reboot, a forge wipe and an operator's
re-registration.  Every line it prints is what the tool said or did."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forge  # noqa: E402

BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
ADMIN = "adm_demo0123456789abcdef0123456789abcdef"
REG = "DemoRegistrationToken0123456789abcdefghi"
RUNNER = "/var/lib/gitea-runner/hive/.runner"


def main():
    binary = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="hive-ci-prefetch-demo-")
    root = os.path.join(tmp, "nixos-containers", "hive-ci")
    token_file = os.path.join(tmp, "forge-core-token")
    output = os.path.join(tmp, "run", "hive-ci", "runner-token")
    runner = os.path.join(root, RUNNER.lstrip("/"))
    f = None

    def run(title, *extra):
        print("\n%s== %s%s" % (BOLD, title, OFF))
        argv = [binary, "--forge-url=" + f.url, "--core-token-file=" + token_file,
                "--container-root=" + root, "--output=" + output, "--retry-timeout=3",
                *extra]
        print("%s$ hive-ci-prefetch %s%s" % (DIM, " ".join(extra), OFF))
        p = subprocess.run(argv, capture_output=True, text=True,
                           env={"PATH": os.environ.get("PATH", "")})
        for line in (p.stderr + p.stdout).splitlines():
            print("  " + line)
        state = open(output).read().strip() if os.path.exists(output) else "(none)"
        if state.startswith("TOKEN=") and state != "TOKEN=placeholder":
            state = "TOKEN=<registration token, %d chars>" % (len(state) - 6)
        print("  %sexit %d · output %s · .runner %s%s" % (
            DIM, p.returncode, state, "present" if os.path.exists(runner) else "absent", OFF))

    def register(runner_id, uuid):
        """What the runner does in the container with the token we wrote."""
        os.makedirs(os.path.dirname(runner), exist_ok=True)
        with open(runner, "w") as fh:
            json.dump({"id": runner_id, "uuid": uuid, "name": "hive",
                       "token": "runner-secret", "address": f.url}, fh, indent=2)
        f.runners[runner_id] = uuid
        print("  %s(the runner registers with it: the forge now knows runner %d)%s"
              % (DIM, runner_id, OFF))

    try:
        with open(token_file, "w") as fh:
            fh.write(ADMIN + "\n")
        os.chmod(token_file, 0o600)
        f = forge.Forge(flavour="f15", admin_token=ADMIN, reg_token=REG).start()
        print("test forge (Forgejo 15 routes) at %s; work directory %s" % (f.url, tmp))

        run("first boot: no .runner yet")
        register(1, "0b9c5a0e-1111-4c1e-9d2f-5b1a7c3e0001")
        run("reboot: the runner is still registered")
        run("what would happen? (--dry-run changes nothing)", "--dry-run")
        f.runners.clear()
        f.runners[1] = "7f2d4c1b-2222-4e3a-8b6c-9d0e1f2a0002"  # wiped, ids start over
        run("after a forge wipe: id 1 now belongs to another runner")
        register(2, "7f2d4c1b-3333-4e3a-8b6c-9d0e1f2a0003")
        run("an operator re-registers by hand, asking for JSON", "--reregister", "--json")
        register(3, "7f2d4c1b-4444-4e3a-8b6c-9d0e1f2a0004")
        f.stop()
        run("the forge is down: keep what works", "--retry-timeout=1")
    finally:
        if f:
            f.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
