"""Findings of the outside attack review (issue 12).  Each case is named
after the finding it pins and failed on the code the review ran against."""

import os
import subprocess

from harness import REG, UUID, case, expect, paths_seen, run_env

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
