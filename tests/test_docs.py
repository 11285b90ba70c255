"""Docs move with code: --help, the man page and the README list the same
options, and the man page is clean under mandoc -Tlint."""

import os
import re
import shutil
import subprocess

from harness import Skip, case

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MAN = os.path.join(TOP, "man", "hive-ci-prefetch.8")
README = os.path.join(TOP, "README.md")


def help_options(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"^\s+(?:-(\w), )?--([a-z-]+)", out, re.M)), out


def man_options():
    text = open(MAN).read()
    section = text.split("\n.Sh OPTIONS\n", 1)[1].split("\n.Sh ", 1)[0]
    found = set()
    for line in section.splitlines():
        if line.startswith(".It Fl"):
            short = re.match(r"\.It Fl (\w) ,", line)
            long_ = re.search(r"Fl \\-([a-z-]+)", line)
            found.add((short.group(1) if short else "", long_.group(1)))
    return found


def readme_options():
    text = open(README).read()
    found = set()
    for m in re.finditer(r"^\s+(?:-(\w), )?--([a-z-]+)[ =]", text, re.M):
        found.add((m.group(1) or "", m.group(2)))
    return found


@case(sanitize=False)
def help_man_and_readme_list_the_same_options(env):
    opts, text = help_options(env.binary)
    contract = {("", "forge-url"), ("", "unix-socket"), ("", "forge-user"), ("", "ca-file"),
                ("", "core-token-file"), ("", "container-root"), ("", "runner-file"),
                ("", "output"), ("", "retry-timeout"), ("", "state-file"),
                ("", "token-format"), ("", "registration"), ("", "runner-name"),
                ("", "labels"), ("", "runner-address"),
                ("", "placeholder-on-keep"), ("", "no-cleanup"),
                ("", "reregister"), ("n", "dry-run"),
                ("", "json"), ("v", "verbose"), ("q", "quiet"), ("h", "help"),
                ("V", "version")}
    assert opts == contract, opts ^ contract
    man = man_options()
    readme = readme_options()
    assert man == opts, "man page differs from --help: %s" % (man ^ opts)
    assert readme == opts, "README differs from --help: %s" % (readme ^ opts)
    for word in ("75", "76", "77", "78", "73", "64", "66", "69"):
        assert word in text, "--help does not name exit status %s" % word


@case(sanitize=False)
def man_page_is_mandoc_lint_clean(env):
    if not shutil.which("mandoc"):
        raise Skip("needs mandoc")
    p = subprocess.run(["mandoc", "-Tlint", "-Wwarning", MAN], capture_output=True, text=True)
    assert p.returncode == 0 and not p.stdout and not p.stderr, p.stdout + p.stderr


@case(sanitize=False)
def docs_no_longer_say_what_the_second_review_found_wrong(env):
    """Issue 19: statements of the man page and the README that were not
    true, and what they say now."""
    man, readme = open(MAN).read(), open(README).read()
    flat = lambda s: " ".join(s.split())
    man_flat, readme_flat = flat(man), flat(readme)
    for wrong in ("nor when libcurl cannot be initialised",  # --json is printed on 70
                  "0755, less the umask"):                 # 0755 whatever the umask
        assert wrong not in man_flat, wrong
    assert "status 70 included" in man_flat and "0755, whatever the umask" in man_flat
    assert "write:admin" in man_flat  # FILES: the admin token's scope, and who writes it
    for wrong in ("v7–v13", "v7-v13",
                  "(NixOS 26.05 and later) it reads `tokenFile` through `LoadCredential=`",
                  "so the admin token goes only to the forge."):
        assert wrong not in readme_flat, wrong
    assert "`RequiresMountsFor=`" in readme_flat
    assert "exits 0 with a warning, and the runner never registers" in readme_flat
    assert "forge wipe" not in readme_flat or "wipe" in open(
        os.path.join(TOP, "tests", "demo.py")).read()
