"""Findings of the outside attack review (issue 12).  Each case is named
after the finding it pins and failed on the code the review ran against."""

import json
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
    assert obj["reason"].endswith("would delete .runner and fetch a registration token"), obj
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
