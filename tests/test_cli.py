"""The entry points as a user runs them: flags in, one plain message out on error."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from a2i_jax.errors import InputError
from a2i_jax.occlusions import OCCLUSION_NAMES
import faults_lib
import launcher
from conftest import TRAIN_PY_STEPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
  """`python ARGS` as a user starts it: a new interpreter, in this environment (so train.py
  and infer.py re-execute themselves with huge pages where the machine has them)."""
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=os.environ.copy())


def _run_forked(*args, timeout=300):
  """`python ARGS` forked by tests/launcher.py's server, in faults_lib's environment (no
  huge pages): the same script, flags and messages, less 1.3-1.5 s of imports per run on the
  2-core machine. `_run` keeps a new interpreter for one train.py and one infer.py start."""
  return launcher.run([sys.executable, *args], cwd=ROOT, env=faults_lib.environment(),
                      timeout=timeout)


def test_unknown_config_key_fails(tmp_path):
  r = _run("train.py", "--config=configs/synthetic.py", f"--workdir={tmp_path}",
           "--config.learning_rat=0.1")
  assert r.returncode != 0
  assert "learning_rat" in r.stderr


def test_a_config_copied_out_of_configs_builds_the_same_config(tmp_path):
  """A user copies configs/synthetic.py elsewhere to edit it: it loads its default.py from
  beside itself, and was refused with "no config file at <the copy's folder>/default.py",
  a file the user never named (review). With none beside it, the library's own is used."""
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  copy = tmp_path / "mine.py"
  shutil.copy(os.path.join(ROOT, "configs", "synthetic.py"), copy)
  mine = config_lib.load_config_module(str(copy)).get_config("discvae")
  ours = config_lib.load_config_module(os.path.join(ROOT, "configs", "synthetic.py"))
  assert mine.to_dict() == ours.get_config("discvae").to_dict()


def test_unprepared_dataset_is_one_plain_message(tmp_path):
  r = _run_forked("train.py", "--config=configs/lfw.py", f"--workdir={tmp_path}",
                  "--config.compilation_cache_dir=", f"--config.data.data_dir={tmp_path}/data",
                  "--config.data.download=False")
  assert r.returncode == 1
  assert "error: LFW: 4 source file(s) missing: lfw-funneled.tgz" in r.stderr
  assert f"Download these files into {tmp_path}/data/manual/lfw" in r.stderr
  assert "Traceback" not in r.stderr


def test_infer_without_checkpoint(tmp_path):
  r = _run("infer.py", f"--workdir={tmp_path}")
  assert r.returncode == 1
  assert "error: no config at" in r.stderr and "Traceback" not in r.stderr


def test_train_then_sample(tmp_path, train_py_reference, capsys):
  """The README's path: a train.py run (the session's reference run, conftest, copied), then
  infer.py on it.

  The evaluation's command line is parsed by infer.py's own flags and run in this process
  (`_infer_here`): was a second infer.py start, 2-3 s of the suite's two cores, though `main`
  has nothing of its own for --mode=evaluate (`run_modes` does it all); the sample and
  completion run is the infer.py process that covers `main`."""
  workdir = str(tmp_path / "w")
  shutil.copytree(train_py_reference, workdir)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(TRAIN_PY_STEPS)))
  # Two modes in one call (one process start, one restore), into the default --out.
  r = _run_forked("infer.py", f"--workdir={workdir}", "--mode=sample,complete",
                  "--num_images=3", "--samples_per_attribute=3", "--steps=2",
                  "--occlusion=eyes,block8")
  assert r.returncode == 0, r.stderr[-3000:]
  default_out = os.path.join(workdir, "infer")
  assert os.path.exists(os.path.join(default_out, f"sample_step{TRAIN_PY_STEPS}.png"))
  with open(os.path.join(default_out, f"sample_step{TRAIN_PY_STEPS}.json")) as f:
    record = json.load(f)  # Beside it, what made it.
  assert (record["step"], record["seed"], record["rows"], record["latent_draws"]) == (
      TRAIN_PY_STEPS, 0, 3, 3)
  with open(os.path.join(default_out, "complete.json")) as f:
    errors = json.load(f)["hidden_pixel_mse"]
  assert set(errors) == {"eyes", "block8"} and len(errors["eyes"]) == 3
  assert os.path.exists(os.path.join(default_out, "complete_eyes.png"))
  out = str(tmp_path / "o")
  capsys.readouterr()
  _infer_here(f"--workdir={workdir}", "--mode=evaluate", f"--out={out}", "--num_examples=4",
              "--steps=2", "--occlusion=mouth", "--noattribute_fidelity")
  stdout = capsys.readouterr().out
  assert "| cvae | optimisation |" in stdout and "| mean training image | fill |" in stdout
  with open(os.path.join(out, "evaluation.json")) as f:
    rows = json.load(f)["results"][0]["rows"]
  assert rows["optimisation"]["mouth"]["n"] == 4
  # --occlusion=none (the reconstruction columns only) in this process: its difference is in
  # `run_modes`, and an infer.py start costs seconds of the suite.
  import infer  # pylint: disable=import-outside-toplevel
  infer.run_modes(infer.Options(
      workdirs=[workdir], modes=["evaluate"], out=out, step=None, input=None, num_images=None,
      samples_per_attribute=8, attribute=None, value=None, occlusions=["none"], steps=2,
      restarts=None, num_examples=4, attribute_fidelity=False, seed=0))
  with open(os.path.join(out, "evaluation.json")) as f:
    results = json.load(f)["results"]
  for row in (results[0]["rows"]["optimisation"], results[1]["rows"]["fill"]):  # Mean image too.
    assert "reconstruction" in row and not set(row) & set(OCCLUSION_NAMES)  # No completions.


def _infer_here(*argv: str) -> None:
  """`infer.run_modes` on the command line `argv`, parsed by infer.py's own flags here."""
  import infer  # pylint: disable=import-outside-toplevel
  infer.run_modes(faults_lib.infer_options(*argv))


def test_infer_input_checks(tmp_path):
  import infer  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "a.png")
  with pytest.raises(InputError, match=r"a.png is 30x40; this model takes 32x32"):
    infer._read_images(str(tmp_path), 32)
  with pytest.raises(InputError, match="does not exist"):
    infer._read_images(str(tmp_path / "nope"), 32)
  with pytest.raises(InputError, match="no attribute 'smiling'; .* smile, face_width"):
    infer._attribute_index(["smile", "face_width"], "smiling")


@pytest.mark.parametrize("args,message", [
    # No --config: was "Unknown command line flag 'config.num_train_steps'".
    (["--config.num_train_steps=3"], "error: --config is missing; pass "
     "--config=configs/<name>.py"),
    # An override before --config is taken (was absl's "Found --config.model.width=0.125 in
    # argv before a value for --config was specified"); the suffix then named.
    (["--config.model.width=0.125", "--config=configs/synthetic.py:dcvae"],
     "error: the config file "),
    # A value of the wrong kind: what the key takes (was "invalid literal for int()").
    (["--config=configs/synthetic.py", "--config.batch_size=4.0"],
     "error: config.batch_size must be an integer (e.g. --config.batch_size=32), not '4.0'."),
])
def test_train_py_names_the_fix_for_a_command_line_mistake(args, message, tmp_path):
  """train.py's wiring of `config_lib.normalised_command_line`, `check_variant` and
  `explain_override_value` (each checked in process in tests/test_faults_train.py)."""
  r = _run_forked("train.py", f"--workdir={tmp_path}/w", *args, timeout=120)
  lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
  assert lines[0].startswith(message), lines[0]
  if ":dcvae" in args[-1]:
    assert lines[0].endswith("synthetic.py has no variant ':dcvae' (it sets "
                             "model.name='dcvae', which is no model); choose the variant with "
                             ":vae, :cvae or :discvae."), lines[0]
  assert not os.path.exists(tmp_path / "w")


def _background_spread():
  """scripts/background_spread.py, loaded as a module."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "background_spread", os.path.join(ROOT, "scripts", "background_spread.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  return script


def test_background_spread_refuses_a_bad_flag_in_one_line(monkeypatch, capsys):
  """Was argparse's usage lines, then "background_spread.py: error: ..." (fault hunt)."""
  script = _background_spread()
  monkeypatch.setattr(sys, "argv", ["background_spread.py", "--workdir=w", "--rows=abc"])
  with pytest.raises(SystemExit) as e:
    script.main()
  assert e.value.code == 2
  assert capsys.readouterr().err == ("error: argument --rows: invalid int value: 'abc'; see "
                                     "--help.\n")


def test_background_spread_reports_what_it_used_as_strict_json(tiny_run, monkeypatch, capsys):
  """scripts/background_spread.py (RESULTS.md quotes it) on the tiny disCVAE. Was: "rows"
  the flag's 32 where the test split gave 16, a bare NaN (not JSON) where no pixel has
  gate > 0.5, and the data from load_dataset(trained.config.data) (a folder dataset's
  columns in the CSV's order of now, not the run's; no split checks: `inference.load_data`
  is tested for those). The three are checked together, so that the old script's failure
  lists each."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from a2i_jax import inference, sampling  # pylint: disable=import-outside-toplevel
  script = _background_spread()
  loaded, seen = [], []
  load_data, spread, decode = inference.load_data, script.generated_spread, sampling.decode_images
  monkeypatch.setattr(inference, "load_data",
                      lambda *a, **k: loaded.append(load_data(*a, **k)) or loaded[-1])
  monkeypatch.setattr(script, "generated_spread",
                      lambda trained, y, *a: seen.append(y) or spread(trained, y, *a))
  monkeypatch.setattr(sampling, "decode_images", lambda *a, **k: {  # Foreground everywhere.
      **(out := decode(*a, **k)), "gate": jnp.zeros_like(out["gate"])})
  monkeypatch.setattr(sys, "argv", ["background_spread.py", f"--workdir={tiny_run('discvae')[0]}",
                                    "--rows=32", "--draws=2"])
  script.main()

  def refuse(constant):
    raise ValueError(f"{constant} is not JSON")
  problems, text = [], capsys.readouterr().out
  try:
    json.loads(text, parse_constant=refuse)
  except ValueError as e:
    problems.append(str(e))
  result = json.loads(text)
  if result["generated_background_std"] is not None:
    problems.append(f"generated_background_std {result['generated_background_std']}")
  if result["rows"] != 16:  # The tiny run's test split.
    problems.append(f"rows {result['rows']}")
  if not loaded or not np.array_equal(seen[0], loaded[0]["test"].attributes):
    problems.append("the attributes are not inference.load_data's")
  assert not problems, problems


def test_the_next_line_is_a_command_that_runs_where_it_is_pasted(tmp_path, monkeypatch):
  """Was "next: python infer.py --workdir=..." whatever the folder and Python: pasted in
  another folder, "can't open file"; with the virtual environment not activated, a Python
  without JAX (fault hunt). `python` where PATH's is this one's, infer.py by its path from the
  current folder."""
  from a2i_jax import train_eval  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  monkeypatch.setattr(shutil, "which", lambda name: sys.executable)  # Activated.
  monkeypatch.chdir(root)
  assert train_eval.infer_command("runs/a b") == ("python infer.py --workdir='runs/a b' "
                                                  "--mode=sample")
  monkeypatch.chdir(tmp_path)
  assert train_eval.infer_command("/w", "complete") == (
      f"python {shlex.quote(os.path.join(root, 'infer.py'))} --workdir=/w --mode=complete")
  other = tmp_path / "bin" / "python"  # Not activated: PATH's python is another one.
  monkeypatch.setattr(shutil, "which", lambda name: str(other))
  script = shlex.quote(os.path.join(root, "infer.py"))
  command = f"{shlex.quote(sys.executable)} {script} --workdir=/w --mode=sample"
  assert train_eval.infer_command("/w") == command
  other.parent.mkdir()  # Another Python in this one's folder (python-is-python3 beside 3.13).
  other.write_text("")
  monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python3.13"))
  (tmp_path / "bin" / "python3.13").write_text("")
  assert train_eval.infer_command("/w").startswith(shlex.quote(sys.executable) + " ")
