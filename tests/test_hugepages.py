"""The entry points' start-up: the re-execution with glibc's huge-page tunable
(a2i_jax/hugepages.py), and a console closed from the start (a2i_jax/startup.py)."""

import os
import subprocess
import sys

import pytest

from a2i_jax import hugepages

_HERE = {"GLIBC_TUNABLES": ""}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("platform,env,glibc,thp,expected", [
    ("linux", {}, (2, 36), "madvise", "glibc.malloc.hugetlb=1"),
    ("linux", {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, (2, 35), "madvise",
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    # The user's own setting stands, and the re-executed process does not go round again.
    ("linux", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise", None),
    ("linux", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, (2, 36), "madvise", None),
    ("linux", {hugepages.OPT_OUT_ENV: "0"}, (2, 36), "madvise", None),
    # The usual words for "no" too (was "0" alone: "false" re-executed; review finding).
    ("linux", {hugepages.OPT_OUT_ENV: " False"}, (2, 36), "madvise", None),
    ("linux", {hugepages.OPT_OUT_ENV: "off"}, (2, 36), "madvise", None),
    ("linux", {hugepages.OPT_OUT_ENV: "1"}, (2, 36), "madvise", "glibc.malloc.hugetlb=1"),
    ("linux", {}, (2, 34), "madvise", None),  # No such tunable before glibc 2.35.
    ("linux", {}, None, "madvise", None),  # musl and other C libraries.
    ("linux", {}, (2, 36), "always", None),  # Large blocks get huge pages already.
    ("linux", {}, (2, 36), "never", None),
    ("linux", {}, (2, 36), None, None),
    ("darwin", {}, None, None, None),
])
def test_when_it_reexecutes(platform, env, glibc, thp, expected):
  assert hugepages.tunables_with_huge_pages(platform, env, glibc, thp) == expected


def test_thp_mode_and_glibc_version(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert hugepages.thp_mode(str(path)) == "madvise"
  path.write_text("[always] madvise never\n")
  assert hugepages.thp_mode(str(path)) == "always"
  assert hugepages.thp_mode(str(tmp_path / "missing")) is None
  version = hugepages.glibc_version()
  assert version is None or (len(version) == 2 and version >= (2, 0))


def _run(tmp_path, extra_env):
  script = tmp_path / "entry.py"
  script.write_text(
      "import os, sys\n"
      "print('started', os.environ.get('GLIBC_TUNABLES', ''), flush=True)\n"
      "from a2i_jax import hugepages\n"
      "hugepages.reexec_with_huge_pages()\n"
      "print('running', os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:], flush=True)\n")
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", hugepages.OPT_OUT_ENV)}
  env["PYTHONPATH"] = os.pathsep.join([_ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  env.update(extra_env)
  out = subprocess.run([sys.executable, str(script), "--flag=1", "two words"], env=env,
                       capture_output=True, text=True, check=True, timeout=60)
  return out.stdout.splitlines()


def test_reexecutes_the_same_command_once(tmp_path):
  expected = hugepages.tunables_with_huge_pages(sys.platform, _HERE, hugepages.glibc_version(),
                                                hugepages.thp_mode())
  lines = _run(tmp_path, {})
  if expected is None:  # Not on this machine: the command runs once, as it was started.
    assert lines == ["started ", "running  ['--flag=1', 'two words']"]
  else:  # Started over once, with the tunable, the same arguments, and not again.
    assert lines == ["started ", f"started {expected}",
                     f"running {expected} ['--flag=1', 'two words']"]


def test_opt_out(tmp_path):
  lines = _run(tmp_path, {hugepages.OPT_OUT_ENV: "0"})
  assert lines == ["started ", "running  ['--flag=1', 'two words']"]


def test_only_a_command_that_runs_the_script_is_started_over(tmp_path):
  """IPython's `%run train.py` (and a Jupyter kernel's) re-executed the host program's command
  line, `sys.orig_argv`: the IPython session started over, the notebook hung (review
  finding). Only `python [options] script args` and `-m module args` are started over."""
  script = str(tmp_path / "train.py")
  yes = hugepages.runs_this_script
  assert yes(["python", script, "--a=1", "b c"], [script, "--a=1", "b c"])
  assert yes(["python", "-X", "dev", "-u", script], [script])
  assert yes(["python", "-m", "pkg.train", "--a"], [script, "--a"])
  for form in (["-mtrain"], ["-um", "train"], ["-Xdev", "-mtrain"], ["-X", "dev", "-m", "train"]):
    assert yes(["python", *form, "--a"], [script, "--a"]), form
  assert yes(["python", "-W", "error", script], [script])
  assert not yes(["python", "-mipykernel_launcher", "-f", "k.json"], [script, "-f", "k.json"])
  assert not yes(["python", "/usr/bin/ipython"], [script])
  assert not yes(["python", "/usr/bin/ipython", "--a"], [script, "--a"])
  assert not yes(["python", "-m", "ipykernel_launcher", "-f", "k.json"], [script])
  assert not yes(["python", "-c", "code"], ["-c"])
  # A module that runs the script (was: `python -m pdb train.py` started over, the debugger's
  # breakpoints lost; fault hunt).
  for form in (["-m", "pdb"], ["-mpdb"], ["-u", "-m", "cProfile", "-o", "p.out"]):
    assert not yes(["python", *form, script, "--a"], [script, "--a"]), form
  assert not yes(["python"], [])


def test_a_console_closed_from_the_start_is_the_null_device(tmp_path):
  """`train.py ... 2>&-` (a launcher that closes stderr) ended training at the progress bar's
  first line, after the data load and the compile, with exit status 1 and no word (sys.stderr
  was None), and the next file opened took descriptor 2, where XLA's log and the stop's
  notice go (fault hunt)."""
  code = ("import os, sys\n"
          "os.close(2)\n"
          "sys.stderr = None\n"  # As Python starts with descriptor 2 closed.
          "from a2i_jax import startup\n"
          "startup.keep_going_without_a_console()\n"
          f"fd = os.open({str(tmp_path / 'file')!r}, os.O_RDWR | os.O_CREAT)\n"
          "print('a line', file=sys.stderr, flush=True)\n"
          "os.write(2, b'a notice')\n"
          "print(fd)\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=60)
  assert int(out.stdout) > 2 and (tmp_path / "file").read_text() == ""
