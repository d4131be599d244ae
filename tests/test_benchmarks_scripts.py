"""benchmarks/gpu.sh runs every part it is given, whatever the parts before it did, and says
which ones failed in its exit status and its last line.

A GPU lease is short and is not repeated for a script fault: until 2026-12-05 a profile
part whose log was empty (grep's status 1 under `pipefail`) or long (grep's SIGPIPE behind
`head -1`) ended the whole script, so the later parts and the merged bench_gpu.json were lost;
and parts that failed otherwise left the script's status 0 and a merged
`{"info": null, "cases": []}`. The script runs here against a stand-in PYTHON that does no
JAX work (each benchmark script it is asked to run fails or succeeds as the test says), from a
copy of the script in a temporary repository root with stand-in wheels, so it takes about a
second. Both tests fail against the script before 2026-12-05.
"""

import json
import os
import shutil
import stat
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The stand-in interpreter. gpu.sh calls PYTHON for pip (-m), import probes (-c), its own
# heredoc scripts (-: the machine check is answered here, the merge and the metrics summary
# run for real) and the benchmark scripts, whose behaviour depends on the part's output name.
_STANDIN = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:1] in (["-m"], ["-c"]):
  sys.exit(0)
if args[:1] == ["-"]:
  source = sys.stdin.read()
  if "jax.devices()" in source:  # The machine check: no JAX here.
    print("devices: [stand-in]")
    sys.exit(0)
  sys.argv = args
  exec(compile(source, "<stdin>", "exec"), {{"__name__": "__main__"}})
  sys.exit(0)
script = os.path.basename(args[0])
out = next((a.split("=", 1)[1] for a in args if a.startswith("--out=")), "")
with open(os.environ["STANDIN_CALLS"], "a") as f:
  f.write(f"{{script}} {{os.path.basename(out)}}\n")
if script == "profile_step.py":
  if out.endswith("profile_cvae.json"):
    sys.exit(3)  # Fails before writing a line: an empty log.
  print("W0000 a logging line first")
  print("traced step 11.73 ms")
  for i in range(100_000):  # A long log after the summary line: 2.5 MB that grep would pass.
    print(f"kernel {{i}}: its category and layer")
  json.dump({{"traced_ms": 11.73}}, open(out, "w"))
  sys.exit(0)
if script == "train.py":
  print("train failing")
  sys.exit(2)
if script == "ab_train_step.py":
  print(json.dumps({{"model": "cvae", "variant": "a", "ms_per_step": 7.2}}))
  sys.exit(5)  # A row written, then a failure.
if script == "bench.py":
  if out.endswith("bench_gpu_fused4.json"):
    case = {{"model": "cvae", "batch": 256, "dtype": "bfloat16",
             "train": {{"images_per_s": 1.0, "compile_s": 1.0}}}}
    json.dump({{"info": {{"device_kind": "stand-in"}}, "cases": [case]}}, open(out, "w"))
    sys.exit(0)
  sys.exit(4)
sys.exit(99)
'''


def _run_gpu_sh(tmp_path, parts: str, smoke: bool = False):
  """gpu.sh copied into a fresh repository root under `tmp_path` and run with PARTS=`parts`:
  (the completed process, the output folder, the benchmark scripts called in order)."""
  root = tmp_path / "repo"
  (root / "benchmarks").mkdir(parents=True)
  shutil.copy(os.path.join(ROOT, "benchmarks", "gpu.sh"), root / "benchmarks" / "gpu.sh")
  (root / ".whl").mkdir()
  for wheel in ("ml_collections-0-py3-none-any.whl", "tensorboardx-0-py3-none-any.whl"):
    (root / ".whl" / wheel).write_bytes(b"")
  standin = tmp_path / "python"
  standin.write_text(_STANDIN.format(python=sys.executable))
  standin.chmod(standin.stat().st_mode | stat.S_IXUSR)
  out, calls = tmp_path / "out", tmp_path / "calls.txt"
  calls.write_text("")
  out.mkdir()
  # An earlier call's files in a reused OUT: a part not run now, and one that fails now. Was:
  # both merged into this call's results (review finding).
  for stale in ("b32", "cvae_bf16"):
    (out / f"bench_gpu_{stale}.json").write_text(json.dumps(
        {"info": {"device_kind": "earlier"}, "cases": [{"model": f"earlier {stale}"}]}))
  env = {**os.environ, "PYTHON": str(standin), "OUT": str(out), "PARTS": parts,
         "A2I_SITE": str(tmp_path / "site"), "A2I_WORK": str(tmp_path / "work"),
         "A2I_GPU_SMOKE": "1" if smoke else "0", "STANDIN_CALLS": str(calls)}
  env.pop("A2I_TAR", None)
  proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu.sh")], env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  return proc, out, calls.read_text().split("\n")[:-1]


def test_gpu_sh_runs_every_part_and_names_the_failed_ones(tmp_path):
  parts = "profile_cvae profile_discvae cvae_bf16 loop_sync infer_fold fused4"
  proc, out, calls = _run_gpu_sh(tmp_path, parts)
  # Every part ran, in order: the empty log and the long one stopped nothing.
  assert calls == ["profile_step.py profile_cvae.json", "profile_step.py profile_discvae.json",
                   "bench.py bench_gpu_cvae_bf16.json", "train.py ",
                   "ab_train_step.py ", "bench.py bench_gpu_fused4.json"], proc.stdout
  assert "traced step 11.73 ms" in proc.stdout  # The long log's summary line.
  # What the parts wrote is kept: the failed A/B's row, and the merge of the one good part.
  assert json.loads((out / "infer_fold.jsonl").read_text())["ms_per_step"] == 7.2
  merged = json.loads((out / "bench_gpu.json").read_text())
  assert merged["info"] == {"device_kind": "stand-in"}
  assert [c["model"] for c in merged["cases"]] == ["cvae"]
  # One summary line, last, names each failed part with its exit status; the status is 1.
  assert proc.returncode == 1, (proc.stdout, proc.stderr)
  last = proc.stdout.strip().split("\n")[-1]
  assert last == ("=== gpu.sh: 4 of 6 parts failed (exit status): profile_cvae (3), "
                  "cvae_bf16 (4), loop_sync (2), infer_fold (5)"), proc.stdout


def test_gpu_sh_exits_0_when_every_part_finishes(tmp_path):
  # The long profile log first: behind it, `grep | head -1` stopped the script (SIGPIPE).
  # The smoke mode's rewriting of the parts' flags runs too.
  proc, out, calls = _run_gpu_sh(tmp_path, "profile_discvae fused4", smoke=True)
  assert calls == ["profile_step.py profile_discvae.json", "bench.py bench_gpu_fused4.json"]
  assert proc.returncode == 0, (proc.stdout, proc.stderr)
  assert proc.stdout.strip().split("\n")[-1] == "=== gpu.sh: all 2 parts finished"
  assert len(json.loads((out / "bench_gpu.json").read_text())["cases"]) == 1


# ----------------------------------------------------------------------------------------------
# The benchmark scripts' command lines: a value they cannot measure is one `error:` line on
# stderr and a non-zero exit status, before anything is compiled or timed (review findings of
# 2026-12-06: before, tracebacks, NaN in the JSON, or exit status 0 having measured nothing or
# the wrong thing). Each test parses in this process, or runs a script only to its flag check.

import importlib.util  # noqa: E402

import pytest  # noqa: E402

BENCHMARKS = os.path.join(ROOT, "benchmarks")


def _script(name: str):
  """benchmarks/`name`.py imported as a module (benchmarks/ on sys.path, as when run)."""
  if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
  spec = importlib.util.spec_from_file_location(f"_bench_script_{name}",
                                                os.path.join(BENCHMARKS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # Its dataclasses look their module up there.
  spec.loader.exec_module(module)
  return module


def _refused(capsys, parse, argv, words):
  """`parse(argv)` exits non-zero with one `error:` line on stderr holding `words`; returns its
  exit status."""
  with pytest.raises(SystemExit) as e:
    parse(argv)
  assert e.value.code not in (0, None)
  err = capsys.readouterr().err.strip() or str(e.value.code)
  assert len(err.splitlines()) == 1 and err.startswith("error:") and words in err, err
  return e.value.code


@pytest.mark.parametrize("argv,words", [
    (["--what=trian"], "'trian'"), (["--batches=abc"], "'abc'"),
    (["--batches=0"], "'0' is not an integer of at least 1"),
    (["--models=foo"], "'foo'"), (["--model_overrides=model.width"], "key=value"),
    (["--repeats=0"], "--repeats=0"), (["--dtypes=f16"], "'f16'"), (["--what="], "--what")])
def test_bench_refuses_bad_flags(capsys, argv, words):
  _refused(capsys, _script("bench").parse_args, ["--huge_pages=off", *argv], words)


def test_bench_parses_lists_and_documents_smoke_repeats(capsys):
  bench = _script("bench")
  args = bench.parse_args(["--what=train,compile", "--batches=32,256", "--smoke", "--repeats=5",
                           "--model_overrides=model.width=0.25"])
  assert (args.what, args.batches, args.repeats) == (["train", "compile"], [32, 256], 1)
  assert args.overrides["model.width"] == "0.25" and args.overrides["model.image_size"] == "32"
  with pytest.raises(SystemExit):  # The --smoke help names what it replaces.
    bench.parse_args(["--help"])
  assert "replaces --repeats" in " ".join(capsys.readouterr().out.split())
  # Its lists of choices, kept without importing jax, are the library's.
  from a2i_jax import models, perf  # pylint: disable=import-outside-toplevel
  assert set(bench.MODELS) == set(models.MODEL_NAMES)
  assert set(bench.DTYPES) == set(perf.COMPUTE_DTYPES)


def test_bench_main_prints_library_errors_as_one_line(monkeypatch):
  bench = _script("bench")

  def refuse(*_, **__):
    raise bench.A2IError("model.dtype='x' is not a compute dtype;\n choose float32")
  monkeypatch.setattr(bench, "_run", refuse)
  with pytest.raises(SystemExit) as e:
    bench.main(["--huge_pages=off"])
  assert e.value.code == "error: model.dtype='x' is not a compute dtype; choose float32"


@pytest.mark.parametrize("script,flag,words", [
    ("train_step", "--variants=bogus", "'bogus'"),
    ("train_step", "--repeats=0", "--repeats=0"),  # --fuse: as --repeats.
    # A config that does not load or that the library refuses (was: a traceback; an unknown
    # key with the default config, at import): the absl scripts' shared parse.
    ("train_step", "--config=/nonexistent.py", "no config file at /nonexistent.py"),
    ("train_step", "--config.model.foo=1", "config key 'model.foo' does not exist."),
    # train.py's lines, from the one function both call (was a shorter copy here): the key
    # meant, and what an override's value must be (was absl's "invalid literal for int()").
    ("train_step", "--config.model.widht=0.5", "config key 'model.widht' does not exist. Did "
     "you mean --config.model.width? The valid keys are in configs/default.py."),
    ("scan_vs_loop", "--config.batch_size=4.0", "error: config.batch_size must be an integer "
     "(e.g. --config.batch_size=32), not '4.0'."),
    ("train_step", "--config.model.width=0", "config.model.width=0.0 must be > 0"),
    # Was: a ZeroDivisionError, absl's two-line FATAL, the whole help before the refusal.
    ("scan_vs_loop", "--steps=0", "--steps=0: 0 is not a positive integer"),
    ("scan_vs_loop", "--config=configs/synthetic.py:discvae", "give a CVAE or VAE config")])
def test_absl_scripts_refuse_bad_flags_before_they_compile(script, flag, words):
  """Was, in train_step.py: an unknown variant timed as the rolled scan under its own name
  (exit 0), --repeats=0 a NaN median, --fuse=0 a ZeroDivisionError (a review); in
  scan_vs_loop.py, --repeats=0 a NaN and --batch_size=0 a figure of nothing (exit 0)."""
  # From the tests' fork server (tests/launcher.py): its imports done already (was 1-1.5 s
  # of the suite's two cores a case).
  import faults_lib  # pylint: disable=import-outside-toplevel
  import launcher  # pylint: disable=import-outside-toplevel
  proc = launcher.run([sys.executable, os.path.join(BENCHMARKS, f"{script}.py"), flag],
                      cwd=ROOT, timeout=60, env=faults_lib.environment())
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  err = proc.stderr.strip()
  assert len(err.splitlines()) == 1 and err.startswith("error:") and words in err, err


def test_absl_scripts_name_the_line_of_a_config_files_own_error(tmp_path):
  """Was the whole traceback ml_collections wraps a config file's error in, joined into the
  error line, and no line number (train.py's line names it: the same function now)."""
  import faults_lib  # pylint: disable=import-outside-toplevel
  import launcher  # pylint: disable=import-outside-toplevel
  path = tmp_path / "mine.py"
  path.write_text("import ml_collections\n\n\ndef get_config():\n"
                  "  raise ValueError('first line\\nsecond line')\n")
  proc = launcher.run([sys.executable, os.path.join(BENCHMARKS, "train_step.py"),
                       f"--config={path}"], cwd=ROOT, timeout=60, env=faults_lib.environment())
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  assert proc.stderr.strip() == (f"error: the config file {path} failed to load (ValueError: "
                                 "first line) at line 5; fix the error there."), proc.stderr


# Config files for the argparse scripts' --config (the "{tmp}" of the cases below): one whose
# get_config raises, one that takes no argument (a CVAE), one that gives a disCVAE whatever
# its argument.
_CONFIG_FILES = {
    "boom.py": "import ml_collections\n\n\ndef get_config(arg='cvae'):\n"
               "  raise ValueError('boom')\n",
    "noarg.py": "from a2i_jax import config_lib\n\n\ndef get_config():\n"
                "  return config_lib.get_config('configs/synthetic.py:cvae')\n",
    "other.py": "from a2i_jax import config_lib\n\n\ndef get_config(size='small'):\n"
                "  return config_lib.get_config('configs/synthetic.py:discvae')\n"}
_FAST = ["--huge_pages=off", "--xla_cpu_flags=none"]  # ab_train_step.py's and bench.py's.
_BENCH = ["--smoke", "--what=compile", "--models=vae", "--no_results_copy", *_FAST]


@pytest.mark.parametrize("script,argv,words", [
    # A config file whose get_config raises: was a traceback; the file's line, as train.py's.
    ("compile_options", ["--config={tmp}/boom.py", "--models=cvae"],
     "error: the config file {tmp}/boom.py:cvae failed to load (ValueError: boom) at line 5; "
     "fix the error there."),
    ("ab_train_step", ["--variants=a:", "--config={tmp}/boom.py", *_FAST],
     "failed to load (ValueError: boom) at line 5; fix the error there."),
    # A file whose get_config takes no argument: was told to "drop ':cvae' from --config", a
    # suffix the script added; it is loaded as it is, for the model it gives.
    ("compile_options", ["--config={tmp}/noarg.py"], "error: the config file {tmp}/noarg.py "
     "takes no argument and gives model.name='cvae', not 'discvae'; pass --models=cvae,"),
    # A variant on --config: was loaded as "configs/synthetic.py:cvae:cvae" ("no variant
    # ':cvae:cvae'").
    ("compile_options", ["--config=configs/synthetic.py:cvae"],
     "drop ':cvae' and name the models with --models."),
    # A file giving another model than the one measured: was measured under the name asked.
    ("ab_train_step", ["--variants=a:", "--config={tmp}/other.py", "--models=cvae", *_FAST],
     "the config file {tmp}/other.py gives model.name='discvae' for {tmp}/other.py:cvae;"),
    # A missing file: was exit status 1, after the XLA flags and jax's import.
    ("compile_options", ["--config=/nonexistent.py"], "error: no config file at "
     "/nonexistent.py;"),
    # Overrides (bench.make_config, which every script's overrides go through): an unknown key
    # and a value of another type named configs/lfw.py whatever the config, and no type (exit
    # status 1); a bool's misspelt value was False; a section's name a traceback.
    ("ab_train_step", ["--variants=a:model.widht=1", "--config=configs/synthetic.py", *_FAST],
     "error: the override model.widht=1: config key 'model.widht' does not exist. Did you "
     "mean model.width? The valid keys are in configs/default.py."),
    ("ab_train_step", ["--variants=a:model.width=abc", "--models=cvae", *_FAST],
     "error: the override model.width=abc: config.model.width must be a number (e.g. "
     "model.width=1.0), not 'abc'."),
    ("bench", ["--model_overrides=data.masks=flase", *_BENCH], "config.data.masks must be "
     "true or false (data.masks=true or data.masks=false), not 'flase'."),
    ("bench", ["--model_overrides=model=1", *_BENCH], "model is a section of the config"),
    # trace_time.py's --config: a missing file, or another checkout's, was measured with the
    # checkout's own file without a word; another config's refusal was exit status 1.
    ("trace_time", ["--config=/nonexistent/configs/synthetic.py", "--models=vae",
                    "--what=train", "--rounds=1", "--xla_cpu_flags=none"],
     "error: --config=/nonexistent/configs/synthetic.py: only configs/synthetic.py (the tiny "
     "models), each measured checkout's own, is measured here;"),
    ("trace_time", ["--config=configs/lfw.py"], "only configs/synthetic.py")])
def test_argparse_scripts_refuse_a_config_they_cannot_use(tmp_path, script, argv, words):
  """The argparse scripts that load a config themselves (`bench.load_config`,
  `bench.make_config`): one `error:` line, exit status 2, before anything is compiled."""
  import faults_lib  # pylint: disable=import-outside-toplevel
  import launcher  # pylint: disable=import-outside-toplevel
  for name, text in _CONFIG_FILES.items():
    (tmp_path / name).write_text(text)
  argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
  proc = launcher.run([sys.executable, os.path.join(BENCHMARKS, f"{script}.py"), *argv],
                      cwd=ROOT, timeout=60, env=faults_lib.environment())
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  err = proc.stderr.strip()
  assert len(err.splitlines()) == 1 and err.startswith("error:"), err
  assert words.replace("{tmp}", str(tmp_path)) in err, err


def test_bench_load_config_takes_what_the_scripts_measure(tmp_path):
  """A config file without an argument, for the model it gives, and overrides parsed as
  train.py's --config.<key> parses them."""
  bench = _script("bench")
  (tmp_path / "noarg.py").write_text(_CONFIG_FILES["noarg.py"])
  assert bench.load_config(str(tmp_path / "noarg.py"), "cvae").model.name == "cvae"
  config = bench.make_config(bench.Case("discvae", 8, "bfloat16"), {
      "data.masks": "True", "model.width": "1", "num_train_steps": "7", "data.name": "lfw"},
      "configs/synthetic.py")
  assert (config.model.name, config.batch_size, config.model.dtype) == ("discvae", 8,
                                                                        "bfloat16")
  assert (config.data.masks, config.model.width, config.num_train_steps) == (True, 1.0, 7)


def test_the_config_flag_errors_name_the_scripts_own_flag():
  """A script whose config flag has another name: the hints name that flag (the shared
  `config_lib.explain_config_flag_error`, in process)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  argv = ["x.py", "--cfg", "configs/synthetic.py", "--nocfg.progress_bar", "-cfg.model.widht=1"]
  assert config_lib.config_flag_value(argv, "--cfg") == "configs/synthetic.py"
  explain = lambda e: config_lib.explain_config_flag_error(argv, e, "--cfg", "x.py")
  assert explain(KeyError("widht")) == ("config key 'model.widht' does not exist. Did you mean "
                                        "--cfg.model.width? The valid keys are in "
                                        "configs/default.py.")
  assert explain(flags.IllegalFlagValueError(
      "flag --cfg.batch_size=4.0: invalid literal for int() with base 10: '4.0'")) == (
          "config.batch_size must be an integer (e.g. --cfg.batch_size=32), not '4.0'.")
  assert explain(flags.UnrecognizedFlagError("stpes")) == (
      "Unknown command line flag 'stpes'; see python x.py --helpfull.")


@pytest.mark.parametrize("script,argv,patch", [
    ("compile_options", ["--config=configs/synthetic.py"], "set_xla_cpu_flags"),
    ("ab_train_step", ["--variants=a:"], "set_xla_cpu_flags"),
    ("profile_step", [], "set_xla_cpu_flags"),
    ("xla_flags", [], "make_config")])
def test_scripts_print_library_errors_as_one_line(monkeypatch, script, argv, patch):
  """The library's refusal of a value in a script's main (a --config file not found, an
  override of model.width to 0) is one `error:` line, as in bench.py (was: a traceback)."""
  module = _script(script)

  def refuse(*_, **__):
    raise module.bench.A2IError("no config file at /nonexistent.py;\n pass one")
  monkeypatch.setattr(module.bench, patch, refuse)
  with pytest.raises(SystemExit) as e:  # xla_flags.py's main turns the cache off (fixture).
    module.main(argv)
  assert e.value.code == "error: no config file at /nonexistent.py; pass one"


def test_suite_timeline_refuses_a_damaged_file(tmp_path):
  """A row cut short (a worker killed mid-write) was a ValueError's traceback."""
  timeline = _script("suite_timeline")
  (tmp_path / "gw0.tsv").write_text("pid\t12\t\nstart\t1.0\ta::t1\nend\t2.0\ta::t1\n")
  (tmp_path / "gw1.tsv").write_text("pid\t13\t\nstart\t1.0\ta::t2\nend\t3.")
  with pytest.raises(SystemExit) as e:
    timeline.summarize(str(tmp_path))
  assert str(e.value.code).startswith(f"error: {tmp_path / 'gw1.tsv'}, line 3, is not a "), e
  (tmp_path / "gw1.tsv").write_text("pid\t13\t\nstart\t1.0\ta::t2\nend\t3.5\ta::t2\n")
  assert timeline.summarize(str(tmp_path)).endswith("ends apart: 1.5 s; span 2.5 s")


@pytest.mark.parametrize("script,argv,words", [
    ("profile_step", ["--what=bogus"], "'bogus'"), ("profile_step", ["--steps=0"], "below 1"),
    ("trace_time", ["--what=train,bogus"], "'bogus'"), ("trace_time", ["--rounds=0"], "below"),
    ("xla_flags", ["--variants=bogus"], "'bogus'"), ("kernel_probe", ["--repeats=-1"], "below"),
    ("conv_layers", ["--dtype=foo"], "'foo'"), ("conv_layers", ["--blocks=abc"], "'abc'"),
    ("checkpoint_save", ["--devices=0"], "--devices=0"),
    # The scripts that printed argparse's usage lines first, or checked a value only after
    # importing jax, compiling or starting children (a review of 2026-12-06).
    ("ab_train_step", [], "required: --variants"),
    ("ab_train_step", ["--variants=a:x=1;a:y=2"], "'a' twice; give each variant its own name"),
    ("ab_train_step", ["--variants=a:ynn=bogus"], "ynn='bogus'; use one of xla, dot, conv"),
    ("ab_train_step", ["--variants=nocolon"], "is not name:key=value"),
    ("ab_train_step", ["--variants=a:", "--models=foo"], "'foo'; choose from cvae"),
    ("ab_train_step", ["--variants=a:", "--rounds=0"], "--rounds=0 is below 1"),
    ("compile_options", ["--options=O1,O9"], "'O9'; choose from default"),
    ("compile_options", ["--infer_steps_per_call=1,0"], "'0' is not an integer of at least 1"),
    ("compile_options", ["--train=0", "--infer_steps_per_call="], "measures nothing"),
    ("compile_options", ["--config=configs/synthetic.py", "--overrides=model.width=1"],
     "drop --config or --overrides"),
    ("compile_options", ["--overrides=model.width"], "--overrides: 'model.width' is not key"),
    ("compile_options", ["--batch=0"], "--batch=0 is below 1"),
    ("compile_options", ["--train=2"], "invalid choice: 2"),
    ("init_time", ["--rounds=0"], "--rounds=0 is below 1"),
    ("init_time", ["--models=cvae,foo"], "'foo'; choose from cvae"),
    ("init_time", ["--roots=/nonexistent/a2i"], "not a checkout of a2i-jax"),
    ("page_faults", ["--settings=huge,bogus"], "'bogus'; choose from huge"),
    ("page_faults", ["--what=train,eval"], "'eval'; choose from train, infer"),
    ("page_faults", ["--calls=0"], "--calls=0 is below 1"),
    ("page_faults", ["--churn_mb=-1"], "below 0"),
    ("page_faults", ["--models="], "--models names nothing"),
    ("compile_log_summary", ["/nonexistent/log"], "is not a folder"),
    ("compile_log_summary", [ROOT, "--top=0"], "--top=0 is below 1"),
    ("compile_log_summary", [ROOT, "--timeline=/nonexistent/t"], "--timeline /nonexistent/t"),
    ("compile_log_summary", [], "required: folder"),
    ("compile_profile", ["--variants=default,bogus"], "'bogus'; choose from default"),
    ("compile_profile", ["--train=0", "--infer_images=0"], "measures nothing"),
    ("compile_profile", ["--infer_steps=0"], "--infer_steps=0 is below 1"),
    ("compile_profile", ["--models=vae,foo"], "'foo'"),
    ("first_call", ["--ways=default,bogus"], "'bogus'; choose from default"),
    ("first_call", ["--images=0"], "--images=0 is below 1"),
    ("first_call", ["--models=foo"], "'foo'"),
    ("tried_forms", [], "required: --what"),
    ("tried_forms", ["--what=winograd", "--repeats=0"], "--repeats=0 is below 1"),
    ("tried_forms", ["--what=heads", "--model=foo"], "invalid choice: 'foo'"),
    ("tried_forms", ["--what=nope"], "invalid choice: 'nope'"),
    ("xla_flags", ["--model=foo"], "invalid choice: 'foo'"),  # Was: a library traceback.
    ("xla_flags", ["--model_overrides=model.width"], "is not key=value"),  # Was: ValueError.
    ("pace", ["--seconds=0"], "--seconds=0.0 must be a positive number"),
    ("pace", ["--seconds=nan"], "--seconds=nan must be a positive number")])
def test_scripts_refuse_bad_flags(capsys, script, argv, words):
  assert _refused(capsys, _script(script).parse_args, argv, words) == 2


_PARSERS_OF_2026_12_06 = ("ab_train_step", "compile_options", "init_time", "page_faults",
                          "compile_log_summary", "compile_profile", "first_call", "tried_forms")


@pytest.mark.parametrize("script", _PARSERS_OF_2026_12_06)
def test_scripts_print_help(capsys, script):
  with pytest.raises(SystemExit) as e:
    _script(script).parse_args(["--help"])
  assert e.value.code == 0
  assert capsys.readouterr().out.startswith("usage:")


@pytest.mark.parametrize("script,argv", [
    ("ab_train_step", ["--variants=a:;b:ynn=dot,cpu_scheduler=dfs,optimizer=per_leaf"]),
    ("compile_options", ["--train=0", "--report=1", "--infer_steps_per_call="]),
    ("init_time", []), ("page_faults", ["--settings=keep_huge"]), ("compile_log_summary", [ROOT]),
    ("compile_profile", ["--train=0"]), ("first_call", ["--smoke"]),
    ("tried_forms", ["--what=bdot"])])
def test_scripts_accept_their_defaults_and_examples(script, argv):
  """The checks refuse no value the scripts measure."""
  assert _script(script).parse_args(argv) is not None


def test_pace_prints_both_figures_as_one_json_line(capsys):
  _script("pace").main(["--seconds=0.05"])
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1
  figures = json.loads(out[0])
  assert figures["python_per_cpu_s"] > 0 and figures["matmul_per_cpu_s"] > 0


def test_compare_summary_refuses_a_file_that_is_not_json(capsys, tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text("not json\n")
  _refused(capsys, _script("compare_summary").main, [str(bad)], "not a JSON record")
  _refused(capsys, _script("compare_summary").main, [str(tmp_path / "none.json")],
           "cannot read")


def test_compare_summary_refuses_records_without_their_fields(capsys, tmp_path):
  """Was: a KeyError traceback for a record without "model", a record of neither kind passed
  over, and argparse's two lines for no file (a review of 2026-12-06)."""
  summary = _script("compare_summary")
  for name, record, words in [
      ("case", {"cases": [{"x": 1}]}, 'a case of bench.py\'s record names no "model"'),
      ("port", {"framework": "torch"}, 'the port\'s record names no "model"'),
      ("other", {"x": 1}, "is neither a port record"),
      ("times", {"framework": "torch", "model": "cvae", "train": {"step_s_all": [0.1, 0]}},
       "train times that are not a list of positive numbers")]:
    bad = tmp_path / f"{name}.json"
    bad.write_text(json.dumps(record) + "\n")
    _refused(capsys, summary.main, [str(bad)], words)
  assert _refused(capsys, summary.main, [], "required: files") == 2


def _torch_reference(*argv: str) -> subprocess.CompletedProcess:
  """benchmarks/torch_reference.py run with `argv` by this Python (which has no PyTorch)."""
  return subprocess.run([sys.executable, os.path.join(BENCHMARKS, "torch_reference.py"),
                         *argv], capture_output=True, text=True, timeout=60, check=False)


def test_torch_reference_without_torch_says_to_install_it():
  if importlib.util.find_spec("torch") is not None:
    pytest.skip("torch is installed here")
  proc = _torch_reference("--model=discvae")  # Valid flags: the import of torch is next.
  assert proc.returncode != 0
  err = proc.stderr.strip()
  assert len(err.splitlines()) == 1 and "pip install torch" in err, err


def test_torch_reference_prints_help_without_torch():
  """--help needs no PyTorch (was: it failed without it). The refusals, checked in the same
  `parse_args` before torch is imported, are the next test's cases: --model=vae built a CVAE
  and an unknown model a disCVAE, --repeats=0 raised StatisticsError, and --what=bogus
  measured nothing (a review of 2026-12-06)."""
  proc = _torch_reference("--help")
  assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr


@pytest.mark.parametrize("argv,words", [
    (["--model=vae"], "error: --model=vae: the port has no unconditional VAE"),
    (["--model=foo"], "'foo' is not a model"),
    (["--repeats=0"], "--repeats=0 is below 1"), (["--what=bogus"], "unknown 'bogus'"),
    (["--what=,"], "--what names nothing"), (["--width=0"], "--width=0.0 must be"),
    (["--model=discvae", "--image_size=48"], "a multiple of 32"),
    (["--batch=abc"], "invalid int value: 'abc'")])
def test_torch_reference_refuses_bad_flags(capsys, argv, words):
  assert _refused(capsys, _script("torch_reference").parse_args, argv, words) == 2


def test_torch_reference_accepts_what_compare_cpu_sh_passes():
  args = _script("torch_reference").parse_args(
      ["--model=discvae", "--batch=32", "--repeats=3", "--infer_steps=10", "--infer_ends=none"])
  assert (args.model, args.what, args.infer_ends) == ("discvae", ["train", "infer"], "none")


# ----------------------------------------------------------------------------------------------
# bench.py's FLOP counts (a review of 2026-12-06: the usual count includes the multiply-adds
# on a convolution's padding taps, 7.7-8.2 % of the paper models' train steps, which the
# summary called 0.5 %; and XLA's figure for a rolled loop of N steps was divided by N although
# XLA counts the loop's body once).

def _conv_jaxpr(k: int, pad: int, stride: int = 1, size: int = 5, cin: int = 3, cout: int = 2):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.make_jaxpr(conv)(jnp.ones((1, size, size, cin)), jnp.ones((k, k, cin, cout)))


def test_bench_useful_flops_leave_out_padding_taps():
  bench = _script("bench")
  # A 3x3 convolution padded by 1 on a 5x5 input, 3 -> 2 channels: 25 outputs x 9 taps, of
  # which the taps on padding are, per axis, 1 each at the 2 edge outputs: 5 x 3 - 2 = 13
  # pairs on real input per axis, 13 x 13 = 169 of 225 in all.
  padded = _conv_jaxpr(3, 1)
  assert bench.jaxpr_flops(padded) == 2 * 25 * 9 * 3 * 2
  assert bench.jaxpr_flops(padded, useful=True) == 2 * 169 * 3 * 2
  # Strided: outputs 0, 2, 4 of a 5x5 padded by 1 (3 a side): the taps at -1 and 5 fall
  # off, 3 x 3 - 2 = 7 pairs per axis.
  strided = _conv_jaxpr(3, 1, stride=2)
  assert bench.jaxpr_flops(strided) == 2 * 9 * 9 * 3 * 2
  assert bench.jaxpr_flops(strided, useful=True) == 2 * 49 * 3 * 2
  # No padding (a 3x3 "valid" convolution, and a 1x1): every tap lands on the input.
  for jaxpr in (_conv_jaxpr(3, 0), _conv_jaxpr(1, 0)):
    assert bench.jaxpr_flops(jaxpr, useful=True) == bench.jaxpr_flops(jaxpr) > 0
  assert bench.jaxpr_flops(_conv_jaxpr(1, 0)) == 2 * 25 * 3 * 2


def test_bench_useful_flops_leave_out_the_input_dilation_holes():
  """The input gradient of a stride-2 convolution convolves the output gradient dilated by 2:
  the taps on its holes are no useful work."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  bench = _script("bench")

  def conv(x, w):
    return jnp.sum(jax.lax.conv_general_dilated(x, w, (2, 2), "VALID",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC")))
  grad = jax.make_jaxpr(jax.grad(conv))(jnp.ones((1, 4, 4, 1)), jnp.ones((2, 2, 1, 1)))
  # Forward: 2x2 outputs x 2x2 taps, 16 multiply-adds. The input gradient: 4x4 outputs x 2x2
  # taps over the 2x2 output gradient dilated to 3x3 and padded by 1, 64 multiply-adds; per
  # axis 4 of its 8 (output, tap) pairs land on a real element, so 16 are useful (each input
  # element gets one output's gradient x one tap).
  assert bench.jaxpr_flops(grad) == 2 * (16 + 64)
  assert bench.jaxpr_flops(grad, useful=True) == 2 * (16 + 16)


def test_xla_counts_a_rolled_loop_body_once():
  """What `xla_steps_counted` stands on, for this jax: XLA's cost analysis of a rolled scan of
  4 reports one trip's FLOPs, of an unrolled one all 4, of one unrolled by 2 two trips'."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  bench = _script("bench")
  one = 2 * 16 ** 3

  def flops(unroll):
    def run(x):
      return jax.lax.scan(lambda c, _: (jnp.tanh(c @ c), None), x, None, length=4,
                          unroll=unroll)[0]
    return bench.xla_flops(jax.jit(run).lower(jnp.ones((16, 16))).compile())
  for unroll in (False, True, 2):
    counted = bench.xla_steps_counted(4, unroll)
    assert one * counted <= flops(unroll) < one * counted * 1.1, unroll
  assert [bench.xla_steps_counted(1, False), bench.xla_steps_counted(4, 4),
          bench.xla_steps_counted(4, 1), bench.xla_steps_counted(6, 4)] == [1, 4, 1, None]


def test_direct_config_counts_one_useful_figure_per_model():
  """`direct_config` pins XLA's weight gradient (the GPU's form): CPU's "taps" form writes
  weight gradients as dot_generals over the padded input, which the useful count counted as
  useful (0.2-0.3 % more for the paper models: a review of 2026-12-06)."""
  import jax  # pylint: disable=import-outside-toplevel
  bench = _script("bench")
  config = bench.direct_config(bench.make_config(
      bench.Case("cvae", 2, "float32"),
      {**bench.SMOKE_OVERRIDES, "model.conv_weight_grad": "taps"}))
  assert config.model.conv_weight_grad == "xla"  # Pinned, whatever was asked.
  counts = {}
  for form in ("taps", "xla"):  # Why: the taps form's padding counted as useful.
    config.model.conv_weight_grad = form
    steps, state, data, _ = bench.train_program(config, 2)
    jaxpr = jax.make_jaxpr(steps)(state, data, jax.random.key(1))
    counts[form] = bench.jaxpr_flops(jaxpr, useful=True)
  assert counts["taps"] > counts["xla"] > 0, counts


def _compare_file(tmp_path, port: dict, case: dict):
  port = {"framework": "torch", "model": "cvae", "batch": 32, "width": 1.0, "image_size": 64,
          "train": {"step_s_all": [2.0, 2.0]}, "infer": {"images": 32, "steps": 10,
                                                         "run_s_all": [3.0, 3.0]}, **port}
  case = {"model": "cvae", "batch": 32, "dtype": "float32", "compute_dtype": "float32",
          "image_size": 64, "width": 1.0, "train": {"step_s_all": [1.0, 1.0]},
          "infer": {"images": 32, "steps": 10, "run_s_all": [1.0, 1.0]}, **case}
  path = tmp_path / "run.json"
  path.write_text(json.dumps(port) + "\n" + json.dumps({"cases": [case]}) + "\n")
  return str(path)


@pytest.mark.parametrize("port,case,words", [
    ({}, {"batch": 256}, "batch 256 vs the port's 32"),
    ({}, {"dtype": "bfloat16"}, "dtype bfloat16 vs the port's float32"),
    ({}, {"compute_dtype": "bfloat16"}, "compute dtype bfloat16 vs the port's float32"),
    ({"width": 0.5}, {}, "width 1.0 vs the port's 0.5"),
    ({}, {"image_size": 32}, "image size 32 vs the port's 64"),
    ({}, {"infer": {"images": 8, "steps": 10, "run_s_all": [1.0]}},
     "inference images 8 vs the port's 32"),
    ({}, {"infer": {"images": 32, "steps": 2, "run_s_all": [1.0]}},
     "inference steps 2 vs the port's 10")])
def test_compare_summary_refuses_a_pair_of_unlike_runs(capsys, tmp_path, port, case, words):
  """Was: a JAX-vs-PyTorch ratio between runs of different work, without a word (a review of
  2026-12-06)."""
  summary = _script("compare_summary")
  _refused(capsys, summary.main, [_compare_file(tmp_path, port, case)],
           "measured different work (" + words)
  assert summary.main([_compare_file(tmp_path, {}, {})]) == 0  # Like runs: the ratios.
  assert "| 2.00x | 2.00x | 3.00x | 3.00x |" in capsys.readouterr().out


@pytest.mark.parametrize("env,words", [
    ({"BENCH_ARGS": "--max_pool=window --repeats=1"}, "BENCH_ARGS repeats --repeats"),
    ({"BENCH_ARGS": "--batch=4"}, "BENCH_ARGS repeats --batch, which compare_cpu.sh sets "
     "itself (--batches)"),
    ({"BENCH_ARGS": "--model_overrides=model.width=0.5"}, "BENCH_ARGS repeats "
     "--model_overrides"),
    ({"MODEL_OVERRIDES": "model.width=1,model.upsample_mode=direct"},
     "MODEL_OVERRIDES sets model.upsample_mode")])
def test_compare_cpu_sh_refuses_flags_it_sets_itself(tmp_path, env, words):
  """Was: BENCH_ARGS after the script's own flags, so a repeated one silently won (argparse
  keeps the last) and --model_overrides dropped the mode's (a review of 2026-12-06). Refused
  before anything runs or is written: PYTHON and TORCH_PYTHON would fail."""
  out = tmp_path / "out.json"
  proc = subprocess.run(["bash", os.path.join(BENCHMARKS, "compare_cpu.sh")], cwd=ROOT,
                        env={**os.environ, "PYTHON": "false", "TORCH_PYTHON": "false",
                             "OUT_FILE": str(out), **env},
                        capture_output=True, text=True, timeout=30, check=False)
  assert proc.returncode == 1
  err = proc.stderr.strip()
  assert len(err.splitlines()) == 1 and err.startswith("error:") and words in err, err
  assert not list(tmp_path.iterdir())


def test_bench_writes_a_results_copy_only_when_asked_and_never_over_a_record(
    capsys, monkeypatch, tmp_path):
  """Was: every run without --smoke replaced benchmarks/results/<device>.json ("cpu.json" on
  every CPU, a cited record) whatever its overrides or --what (a review of 2026-12-06)."""
  bench = _script("bench")
  monkeypatch.setattr(bench, "ROOT", str(tmp_path))
  tiny = ["--what=compile", "--models=vae", "--repeats=1", *_FAST, "--model_overrides="
          + ",".join(f"{k}={v}" for k, v in bench.SMOKE_OVERRIDES.items())]
  bench.main(tiny)
  assert not (tmp_path / "benchmarks").exists()  # No copy by default.
  capsys.readouterr()
  bench.main([*tiny, "--results_copy"])
  copies = list((tmp_path / "benchmarks" / "results").iterdir())
  assert len(copies) == 1 and copies[0].name.startswith("cpu_"), copies
  assert copies[0].name != "cpu.json" and copies[0].name.endswith(
      json.loads(copies[0].read_text())["info"]["date_utc"][:10] + ".json")
  capsys.readouterr()
  before = copies[0].read_text()
  _refused(capsys, bench.main, [*tiny, "--results_copy"], "exists (a record)")
  assert copies[0].read_text() == before
  _refused(capsys, bench.parse_args, ["--smoke", "--results_copy"], "a smoke run is no record")


@pytest.mark.parametrize("script,argv", [
    ("train_step", ["--variants=single", "--batch_size=2"]),
    ("scan_vs_loop", ["--steps=1", "--batch_size=1"])])
def test_scripts_time_compiles_not_cache_reads(tmp_path, script, argv):
  """Was: with JAX_COMPILATION_CACHE_DIR set, a compile time read that cache (bench.py and
  the others turned it off; a review of 2026-12-06). The state is in the output."""
  cache = tmp_path / "cache"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  proc = subprocess.run([sys.executable, os.path.join(BENCHMARKS, f"{script}.py"),
                         "--config=configs/synthetic.py:vae", "--repeats=1",
                         "--xla_cpu_flags=none", *argv], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["compilation_cache"] == "off"
  assert out["compilation_cache_dir_env"] == str(cache)
  assert not cache.exists() or not list(cache.iterdir())
