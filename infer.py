"""Uses a trained model: flags in, `a2i_jax.inference` / `a2i_jax.evaluation` out.

  python infer.py --workdir=runs/synthetic --mode=complete --out=runs/synthetic/infer

Modes (PNG grids and JSON go to --out, default WORKDIR/infer):
  sample       images for test attribute vectors, several latents each
  progression  one attribute swept from its training minimum to maximum, z fixed
  swap         disCVAE: fixed foreground latent with varied backgrounds, and the reverse
  reconstruct  posterior inference on test images (or --input images): recognition vs optimised
  complete     fill occluded regions (--occlusion, default every one for the dataset)
  edit         infer z of a real image, change --attribute to --value, decode
  infer_attributes  estimate the attributes of images (y inferred jointly with z)
  tune         validation errors over a grid of inference settings (prior weight x rate)
  evaluate     the reconstruction / completion table; --workdir may list several runs
"""

import os
import sys

from absl import app, flags, logging
import jax
import numpy as np

from a2i_jax import evaluation, inference, occlusions, visualize
from a2i_jax.data import load_dataset
from a2i_jax.errors import A2IError, InputError

MODES = ["sample", "progression", "swap", "reconstruct", "complete", "edit", "infer_attributes",
         "tune", "evaluate"]
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory (evaluate: a "
                               "comma-separated list of runs, one table row group each).")
_MODE = flags.DEFINE_list("mode", ["sample"], f"What to do: one or more (comma-separated) of "
                          f"{', '.join(MODES)}; evaluate runs alone.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/infer).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder of images to use "
                             "instead of the test split (reconstruct, complete, edit, "
                             "infer_attributes); they must have the model's size.")
_NUM = flags.DEFINE_integer("num_images", 8, "How many test images / attribute vectors.")
_SAMPLES = flags.DEFINE_integer("samples_per_attribute", 8, "Latent draws per vector.")
_ATTRIBUTE = flags.DEFINE_string("attribute", None, "Attribute name (progression: default "
                                 "all; edit: required).")
_VALUE = flags.DEFINE_float("value", None, "edit: the new value (default: the other end of "
                            "the attribute's training range).")
_OCCLUSION = flags.DEFINE_list("occlusion", None, "complete / evaluate: occlusion names "
                               "(default: all that suit the dataset).")
_STEPS = flags.DEFINE_integer("steps", None, "Inference steps (default: config.inference.steps).")
_RESTARTS = flags.DEFINE_integer("restarts", None, "Restarts per image (default: config).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", -1, "evaluate: first N test images; -1 all.")
_FIDELITY = flags.DEFINE_bool("attribute_fidelity", True, "evaluate: also score attribute "
                              "fidelity with an attribute predictor (trained on first use and "
                              "saved in the first workdir).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of latent draws, restarts and random occlusions.")
flags.mark_flags_as_required(["workdir"])

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def _options(trained):
  overrides = {}
  if _STEPS.value is not None:
    overrides["steps"] = _STEPS.value
  if _RESTARTS.value is not None:
    overrides["restarts"] = _RESTARTS.value
  return inference.options_for(trained, **overrides)


def _read_images(path: str, size: int) -> tuple[np.ndarray, list[str]]:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if os.path.isdir(path):
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(_IMAGE_EXTENSIONS))
    if not files:
      raise InputError(f"{path} holds no images ({', '.join(_IMAGE_EXTENSIONS)}).")
  elif os.path.exists(path):
    files = [path]
  else:
    raise InputError(f"--input {path} does not exist.")
  images = []
  for f in files:
    im = np.asarray(Image.open(f).convert("RGB"))
    if im.shape[:2] != (size, size):
      raise InputError(f"{f} is {im.shape[1]}x{im.shape[0]}; this model takes {size}x{size} "
                       f"images. Crop or resize it to {size}x{size} first.")
    images.append(im)
  return np.stack(images), files


def _attribute_index(names, name: str) -> int:
  if name not in names:
    raise InputError(f"no attribute {name!r}; this dataset's attributes are: {', '.join(names)}.")
  return names.index(name)


class _Run:
  """What every mode needs: the model, its dataset, the output folder, the images."""

  def __init__(self, workdir: str):
    self.trained = inference.load_trained(workdir, _STEP.value)
    cache = self.trained.config.compilation_cache_dir
    if cache:  # The run's persistent XLA cache: a second call starts without compiling.
      jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache))
    self.dataset = load_dataset(self.trained.config.data)
    self.names = list(self.dataset.attribute_names)
    self.out = _OUT.value or os.path.join(workdir, "infer")
    self.key = jax.random.key(_SEED.value)
    self.size = self.trained.config.model.image_size
    self.prior = inference.AttributePrior.fit(self.dataset["train"].attributes)

  def images(self):
    """(images, attributes or None when they must be inferred, labels)."""
    if _INPUT.value:
      images, files = _read_images(_INPUT.value, self.size)
      return images, None, [os.path.basename(f) for f in files]
    test = self.dataset["test"]
    n = min(_NUM.value, len(test))
    return test.images[:n], test.attributes[:n], [f"test[{i}]" for i in range(n)]

  def attributes_for(self, images, attrs):
    """Attributes given, or inferred jointly with z when unknown (own images)."""
    if attrs is not None or self.trained.config.model.name == "vae":
      return attrs
    return inference.infer_attributes(self.trained, images, self.prior, key=self.key,
                                      options=_options(self.trained))["y"]

  def save(self, images, name, ncols):
    path = os.path.join(self.out, name)
    visualize.save_grid(np.asarray(images).reshape((-1,) + np.shape(images)[-3:]), path, ncols)
    print(f"wrote {path}")
    return path

  def save_json(self, obj, name):
    path = os.path.join(self.out, name)
    evaluation.write_json(obj, path)
    print(f"wrote {path}")


def _value_range(run: _Run, j: int) -> tuple[float, float]:
  col = run.dataset["train"].attributes[:, j]
  return float(col.min()), float(col.max())


def run_mode(mode: str, run: _Run) -> None:
  trained, key = run.trained, run.key
  if mode == "sample":
    test = run.dataset["test"]
    n, k = min(_NUM.value, len(test)), _SAMPLES.value
    images = inference.sample(trained, np.repeat(test.attributes[:n], k, axis=0), key)["image"]
    run.save(images, f"sample_step{trained.step}.png", k)
  elif mode == "progression":
    base = run.dataset["test"].attributes[0]
    which = [_attribute_index(run.names, _ATTRIBUTE.value)] if _ATTRIBUTE.value else range(
        len(run.names))
    for j in which:
      lo, hi = _value_range(run, j)
      grid = inference.progression(trained, base, j, np.linspace(lo, hi, 8), key=key,
                                   num_latents=4)
      run.save(grid, f"progression_{run.names[j]}.png", 8)
  elif mode == "swap":
    grid = inference.swap(trained, run.dataset["test"].attributes[0], key=key, num=6)["grid"]
    run.save(grid, "swap_rows_same_foreground.png", 6)
    run.save(np.swapaxes(grid, 0, 1), "swap_rows_same_background.png", 6)
  elif mode in ("reconstruct", "complete", "edit", "infer_attributes"):
    images, attrs, labels = run.images()
    opts = _options(trained)
    x01 = images.astype(np.float32) / 255.0
    full = np.ones(x01.shape[:3] + (1,), np.float32)
    if mode == "infer_attributes":
      if trained.config.model.name == "vae":
        raise InputError("the VAE does not use attributes; use a CVAE or disCVAE workdir.")
      y = inference.infer_attributes(trained, images, run.prior, key=key, options=opts)["y"]
      rows = [dict(image=lbl, **{nm: float(v) for nm, v in zip(run.names, yi)})
              for lbl, yi in zip(labels, y)]
      result = {"inferred": rows}
      if attrs is not None:
        result["true"] = [dict(image=lbl, **{nm: float(v) for nm, v in zip(run.names, yi)})
                          for lbl, yi in zip(labels, attrs)]
      run.save_json(result, "infer_attributes.json")
      return
    attrs = run.attributes_for(images, attrs)
    if mode == "reconstruct":
      rec = inference.reconstruct(trained, images, attrs, key=key,
                                  options=inference.options_for(trained, steps=0))
      opt = inference.reconstruct(trained, images, attrs, key=key, options=opts)
      run.save(np.stack([x01, rec["reconstruction"], opt["reconstruction"]], 1),
               "reconstruct.png", 3)
      run.save_json({"columns": ["input", "recognition model", f"{opts.steps} steps"],
                     "images": labels,
                     "mse_recognition": evaluation.region_errors(
                         x01, rec["reconstruction"], full).tolist(),
                     "mse_optimised": evaluation.region_errors(
                         x01, opt["reconstruction"], full).tolist()}, "reconstruct.json")
    elif mode == "complete":
      names = _OCCLUSION.value or list(occlusions.occlusions_for(run.dataset.name))
      result = {"images": labels, "steps": opts.steps, "hidden_pixel_mse": {}}
      masks = occlusions.make_masks(names, run.size, len(images), seed=_SEED.value,
                                    dataset=run.dataset.name)
      for name, observed in masks.items():
        out = inference.complete(trained, images, attrs, observed, key=key, options=opts)
        shown = x01 * observed + 0.5 * (1 - observed)
        run.save(np.stack([shown, out["completion"], x01], 1), f"complete_{name}.png", 3)
        result["hidden_pixel_mse"][name] = evaluation.region_errors(
            x01, out["completion"], 1 - observed).tolist()
      run.save_json(result, "complete.json")
    else:  # edit
      if not _ATTRIBUTE.value:
        raise InputError(f"--mode=edit needs --attribute (one of: {', '.join(run.names)}).")
      j = _attribute_index(run.names, _ATTRIBUTE.value)
      lo, hi = _value_range(run, j)
      attrs = np.asarray(attrs, np.float32)
      value = _VALUE.value
      if value is None:  # The far end of the range from the image's own value.
        value = hi if float(np.mean(attrs[:, j])) < (lo + hi) / 2 else lo
      out = inference.edit(trained, images, attrs, {j: value}, key=key, options=opts)
      run.save(np.stack([x01, out["reconstruction"], out["edited"]], 1),
               f"edit_{run.names[j]}.png", 3)
      run.save_json({"columns": ["input", "reconstruction", f"{run.names[j]} = {value:g}"],
                     "images": labels, "attribute": run.names[j], "value": value},
                    f"edit_{run.names[j]}.json")
  elif mode == "tune":
    grid = [{"prior_weight": w, "learning_rate": lr} for w in (0.3, 1.0, 3.0)
            for lr in (0.01, 0.05, 0.2)]
    names = _OCCLUSION.value or ["lower_half", "random_rect"]
    n = 256 if _NUM_EXAMPLES.value < 0 else _NUM_EXAMPLES.value
    rows = evaluation.tune_inference(trained, run.dataset, grid=grid, occlusion_names=names,
                                     num_examples=n, key=key, seed=_SEED.value)
    cols = [evaluation.RECON_FULL] + names
    lines = ["| prior_weight | learning_rate | " + " | ".join(cols) + " |",
             "|" + " --- |" * (len(cols) + 2)]
    for r in rows:
      o = r["options"]
      lines.append(f"| {o['prior_weight']:g} | {o['learning_rate']:g} | " + " | ".join(
          f"{100 * r[c]['mean']:.3f}" for c in cols) + " |")
    print("Validation per-pixel squared error x 100 (completion: hidden pixels)\n")
    print("\n".join(lines))
    run.save_json({"steps": _options(trained).steps, "rows": rows}, "tune.json")
  else:
    raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}.")


def evaluate(workdirs: list[str]) -> None:
  results, reports, out, dataset, predictor = [], [], None, None, None
  for workdir in workdirs:
    run = _Run(workdir)
    if dataset is not None and run.dataset.name != dataset.name:
      raise InputError(f"{workdir} was trained on {run.dataset.name!r}, the first workdir on "
                       f"{dataset.name!r}; one table compares runs on one dataset.")
    out = out or run.out
    dataset = dataset or run.dataset
    print(f"evaluating {workdir} ({run.trained.config.model.name}, step {run.trained.step})")
    options = _options(run.trained)
    results.append(evaluation.evaluate_model(
        run.trained, run.dataset, occlusion_names=_OCCLUSION.value,
        num_examples=_NUM_EXAMPLES.value, key=run.key, options=options, seed=_SEED.value))
    if _FIDELITY.value:
      if predictor is None:
        from a2i_jax import attribute_predictor  # pylint: disable=import-outside-toplevel
        predictor = attribute_predictor.load_or_train(
            run.trained.config.attribute_predictor, run.dataset, workdirs[0], seed=_SEED.value)
      reports.append(evaluation.attribute_report(
          run.trained, run.dataset, predictor, key=run.key, num_examples=_NUM_EXAMPLES.value,
          options=options))
  results.append(evaluation.evaluate_mean_image(dataset, occlusion_names=_OCCLUSION.value,
                                                num_examples=_NUM_EXAMPLES.value,
                                                seed=_SEED.value))
  text = evaluation.markdown_table(results)
  if reports:
    text += "\nAttribute fidelity (attribute predictor trained on the real training images)\n\n"
    text += evaluation.attribute_table(reports)
  os.makedirs(out, exist_ok=True)
  evaluation.write_json({"workdirs": workdirs, "results": results, "attributes": reports},
                        os.path.join(out, "evaluation.json"))
  with open(os.path.join(out, "evaluation.md"), "w") as f:
    f.write(text)
  print(text)
  print(f"wrote {os.path.join(out, 'evaluation.md')} and evaluation.json")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO.
  try:
    workdirs = [w for w in _WORKDIR.value.split(",") if w]
    modes = _MODE.value
    for mode in modes:
      if mode not in MODES:
        raise InputError(f"unknown --mode {mode!r}; choose from {', '.join(MODES)}.")
    if modes == ["evaluate"]:
      evaluate(workdirs)
    elif "evaluate" in modes:
      raise InputError("--mode=evaluate runs alone; give the other modes in another call.")
    elif len(workdirs) != 1:
      raise InputError(f"--mode={','.join(modes)} takes one --workdir; got {len(workdirs)}.")
    else:
      run = _Run(workdirs[0])
      for mode in modes:
        run_mode(mode, run)
  except A2IError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
