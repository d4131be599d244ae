"""Fault hunt of the Checkpointer's restore beside a training run that prunes its checkpoints,
and of train.py's --config flag given a run's record; storage errors' advice by errno where a
checkpoint, a prepared dataset copy, a sample grid or the workdir's lock meets one.
Library-level and fast: tiny pytrees saved in tmp_path, nothing trained or compiled."""

import errno
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2i_jax import checkpoints, files, interrupts
from a2i_jax.errors import CheckpointError, ConfigError, DataError, WorkdirError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}


@pytest.fixture(name="two_steps")
def _two_steps(tmp_path):
  """A workdir with checkpoints 1 and 2 (w = 1s, 2s), and a serving Checkpointer of it."""
  saver = checkpoints.Checkpointer(str(tmp_path), max_to_keep=None)
  for step in (1, 2):
    saver.save(step, {"w": jnp.full(3, float(step))})
  saver.close()
  ckpt = checkpoints.Checkpointer(str(tmp_path), create=False)
  yield ckpt
  ckpt.close()


def _remove_then(ckpt, step, call, whole=True):
  """`call` (a bound method), after removing checkpoint `step`'s folder (or, not `whole`, its
  arrays' folder: a removal under way)."""
  folder = os.path.join(ckpt.directory, str(step))

  def wrapped(*args, **kwargs):
    shutil.rmtree(folder if whole else os.path.join(folder, "default"))
    return call(*args, **kwargs)
  return wrapped


def _restore_removed(ckpt, step, there):
  """Restores checkpoint `step`, checking that it raises the error of one removed meanwhile."""
  with pytest.raises(CheckpointError) as info:
    ckpt.restore(TARGET, step)
  assert str(info.value) == (
      f"checkpoint {step} in {ckpt.directory} was removed while it was read: a training run in "
      "this workdir keeps only its newest checkpoints (config.max_checkpoints_to_keep). Run "
      "the same command again to read the newest one (a --step, or load_trained's step, must "
      f"name one there now: {there}).")
  assert isinstance(info.value, checkpoints.CheckpointRemovedError)
  assert isinstance(info.value, checkpoints.RestoreError) and info.value.step == step


@pytest.mark.parametrize("whole", [True, False])
def test_a_checkpoint_pruned_while_restored_is_said_removed_not_corrupt(two_steps, whole,
                                                                        monkeypatch):
  """Was (infer.py beside a training run keeping 1 checkpoint, 2-4 runs in 12): "the
  checkpoint at .../checkpoints/63 could not be restored (ValueError: Checkpoint directory does
  not exist ...). If it is corrupt, delete that folder ...", or TensorStore's internal text:
  no way for a caller to tell a pruned checkpoint from a damaged one, and retry."""
  ckpt = two_steps
  monkeypatch.setattr(ckpt._manager, "restore",
                      _remove_then(ckpt, 2, ckpt._manager.restore, whole))
  _restore_removed(ckpt, 2, "[1]" if whole else "[1, 2]")
  if whole:  # The caller's retry: the newest there now.
    assert ckpt.latest_step() == 1
    np.testing.assert_array_equal(ckpt.restore(TARGET, ckpt.latest_step())["w"], np.ones(3))


@pytest.mark.parametrize("whole", [True, False])
def test_a_checkpoint_pruned_while_its_checksums_are_checked_is_said_removed(two_steps, whole,
                                                                            monkeypatch):
  """Was: "no checkpoint for step 2 ..." (gone after the manager listed it), or "checkpoint 2
  is corrupt (file ... missing ...)" for a folder half deleted as it was checked."""
  ckpt = two_steps
  monkeypatch.setattr(checkpoints, "_file_digests",
                      _remove_then(ckpt, 2, checkpoints._file_digests, whole))
  _restore_removed(ckpt, 2, "[1]" if whole else "[1, 2]")
  monkeypatch.undo()
  if not whole:  # Was kept as corrupt by this checkpointer; a check now finds what is there.
    assert "missing" in ckpt.check(2)


def test_a_checkpoint_pruned_after_its_restore_gets_no_checksum_warning(two_steps, monkeypatch,
                                                                        caplog):
  """Was: "checkpoint 14 ... has no checksum file ... saved by a version before checksums, or
  the file was deleted" after a good restore, its folder pruned by training since."""
  ckpt = two_steps
  original = ckpt._manager.restore

  def restore_then_remove(*args, **kwargs):
    restored = original(*args, **kwargs)
    shutil.rmtree(os.path.join(ckpt.directory, "2"))
    return restored
  monkeypatch.setattr(ckpt._manager, "restore", restore_then_remove)
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(TARGET, 2)
  np.testing.assert_array_equal(restored["w"], np.full(3, 2.0))
  assert "checksum" not in caplog.text


def test_a_checkpoint_whose_pruning_stalled_is_said_removed_not_corrupt(two_steps,
                                                                         monkeypatch):
  """Was (load_trained beside a training run keeping 1 checkpoint on 2 cores, 1 in 249):
  "checkpoint 120 ... is corrupt (file _CHECKPOINT_METADATA is missing); no checkpoint there
  is intact": the pruner, stalled after its first file, had left a folder that looked damaged
  as it was checked. A file missing with a newer step beside it is watched for the rest of
  the removal; a step still there after the wait is corrupt, as before."""
  ckpt = two_steps
  folder = os.path.join(ckpt.directory, "1")
  os.remove(os.path.join(folder, "_CHECKPOINT_METADATA"))  # The pruner's first file.
  resumed = lambda _: shutil.rmtree(folder, ignore_errors=True)  # The pruner goes on.
  monkeypatch.setattr(checkpoints, "time", types.SimpleNamespace(
      monotonic=time.monotonic, sleep=resumed), raising=False)
  _restore_removed(ckpt, 1, "[2]")
  shutil.copytree(os.path.join(ckpt.directory, "2"), folder)
  os.remove(os.path.join(folder, "_CHECKPOINT_METADATA"))  # Deleted, and no pruner.
  monkeypatch.setattr(checkpoints, "time", time, raising=False)
  monkeypatch.setattr(checkpoints, "_PRUNE_WAIT_S", 0.05, raising=False)
  reader = checkpoints.Checkpointer(os.path.dirname(ckpt.directory), create=False)
  with pytest.raises(CheckpointError, match=r"checkpoint 1 .* is corrupt \(file "
                     r"_CHECKPOINT_METADATA is missing\)") as info:
    reader.restore(TARGET, 1)
  reader.close()
  assert type(info.value).__name__ != "CheckpointRemovedError"


def test_a_damaged_checkpoint_is_still_corrupt_not_removed(two_steps):
  """The fix above keeps a file changed in place for what it is: corrupt, the advice to move it
  away."""
  ckpt = two_steps
  folder = os.path.join(ckpt.directory, "2")
  arrays = sorted(os.path.join(root, n) for root, _, names in os.walk(folder)
                  for n in names if root != folder)
  with open(arrays[0], "ab") as f:
    f.write(b"x")
  with pytest.raises(CheckpointError, match=r"checkpoint 2 .* is corrupt") as info:
    ckpt.restore(TARGET, 2)
  assert type(info.value).__name__ != "CheckpointRemovedError"


@pytest.mark.parametrize("name", ["config.json", "record.txt"])
def test_train_py_refuses_a_runs_record_as_its_config(tmp_path, name):
  """Was: `train.py --config=RUN/config.json` "the config file .../config.json failed to load
  (NameError: name 'true' is not defined) at line 18; fix the error there": advice to edit
  the run's record. A record under another name (it parses as JSON) the same."""
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  run = tmp_path / "run"
  checkpoints.save_config(str(run), config_lib.get_config("configs/synthetic.py:cvae"))
  os.replace(run / checkpoints.CONFIG_FILE, run / name)
  before = (run / name).read_bytes()
  spec = f"{run / name}:cvae"
  import faults_lib  # pylint: disable=import-outside-toplevel
  import launcher  # pylint: disable=import-outside-toplevel
  r = launcher.run([sys.executable, "train.py", f"--config={spec}",
                    f"--workdir={tmp_path / 'new'}"], cwd=ROOT, timeout=120,
                   env=faults_lib.environment())  # The tests' fork server: imports done.
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1] == (
      f"error: --config={spec} is a JSON file, a run's record of its config (train.py writes "
      "config.json into the workdir, for infer.py), not a config file: pass a config file "
      "instead, e.g. --config=configs/synthetic.py, with --config.<key>=<value> for each "
      "setting to change (the same --workdir resumes that run).")
  assert "Traceback" not in r.stderr and "fix the error" not in r.stderr
  assert (run / name).read_bytes() == before and not (tmp_path / "new").exists()


def test_load_trained_reads_the_newest_again_after_a_prune(tiny_run, monkeypatch):
  """Was: infer.py beside a training run that keeps one checkpoint failed 2-6 times in 12,
  the newest pruned as it was read. `load_trained` reads the newest there again (not where
  a step was asked for: that one is gone)."""
  from a2i_jax.inference import restore  # pylint: disable=import-outside-toplevel
  workdir = tiny_run("cvae")[0]
  calls = []
  real = checkpoints.Checkpointer.restore

  def pruned_once(self, target, step=None, **kwargs):
    calls.append(step)
    if len(calls) == 1:
      raise checkpoints.CheckpointRemovedError("removed", "gone", step)
    return real(self, target, step, **kwargs)
  monkeypatch.setattr(checkpoints.Checkpointer, "restore", pruned_once)
  model = restore.load_trained(workdir)
  assert len(calls) == 2 and calls[0] == calls[1] == model.step
  calls.clear()
  with pytest.raises(checkpoints.CheckpointRemovedError):
    restore.load_trained(workdir, step=model.step)
  assert len(calls) == 1


def _prune_as_orbax_opens(monkeypatch, folder):
  """Removes `folder` (a step's) each time Orbax reads a step's commit time as it opens the
  checkpoints: after it listed the steps, as a training run's max_checkpoints_to_keep does.
  A step whose folder is gone then fails as Orbax's read of its time fails where it finds
  neither the step's metadata file nor its folder (`Path.stat`). Orbax's metadata store may
  answer from what it holds of the file (the fixture wrote it), so the failure is raised here
  for a folder that is gone, not left to that: the store's answer made the open succeed now
  and then under the suite's load (the test failed, "DID NOT RAISE", 2026-12-07)."""
  from orbax.checkpoint._src.path import step as step_lib  # pylint: disable=import-outside-toplevel
  read = step_lib.Metadata.commit_timestamp_nsecs.fget

  def pruned_meanwhile(metadata):
    shutil.rmtree(folder, ignore_errors=True)
    if not os.path.isdir(str(metadata.path)):
      raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(metadata.path))
    return read(metadata)
  monkeypatch.setattr(step_lib.Metadata, "commit_timestamp_nsecs", property(pruned_meanwhile))


def test_a_step_pruned_while_the_folder_is_opened_is_not_said_damaged(two_steps, monkeypatch):
  """Was (infer.py and load_trained beside a training run that keeps 1 checkpoint: 2 of 71
  loads, 3 of 4 infer.py runs with the prune injected): "Orbax cannot open the checkpoints in
  ... ([Errno 2] No such file or directory: '.../checkpoints/1'); a step folder there is
  damaged or not a checkpoint: move it away", the newest step intact. Opened again; pruned at
  every try, the error of a removed checkpoint."""
  directory = two_steps.directory
  one = os.path.join(directory, "1")
  shutil.copytree(one, os.path.join(os.path.dirname(directory), "1"))
  _prune_as_orbax_opens(monkeypatch, one)
  ckpt = checkpoints.Checkpointer(os.path.dirname(directory), create=False)
  assert ckpt.all_steps() == [2]
  np.testing.assert_array_equal(ckpt.restore(TARGET)["w"], np.full(3, 2.0))
  ckpt.close()
  shutil.copytree(os.path.join(os.path.dirname(directory), "1"), one)  # Pruned again at the
  # open's only try.
  monkeypatch.setattr(checkpoints, "_OPEN_TRIES", 1)
  with pytest.raises(CheckpointError) as info:
    checkpoints.Checkpointer(os.path.dirname(directory), create=False)
  assert isinstance(info.value, checkpoints.CheckpointRemovedError) and info.value.step == 1
  assert str(info.value) == (
      f"checkpoint 1 in {directory} was removed while it was read: a training run in this "
      "workdir keeps only its newest checkpoints (config.max_checkpoints_to_keep). Run the "
      "same command again to read the newest one (a --step, or load_trained's step, must name "
      "one there now: [2]).")


@pytest.mark.parametrize("when", ["during its check", "before its check"])
def test_a_step_pruned_beside_a_damaged_one_is_not_named_damaged(two_steps, monkeypatch, when):
  """Was: a step that a running train.py prunes as the folder that Orbax cannot open has its
  checksums checked was named beside the really damaged one as failing them ("checkpoint(s)
  2, 1 ... fail their checksums", a move for each), or, gone before its check, "no
  checkpoint for step 1". Only the damaged one is named; where the pruned step was the only
  one to fail, the folder is opened again."""
  directory = two_steps.directory
  two_steps.close()
  one, two = os.path.join(directory, "1"), os.path.join(directory, "2")
  digests = checkpoints._file_digests  # pylint: disable=protected-access

  def pruned_meanwhile(folder):  # A removal file by file, or the whole folder.
    if when == "during its check" and folder == one:
      shutil.rmtree(os.path.join(one, "default"), ignore_errors=True)
    elif when == "before its check" and folder == two:
      shutil.rmtree(one, ignore_errors=True)
    return digests(folder)
  monkeypatch.setattr(checkpoints, "_file_digests", pruned_meanwhile)
  kept = os.path.join(os.path.dirname(directory), "kept")
  shutil.copytree(directory, kept)
  with open(os.path.join(two, "_CHECKPOINT_METADATA"), "w", encoding="utf-8") as f:
    f.write("[]")  # Damaged: Orbax refuses the folder.
  with pytest.raises(CheckpointError) as info:
    checkpoints.Checkpointer(os.path.dirname(directory), create=False)
  message = str(info.value)
  assert message.startswith(
      f"checkpoint(s) 2 in {directory} fail their checksums (step 2: file "
      "_CHECKPOINT_METADATA changed since it was saved), and Orbax cannot open "), message
  assert f"move them away (mv {two} " in message and f"mv {one} " not in message
  shutil.rmtree(directory)
  shutil.copytree(kept, directory)
  manager = checkpoints.ocp.CheckpointManager
  opens = []

  def fails_once(*args, **kwargs):  # Orbax's open failing for another cause, once.
    opens.append(1)
    if len(opens) == 1:
      raise ValueError("cannot open")
    return manager(*args, **kwargs)
  monkeypatch.setattr(checkpoints.ocp, "CheckpointManager", fails_once)
  ckpt = checkpoints.Checkpointer(os.path.dirname(directory), create=False)
  assert len(opens) == 2  # Opened again, nothing named; step 1 half removed or gone.
  assert ckpt.all_steps() == ([1, 2] if when == "during its check" else [2])
  ckpt.close()


def test_a_step_pruned_as_the_steps_left_are_listed_again_is_no_traceback(two_steps,
                                                                            monkeypatch):
  """Was (load_trained beside a run keeping 1 checkpoint, 1 in 270 loads on the oldest pins):
  Orbax's traceback, "NotADirectoryError: Path is not a directory: .../checkpoints/161", from
  the reload that names the steps left after a checkpoint was removed as it was read, another
  step pruned as Orbax read them."""
  ckpt = two_steps
  digests = checkpoints._file_digests

  def pruned_twice(folder):
    shutil.rmtree(os.path.join(ckpt.directory, "2"))
    _prune_as_orbax_opens(monkeypatch, os.path.join(ckpt.directory, "1"))
    return digests(folder)
  monkeypatch.setattr(checkpoints, "_file_digests", pruned_twice)
  _restore_removed(ckpt, 2, "none")


def test_load_trained_opens_the_checkpoints_again_after_a_prune(tiny_run, monkeypatch):
  """Was: the Checkpointer opened once, before the retries, so a step pruned as it opened
  stopped load_trained (its retry covered the restore alone). Opened again, also for a
  `step` asked for (the step pruned at the open is another one)."""
  from a2i_jax.inference import restore  # pylint: disable=import-outside-toplevel
  workdir, step = tiny_run("cvae")
  opens = []
  real = checkpoints.Checkpointer._open_manager

  def pruned_once(self):
    opens.append(1)
    if len(opens) % 2:
      raise checkpoints.CheckpointRemovedError("removed", "gone", step - 1)
    return real(self)
  monkeypatch.setattr(checkpoints.Checkpointer, "_open_manager", pruned_once)
  assert restore.load_trained(workdir).step == step and len(opens) == 2
  assert restore.load_trained(workdir, step=step).step == step and len(opens) == 4


def test_orbax_leftovers_of_a_pruned_read_print_nothing_from_python(two_steps, monkeypatch,
                                                                    caplog):
  """Was: a notebook's load_trained beside a training run that pruned the checkpoint it read
  printed asyncio's "Task exception was never retrieved" (an Orbax read) and "Future exception
  was never retrieved" (TensorStore's, naming the step's folder) reports with their tracebacks
  and TensorStore specs, and Orbax's "Metadata file does not exist" warnings: 1,234 lines in 69
  loads (and "Failed to read Metadata file", an error, opening beside it); only the entry
  points filtered them. Dropped from the checkpoints' open on, for its folder alone; asyncio's
  and absl's other records pass, also asyncio's reports of Orbax's failures in other folders (a
  caller's own Orbax work; a read-through found those dropped too)."""
  monkeypatch.setattr(checkpoints, "_OPENED_FOLDERS", set(), raising=False)
  loggers = [logging.getLogger(name) for name in ("asyncio", "absl")]
  for logger in loggers:
    monkeypatch.setattr(logger, "filters", [])  # Put back as they were afterwards.
  directory = two_steps.directory
  orbax_file = os.path.join(checkpoints._ORBAX_DIR, "checkpoint", "_src", "serialization.py")

  def log_all():
    asyncio_logger = logging.getLogger("asyncio")
    for coroutine, where, folder in (
        ("async_deserialize", orbax_file, os.path.join(directory, "2", "default")),
        ("async_deserialize", orbax_file, "/my/own/orbax"), ("mine", "/mine.py", "/mine")):
      error = ValueError(f'NOT_FOUND: Error opening "w" at local file "{folder}/"')
      asyncio_logger.error("Task exception was never retrieved\nfuture: <Task finished coro=<"
                           "%s() done, defined at %s:394> exception=Exception('...')>",
                           coroutine, where, exc_info=(ValueError, error, None))
    for folder in (os.path.join(directory, "2", "default"), "/my/own/folder"):
      error = ValueError(f'FAILED_PRECONDITION: Error reading "w/0" at local file "{folder}/"')
      asyncio_logger.error("Future exception was never retrieved\nfuture: <Future finished "
                           "exception=%r>", error, exc_info=(ValueError, error, None))
    for folder in (os.path.join(directory, "1"), "/my/own/folder"):
      path = os.path.join(folder, "_CHECKPOINT_METADATA")
      loggers[1].handle(logging.LogRecord("absl", logging.WARNING, orbax_file, 202,
                                          "Metadata file does not exist: %s", (path,), None))
      gone = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
      loggers[1].handle(logging.LogRecord("absl", logging.ERROR, orbax_file, 210,
                                          "Failed to read Metadata file: %s, error: %s",
                                          (path, gone), None))
  with caplog.at_level(logging.WARNING):
    log_all()  # Nothing opened in this process: all pass.
    assert caplog.text.count("never retrieved") == 5 and caplog.text.count("Metadata") == 4
    caplog.clear()
    ckpt = checkpoints.Checkpointer(os.path.dirname(directory), create=False)
    with pytest.raises(checkpoints.RestoreError):  # Not its shape.
      ckpt.restore({"w": jax.ShapeDtypeStruct((4,), jnp.float32)}, 2)
    ckpt.close()
    log_all()
  assert caplog.text.count("never retrieved") == 3, caplog.text
  assert "mine()" in caplog.text and 'local file "/my/own/folder/"' in caplog.text
  assert 'local file "/my/own/orbax/"' in caplog.text
  assert "Metadata file does not exist: /my/own/folder" in caplog.text
  assert "Failed to read Metadata file: /my/own/folder" in caplog.text
  assert directory not in caplog.text


def test_get_config_refuses_a_runs_record(tmp_path):
  """Was: `config_lib.get_config("run/config.json")` (the Python API's load of a config)
  "failed to load (NameError: name 'true' is not defined) ... fix the error there", as
  train.py's flag did: a run's record is named as such, with a config file to load."""
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  run = tmp_path / "run"
  checkpoints.save_config(str(run), config_lib.get_config("configs/synthetic.py:cvae"))
  path = run / checkpoints.CONFIG_FILE
  assert config_lib.run_record_example(str(path)) == "configs/synthetic.py"
  with pytest.raises(ConfigError) as e:
    config_lib.get_config(f"{path}:cvae")
  assert str(e.value) == (
      f"{path} is a JSON file, a run's record of its config (train.py writes config.json into "
      "the workdir, for infer.py), not a config file: load a config file instead, e.g. "
      "configs/synthetic.py, and change its settings there (`inference.load_trained` serves "
      "the run itself).")
  assert config_lib.run_record_example(os.path.join(ROOT, "configs", "lfw.py")) is None


NAMES = ["smile", "face_width", "skin_tone"]
MODEL = {"name": "cvae", "width": 0.125}  # A model section as the record keeps it.
# The last fix of each refusal of dataset.json: what deleting it does (was "infer.py then uses
# the dataset's current columns", untrue where the checkpoints record the order).
DELETE_FIX = ("delete it (training writes it again on its next start; without it, training "
              "and inference take the attributes in the order the newest checkpoint records, "
              "or, for checkpoints of an older version that record none, in the dataset's "
              "current order).")


def _write_record(workdir, names=NAMES, header=None, swap=()):
  """dataset.json as training writes it for attributes `names` (header: `header`, else the
  names), with the entries of each key in `swap` (a hand edit) swapped at 0 and 1."""
  info = {"name": "synthetic", "attribute_names": list(names),
          "attribute_kinds": ["continuous", "binary"] + ["binary"] * (len(names) - 2),
          "attribute_ranges": [[-1.0, 1.0], [0.0, 1.0]] + [[0.0, 1.0]] * (len(names) - 2),
          "header": list(header or names)}
  for key in swap:
    info[key][0], info[key][1] = info[key][1], info[key][0]
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, checkpoints.DATASET_FILE), "w") as f:
    json.dump(info, f)


def test_dataset_json_whose_names_left_its_headers_order_is_refused(tmp_path):
  """Was (fault hunt): a dataset.json whose attribute_names (with their kinds and ranges) were
  swapped by hand was served and trained on without a word, each value fed to the model as
  the other attribute's (a resume said only "the dataset's columns moved"), its header still
  in the trained order. Refused, naming the file, the first name out of place and the fix;
  the order the newest checkpoint records, where one does."""
  workdir = str(tmp_path / "run")
  _write_record(workdir, swap=("attribute_names", "attribute_kinds", "attribute_ranges"))
  path = os.path.join(workdir, checkpoints.DATASET_FILE)
  said = (f"{path} is damaged: its attribute_names are not in its header's order (its "
          "attribute 1 is 'face_width', the header's 'smile'), so it was edited since training "
          "wrote it, and values would be fed to the model as other attributes'; restore it from "
          "a copy, or put its attribute_names in the order ")
  fix = (", each attribute_kinds and attribute_ranges entry moved with its name, and the "
         "attribute columns of its header in that order too (its other columns where they "
         f"are), or {DELETE_FIX}")
  with pytest.raises(ConfigError) as e:
    checkpoints.load_dataset_info(workdir)
  assert str(e.value) == said + "the model was trained with" + fix
  _write_record(workdir)  # A checkpoint saved with the file as training wrote it.
  saver = checkpoints.Checkpointer(workdir, model=MODEL)
  saver.save(4, {"w": jnp.ones(3)})
  saver.close()
  _write_record(workdir, swap=("attribute_names", "attribute_kinds", "attribute_ranges"))
  record = os.path.join(workdir, "checkpoints", "4", checkpoints.MODEL_RECORD_FILE)
  with pytest.raises(ConfigError) as e:
    checkpoints.load_dataset_info(workdir)
  assert str(e.value) == (said + "checkpoint 4 records as trained (smile, face_width, ...; all "
                          f"in {record})" + fix)
  # A folder's header keeps its other columns, and names that are not attributes now.
  _write_record(workdir, header=["filename", "smile", "face_width", "split", "skin_tone"])
  assert checkpoints.load_dataset_info(workdir)["attribute_names"] == NAMES
  _write_record(workdir, header=["filename", "grin", "face_width", "skin_tone"])
  assert checkpoints.load_dataset_info(workdir)["attribute_names"] == NAMES


def test_a_checkpoint_records_the_attribute_order_and_a_restore_compares_it(tmp_path):
  """Was (fault hunt): dataset.json is a plain file, and an edit of its attribute order (its
  header too) was used by a restore without a word, each value fed as the other attribute's.
  Each save records dataset.json's attribute names with the model section
  (`MODEL_RECORD_FILE`), and a restore with `model` compares them: another order, or other
  names, are refused. Not checked: a checkpoint without them (an older version's), or a
  checkpointer without `model`."""
  workdir = str(tmp_path / "run")
  _write_record(workdir)
  saver = checkpoints.Checkpointer(workdir, max_to_keep=None, model=MODEL)
  saver.save(1, {"w": jnp.ones(3)})
  _write_record(workdir, names=["a", "b", "c"])  # Read once: a later edit is not recorded.
  saver.save(2, {"w": jnp.ones(3)})
  saver.close()
  folder = lambda step: os.path.join(workdir, "checkpoints", str(step))
  _write_record(workdir, swap=("attribute_names", "attribute_kinds", "attribute_ranges",
                               "header"))  # Consistent in itself, not with the checkpoint.
  ckpt = checkpoints.Checkpointer(workdir, create=False, model=MODEL)
  with pytest.raises(ConfigError) as e:
    ckpt.restore(TARGET, 2)
  assert checkpoints.recorded_attributes(folder(1)) == NAMES
  assert checkpoints.recorded_attributes(folder(2)) == NAMES
  path = os.path.join(workdir, checkpoints.DATASET_FILE)
  record = os.path.join(folder(2), checkpoints.MODEL_RECORD_FILE)
  assert str(e.value) == (
      f"{path} lists the attributes in another order than checkpoint 2 was trained with "
      f"(attribute 1 is 'face_width' there, 'smile' in the checkpoint; its order is in "
      f"{record}), so values would be fed to the model as other attributes'; the file was "
      "edited, or written anew, since: restore it from a copy, or put its attribute_names in "
      "the checkpoint's order, each attribute_kinds and attribute_ranges entry moved with its "
      "name, and the attribute columns of its header in that order too (its other columns "
      f"where they are), or {DELETE_FIX}")
  _write_record(workdir, names=["grin", "face_width", "skin_tone"])
  with pytest.raises(ConfigError, match=r"lists other attributes than checkpoint 2 was trained "
                     r"with \('grin', 'smile' in one but not the other; the checkpoint's are "
                     r"in .*a2i_model.json\): the file is another run's, or was edited since"):
    ckpt.restore(TARGET, 2)
  ckpt.close()
  plain = checkpoints.Checkpointer(workdir, create=False)  # No model: nothing compared.
  np.testing.assert_array_equal(plain.restore(TARGET, 2)["w"], np.ones(3))
  plain.close()
  _write_record(workdir)  # As trained: restored.
  ckpt = checkpoints.Checkpointer(workdir, create=False, model=MODEL)
  np.testing.assert_array_equal(ckpt.restore(TARGET, 1)["w"], np.ones(3))
  ckpt.close()
  older = str(tmp_path / "older")  # Saved without dataset.json: no names, not compared.
  saver = checkpoints.Checkpointer(older, model=MODEL)
  saver.save(1, {"w": jnp.ones(3)})
  saver.close()
  assert checkpoints.recorded_attributes(os.path.join(older, "checkpoints", "1")) is None
  _write_record(older, swap=("attribute_names", "attribute_kinds", "attribute_ranges",
                             "header"))
  ckpt = checkpoints.Checkpointer(older, create=False, model=MODEL)
  np.testing.assert_array_equal(ckpt.restore(TARGET, 1)["w"], np.ones(3))
  ckpt.close()


def test_a_trained_runs_swapped_attribute_order_is_refused_by_load_trained(tiny_run,
                                                                          tmp_path):
  """The fault hunt's case end to end: a run train_lib wrote, its dataset.json's first two
  attributes swapped (names, kinds, ranges; then the header too). Was: served without a word
  (the images differ; the JSON labels values by the wrong names). Refused by the file's own
  header, then by the order the checkpoint records."""
  from a2i_jax.inference import restore  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  shutil.copytree(tiny_run("cvae")[0], workdir)
  path = os.path.join(workdir, checkpoints.DATASET_FILE)
  with open(path) as f:
    info = json.load(f)
  for keys, says in ((("attribute_names", "attribute_kinds", "attribute_ranges"),
                      "is damaged: its attribute_names are not in its header's order"),
                     (("header",), "lists the attributes in another order than checkpoint")):
    for key in keys:
      info[key][0], info[key][1] = info[key][1], info[key][0]
    with open(path, "w") as f:
      json.dump(info, f)
    with pytest.raises(ConfigError, match=re.escape(f"{path} {says}")):
      restore.load_trained(workdir)


@pytest.mark.parametrize("name", [checkpoints.DATASET_FILE, checkpoints.CONFIG_FILE])
@pytest.mark.parametrize("damage", ["folder", "deep"])
def test_a_run_record_that_is_a_folder_or_nested_too_deep_is_one_config_error(tmp_path, name,
                                                                             damage):
  """Was (fault hunt): infer.py's traceback for a dataset.json that is a folder
  (IsADirectoryError: `load_dataset_info` caught only FileNotFoundError) or JSON nested past
  Python's recursion limit ('[' * 200000: a RecursionError), and for such a config.json (a
  folder there was an error already). Now each file's damage message."""
  path = tmp_path / name
  if damage == "folder":
    path.mkdir()
  else:
    path.write_text("[" * 200000)
  deep = "nested deeper than Python's JSON parser goes"
  with pytest.raises(ConfigError) as e:
    if name == checkpoints.DATASET_FILE:
      checkpoints.load_dataset_info(str(tmp_path))
    else:
      checkpoints.load_config(str(tmp_path))
  if name == checkpoints.DATASET_FILE:
    fix = DELETE_FIX
    assert str(e.value) == (f"{path} is a folder, not a file; move it away or {fix}"
                            if damage == "folder" else f"{path} is unreadable ({deep}); {fix}")
  else:
    assert str(e.value) == (
        f"the config at {path} "
        f"{'is a folder, not a file' if damage == 'folder' else f'is not valid JSON ({deep})'}; "
        f"{checkpoints.DAMAGED_CONFIG_FIX}")


def _info(workdir):
  with open(os.path.join(workdir, checkpoints.DATASET_FILE)) as f:
    return json.load(f)


def test_a_vae_records_and_compares_no_attribute_names(tmp_path):
  """Was (review): a VAE's checkpoints recorded dataset.json's attribute names and a restore
  compared them, so a VAE run whose dataset.json was reordered consistently (names, kinds,
  ranges and header) was refused, "values would be fed to the model as other attributes'":
  the VAE is fed none, and was served before. Neither recorded nor compared now, nor taken
  from the record of a version that recorded them."""
  from a2i_jax import files  # pylint: disable=import-outside-toplevel
  vae = {"name": "vae", "width": 0.125}
  workdir = str(tmp_path / "run")
  _write_record(workdir)
  saver = checkpoints.Checkpointer(workdir, max_to_keep=None, model=vae)
  for step in (1, 2):
    saver.save(step, {"w": jnp.ones(3)})
  saver.close()
  folder = os.path.join(workdir, "checkpoints", "1")
  path = os.path.join(folder, checkpoints.MODEL_RECORD_FILE)
  with open(path) as f:
    record = json.load(f)
  assert "attribute_names" not in record and record["model"] == vae
  # Step 2 as the version that recorded them for a VAE saved it (its checksums say so).
  folder = os.path.join(workdir, "checkpoints", "2")
  with open(os.path.join(folder, checkpoints.MODEL_RECORD_FILE), "w") as f:
    json.dump(dict(record, attribute_names=NAMES), f)
  sums = checkpoints._read_checksums(folder)  # pylint: disable=protected-access
  del sums[checkpoints.MODEL_RECORD_FILE]
  files.write_digests(os.path.join(folder, checkpoints.CHECKSUM_FILE), sums)
  checkpoints._write_checksums(folder)  # pylint: disable=protected-access
  assert checkpoints.recorded_attributes(folder) is None
  _write_record(workdir, swap=("attribute_names", "attribute_kinds", "attribute_ranges",
                               "header"))  # Reordered consistently: nothing the VAE is fed.
  ckpt = checkpoints.Checkpointer(workdir, create=False, model=vae)
  for step in (1, 2):
    np.testing.assert_array_equal(ckpt.restore(TARGET, step)["w"], np.ones(3))
  ckpt.close()
  assert not checkpoints.uses_attributes(vae) and checkpoints.uses_attributes(MODEL)


def _follow_the_advice(workdir, order):
  """Does what the refusals of dataset.json advise, word for word: its attribute_names put in
  `order`, each attribute_kinds and attribute_ranges entry moved with its name, and the
  attribute columns of its header in that order too (its other columns where they are)."""
  info = _info(workdir)
  at = {name: i for i, name in enumerate(info["attribute_names"])}
  for key in ("attribute_kinds", "attribute_ranges"):
    info[key] = [info[key][at[name]] for name in order]
  info["attribute_names"] = list(order)
  columns = iter(order)
  info["header"] = [next(columns) if h in at else h for h in info["header"]]
  with open(os.path.join(workdir, checkpoints.DATASET_FILE), "w") as f:
    json.dump(info, f)


@pytest.mark.parametrize("edited", ["both", "header"])
def test_the_attribute_order_advice_followed_word_for_word_serves(tmp_path, edited):
  """Was (review): a dataset.json written anew in another order than a checkpoint records
  (names and header agreeing, as `record_dataset` writes them from a reordered CSV) was
  refused with "put its attribute_names back in the checkpoint's order"; done, its header
  then disagreed, and `load_dataset_info` called the file damaged, advising the order the
  names had already. A header edited alone got advice to put the names in the order they
  had. The advice names the header's columns now: followed, the file loads and the
  checkpoint restores."""
  workdir = str(tmp_path / "run")
  header = ["filename", "smile", "face_width", "split", "skin_tone"]
  _write_record(workdir, header=header)
  saver = checkpoints.Checkpointer(workdir, model=MODEL)
  saver.save(4, {"w": jnp.ones(3)})
  saver.close()
  swapped = ["filename", "face_width", "smile", "split", "skin_tone"]
  if edited == "both":  # Written anew from the reordered columns (every key in their order).
    _write_record(workdir, header=swapped,
                  swap=("attribute_names", "attribute_kinds", "attribute_ranges"))
    before = _info(workdir)
    ckpt = checkpoints.Checkpointer(workdir, create=False, model=MODEL)
    with pytest.raises(ConfigError, match=re.escape(
        "put its attribute_names in the checkpoint's order, each attribute_kinds and "
        "attribute_ranges entry moved with its name, and the attribute columns of its header "
        "in that order too (its other columns where they are)")):
      ckpt.restore(TARGET, 4)
    ckpt.close()
  else:  # The header's first two columns swapped by hand.
    _write_record(workdir, header=swapped)
    before = None
    with pytest.raises(ConfigError, match=re.escape(
        "put its attribute_names in the order checkpoint 4 records as trained (smile, "
        "face_width, ...; all in ")):
      checkpoints.load_dataset_info(workdir)
  _follow_the_advice(workdir, NAMES)
  info = checkpoints.load_dataset_info(workdir)
  assert info["header"] == header and info["attribute_names"] == NAMES
  if before is not None:  # Each kind and range moved with its name.
    assert info["attribute_kinds"] == ["continuous", "binary", "binary"] != before[
        "attribute_kinds"]
    assert info["attribute_ranges"] == [[-1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
  ckpt = checkpoints.Checkpointer(workdir, create=False, model=MODEL)
  np.testing.assert_array_equal(ckpt.restore(TARGET, 4)["w"], np.ones(3))
  ckpt.close()


def test_a_resume_without_dataset_json_takes_the_order_its_checkpoints_record(tmp_path,
                                                                              caplog):
  """Was (review): a resumed run whose dataset.json was deleted fed the folder's columns in
  their order of now, warned that it "cannot be checked against the order the model learnt"
  (the checkpoints record it), and wrote that order into a new dataset.json as the trained
  one. Now `align_with_record` puts the columns in the order the newest checkpoint records
  (other names are refused), the warning says so, and the new dataset.json, its header's
  attribute columns in that order, loads and matches the checkpoint."""
  from a2i_jax import train_eval  # pylint: disable=import-outside-toplevel
  from a2i_jax.data.base import Dataset, Split  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "run")
  _write_record(workdir)
  saver = checkpoints.Checkpointer(workdir, model=MODEL)
  saver.save(4, {"w": jnp.ones(3)})
  saver.close()
  os.remove(os.path.join(workdir, checkpoints.DATASET_FILE))
  attributes = np.array([[0.5, 1, 0], [-0.5, 0, 1]], np.float32)  # In NAMES' order.
  split = Split(np.zeros((2, 4, 4, 3), np.uint8), attributes[:, [1, 0, 2]])
  moved = Dataset("folder", ("face_width", "smile", "skin_tone"),
                  ("binary", "continuous", "binary"), {"train": split},
                  {"header": ["filename", "face_width", "smile", "skin_tone"]})
  aligned = train_eval.align_with_record(workdir, moved)
  assert list(aligned.attribute_names) == NAMES
  np.testing.assert_array_equal(aligned["train"].attributes, attributes)
  caplog.clear()
  with caplog.at_level("WARNING"):
    train_eval.record_dataset(workdir, aligned, "", resumed=True)
  assert [r.getMessage() for r in caplog.records] == [
      f"{workdir} has checkpoints but no dataset.json: the attributes are taken in the order "
      "checkpoint 4 records as trained (smile, face_width, skin_tone), whatever their order "
      "in the data now; dataset.json is written from them"]
  info = checkpoints.load_dataset_info(workdir)
  assert info["attribute_names"] == NAMES
  assert info["header"] == ["filename", "smile", "face_width", "skin_tone"]
  ckpt = checkpoints.Checkpointer(workdir, create=False, model=MODEL)
  np.testing.assert_array_equal(ckpt.restore(TARGET, 4)["w"], np.ones(3))
  ckpt.close()
  os.remove(os.path.join(workdir, checkpoints.DATASET_FILE))
  renamed = Dataset("folder", ("face_width", "grin", "skin_tone"), moved.attribute_kinds,
                    {"train": split})
  with pytest.raises(DataError, match="not those the model was trained with"):
    train_eval.align_with_record(workdir, renamed)


def test_serving_without_dataset_json_takes_the_order_the_checkpoint_records(
    tiny_run, tmp_path, monkeypatch, caplog):
  """Was (review): with dataset.json deleted, `load_trained` knew no attribute names and
  `load_data` / `load_run_data` (infer.py's) gave the data's columns in their order of now,
  though the checkpoint records the trained one. Now the names are the checkpoint's, and
  the data are put in that order by name, with one warning saying so."""
  from a2i_jax.data.base import with_attribute_order  # pylint: disable=import-outside-toplevel
  from a2i_jax.inference import restore  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  shutil.copytree(tiny_run("cvae")[0], workdir)
  trained_names = _info(workdir)["attribute_names"]
  os.remove(os.path.join(workdir, checkpoints.DATASET_FILE))
  load = restore.load_dataset
  moved = [trained_names[1], trained_names[0], *trained_names[2:]]
  # The data with their first two columns swapped (a folder's CSV edited since).
  monkeypatch.setattr(restore, "load_dataset",
                      lambda *a: with_attribute_order(load(*a), moved))
  trained = restore.load_trained(workdir)
  assert list(trained.attribute_names) == trained_names
  expected = load(trained.config.data, False)["test"].attributes
  for data in (lambda: restore.load_data(trained),
               lambda: restore.load_run_data(trained.config, workdir)):
    caplog.clear()
    with caplog.at_level("WARNING"):
      dataset = data()
    assert list(dataset.attribute_names) == trained_names
    np.testing.assert_array_equal(dataset["test"].attributes, expected)
    assert any("holds no dataset.json: the attributes are taken by name in the order "
               in r.getMessage() for r in caplog.records), caplog.text


# Storage errors' advice by errno (`files.storage_fix`): a read, a removal, the lock's open.
_EIO = "an input/output error: the disk or its connection failed"
_EIO_FIX = "check the disk (the system log, dmesg, says more)"


def _failing_open(monkeypatch, path, code):
  """`files`' own `open` raises `code` for `path` (its reads of checksum files), from now."""
  real = open

  def failing(p, *args, **kwargs):
    if p == path:
      raise OSError(code, os.strerror(code), p)
    return real(p, *args, **kwargs)
  monkeypatch.setattr(files, "open", failing, raising=False)


def test_an_unreadable_checksum_file_is_an_error_not_a_checkpoint_without_a_record(
    tmp_path, monkeypatch):
  """Was: a checksum file that could not be read (a failed disk, EIO; permissions, EACCES)
  read as none, and with it the model record it vouches for: a restore whose checksums were
  checked before (a flaky disk between the two reads; a checkpointer asked twice) compared
  neither the model nor the attribute order, and used the checkpoint beside a dataset.json in
  another order without a word. Every such read said "make the workdir readable", a failed
  disk too; a network file system's passing error (ESTALE) called the checkpoint corrupt.
  Now one line, with the advice of its errno."""
  workdir = str(tmp_path / "run")
  _write_record(workdir)
  saver = checkpoints.Checkpointer(workdir, model=MODEL)
  saver.save(1, {"w": jnp.ones(3)})
  saver.close()
  _write_record(workdir, swap=("attribute_names", "attribute_kinds", "attribute_ranges",
                               "header"))  # Consistent in itself, not with the checkpoint.
  folder = os.path.join(workdir, "checkpoints", "1")
  path = os.path.join(folder, checkpoints.CHECKSUM_FILE)
  ckpt = checkpoints.Checkpointer(workdir, create=False, model=MODEL)
  try:
    assert ckpt.check(1) is None
    with monkeypatch.context() as m:
      _failing_open(m, path, errno.EIO)  # After the check: the record's read fails.
      with pytest.raises(CheckpointError) as e:
        ckpt.restore(TARGET, 1)
      assert str(e.value) == f"could not read {path} ({_EIO}); {_EIO_FIX}, then try again."
      with pytest.raises(CheckpointError):  # Not "no record" (None): an older run's then.
        checkpoints.recorded_attributes(folder)
    with pytest.raises(ConfigError, match="lists the attributes in another order"):
      ckpt.restore(TARGET, 1)  # Readable again: refused, as it always was.
  finally:
    ckpt.close()
  ckpt = checkpoints.Checkpointer(workdir, create=False, model=MODEL)
  try:
    with monkeypatch.context() as m:  # The check's own read: permissions' advice.
      _failing_open(m, path, errno.EACCES)
      with pytest.raises(CheckpointError) as e:
        ckpt.check(1)
      assert str(e.value) == (f"could not read {path} (permission denied); fix the "
                              "permissions, then try again."), str(e.value)
    with monkeypatch.context() as m:  # Was: called corrupt (set aside by training).
      _failing_open(m, path, errno.ESTALE)  # A network file system's passing error.
      with pytest.raises(CheckpointError) as e:
        ckpt.check(1)
      assert str(e.value) == (f"could not read {path} ({os.strerror(errno.ESTALE)}); fix "
                              "what the system names, then try again."), str(e.value)
    with monkeypatch.context() as m:  # A file under the checksums: the disk's advice.
      digests = files.file_digests
      m.setattr(files, "file_digests", lambda f, *a, **k: (
          (_ for _ in ()).throw(OSError(errno.EIO, os.strerror(errno.EIO), f)) if f == folder
          else digests(f, *a, **k)))
      with pytest.raises(CheckpointError) as e:
        ckpt.check(1)
      assert str(e.value) == f"could not read {folder} ({_EIO}); {_EIO_FIX}, then try again."
  finally:
    ckpt.close()


def test_checkpoints_that_cannot_be_opened_for_reading_get_their_errnos_advice(
    tmp_path, monkeypatch):
  """Was (review of the errno advice): a storage error while Orbax opened the checkpoints was
  raised bare for training to word, so infer.py and the API, which read, ended in its
  traceback, a failed disk's (EIO, now a storage error) too. A reader's is one line now;
  training's still reaches the loop's words (it is raised as it is)."""
  workdir = str(tmp_path / "run")
  saver = checkpoints.Checkpointer(workdir)
  saver.save(1, {"w": jnp.ones(3)})
  saver.close()
  directory = os.path.join(workdir, "checkpoints")
  for code, fix in ((errno.EIO, _EIO_FIX), (errno.EACCES, "fix the permissions")):
    def refuse(*args, **kwargs):
      raise OSError(code, os.strerror(code), directory)
    with monkeypatch.context() as m:
      m.setattr(checkpoints.ocp, "CheckpointManager", refuse)
      with pytest.raises(CheckpointError) as e:
        checkpoints.Checkpointer(workdir, create=False)
      assert str(e.value) == (f"could not read {directory} "
                              f"({files.describe_storage_error(OSError(code, ''))}); {fix}, "
                              "then try again."), str(e.value)
      with pytest.raises(OSError) as e:  # Training's: as it is, for the loop's line.
        checkpoints.Checkpointer(workdir)
      assert e.value.errno == code and not isinstance(e.value, CheckpointError)


def test_a_save_whose_checksum_file_reads_with_a_passing_error_still_finishes(tmp_path,
                                                                             monkeypatch):
  """Was (review of the errno advice): a save rewrites its step's checksum file from the one
  there, and any error reading it but a folder at its path was raised, so a network file
  system's passing ESTALE (or too many open files) stopped a save that used to finish with a
  traceback. Such an error means recompute (the file is rewritten from the step's files); a
  failed disk's still stops the save, for the loop's line. Too many open files (EMFILE) was
  raised again once it became a storage error for writes (review of 5a67595)."""
  for code in (errno.ESTALE, errno.EMFILE):
    workdir = str(tmp_path / errno.errorcode[code])
    path = os.path.join(workdir, "checkpoints", "1", checkpoints.CHECKSUM_FILE)
    real = open

    def failing(p, *args, code=code, path=path, real=real, **kwargs):  # The save's second
      if p == path and os.path.exists(p):  # write, once the file is there.
        raise OSError(code, os.strerror(code), p)
      return real(p, *args, **kwargs)
    monkeypatch.setattr(files, "open", failing, raising=False)
    saver = checkpoints.Checkpointer(workdir)
    saver.save(1, {"w": jnp.ones(3)})
    saver.close()
    monkeypatch.undo()
    assert files.read_digests(path), code  # Written whole.
    assert checkpoints.Checkpointer(workdir, create=False).check(1) is None
  read = checkpoints._read_checksums  # pylint: disable=protected-access
  _failing_open(monkeypatch, path, errno.EIO)
  with pytest.raises(OSError) as e:  # The disk's own: the save stops, for the loop's line.
    read(os.path.dirname(path), reading=False)
  assert e.value.errno == errno.EIO and not isinstance(e.value, CheckpointError)


def test_a_prepared_copy_that_cannot_be_read_gets_its_errnos_advice(tmp_path, monkeypatch):
  """Was: "make it readable" for a prepared dataset copy that could not be read, a failed
  disk's (EIO) too, both where its checksum file is read and where TFDS reads the copy."""
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  where = str(tmp_path)
  said = f"could not read the prepared copy of the dataset at {where} "
  _failing_open(monkeypatch, os.path.join(where, tfds_lib.CHECKSUM_FILE), errno.EIO)
  with pytest.raises(DataError) as e:
    tfds_lib._check_copy(where)  # pylint: disable=protected-access
  assert str(e.value) == f"{said}({_EIO}); {_EIO_FIX}, then run the same command again."
  monkeypatch.undo()  # Too many open files: was "damaged; delete that folder", then "fix
  # what the system names": now the limit to raise (fault hunt of resource exhaustion).
  _failing_open(monkeypatch, os.path.join(where, tfds_lib.CHECKSUM_FILE), errno.EMFILE)
  with pytest.raises(DataError) as e:
    tfds_lib._check_copy(where)  # pylint: disable=protected-access
  assert str(e.value) == (f"{said}(too many files are open in this process, over its limit "
                          "(ulimit -n)); raise the limit of open files (ulimit -n 4096, or "
                          "more), then run the same command again."), str(e.value)
  with pytest.raises(ValueError, match="is unreadable"):  # A folder there: damage still.
    files.read_digests(where)
  with pytest.raises(DataError) as e:
    with tfds_lib.damage_is_an_error(where):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), where)
  assert str(e.value) == (f"{said}(permission denied); fix the permissions, then run the same "
                          "command again.")


def test_a_sample_grid_that_cannot_be_removed_gets_its_errnos_advice(tmp_path, monkeypatch):
  """Was: "remove it yourself (or fix the permissions)" for a sample grid a resumed run could
  not remove, whatever the errno: a failed disk, a busy file."""
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  drop = train_lib._drop_samples_after  # pylint: disable=protected-access
  (tmp_path / "samples").mkdir()
  grid = tmp_path / "samples" / "step_0000006.png"
  grid.write_bytes(b"png")
  said = (f"could not remove {grid} ({{}}), the sample grid of a step after 4, which this run "
          "resumes from and trains again; {}, then run the same command again.")
  for code, words, fix in ((errno.EIO, _EIO, f"{_EIO_FIX}, or remove it yourself"),
                           (errno.EROFS, "the file system is read-only",
                            "make the file system writable, or remove it yourself"),
                           (errno.EBUSY, os.strerror(errno.EBUSY), "remove it yourself")):
    with monkeypatch.context() as m:
      m.setattr(os, "remove", lambda p, c=code: (_ for _ in ()).throw(
          OSError(c, os.strerror(c), p)))
      with pytest.raises(WorkdirError) as e:
        drop(str(tmp_path), 4, lambda s: True)
    assert str(e.value) == said.format(words, fix), str(e.value)
  assert grid.exists()


def test_a_workdir_whose_lock_cannot_be_made_gets_its_errnos_advice(tmp_path, monkeypatch):
  """Was: the system's words and "pass a --workdir you can write to" alone for a lock file
  or workdir that could not be made, a full disk's and a failed disk's too."""
  workdir = str(tmp_path / "w")
  for code, words, fix in ((errno.EIO, _EIO, f"{_EIO_FIX} or "),
                           (errno.ENOSPC, "no space left on the device", "free some space or "),
                           (errno.ENAMETOOLONG, "a path is longer than the file system "
                            "allows", "use a shorter path or "),
                           (errno.EEXIST, os.strerror(errno.EEXIST), "")):
    with monkeypatch.context() as m:
      m.setattr(files, "_open_lock_file", lambda p, c=code: (_ for _ in ()).throw(
          OSError(c, os.strerror(c), p)))
      with pytest.raises(WorkdirError) as e:
        with files.workdir_lock(workdir):
          pass
    assert str(e.value) == (f"cannot write to {workdir} ({words}); {fix}pass a --workdir you "
                            "can write to."), str(e.value)
    assert not os.path.exists(workdir)  # Taken back.


def test_a_step_linked_from_another_run_is_refused_before_training(tmp_path, monkeypatch):
  """Was: checkpoints/2 a symbolic link to another run's step resumed, then Orbax's retention
  (max_checkpoints_to_keep) stopped that run and every rerun with "OSError: Cannot call rmtree
  on a symbolic link"'s traceback at a save's cleanup. Refused before the data load with the
  command that copies it in; followed, the run prunes its own copy and the other run keeps
  its step. Serving reads through the link (a restore never deletes)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel

  import faults_lib  # pylint: disable=import-outside-toplevel
  Loaded = faults_lib.no_data_load(monkeypatch, train_lib)
  other = tmp_path / "other run"
  saver = checkpoints.Checkpointer(str(other), max_to_keep=None)
  saver.save(2, {"w": jnp.full(3, 2.0)})
  saver.close()
  target = other / "checkpoints" / "2"
  workdir = tmp_path / "w"
  (workdir / "checkpoints").mkdir(parents=True)
  link = workdir / "checkpoints" / "2"
  link.symlink_to(target)
  with pytest.raises(WorkdirError) as e:
    train_lib.train_and_evaluate(tiny_config("cvae"), str(workdir))
  advice = f"rm {link} && cp -r '{target}' {link}"
  assert str(e.value) == (
      f"{link} is a symbolic link to {target}, not a folder of this run: training would resume "
      "from it and then fail to delete it when it prunes old checkpoints "
      f"(config.max_checkpoints_to_keep); copy the checkpoint in ({advice}), or move the link "
      f"out of {workdir / 'checkpoints'}, or pass another --workdir."), str(e.value)
  reader = checkpoints.Checkpointer(str(workdir), create=False)
  np.testing.assert_array_equal(reader.restore(TARGET, 2)["w"], np.full(3, 2.0))
  reader.close()
  subprocess.run(["bash", "-c", advice], check=True)
  with pytest.raises(Loaded):  # Checked and passed.
    train_lib.train_and_evaluate(tiny_config("cvae"), str(workdir))
  saver = checkpoints.Checkpointer(str(workdir), max_to_keep=1)
  saver.save(4, {"w": jnp.full(3, 4.0)})
  saver.close()
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4"]
  reader = checkpoints.Checkpointer(str(other), create=False)
  np.testing.assert_array_equal(reader.restore(TARGET, 2)["w"], np.full(3, 2.0))
  reader.close()


def _main_thread_in(code) -> bool:
  """Whether the main thread runs `code` (a function's code object) or inside it."""
  frames = sys._current_frames()  # pylint: disable=protected-access
  frame = frames.get(threading.main_thread().ident)
  while frame is not None:
    if frame.f_code is code:
      return True
    frame = frame.f_back
  return False


def test_a_second_ctrl_c_during_a_save_keeps_the_save_whole(tmp_path, monkeypatch):
  """Was (train.py on Python 3.11, a second Ctrl-C while step 4 was saved): exit 130 with
  "resume from step 4", but step 4 was renamed by Orbax without its checksum file, and the
  rerun moved it aside as corrupt and resumed from step 2. The interrupt cut short the join
  of Orbax's save thread; on 3.11 the next join (close's) returned at once, so the wait took
  the save for finished and the thread's checksum callback found no step to sum. Here the
  Ctrl-Cs reach the main thread, through train.py's handlers, as it waits for the save: it
  stops, the close waits for the save, and the step has its checksums (those of Orbax's
  commit files too) and restores; the exit line names the step a new start resumes from,
  also for a step whose checksum file is gone (was: named, though moved aside)."""
  calls, closing = [], threading.Event()
  original = checkpoints.Checkpointer._sum_finished_save  # pylint: disable=protected-access
  stop = interrupts.StopRequest()

  def slowed(self):  # Orbax's save thread, before it renames the step's folder.
    calls.append(1)
    if len(calls) == 2:  # Step 2's save: two Ctrl-Cs as the main thread waits for it.
      deadline = time.monotonic() + 20
      while (not _main_thread_in(checkpoints.Checkpointer.wait.__code__)
             and time.monotonic() < deadline):
        time.sleep(0.01)
      signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Stop, and save.
      while not stop.requested and time.monotonic() < deadline:
        time.sleep(0.01)
      signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Quit at once.
      closing.wait(20)
      time.sleep(0.3)  # The close's wait under way (was: over at once, on 3.11).
    original(self)
  monkeypatch.setattr(checkpoints.Checkpointer, "_sum_finished_save", slowed)
  workdir = str(tmp_path)
  ckpt = checkpoints.Checkpointer(workdir, max_to_keep=None)
  ckpt.save(1, {"w": jnp.ones(3)})
  ckpt.save(2, {"w": jnp.full(3, 2.0)})
  with pytest.raises(KeyboardInterrupt):
    with stop:  # As train_lib's loop: the checkpointer closed as the interrupt goes by.
      try:
        ckpt.wait()
      finally:
        closing.set()
        ckpt.close()
  deadline = time.monotonic() + 20  # Orbax's thread gone on (was: after the close).
  temporary = checkpoints._TMP_MARK  # pylint: disable=protected-access
  while any(temporary in n for n in os.listdir(ckpt.directory)):
    assert time.monotonic() < deadline
    time.sleep(0.05)
  folder = os.path.join(ckpt.directory, "2")
  sums = files.read_digests(os.path.join(folder, checkpoints.CHECKSUM_FILE))
  assert sums is not None, os.listdir(folder)  # Was: None, the file missing.
  assert "_CHECKPOINT_METADATA" in sums  # Written after Orbax's commit: the close waited.
  reader = checkpoints.Checkpointer(workdir, create=False)
  assert reader.newest_intact_step(quiet=True) == 2  # What a new start resumes from.
  np.testing.assert_array_equal(reader.restore(TARGET)["w"], np.full(3, 2.0))
  reader.close()
  assert checkpoints.newest_saved_step(workdir) == 2
  assert "resume from step 2," in interrupts.interrupted_words(
      checkpoints.newest_saved_step(workdir), 10)
  os.remove(os.path.join(folder, checkpoints.CHECKSUM_FILE))  # A save that never got them.
  reader = checkpoints.Checkpointer(workdir, create=False)
  assert reader.newest_intact_step(quiet=True) == 1  # Step 2 is corrupt: moved aside.
  reader.close()
  assert checkpoints.newest_saved_step(workdir) == 1  # Was: 2.


def test_a_save_that_failed_in_its_thread_is_raised_once_and_later_saves_work(tmp_path,
                                                                               monkeypatch):
  """Was (read-through of the waits on a thread of their own): a save whose callback failed
  (a full disk) raised its error on every later wait, save and close, since Orbax raises a
  failed save's error once in each thread that waits for it and each wait ran on a new one:
  the checkpointer could save nothing more (steps 2 and 3 were never written). Now the error
  reaches the caller once, and the saves after it (space freed) are written and summed."""
  original = checkpoints._write_checksums  # pylint: disable=protected-access

  def full_disk(folder, committed=True):  # In Orbax's save thread, before the rename.
    if not committed:
      raise OSError(errno.ENOSPC, "No space left on device", folder)
    return original(folder, committed=committed)
  monkeypatch.setattr(checkpoints, "_write_checksums", full_disk)
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=None)
  ckpt.save(1, {"w": jnp.ones(3)})
  with pytest.raises(OSError, match="No space left"):
    ckpt.wait()
  monkeypatch.setattr(checkpoints, "_write_checksums", original)  # Space freed.
  ckpt.save(2, {"w": jnp.full(3, 2.0)})  # Was: the same OSError, here and below.
  ckpt.save(3, {"w": jnp.full(3, 3.0)})
  assert ckpt.wait()
  ckpt.close()
  assert all(ckpt.summed(s) for s in (2, 3))
  reader = checkpoints.Checkpointer(str(tmp_path), create=False)
  assert reader.newest_intact_step(quiet=True) == 3
  np.testing.assert_array_equal(reader.restore(TARGET)["w"], np.full(3, 3.0))
  reader.close()


# ------------------------------------------------------------ a workdir gone while training


def test_a_workdir_deleted_while_training_stops_its_writes_in_one_line(tmp_path):
  """Was (fault hunt of resource exhaustion): a workdir removed (rm -rf) while train.py
  trained went unnoticed: the rows went to the deleted metrics.jsonl (lost), Orbax made
  checkpoints/ again under the path (a workdir of checkpoints without config.json, dataset.json
  or metrics), and the run ended in a FileNotFoundError's traceback from the metrics writer.
  Now the metrics writer and the checkpointer refuse their next write in one line, and
  nothing is made again at the path.

  And (review of that fix): what Orbax's thread wrote again at the path for the save under
  way was called "another folder ... not this run's" with "use a new folder" by the metrics
  writer, which noticed first with a watch of its own, and was kept. The writer shares the
  checkpointer's watch: the temporary folder of a save under way is said as the run's and
  taken back at the close; a finished step folder there (maybe a copy put back) is another
  folder, and stays."""
  from a2i_jax import metrics  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  ckpt = checkpoints.Checkpointer(workdir)
  writer = metrics.MetricWriter(workdir, watch=ckpt.workdir_watch)
  writer.write(1, {"train/loss": 1.0})
  ckpt.save(2, {"w": jnp.ones(3)})
  ckpt.wait()
  shutil.rmtree(workdir)
  # As Orbax's thread does for a save under way as the workdir goes: its step made again at
  # the path before anything noticed.
  rebuilt = os.path.join(workdir, "checkpoints", "2.orbax-checkpoint-tmp", "default")
  os.makedirs(rebuilt)
  open(os.path.join(rebuilt, "_sharding"), "w").close()
  said = f"the workdir {workdir} was deleted while training, before "
  gone = ("its checkpoints and records went with it, and this run's work is lost; train anew: "
          "run the same command again.")
  with pytest.raises(WorkdirError) as e:
    writer.write(3, {"train/loss": 1.0})
  assert str(e.value) == f"{said}the metrics row of step 3: {gone}", str(e.value)
  with pytest.raises(WorkdirError) as e:
    writer.sync()
  assert str(e.value) == f"{said}the metrics' sync to the disk: {gone}", str(e.value)
  with pytest.raises(WorkdirError, match=re.escape(f"{said}the sample grid of step 4: ")):
    writer.check_workdir("the sample grid of step 4")
  with pytest.raises(WorkdirError) as e:
    ckpt.save(4, {"w": jnp.ones(3)})
  assert str(e.value) == f"{said}the checkpoint of step 4: {gone}", str(e.value)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [
      "2.orbax-checkpoint-tmp"]  # Was: 4 made there too.
  writer.close()
  ckpt.close()
  assert not os.path.exists(workdir)  # Was: kept.
  # A finished step folder of the save under way there (Orbax's thread finished it at the
  # path; or a copy put back) is kept (review: one was removed with the folder), said as the
  # run's, to delete before the same command (reviews: called "not this run's", or resumed
  # from by "the same command again" without the files written before and the run's records).
  for moved in (False, True):
    ckpt = checkpoints.Checkpointer(workdir)
    ckpt.save(2, {"w": jnp.ones(3)})
    ckpt.wait()
    if moved:
      os.rename(workdir, str(tmp_path / "moved"))
    else:
      shutil.rmtree(workdir)
    os.makedirs(os.path.join(workdir, "checkpoints", "2"))
    how = (f"moved to {tmp_path / 'moved'}" if moved else "deleted")
    fix = (f"--workdir={tmp_path / 'moved'} (or, once {workdir} is deleted, move the folder "
           "back)." if moved else f"train anew: delete {workdir}, then run the same command "
           "again.")
    with pytest.raises(WorkdirError) as e:
      ckpt.save(3, {"w": jnp.ones(3)})
    assert str(e.value).startswith(
        f"the workdir {workdir} was {how} while training (its checkpoint of step 2, finished "
        "there after the folder went, stands at its path now and may lack the files written "
        "before), before the checkpoint of step 3: "), str(e.value)
    assert str(e.value).endswith(fix), str(e.value)
    ckpt.close()
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]
    shutil.rmtree(workdir)
    shutil.rmtree(tmp_path / "moved", ignore_errors=True)
  # What is not this run's stays: an empty folder made at the path (was: removed), a step
  # it never saved, a new run's folder (its lock file).
  another = "(another folder stands at its path now, which is not this run's)"
  for made in ([], ["checkpoints/7"], [files.LOCK_FILE, "checkpoints/2"]):
    ckpt = checkpoints.Checkpointer(workdir)
    ckpt.save(2, {"w": jnp.ones(3)})
    ckpt.wait()
    shutil.rmtree(workdir)
    os.mkdir(workdir)
    for name in made:
      if name == files.LOCK_FILE:
        open(os.path.join(workdir, name), "w").close()
      else:
        os.makedirs(os.path.join(workdir, name))
    with pytest.raises(WorkdirError) as e:
      ckpt.save(3, {"w": jnp.ones(3)})
    assert another in str(e.value) and "--workdir=<a new folder>" in str(e.value), made
    ckpt.close()
    assert os.path.isdir(workdir), made  # Was: an empty one removed.
    there = sorted(os.path.relpath(os.path.join(d, n), workdir)
                   for d, dirs, names in os.walk(workdir) for n in dirs + names)
    assert there == sorted({*made, *(os.path.dirname(n) for n in made)} - {""}), there
    shutil.rmtree(workdir)


def test_a_workdir_moved_or_replaced_while_training_names_where_it_went(tmp_path):
  """The same finding, for a workdir moved (mv) while it trains, with a new folder made at
  its path or not: the line names where it went (Linux says), to resume from there; a folder
  moved back passes."""
  from a2i_jax import metrics  # pylint: disable=import-outside-toplevel
  workdir, moved = str(tmp_path / "w"), str(tmp_path / "elsewhere")
  ckpt, writer = checkpoints.Checkpointer(workdir), metrics.MetricWriter(workdir)
  os.rename(workdir, moved)
  fix = (f"the steps since its last checkpoint are lost; to resume, run the same command with "
         f"--workdir={moved} (or move the folder back).")
  with pytest.raises(WorkdirError) as e:
    writer.write(1, {"train/loss": 1.0})
  assert str(e.value) == (f"the workdir {workdir} was moved to {moved} while training, before "
                          f"the metrics row of step 1: {fix}"), str(e.value)
  os.mkdir(workdir)
  with pytest.raises(WorkdirError) as e:
    ckpt.save(1, {"w": jnp.ones(3)})
  assert str(e.value) == (
      f"the workdir {workdir} was moved to {moved} while training (another folder stands at "
      f"its path now, which is not this run's), before the checkpoint of step 1: {fix}")
  assert os.listdir(workdir) == []
  os.rmdir(workdir)
  os.rename(moved, workdir)  # Back where it was: the same folder, written again.
  writer.write(1, {"train/loss": 1.0})
  ckpt.save(1, {"w": jnp.ones(3)})
  writer.close()
  ckpt.close()
  assert metrics.read_metrics(workdir) == [{"step": 1, "train/loss": 1.0}]
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["1"]
  # Was (review): Orbax's thread left the temporary folder of the save under way at the old
  # path, called another folder, and "move the folder back" then put the workdir inside it.
  # The writer shares the checkpointer's watch; that folder is the run's, taken back.
  ckpt = checkpoints.Checkpointer(workdir)
  writer = metrics.MetricWriter(workdir, watch=ckpt.workdir_watch)
  ckpt.save(2, {"w": jnp.ones(3)})
  ckpt.wait()
  os.rename(workdir, moved)
  os.makedirs(os.path.join(workdir, "checkpoints", "2.orbax-checkpoint-tmp", "d"))
  with pytest.raises(WorkdirError) as e:
    writer.write(3, {"train/loss": 1.0})
  assert str(e.value) == (f"the workdir {workdir} was moved to {moved} while training, before "
                          f"the metrics row of step 3: {fix}"), str(e.value)
  writer.close()
  ckpt.close()
  assert not os.path.exists(workdir)
  os.rename(moved, workdir)  # Moved back, as the line says.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
  # Moved as a save ends: the wait says so (review: it returned, and the run's end said it
  # had saved, the workdir gone).
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(3, {"w": jnp.ones(3)})
  ckpt._manager.wait_until_finished()  # pylint: disable=protected-access
  os.rename(workdir, moved)
  with pytest.raises(WorkdirError, match=re.escape(
      f"the workdir {workdir} was moved to {moved} while training, before the end of the "
      "checkpoint of step 3: ")):
    ckpt.wait()
  ckpt.close()
  assert sorted(os.listdir(os.path.join(moved, "checkpoints"))) == ["1", "2", "3"]


def test_a_workdir_emptied_by_a_removal_that_orbax_raced_stops_in_one_line(tmp_path,
                                                                           monkeypatch):
  """Review of 5a67595: an rm -rf of a training run's workdir takes the files inside before
  the folder, and Orbax's thread, saving meanwhile, makes its folders again inside, so the
  removal fails and the folder stays, emptied of the run's files but the same folder: two
  of four runs then ended in Orbax's NOT_FOUND as a traceback (the save failed before the
  removal reached the lock file), and one trained on to its end in the emptied folder, then
  stopped in a FileNotFoundError's traceback. The run's lock file going is the workdir's
  loss too, where no file is left there: one line, and what the save made again is taken
  back at the close."""
  from a2i_jax import metrics  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  with files.workdir_lock(workdir):
    ckpt = checkpoints.Checkpointer(workdir)
    writer = metrics.MetricWriter(workdir, watch=ckpt.workdir_watch)
    ckpt.save(1, {"w": jnp.ones(3)})
    ckpt.wait()
    writer.write(1, {"train/loss": 1.0})
    os.remove(os.path.join(workdir, files.LOCK_FILE))  # A clean-up of lock files alone: the
    writer.write(2, {"train/loss": 1.0})  # run goes on.
    ckpt.save(2, {"w": jnp.ones(3)})
    real_wait = ckpt._manager.wait_until_finished  # pylint: disable=protected-access
    removed = []

    def failed_on_a_missing_file():  # As Orbax's save does as the removal goes on.
      real_wait()
      raise ValueError("NOT_FOUND: Error writing local file .../d/0123")

    def removal_reaches_the_lock(seconds):  # The removal ends while the wait looks again.
      if not removed:
        removed.append(workdir)
        for name in os.listdir(workdir):
          path = os.path.join(workdir, name)
          shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        os.makedirs(os.path.join(workdir, "checkpoints", "2.orbax-checkpoint-tmp", "d"))
      time.sleep(seconds)
    monkeypatch.setattr(ckpt._manager, "wait_until_finished",  # pylint: disable=protected-access
                        failed_on_a_missing_file)
    monkeypatch.setattr(checkpoints, "time", types.SimpleNamespace(
        monotonic=time.monotonic, sleep=removal_reaches_the_lock))
    said = (f"the files of the workdir {workdir} were deleted while training (its lock file "
            f"{files.LOCK_FILE} with them), before ")
    gone = ("its checkpoints and records went with them, and this run's work is lost; train "
            "anew: run the same command again.")
    with pytest.raises(WorkdirError) as e:  # Was: the ValueError, a traceback.
      ckpt.wait()
    assert str(e.value) == f"{said}the checkpoint of step 2 was finished: {gone}", str(e.value)
    monkeypatch.undo()
    with pytest.raises(WorkdirError) as e:  # Was: written to the deleted metrics.jsonl.
      writer.write(3, {"train/loss": 1.0})
    assert str(e.value) == f"{said}the metrics row of step 3: {gone}", str(e.value)
    writer.close()
    ckpt.close()
    # The save's leftovers taken back; the folder, the run's own emptied, stays (review: it
    # was removed, a folder the user had made before the run).
    assert os.listdir(workdir) == []
