"""Findings of the outside attack review (issue 12).  Each case is named
after the finding it pins and failed on the code the review ran against."""

import os

from harness import REG, case, expect, paths_seen

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
