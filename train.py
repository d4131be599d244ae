"""Trains a model: flags in, `train_lib.train_and_evaluate` out.

  python train.py --config=configs/synthetic.py --workdir=runs/synthetic
  python train.py --config=configs/lfw.py:discvae --workdir=runs/lfw_discvae \
      --config.batch_size=64

The console shows INFO lines, except Orbax's (a few dozen per checkpoint save);
`--verbosity=1` shows those too (absl's flag: -1 warnings only, 0 INFO, 1 debug). Any mistake
(a config key that does not exist, a missing config file, a bad value, a workdir that cannot
be used) is one `error:` line and exit code 1; Ctrl-C saves the state, says at which step,
and exits with 130.
"""

if __name__ == "__main__":  # First, before any import: it may start the command over.
  from a2i_jax import startup  # pylint: disable=g-import-not-at-top
  # One line for a stop in the imports below (was a traceback for a Ctrl-C, and no word for
  # a SIGTERM; review finding). A SIGTERM is a Ctrl-C here, as later (status 130).
  startup.begin("interrupted", 130)

import logging as std_logging
import os
import sys
import warnings

from absl import app, flags, logging
from ml_collections import config_flags

from a2i_jax import checkpoints, config_lib, distributed, files, interrupts, perf, train_lib
from a2i_jax.errors import (A2IError, ConfigError, TrainingInterrupted, first_line,
                            is_out_of_memory)


def _fail(message: str, at_once: bool = False) -> None:
  print(f"error: {message}", file=sys.stderr)
  if at_once:
    # After a failed run the library has closed what it could. Skip the exit hooks: those of
    # its libraries (tensorboardX's flush, Orbax's background threads) retry writes to a full
    # disk and print tracebacks over the one line.
    distributed.exit_now(1)
  sys.exit(1)


if __name__ == "__main__":
  try:  # ml_collections expands each --flagfile when the flag below is defined: one that
    # cannot be read was a traceback there.
    config_lib.expand_flagfiles(sys.argv, flags.FLAGS)
  except ConfigError as e:
    _fail(str(e))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
# Many hosts (README "Many hosts"): --coordinator_address, --num_processes, --process_id.
_JOIN_PROCESSES = distributed.define_flags()
flags.mark_flags_as_required(["config", "workdir"])


def _newest_step():
  """The newest checkpoint's step in --workdir, the one a rerun resumes from; None if none."""
  return (checkpoints.newest_saved_step(os.path.expanduser(_WORKDIR.value))
          if _WORKDIR.value else None)


def _num_train_steps():
  """The run's `num_train_steps` from --config and its overrides; None where it cannot be
  read (a config that did not load)."""
  try:
    steps = _CONFIG.value.get("num_train_steps")
  except Exception:  # pylint: disable=broad-except  (an unloaded config's own error)
    return None
  return steps if isinstance(steps, int) else None


def _out_of_memory_words(e: BaseException) -> str:
  """The line for a host or device out of memory: what ran out, what to ask less of, and the
  checkpoint a rerun resumes from."""
  first = first_line(e)
  step = _newest_step()
  kept = ("no checkpoint is saved yet." if step is None else
          f"the checkpoints saved are kept, the newest at step {step}.")
  if isinstance(e, MemoryError):  # The host's: also a dataset's load, which no batch size
    # eases (review).
    return (f"the host ran out of memory ({first}); free memory (other programs), or ask "
            "for less: a smaller dataset or --config.batch_size; " + kept)
  return (f"out of memory ({first}); ask for less at a time: a smaller --config.batch_size "
          f"or a narrower --config.model.width; {kept}")


def _refuse_a_run_record(spec: str) -> None:
  """Refuses a --config that is a run's record of its config (`config_lib.run_record_example`:
  a JSON file), before ml_collections runs it as Python (was: "NameError ... fix the error
  there", advice that would damage the record; review finding)."""
  example = config_lib.run_record_example(spec.partition(":")[0])
  if example is not None:
    _fail(f"--config={spec} is a JSON file, a run's record of its config (train.py writes "
          f"{checkpoints.CONFIG_FILE} into the workdir, for infer.py), not a config file: "
          f"pass a config file instead, e.g. --config={example}, with --config.<key>=<value> for "
          "each setting to change (the same --workdir resumes that run).")


def _parse_flags(argv: list[str]) -> list[str]:
  # config_flags loads the config file and applies the --config.* overrides while parsing,
  # before main: its failures (an unknown key, a missing file) must be caught here.
  try:
    # Each --flagfile's flags first, as absl reads them: the checks below read the overrides
    # (was: those in a flagfile skipped them, and a misspelt key there named no key).
    argv = config_lib.normalised_command_line(config_lib.expand_flagfiles(argv, flags.FLAGS))
  except ConfigError as e:
    _fail(str(e))
  # ml_collections reads the order of --config and its overrides from sys.argv itself: the
  # normalised order there too (--config first: was "Found --config.x in argv before a value
  # for --config was specified"). The list itself, which records how each argument was typed,
  # for the advice to a refused resume (`config_lib.CommandLine`; was: its contents alone).
  sys.argv = argv
  given = [a for a in argv[1:] if a == "--config" or a.startswith("--config=")]
  if len(given) > 1:  # absl would let the last win, or blame the overrides as defined twice.
    _fail(f"--config given {len(given)} times; pass it once (then --config.<key>=<value> "
          "for each override).")
  spec = config_lib.config_flag_value(argv)
  _refuse_a_run_record(spec)  # Before ml_collections runs it as Python.
  try:
    with warnings.catch_warnings():  # ml_collections loads the file with load_module, which
      # Python deprecates: under -W error (PYTHONWARNINGS=error) that was "the command line
      # could not be parsed".
      warnings.filterwarnings("ignore", message=r".*load_module\(\)", category=DeprecationWarning)
      rest = flags.FLAGS(argv)
      _CONFIG.value.get("seed")  # A deferred load error (a missing file) surfaces here.
  except Exception as e:  # pylint: disable=broad-except
    _fail(config_lib.explain_config_flag_error(argv, e))
  try:
    config_lib.check_is_config(_CONFIG.value,
                               config_flags.get_config_filename(flags.FLAGS["config"]))
    config_lib.check_variant(_CONFIG.value, spec)  # "synthetic.py:dcvae".
    # Its keys first (one it lacks), then the overrides it would ignore; the values are
    # checked in train_and_evaluate (some need JAX, which must wait for the processes to join).
    config_lib.check_keys(_CONFIG.value)
  except ConfigError as e:
    _fail(str(e))
  _refuse_a_name_unlike_its_variant(argv, _CONFIG.value)  # Which model the others are for.
  _refuse_ignored_overrides(argv, _CONFIG.value)
  # What the library's own check (`config_lib.check_set_keys_used`) compares the overrides
  # with: the config file, read again.
  config_lib.note_origin(_CONFIG.value, config_lib.resolve_spec(spec), list(_typed_keys(argv)))
  return rest


def _typed_keys(argv: list[str]) -> dict[str, str]:
  """The config keys the command line overrides, each with its flag as typed
  ("data.path": "--config.data.path", "scan_unroll": "--noconfig.scan_unroll")."""
  typed = {}
  for arg in argv[1:]:
    flag = arg.split("=", 1)[0]
    for prefix in ("--config.", "--noconfig."):
      if flag.startswith(prefix):
        typed.setdefault(flag[len(prefix):], flag)
  return typed


def _refuse_a_name_unlike_its_variant(argv: list[str], config) -> None:
  """`--config.model.name=NAME` where the config file has NAME as a variant that sets more
  than the name keeps the settings the file gives its other model: refused, naming the
  variant (was: `configs/lfw.py --config.model.name=discvae --config.data.masks=True`, the
  way the line for an ignored override pointed, trained the reference's composite for the
  CVAE's 26,600 steps, where configs/lfw.py:discvae sets the layered one and 21,280; fault
  hunt). Keys the command line sets, and those the model ignores, are not compared
  (`config_lib.name_variant_differences`, which the Python API's check shares)."""
  spec = config_lib.config_flag_value(argv)
  found = config_lib.name_variant_differences(config, spec, list(_typed_keys(argv)))
  if found is not None:
    variant, base_name, differ = found
    path, name = spec.partition(":")[0], config.model.name
    shown = "; ".join(differ[:3]) + (f"; {len(differ) - 3} more" if len(differ) > 3 else "")
    _fail(f"--config.model.name={name} changes the name alone: the other settings stay those "
          f"{spec} gives model.name={base_name!r}, and its variant {path}:{name} sets "
          f"more ({shown}); pass --config={path}:{name} instead of --config.model.name (with "
          "your other overrides).")


def _refuse_ignored_overrides(argv: list[str], config) -> None:
  """An override the user typed of a key the chosen model or dataset ignores (a CVAE's
  zf_dim, data.path for the synthetic data, a disCVAE's num_sample_cols, scan_unroll with one
  step per dispatch, data.mask_net without masks) would be taken and do nothing: refused
  (`config_lib.ignored_settings`, which the Python API's check shares). The config file's
  own values are not checked: configs/default.py sets every key for every model and dataset."""
  typed = _typed_keys(argv)
  run = _resumed_config()
  for key, words in config_lib.ignored_settings(config, list(typed), prefix="--config."):
    # Not a resume's value that its run recorded (was: a run trained with it before these
    # refusals could not be resumed with its own command; fault hunt), as the library's check.
    if run is None or config_lib.value_at(run, key) != config_lib.value_at(config, key):
      _fail(f"{typed[key]} {words}.")


def _resumed_config():
  """The config.json of the run --workdir holds (with checkpoints: a resume), with the keys
  it predates filled in; None where there is none or it cannot be read (train_and_evaluate
  says so)."""
  if not _WORKDIR.value:
    return None
  workdir = os.path.expanduser(_WORKDIR.value)
  try:
    if not checkpoints.has_checkpoints(workdir):
      return None
    return config_lib.with_defaults(checkpoints.load_config(workdir))
  except Exception:  # pylint: disable=broad-except  (said by train_and_evaluate)
    return None


def main(argv):
  # SIGTERM outside the loop as Ctrl-C there (was: killed alone; with peers, swallowed by
  # JAX's preemption notifier), neither lost where a library swallows it; the imports'
  # handler is done. Inside the loop `interrupts.StopRequest` takes both.
  interrupts.stop_on_signals()
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}; flags are written --name=value.")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.INFO)
  if logging.get_verbosity() < logging.DEBUG:
    checkpoints.quiet_orbax(logging.get_absl_handler())
    std_logging.getLogger("jax").setLevel(std_logging.WARNING)  # "Unable to initialize TPU".
  try:  # The probe's seconds too (was: a Ctrl-C there was a traceback).
    perf.set_recommended_xla_flags()  # Before JAX starts its backend (the function says).
    files.enable_compilation_cache(_CONFIG.value.compilation_cache_dir)
    _JOIN_PROCESSES()
    distributed.configure_logging()
    with distributed.peers_checked():
      train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    interrupts.check()  # One swallowed whole after the loop: the resume has nothing to do.
    distributed.finish()  # With peers: not held at JAX's exit by one that has left.
    interrupts.ignore_stops()  # Everything is saved (a Ctrl-C was a traceback, status -2).
  except TrainingInterrupted as e:
    interrupts.ignore_stops()  # A second Ctrl-C while the stop is reported adds nothing.
    print(str(e), file=sys.stderr)
    distributed.leave(130)
  except BaseException as e:  # pylint: disable=broad-except
    stop = interrupts.interrupt_in(e)  # First: a library may turn a Ctrl-C into its error,
    if stop is None and isinstance(e, A2IError):  # and ours into an A2IError (review).
      _fail(str(e), at_once=True)  # PeerError included: at once, not at the exit barrier.
    if stop is None and is_out_of_memory(e):  # Was a traceback (review; infer.py's was one
      _fail(_out_of_memory_words(e), at_once=True)  # line already).
    if stop is None:
      distributed.leave_after(e)
    # A Ctrl-C or SIGTERM outside the loop (which saves, then raises the one above), also one
    # raised inside a callback from C. At once: Python's exit would first wait for the threads of a
    # dataset download under way (TFDS's), for minutes. Nothing is being saved here.
    # The newest checkpoint the last step's: the run may be finished (with peers, process 0
    # may have finished it; was "resume from step 6", and the rerun had nothing to do).
    print(interrupts.interrupted_words(_newest_step(), _num_train_steps()), file=sys.stderr)
    distributed.exit_now(130)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
