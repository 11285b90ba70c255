"""What operators see (issue: drop into NixOS and systemd): syslog priority
prefixes when stderr is the journal, and --json for monitoring."""

import json
import os
import subprocess

from harness import UUID, case, says

HERE = os.path.dirname(os.path.abspath(__file__))
JSON_CHECK = os.path.join(HERE, "..", "build", "json_check")


def run_with_stderr_file(env, f, extra, journal):
    """Runs with stderr on a file; JOURNAL_STREAM names that file or not."""
    path = os.path.join(env.dir, "stderr")
    with open(path, "w+") as err:
        st = os.fstat(err.fileno())
        stream = "%d:%d" % (st.st_dev, st.st_ino) if journal else "%d:%d" % (st.st_dev,
                                                                            st.st_ino + 1)
        p = subprocess.run(env.args(f, *extra), stdout=subprocess.PIPE, stderr=err,
                           env={"PATH": os.environ["PATH"], "JOURNAL_STREAM": stream},
                           text=True)
        err.seek(0)
        text = err.read()
    for secret in env.secrets:
        assert secret not in text
    return p.returncode, text.splitlines()


@case
def journal_lines_carry_syslog_priorities(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    # (--forge-user: no warning about plain http at -v)
    rc, lines = run_with_stderr_file(env, f, ["-v", "--forge-user=%d" % os.getuid()],
                                     journal=True)
    assert rc == 0
    assert ("<6>hive-ci-prefetch: runner 1 still registered; keeping .runner; wrote the current "
            "registration token to %s" % env.output) in lines, lines
    assert any(line.startswith("<7>hive-ci-prefetch: ") for line in lines), lines
    assert all(line[:3] in ("<6>", "<7>") for line in lines), lines
    env.write_admin_token("wrong-token\n", 0o644)
    rc, lines = run_with_stderr_file(env, f, [], journal=True)
    assert rc == 77
    assert "<4>hive-ci-prefetch: admin token file %s is world-readable" % env.token_file in lines
    assert any(line.startswith("<3>hive-ci-prefetch: forge rejected") for line in lines), lines


@case
def plain_lines_when_stderr_is_not_the_journal(env):
    env.write_runner()
    f = env.forge(runners={1: UUID})
    rc, lines = run_with_stderr_file(env, f, [], journal=False)
    assert rc == 0
    assert lines == ["hive-ci-prefetch: runner 1 still registered; keeping .runner; wrote the "
                     "current registration token to %s" % env.output], lines


def json_outcome(env, f, *extra):
    p = subprocess.run(env.args(f, "--json", *extra), capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"]})
    for secret in env.secrets:
        assert secret not in p.stdout + p.stderr
    assert p.stdout.count("\n") == 1, p.stdout
    checked = subprocess.run([JSON_CHECK], input=p.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, (p.stdout, checked.stderr)
    action, status, runner_id, token, deleted = checked.stdout.split()
    assert int(status) == p.returncode, (p.stdout, p.returncode)
    obj = json.loads(p.stdout)
    assert obj["token"] == token and obj["deleted"] == (
        [] if deleted == "-" else [int(d) for d in deleted.split(",")]), (obj, checked.stdout)
    return action, p.returncode, int(runner_id), obj


@case
def json_states_every_action(env):
    f = env.forge(runners={1: UUID})
    os.unlink(env.token_file)
    assert json_outcome(env, f, "--retry-timeout=0.2")[:3] == ("placeholder", 0, 0)
    env.write_admin_token("adm_Canary0123456789abcdef0123456789abcd\n")
    assert json_outcome(env, f)[:3] == ("register", 0, 0)
    env.write_runner(runner_id=1)
    action, status, rid, obj = json_outcome(env, f)
    assert (action, status, rid) == ("keep", 0, 1)
    assert says(obj["reason"], "runner 1", "still registered", "keeping .runner", "current",
                env.output), obj
    assert obj["dry_run"] is False
    env.write_runner(runner_id=7)
    action, status, rid, obj = json_outcome(env, f)
    assert (action, status, rid) == ("reregister", 0, 7), obj
    assert "runner 7 is gone from the forge (404)" in obj["reason"], obj
    env.write_runner(runner_id=1)
    action, status, rid, obj = json_outcome(env, f, "--dry-run")
    assert (action, status, rid) == ("keep", 0, 1) and obj["dry_run"] is True, obj
    env.write_admin_token("not-the-admin-token\n")
    action, status, rid, obj = json_outcome(env, f)
    assert (action, status, rid) == ("fail", 77, 1), obj
    assert "rejected the admin token" in obj["reason"]
