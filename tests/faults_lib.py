"""Shared pieces of the fault suite: the tiny command line, running train.py as a subprocess
with a fault injected at a chosen point, and reading back a run's final state.

Run as a script, this module is the subprocess: `python tests/faults_lib.py train.py ARGS`
runs train.py as `python train.py ARGS` would, after installing the fault that the
environment variable `A2I_FAULT` names ("kind:step"; in a multi-process run,
`A2I_FAULT_PROCESS` may name the one process that injects a step's fault):

  kill_after_step:N   SIGKILL once step N's metrics row is written (between checkpoints)
  kill_in_save:N      SIGKILL right after the checkpoint save of step N has started (Orbax is
                      writing it in the background), or when Orbax moves it into place,
                      whichever comes first
  kill_after_samples:N  SIGKILL once the evaluation's sample grid of step N is written and step
                      N's checkpoint is finished, before the step's validation scalars (its
                      training row is written before the checkpoint)
  kill_in_delete:N    SIGKILL in the middle of deleting an old checkpoint (max_to_keep), after
                      the save of step N: one of its files is gone, the rest are not
  sigint_at_step:N    a real SIGINT (Ctrl-C) to itself once step N's row is written
  sigterm_at_step:N   a real SIGTERM (a scheduler's notice) to itself, likewise
  sigint_in_report:N  sigint_at_step:N, and a second SIGINT while train.py reports the stop
  oom_at_step:N       JAX's RESOURCE_EXHAUSTED "Out of memory" once step N's row is written
  disk_full_at_save:N the checkpoint save of step N fails with ENOSPC, as Orbax's would
  hold_at_step:N      at step N, create WORKDIR/holding and wait until WORKDIR/release exists
  sigint_in_download:0  a real SIGINT while the dataset loads, with a thread still busy (as
                      TFDS's download threads are, for minutes) that Python's exit would wait for
  sigterm_in_download:0  the same with a SIGTERM
  sigint_in_probe:0   a real SIGINT while the entry point probes the CPU (the XLA flags, its
                      first seconds); also for infer.py (sigterm_in_probe: a SIGTERM;
                      swallowed_sigint_in_probe: the probe swallows the KeyboardInterrupt and
                      raises an error of its own, as jax 0.7.2's tracing does, which the
                      library wraps in an A2IError, as its restore does)
  read_only:0         WORKDIR behaves as a read-only folder (for root, who writes anywhere,
                      where no read-only file system can be mounted)
"""

import os
import runpy
import signal
import subprocess
import sys
import time

import launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# In a multi-process run, the one process whose write injects a step's fault (default: all).
FAULT_PROCESS_ENV = "A2I_FAULT_PROCESS"


def tiny_flags(data_cache: str, xla_cache: str, steps: int = 6) -> list[str]:
  """Command-line overrides of configs/synthetic.py that train in a few seconds.

  Args:
    data_cache: the session's synthetic-data cache.
    xla_cache: the session's persistent compilation cache (shared by every subprocess).
    steps: num_train_steps; a checkpoint every 2 steps, 2 kept, evaluation at the end.
  Returns:
    The flags.
  """
  return ["--config=configs/synthetic.py", "--config.model.width=0.125",
          "--config.model.z_dim=8", "--config.batch_size=8", f"--config.num_train_steps={steps}",
          "--config.log_every_steps=1", f"--config.eval_every_steps={steps}",
          "--config.checkpoint_every_steps=2", "--config.max_checkpoints_to_keep=2",
          "--config.num_eval_examples=8", "--config.num_sample_rows=2",
          "--config.num_sample_cols=2", "--config.data.synthetic.num_train=32",
          "--config.data.synthetic.num_validation=8", "--config.data.synthetic.num_test=8",
          f"--config.data.cache_dir={data_cache}", f"--config.compilation_cache_dir={xla_cache}",
          "--config.progress_bar=False"]


class Loaded(Exception):
  """Raised by `no_data_load`'s loader: the code under test got past its checks to the load."""


def no_data_load(monkeypatch, module) -> type:
  """Replaces `module.load_dataset` with one that raises `Loaded`, for tests of what is
  checked before any data are loaded (in process: no dataset is prepared or read).

  Returns:
    `Loaded`, to expect with pytest.raises.
  """
  def load(*args, **kwargs):
    raise Loaded
  monkeypatch.setattr(module, "load_dataset", load)
  return Loaded


def command(workdir: str, *flags: str, fault: str = "") -> list[str]:
  """The argv of a train.py run (through this module when a fault is to be injected)."""
  run = [os.path.join(ROOT, "train.py"), f"--workdir={workdir}", *flags]
  return [sys.executable, os.path.abspath(__file__), *run] if fault else [sys.executable, *run]


def environment(fault: str = "") -> dict:
  """The subprocess environment: this one (PYTHONPATH, the fake devices) plus the fault
  ("kind:step", or "kind:step@P" for process P only of a multi-process run)."""
  env = os.environ.copy()
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  env.pop("A2I_FAULT", None)
  env.pop(FAULT_PROCESS_ENV, None)
  fault, _, process = fault.partition("@")
  if process:
    env[FAULT_PROCESS_ENV] = process
  # The entry points would start over once with huge pages (a2i_jax/hugepages.py), importing
  # jax twice in every fault subprocess; tests/test_hugepages.py covers that path.
  env["A2I_HUGE_PAGES"] = "0"
  if fault:
    env["A2I_FAULT"] = fault
  # The persistent cache skips programs that compile in under a second by default; the tiny
  # ones do, and every subprocess compiles them again otherwise.
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  return env


def train(workdir: str, *flags: str, fault: str = "", timeout: float = 240,
          **popen) -> subprocess.CompletedProcess:
  """Runs train.py to its end (or its injected death).

  Args:
    workdir: --workdir.
    *flags: the other flags (`tiny_flags(...)` and overrides).
    fault: an `A2I_FAULT` value, or "" for none.
    timeout: seconds.
    **popen: passed to `subprocess.run` (e.g. `user=` to drop root).
  Returns:
    The completed process (text stdout / stderr).
  """
  if popen:
    return subprocess.run(command(workdir, *flags, fault=fault), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=environment(fault), **popen)
  # From a process that has imported the libraries already (tests/launcher.py says how that
  # run is the same as a new process's): 1.2-1.4 s less per run.
  return launcher.run(command(workdir, *flags, fault=fault), cwd=ROOT, env=environment(fault),
                      timeout=timeout)


def infer_options(*argv: str):
  """infer.py's Options for the command line `argv`, parsed by its own absl flags in this
  process (and put back to their defaults after): for tests that run `infer.run_modes` in
  process instead of starting infer.py."""
  import infer  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS(["infer.py", *argv])
  try:
    return infer.Options.from_flags()
  finally:
    flags.FLAGS.unparse_flags()


def error_lines(stderr: str) -> list[str]:
  """The lines of `stderr` that start with "error:"."""
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def warning_lines(stderr: str) -> list[str]:
  """absl's WARNING lines ("W1129 ...") of `stderr`."""
  return [line for line in stderr.splitlines() if line[:1] == "W" and line[1:5].isdigit()]


def read_rows(workdir: str) -> list[dict]:
  """The rows of a run's metrics.jsonl."""
  from a2i_jax import metrics  # pylint: disable=import-outside-toplevel
  return metrics.read_metrics(workdir)


def final_state(workdir: str, step=None):
  """The train state of a run's newest (or `step`'s) checkpoint, on the host.

  Args:
    workdir: the run's directory.
    step: which checkpoint; None for the newest intact.
  Returns:
    The `TrainState` restored as the run saved it.
  """
  # Imported here: the subprocess side of this module must not start JAX before train.py does.
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import (checkpoints, models, parallel,  # pylint: disable=import-outside-toplevel
                       train_state)
  config = checkpoints.load_config(workdir)
  model = models.create_model(config.model)
  abstract = train_state.abstract_train_state(model, config,
                                              train_state.make_optimizer(config))
  ckpt = checkpoints.Checkpointer(workdir, create=False)
  try:
    target = checkpoints.with_sharding(abstract, parallel.replicated(parallel.make_mesh()))
    return jax.device_get(ckpt.restore(target, step))
  finally:
    ckpt.close()


def as_an_older_version_saved_it(folder: str) -> None:
  """A step's folder as a version before checksums left it: no checksum file, and no mark in
  Orbax's metadata that it had one (this version's step without the file is corrupt)."""
  import json  # pylint: disable=import-outside-toplevel
  from a2i_jax import checkpoints  # pylint: disable=import-outside-toplevel
  os.remove(os.path.join(folder, checkpoints.CHECKSUM_FILE))
  path = os.path.join(folder, "_CHECKPOINT_METADATA")
  with open(path, encoding="utf-8") as f:
    meta = json.load(f)
  assert meta["custom_metadata"], meta  # The mark is there to take away.
  meta["custom_metadata"] = {}
  with open(path, "w", encoding="utf-8") as f:
    json.dump(meta, f)


def snapshot(folder: str, leave_out: tuple[str, ...] = ()) -> dict:
  """What is under `folder`, to compare before and after: {relative path: the file's bytes,
  or None for a folder}; the entries of `folder` named in `leave_out` (a run's .lock, whose
  text names its holder) and what they hold are left out. `folder` may be a `pathlib.Path`."""
  folder, found = os.fspath(folder), {}
  for root, dirs, names in os.walk(folder):
    if root == folder:
      dirs[:] = [d for d in dirs if d not in leave_out]
      names = [n for n in names if n not in leave_out]
    for name in dirs + names:
      path = os.path.join(root, name)
      if os.path.isdir(path):
        found[os.path.relpath(path, folder)] = None
      else:
        with open(path, "rb") as f:
          found[os.path.relpath(path, folder)] = f.read()
  return found


def assert_same_state(a, b) -> None:
  """Bit-identical train states (step, parameters, BatchNorm statistics, optimiser state)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------------------------
# The subprocess side: install the fault, then run train.py.

def _die(sig=signal.SIGKILL) -> None:
  os.kill(os.getpid(), sig)
  time.sleep(30)  # SIGKILL never returns; a handled signal lands here.


def _die_at_finalising_rename(step: int) -> None:
  """SIGKILL when Orbax renames step `step`'s temporary folder into place, should its
  background save get there before the main thread's kill after `save` returns: a tiny
  checkpoint finished first on a 2-core AMD EPYC, and nothing was left mid-save (2026-12-05).
  Orbax finalises with `os.rename` (through etils' local backend) on every supported version."""
  rename = os.rename
  prefix = f"{step}.orbax-checkpoint-tmp"

  def rename_or_die(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(src)).startswith(prefix):
      _die()
    return rename(src, dst, *args, **kwargs)
  os.rename = rename_or_die


def _chosen_process() -> bool:
  """Whether the fault is this process's: `FAULT_PROCESS_ENV` names one process of a
  multi-process run (default: every process)."""
  only = os.environ.get(FAULT_PROCESS_ENV)
  if only is None:
    return True
  from a2i_jax import distributed  # pylint: disable=import-outside-toplevel
  return distributed.process_index() == int(only)


def _install(kind: str, at: int, workdir: str) -> None:
  from a2i_jax import checkpoints, metrics  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  if kind == "sigint_in_report":
    from a2i_jax import errors  # pylint: disable=import-outside-toplevel
    text = errors.TrainingInterrupted.__str__

    def text_then(self):  # As a second Ctrl-C while train.py reports the stop would.
      os.kill(os.getpid(), signal.SIGINT)
      return text(self)
    errors.TrainingInterrupted.__str__ = text_then
    kind = "sigint_at_step"
  if kind in ("kill_after_step", "sigint_at_step", "sigterm_at_step", "hold_at_step",
              "sigint_twice_at_step", "oom_at_step"):
    write = metrics.MetricWriter.write

    fired = []

    def write_then(self, step, scalars):
      write(self, step, scalars)
      # Once: an evaluation's step writes its row twice (training, then validation merged).
      if step != at or not _chosen_process() or fired:
        return
      fired.append(step)
      if kind == "kill_after_step":
        _die()
      elif kind == "oom_at_step":  # As a device whose memory the step's buffers outgrew.
        import jax  # pylint: disable=import-outside-toplevel
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating "
                                         "395473490944 bytes.")
      elif kind in ("sigint_at_step", "sigterm_at_step"):
        # The handler notes it; the loop then stops.
        os.kill(os.getpid(), signal.SIGINT if kind == "sigint_at_step" else signal.SIGTERM)
      elif kind == "sigint_twice_at_step":  # The second before the stop's save is done.
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
      else:
        open(os.path.join(workdir, "holding"), "w").close()
        for _ in range(1200):
          if os.path.exists(os.path.join(workdir, "release")):
            break
          time.sleep(0.1)
    metrics.MetricWriter.write = write_then
  elif kind in ("kill_in_save", "disk_full_at_save"):
    save = ocp.CheckpointManager.save

    def save_then(self, step, *args, **kwargs):
      chosen = step == at and _chosen_process()  # Was: every process, whatever it named.
      if chosen and kind == "disk_full_at_save":
        raise OSError(28, "No space left on device", os.path.join(workdir, "checkpoints"))
      if chosen:
        _die_at_finalising_rename(at)
      out = save(self, step, *args, **kwargs)
      if chosen:
        _die()
      return out
    ocp.CheckpointManager.save = save_then
  elif kind == "kill_after_samples":
    from a2i_jax import train_eval  # pylint: disable=import-outside-toplevel
    write_samples = train_eval.write_samples

    def write_samples_then(*args):
      out = write_samples(*args)
      if f"step_{at:07d}" in os.fspath(args[-2]):
        # Once step N's checkpoint is finished and the old one it replaces deleted (Orbax does
        # both in the background): a resume starts from step N with the samples on disk and
        # the row not.
        ckpt_dir = os.path.join(workdir, "checkpoints")
        seen, still = None, 0
        for _ in range(600):
          names = sorted(os.listdir(ckpt_dir)) if os.path.isdir(ckpt_dir) else []
          done = str(at) in names and not any("tmp" in n for n in names)
          still = still + 1 if done and names == seen else 0
          if still >= 10:  # Unchanged for 0.5 s.
            break
          seen = names
          time.sleep(0.05)
        _die()
      return out
    train_eval.write_samples = write_samples_then
  elif kind == "disk_full_in_record":  # Before the loop: dataset.json's write fails.
    def full(*args, **kwargs):
      raise OSError(28, "No space left on device", os.path.join(workdir, "dataset.json"))
    checkpoints.save_dataset_info = full
  elif kind == "kill_in_delete":
    from orbax.checkpoint._src.path import deleter  # pylint: disable=import-outside-toplevel
    deleter_class = deleter.StandardCheckpointDeleter
    delete = deleter_class._delete_step_permanently  # pylint: disable=protected-access
    latest = {"step": None}
    save = checkpoints.Checkpointer.save

    def note(self, step, state):
      latest["step"] = step
      save(self, step, state)

    def delete_half(self, step, target):
      if latest["step"] == at:
        biggest = max((os.path.join(r, f) for r, _, fs in os.walk(str(target)) for f in fs),
                      key=os.path.getsize)
        os.remove(biggest)
        _die()
      delete(self, step, target)
    checkpoints.Checkpointer.save = note
    deleter_class._delete_step_permanently = delete_half  # pylint: disable=protected-access
  elif kind in ("sigint_in_probe", "sigterm_in_probe", "swallowed_sigint_in_probe"):
    from a2i_jax import perf  # pylint: disable=import-outside-toplevel

    def probing(*args, **kwargs):
      try:
        os.kill(os.getpid(), signal.SIGTERM if kind == "sigterm_in_probe" else signal.SIGINT)
        time.sleep(5)  # The probe's child takes seconds; the signal lands inside.
      except KeyboardInterrupt:
        if kind != "swallowed_sigint_in_probe":
          raise
      else:
        raise AssertionError("the signal did not stop the probe")
      # As jax 0.7.2's `Primitive.bind_with_trace` does with what its `typeof` raised: an
      # error of its own, outside the `except`, so that nothing leads back to the interrupt;
      # then wrapped as `Checkpointer.restore` wraps what Orbax raises.
      from a2i_jax import errors  # pylint: disable=import-outside-toplevel
      try:
        raise Exception("couldn't apply typeof to args")  # pylint: disable=W0719
      except Exception as e:  # pylint: disable=broad-except
        raise errors.CheckpointError(f"could not be restored ({e})") from None
    perf.set_recommended_xla_flags = probing
  elif kind in ("sigint_in_download", "sigterm_in_download"):
    from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
    load = train_lib.load_dataset

    def load_while_downloading(*args, **kwargs):
      import threading  # pylint: disable=import-outside-toplevel
      threading.Thread(target=time.sleep, args=(600,)).start()  # Not a daemon, as TFDS's.
      os.kill(os.getpid(), signal.SIGINT if kind == "sigint_in_download" else signal.SIGTERM)
      time.sleep(30)  # The KeyboardInterrupt lands here.
      return load(*args, **kwargs)
    train_lib.load_dataset = load_while_downloading
  elif kind == "read_only":
    inside = lambda path: os.path.abspath(os.fsdecode(path)).startswith(
        os.path.abspath(workdir))
    access, open_ = os.access, os.open
    os.access = lambda path, mode, **kw: (False if mode & os.W_OK and inside(path)
                                          else access(path, mode, **kw))

    def refuse(path, flags, *args, **kwargs):
      if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        raise OSError(30, "Read-only file system", path)
      return open_(path, flags, *args, **kwargs)
    os.open = refuse
  else:
    raise ValueError(f"unknown A2I_FAULT kind {kind!r}")


if __name__ == "__main__":
  script, args = sys.argv[1], sys.argv[2:]
  kind, _, at = os.environ.get("A2I_FAULT", "").partition(":")
  work = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
  sys.path.insert(0, ROOT)
  _install(kind, int(at), work)
  sys.argv = [script, *args]
  runpy.run_path(script, run_name="__main__")
