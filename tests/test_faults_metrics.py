"""Fault hunt of the metrics log, the PNG grids, the synthetic data and the input pipeline:
each test names what a user met before its fix ("Was: ..."). Library-level and fast: NumPy
arrays where the pipeline's checks come before any JAX work, tiny files in tmp_path; what a
resume drops or keeps of a run's records on conftest's tiny run, resumed in process."""

import errno
import io
import itertools
import json
import os
import re
import shutil
from unittest import mock

import jax
import ml_collections
import numpy as np
import pytest

from a2i_jax import files, metrics, visualize
from a2i_jax.data import pipeline, synthetic
from a2i_jax.errors import ConfigError, DataError, InputError, WorkdirError
from conftest import tiny_config

SYNTHETIC = dict(image_size=16, num_train=2, num_validation=1, num_test=1, seed=0)


def _rows(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def _augment_cfg(crop_size=0):
  return ml_collections.ConfigDict(dict(flip=False, crop_size=crop_size, max_rotation=0.0,
                                        color_gain=0.0, max_sharpen=0.0))


# ------------------------------------------------------------------------------ metrics


def test_a_writer_of_a_home_folder_path_writes_where_read_metrics_reads(tmp_path,
                                                                         monkeypatch):
  """Was: `MetricWriter("~/run")` wrote to a folder named "~" under the current folder, and
  `read_metrics("~/run")` (which expands "~") said the run had logged nothing."""
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  writer = metrics.MetricWriter("~/run")
  writer.write(1, {"train/loss": 2.5})
  writer.close()
  assert metrics.read_metrics("~/run") == [{"step": 1, "train/loss": 2.5}]
  assert os.listdir(tmp_path / "cwd") == []


def test_a_metrics_folder_or_a_tensorboard_file_is_one_workdir_error(tmp_path):
  """Was: Python's IsADirectoryError (metrics.jsonl a folder) or NotADirectoryError (a file
  named tensorboard) from `MetricWriter`, a traceback from the Python API."""
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / metrics.METRICS_FILE).mkdir()
  with pytest.raises(WorkdirError, match="metrics.jsonl is not a file.*move it away"):
    metrics.MetricWriter(str(tmp_path / "a"))
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "tensorboard").write_text("not a folder")
  with pytest.raises(WorkdirError, match="tensorboard is not a folder"):
    metrics.MetricWriter(str(tmp_path / "b"))


def test_a_scalar_named_step_or_not_a_number_is_refused_and_nothing_written(tmp_path):
  """Was: a scalar named "step" replaced the row's step with a float, and `read_metrics` then
  dropped the row as damaged: lost without a word. A value of None, a string or an array of
  several numbers was Python's TypeError / ValueError, after TensorBoard had its part of the
  row; a step of 2.7 was logged as step 2."""
  writer = metrics.MetricWriter(str(tmp_path))
  try:
    with pytest.raises(InputError, match="scalar is named 'step'"):
      writer.write(1, {"train/loss": 1.0, "step": 1.0})
    for value in (None, "x", np.zeros(3)):
      with pytest.raises(InputError, match="'val/loss'=.* is not one real number"):
        writer.write(1, {"train/loss": 1.0, "val/loss": value})
    with pytest.raises(InputError, match="step=2.7 is not valid"):
      writer.write(2.7, {"train/loss": 1.0})
    writer.write(np.int64(1), {"train/loss": np.float32(1.5), "ok": np.ones((1, 1))})
  finally:
    writer.close()
  assert metrics.read_metrics(str(tmp_path)) == [{"step": 1, "train/loss": 1.5, "ok": 1.0}]


def test_a_step_before_the_last_row_is_refused(tmp_path):
  """Was: appended after the later rows (a notebook cell re-run with a new writer logs its
  steps again): one step twice and the steps out of order in metrics.jsonl."""
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(5, {"a": 5.0})
  writer.close()
  writer = metrics.MetricWriter(str(tmp_path))
  try:
    with pytest.raises(InputError, match="step 3 come after those of step 5.*resumed_from"):
      writer.write(3, {"a": 3.0})
    writer.write(5, {"b": 1.0})  # The last row's step: merged, as before.
  finally:
    writer.close()
  assert _rows(tmp_path / metrics.METRICS_FILE) == [{"step": 5, "a": 5.0, "b": 1.0}]


def test_sync_puts_the_rows_on_the_disk(tmp_path, monkeypatch):
  """Was: rows were flushed, never synced: a power loss could keep a checkpoint and lose the
  rows before it (the training loop syncs at each checkpoint; test_train checks that)."""
  synced = []
  fsync = os.fsync
  monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                               fsync(fd)))
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(1, {"a": 1.0})
  writer.sync()  # TensorBoard's flush syncs its own file.
  rows = str(tmp_path / metrics.METRICS_FILE)
  assert synced.count(rows) == 1 and synced.count(str(tmp_path)) == 1  # Its name too.
  writer.sync()
  assert synced.count(rows) == 2 and synced.count(str(tmp_path)) == 1  # The name once.
  writer.close()  # Closing syncs too.
  assert synced.count(rows) == 3
  with pytest.raises(InputError, match="is closed"):
    writer.sync()
  writer.close()  # A second close does nothing (review: was "I/O operation on closed file").


def _tensorboard_events(workdir):
  """(step, tag) of every scalar and image in workdir/tensorboard's event files, as they are
  on the disk now (a record cut short ends its file's list)."""
  import struct  # pylint: disable=import-outside-toplevel
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  found = []
  folder = os.path.join(workdir, "tensorboard")
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), "rb") as f:
      data = f.read()
    i = 0
    while i + 12 <= len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      if i + 12 + n + 4 > len(data):
        break
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      found += [(event.step, value.tag) for value in event.summary.value]
      i += 12 + n + 4
  return found


def test_an_evaluations_row_is_in_tensorboards_file_before_metrics_jsonl_has_it(tmp_path):
  """Was: tensorboardX wrote events from a thread of its own and flushed every 2 minutes, and
  its flush() missed the events still queued for that thread: a run killed just after an
  evaluation kept the row in metrics.jsonl (which its resume trusts: it evaluates that step
  no more) and lost it from TensorBoard for good (review). A row with "val/" scalars is now on
  the disk, TensorBoard's events first, when `write` returns; `sync` puts the others there."""
  writer = metrics.MetricWriter(str(tmp_path), resumed_from=0)
  writer.write(1, {"train/loss": 3.0})
  writer.write_image(2, "samples", np.zeros((8, 8, 3), np.uint8))
  writer.write(2, {"train/loss": 2.0})
  writer.write(2, {"val/loss": 1.0, "val/kl": 0.5})  # Nothing else called: as a kill here.
  assert {(2, "samples"), (2, "val/loss"), (2, "val/kl"), (1, "train/loss"),
          (2, "train/loss")} <= set(_tensorboard_events(str(tmp_path)))
  writer.write(3, {"train/loss": 1.0})
  writer.sync()
  assert (3, "train/loss") in _tensorboard_events(str(tmp_path))
  writer.close()


def test_a_file_system_that_cannot_sync_is_one_warning(tmp_path, monkeypatch, caplog):
  """Review: an fsync refused (a FUSE or network mount: EINVAL) raised out of the training
  loop before its checkpoint was saved. The rows are written either way: one warning."""
  def refused(fd):
    raise OSError(22, "Invalid argument")
  monkeypatch.setattr(os, "fsync", refused)
  writer = metrics.MetricWriter(str(tmp_path))
  with caplog.at_level("WARNING"):
    for step in (1, 2):
      writer.write(step, {"a": float(step)})
      writer.sync()
    writer.close()
  # TensorBoard's flush, the first to sync, names its folder.
  assert [r.getMessage() for r in caplog.records if "could not sync" in r.getMessage()] == [
      f"could not sync {tmp_path / 'tensorboard'} to the disk (Invalid argument); what is "
      "written stays, but a power loss may lose its last part"]
  assert [r["step"] for r in _rows(tmp_path / metrics.METRICS_FILE)] == [1, 2]


def test_a_full_disk_at_tensorboards_flush_stops_the_writer_and_keeps_the_rows(
    tmp_path, monkeypatch, caplog):
  """Was: a full disk (ENOSPC) at the periodic or an evaluation's flush of TensorBoard's events
  was `_synced`'s "could not sync" warning, and the run went on without its events (the row
  of metrics.jsonl, a few bytes in a block it already had, was written); so was ENOSPC at the
  sync itself (NFS says a lost write there). Now `write` and `sync` raise the disk's OSError,
  which the training loop turns into its one error line (as a full metrics.jsonl), with the
  rows and the events written before as they were. A failed write of any kind (EIO) raises
  too."""
  from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel
  full = []  # The errno the disk answers with; none while it has room.

  class Disk(io.FileIO):
    def write(self, data):
      if full:
        raise OSError(full[0], os.strerror(full[0]))
      return super().write(data)

  monkeypatch.setattr(record_writer, "open_file", lambda path: io.BufferedWriter(Disk(path, "wb")))
  writer = metrics.MetricWriter(str(tmp_path))
  try:
    writer.write(1, {"train/loss": 3.0})
    writer.sync()
    with monkeypatch.context() as patch:  # NFS says a lost write at the sync.
      patch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "")))
      with pytest.raises(OSError):
        writer.sync()
    monkeypatch.setattr(metrics, "TENSORBOARD_FLUSH_S", 0.0)  # A periodic flush at each write.
    for code, scalars in ((errno.ENOSPC, {"train/loss": 2.0}), (errno.EDQUOT, {"val/loss": 1.0}),
                          (errno.EIO, {"a": 1.0})):
      full[:] = [code]
      with caplog.at_level("WARNING"), pytest.raises(OSError) as raised:
        writer.write(2, scalars)
      assert raised.value.errno == code
      assert files.storage_error(raised.value) is not None or code == errno.EIO
      with pytest.raises(OSError):
        writer.sync()
    assert "could not sync" not in caplog.text
    assert metrics.read_metrics(str(tmp_path)) == [{"step": 1, "train/loss": 3.0}]
    assert _tensorboard_events(str(tmp_path)) == [(1, "train/loss")]
    with pytest.raises(OSError, match="Input/output error"):
      writer.close()  # metrics.jsonl closed all the same.
  finally:
    full.clear()  # Room again: tensorboardX's own writer closes its file (else at the exit).
    writer.close()
    writer._tb.close()  # pylint: disable=protected-access
  assert writer._jsonl.closed  # pylint: disable=protected-access


def test_a_writer_made_in_the_same_second_leaves_the_earlier_event_file_whole(tmp_path,
                                                                            monkeypatch):
  """Was: tensorboardX names its event file by the second and the host and opens it "wb": a
  second writer within the same second (a resume right after a stop, one that only evaluates
  the last step) emptied the first one's file, its events lost. Each writer's file has
  a name of its own now, the earlier process's file too where a process id comes again."""
  monkeypatch.setattr("time.time", lambda: 1_800_000_000.25)  # One second for all of them.
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(1, {"train/loss": 3.0})
  writer.close()
  writer = metrics.MetricWriter(str(tmp_path), resumed_from=1)
  writer.write(2, {"train/loss": 2.0})
  writer.close()
  assert _tensorboard_events(str(tmp_path)) == [(1, "train/loss"), (2, "train/loss")]
  # Another process of the same id, whose writers are numbered afresh.
  monkeypatch.setattr(metrics, "_WRITERS", itertools.count(1))
  metrics.MetricWriter(str(tmp_path), resumed_from=2).close()
  names = os.listdir(tmp_path / "tensorboard")
  assert len(names) == 3 and all(n.startswith(metrics.EVENTS_PREFIX) for n in names)
  assert _tensorboard_events(str(tmp_path)) == [(1, "train/loss"), (2, "train/loss")]


def test_a_resume_leaves_one_row_per_step_in_order(tmp_path):
  """Was: a file whose steps went back (a run restarted from a checkpoint without
  `resumed_from`, or an older version's) kept every row at a resume: step 2 and 3 twice and
  out of order. The rows after the restart's step are dropped, its step merged."""
  path = tmp_path / metrics.METRICS_FILE
  old = [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}, {"step": 3, "a": 3.0},
         {"step": 4, "a": 4.0}, {"step": 2, "val": 0.5}, {"step": 3, "a": 3.5}]
  path.write_text("".join(json.dumps(r) + "\n" for r in old))
  writer = metrics.MetricWriter(str(tmp_path), resumed_from=3)
  writer.write(4, {"a": 4.5})
  writer.close()
  assert _rows(path) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0, "val": 0.5},
                         {"step": 3, "a": 3.5}, {"step": 4, "a": 4.5}]


def test_rows_replaced_at_the_opening_are_counted_in_a_warning(tmp_path, caplog):
  """Review: a writer made without `resumed_from` on a file whose steps went back dropped the
  later history (steps 100 and 200 below) without a word; damaged lines were already said."""
  path = tmp_path / metrics.METRICS_FILE
  path.write_text("".join(json.dumps({"step": s, "a": float(s)}) + "\n"
                          for s in (0, 100, 200, 50)))
  with caplog.at_level("WARNING"):
    metrics.MetricWriter(str(tmp_path)).close()
  assert _rows(path) == [{"step": 0, "a": 0.0}, {"step": 50, "a": 50.0}]
  assert f"replaced 2 row(s) of {path} by a later row" in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):  # Steps that increase: nothing to say.
    metrics.MetricWriter(str(tmp_path)).close()
  assert "replaced" not in caplog.text


def _records_past_the_checkpoint(tiny_run, tmp_path):
  """A copy of the tiny CVAE run (2 steps: checkpoint, evaluation and grid at 2) holding what
  a later checkpoint, of step 4, leaves when it is removed or set aside as corrupt: rows of
  steps 3 and 4 (with TensorBoard events) and step 4's grid."""
  workdir = str(tmp_path / "w")
  shutil.copytree(tiny_run("cvae")[0], workdir)
  writer = metrics.MetricWriter(workdir)
  writer.write(3, {"train/loss": 3.0})
  writer.write(4, {"train/loss": 4.0, "val/loss": 4.0})
  writer.close()
  samples = os.path.join(workdir, "samples")
  shutil.copy(os.path.join(samples, "step_0000002.png"), os.path.join(samples, "step_0000004.png"))
  return workdir, samples


def test_a_resume_that_only_evaluates_its_last_step_drops_the_later_grids(tiny_run, tmp_path,
                                                                          data_cache):
  """Was: a resume at the last step with its evaluation still to do (checkpoint 4 gone,
  num_train_steps=2) dropped the rows and TensorBoard events after step 2 but kept
  samples/step_0000004.png: the grids were dropped only where a step was left to train.

  And (review of 5a67595): the loop's writer watched the workdir apart from the checkpointer,
  so it called the checkpointer's own leftovers at a deleted workdir's path another folder;
  it is given the checkpointer's watch, which only the checkpointer tells of its saves."""
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  workdir, samples = _records_past_the_checkpoint(tiny_run, tmp_path)
  os.remove(os.path.join(samples, "step_0000002.png"))  # Its evaluation is left to do.
  watches = []

  class Writer(metrics.MetricWriter):
    def __init__(self, *args, **kwargs):
      watches.append(kwargs.get("watch"))
      super().__init__(*args, **kwargs)
  with mock.patch.object(train_lib, "MetricWriter", Writer):
    state = train_lib.train_and_evaluate(tiny_config("cvae", data_cache), workdir)
  assert len(watches) == 1 and isinstance(watches[0], files.WorkdirWatch), watches
  assert watches[0].workdir == os.path.abspath(workdir)
  assert watches[0].leftovers is None  # Let go at the checkpointer's close.
  assert int(state.step) == 2
  assert [r["step"] for r in metrics.read_metrics(workdir)] == [1, 2]
  assert "val/loss" in metrics.read_metrics(workdir)[-1]
  assert sorted(os.listdir(samples)) == ["step_0000002.png"]


def test_a_call_with_nothing_to_do_says_what_lies_past_the_checkpoint(tiny_run, tmp_path,
                                                                      data_cache, caplog):
  """Was: a call with nothing to do (num_train_steps at or below the newest checkpoint's step)
  kept the rows, events and grids of later steps, which no checkpoint holds, without a word.
  They stay (the checkpoint may be missing only for now), with one warning that the next run
  that trains on drops them."""
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  workdir, samples = _records_past_the_checkpoint(tiny_run, tmp_path)
  config = tiny_config("cvae", data_cache)
  config.num_train_steps = 1
  with caplog.at_level("WARNING"):
    assert int(train_lib.train_and_evaluate(config, workdir).step) == 2
  said = [r.getMessage() for r in caplog.records if "no checkpoint holds" in r.getMessage()]
  assert said == [
      f"{workdir} holds records of steps after 2, its newest checkpoint's step, that no "
      "checkpoint holds (a later one was removed or set aside as corrupt, or the run was "
      "killed before it saved one): metrics.jsonl rows of steps 3 to 4 (with their "
      "TensorBoard events) and 1 sample grid(s) (step_0000004.png). This call trains nothing "
      "(num_train_steps=1), so they stay; the next run that trains on from step 2 drops them "
      "and trains those steps again. If a later checkpoint was only moved away, put it back "
      f"in {workdir}/checkpoints before that run to keep them."], said
  assert [r["step"] for r in metrics.read_metrics(workdir)] == [1, 2, 3, 4]
  assert sorted(os.listdir(samples)) == ["step_0000002.png", "step_0000004.png"]
  # At the checkpoint's own step, its evaluation done: nothing to do either, the same warning.
  config.num_train_steps = 2
  caplog.clear()
  with caplog.at_level("WARNING"):
    assert int(train_lib.train_and_evaluate(config, workdir).step) == 2
  assert [r.getMessage() for r in caplog.records if "no checkpoint holds" in r.getMessage()
          ] == [said[0].replace("(num_train_steps=1)", "(num_train_steps=2)")]
  # A samples folder that cannot be listed: a warning of its own, and the call still ends
  # (review: the warning's reads stopped a call that had nothing else to do).
  real = os.listdir

  def failing(path="."):
    if os.path.abspath(path) == os.path.abspath(samples):
      raise OSError(errno.EIO, os.strerror(errno.EIO), path)
    return real(path)
  caplog.clear()
  with mock.patch.object(os, "listdir", failing), caplog.at_level("WARNING"):
    assert int(train_lib.train_and_evaluate(config, workdir).step) == 2
  assert any(f"could not look for records of steps after 2 in {workdir} (an input/output "
             "error" in r.getMessage() for r in caplog.records), caplog.text
  assert [r["step"] for r in metrics.read_metrics(workdir)] == [1, 2, 3, 4]


def test_read_metrics_gives_none_for_old_nan_tokens_and_leaves_out_rows_no_writer_wrote(
    tmp_path, caplog):
  """Was: `read_metrics` of a file an older version wrote (NaN / Infinity tokens) returned
  float nan and inf where its docstring promised None, and kept a row of step -4 or with a
  string value as a metrics row (a review's finding). A resume drops those rows with the
  warning of other damaged lines."""
  path = tmp_path / metrics.METRICS_FILE
  path.write_text('{"step": 1, "train/loss": NaN}\n{"step": 2, "train/loss": Infinity, '
                  '"val/loss": -Infinity, "val/kl": 0.5}\n{"step": -4, "x": 1.0}\n'
                  '{"step": 5, "x": "abc"}\n{"step": 6, "x": true}\n{"step": 7, "x": [1]}\n'
                  f'{{"step": {metrics.MAX_STEP + 1}, "x": 1}}\n{{"step": 8, "x": 3}}\n')
  want = [{"step": 1, "train/loss": None},
          {"step": 2, "train/loss": None, "val/loss": None, "val/kl": 0.5}, {"step": 8, "x": 3}]
  assert metrics.read_metrics(str(tmp_path)) == want
  with caplog.at_level("WARNING"):
    metrics.MetricWriter(str(tmp_path), resumed_from=8).close()
  assert "dropped 5 line(s) of" in caplog.text
  assert _rows(path) == want


def test_write_image_refuses_nan_and_takes_grey_images(tmp_path):
  """Was: NaN pixels written to TensorBoard as black and floats past 1 wrapped around
  (tensorboardX casts x * 255 to uint8), a grey [H, W] image tensorboardX's AssertionError,
  and a write after `close` Python's "I/O operation on closed file"."""
  writer = metrics.MetricWriter(str(tmp_path))
  image = np.full((4, 4, 3), 0.5, np.float32)
  image[0, 0, 0] = np.nan
  with pytest.raises(InputError, match="NaN"):
    writer.write_image(1, "samples", image)
  with pytest.raises(InputError, match="range over \\[0, 200\\]"):
    writer.write_image(1, "samples", np.linspace(0, 200, 48, dtype=np.float32).reshape(4, 4, 3))
  with pytest.raises(InputError, match="one image"):
    writer.write_image(1, "samples", np.zeros((2, 4, 4, 3), np.uint8))
  writer.write_image(1, "samples", np.zeros((4, 4), np.uint8))
  writer.write_image(1, "samples", np.zeros((4, 4, 1), np.uint8))  # Taken before: still.
  writer.close()
  with pytest.raises(InputError, match="is closed; make a new one"):
    writer.write(2, {"a": 1.0})


def test_a_step_past_tensorboards_int64_is_one_input_error(tmp_path):
  """Was: protobuf's "ValueError: Value out of range" from inside tensorboardX for a step past
  2**63 - 1 (`write`, `write_image`, `resumed_from`), after `write` had checked the row."""
  words = (f"is not valid; pass the training step, an integer of at least 0 and at most "
           f"{metrics.MAX_STEP} (2**63 - 1, TensorBoard's largest).")
  with pytest.raises(InputError, match=re.escape(f"step={2 ** 70} {words}")):
    metrics.MetricWriter(str(tmp_path), resumed_from=2 ** 70)
  writer = metrics.MetricWriter(str(tmp_path))
  try:
    with pytest.raises(InputError, match=re.escape(f"step={2 ** 63} {words}")):
      writer.write(2 ** 63, {"a": 1.0})
    with pytest.raises(InputError, match=re.escape(f"step={2 ** 70} {words}")):
      writer.write_image(2 ** 70, "samples", np.zeros((4, 4, 3), np.uint8))
    writer.write(metrics.MAX_STEP, {"a": 1.0})  # The largest is taken.
  finally:
    writer.close()
  assert metrics.read_metrics(str(tmp_path)) == [{"step": metrics.MAX_STEP, "a": 1.0}]
  metrics.MetricWriter(str(tmp_path), resumed_from=metrics.MAX_STEP).close()
  assert metrics.read_metrics(str(tmp_path)) == [{"step": metrics.MAX_STEP, "a": 1.0}]


@pytest.mark.parametrize("scalars", [[("a", 1.0)], None, "a"])
def test_scalars_that_are_no_mapping_are_one_input_error(tmp_path, scalars):
  """Was: AttributeError "'list' object has no attribute 'items'" (None: 'NoneType')."""
  writer = metrics.MetricWriter(str(tmp_path))
  try:
    with pytest.raises(InputError, match=re.escape(
        f"scalars={scalars!r} is not a mapping; pass {{name: value}}, e.g. "
        "{\"train/loss\": 1234.5}.")):
      writer.write(1, scalars)
  finally:
    writer.close()
  assert metrics.read_metrics(str(tmp_path)) == []


@pytest.mark.parametrize("name", [5, None, b"samples"])
def test_an_image_name_that_is_no_string_is_one_input_error(tmp_path, name):
  """Was: a TypeError from tensorboardX for `write_image(1, 5, image)`."""
  writer = metrics.MetricWriter(str(tmp_path))
  try:
    with pytest.raises(InputError, match=re.escape(
        f"name={name!r} is not a string; pass the image's tag, e.g. \"samples\".")):
      writer.write_image(1, name, np.zeros((4, 4, 3), np.uint8))
  finally:
    writer.close()


@pytest.mark.parametrize("workdir", [None, 3, b"run", ""])
def test_a_metrics_workdir_that_is_no_path_is_one_workdir_error(tmp_path, monkeypatch,
                                                                workdir):
  """Was: `MetricWriter(None)` and `read_metrics(None)` a TypeError from os.path (and "" the
  current folder, without a word)."""
  monkeypatch.chdir(tmp_path)
  words = re.escape(f"workdir={workdir!r}: pass the run's folder, a path (str or "
                    "pathlib.Path) that is not empty.")
  with pytest.raises(WorkdirError, match=words):
    metrics.MetricWriter(workdir)
  with pytest.raises(WorkdirError, match=words):
    metrics.read_metrics(workdir)
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- visualize


def test_a_grid_of_images_without_pixels_is_refused():
  """Was: images of height or width 0 tiled into a grid of white padding alone, written as the
  picture without a word (as N = 0 was before its own fix)."""
  for shape in ((2, 0, 4, 3), (2, 4, 0, 3), (2, 0, 4)):
    with pytest.raises(InputError, match="no pixels"):
      visualize.make_grid(np.zeros(shape, np.uint8), 2)


def test_save_png_onto_a_folder_or_inside_a_file_is_one_input_error(tmp_path):
  """Was: Python's IsADirectoryError (a folder of the PNG's name; after the PNG was made) and
  FileExistsError (a file where a parent folder goes)."""
  grid = np.zeros((3, 3, 3), np.uint8)
  (tmp_path / "grid.png").mkdir()
  with pytest.raises(InputError, match="grid.png is a folder; pass a file path"):
    visualize.save_png(grid, str(tmp_path / "grid.png"))
  assert os.listdir(tmp_path / "grid.png") == []
  (tmp_path / "file").write_text("x")
  with pytest.raises(InputError, match="inside .*file, which is a file"):
    visualize.save_grid(grid[None], str(tmp_path / "file" / "a" / "g.png"), 1)
  assert sorted(os.listdir(tmp_path)) == ["file", "grid.png"]  # No temporary file left.
  visualize.save_png(grid, str(tmp_path / "new" / "g.png"))  # A missing folder is made.
  visualize.save_png(grid + 1, str(tmp_path / "new" / "g.png"))  # And a PNG replaced.
  assert os.listdir(tmp_path / "new") == ["g.png"]


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("kwargs, size", [(dict(scale=10**12), "8000000000003 x 8000000000003"),
                                          (dict(pad=10**8), "300000008 x 300000008")])
def test_a_grid_larger_than_the_memory_is_one_input_error(kwargs, size, known, monkeypatch):
  """Was NumPy's MemoryError, "Unable to allocate 698. TiB", for a huge scale or pad. Known:
  refused against the machine's memory before any is taken; not known (a system that does not
  say): NumPy's MemoryError said so, as occlusions.make_mask does."""
  if not known:
    monkeypatch.setattr(files, "host_memory", lambda: None)
  with pytest.raises(InputError, match=re.escape(
      f"a grid of 3 images of 4x4 pixels is {size} pixels as scaled and padded and takes ")
                     + r"[\d,.]+ GiB, more than this machine can give; ask for a smaller scale"):
    visualize.make_grid(np.zeros((3, 4, 4, 3), np.uint8), 2, **kwargs)


@pytest.mark.parametrize("grey", [False, True])
def test_a_grid_takes_little_more_memory_than_itself(grey):
  """Was: make_grid held every image scaled at once beside the grid (and grey images three
  times over): with infer.py's float copies, 16 copies of each image, and a grid of 10,000
  reconstructions ran out of memory after their hours of inference (fault hunt). Now the grid,
  the images as uint8 and a scaled tile."""
  import tracemalloc  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(0).random((64, 16, 16) if grey else (64, 16, 16, 3),
                                           dtype=np.float32)
  tracemalloc.start()
  try:
    grid = visualize.make_grid(images, 8, scale=4)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  # The grid, the images as uint8, and half of what every image scaled at once took (the old
  # form held all of them: 786 KB here, its peak 1.6 MB), room for a tile and any thread.
  scaled = 64 * (16 * 4) ** 2 * 3
  assert peak <= grid.nbytes + images.size + scaled // 2, (peak, grid.nbytes)
  # The same picture as each image scaled by itself.
  one = visualize.to_uint8(images[9]).repeat(4, axis=0).repeat(4, axis=1)
  np.testing.assert_array_equal(grid[1 + 65:1 + 65 + 64, 1 + 65:1 + 65 + 64],
                                np.repeat(one[..., None], 3, axis=-1) if grey else one)


def test_a_grid_of_more_columns_than_images_has_no_empty_columns():
  """Was: ncols=8 for 2 images a grid of 2 images and 6 white columns, without a word, and
  ncols=10**12 NumPy's MemoryError. The row's images stay where they were."""
  images = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)
  grid = visualize.make_grid(images, 8)
  np.testing.assert_array_equal(grid, visualize.make_grid(images, 2))
  assert grid.shape == (4, 9, 3)
  np.testing.assert_array_equal(grid[1:3, 5:8], images[1])
  assert visualize.make_grid(images, 10**12).shape == (4, 9, 3)


# ----------------------------------------------------------------------------- pipeline


def test_sample_batch_refuses_arrays_of_other_lengths_and_empty_data():
  """Was: arrays of different lengths sampled by the images' N, where JAX clamps an index past
  the end of the shorter one: images paired with other examples' attributes, without a word.
  An empty split was JAX's TypeError about a gather, no "images" a KeyError, a batch_size of
  0 an empty batch and -1 or 2.0 JAX's TypeError."""
  images, key = np.zeros((4, 2, 2, 3), np.uint8), jax.random.key(0)
  on_device = jax.device_put({"images": images, "attributes": np.zeros((3, 2), np.float32)})
  with pytest.raises(DataError, match="differ in length.*'attributes': 3"):
    pipeline.sample_batch(key, on_device, 8)
  with pytest.raises(DataError, match="no examples"):
    pipeline.sample_batch(key, {"images": images[:0], "attributes": np.zeros((0, 2))}, 2)
  with pytest.raises(DataError, match=r"keys \[.attributes.\]; sample_batch takes a dict"):
    pipeline.sample_batch(key, {"attributes": np.zeros((3, 2))}, 2)
  for bad in (0, -1, 2.0, True):
    with pytest.raises(InputError, match="batch_size="):
      pipeline.sample_batch(key, {"images": images}, bad)


def test_centre_crop_fits_the_images_and_centres_both_axes():
  """Was: a size beyond the image sliced from a negative offset (10 of 8 gave 1 x 1 pixels of
  a corner), and W was cropped at H's offset, off centre where W != H."""
  x = np.arange(8 * 12).reshape(1, 8, 12, 1)
  np.testing.assert_array_equal(pipeline.centre_crop(x, 4), x[:, 2:6, 4:8])
  for bad in (9, 0, 4.0):
    with pytest.raises(InputError, match="does not fit images of 8 x 12.*from 1 to 8"):
      pipeline.centre_crop(x, bad)


def test_a_crop_larger_than_the_images_or_masks_of_another_shape_are_refused():
  """Was: a crop_size larger than the images left them uncropped, at their own size, in both
  `augment` and `preprocess_eval`; masks of another size were JAX's TypeError about a
  concatenation, images without their channel axis JAX's ValueError, a negative or float
  crop_size JAX's TypeError."""
  images, masks = np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.uint8)
  key = jax.random.key(0)
  with pytest.raises(ConfigError, match="crop_size=10 is larger than the images \\(8 x 8\\)"):
    pipeline.augment(key, images, masks, _augment_cfg(10))
  with pytest.raises(ConfigError, match="crop_size=10 is larger"):
    pipeline.preprocess_eval(images, masks, _augment_cfg(10))
  with pytest.raises(InputError, match="masks have shape \\(2, 6, 6\\)"):
    pipeline.augment(key, images, masks[:, :6, :6], _augment_cfg())
  with pytest.raises(InputError, match="images have shape \\(2, 8, 8\\)"):
    pipeline.preprocess_eval(images[..., 0], None, _augment_cfg())
  for bad in (-3, 4.0):  # Was JAX's TypeError about a slice of negative size.
    with pytest.raises(ConfigError, match=f"crop_size={bad} is not valid"):
      pipeline.augment(key, images, masks, _augment_cfg(bad))


def test_masks_that_are_not_uint8_are_refused():
  """Was: float or boolean masks divided by 255 as the stored uint8 ones are: a mask of 1
  taken as 1/255, the foreground all but hidden from the model, without a word."""
  images = np.zeros((1, 4, 4, 3), np.uint8)
  for masks in (np.ones((1, 4, 4), np.float32), np.ones((1, 4, 4), bool)):
    with pytest.raises(InputError, match=f"masks have dtype {masks.dtype}.*255"):
      pipeline.preprocess_eval(images, masks, _augment_cfg())
    with pytest.raises(InputError, match="masks have dtype"):
      pipeline.uint8_masks_to_channel(masks)


def test_the_box_filter_refuses_integer_images():
  """Was: uint8 images filtered to all zeros (the 1/25 kernel in their dtype is 0)."""
  with pytest.raises(InputError, match="takes floats; got uint8"):
    pipeline.box_filter_5x5(np.full((1, 5, 5, 3), 200, np.uint8))


# ---------------------------------------------------------------------------- synthetic


def test_bool_counts_and_seed_are_refused():
  """Was: bools taken as integers: num_train=True NumPy's TypeError "an integer is required"
  and seed=True the data of seed 1; `sample_attributes(rng, True)` the same TypeError."""
  for key in ("num_train", "num_test", "seed", "image_size"):
    with pytest.raises(ConfigError, match=f"{key}=True"):
      synthetic.load(**{**SYNTHETIC, key: True})
  with pytest.raises(DataError, match="cannot sample True attribute vectors"):
    synthetic.sample_attributes(np.random.default_rng(0), True)


def test_a_seed_where_a_generator_goes_and_text_attributes_are_refused():
  """Was: `sample_attributes(0, n)` and `render(a, 0, size)` Python's AttributeError ("'int'
  object has no attribute 'uniform'"), text attributes NumPy's ValueError."""
  with pytest.raises(DataError, match="rng is int 0; pass a NumPy generator"):
    synthetic.sample_attributes(0, 2)
  with pytest.raises(DataError, match="nuisance_rng is int 7; pass a NumPy generator"):
    synthetic.render(np.zeros((1, 10), np.float32), 7, 16)
  with pytest.raises(DataError, match="are not numbers"):
    synthetic.render([["a"] * 10], np.random.default_rng(0), 16)


def test_a_cache_file_of_other_dtypes_or_nan_attributes_is_made_again(tmp_path):
  """Was: a cache file whose masks were not uint8, or whose attributes held NaN, was trusted
  (only the images' dtype was checked): float masks reached training, where the pipeline reads
  them as 1/255 of themselves."""
  ref = synthetic.load(**SYNTHETIC)
  path = synthetic.cache_path(str(tmp_path), **SYNTHETIC)
  for name, change in (("masks", lambda a: a.astype(np.float32)),
                       ("attributes", lambda a: np.where(a == a.max(), np.nan, a))):
    arrays = {f"{s}_{k}": getattr(ref[s], k) for s in ("train", "validation", "test")
              for k in ("images", "attributes", "masks")}
    arrays[f"train_{name}"] = change(arrays[f"train_{name}"])
    with open(path, "wb") as f:
      np.savez(f, **arrays)
    got = synthetic.load(**SYNTHETIC, cache_dir=str(tmp_path))["train"]
    assert got.masks.dtype == np.uint8, name
    np.testing.assert_array_equal(got.masks, ref["train"].masks)
    np.testing.assert_array_equal(got.attributes, ref["train"].attributes)


def test_an_empty_cache_dir_keeps_no_cache(tmp_path, monkeypatch):
  """Was: `synthetic.load(cache_dir="")` wrote its .npz into the current folder, where
  `data.load` (config.data.cache_dir="") keeps no cache at all."""
  monkeypatch.chdir(tmp_path)
  synthetic.load(**SYNTHETIC, cache_dir="")
  assert os.listdir(tmp_path) == []


def test_a_line_nested_too_deep_to_parse_is_a_damaged_line(tmp_path, caplog):
  """Was: one line of '[' * 200000 appended to metrics.jsonl was a RecursionError traceback
  from a train.py resume (json's parser runs out of Python's stack). It is a damaged line:
  read_metrics leaves it out, a resume drops it with the warning of other damaged lines."""
  path = tmp_path / metrics.METRICS_FILE
  path.write_text('{"step": 1, "a": 1.0}\n' + "[" * 200000 + '\n{"step": 2, "a": 2.0}\n')
  want = [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]
  assert metrics.read_metrics(str(tmp_path)) == want
  with caplog.at_level("WARNING"):
    metrics.MetricWriter(str(tmp_path), resumed_from=2).close()
  assert "dropped 1 line(s) of" in caplog.text
  assert _rows(path) == want


def test_a_writer_given_a_watch_checks_it_and_leaves_it_open(tmp_path):
  """The loop's writer shares the checkpointer's watch of the workdir (review of 5a67595):
  its checks are that watch's, its close leaves the watch to its owner, and a watch of
  another folder is not used (it would tell that folder's fate)."""
  workdir, other = str(tmp_path / "w"), str(tmp_path / "other")
  os.mkdir(workdir)
  os.mkdir(other)
  watch = files.WorkdirWatch(workdir)
  writer = metrics.MetricWriter(workdir, watch=watch)
  writer.write(1, {"train/loss": 1.0})
  os.rename(workdir, str(tmp_path / "moved"))
  with pytest.raises(WorkdirError, match="was moved to"):
    writer.write(2, {"train/loss": 1.0})
  writer.close()
  with pytest.raises(WorkdirError, match="was moved to"):
    watch.check("the checkpoint of step 2")  # Still open.
  watch.close()
  foreign = files.WorkdirWatch(str(tmp_path / "moved"))
  writer = metrics.MetricWriter(other, watch=foreign)
  os.rename(str(tmp_path / "moved"), str(tmp_path / "moved again"))
  writer.write(1, {"train/loss": 1.0})  # Its own watch of `other`: in place.
  writer.close()
  with pytest.raises(WorkdirError, match="was moved to"):
    foreign.check("a row")
  foreign.close()
