"""What users do with a trained model (docs/design.md §4 step 11): sample, decode, sweep an
attribute, swap foreground and background, and, by posterior inference, reconstruct, complete,
infer attributes and edit.

Every function takes a `TrainedModel`, checks its inputs (`a2i_jax.inputs`), caches the
jitted functions it builds on the model, and takes and gives images as the user holds them:
uint8 or [0, 1] floats in, [0, 1] floats out. Decoding goes through `a2i_jax.sampling`, the
one decoding path, and nothing here tests which model it is: the model answers for itself.

Given attributes that lie well outside the run's training range (`trained.attribute_ranges`:
-1 / +1 for an attribute trained on 0 / 1, say) get one warning per call, naming the function
called, its columns and their ranges (`posterior._warn_attributes_outside_range`); each
column's values are said once per model and function (`posterior._unsaid`): `evaluation.evaluate`'s
2 x (1 + occlusions) calls, or infer.py's progression of each attribute, said them each time.

A batch of fewer images than a call takes is padded to a bucket (a power of two, at least the
device count, at most the batch size; the padding's rows are dropped), so that a few compiled
programs serve every count: was one per count, 3-4 s each for a tiny CVAE (fault hunt).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
from absl import logging

from a2i_jax import parallel, perf, sampling
from a2i_jax.errors import InputError
from a2i_jax.inference.posterior import (AttributePrior, InferenceOptions, _check_batch,
                                         _check_options, _infer_latents, _needs_attributes,
                                         _no_ignored_attributes, _range_margins, _static,
                                         _unsaid, _warn_attributes_outside_range, _warn_diverged,
                                         make_inference_fns, same_batch_on_every_process)
from a2i_jax.inference.restore import TrainedModel, inference_batch_size, shared_programs
from a2i_jax.inputs import (as_array, check_attributes, check_images, check_int, check_key,
                            check_mask, rgb_pixels, to_unit)

Array = jax.Array

# The call of a use in progress: [the name of the function the user called, whether its
# attributes were checked against the training ranges]. The uses call one another (edit runs
# run_inference, then decodes the edited attributes; progression and swap decode), and the
# check speaks once per call, in the name of the function called (`_check_range`).
_CALL: contextvars.ContextVar = contextvars.ContextVar("a2i_jax_inference_use", default=None)


def _a_use(fn: Callable) -> Callable:
  """`fn` as a use: called by no other use, it names the call (`_CALL`)."""
  @functools.wraps(fn)
  def use(*args, **kwargs):
    if _CALL.get() is not None:  # Inside another use: that one's call.
      return fn(*args, **kwargs)
    token = _CALL.set([fn.__name__, False])
    try:
      return fn(*args, **kwargs)
    finally:
      _CALL.reset(token)
  return use


def _check_range(trained: TrainedModel, y: Optional[np.ndarray], skip: tuple[int, ...] = ()
                 ) -> None:
  """The warning of given attributes `y` (checked, [N, y_dim]) outside the training range,
  the first time a call of a use checks any (later checks of the call, of attributes it made
  itself, are silent); None: attributes that are not given (inferred, or none), which count
  as checked."""
  call = _CALL.get()
  if call is None or call[1]:
    return
  call[1] = True
  if y is not None:
    _warn_attributes_outside_range(trained, y, call[0], skip)


def _bucket(n: int, cap: int, at_least: int = 1) -> int:
  """The rows a call of `n` <= `cap` rows is padded to: the next power of two, at least
  `at_least` (the device count), at most `cap` (a full batch's)."""
  return min(cap, max(at_least, 1 << max(n - 1, 0).bit_length()))


def _padded(a: np.ndarray, rows: int) -> np.ndarray:
  """`a` with zero rows appended up to `rows` (as it is where it has them)."""
  a = np.asarray(a)
  if len(a) >= rows:
    return a
  return np.concatenate([a, np.zeros((rows - len(a),) + a.shape[1:], a.dtype)])


def check_trained(trained: Any) -> None:
  """Raises `InputError` unless `trained` is a `TrainedModel`: the API's functions take the
  loaded model, and a workdir's path (a likely first try) was an AttributeError ("'str'
  object has no attribute 'config'"; review).

  Args:
    trained: the first argument of an inference function.
  Raises:
    InputError: `trained` is no TrainedModel; for a path, the message names the call that
      loads it.
  """
  if not isinstance(trained, TrainedModel):
    hint = (f"load it first: inference.load_trained({trained!r})"
            if isinstance(trained, (str, os.PathLike)) else
            "load one with inference.load_trained(workdir)")
    raise InputError(f"the model must be a TrainedModel, not {type(trained).__name__}; {hint}.")


def options_for(trained: TrainedModel, **overrides) -> InferenceOptions:
  """The run's `config.inference` options, with keyword overrides.

  Args:
    trained: from `load_trained`.
    **overrides: any `InferenceOptions` field, e.g. steps=100, restarts=4.
  Returns:
    An `InferenceOptions`.
  """
  check_trained(trained)
  return InferenceOptions.from_config(trained.config.inference, **overrides)


def recognition_options(options: InferenceOptions) -> InferenceOptions:
  """The options under which inference returns the recognition model's answer: the encoder's
  mean, decoded, with no optimisation (whatever `init` and `restarts` `options` name).

  Args:
    options: any inference options.
  Returns:
    `options` with steps 0, one restart and init "encoder".
  Raises:
    InputError: `options` is not `InferenceOptions` (a TrainedModel, whose options
      `options_for` gives, or a dict).
  """
  if not isinstance(options, InferenceOptions):  # Was dataclasses' TypeError.
    hint = (" (the run's: recognition_options(options_for(trained)))"
            if isinstance(options, TrainedModel) else "")
    raise InputError(f"recognition_options takes InferenceOptions, not "
                     f"{type(options).__name__}; build them with inference.options_for(trained, "
                     f"...){hint}.")
  return dataclasses.replace(options, steps=0, restarts=1, init="encoder")


def _cached(trained: TrainedModel, key: Any, build: Callable[[], Any]) -> Any:
  """`build()`, once per model and key: kept in `trained.cache`, and shared by every
  TrainedModel of an equal module (`restore.shared_programs`: two checkpoints of one run, a
  run loaded again) so that their calls find the programs compiled. What it builds must
  depend on the module and `key` alone, and must not hold `trained` (a cycle that only the
  garbage collector would free, and with it the model's variables)."""
  if key not in trained.cache:
    trained.cache[key] = shared_programs(trained.model, key, build)
  return trained.cache[key]


def _attribute_index(index: Any, trained: TrainedModel, usage: str) -> int:
  """An attribute's index: an integer in [0, y_dim) (a bool is not an index). A name is
  refused with its index where the run knows its names (was: "attribute index='smile' is
  not valid; pass an integer", the number left to find)."""
  names = trained.attribute_names
  if isinstance(index, str) and names:
    found = (f"{index!r} is the name of attribute {names.index(index)}: pass "
             f"{names.index(index)} (trained.attribute_names.index({index!r}))"
             if index in names else f"{index!r} is a name, and this run's attributes are "
             f"{', '.join(names)}")
    raise InputError(f"attribute index={index!r} is not valid; pass an integer in [0, "
                     f"{len(names)}); {usage}. {found}.")
  return check_int(index, "attribute index", 0, below=trained.config.model.y_dim, usage=usage)


def _numbers(values: Any, what: str) -> np.ndarray:
  """float32 of finite numbers, or an `InputError` that names `what`."""
  try:
    v = np.asarray(values, np.float32)
  except (TypeError, ValueError):
    raise InputError(f"{what}: {str(values)[:40]!r} is not a number; pass numbers.") from None
  if not np.all(np.isfinite(v)):
    raise InputError(f"{what}: NaN or infinity; pass finite numbers.")
  return v


def _one_vector(trained: TrainedModel, attributes: Any, what: str) -> np.ndarray:
  """One attribute vector, [1, y_dim], for the modes that vary something else around it."""
  y_dim = trained.config.model.y_dim
  y = check_attributes(attributes, y_dim)
  if y.shape[0] != 1:
    raise InputError(f"{what} takes one attribute vector [{y_dim}]; got {y.shape[0]} "
                     f"(attributes of shape {np.shape(attributes)}).")
  return y


@_a_use
def run_inference(trained: TrainedModel, images: Any, attributes: Any = None,
                  observed: Any = None, *, key: Array,
                  options: Optional[InferenceOptions] = None, fg_masks: Any = None,
                  attribute_prior: Optional[AttributePrior] = None,
                  batch_size: Optional[int] = None) -> dict[str, np.ndarray]:
  """`infer_latents` over any number of images, `config.inference.batch_size` rows at a time.

  Each restart is another copy of every image, so a call takes as many images as fit in the
  batch size with all their restarts (a multiple of the device count, at least one per
  device); restarts that do not fit beside even that many images run in several calls of
  `infer_latents`, and the lowest energy of all is kept. One call's working set is thus at
  most `batch_size` rows, images x restarts, whatever the restarts (one row per device where
  the devices are more), where it was all the images' restarts: `--restarts=100000` was
  killed by the kernel.

  Each image's start noise (`init` "prior", or restarts past the first) follows from `key`,
  the image's place in this call and the restart, not from the batching: image i gives the
  same result in any batch size (up to float rounding), but another one where it sits at
  another place (a call of it alone). Fewer images than a call takes are padded to a bucket
  (a power of two, at least the device count): a few programs serve every count.

  Args:
    trained: from `load_trained`.
    images: [N, S, S, 3] uint8 or floats in [0, 1]. With several processes
      (`jax.distributed`) every process passes the whole batch: the same images, attributes,
      masks and key on each (each keeps its devices' rows, and all return the whole result).
    attributes: [N, y_dim], one row per image ([y_dim] with one image); None for models
      without attributes, and when inferring them (`options.infer_attributes`, which would
      ignore them: given, they are refused). Values well outside the training range
      (`trained.attribute_ranges`) are warned of, once per call, and a column's values once
      per model and function called.
    observed: [N, S, S(, 1)] observed-pixel mask (1 = observed; bool, floats in [0, 1] or
      uint8 0 / 255); None = all observed.
    key: PRNG key.
    options: default `options_for(trained)`.
    fg_masks: foreground masks for the encoder init of models that take them (optional;
      disCVAE only, with `options.init` "encoder": otherwise they are refused).
    attribute_prior: needed with `options.infer_attributes`.
    batch_size: the most rows (images x restarts) one compiled call takes; default
      `config.inference.batch_size`.
  Returns:
    `infer_latents`' outputs for all N images ("energy_trace" averaged over batches; the
    images it marks "diverged" warned of once for all); the images ("reconstruction" and
    the model's image layers) in [0, 1].
  Raises:
    InputError: inputs that do not fit the model or each other (every array is checked whole,
      against the N images, before the first batch), attributes given with
      `options.infer_attributes`, no images, a batch size below 1, or a key that is not a
      PRNG key.
    ConfigError: options the model cannot run (an energy it has no term for: "gaussian"
      for a disCVAE, which has no per-pixel variance), or, with `options` None, a run's
      `config.inference` that is not valid; without `batch_size`, a
      `config.inference.batch_size` below 1; with several processes, images, attributes,
      masks or a key that differ from process 0's (compared by SHA-256 before anything is
      placed on the devices).
  """
  check_trained(trained)
  check_key(key)
  options = _check_options(trained, options)
  call = _CALL.get()
  use = call[0] if call else "run_inference"  # The caller's name, in messages.
  _no_ignored_attributes(attributes, options, use)
  x = check_images(images, trained.config.model.image_size)
  y, obs, masks, prior = _check_batch(trained, x, attributes, observed, fg_masks, options,
                                      attribute_prior)
  batch = (inference_batch_size(trained) if batch_size is None
           else check_int(batch_size, "batch_size", 1))
  n = x.shape[0]
  fns = _cached(trained, ("infer", _static(options)),
                lambda: make_inference_fns(trained.model, _static(options)))
  _check_range(trained, None if attributes is None or options.infer_attributes else y)
  mesh = parallel.make_mesh()
  per_call = _images_per_call(options.restarts, batch, mesh.devices.size)
  # Fewer images than a call takes: padded to a bucket, so that a few programs serve every
  # count (was: one program per count, 3-4 s each for a tiny CVAE; fault hunt). Each image's
  # result depends on its own row alone (BatchNorm in eval mode, per-image energies, start
  # noise from the image's index), so the padding's rows change none of the real ones.
  pad_to = per_call if n > per_call else _bucket(n, per_call, mesh.devices.size)
  # Several processes: the same batch on each, once for all N (was: each process's own
  # images spliced into one result; fault hunt).
  same_batch_on_every_process(x, y, obs, masks, parallel.loose_key(check_key(key)), prior, use)
  parts, sizes = [], []
  for start in range(0, n, per_call):
    sl = slice(start, min(start + per_call, n))
    # One key and each image's index: its start noise does not depend on the batch size.
    parts.append(_infer_latents(
        trained, x[sl], y[sl], obs[sl], key=key, options=options,
        fg_masks=None if masks is None else masks[sl], attribute_prior=attribute_prior,
        mesh=mesh, fns=fns, pad_to=pad_to, first_index=start,
        batch_size=batch, compared=True))
    sizes.append(sl.stop - start)
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "energy_trace"}
  # Once for all N (was: once per batch).
  _warn_diverged(out["diverged"], out["energy"], options)
  # The mean per image over all N: a ragged last batch weighs by its images.
  out["energy_trace"] = np.average([p["energy_trace"] for p in parts], axis=0,
                                   weights=sizes).astype(np.float32)  # As infer_latents'.
  return out


def _images_per_call(restarts: int, batch_size: int, devices: int) -> int:
  """Images per `infer_latents` call: as many as fit in `batch_size` rows with all their
  restarts, a multiple of `devices` (which `infer_latents` pads to), at least `devices`
  (`infer_latents` splits the restarts of those that do not fit)."""
  return max(devices, batch_size // restarts // devices * devices)


@_a_use
def reconstruct(trained: TrainedModel, images: Any, attributes: Any = None, *, key: Array,
                options: Optional[InferenceOptions] = None, **kwargs) -> dict[str, np.ndarray]:
  """Infers z from fully observed images and decodes it.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference` (with
      several processes, the same whole batch on each); inference options go in
      `options` (`options_for(trained, steps=...)`), not among the keywords.
  Returns:
    `run_inference`'s dict; "reconstruction" [N, S, S, 3] in [0, 1].
  Raises:
    InputError: an `observed` mask (use `complete`), an inference option given as a
      keyword, or inputs `run_inference` refuses.
    ConfigError: options `run_inference` refuses, or, with several processes, inputs
      that differ from process 0's (every process passes the whole batch).
  """
  check_trained(trained)
  _no_observed(kwargs, "reconstruct")
  _no_options_as_keywords(kwargs, "reconstruct")
  return run_inference(trained, images, attributes, None, key=key, options=options, **kwargs)


def _no_options_as_keywords(kwargs: Mapping, use: str) -> None:
  """Refuses inference options given as keywords to a use (was: run_inference's TypeError,
  "got an unexpected keyword argument 'steps'"), naming `options_for`."""
  taken = set(inspect.signature(run_inference).parameters)
  named = [k for k in kwargs if k in _OPTION_NAMES and k not in taken]
  if named:
    given = ", ".join(f"{k}={kwargs[k]!r}" for k in named)
    what = "is an inference option" if len(named) == 1 else "are inference options"
    raise InputError(f"{', '.join(named)} {what}, not an argument of {use}; pass "
                     f"options=inference.options_for(trained, {given}) instead.")


_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(InferenceOptions))


def _no_observed(kwargs: Mapping, mode: str) -> None:
  """Refuses `observed` given to a use of fully observed images (was: a TypeError, "got
  multiple values for argument 'observed'")."""
  if "observed" in kwargs:
    raise InputError(f"{mode} takes fully observed images; for partly observed ones use "
                     "complete(trained, images, attributes, observed, key=...).")


@_a_use
def complete(trained: TrainedModel, images: Any, attributes: Any, observed: Any, *,
             key: Array, options: Optional[InferenceOptions] = None,
             **kwargs) -> dict[str, np.ndarray]:
  """Fills the hidden pixels of images: z is inferred from the observed pixels only.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference` (with
      several processes, the same whole batch on each); inference options go in
      `options` (`options_for(trained, steps=...)`), not among the keywords.
    observed: [N, S, S(, 1)] with 1 = observed (kept as is), 0 = hidden (filled).
  Returns:
    `run_inference`'s dict plus "completion" [N, S, S, 3] in [0, 1]: the observed pixels of
    the input and the generator's pixels in the hole.
  Raises:
    InputError: no `observed` mask, an inference option given as a keyword, or inputs
      `run_inference` refuses.
    ConfigError: options `run_inference` refuses, or, with several processes, inputs
      that differ from process 0's (every process passes the whole batch).
  """
  check_trained(trained)
  _no_options_as_keywords(kwargs, "complete")
  # The images first, so that a wrong image shape is blamed on the images, not on the mask.
  n = check_images(images, trained.config.model.image_size).shape[0]
  if observed is None:  # Was: "observed has shape ()".
    raise InputError("complete needs the observed-pixel mask (observed, 1 = kept); for whole "
                     "images use reconstruct.")
  obs = check_mask(observed, n, trained.config.model.image_size, "observed")
  out = run_inference(trained, images, attributes, obs, key=key, options=options, **kwargs)
  # The kept pixels are the given ones, exactly, in RGB as the inference read them: taken from
  # the raw argument, a PIL image in another mode kept its YCbCr, HSV or LAB values, and an L,
  # RGBA or P one was a reshape error (review finding). Clipped as the checks clip them: a
  # rounding overshoot that they let through was kept in the completion, above 1.
  x01 = np.clip(to_unit(as_array(rgb_pixels(images), "images")), 0.0, 1.0).reshape(
      out["reconstruction"].shape)
  out["completion"] = obs * x01 + (1.0 - obs) * out["reconstruction"]
  return out


@_a_use
def infer_attributes(trained: TrainedModel, images: Any, attribute_prior: AttributePrior,
                     observed: Any = None, *, key: Array,
                     options: Optional[InferenceOptions] = None,
                     **kwargs) -> dict[str, np.ndarray]:
  """Estimates the attributes of images: y is optimised jointly with z (y unknown).

  Args:
    trained, images, observed, key, kwargs: as for `run_inference` (with several
      processes, the same whole batch on each); inference options go in `options`,
      not among the keywords.
    attribute_prior: the Gaussian prior on y (`AttributePrior.fit(training attributes)`).
    options: default `options_for(trained)`; `infer_attributes` is switched on.
  Returns:
    `run_inference`'s dict; "y" [N, y_dim] holds the inferred attributes.
  Raises:
    InputError: the model does not use attributes (the VAE), `attributes` or an inference
      option given as a keyword, or inputs `run_inference` refuses.
    ConfigError: options `run_inference` refuses, or, with several processes, inputs
      that differ from process 0's (every process passes the whole batch).
  """
  check_trained(trained)
  _no_options_as_keywords(kwargs, "infer_attributes")
  if "attributes" in kwargs:  # Was a TypeError, "got multiple values for argument".
    raise InputError("infer_attributes estimates the attributes, so it takes none; to start "
                     "from known attributes, or keep them, use reconstruct or complete.")
  # run_inference refuses a model without attributes (`_check_options`).
  options = dataclasses.replace(_check_options(trained, options), infer_attributes=True)
  return run_inference(trained, images, None, observed, key=key, options=options,
                       attribute_prior=attribute_prior, **kwargs)


@_a_use
def decode(trained: TrainedModel, latents: Mapping[str, Any], attributes: Any
           ) -> dict[str, np.ndarray]:
  """Decodes given latents under given attributes (no sampling).

  Args:
    trained: from `load_trained`.
    latents: one [N, size] array per latent of the model (`model.latent_dims`): {"z"}, or
      disCVAE's {"z_fg", "z_bg"}.
    attributes: [N, y_dim].
  Returns:
    "image" [N, S, S, 3] in [0, 1], plus each of the model's image layers (disCVAE:
    "foreground", "gate", "background"); decoded `config.inference.batch_size` at a time.
  Raises:
    InputError: attributes or latents of the wrong shape, not numbers, or not finite, or a
      latent the model has none of ("z" for a disCVAE).
    ConfigError: the model's `config.inference.batch_size` is below 1 (edited after the load,
      or given so to `TrainedModel.from_variables`).
  """
  check_trained(trained)
  dims = trained.model.latent_dims
  y = check_attributes(attributes, trained.config.model.y_dim)
  if not isinstance(latents, Mapping):  # Was "latents lack 'z'" for an array.
    raise InputError(f"latents is a {type(latents).__name__}; pass a dict of one array per "
                     f"latent, {sorted(dims)} (as prior_latents or infer_latents give).")
  # A latent of another model's (a CVAE's "z" beside a disCVAE's two): was dropped without a
  # word. Other keys (run_inference's "y", "energy", ...) may come along with the latents.
  other = sorted(k for k in latents if isinstance(k, str) and k not in dims
                 and (k == "z" or k.startswith("z_")))
  if other:
    raise InputError(f"latents hold {', '.join(map(repr, other))}, which this "
                     f"{trained.config.model.name} has no latent of; pass {sorted(dims)}.")
  for name, dim in dims.items():
    if name not in latents:
      raise InputError(f"latents lack {name!r}; this {trained.config.model.name} needs "
                       f"{sorted(dims)}.")
    if np.shape(latents[name]) != (y.shape[0], dim):
      raise InputError(f"latents[{name!r}] has shape {np.shape(latents[name])}; expected "
                       f"[{y.shape[0]}, {dim}].")
  for name in dims:  # Was: NumPy's ComplexWarning, and the imaginary part dropped.
    if np.iscomplexobj(as_array(latents[name], f"latents[{name!r}]")):
      raise InputError(f"latents[{name!r}] holds complex numbers; pass real values.")
  try:
    lat = {n: np.asarray(latents[n], np.float32) for n in dims}
  except (TypeError, ValueError) as e:
    raise InputError(f"the latents are not numbers ({e}); pass float arrays.") from None
  for name, value in lat.items():
    if not np.all(np.isfinite(value)):  # Was: all-NaN images, without a word.
      raise InputError(f"latents[{name!r}] holds NaN or infinity; pass finite latents (e.g. "
                       "from infer_latents or prior_latents).")
  _check_range(trained, y)
  return _decode_in_batches(trained, lat, y)


def _decode_in_batches(trained: TrainedModel, latents: Mapping[str, np.ndarray], y: np.ndarray
                       ) -> dict[str, np.ndarray]:
  """`sampling.decode_images` of checked latents and attributes, `config.inference.batch_size`
  images per call (was: one program for all N, and --samples_per_attribute=20000 ended in
  RESOURCE_EXHAUSTED; review finding). Each image depends on its own row alone (BatchNorm in
  eval mode), so the batching changes no result; a short last batch is padded, so that one
  program serves every call, and fewer images than a batch are padded to a bucket
  (`_bucket`), so that a few programs serve every count (was: one per count)."""
  model = trained.model  # Not `trained`: its cache holding it would keep it from being freed.
  fn = _cached(trained, "decode",
               lambda: perf.jit(lambda v, lat, y: sampling.decode_images(model, v, lat, y)))
  n, batch = y.shape[0], inference_batch_size(trained)
  if n <= batch:
    rows = _bucket(n, batch)
    images = parallel.fetch(fn(trained.variables,
                               {k: _padded(v, rows) for k, v in latents.items()},
                               _padded(y, rows)))
    return images if rows == n else {k: v[:n] for k, v in images.items()}
  out: dict[str, np.ndarray] = {}
  for start in range(0, n, batch):
    stop = min(start + batch, n)
    part = {k: _padded(v[start:stop], batch) for k, v in latents.items()}
    images = parallel.fetch(fn(trained.variables, part, _padded(y[start:stop], batch)))
    for k, v in images.items():  # Filled in place: no second copy of all N images.
      if k not in out:
        out[k] = np.empty((n,) + v.shape[1:], v.dtype)
      out[k][start:stop] = v[:stop - start]
  return out


def prior_latents(trained: TrainedModel, num: int, key: Array) -> dict[str, np.ndarray]:
  """`num` draws of the latents from the prior N(0, I).

  Args:
    trained: from `load_trained`.
    num: N.
    key: PRNG key (split once per latent).
  Returns:
    {"z": [N, z_dim]}, or for disCVAE {"z_fg": [N, zf_dim], "z_bg": [N, zb_dim]}.
  Raises:
    InputError: `num` is not an integer >= 0, or `key` is not a PRNG key.
  """
  check_trained(trained)
  latents = sampling.prior_latents(trained.model, num, key, always_split=True)
  return {name: np.asarray(v) for name, v in latents.items()}


@_a_use
def progression(trained: TrainedModel, attributes: Any, index: int, values: Sequence[float],
                *, key: Array, num_latents: int = 4) -> np.ndarray:
  """Attribute progression (docs/reference.md §7.3): fixed z, attribute `index` swept.

  Args:
    trained: from `load_trained`.
    attributes: the base attribute vector [y_dim].
    index: which attribute to sweep.
    values: its K values, e.g. `np.linspace(train_min, train_max, K)` (K >= 1).
    key: PRNG key of the `num_latents` latent draws (one per row).
    num_latents: how many latent draws (rows), at least 1.
  Returns:
    [num_latents, K, S, S, 3] images in [0, 1]. A model that does not use attributes (the
    VAE) gives the same image along each row: `evaluation.attribute_report` sweeps it as the
    control whose progression score must be 0 (`infer.py --mode=progression` refuses it).
  Raises:
    InputError: not one base vector, an index out of range, values or a count that are not
      what they say, or a key that is not a PRNG key.
    ConfigError: the model's `config.inference.batch_size` is below 1 (edited after the load,
      or given so to `TrainedModel.from_variables`).
  """
  check_trained(trained)
  y = _one_vector(trained, attributes, "progression")
  index = _attribute_index(index, trained, "progression sweeps the attribute at that index")
  values = _numbers(values, "progression values")
  if values.ndim != 1 or not values.size:
    raise InputError(f"progression values must be a 1-D sequence of K >= 1 numbers (e.g. "
                     f"np.linspace(lo, hi, 8)); got shape {values.shape}.")
  num_latents = check_int(num_latents, "num_latents", 1)
  _warn_outside_range(trained, {index: values}, "the swept value", "progression")
  _check_range(trained, y, skip=(index,))  # The swept column's given value is not used.
  k = len(values)
  ys = np.repeat(y, num_latents * k, axis=0)
  ys[:, index] = np.tile(values, num_latents)
  lat = {n: np.repeat(v, k, axis=0) for n, v in prior_latents(trained, num_latents, key).items()}
  images = decode(trained, lat, ys)["image"]
  return images.reshape((num_latents, k) + images.shape[1:])


SWAP_LATENTS = ("z_fg", "z_bg")


@_a_use
def swap(trained: TrainedModel, attributes: Any, *, key: Array, num: int = 6
         ) -> dict[str, np.ndarray]:
  """Foreground / background swap (docs/reference.md §7.4) for one attribute vector.

  Args:
    trained: a model with separate foreground and background latents (disCVAE).
    attributes: [y_dim].
    key: PRNG key of the `num` foreground and `num` background latents.
    num: how many of each, at least 1.
  Returns:
    "grid" [num, num, S, S, 3] in [0, 1]: row i has foreground latent i, column j background
    latent j (so along a row the foreground stays and the background changes).
  Raises:
    InputError: not a disCVAE, not one attribute vector, `num` below 1, or a key that is not
      a PRNG key.
    ConfigError: the model's `config.inference.batch_size` is below 1 (edited after the load,
      or given so to `TrainedModel.from_variables`).
  """
  check_trained(trained)
  if tuple(trained.model.latent_dims) != SWAP_LATENTS:
    raise InputError(f"swap needs a disCVAE (separate foreground and background latents); this "
                     f"workdir holds a {trained.config.model.name}.")
  y = _one_vector(trained, attributes, "swap")
  num = check_int(num, "num", 1)
  lat = prior_latents(trained, num, key)
  z_fg = np.repeat(lat["z_fg"], num, axis=0)
  z_bg = np.tile(lat["z_bg"], (num, 1))
  images = decode(trained, {"z_fg": z_fg, "z_bg": z_bg}, np.repeat(y, num * num, axis=0))
  return {"grid": images["image"].reshape((num, num) + images["image"].shape[1:])}


@_a_use
def edit(trained: TrainedModel, images: Any, attributes: Any, changes: Mapping[int, float],
         *, key: Array, options: Optional[InferenceOptions] = None,
         **kwargs) -> dict[str, np.ndarray]:
  """Edits the attributes of real images: infer z under `attributes`, change, decode.

  For disCVAE the inferred background latent is kept, so only the foreground changes with y.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference` (with
      several processes, the same whole batch on each); inference options go in
      `options` (`options_for(trained, steps=...)`), not among the keywords.
    changes: {attribute index: new value}: a number for every image, or one per image ([N]).
  Returns:
    "reconstruction" and "edited" [N, S, S, 3] in [0, 1], the latents, "y" (the given
    attributes, or those inferred jointly where `options.infer_attributes`) and
    "edited_y".
  Raises:
    InputError: a model without attributes, a change that is not {index: number}, an
      inference option given as a keyword, or inputs `run_inference` refuses.
    ConfigError: options `run_inference` refuses, or, with several processes, inputs
      that differ from process 0's (every process passes the whole batch).
  """
  check_trained(trained)
  _needs_attributes(trained, "editing them changes nothing")
  _no_observed(kwargs, "edit")
  _no_options_as_keywords(kwargs, "edit")
  # Before the new values are checked and warned of (`run_inference` checks it too).
  _no_ignored_attributes(attributes, _check_options(trained, options), "edit")
  usage = "edit takes {attribute index: new value}"
  if not isinstance(changes, Mapping):
    raise InputError(f"changes is a {type(changes).__name__}; {usage}, e.g. {{2: 1.0}}.")
  new_values = {}
  # The images first: a ragged list was NumPy's error, grey images blamed on a value's shape.
  n = check_images(images, trained.config.model.image_size).shape[0]
  for index, value in changes.items():
    index = _attribute_index(index, trained, usage)
    value = _numbers(value, f"the new value of attribute {index}")
    if value.ndim > 1 or value.ndim == 1 and value.shape[0] != n:
      raise InputError(f"the new value of attribute {index} must be one number (applied to "
                       f"every image) or one per image ([{n}]); got shape {value.shape}.")
    new_values[index] = value
  _warn_outside_range(trained, new_values)
  out = run_inference(trained, images, attributes, None, key=key, options=options, **kwargs)
  y_new = np.array(out["y"], np.float32)
  for index, value in new_values.items():
    y_new[:, index] = value
  lat = {n: out[n] for n in trained.model.latent_dims}
  out["edited"] = decode(trained, lat, y_new)["image"]
  out["edited_y"] = y_new
  return out


def _warn_outside_range(trained: TrainedModel, new_values: Mapping[int, np.ndarray],
                        what: str = "the new value", use: str = "edit") -> None:
  """A warning for each new value more than 1 % of the range outside its attribute's training
  range (`_range_margins`), where it is known (infer.py warned, the Python `edit` did not: a review
  finding; nor did `progression`, a fault hunt's), once per model for each attribute and its
  values (`_unsaid`). `what` names the values, `use` what they are for."""
  if trained.attribute_ranges is None:
    return
  for index, value in new_values.items():
    lo, hi = trained.attribute_ranges[index]
    # A margin of 1 % of the range: the training split's extremes fall just inside the
    # attribute's own bounds (the synthetic data's 0.999 for a bound of 1), and the bound
    # itself, as the notebook edits, was called outside.
    slack = _range_margins(lo, hi, 0.01)
    if not np.size(value) or lo - slack <= value.min() and value.max() <= hi + slack:
      continue
    if not _unsaid(trained, {index: ("new", what, use, index, float(value.min()),
                                     float(value.max()), lo, hi)}):
      continue
    name = f" ({trained.attribute_names[index]})" if trained.attribute_names else ""
    shown = (f"{float(value):g}" if value.ndim == 0
             else f"from {float(value.min()):g} to {float(value.max()):g}")
    logging.warning("%s of attribute %d%s, %s, lies outside its training range [%.3g, "
                    "%.3g]; the model has not seen such values, so the %s may not mean what "
                    "it says.", what, index, name, shown, lo, hi, use)


@_a_use
def sample(trained: TrainedModel, attributes: Any, key: Array) -> dict[str, np.ndarray]:
  """Draws images for attribute vectors: z ~ N(0, I), decoder mean (docs/reference.md §1.4).

  Args:
    trained: from `load_trained`.
    attributes: [N, y_dim] attribute vectors.
    key: PRNG key for the latents.
  Returns:
    dict of float arrays in [0, 1], [N, S, S, 3]: "image"; for disCVAE also "foreground",
    "gate" and "background". More than `config.inference.batch_size` vectors are decoded that
    many at a time, with the latents `key` gives all N at once: the same images as in one
    batch, up to float rounding (a pixel may differ by one step of 255 in a PNG).
  Raises:
    InputError: attributes that do not fit the model, or a key that is not a PRNG key.
    ConfigError: the model's `config.inference.batch_size` is below 1 (edited after the load,
      or given so to `TrainedModel.from_variables`).
  """
  check_trained(trained)
  key = parallel.loose_key(check_key(key))  # Was JAX's error for a key on one device.
  y = check_attributes(attributes, trained.config.model.y_dim)
  n, batch = y.shape[0], inference_batch_size(trained)
  _check_range(trained, y)
  if n <= batch and jax.config.jax_threefry_partitionable:
    # Padded to a bucket (was: a program per count). Under the partitionable threefry (JAX's
    # default) a draw is that of its place in the array, so the first N rows' latents are
    # those of N rows, and the images the same.
    rows = _bucket(n, batch)
    images = parallel.fetch(trained.sample_fn(trained.variables, _padded(y, rows), key))
    return images if rows == n else {k: v[:n] for k, v in images.items()}
  if n <= batch:
    return parallel.fetch(trained.sample_fn(trained.variables, y, key))
  # Was: one program for all N (review finding: RESOURCE_EXHAUSTED, a 47-line traceback).
  # The latents as `sample_fn` draws them, [N, size] floats; then decoded in batches.
  latents = parallel.fetch(sampling.prior_latents(trained.model, y.shape[0], key))
  return _decode_in_batches(trained, latents, y)
