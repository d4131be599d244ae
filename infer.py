"""Uses a trained model: flags in, `a2i_jax.inference` / `a2i_jax.evaluation` out.

  python infer.py --workdir=runs/synthetic --mode=complete --out=runs/synthetic/infer

Modes (PNG grids and JSON go to --out, default WORKDIR/infer; each mode's files there are
replaced together, so they always come from one call, and Ctrl-C leaves a mode's earlier files
as they were; what a stopped complete, progression, tune or evaluate finished is kept as
*_partial.* files):
  sample       images for test attribute vectors, several latents each
  progression  one attribute swept from its training minimum to maximum, z fixed
  swap         disCVAE: fixed foreground latent with varied backgrounds, and the reverse
  reconstruct  posterior inference on test images (or --input images): recognition vs optimised
  complete     fill occluded regions (--occlusion, default all that suit the dataset and crop)
  edit         infer z of a real image, change --attribute to --value, decode
  infer_attributes  estimate the attributes of images (y inferred jointly with z)
  tune         validation errors over a grid of inference settings (prior weight x rate)
  evaluate     the reconstruction / completion table; --workdir may list several runs
"""

if __name__ == "__main__":  # First, before any import: it may start the command over.
  from a2i_jax import startup  # pylint: disable=g-import-not-at-top
  # One line for a stop in the imports below.
  startup.begin("stopped by SIGTERM", 143, "stopped by SIGHUP (the terminal closed)", 129)

import contextlib
import dataclasses
import errno
import fcntl
import functools
import hashlib
import json
import logging as std_logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
from typing import Callable, Iterator, Optional, Sequence, Union

from absl import app, flags, logging
import jax
import numpy as np

from a2i_jax import (checkpoints, config_lib, distributed, evaluation, files, inference,
                     interrupts, models, occlusions, perf, visualize)
from a2i_jax.errors import (A2IError, CheckpointError, ConfigError, InputError,
                            first_line, is_out_of_memory)
from a2i_jax.inputs import (check_output_folder, image_files, read_images, to_uint8,
                            to_unit)

MODES = ["sample", "progression", "swap", "reconstruct", "complete", "edit", "infer_attributes",
         "tune", "evaluate"]
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory (evaluate: a "
                               "comma-separated list of runs, one table row group each; a "
                               "folder whose own name holds a comma is one run).")
_MODE = flags.DEFINE_list("mode", ["sample"], f"What to do: one or more (comma-separated) of "
                          f"{', '.join(MODES)}; evaluate runs alone.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/infer).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder of images to use "
                             "instead of the test split (reconstruct, complete, edit, "
                             "infer_attributes); they must have the model's size.")
_NUM = flags.DEFINE_integer("num_images", None, "How many test images / attribute vectors "
                           "(default 8), or the first N images of --input (default all).")
_SAMPLES = flags.DEFINE_integer("samples_per_attribute", 8, "Latent draws per vector.")
_ATTRIBUTE = flags.DEFINE_string("attribute", None, "Attribute name (progression: default "
                                 "all; edit: required).")
_VALUE = flags.DEFINE_float("value", None, "edit: the new value (default: the other end of "
                            "the attribute's training range).")
_OCCLUSION = flags.DEFINE_list("occlusion", None, "complete / evaluate / tune: occlusion "
                               "names (default: all that suit the dataset and its crop); "
                               "evaluate / tune: 'none' for the reconstruction columns only.")
_STEPS = flags.DEFINE_integer("steps", None, "Inference steps (default: config.inference.steps).")
_RESTARTS = flags.DEFINE_integer("restarts", None, "Restarts per image (default: config).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", -1, "evaluate / tune: first N test "
                                     "(tune: validation) images; -1: all (tune: the first "
                                     f"{evaluation.TUNE_EXAMPLES}).")
_FIDELITY = flags.DEFINE_bool("attribute_fidelity", True, "evaluate: also score attribute "
                              "fidelity with an attribute predictor (trained on first use and "
                              "saved in the first workdir).")
# evaluate's attribute predictor's training seed, whatever --seed says: the predictor is then
# one function of the dataset and its settings (`load_or_train`), which each --seed reuses and
# which scores every run of the dataset alike.
PREDICTOR_SEED = 0
_SEED = flags.DEFINE_integer("seed", 0, "Seed of latent draws, restarts and random occlusions "
                            "(0 to 2**31 - 1; a mode that draws none records it as null); not "
                            "of evaluate's attribute predictor, which "
                            f"is trained with seed {PREDICTOR_SEED} whatever --seed says.")
# Many hosts (README "Many hosts"): --coordinator_address, --num_processes, --process_id.
_JOIN_PROCESSES = distributed.define_flags()
flags.mark_flags_as_required(["workdir"])

# What modes need, checked for every requested mode before any of them runs.
_NEEDS_ATTRIBUTES = ("progression", "edit", "infer_attributes")  # The model must use them.
_INFERS = ("reconstruct", "complete", "edit", "infer_attributes", "tune", "evaluate")
_FLAG_USERS = {"input": ("reconstruct", "complete", "edit", "infer_attributes"),
               "num_images": ("sample", "reconstruct", "complete", "edit", "infer_attributes"),
               "attribute": ("progression", "edit"), "value": ("edit",),
               "occlusions": ("complete", "tune", "evaluate"), "steps": _INFERS,
               "restarts": _INFERS}
# The same for flags whose default is a value, not None: refused where named on the command
# line (`Options.given`) for no mode that reads them (were: ignored without a word).
_VALUED_FLAG_USERS = {"samples_per_attribute": ("sample",), "attribute_fidelity": ("evaluate",),
                      "num_examples": ("tune", "evaluate")}
# The modes whose every call draws from --seed (prior latents); what the others draw depends on
# their settings (`_draws`).
_DRAWS_ALWAYS = ("sample", "progression", "swap")
_TUNE_OCCLUSIONS = ("lower_half", "random_rect")  # tune's columns without --occlusion.
# Inference settings that change how the steps are run, not what they compute: left out of
# evaluate's comparison of the runs' settings (`_setting_differences`).
_HOW_STEPS_RUN = ("steps_per_call",)
DEFAULT_NUM_IMAGES = 8  # Test images or attribute vectors without --num_images.
# A mode's new files replace those of the same names in --out, all at once when it ends. Where
# one JSON describes a set of files whose names depend on the flags, the whole earlier set goes
# too: complete.json lists the occlusions, and a complete_<name>.png it does not list would
# look like part of it (README "Inference"). Other modes' files, e.g. a sample of another step
# or an edit of another attribute, are results of their own and stay.
# A mode stopped midway (Ctrl-C, an error) keeps what it finished under names of its own
# (`PARTIAL_FILES`: was deleted, review finding), as the set "<mode>_partial"; the mode's
# whole set, when a later call writes it, replaces them.
# The PNG names are the occlusions' own (was "complete_*.png": a user's complete_holiday.png
# or complete_partial_notes.png in --out was deleted by the next `complete`, review finding);
# progression's partial set, whose PNG names are the dataset's attributes', is
# `_mode_set`'s.
_COMPLETE_PARTIAL = tuple(f"complete_partial_{n}.png" for n in occlusions.OCCLUSION_NAMES)
MODE_SETS = {"complete": tuple(f"complete_{n}.png" for n in occlusions.OCCLUSION_NAMES)
                         + _COMPLETE_PARTIAL + ("complete.json", "complete_partial.json"),
             "complete_partial": _COMPLETE_PARTIAL + ("complete_partial.json",),
             "tune": ("tune_partial.json",),
             # A whole table replaces the partial one an earlier call left.
             "evaluate": ("evaluation_partial.md", "evaluation_partial.json")}
_PARTIAL = "_partial"  # Of the set a mode stopped midway keeps: "complete_partial".
PARTIAL_FILES = {"complete": "complete_partial.json and complete_partial_<occlusion>.png",
                 "progression": "progression_partial.json and "
                                "progression_partial_<attribute>.png",
                 "tune": "tune_partial.json",
                 "evaluate": "evaluation_partial.md and evaluation_partial.json"}
# The grids of one row per image or attribute vector (sample, reconstruct, complete, edit) are
# written in pages of at most ROWS_PER_PAGE rows, and at most PAGE_SIDE pixels of height, each
# made from its own rows alone (`_Run.save_rows`); several pages are named <stem>_001.png, ...
# (`_page_names`). Was one PNG of all, made from float copies of every image after all the
# inference: 10,000 reconstructions of 64x64 ran out of memory (8.5 GB) and lost hours of
# work, and from ~3,600 the PNG was one PIL refuses to open (fault hunt).
ROWS_PER_PAGE = 250
PAGE_SIDE = 32_000  # Pixels: most viewers give up on longer sides.
GRID_SCALE = 2  # The magnification of infer.py's pictures (`visualize.save_grid`'s scale).
# The pages of each mode's stems: replaced with the mode's set (`_mode_set`), so that a
# rerun with fewer images leaves no page of the earlier call behind.
_PAGED_STEMS = {"reconstruct": ("reconstruct",),
                "complete": tuple(f"complete{p}_{n}" for p in ("", _PARTIAL)
                                  for n in occlusions.OCCLUSION_NAMES),
                "complete_partial": tuple(f"complete_partial_{n}"
                                          for n in occlusions.OCCLUSION_NAMES)}


@dataclasses.dataclass(frozen=True)
class Options:
  """The command line, read once at the top of `main`."""
  workdirs: list[str]
  modes: list[str]
  out: Optional[str]
  step: Optional[int]
  input: Optional[str]
  num_images: Optional[int]  # None: DEFAULT_NUM_IMAGES test images, or all of --input.
  samples_per_attribute: int
  attribute: Optional[str]
  value: Optional[float]
  occlusions: Optional[list[str]]
  steps: Optional[int]
  restarts: Optional[int]
  num_examples: int
  attribute_fidelity: bool
  seed: int
  # Of `_VALUED_FLAG_USERS` and "seed", those the command line names.
  given: frozenset = frozenset()

  @classmethod
  def from_flags(cls) -> "Options":
    """The parsed absl flags."""
    # Each run stripped, as absl strips --mode's items (was: --workdir="a, b" refused, " b"
    # does not exist; fault hunt).
    # A folder whose name holds a comma (a sweep's runs/lr=3e-4,bs=8) is one run (was: split
    # in two, "--workdir runs/lr=3e-4 does not exist"; review finding).
    whole = _WORKDIR.value.strip()
    runs = ([whole] if "," in whole and os.path.isdir(os.path.expanduser(whole))
            else [w.strip() for w in _WORKDIR.value.split(",")])
    return cls(workdirs=[w for w in runs if w], modes=list(_MODE.value),
               out=_OUT.value, step=_STEP.value, input=_INPUT.value, num_images=_NUM.value,
               samples_per_attribute=_SAMPLES.value, attribute=_ATTRIBUTE.value,
               value=_VALUE.value, occlusions=_OCCLUSION.value, steps=_STEPS.value,
               restarts=_RESTARTS.value, num_examples=_NUM_EXAMPLES.value,
               attribute_fidelity=_FIDELITY.value, seed=_SEED.value,
               given=frozenset(f for f in (*_VALUED_FLAG_USERS, "seed")
                               if flags.FLAGS[f].present))

  def fingerprint(self) -> str:
    """The options but for paths, which may differ between hosts (the same folder mounted
    elsewhere): equal on processes that run the same command."""
    paths = ("workdirs", "out", "input")
    kept = {k: v for k, v in dataclasses.asdict(self).items() if k not in paths}
    # How many runs, and whether images are read: a difference hung or crashed the processes.
    kept.update(runs=len(self.workdirs), reads_input=self.input is not None)
    return json.dumps(kept, sort_keys=True, default=sorted)

  def expanded(self) -> "Options":
    """The options with `~` expanded in --workdir, --out and --input, which no shell does in
    `--out=~/x`: each path then names one folder wherever it is used (was: --out=~/x checked
    as the home folder's, written to a folder named "~" in the current one)."""
    user = os.path.expanduser
    return dataclasses.replace(self, workdirs=[user(w) for w in self.workdirs],
                               out=user(self.out) if self.out else self.out,
                               input=user(self.input) if self.input else self.input)

  def occlusion_names(self, default: Optional[list[str]] = None) -> Optional[list[str]]:
    """--occlusion as a list: `default` when not given, [] for "none" (no completions)."""
    if self.occlusions is None:
      return default
    return [] if self.occlusions == ["none"] else list(self.occlusions)

  def check(self) -> None:
    """Range-checks every count and size, and the modes, before anything is read or written.

    Raises:
      InputError: naming the flag, the value and what it may be.
    """
    if not self.workdirs:
      raise InputError("--workdir is empty; pass the folder train.py wrote.")
    empty = {"out": "a folder, or leave the flag out for WORKDIR/infer",
             "input": "an image file or a folder of images, or leave the flag out for the "
                      "test images",
             "attribute": "an attribute's name"}
    for flag, fix in empty.items():
      if getattr(self, flag) is not None and not getattr(self, flag).strip():
        raise InputError(f"--{flag} is empty; pass {fix}.")
    for workdir in self.workdirs:  # Was 65 tracebacks from the restore (TensorStore takes
      # UTF-8 paths), then advice to change the config; or another folder read (fault hunt).
      refused = files.utf8_refusal(os.path.abspath(os.path.expanduser(workdir)),
                                   files.READ_BY_TENSORSTORE)
      if refused is not None:
        raise InputError(f"--workdir {refused}")
    # Through links too (a review found a linked copy's rows beside the run's own).
    runs = [os.path.realpath(os.path.expanduser(w)) for w in self.workdirs]
    for workdir, run in zip(self.workdirs, runs):
      if runs.count(run) > 1:  # Was: the same rows twice in one evaluate table.
        raise InputError(f"--workdir={','.join(self.workdirs)} names {workdir} twice; give "
                         "each run once.")
    if not self.modes:
      raise InputError(f"--mode is empty; pass one or more of {', '.join(MODES)}.")
    for mode in self.modes:
      if mode not in MODES:
        raise InputError(f"unknown --mode {mode!r}; choose from {', '.join(MODES)}.")
      if self.modes.count(mode) > 1:
        raise InputError(f"--mode={','.join(self.modes)} names {mode} twice; give each mode "
                         "once.")
    if not 0 <= self.seed <= config_lib.MAX_SEED:
      raise InputError(f"--seed={self.seed}; pass a whole number from 0 to "
                       f"{config_lib.MAX_SEED}.")
    at_least = {"num_images": (self.num_images, 1),
                "samples_per_attribute": (self.samples_per_attribute, 1),
                "step": (self.step, 0), "steps": (self.steps, 0),
                "restarts": (self.restarts, 1)}
    for flag, (value, low) in at_least.items():
      if value is not None and value < low:
        raise InputError(f"--{flag}={value}; it must be at least {low}.")
    for flag in ("steps", "restarts"):  # Counted in int32 (was: a traceback from JAX; review).
      if (getattr(self, flag) or 0) > config_lib.INT32_MAX:
        raise InputError(f"--{flag}={getattr(self, flag)}; it must be at most "
                         f"{config_lib.INT32_MAX}.")
    if self.num_examples == 0 or self.num_examples < -1:
      # With tune's own meaning of -1, as the flag's help gives it (was: "-1 for all", and tune
      # then took the first 256; review finding).
      tune = (f" (tune: the first {evaluation.TUNE_EXAMPLES} validation images)"
              if "tune" in self.modes else "")
      raise InputError(f"--num_examples={self.num_examples}; pass a positive count, or -1 for "
                       f"all{tune}.")
    if self.occlusions is not None and not self.occlusions:
      raise InputError("--occlusion is empty; pass occlusion names (docs/occlusions.md), "
                       "'none' for the reconstruction columns only, or leave the flag out "
                       "for all that suit the dataset.")
    # Was: --occlusion=eyes,eyes completed twice, its column twice in tune's table (review
    # finding), where a repeated --mode was refused.
    for name in self.occlusions or ():
      if self.occlusions.count(name) > 1:
        raise InputError(f"--occlusion={','.join(self.occlusions)} names {name} twice; give "
                         "each occlusion once.")
    if self.occlusions is not None and "none" in self.occlusions:
      if len(self.occlusions) > 1:
        raise InputError(f"--occlusion={','.join(self.occlusions)}: 'none' stands alone; pass "
                         "either none or a list of occlusion names.")
      if "complete" in self.modes:
        raise InputError("--occlusion=none leaves --mode=complete nothing to fill; pass "
                         "occlusion names, or use --mode=reconstruct.")
    if self.value is not None and not math.isfinite(self.value):
      raise InputError(f"--value={self.value}; pass a finite number.")
    if self.value is not None and abs(self.value) > _FLOAT32_MAX:
      raise InputError(f"--value={self.value:g} is beyond float32's range "
                       f"(+-{_FLOAT32_MAX:.4g}), which the model computes in; pass a value "
                       "within the attribute's range.")
    unused = self.flags_unused_by(self.modes)
    if unused:
      name, users = unused[0]
      raise InputError(f"--{name} is used by --mode={', '.join(users)} only; drop it or "
                       "add one of those modes.")

  def flags_unused_by(self, modes: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The flags given that no mode of `modes` reads, as (the flag's name, the modes that
    read it): refused in a call of those modes (`check`)."""
    given = {flag: getattr(self, flag) is not None for flag in _FLAG_USERS}
    given.update({flag: flag in self.given for flag in _VALUED_FLAG_USERS})
    given["num_examples"] = given["num_examples"] or self.num_examples != -1
    return [("occlusion" if flag == "occlusions" else flag, users)
            for flag, users in {**_FLAG_USERS, **_VALUED_FLAG_USERS}.items()
            if given[flag] and not set(users) & set(modes)]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


# How a stop after the last mode's files are in --out is said (`_interrupted`, `main`).
_ALL_MODES_DONE = "after every mode had finished"


def _run_inference_options(config, opts: Options, **overrides) -> inference.InferenceOptions:
  """The inference options a run's modes use, from its config alone: its config.inference
  with --steps and --restarts where given (and `overrides`) applied.

  `infer_attributes` is off whatever the config says: each mode gives the known attributes
  (the test split's), and where they are unknown it infers them itself (`known_attributes`,
  `inference.infer_attributes`), with the training attributes' prior.
  """
  given = {k: v for k, v in (("steps", opts.steps), ("restarts", opts.restarts))
           if v is not None}
  return inference.InferenceOptions.from_config(
      config.inference, **{"infer_attributes": False, **given, **overrides})


def _draws(mode: str, opts: Options, options: inference.InferenceOptions,
           names: Sequence[str]) -> bool:
  """Whether --seed draws anything in `mode`: the prior latents of sample, progression and
  swap, and of evaluate's samples for its attribute fidelity; the random occlusions among
  `names` (`occlusions.GENERIC_OCCLUSIONS`: block8, block16, random_rect); the starts of
  posterior inference under `options` where it draws them (restarts past the first, or init
  "prior"). Inference with one restart from the encoder's answer or from zeros draws nothing:
  every --seed gives the same results (was: recorded as the seed they came from; fault
  hunt)."""
  if mode in _DRAWS_ALWAYS or (mode == "evaluate" and opts.attribute_fidelity):
    return True
  if options.restarts > 1 or options.init == "prior":
    return True
  return bool(set(names) & set(occlusions.GENERIC_OCCLUSIONS))


def _seed_draws(opts: Options, mode: str, config) -> bool:
  """`_draws` for `mode` of the run of `config`, from the config alone (before any restore):
  its inference options and its occlusions, --occlusion or the mode's default."""
  if mode in _DRAWS_ALWAYS:
    return True
  default = {"tune": _TUNE_OCCLUSIONS}.get(mode)
  if mode in ("complete", "evaluate"):
    default = occlusions.occlusions_for(config.data.name, config.model.image_size,
                                        evaluation.crop_frame(config))
  names = opts.occlusion_names(list(default)) if default else []
  return _draws(mode, opts, _run_inference_options(config, opts), names)


def _warn_idle_seed(opts: Options, configs: Sequence) -> None:
  """Warns of a --seed named on the command line where no requested mode draws anything from
  it for any of the runs of `configs` (`_seed_draws`): their JSON records "seed": null."""
  if "seed" not in opts.given or any(_seed_draws(opts, mode, config) for mode in opts.modes
                                     for config in configs):
    return
  extra = ("; no random occlusion or attribute fidelity" if "evaluate" in opts.modes else
           "; no random occlusion" if {"complete", "tune"} & set(opts.modes) else "")
  logging.warning("--seed=%d changes nothing in --mode=%s: it draws no noise (one restart of "
                  "inference, from the encoder's answer or from zeros as inference.init "
                  "says%s), so every --seed gives the same results, and the JSON records "
                  "\"seed\": null; drop --seed, or pass --restarts=N (N > 1), whose restarts "
                  "past the first start from noise drawn from it", opts.seed,
                  ",".join(opts.modes), extra)


def _image_count(num_images: Optional[int], available: int, source: str,
                 default: Optional[int]) -> int:
  """How many of the `available` images or attribute vectors of `source` to use: --num_images
  (with a warning when there are fewer), or `default` (None: all)."""
  if num_images is None:
    return available if default is None else min(default, available)
  if num_images > available:  # Was: capped without a word.
    logging.warning("--num_images=%d, but %s holds %d; using all %d", num_images, source,
                    available, available)
  return min(num_images, available)


def _file_part(name: str, names: Sequence[str] = (), prefix: str = "",
               suffix: str = "") -> str:
  """An attribute name as part of a file name: a folder dataset's CSV header may hold a path
  separator ("hair/color"), which would put the file in a sub-folder of --out. Where another
  of the dataset's `names` gives the same part (as "hair_color" beside "hair/color", or
  "Smile" beside "smile" on a file system that ignores case), each of them also gets its
  place in `names` ("hair_color_3"): was, `progression` of every attribute wrote both to one
  file, the second replacing the first without a word). Where such a suffix meets another
  name's own part ("x_y_1" beside "x/y" and "x_y"), every name gets its place.

  The file name `prefix` + part + `suffix` (the longest one it gets), and its temporary file
  while it is written, fit in `files.NAME_MAX` bytes: a part that would not is cut short and ends
  in a hash of the whole name (`_fitted`). Was the whole name, so that a 250-letter column
  stopped progression with "File name too long" after the work, and what it had finished
  went with it. Parts that fitted are as before.
  """
  names = tuple(names) if name in names else (name,)
  around = os.fsencode(prefix + suffix + suffix)  # The temporary file repeats the suffix.
  return _file_parts(names, files.NAME_MAX - files.ATOMIC_NAME_EXTRA - len(around))[name]


def _plain_part(name: str) -> str:
  for sep in {"/", "\\", os.sep, os.altsep} - {None}:
    name = name.replace(sep, "_")
  return name


def _fitted(part: str, name: str, room: int) -> str:
  """`part`, or where it is longer than `room` bytes (in the file system's encoding), its
  longest start that fits with "~" and 8 hex digits of the SHA-1 of the whole `name` after
  it, cut between characters: names that share a long start stay apart, and each keeps its
  own part from call to call. A character the file system's encoding cannot hold (a CJK
  column under a Latin-1 locale) is "_", and the hash follows too (was: UnicodeEncodeError's
  traceback, for every attribute's file name at once; fault hunt). `files.fitted_name` does
  both."""
  if files.fitted_name(part, room) == part:
    return part
  tail = "~" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
  return files.fitted_name(part, room - len(tail)) + tail


def _unreserved(part: str) -> str:
  """`part`, or where it is "partial" or starts with "partial_" (in any case: a file system
  may ignore it), "_" before it: those are the names a stopped progression keeps its partial
  set under (progression_partial.json, progression_partial_<part>.png). Was: an attribute
  "partial" wrote its finished progression_partial.png and .json, and the next progression
  of another attribute removed that JSON as the earlier partial set's (fault hunt); one named
  "partial_smile" wrote what a stopped progression keeps of "smile"."""
  low = part.lower()
  reserved = _PARTIAL[1:]
  return f"_{part}" if low == reserved or low.startswith(f"{reserved}_") else part


@functools.lru_cache(maxsize=8)
def _file_parts(names: tuple[str, ...], room: int) -> dict[str, str]:
  """{name: its file part of at most `room` bytes} for `_file_part`, once per list of names
  (CUB has 312)."""
  plain = [_unreserved(_plain_part(n)) for n in names]
  count: dict[str, int] = {}
  for p in plain:
    count[p.lower()] = count.get(p.lower(), 0) + 1
  parts = [_fitted(f"{p}_{i}" if count[p.lower()] > 1 else p, n, room)
           for i, (p, n) in enumerate(zip(plain, names))]
  # A suffix met a name's own part, or a cut name met another (its hash, or a name written
  # as a cut one): the index after the last "_" tells apart, whatever comes before it.
  if len({p.lower() for p in parts}) < len(parts):
    parts = [_fitted(p, n, room - len(f"_{i}")) + f"_{i}"
             for i, (p, n) in enumerate(zip(plain, names))]
  return dict(zip(names, parts))


def _read_images(path: str, size: int, num_images: Optional[int] = None
                 ) -> tuple[np.ndarray, list[str]]:
  """The --input images (the first `num_images` of them, if given) and their file names."""
  names = image_files(path, "--input")
  names = names[:_image_count(num_images, len(names), f"--input {path}", None)]
  return read_images(names, size), names


def _check_workdir(workdir: str, listed: Sequence[str] = ()) -> None:
  """Refuses a --workdir that is no folder; `listed`: the runs of a --workdir list that held
  it (was: a folder named with a comma was split in two, and the message did not say so)."""
  if not os.path.exists(workdir):
    comma = (" (a comma separates runs in --workdir, and the whole value is not a folder "
             "either)" if len(listed) > 1 else "")  # Not rebuilt: its runs were stripped.
    raise InputError(f"--workdir {workdir} does not exist; pass the folder train.py wrote"
                     f"{comma}.")
  if not os.path.isdir(workdir):
    raise InputError(f"--workdir {workdir} is a file; pass the folder train.py wrote.")
  run = checkpoints.enclosing_run(workdir)
  if run is not None:  # Was: a run trained inside its checkpoints/ by mistake served instead.
    raise InputError(f"--workdir {workdir} is inside the run {run}, in one of the folders it "
                     f"manages; pass {run}.")


def _run_config(workdir: str):
  """The run's config (`inference.load_run_config`), its invalid JSON named for infer.py."""
  try:
    return inference.load_run_config(workdir)
  except ConfigError as e:
    if not isinstance(e.__context__, (json.JSONDecodeError, UnicodeDecodeError)):
      raise
    raise InputError(f"{os.path.join(workdir, checkpoints.CONFIG_FILE)} is not valid JSON "
                     f"({e.__context__}); infer.py needs the config train.py wrote there: "
                     "restore the file, or train the run again.") from None


def _checked_config(workdir: str, opts: Options, out: str):
  """The run's config, once every check that needs no restore passed (the modes it can do,
  their flags, --out), so that a mistake costs no waiting and leaves nothing written."""
  config = _run_config(workdir)
  model = models.create_model(config.model)
  _check_modes(opts, model, config)
  if set(_INFERS) & set(opts.modes):  # Was: found by the first inference, after the modes
    # before it had written their files.
    inference.resolve_energy(inference.InferenceOptions.from_config(config.inference), model,
                             os.path.join(workdir, checkpoints.CONFIG_FILE))
  if opts.modes != ["evaluate"]:  # `evaluate` warns once for all its runs.
    _warn_idle_seed(opts, [config])
  _check_out_of_checkpoints(out, workdir)  # First: the write test below writes in --out
  _check_out_apart_from_input(out, opts.input, workdir)  # (was: a file made and removed
  check_output_folder(out, "--out")  # inside a checkpoint).
  return config


def _check_out_apart_from_input(out: str, given: Optional[str], workdir: str) -> None:
  """Refuses an --out that is the folder of --input (the folder itself, or a file's folder):
  the results replaced the user's images of the same names, and a folder's next call read
  them as inputs (review: --input=f/reconstruct.png --out=f replaced the photo with a grid of
  196x66). A folder inside it is fine: --input reads no sub-folders."""
  if given is None:
    return
  # A file's own folder, not its link target's: the results replace the link (review).
  folder = os.path.realpath(given if os.path.isdir(given)
                            else os.path.dirname(os.path.abspath(given)))
  if os.path.realpath(out) == folder:
    default = os.path.join(workdir, "infer")
    named = ("" if os.path.realpath(default) == folder else f" (the default is {default})")
    raise InputError(f"--out {out} is the folder of --input ({folder}), whose images the "
                     f"results would replace or join; pass --out=another folder{named}.")


def _check_out_of_checkpoints(out: str, workdir: str) -> None:
  """Refuses an --out inside a run's checkpoint folders (this run's or another's): training
  and infer.py take every folder there for a checkpoint (was: --out=WORKDIR/checkpoints/8
  written, after which every restore of the run failed and training moved the results aside
  as a corrupt step)."""
  full = os.path.realpath(out)
  # This run's, and any other's (was: --out=OTHER_RUN/checkpoints/50 accepted, after which
  # that run's checkpoint 50 "could not be restored"; review finding).
  for run in dict.fromkeys((workdir, checkpoints.enclosing_run(out) or workdir)):
    for name in (checkpoints.CHECKPOINT_DIR, checkpoints.CORRUPT_DIR):
      folder = os.path.realpath(os.path.join(run, name))
      if full == folder or full.startswith(folder + os.sep):
        raise InputError(f"--out {out} lies in {folder}, where every folder is taken for a "
                         "checkpoint; pass --out=a folder outside it (the default is "
                         f"{os.path.join(workdir, 'infer')}).")


def _attribute_index(names, name: str) -> int:
  if name not in names:
    raise InputError(f"no attribute {name!r}; this dataset's attributes are: {', '.join(names)}.")
  return names.index(name)


def _progress(line: str) -> None:
  """A progress line, on standard error (standard output holds the results), by process 0
  alone (the others' standard output is silenced, not their standard error: each printed it
  too; read-through)."""
  if distributed.is_main():
    print(line, file=sys.stderr, flush=True)


class _Run:
  """What every mode needs: the options, the model, its dataset, the output folder."""

  def __init__(self, workdir: str, opts: Options):
    self.workdir = workdir
    self.opts = opts
    self.out = opts.out or os.path.join(workdir, "infer")
    self.size = _checked_config(workdir, opts, self.out).model.image_size
    self.inputs = (_read_images(opts.input, self.size, opts.num_images) if opts.input
                   else None)
    if self.inputs is not None and distributed.process_count() > 1:  # Was unchecked: another
      # folder per host mixed the images.
      distributed.same_on_every_process(
          "the --input images", hashlib.sha256(self.inputs[0].tobytes()).hexdigest()[:16],
          "give every process the same --input images")
    info = checkpoints.load_dataset_info(workdir)
    self.trained = inference.load_trained(workdir, opts.step)
    # The run's persistent XLA cache: a second call starts without compiling.
    files.enable_compilation_cache(self.trained.config.compilation_cache_dir)
    self.dataset = _load_data(self.trained.config, workdir)
    self.names = list(self.dataset.attribute_names)
    self.ranges = info.get("attribute_ranges") if info else None
    if opts.attribute:
      _attribute_index(self.names, opts.attribute)
    if (self.trained.attribute_ranges is None
        and len(self.names) == self.trained.config.model.y_dim):  # Stored by older runs: none.
      self.trained = dataclasses.replace(  # So that `edit` warns of a --value outside them.
          self.trained, attribute_names=tuple(self.names),
          attribute_ranges=tuple(self.value_range(j) for j in range(len(self.names))))
    self.swept = self._swept_attributes()
    self.stage = self.out  # The folder the running mode writes to (`_staged`).
    self.done: list[str] = []  # The sets written (`_staged`; `run_modes` passes its own).
    # The running mode's pictures that could not be made ([(their names, why)], `save_rows`),
    # and where its JSON is to be (`save_json`): the error after its set is in --out.
    self.unmade: list[tuple[list[str], str]] = []
    self.json_shown: Optional[str] = None
    self.key = jax.random.key(opts.seed)
    # Process 0's on every process: an inverse may differ in its last bits between hosts, and
    # inference compares its inputs bit for bit across processes.
    self.prior = inference.AttributePrior.fit(self.dataset["train"].attributes).of_process_0()

  def _swept_attributes(self) -> list[int]:
    """The attributes progression sweeps (--attribute, or every one that took more than one
    value in training), once edit and progression were checked against the attributes that
    took one value alone (training range lo == hi; was: edit without --value "changed" such an
    attribute to the value it had, progression drew 8 equal columns, both without a word;
    fault hunt).

    Returns:
      The attribute indices, [] where no progression runs.
    Raises:
      InputError: edit without --value of such an attribute, a progression of one named in
        --attribute, or of all attributes where every one is such.
    """
    modes = self.opts.modes
    if not {"edit", "progression"} & set(modes) or not self.trained.model.uses_attributes:
      return []  # Not asked for (`_check_modes` refused those of a model without attributes).
    ranges = [self.value_range(k) for k in range(len(self.names))]
    flat = {k: lo for k, (lo, hi) in enumerate(ranges) if lo == hi}
    j = self.names.index(self.opts.attribute) if self.opts.attribute else None
    if "edit" in modes and self.opts.value is None and j in flat:
      raise InputError(f"--attribute={self.opts.attribute} took one value in training "
                       f"({flat[j]:g}), so --mode=edit has no other end of its range to "
                       "change it to; pass --value=the new value.")
    if "progression" not in modes:
      return []
    if j is not None:
      if j in flat:
        raise InputError(f"--mode=progression of --attribute={self.opts.attribute}: it took "
                         f"one value in training ({flat[j]:g}), so every column would show "
                         "the same; pass --attribute=one that varies, or leave it out for "
                         "all that do.")
      return [j]
    if len(flat) == len(self.names):
      raise InputError(f"--mode=progression: every attribute took one value in training "
                       f"({', '.join(self.names)}), so no sweep would change the image; "
                       "train on data whose attributes vary.")
    if flat:
      logging.warning("--mode=progression skips %s: %s one value in training, so every "
                      "column of its sweep would show the same",
                      ", ".join(self.names[k] for k in flat),
                      "it took" if len(flat) == 1 else "each took")
    return [k for k in range(len(self.names)) if k not in flat]

  def options(self, **overrides) -> inference.InferenceOptions:
    """The run's inference options (`_run_inference_options`), `overrides` applied."""
    return _run_inference_options(self.trained.config, self.opts, **overrides)

  def settings(self, mode: str, opts: Optional[inference.InferenceOptions] = None,
               names: Sequence[str] = ()) -> dict:
    """What `mode`'s JSON records of how it ran: --seed and every inference setting (steps,
    restarts, learning rate, ...), so that files of two calls with other flags can be told
    apart (was: none of them in reconstruct, edit and infer_attributes files, only the steps
    in complete.json; review finding). Without `opts` (sample, progression, swap: they
    decode prior latents and run no posterior inference; tune: each row holds its own),
    --seed alone. "seed" is null where the mode draws nothing from it (`_draws`, of the
    occlusions `names` and of `opts`, or the run's options: was --seed, though every seed
    gave the same files; fault hunt)."""
    seed = self.opts.seed if _draws(mode, self.opts, opts or self.options(), names) else None
    if opts is None:
      return {"seed": seed}
    return {"seed": seed, "inference": dataclasses.asdict(opts)}

  def images(self):
    """(images, attributes or None when they must be inferred, labels)."""
    if self.inputs is not None:
      images, names = self.inputs
      return images, None, [os.path.basename(f) for f in names]
    test = self.dataset["test"]
    n = _image_count(self.opts.num_images, len(test), "the test split", DEFAULT_NUM_IMAGES)
    return test.images[:n], test.attributes[:n], [f"test[{i}]" for i in range(n)]

  def known_attributes(self, images, attrs, observed=None):
    """(`attrs`, None), or for --input images (the attributes inferred jointly with z from the
    `observed` pixels (None: all), so that hidden pixels never inform them, and which of them
    that inference diverged for, its "diverged" [N]). An image whose attribute inference
    diverged (no finite energy, or one that ended clearly above its start) gets the prior's
    mean, so that the mode runs on, and its results are named as diverged
    (`_with_attributes`). Was: its NaN attributes refused as "attributes contain NaN
    or infinity", which the user never gave, and finite ones that mean nothing scored like
    any other's."""
    if attrs is None and self.trained.model.uses_attributes:
      out = inference.infer_attributes(self.trained, images, self.prior, observed,
                                       key=self.key, options=self.options())
      attrs, diverged = np.array(out["y"], np.float32), inference.posterior.diverged_of(out)
      if diverged.any():
        attrs[diverged] = self.prior.mean
      return attrs, diverged
    return attrs, None

  def inferred(self, labels, attrs, attribute_diverged) -> dict:
    """What a mode's JSON records of the attributes `known_attributes` inferred for --input
    images (was nothing, beside "infer_attributes": false, though they decide, e.g., the
    direction of edit's default; fault hunt): "inferred_attributes", one row per image as
    infer_attributes.json has them (null for an image whose inference diverged, which ran on
    with the prior's mean), and "attribute_inference", every setting that inference ran
    with; {} where the attributes were given (`attribute_diverged` None).

    Args:
      labels: the images' labels.
      attrs: [N, y_dim], as `known_attributes` returned them.
      attribute_diverged: [N], which of them that inference diverged for, or None.
    Returns:
      The JSON keys.
    """
    if attribute_diverged is None:
      return {}
    ran = dataclasses.replace(self.options(), infer_attributes=True)  # As the library runs it.
    return {"inferred_attributes": _attribute_rows(
                labels, self.names, _unless_diverged(attrs, attribute_diverged)),
            "attribute_inference": dataclasses.asdict(ran)}

  def images_and_attributes(self):
    """(images, attributes, labels, [0, 1] images, which images the attributes' inference
    diverged for or None: `known_attributes`), attributes inferred from whole images."""
    images, attrs, labels = self.images()
    attrs, diverged = self.known_attributes(images, attrs)
    return images, attrs, labels, to_unit(images), diverged

  def value_range(self, j: int) -> tuple[float, float]:
    """The training minimum and maximum of attribute `j` (as stored at training if it was)."""
    if self.ranges:
      return float(self.ranges[j][0]), float(self.ranges[j][1])
    col = self.dataset["train"].attributes[:, j]
    return float(col.min()), float(col.max())

  def save(self, images, name, ncols):
    """Writes a PNG grid of `images` to the running mode's folder."""
    _write(os.path.join(self.stage, name), lambda p: visualize.save_grid(
        np.asarray(images).reshape((-1,) + np.shape(images)[-3:]), p, ncols, scale=GRID_SCALE),
           shown=os.path.join(self.out, name))

  def save_rows(self, columns: Sequence, name: str) -> list[str]:
    """Writes a PNG grid of one row per image (or attribute vector), `columns` side by side,
    to the running mode's folder, in pages of at most `ROWS_PER_PAGE` rows and `PAGE_SIDE`
    pixels of height (`_page_names`), each made from uint8 copies of its own rows alone. A
    page that cannot be made (no memory for it) stops the grid:
    the names not written and why are added to `unmade`, for the mode's JSON
    (`unmade_record`) and the error after its set is in --out (`unmade_error`). A failed
    write (a full disk) is an error at once, as every file's.

    Args:
      columns: K arrays [N, H, W, 3] (floats in [0, 1], or uint8), or functions that give a
        column's rows for a slice of them (a column made a page at a time).
      name: the file name of a grid of one page ("reconstruct.png").
    Returns:
      The file names written, in order: `name`, or its pages; those before an unmade one.
    """
    shape = np.shape(next(c for c in columns if not callable(c)))
    per = max(1, min(ROWS_PER_PAGE, PAGE_SIDE // (GRID_SCALE * shape[1] + 1)))  # Pad: 1 px.
    names = _page_names(name, -(-shape[0] // per))
    for page, page_name in enumerate(names):
      rows = slice(page * per, (page + 1) * per)
      try:
        _write(os.path.join(self.stage, page_name), functools.partial(_save_page, columns, rows),
               shown=os.path.join(self.out, page_name))
      except _Unmade as e:
        self.unmade.append((names[page:], str(e)))
        return names[:page]
    return names

  def unmade_record(self) -> dict:
    """What the running mode's JSON records of its pictures not made (`save_rows`):
    {"pictures_not_made": [{"files": [...], "error": why}, ...]}, or {} for none."""
    if not self.unmade:
      return {}
    return {"pictures_not_made": [{"files": names, "error": why}
                                  for names, why in self.unmade]}

  def unmade_error(self, mode: str) -> InputError:
    """The error for `mode`'s pictures not made, once its set (its JSON) is in --out."""
    names = [n for listed, _ in self.unmade for n in listed]
    counts = "--num_images" + (" or --samples_per_attribute" if mode == "sample" else "")
    where = (f"{self.json_shown}, whose \"files\" lists the pictures written"
             if self.json_shown else self.out)
    return InputError(f"--mode={mode} could not make {len(names)} of its pictures "
                      f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): "
                      f"{self.unmade[0][1]}; its results are in {where}. For the pictures, "
                      f"free some memory or ask for fewer images ({counts}).")

  def page_stems(self, mode: str) -> tuple[str, ...]:
    """The stems of `mode`'s paged grids whose names depend on the run or the flags (sample's
    step, edit's attribute), for `_mode_set`; `_PAGED_STEMS` holds the others."""
    if mode == "sample":
      return (f"sample_step{self.trained.step}",)
    if mode == "edit" and self.opts.attribute in self.names:
      return (_edit_stem(self.opts.attribute, self.names),)
    return ()

  def save_json(self, obj, name, folder: Optional[str] = None):
    """Writes `obj` as JSON to the running mode's folder (or `folder`), with the run and
    checkpoint that made it ("workdir", "step": outputs of several runs or steps may share
    one --out)."""
    obj = {"workdir": os.path.abspath(self.workdir), "step": self.trained.step, **obj}
    if folder is None:
      self.json_shown = os.path.join(self.out, name)
    _write(os.path.join(folder or self.stage, name), lambda p: evaluation.write_json(obj, p),
           shown=os.path.join(self.out, name))

  def keep_partial(self, mode: str, renamed: dict[str, str], obj: dict, name: str) -> None:
    """Keeps what `mode` finished before it stopped (Ctrl-C, an error): the files `renamed`
    names in its staging folder, under their new names, and `obj` as the JSON `name`, moved
    into --out together (`_staged` as "<mode>_partial", which `_interrupted` reports). Was:
    deleted with the staging folder (review finding). A failure to keep them is a warning:
    the error that stopped the mode is the one to see."""
    try:
      with _staged(self.out, f"{mode}{_PARTIAL}", self.done, functools.partial(
          _mode_set, f"{mode}{_PARTIAL}", self.names, self.out)) as stage:
        if distributed.is_main():
          for old, new in renamed.items():
            os.replace(os.path.join(self.stage, old), os.path.join(stage, new))
        self.save_json({**obj, "partial": True}, name, folder=stage)
    except Exception as failed:  # pylint: disable=broad-except
      logging.warning("could not keep what --mode=%s finished: %s", mode, failed)


# What to do about a failed write, by its errno; any other: `_WRITE_FIX`. Was "free some
# space" for every one, also "File name too long" (fault hunt). Those of storage errors build
# on `files.storage_fix` (was: EIO's and EFBIG's worded again here).
_WRITE_FIXES = {
    errno.ENOSPC: f"{files.storage_fix(errno.ENOSPC)} or pass --out=a folder you can write to",
    errno.EDQUOT: f"{files.storage_fix(errno.EDQUOT)} or pass --out=a folder you can write to",
    errno.ENAMETOOLONG: "its path is longer than the file system allows; pass --out=a folder "
                        "with a shorter path",
    errno.EISDIR: "a folder of that name is in the way; move it, or pass --out=another folder",
    errno.EIO: f"the disk failed; {files.storage_fix(errno.EIO)}, or pass --out=a folder on "
               "another disk",
    errno.EFBIG: f"{files.storage_fix(errno.EFBIG)}, or pass --out=a folder on such a file "
                 "system",
}
_WRITE_FIX = "pass --out=a folder you can write to"


def _write_error(path: str, e: OSError, note: str = "") -> InputError:
  """The one line for a failed write of `path`: the OS's reason and what to do about it, and
  `note` after it (a sentence: where the files are, `_move_back`)."""
  return InputError(f"could not write {path} ({e.strerror or e}); "
                    f"{_WRITE_FIXES.get(e.errno, _WRITE_FIX)}.{' ' + note if note else ''}")


def _write(path: str, write: Callable[[str], None], shown: Optional[str] = None) -> None:
  """Runs `write(path)` in process 0 only; a failed write (disk full, permissions) is one
  plain error that names `shown` (the file in --out that `path`, in a staging folder, is
  to become; was the hidden staging file, review finding), or `path`. Every process
  computes what is written, so their results are the same."""
  if not distributed.is_main():
    return
  try:
    write(path)
  except OSError as e:
    raise _write_error(shown or path, e) from None


class _Unmade(Exception):
  """A page of a grid that could not be made (`_save_page`): its message says why."""


def _save_page(columns: Sequence, rows: slice, path: str) -> None:
  """Writes the grid of `rows` of `columns` (`_Run.save_rows`) to `path`, from uint8 copies
  of those rows alone (was: a float stack of every image, and its uint8 copy, at once).

  Raises:
    _Unmade: no memory for it; OSError: a failed write.
  """
  try:
    page = visualize.stack_columns([
        to_uint8(_drawable(c(rows) if callable(c) else np.asarray(c[rows]))) for c in columns])
    visualize.save_grid(page, path, len(columns), scale=GRID_SCALE)
  except MemoryError:
    raise _Unmade("this machine had not the memory to make it") from None
  except visualize.GridTooLargeError as e:  # Its reason: its advice names no flag of ours.
    raise _Unmade(e.reason) from None


def _drawable(images: np.ndarray) -> np.ndarray:
  """`images` with NaN and infinities drawn mid-grey: an image whose inference diverged, which
  the mode's JSON names (was: its NaN pixels stopped the call's picture and every mode after
  it, with advice about memory; read-through)."""
  if images.dtype == np.uint8 or np.isfinite(images).all():
    return images
  return np.where(np.isfinite(images), images, 0.5).astype(images.dtype)


def _page_names(name: str, pages: int) -> list[str]:
  """The files of a grid `name` ("reconstruct.png") of `pages` pages: `name` for one page,
  else "reconstruct_001.png", ... (3 digits, or as many as the count needs)."""
  if pages <= 1:
    return [name]
  stem, digits = name[:-len(".png")], max(3, len(str(pages)))
  return [f"{stem}_{i:0{digits}d}.png" for i in range(1, pages + 1)]


def _pages_in(out: Optional[str], stems: Sequence[str], keep: Sequence[str] = ()
              ) -> tuple[str, ...]:
  """The pages of grids of `stems` (<stem>_<3 or more digits>.png, `_page_names`) that the
  earlier call's JSON in `out` lists in its "files" (<stem>.json; complete.json and
  complete_partial.json for completions), but for the names in `keep` (other results of their
  own). Was: every file in `out` of a page's name, a user's own reconstruct_2024.png too
  (read-through); a JSON of a release before pages lists none."""
  if out is None or not stems:
    return ()
  records = dict.fromkeys(
      f"{'complete_partial' if s.startswith('complete_partial_') else 'complete'}.json"
      if s.startswith("complete_") else f"{s}.json" for s in stems)
  listed = []
  for record in records:
    try:
      with open(os.path.join(out, record), encoding="utf-8") as f:
        files = json.load(f).get("files")
    except (OSError, ValueError, AttributeError):  # None there, unreadable, no object.
      continue
    for entry in (files.values() if isinstance(files, dict) else [files]):
      listed += [n for n in entry if isinstance(n, str)] if isinstance(entry, list) else []
  return tuple(dict.fromkeys(n for n in listed if n not in keep and any(
      n.startswith(f"{s}_") and re.fullmatch(r"\d{3,}\.png", n[len(s) + 1:]) for s in stems)))


def _edit_stem(name: str, names: Sequence[str]) -> str:
  """The file stem of edit's files for attribute `name`: one part for both, with room for the
  longer suffix."""
  return f"edit_{_file_part(name, names, 'edit_', '.json')}"


def _mode_set(mode: str, names: Sequence[str] = (), out: Optional[str] = None,
              stems: Sequence[str] = ()) -> tuple[str, ...]:
  """The files of `mode`'s set (or "<mode>_partial"'s) that its next set replaces in --out
  (`_staged`): `MODE_SETS`', and for progression, whose names are the dataset's attributes',
  the partial set a stopped progression kept (`_progression_partial`): those of this run's
  attributes, and those the progression_partial.json in `out` lists (was: this run's alone, so
  another run's partial PNGs stayed, described by nothing; review finding).

  Args:
    mode: a mode, or "<mode>_partial".
    names: the run's attribute names (progression's and edit's sets only).
    out: the --out folder (progression's set, and the pages of paged grids, `_pages_in`;
      None: this run's names alone).
    stems: the stems of the mode's paged grids beside `_PAGED_STEMS`' (sample's, edit's:
      `_Run.page_stems`); their one-page PNG and their pages in `out` are of the set.
  Returns:
    The file names.
  """
  paged = (*_PAGED_STEMS.get(mode, ()), *stems)
  if paged:  # Was: a rerun with fewer images left the earlier call's pages.
    # Another attribute's edit (edit_smile_001.png of "smile_001") is no page of edit_smile.
    edits = [f"{_edit_stem(n, names)}.png" for n in names] if mode == "edit" else []
    return tuple(dict.fromkeys((*MODE_SETS.get(mode, ()), *(f"{s}.png" for s in paged),
                                *_pages_in(out, paged, edits))))
  if mode in ("progression", f"progression{_PARTIAL}"):
    listed = _partial_listed(out) if out is not None else []
    # None: the JSON there is an older version's finished progression of an attribute named
    # "partial" (`_unreserved`), which stays (was: removed, its PNG left without it).
    record = () if listed is None else (f"progression{_PARTIAL}.json",)
    return tuple(dict.fromkeys((*record,
                                *(_progression_partial(name, names) for name in names),
                                *(listed or ()))))
  return MODE_SETS.get(mode, ())


def _partial_listed(out: str) -> Optional[list[str]]:
  """The PNGs the progression_partial.json in `out` lists, of the partial naming alone
  (progression_partial_<part>.png, no folder: a record edited by hand removes no other file);
  none where it is missing or unreadable; None where it is no partial record but the finished
  record of one attribute (no "partial": true, an "attribute"), as an older version wrote for
  an attribute named "partial"."""
  try:
    with open(os.path.join(out, f"progression{_PARTIAL}.json"), encoding="utf-8") as f:
      record = json.load(f)
    if (isinstance(record, dict) and record.get("partial") is not True
        and "attribute" in record):
      return None
    listed = [name for attribute in record["attributes"] for name in attribute["files"]]
  except (OSError, ValueError, KeyError, TypeError):
    return []
  seps = {"/", "\\", os.sep, os.altsep} - {None}
  return [name for name in listed if isinstance(name, str)
          and name.startswith("progression_partial_") and name.endswith(".png")
          and not any(sep in name for sep in seps)]


@contextlib.contextmanager
def _staged(out: str, mode: str, done: list[str],
            earlier_set: Union[Sequence[str], Callable[[], Sequence[str]]],
            quiet: bool = False) -> Iterator[str]:
  """A new folder inside `out` for one mode's files. When the mode ends well, the set's files
  in `out` (its earlier set, `earlier_set`: `_mode_set`'s, and those of the new files' names)
  are moved aside into the folder's `_EARLIER` (JSON first), then the new files are moved in
  (JSON last), the earlier ones go with the folder, and `mode` is appended to `done`; when
  the mode fails or is interrupted, the folder goes and `out` is left as it was (no folder if
  it held nothing). A Ctrl-C while the folder is made, during the move or during the
  folder's removal waits for it (a kill during the removal leaves a folder that the next
  call removes without a word: `_REPLACED`). A
  process killed outright (SIGKILL, the out-of-memory killer) during the move leaves part of
  one set without its JSON, never files of two calls together (was: the new images beside
  the old JSON, which describes another checkpoint and seed; review finding). A rename that
  fails midway (a failing disk) is undone (`_move_back`: `out` as it was); where that fails
  too, the folder is kept with what is not in `out` and named in the error line (was: the
  earlier set was deleted before the new one came, and both went with the folder; review
  finding). Two processes moving into one `out` take turns (`_out_lock`; where the file
  system has no locks for a folder, NFS, they do not: a warning says so). The folders made
  for `out` (its missing parents too) go again where the mode leaves them empty.

  Args:
    out: the --out folder.
    mode: the set's name, a mode or "<mode>_partial".
    done: the sets written; `mode` is appended once its files are in.
    earlier_set: the names of the earlier set, or a function that gives them (called while
      the lock is held, so that it reads `out` as the move finds it).
    quiet: no "wrote" line per file.
  Yields:
    The folder to write to (process 0; the others write nothing and get `out`).
  Raises:
    InputError: `out` or a file in it cannot be written (a full disk, a folder in the way);
      where the move had begun, the line says where the files are.
  """
  if not distributed.is_main():
    yield out
    done.append(mode)
    return
  # The folders made for `out`, outermost first: each removed again where left empty. Only
  # those this process made (`files.make_folders`; was `missing_folders`' look before the
  # making, which held one another process made meanwhile, removed on a failure; review).
  made: list[str] = []
  stage, owner, keep = None, None, False  # keep: a move that failed midway (`_move_back`).
  # The move's hold on the signals, kept over the clean-up after it (`_clean_up`): was, a
  # Ctrl-C there stopped the clean-up and left the folder, with the replaced files, and the
  # line said to run a finished call again (fault hunt).
  hold, holding = contextlib.ExitStack(), False
  try:
    with interrupts.held():  # A Ctrl-C just after the folder is made still removes it.
      try:
        made = files.make_folders(out)
        _remove_dead_stages(out)
        stage = tempfile.mkdtemp(prefix=f".{mode}-unfinished-{_HOST}-", dir=out)
        owner = _own(stage)
        # Made now, while the mode has not filled the disk: the move needs no new folder
        # (was made at the move, and a disk filled meanwhile refused it and lost the new
        # files; read-through).
        os.mkdir(os.path.join(stage, _EARLIER))
      except OSError as e:
        raise _write_error(out, e) from None
    yield stage
    # The lock outside: a Ctrl-C stops a wait for another process.
    with _out_lock(out):
      hold.enter_context(interrupts.held())  # So that it cannot leave old and new files mixed.
      holding = True
      where = out  # The file each step below writes or moves, for its error line.
      aside: list[str] = []  # The earlier files moved into `_EARLIER`, in order.
      moved: list[str] = []  # The new files moved into `out`, in order.
      try:
        earlier = frozenset(earlier_set() if callable(earlier_set) else earlier_set)
        new = sorted((n for n in os.listdir(stage) if n not in (_STAGE_OWNER, _EARLIER)),
                     key=lambda n: (n.endswith(".json"), n))  # JSON last: it seals the set.
        for name in new:  # Before anything changes (was: found with part of the set moved).
          where = os.path.join(out, name)
          if files.is_folder(where):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), where)
        gone = sorted((n for n in os.listdir(out) if (n in earlier or n in new)
                       and not files.is_folder(os.path.join(out, n))),  # A folder is the user's.
                      key=lambda n: (not n.endswith(".json"), n))  # JSON first.
        where = out
        for name in gone:  # Aside, not deleted: a failure below puts them back.
          where = os.path.join(out, name)
          os.replace(where, os.path.join(stage, _EARLIER, name))
          aside.append(name)
        for name in new:
          where = os.path.join(out, name)
          os.replace(os.path.join(stage, name), where)
          moved.append(name)
        where = out
        files.sync_folder(out)  # On the disk before "wrote" says so.
      except OSError as e:  # Names the file it could not write or move (was `out` only).
        back, note = _move_back(out, stage, moved, aside) if aside or moved else (True, "")
        keep = not back  # The folder holds files that are nowhere else.
        if keep:  # Out of `_remove_dead_stages`' reach, by a name of its own (a rename: no
          # new blocks); where that fails too, by its earlier files (`_remove_dead_stages`).
          kept = stage.replace("-unfinished-", "-kept-", 1)
          with contextlib.suppress(OSError):
            os.replace(stage, kept)
            note, stage = note.replace(stage, kept), kept
        raise _write_error(where, e, note) from None
      with contextlib.suppress(OSError):  # The move has finished: the earlier files are the
        # replaced set, which `_remove_dead_stages` takes without a word after a kill.
        os.rename(os.path.join(stage, _EARLIER), os.path.join(stage, _REPLACED))
      done.append(mode)
      for name in new if not quiet else ():  # Inside: a held Ctrl-C still lists what is in.
        print(f"wrote {os.path.join(out, name)}")
  except BaseException:
    with hold:  # The error or interrupt goes on: one held meanwhile adds nothing to it.
      if not holding:  # The mode stopped or failed, or the wait for the lock did.
        hold.enter_context(interrupts.held())
      _clean_up(stage, owner, keep, made)
      raise
  with hold:  # A signal waits for the clean-up too, then comes (`interrupts.held`).
    _clean_up(stage, owner, keep, made)


def _clean_up(stage: Optional[str], owner: Optional[int], keep: bool, made: list[str]
              ) -> None:
  """`_staged`'s end: removes the staging folder `stage` (None: not made), or, where `keep`,
  only its owner file; lets go of `owner`, its owner file's lock; and removes the folders
  `made` for `out` where left empty."""
  if owner is not None:  # First: NFS keeps an open file's name (.nfs...), and the folder.
    os.close(owner)
  if stage is not None and keep:  # Without its owner file too.
    with contextlib.suppress(OSError):
      os.remove(os.path.join(stage, _STAGE_OWNER))
  elif stage is not None:
    _remove_stage(stage)
  # Was: --out=a/b removed b only, and left an empty a (review finding). One filled
  # meanwhile by another process stays, and so do those above it.
  files.remove_empty_folders(reversed(made))


def _remove_stage(stage: str) -> None:
  """Removes a staging folder, its owner file last: a process killed meanwhile leaves one
  that the next call's `_remove_dead_stages` still finds (was: in `shutil.rmtree`'s order,
  the owner file could go first, and the folder without it was never taken)."""
  names = []
  with contextlib.suppress(OSError):
    names = sorted(os.listdir(stage), key=lambda n: n == _STAGE_OWNER)
  for name in names:
    path = os.path.join(stage, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.remove(path)
  with contextlib.suppress(OSError):
    os.rmdir(stage)


def _move_back(out: str, stage: str, moved: Sequence[str], aside: Sequence[str]
               ) -> tuple[bool, str]:
  """Undoes a move into `out` that failed midway (`_staged`): the new files moved in go back
  into `stage` (JSON first), then the earlier files moved aside into its `_EARLIER` come back
  (JSON last) while their names are free. It stops at the first step that fails, so that
  `out` holds, at every step, one call's files alone (a kill included); `stage`, then kept,
  holds the rest.

  Args:
    out: the --out folder.
    stage: the mode's staging folder.
    moved: the new files moved into `out`, in the order moved.
    aside: the earlier files moved into `stage`'s `_EARLIER`, in the order moved.
  Returns:
    Whether `out` is as it was, and the sentence for the error line: where the files are.
  """
  earlier = os.path.join(stage, _EARLIER)
  back = True
  try:
    for name in reversed(moved):
      os.replace(os.path.join(out, name), os.path.join(stage, name))
    for name in reversed(aside):
      if os.path.lexists(os.path.join(out, name)):  # Not ours to replace (unlocked NFS).
        back = False
        break
      os.replace(os.path.join(earlier, name), os.path.join(out, name))
  except OSError:
    back = False
  with contextlib.suppress(OSError):
    os.rmdir(earlier)  # Where it is empty: all are back.
  if back:
    return True, f"The earlier files in {out} are as they were."
  also = f" and {earlier} (the earlier ones)" if os.path.lexists(earlier) else ""
  return False, (f"Nothing was deleted: the files not in {out} are kept in {stage} (this "
                 f"call's){also}.")


# What `flock` raises where the file system has no locks for a folder: NFS emulates `flock`
# with POSIX locks, whose exclusive kind needs a file open for writing (EBADF).
_NO_FOLDER_LOCKS = (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_unlocked_outs: set[str] = set()  # Those warned of (`_out_lock`): once per folder.


@contextlib.contextmanager
def _out_lock(out: str) -> Iterator[None]:
  """Holds an exclusive `flock` on the folder `out` itself (no file of its own in it) for the
  block: the move of a mode's files into `out`. Another process's move into the same `out`
  is waited for (it takes milliseconds), with one warning line, so that each set goes in whole
  and its clean-up removes only the set before it, as two calls one after the other do (was:
  two infer.py runs writing to one --out at once each removed the other's new files, and
  both said "wrote"; review finding). The kernel lets go of it however the process ends.
  Where the file system has no locks for a folder, the block runs unlocked, with a warning.

  Args:
    out: the --out folder (it exists: the mode's staging folder is in it).
  Yields:
    None, once the lock is held.
  Raises:
    InputError: `out` cannot be opened.
    KeyboardInterrupt: a Ctrl-C while waiting (the wait stops).
  """
  def open_lock() -> int:
    return os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))

  def wait(fd: int) -> None:
    logging.warning("waiting for another process moving its files into %s", out)
    fcntl.flock(fd, fcntl.LOCK_EX)
  fd, no_locks = None, None
  try:
    fd, no_locks = files._hold_lock(out, open_lock, wait)  # pylint: disable=protected-access
  except OSError as e:
    if e.errno not in _NO_FOLDER_LOCKS:
      raise _write_error(out, e) from None
    no_locks = e
  if no_locks is not None and os.path.abspath(out) not in _unlocked_outs:
    _unlocked_outs.add(os.path.abspath(out))
    logging.warning("the file system of %s has no locks for a folder (%s): another infer.py "
                    "moving its files into it at the same time could mix the two calls' "
                    "files; give each its own --out", out, no_locks.strerror or no_locks)
  try:
    yield
  finally:
    if fd is not None:
      os.close(fd)  # Releases the lock.


# Inside each staging folder: the file its process holds an exclusive `flock` on.
_STAGE_OWNER = ".owner"
# Inside a staging folder during the move: the earlier set's files, moved aside (`_staged`).
_EARLIER = ".earlier"
# `_EARLIER`'s name once the move has finished: the files the new set replaced.
_REPLACED = ".replaced"
# In each staging folder's name: only this host's are cleaned (a network file system may
# keep flock locks per host).
_HOST = socket.gethostname()


def _own(stage: str) -> Optional[int]:
  """Creates `stage`'s owner file and holds an exclusive lock on it while this process lives
  (the kernel lets go of it however the process ends): locked under another name, then
  renamed, so that no other process finds it unlocked. Where the file system has no locks
  (ENOLCK, ENOSYS), the folder goes without an owner file, which no cleanup takes.

  Returns:
    The open file's descriptor, to close once the folder is removed; None without a lock.
  """
  path = os.path.join(stage, _STAGE_OWNER + ".new")
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
  except OSError:
    os.close(fd)
    os.remove(path)
    return None
  os.rename(path, os.path.join(stage, _STAGE_OWNER))
  return fd


def _remove_dead_stages(out: str) -> list[str]:
  """Removes the staging folders in `out` whose process is gone (SIGKILL, a scheduler past its
  grace period: `_staged` could not clean up; a review found them piling up): this host's
  whose owner file no process holds a lock on any more. The kernel drops a process's locks however
  it ends, so a live process's folder (in any PID namespace, on this kernel) is never taken;
  one without an owner file (an older version's, or made a moment ago) is left alone, and so
  is one holding earlier files it moved aside (a stop during its move: said in a warning);
  one whose move had finished holds them as `_REPLACED`, the set its new files replaced, and
  goes with them (was: kept, and the warning said the move had not finished; fault hunt).

  Returns:
    The folders removed.
  """
  removed = []
  for name in os.listdir(out):
    folder = os.path.join(out, name)
    if not (name.startswith(".") and f"-unfinished-{_HOST}-" in name
            and os.path.isdir(folder)):
      continue
    try:
      fd = os.open(os.path.join(folder, _STAGE_OWNER), os.O_RDWR)
    except OSError:
      continue
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      continue  # Held: its process is alive.
    finally:
      os.close(fd)
    earlier = os.path.join(folder, _EARLIER)
    if os.path.isdir(earlier) and os.listdir(earlier):  # Stopped during its move (a kill,
      # or a failed move whose folder could not be marked kept): its earlier files are
      # nowhere else (were removed with it; read-through).
      logging.warning("%s holds files an earlier call moved aside and did not finish with (a "
                      "stop during its move); they are kept there: move what you need out "
                      "of it, then delete it", folder)
      continue
    _remove_stage(folder)
    removed.append(name)
  return removed


def _check_modes(opts: Options, model, config) -> None:
  """Refuses, before any mode runs, the modes this model cannot do and flags they lack."""
  for mode in opts.modes:
    if mode in _NEEDS_ATTRIBUTES and not model.uses_attributes:
      raise InputError(f"--mode={mode} needs attributes and the {config.model.name} does not "
                       "use them; use a CVAE or disCVAE workdir.")
    if mode == "swap" and tuple(model.latent_dims) != inference.uses.SWAP_LATENTS:
      raise InputError(f"--mode=swap needs a disCVAE (separate foreground and background "
                       f"latents); this workdir holds a {config.model.name}.")
    if mode == "edit" and not opts.attribute:
      raise InputError("--mode=edit needs --attribute (the name of the attribute to change).")
  if opts.occlusion_names() and {"complete", "evaluate", "tune"} & set(opts.modes):
    occlusions.make_masks(opts.occlusion_names(), config.model.image_size, 1, seed=opts.seed,
                          dataset=config.data.name, crop_from=evaluation.crop_frame(config))


def _attribute_rows(labels, names, values):
  """[{"image": label, attribute: value, ...}] per image; where an attribute is itself named
  "image" (a folder CSV's column), the label's key is the first of "image_file",
  "image_file_", ... that none is (was: a TypeError after the inference)."""
  key = "image"
  while key in names:
    key = "image_file" if key == "image" else key + "_"
  return [{key: lbl, **{nm: float(v) for nm, v in zip(names, vi)}}
          for lbl, vi in zip(labels, values)]


def _diverged(labels: list[str], diverged: np.ndarray) -> dict:
  """{"diverged": the labels of the images whose inference diverged} (an inference's
  "diverged" [N]: no restart ended with a finite energy, or the kept one ended clearly above
  where it started; their outputs mean nothing, as the library warns), or {} for none. Was:
  a non-finite energy alone; learning_rate 10000 wrote an mse_optimised worse than
  mse_recognition, no image named (fault hunt)."""
  bad = [label for label, d in zip(labels, np.asarray(diverged, bool)) if d]
  return {"diverged": bad} if bad else {}


def _with_attributes(diverged: np.ndarray, attribute_diverged: Optional[np.ndarray]
                     ) -> np.ndarray:
  """`diverged` [N] (an inference's), True also for the images whose attributes were
  inferred by an inference that diverged (`_Run.known_attributes`; None: attributes given):
  their results mean nothing either."""
  if attribute_diverged is None:
    return np.asarray(diverged, bool)
  return np.asarray(diverged, bool) | np.asarray(attribute_diverged, bool)


def _unless_diverged(values: np.ndarray, diverged: np.ndarray) -> np.ndarray:
  """`values` (one row per image) with NaN, written as null, for the images whose inference
  diverged (`diverged` [N], `_diverged`'s; was: their errors or attributes written as numbers
  like any other's; fault hunt): JSON outlives the console's warning."""
  bad = np.asarray(diverged, bool)
  values = np.array(values, np.float64)
  values[bad] = np.nan
  return values


def sample(run: _Run) -> None:
  """Writes sample_step<N>.png (in pages of `ROWS_PER_PAGE` rows where more: `_page_names`),
  --samples_per_attribute draws (columns) for each of the first
  --num_images test attribute vectors (rows), and beside it sample_step<N>.json: the run,
  step, --seed, draws per vector and the attribute vectors that made it (was: the PNG alone,
  so that neither --seed nor --samples_per_attribute was recorded; review finding).

  Args:
    run: the call's run.
  """
  test = run.dataset["test"]
  n = _image_count(run.opts.num_images, len(test), "the test split", DEFAULT_NUM_IMAGES)
  k = run.opts.samples_per_attribute
  images = inference.sample(run.trained, np.repeat(test.attributes[:n], k, axis=0),
                            run.key)["image"]
  stem = f"sample_step{run.trained.step}"
  rows = np.asarray(images).reshape((n, k) + np.shape(images)[1:])  # One per vector.
  written = run.save_rows([rows[:, c] for c in range(k)], f"{stem}.png")
  # One row per test attribute vector, each with k draws of the prior N(0, I) from --seed;
  # a model without attributes ignores them (its n x k images are draws alike).
  attributes = ({"attributes": _attribute_rows([f"test[{i}]" for i in range(n)], run.names,
                                                test.attributes[:n])}
                if run.trained.model.uses_attributes else {})
  run.save_json({"files": written, "rows": n, "latent_draws": k, **attributes,
                 **run.settings("sample"), **run.unmade_record()}, f"{stem}.json")


# progression: the swept values (columns) and latent draws (rows) of each grid; swap: the
# foreground and background latents of its grid.
_PROGRESSION_VALUES, _PROGRESSION_LATENTS, _SWAP_NUM = 8, 4, 6


def progression(run: _Run) -> None:
  """Writes progression_<attribute>.png for --attribute (default: each attribute), and beside
  it progression_<attribute>.json: the run, step, --seed, swept values and base attributes
  that made it (was: the PNG alone, which a later call with another --step replaced with
  nothing to tell which checkpoint made it). Stopped midway (Ctrl-C, an error), it keeps the
  attributes it finished as progression_partial.json (their records, and those not finished)
  and progression_partial_<attribute>.png (was: all lost; review finding).

  Args:
    run: the call's run.
  """
  base = run.dataset["test"].attributes[0]
  which = run.swept  # Those that took one value in training: refused or skipped.
  finished = {}  # {attribute index: (its PNG in the staging folder, its record)}, of those done.
  try:
    for j in which:
      lo, hi = run.value_range(j)
      values = np.linspace(lo, hi, _PROGRESSION_VALUES)
      grid = inference.progression(run.trained, base, j, values, key=run.key,
                                   num_latents=_PROGRESSION_LATENTS)
      # One part for both files, with room for the longer suffix (as edit's).
      stem = f"progression_{_file_part(run.names[j], run.names, 'progression_', '.json')}"
      run.save(grid, f"{stem}.png", _PROGRESSION_VALUES)
      # The swept values, one per column; draws of the prior N(0, I) from --seed, one per row.
      record = {"files": [f"{stem}.png"], "attribute": run.names[j],
                "values": [float(v) for v in values], "latent_draws": _PROGRESSION_LATENTS,
                "base_attributes": _attribute_rows(["test[0]"], run.names, [base])[0],
                **run.settings("progression")}
      run.save_json(record, f"{stem}.json")
      finished[j] = (f"{stem}.png", record)
      interrupts.check()  # One swallowed whole: the attributes done are kept.
  except BaseException:  # Ctrl-C, an error, a device out of memory: all the same.
    if finished:  # Was: every progression finished lost with the staging folder.
      renamed = {png: _progression_partial(run.names[j], run.names)
                 for j, (png, _) in finished.items()}
      # Each attribute's record as its own JSON holds it, --seed once for all.
      run.keep_partial("progression", renamed, {
          "attributes": [{**{k: v for k, v in record.items() if k != "seed"},
                          "files": [renamed[png]]} for png, record in finished.values()],
          "not_finished": [run.names[j] for j in which if j not in finished],
          **run.settings("progression")}, f"progression{_PARTIAL}.json")
    raise


def _progression_partial(name: str, names: Sequence[str]) -> str:
  """The PNG a stopped progression keeps of attribute `name` (`PARTIAL_FILES`)."""
  return f"progression_partial_{_file_part(name, names, 'progression_partial_', '.png')}.png"


def swap(run: _Run) -> None:
  """Writes swap_rows_same_foreground.png, swap_rows_same_background.png (the same grid
  transposed), and beside them swap.json: the run, step, --seed and attributes that made them
  (was: the PNGs alone).

  Args:
    run: the call's run (a disCVAE's; `_check_modes`).
  """
  base = run.dataset["test"].attributes[0]
  grid = inference.swap(run.trained, base, key=run.key, num=_SWAP_NUM)["grid"]
  names = ["swap_rows_same_foreground.png", "swap_rows_same_background.png"]
  run.save(grid, names[0], _SWAP_NUM)
  run.save(np.swapaxes(grid, 0, 1), names[1], _SWAP_NUM)
  # Draws of the prior N(0, I) from --seed: foreground and background latents, each.
  run.save_json({"files": names, "latent_draws": _SWAP_NUM,
                 "attributes": _attribute_rows(["test[0]"], run.names, [base])[0],
                 **run.settings("swap")}, "swap.json")


def reconstruct(run: _Run) -> None:
  """Writes reconstruct.png (each image: the input, the recognition model's reconstruction,
  the optimised one; in pages where more than `ROWS_PER_PAGE`, `_page_names`) and
  reconstruct.json (the files, their errors and settings; for --input images, the attributes
  inferred for both columns, `_Run.inferred`).

  Args:
    run: the call's run.
  """
  images, attrs, labels, x01, attribute_diverged = run.images_and_attributes()
  opts = run.options()
  full = np.ones(x01.shape[:3] + (1,), np.float32)
  rec = inference.reconstruct(run.trained, images, attrs, key=run.key,
                              options=inference.recognition_options(
                                  inference.options_for(run.trained, infer_attributes=False)))
  opt = inference.reconstruct(run.trained, images, attrs, key=run.key, options=opts)
  diverged = _with_attributes(inference.posterior.diverged_of(opt), attribute_diverged)
  # The encoder's z given attributes found by optimisation is not the recognition model's
  # answer alone (was labelled so for --input images; fault hunt).
  recognition = ("recognition model" if attribute_diverged is None else
                 "recognition model, given the attributes inferred by optimisation")
  inferred = run.inferred(labels, attrs, attribute_diverged)
  said = ({"attributes": "inferred from each whole image jointly with z "
                        "(inferred_attributes, attribute_inference), then held for both "
                        "columns"} if inferred else {})
  # A page at a time (was: float stacks of every image at once; fault hunt), and the JSON
  # whatever they give (`_Run.save_rows`).
  written = run.save_rows([x01, rec["reconstruction"], opt["reconstruction"]],
                          "reconstruct.png")
  run.save_json({"files": written, **run.unmade_record(),
                 "columns": ["input", recognition, f"{opts.steps} steps"], "images": labels,
                 **run.settings("reconstruct", opts), **said, **inferred,
                 "mse_recognition": _unless_diverged(evaluation.region_errors(
                     x01, rec["reconstruction"], full),
                     _with_attributes(np.zeros(len(labels), bool), attribute_diverged)).tolist(),
                 "mse_optimised": _unless_diverged(evaluation.region_errors(
                     x01, opt["reconstruction"], full), diverged).tolist(),
                 **_diverged(labels, diverged)}, "reconstruct.json")


def complete(run: _Run) -> None:
  """Writes complete_<occlusion>.png for each occlusion (the occluded input, the completion,
  the truth; in pages where more than `ROWS_PER_PAGE`, `_page_names`) and complete.json (the
  files of each occlusion, the hidden pixels' errors and settings; for --input images,
  each occlusion's attributes inferred from its observed pixels, `_Run.inferred`). Stopped
  midway, it keeps the occlusions it finished (`PARTIAL_FILES`).

  Args:
    run: the call's run.
  """
  images, given, labels = run.images()
  x01 = to_unit(images)
  opts = run.options()
  # The model sees centre crops (`_load_data`), and --input images of its size are taken as
  # framed like them: the face boxes lie where they are in the whole image.
  whole = evaluation.crop_frame(run.trained.config)
  names = run.opts.occlusion_names(list(occlusions.occlusions_for(run.dataset.name, run.size,
                                                                  whole)))
  result = {"images": labels, "steps": opts.steps, **run.settings("complete", opts, names),
            "files": {},
            "hidden_pixel_mse": {}}
  if given is None and run.trained.model.uses_attributes:
    result["attributes"] = ("inferred from the observed pixels of each occlusion "
                            "(inferred_attributes, attribute_inference)")
  masks = occlusions.make_masks(names, run.size, len(images), seed=run.opts.seed,
                                dataset=run.dataset.name, crop_from=whole)
  try:
    for name, observed in masks.items():
      attrs, attribute_diverged = run.known_attributes(images, given, observed)
      out = inference.complete(run.trained, images, attrs, observed, key=run.key,
                               options=opts)
      # The occluded input made a page at a time, as the grid (`_Run.save_rows`).
      shown = lambda rows, seen=observed: x01[rows] * seen[rows] + 0.5 * (1 - seen[rows])
      written = run.save_rows([shown, out["completion"], x01], f"complete_{name}.png")
      # Its pages before its errors, which mark it finished (`finished` below): a stop between
      # the two kept its errors without its pages (read-through).
      result["files"][name] = written  # {occlusion: its pages}, as hidden_pixel_mse.
      diverged = _with_attributes(inference.posterior.diverged_of(out), attribute_diverged)
      inferred = run.inferred(labels, attrs, attribute_diverged)
      if inferred:  # {occlusion: rows}, as hidden_pixel_mse; the settings once.
        result.setdefault("inferred_attributes", {})[name] = inferred["inferred_attributes"]
        result["attribute_inference"] = inferred["attribute_inference"]
      result["hidden_pixel_mse"][name] = _unless_diverged(evaluation.region_errors(
          x01, out["completion"], 1 - observed), diverged).tolist()
      if _diverged(labels, diverged):  # {occlusion: labels}, as hidden_pixel_mse.
        result.setdefault("diverged", {})[name] = _diverged(labels, diverged)["diverged"]
      interrupts.check()  # One swallowed whole: the occlusions done are kept.
  except BaseException:  # Ctrl-C, an error, a device out of memory: all the same.
    finished = list(result["hidden_pixel_mse"])
    if finished:  # Was: every completion finished lost with the staging folder.
      renamed = {f: f"complete{_PARTIAL}_{f[len('complete_'):]}"
                 for n in finished for f in result["files"].get(n, ())}
      run.keep_partial("complete", renamed, {
          **result, "files": {n: [renamed[f] for f in result["files"].get(n, ())]
                              for n in finished},
          **run.unmade_record(), "not_finished": [n for n in names if n not in finished]},
                       "complete_partial.json")
    raise
  run.save_json({**result, **run.unmade_record()}, "complete.json")


def edit(run: _Run) -> None:
  """Writes edit_<attribute>.png (each image: the input, its reconstruction, the edit; in
  pages where more than `ROWS_PER_PAGE`, `_page_names`) and edit_<attribute>.json (the
  files, the values set and settings; for --input images, the attributes
  inferred that the edit starts from, `_Run.inferred`).

  Args:
    run: the call's run.
  """
  j = _attribute_index(run.names, run.opts.attribute)
  images, attrs, labels, x01, attribute_diverged = run.images_and_attributes()
  lo, hi = run.value_range(j)
  attrs = np.asarray(attrs, np.float32)
  value = run.opts.value
  if value is None:
    # Each image to the far end of the range from its own value (was: one value for the batch,
    # from the batch's mean, so images already there were "edited" to what they had).
    value = np.where(attrs[:, j] < (lo + hi) / 2, hi, lo).astype(np.float32)
  opts = run.options()
  out = inference.edit(run.trained, images, attrs, {j: value}, key=run.key, options=opts)
  stem = _edit_stem(run.names[j], run.names)
  written = run.save_rows([x01, out["reconstruction"], out["edited"]], f"{stem}.png")
  edited = (f"{run.names[j]} = {value:g}" if np.ndim(value) == 0 else
            f"{run.names[j]} at the other end of its range")
  inferred = run.inferred(labels, attrs, attribute_diverged)
  said = ({"attributes": "inferred from each whole image jointly with z "
                        "(inferred_attributes, attribute_inference), the edit's start"}
          if inferred else {})
  run.save_json({"files": written, **run.unmade_record(),
                 "columns": ["input", "reconstruction", edited], "images": labels,
                 "attribute": run.names[j], "value": np.asarray(value).tolist(),
                 **run.settings("edit", opts), **said, **inferred,
                 **_diverged(labels, _with_attributes(inference.posterior.diverged_of(out),
                                                      attribute_diverged))},
                f"{stem}.json")


def infer_attributes(run: _Run) -> None:
  images, attrs, labels = run.images()
  opts = run.options()
  out = inference.infer_attributes(run.trained, images, run.prior, key=run.key, options=opts)
  # As it ran them: `inference.infer_attributes` turns on their inference (was recorded as
  # "infer_attributes": false, the run's options for the other modes; README walk-through).
  ran = dataclasses.replace(opts, infer_attributes=True)
  diverged = inference.posterior.diverged_of(out)
  result = {**run.settings("infer_attributes", ran),
            "inferred": _attribute_rows(labels, run.names, _unless_diverged(out["y"], diverged)),
            **_diverged(labels, diverged)}
  if attrs is not None:
    result["true"] = _attribute_rows(labels, run.names, attrs)
  run.save_json(result, "infer_attributes.json")


def _tuning_text(cell: dict) -> str:
  """A tuning table's cell: the error x 100, or how many images diverged (NaN or infinity, or
  an energy that ended clearly above its start: `inference.posterior.diverged_images`;
  was "nan", or the mean of the others)."""
  if cell.get("diverged"):
    return f"diverged ({cell['diverged']} of {cell['images']})"
  return f"{100 * cell['mean']:.3f}"


def tune(run: _Run) -> None:
  grid = [{"prior_weight": w, "learning_rate": lr} for w in (0.3, 1.0, 3.0)
          for lr in (0.01, 0.05, 0.2)]
  names = run.opts.occlusion_names(list(_TUNE_OCCLUSIONS))
  n = None if run.opts.num_examples < 0 else run.opts.num_examples
  settings = [run.options(**setting) for setting in grid]  # All checked before the first runs.
  rows = []
  try:
    # One setting per call, each as the whole grid's call runs it (the same key, examples and
    # masks), so that those finished can be kept (was: all lost on Ctrl-C; review finding).
    for options in settings:
      rows.extend(evaluation.tune_inference(
          run.trained, run.dataset, grid=[{}], occlusion_names=names, num_examples=n,
          key=run.key, options=options, seed=run.opts.seed))
      interrupts.check()  # One swallowed whole: the settings done are kept.
  except BaseException:  # Ctrl-C, an error, a device out of memory: all the same.
    if rows:
      run.keep_partial("tune", {}, {"rows": rows, "not_finished": grid[len(rows):],
                                    **run.settings("tune", names=names)}, "tune_partial.json")
    raise
  cols = [evaluation.RECON_FULL] + names
  lines = ["| prior_weight | learning_rate | " + " | ".join(cols) + " |",
           "|" + " --- |" * (len(cols) + 2)]
  for r in rows:
    o = r["options"]
    lines.append(f"| {o['prior_weight']:g} | {o['learning_rate']:g} | " + " | ".join(
        _tuning_text(r[c]) for c in cols) + " |")
  print("Validation per-pixel squared error x 100 (completion: hidden pixels)\n")
  print("\n".join(lines))
  # Each row holds every setting it ran with; --seed (the examples, masks and starts drawn
  # from it: was not recorded, review finding) once for all.
  run.save_json({"rows": rows, **run.settings("tune", names=names)}, "tune.json")


# Every mode of MODES but "evaluate", which compares several workdirs and runs alone.
RUN_MODES: dict[str, Callable[[_Run], None]] = {
    "sample": sample, "progression": progression, "swap": swap, "reconstruct": reconstruct,
    "complete": complete, "edit": edit, "infer_attributes": infer_attributes, "tune": tune}

# Data config keys whose difference surely changes the test examples, with the source each
# applies to (None: every source): refused from the runs' files, before any data are loaded.
# Any other difference is found by comparing the loaded examples (`_check_loaded_examples`).
# (augment.crop_size: the test images are centre cropped to it, `_load_data`.)
_TEST_IMAGE_KEYS = {"image_size": None, "augment.crop_size": None, "synthetic.seed": "synthetic",
                    "cub_attributes": "cub"}
# Data config keys that never change the test examples, left out of a refusal's reasons.
_NOT_TEST_IMAGES = ("augment.", "cache_dir", "download")


def _check_same_test_examples(workdirs: list[str], configs: list, infos: list) -> None:
  """Refuses, from their files alone (before any is built), runs whose test examples surely
  differ: their rows would not compare. Their attributes follow each run's training order
  (`as_trained`), which must agree too, since one attribute predictor scores them all.
  `_check_loaded_examples` then compares the examples themselves.

  Args:
    workdirs: the runs.
    configs: their configs (`_run_config`).
    infos: their `checkpoints.load_dataset_info` (None for runs that predate dataset.json).
  Raises:
    InputError: another dataset, a data key of `_TEST_IMAGE_KEYS` that differs, or the
      attributes in another order.
  """
  first, a = workdirs[0], configs[0].data
  for workdir, config, info in zip(workdirs[1:], configs[1:], infos[1:]):
    b = config.data
    if b.name != a.name:
      raise InputError(f"{workdir} was trained on {b.name!r}, {first} on {a.name!r}; one table "
                       "compares runs on one dataset.")
    differ = _differences(a, b, [k for k, source in _TEST_IMAGE_KEYS.items()
                                 if source in (None, a.name)])
    if differ:
      raise InputError(f"{workdir} is tested on other images than {first} "
                       f"({'; '.join(differ)}); one table compares runs on the same test "
                       "images: evaluate them in separate calls.")
    names = [i["attribute_names"] if i else None for i in (infos[0], info)]
    if None not in names and names[0] != names[1]:
      raise InputError(f"{workdir} was trained on the attributes in the order "
                       f"{', '.join(names[1])}, {first} in the order {', '.join(names[0])} "
                       "(their dataset.json); one table compares runs on the same test "
                       "attributes: evaluate them in separate calls.")


def _differences(a, b, keys: list[str]) -> list[str]:
  """"data.KEY <b's value> against <a's value>" for each of `keys` where two data sections
  differ."""
  get = config_lib.value_at
  return [f"data.{k} {get(b, k)!r} against {get(a, k)!r}" for k in keys if get(a, k) != get(b, k)]


def _load_data(config, workdir: str):
  """A run's dataset as its model sees it (`inference.load_run_data`): its attributes in the
  trained order, each split checked against the one it trained on (was not: a CSV changed
  since put training images in the test split, scored without a word; review finding), its
  images and masks centre cropped where training cropped (CUB's 64 of 72); progress bars as
  the run's config.progress_bar says (were always shown for LFW, CUB and folders). A folder
  dataset whose data.path no longer exists, or is relative and read from another folder, is
  refused as such by the API too (were explained here alone)."""
  return inference.load_run_data(config, workdir, progress=config.progress_bar)


def _check_loaded_examples(workdirs: list[str], configs: list, infos: list,
                           num_examples: int) -> None:
  """Refuses runs whose test examples (images, attributes, foreground masks where both have
  them) differ in a way their configs do not show (data changed on disk, masks from another
  mask network), before any run is built or evaluated.

  Runs whose data configs agree (up to keys that never change the test examples) load the
  same examples, so nothing is loaded when all agree; otherwise one run's data of each config
  are loaded, compared with the first's, and let go, one dataset at a time.

  Raises:
    InputError: the examples differ; the message names the data keys that differ.
  """
  def same_data(i: int) -> tuple:
    keys = config_lib.leaf_paths(configs[i].data)
    return (json.dumps({k: config_lib.value_at(configs[i].data, k) for k in keys
                        if not k.startswith(_NOT_TEST_IMAGES)}, sort_keys=True, default=str),
            json.dumps((infos[i] or {}).get("attribute_names")))
  keys = [same_data(i) for i in range(len(workdirs))]
  groups = [i for i, key in enumerate(keys) if key not in keys[:i]]
  if len(groups) < 2:
    return
  # Progress to standard error: standard output holds the tables and the files written (was:
  # these lines before the table in `infer.py --mode=evaluate > table.md`; fault hunt).
  _progress(f"comparing the test examples of {len(groups)} data configs")
  examples = None  # The first's, with masks from the first run that has them.
  for i in groups:
    mine = evaluation.test_examples(_load_data(configs[i], workdirs[i]), num_examples)
    if examples is None or evaluation.same_examples(examples, mine):
      examples = mine if examples is None or examples[2] is None else examples
      continue
    a, b = configs[0].data, configs[i].data
    paths = dict.fromkeys([*config_lib.leaf_paths(a), *config_lib.leaf_paths(b)])
    differ = _differences(a, b, [k for k in paths if not k.startswith(_NOT_TEST_IMAGES)])
    why = "; ".join(differ) if differ else "the same data config, but other data"
    raise InputError(f"{workdirs[i]} is tested on other images than {workdirs[0]} ({why}); "
                     "one table compares runs on the same test images: evaluate them in "
                     "separate calls.")


def _check_checkpoint(workdir: str, step: Optional[int]) -> None:
  """Refuses a run without a checkpoint (of --step), or whose checkpoint is corrupt, before
  any run is restored (its checksums are compared; the restore does so again)."""
  ckpt = checkpoints.Checkpointer(workdir, create=False)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise CheckpointError(f"--workdir {workdir} holds no checkpoint; train it first with "
                            f"python train.py --config=... --workdir={workdir}.")
    if step is not None and step not in steps:
      raise CheckpointError(f"--step={step}: {workdir} has no checkpoint of that step; its "
                            f"steps are {steps}.")
    # As `inference.load_trained` picks it: --step, or the newest (corrupt or not).
    try:
      ckpt.restorable_step(steps[-1] if step is None else step, quiet=True)
    except checkpoints.CheckpointRemovedError:  # Pruned by a training run as it was checked:
      if step is not None:  # the load reads the newest there then.
        raise
  finally:
    ckpt.close()


def _row_labels(kinds: list[str], workdirs: list[str]) -> list[str]:
  """Each run's name in the tables: its model kind (`model.label`), and its workdir where a
  kind repeats."""
  base = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  names = base if len(set(base)) == len(base) else list(workdirs)
  return [k if kinds.count(k) == 1 else f"{k} ({name})" for k, name in zip(kinds, names)]


def evaluate(opts: Options, done: list[str]) -> None:
  out = opts.out or os.path.join(opts.workdirs[0], "infer")
  opts = dataclasses.replace(opts, out=out)  # One table, in the first run's folder.
  # Every check comes before the first run is evaluated: those that compare the runs' files,
  # their checkpoints, and their test examples where their data configs differ. Then one run
  # at a time is built, evaluated and let go, so that one dataset (and one model) is held at
  # a time.
  configs = [_checked_config(workdir, opts, out) for workdir in opts.workdirs]
  infos = [checkpoints.load_dataset_info(workdir) for workdir in opts.workdirs]
  _check_same_test_examples(opts.workdirs, configs, infos)
  for workdir in opts.workdirs:  # After the comparison, which reads no checkpoint.
    _check_checkpoint(workdir, opts.step)
  _check_loaded_examples(opts.workdirs, configs, infos, opts.num_examples)
  labels = _row_labels([models.create_model(c.model).label for c in configs], opts.workdirs)
  settings = [dataclasses.asdict(_run_inference_options(c, opts)) for c in configs]
  differ = _setting_differences(labels, settings)
  if differ:  # Was: side by side without a word, evaluation.json's "options" alone (fault hunt).
    alike = any(len({s[k] for s in settings}) > 1 for k in ("steps", "restarts"))
    logging.warning("the runs' inference settings differ (%s): their optimisation rows differ "
                    "in those settings as well as in the model (noted in evaluation.md)%s",
                    "; ".join(differ),
                    "; pass --steps / --restarts to set those alike" if alike else "")
  _warn_idle_seed(opts, configs)
  # --seed where it draws something for some run, else null (`_seed_draws`).
  seed = opts.seed if any(_seed_draws(opts, "evaluate", c) for c in configs) else None
  results, reports, predictor, baseline = [], [], None, None
  for workdir, label in zip(opts.workdirs, labels):
    result = None  # This run's table rows, once they are done.
    try:
      run = _Run(workdir, opts)
      _progress(f"evaluating {run.workdir} ({run.trained.config.model.name}, step "
                f"{run.trained.step})")
      options = run.options()
      result = {**evaluation.evaluate_model(
          run.trained, run.dataset, occlusion_names=opts.occlusion_names(),
          num_examples=opts.num_examples, key=run.key, options=options, seed=opts.seed),
                "model": label, "workdir": run.workdir, "step": run.trained.step}
      if baseline is None:  # The same test images for every run. Before the attribute
        # fidelity (was after), so that a table of the rows done can be kept without it.
        baseline = evaluation.evaluate_mean_image(
            run.dataset, occlusion_names=opts.occlusion_names(),
            num_examples=opts.num_examples, seed=opts.seed,
            crop_from=evaluation.crop_frame(run.trained.config))  # Its data are crops.
      report = None
      if opts.attribute_fidelity:
        if predictor is None:
          from a2i_jax import attribute_predictor  # pylint: disable=import-outside-toplevel
          # Its own fixed seed, not --seed (was: each --seed trained, and saved over the last,
          # a predictor of its own, so two --seed mixed in the predictor's variance; review).
          predictor = attribute_predictor.load_or_train(
              run.trained.config.attribute_predictor, run.dataset, opts.workdirs[0],
              seed=PREDICTOR_SEED, announce=_progress)
        report = {**evaluation.attribute_report(
            run.trained, run.dataset, predictor, key=run.key, num_examples=opts.num_examples,
            options=options), "model": label}
      # A run counts as evaluated only once all of its parts are done.
      results.append(result)
      reports.extend([report] if report is not None else [])
      result = None
      del run  # Before the next is built.
      interrupts.check()  # One swallowed whole stops the call before the next run.
    except BaseException as e:  # A mistake, Ctrl-C, a device out of memory: all the same.
      rows = results + ([result] if result is not None else [])
      if not rows or baseline is None:
        raise
      # The runs evaluated before it are kept, under a name of their own (was: lost with the
      # error, which did not say which run failed; review finding), and this run's rows where
      # only its attribute fidelity was left (was: lost, a single run's whole table; review
      # finding). A failure to write them is a warning: the error that stopped the call is
      # the one to see.
      partial = os.path.join(out, "evaluation_partial.md")
      kept = (f"The run(s) evaluated before it are in {partial}." if result is None else
              f"Its rows{' and those of the run(s) before it' if results else ''} are in "
              f"{partial}, without its attribute fidelity.")
      try:
        _write_evaluation(out, "evaluation_partial", opts.workdirs[:len(rows)],
                          rows + [baseline], reports, done, "evaluate_partial", seed)
      except Exception as failed:  # pylint: disable=broad-except
        logging.warning("could not keep the runs evaluated so far: %s", failed)
        kept = "The run(s) evaluated before it could not be written either (see the warning)."
      if is_out_of_memory(e):  # This run's config named (was: the first run's, wherever).
        e = _out_of_memory_error(e, "evaluate", opts, workdir)
      if not isinstance(e, A2IError):
        raise
      raise A2IError(f"evaluating {workdir}: {e} {kept}") from None
  _write_evaluation(out, "evaluation", opts.workdirs, results + [baseline], reports, done,
                    "evaluate", seed)


def _setting_differences(labels: Sequence[str], settings: Sequence[dict]) -> list[str]:
  """The inference settings that differ between runs, one "<label>: key=value, ..." per run
  (in `labels`' order), or [] where every run has the same (`_HOW_STEPS_RUN` aside).

  Args:
    labels: the runs' row labels.
    settings: each run's `InferenceOptions` as a dict (`dataclasses.asdict`).
  Returns:
    The lines.
  """
  if len(settings) < 2:
    return []
  keys = [k for k in settings[0] if k not in _HOW_STEPS_RUN
          and len({json.dumps(s.get(k)) for s in settings}) > 1]
  if not keys:
    return []
  return [f"{label}: " + ", ".join(f"{k}={s.get(k)}" for k in keys)
          for label, s in zip(labels, settings)]


def _write_evaluation(out: str, name: str, workdirs: list[str], results: list[dict],
                      reports: list[dict], done: list[str], mode: str,
                      seed: Optional[int]) -> None:
  """Writes `name`.md (the tables, also printed) and `name`.json into `out`; the JSON
  records `seed` (--seed: the examples, masks and latents the numbers come from; was not
  recorded, review finding; None where nothing was drawn, `_seed_draws`). Where the runs'
  inference settings differ, a note under the error tables names each run's (was: not said,
  the optimisation rows of 300 and of 5 steps side by side; fault hunt)."""
  text = evaluation.markdown_table(results)
  ran = [r for r in results if r.get("options")]  # The mean image baseline has none.
  differ = _setting_differences([r["model"] for r in ran], [r["options"] for r in ran])
  if differ:
    text += ("\nThe runs' inference settings differ (each run's config.inference; every "
             "setting is in the JSON's \"options\"); their optimisation rows and attribute "
             "inference ran with:\n\n" + "".join(f"- {line}\n" for line in differ))
  if reports:
    text += "\nAttribute fidelity (attribute predictor trained on the real training images)\n\n"
    text += evaluation.attribute_table(reports)
  with _staged(out, mode, done, _mode_set(mode), quiet=True) as stage:
    _write(os.path.join(stage, f"{name}.json"), lambda p: evaluation.write_json(
        {"workdirs": workdirs, "seed": seed, "results": results, "attributes": reports}, p),
           shown=os.path.join(out, f"{name}.json"))
    _write(os.path.join(stage, f"{name}.md"), lambda p: files.atomic_write(p, text),
           shown=os.path.join(out, f"{name}.md"))
  print(text)
  print(f"wrote {os.path.join(out, name + '.md')} and {name}.json")


def _partly_kept(done: list[str], mode: str) -> str:
  """", and its finished part is in FILES there" where `mode` kept one (`PARTIAL_FILES`)."""
  if mode + _PARTIAL not in done:
    return ""
  return f", and its finished part is in {PARTIAL_FILES[mode]} there"


def _interrupted(out: str, done: list[str], mode: Optional[str],
                 what: str = "interrupted", modes: Optional[list[str]] = None,
                 opts: Optional[Options] = None) -> str:
  """The line Ctrl-C (or SIGTERM, `what`) prints: what was finished and kept, and what a
  rerun does (was "Run the command again for the rest", but a rerun redoes every mode, and
  a stopped mode's finished part was lost; review finding).

  Args:
    out: --out.
    done: the sets written (`_staged`): whole modes, and "<mode>_partial".
    mode: the mode that was stopped, or the last one finished where it is in `done`, or
      None (before the first).
    what: "interrupted" or "stopped by SIGTERM" (`_stopped`).
    modes: every mode of the call, in order (default: [mode]).
    opts: the call's options, whose flags that only finished modes read the line says to
      drop (was: pasted with them, the command was refused: "--samples_per_attribute is
      used by --mode=sample only"; fault hunt).
  Returns:
    The line.
  """
  whole = [m for m in done if not m.endswith(_PARTIAL)]
  kept = f"finished and written to {out}: {', '.join(whole)}; " if whole else ""
  if mode is None:
    return f"{what}; {kept or 'nothing was written; '}run the command again."
  rest = [m for m in modes or [mode] if m not in whole]
  drop = [f"--{name}" for name, _ in opts.flags_unused_by(rest)] if opts and whole else []
  without = f", without {', '.join(drop)}" if drop else ""
  if mode in done:  # Stopped between modes, or in the clean-up after one (was: "run the
    # command again", with no --mode= list for the rest, also where every mode had finished;
    # fault hunt).
    if not rest:
      return f"{what} {_ALL_MODES_DONE}; {kept}nothing is left to run."
    return (f"{what} after --mode={mode} had finished; {kept}for the rest, run the command "
            f"again with --mode={','.join(rest)}{without}.")
  again = (f"For the rest, run the command again with --mode={','.join(rest)}{without}"
           if whole else "Run the command again")
  over = f" ({mode} starts over)" if _partly_kept(done, mode) else ""
  return (f"{what} during --mode={mode}; {kept}its earlier files in {out}, if any, are "
          f"as they were{_partly_kept(done, mode)}. {again}{over}.")


def _kept_note(out: str, done: list[str], mode: Optional[str]) -> str:
  """What an error leaves written, a sentence for its line ("" for nothing): the modes
  finished before it and the failed mode's finished part (was: not said; review finding)."""
  whole = [m for m in done if not m.endswith(_PARTIAL)]
  note = f"Finished before it and kept in {out}: {', '.join(whole)}." if whole else ""
  part = _partly_kept(done, mode) if mode else ""
  if part:
    note += f" --mode={mode}'s finished part is in {PARTIAL_FILES[mode]} in {out}."
  return note.strip()


def _out_of_memory_error(e: BaseException, mode: Optional[str], opts: Options,
                         workdir: Optional[str] = None) -> A2IError:
  """The one line for an out-of-memory error (was: a 47-line RESOURCE_EXHAUSTED traceback;
  review finding): which mode, what ran out, and how to ask for less at a time, in the
  config of `workdir`, the run that ran out (default: the first)."""
  first = first_line(e)
  counts = [f"--{flag}" for flag, users in {**_FLAG_USERS, **_VALUED_FLAG_USERS}.items()
            if flag in ("num_images", "samples_per_attribute", "num_examples")
            and (mode is None or mode in users)]
  fewer = f"fewer images ({' or '.join(counts)}), or " if counts else ""
  # Not --restarts: an inference call takes at most inference.batch_size rows, images x
  # restarts, however many (`inference.run_inference`): fewer take no less at a time.
  config = os.path.join(workdir or opts.workdirs[0], checkpoints.CONFIG_FILE)
  return A2IError(f"out of memory{f' during --mode={mode}' if mode else ''} ({first}); ask "
                  f"for less at a time: {fewer}a smaller inference.batch_size in {config} "
                  "(the images each sampling call takes, images x restarts each inference call).")


def run_modes(opts: Options) -> None:
  """Checks the flags, the modes and the workdirs, then runs the modes.

  Raises:
    A2IError: a mistake in the flags or the inputs, before anything is written.
    KeyboardInterrupt: Ctrl-C (`interrupts.Terminated`: SIGTERM), also one that came out of
      a callback from C as another exception (`interrupts.interrupt_in`), its message saying
      what was finished and kept.
  """
  opts = opts.expanded()
  opts.check()
  for workdir in opts.workdirs:
    _check_workdir(workdir, opts.workdirs)
  if "evaluate" in opts.modes and opts.modes != ["evaluate"]:
    raise InputError("--mode=evaluate runs alone; give the other modes in another call.")
  if opts.modes != ["evaluate"] and len(opts.workdirs) != 1:
    raise InputError(f"--mode={','.join(opts.modes)} takes one --workdir; got "
                     f"{len(opts.workdirs)}.")
  out = opts.out or os.path.join(opts.workdirs[0], "infer")
  # Where the lines below say the files are: process 0 writes them all, into its own --out
  # (was: each process named its own --out, which held nothing; review finding).
  shown = out if distributed.is_main() else "process 0's --out (this process writes nothing)"
  done, mode = [], None
  try:
    if opts.modes == ["evaluate"]:
      mode = "evaluate"
      evaluate(opts, done)
      interrupts.check()  # An interrupt swallowed whole still stops the call.
      return
    one = _Run(opts.workdirs[0], opts)
    one.done = done  # For `_Run.keep_partial`.
    for mode in opts.modes:
      # The earlier set read as the move finds --out (another call may write meanwhile).
      earlier = functools.partial(_mode_set, mode, one.names, one.out, one.page_stems(mode))
      one.unmade, one.json_shown = [], None
      with _staged(one.out, mode, done, earlier) as one.stage:
        RUN_MODES[mode](one)
      if one.unmade:  # Its results (JSON) are in --out, its pictures not all.
        raise one.unmade_error(mode)
      interrupts.check()  # An interrupt swallowed whole stops the call after this mode.
  except BaseException as e:  # pylint: disable=broad-except
    stop = interrupts.interrupt_in(e)  # Also one raised inside a callback from C.
    if stop is None:
      kept = _kept_note(shown, done, mode)
      if is_out_of_memory(e):
        raise _with_note(_out_of_memory_error(e, mode, opts), kept) from None
      # `evaluate`'s own errors say what it kept.
      if kept and isinstance(e, A2IError) and opts.modes != ["evaluate"]:
        raise _with_note(e, kept) from None
      raise
    what = _stopped(stop)
    if not distributed.is_main() and mode is not None and mode not in done:
      # Was: named the stopped mode's finished part in process 0's --out, where process 0
      # may run on to the end (a mode with no step the processes share; review finding).
      raise type(stop)(_interrupted_elsewhere(shown, done, mode, what)) from None
    raise type(stop)(_interrupted(shown, done, mode, what, opts.modes, opts)) from None


def _stopped(stop: KeyboardInterrupt) -> str:
  """The words for what stopped the call: "interrupted" (Ctrl-C), "stopped by SIGTERM" or
  "stopped by SIGHUP (the terminal closed)"."""
  return ("stopped by SIGHUP (the terminal closed)" if isinstance(stop, interrupts.HungUp)
          else "stopped by SIGTERM" if isinstance(stop, interrupts.Terminated)
          else "interrupted")


def _interrupted_elsewhere(shown: str, done: list[str], mode: str, what: str) -> str:
  """The line Ctrl-C (or SIGTERM, `what`) prints during `mode` on a process other than 0,
  which writes nothing: the modes finished before it (process 0 wrote them), and that process
  0 says itself what it kept of `mode`."""
  whole = [m for m in done if not m.endswith(_PARTIAL)]
  kept = f"finished and written to {shown}: {', '.join(whole)}; " if whole else ""
  return (f"{what} during --mode={mode} on process {distributed.process_index()}; {kept}"
          f"process 0 writes the run's files, and its own last line says what it kept of "
          f"--mode={mode}.")


def _with_note(e: A2IError, note: str) -> A2IError:
  """`e` of its own class, `note` added to its message (an empty note: `e` itself)."""
  if not note:
    return e
  try:
    return type(e)(f"{e} {note}")
  except TypeError:  # A class whose constructor takes other arguments.
    return A2IError(f"{e} {note}")


def main(argv):
  # Ctrl-C (`run_modes` says what is kept) and SIGTERM as Ctrl-C, exit 143 (was: killed, its
  # unfinished folder left in --out); neither lost where a library swallows it.
  interrupts.stop_on_signals()
  finished = False  # Every mode's files are written: a stop after that loses nothing.
  if len(argv) > 1:  # Was: absl's usage error, the whole --help after it.
    _fail(f"unexpected arguments: {' '.join(argv[1:])}; flags are written --name=value.")
  if not flags.FLAGS["verbosity"].present:  # Was set whatever --verbosity said.
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO.
  if logging.get_verbosity() < logging.DEBUG:
    checkpoints.quiet_orbax(logging.get_absl_handler())
    std_logging.getLogger("jax").setLevel(std_logging.WARNING)  # "Unable to initialize TPU".
  try:  # The probe's seconds too (was: a Ctrl-C there was a traceback).
    perf.set_recommended_xla_flags()  # Before JAX starts its backend (the function says).
    _JOIN_PROCESSES()
    distributed.configure_logging()
    if not distributed.is_main():  # Process 0 speaks for the run; errors still reach stderr.
      sys.stdout = open(os.devnull, "w")  # pylint: disable=consider-using-with
    opts = Options.from_flags()
    # Was unchecked: processes given other flags (--step, --num_images) wrote a mix of both.
    distributed.same_on_every_process(
        "infer.py's flags", opts.fingerprint(), "start every process with the same flags (only "
        "--workdir, --out and --input may name their folders otherwise)",
        describe=distributed.json_differences)  # The flags that differ (was the whole JSON).
    with distributed.peers_checked():
      run_modes(opts)
    finished = True
    distributed.finish()  # With peers: not held at JAX's exit by one that has left.
    interrupts.ignore_stops()  # Every file is written.
  except BaseException as e:  # pylint: disable=broad-except
    # Ctrl-C or SIGTERM, also one raised inside a callback from C or one that a library
    # swallowed, its error in its place (which ours may wrap in an A2IError; review): as
    # train.py, one line and exit code 130 (SIGTERM: 143; SIGHUP: 129).
    stop = interrupts.interrupt_in(e)
    if stop is None and isinstance(e, A2IError):  # PeerError included: with peers, `leave`
      print(f"error: {e}", file=sys.stderr)  # leaves at once.
      distributed.leave(1)
    if stop is None:
      distributed.leave_after(e)
    interrupts.ignore_stops()  # A second one while exiting adds nothing.
    if finished:  # Was: "nothing was written" (fault hunt).
      stop = type(stop)(f"{_stopped(stop)} {_ALL_MODES_DONE}; nothing is left to run.")
    print(str(stop) or "interrupted; nothing was written.", file=sys.stderr)
    distributed.leave(129 if isinstance(stop, interrupts.HungUp) else
                      143 if isinstance(stop, interrupts.Terminated) else 130)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parse of the command line, whose errors (an unknown flag, a value that is no
  number, a missing --workdir) are one `error:` line instead of absl's two-line FATAL."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f"{str(e).rstrip('.')}; see python infer.py --helpfull.")
  return []  # Not reached.


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
