"""Posterior inference by optimisation (a2i_jax/inference/) on tiny trained models."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from a2i_jax import inference, inputs, memo, parallel, sampling, train_lib
from a2i_jax.data import load_dataset
from a2i_jax.errors import ConfigError, InputError
from conftest import build_once, library_optimisation_level, tiny_config


@pytest.fixture(scope="module")
def cvae(tmp_path_factory, data_cache):
  """A tiny CVAE trained long enough (100 steps at 3e-3) for its decoder to use the attributes
  (the skin-tone correlation of test_attribute_inference_beats_chance: 0.79, against 0.75
  after 200 steps at 2e-3; 0.76 on jax 0.10.2 and 0.79 on 0.7.2 since the training takes the
  library's optimisation level, 2026-12-02); trained once per session for all workers
  (conftest.build_once)."""
  config = tiny_config("cvae", data_cache)
  config.data.synthetic.num_train = 512
  config.data.synthetic.num_test = 64
  config.batch_size = 32
  config.learning_rate = 3e-3
  config.num_train_steps = 100
  config.eval_every_steps = config.checkpoint_every_steps = 100
  config.log_every_steps = 100
  config.data.augment.max_sharpen = 0.0
  config.inference.steps = 20
  config.inference.batch_size = 32
  # On one device: the multi-device training path is tested elsewhere, and 4 fake devices on
  # this machine's 2 cores take 1.4x as long per step. At the library's optimisation level:
  # 100 steps run longer at the suite's level 0 than they take to compile at level 1.

  def train(folder):
    with library_optimisation_level():
      train_lib.train_and_evaluate(config, folder, jax.devices()[:1])
  workdir = build_once(tmp_path_factory, "posterior_cvae", train)
  trained = inference.load_trained(workdir)
  return trained, load_dataset(trained.config.data)


@pytest.fixture(scope="module")
def discvae(tiny_run):
  """The tiny disCVAE (conftest), its inference cut to 4 steps."""
  trained = inference.load_trained(tiny_run("discvae")[0])
  trained.config.inference.steps = 4
  return trained, load_dataset(trained.config.data)


def _test_batch(dataset, n=8):
  test = dataset["test"]
  return test.images[:n], test.attributes[:n]


def test_energy_decreases_and_recognition_init_is_the_start(cvae):
  trained, ds = cvae
  x, y = _test_batch(ds)
  out = inference.reconstruct(trained, x, y, key=jax.random.key(0))
  trace = out["energy_trace"]
  assert trace.shape == (20,)
  assert out["energy"].mean() < trace[0] - 1.0
  # Zero steps returns the recognition model's mean, whose energy is the trace's start.
  start = inference.reconstruct(trained, x, y, key=jax.random.key(0),
                                options=inference.options_for(trained, steps=0))
  np.testing.assert_allclose(start["energy"].mean(), trace[0], rtol=1e-4)
  assert out["reconstruction"].shape == (8, 32, 32, 3)
  assert 0.0 <= out["reconstruction"].min() and out["reconstruction"].max() <= 1.0


def test_completion_keeps_observed_pixels(cvae):
  trained, ds = cvae
  x, y = _test_batch(ds)
  observed = np.ones((8, 32, 32), np.float32)
  observed[:, 8:24, 8:24] = 0.0
  out = inference.complete(trained, x, y, observed, key=jax.random.key(0))
  keep = observed.astype(bool)
  np.testing.assert_array_equal(out["completion"][keep], (x / 255.0)[keep].astype(np.float32))
  # The hole holds the generator's pixels, not the input's.
  np.testing.assert_array_equal(out["completion"][~keep], out["reconstruction"][~keep])


def test_restarts_never_worse_than_one_start(cvae):
  trained, ds = cvae
  x, y = _test_batch(ds)
  one = inference.reconstruct(trained, x, y, key=jax.random.key(3))
  three = inference.reconstruct(trained, x, y, key=jax.random.key(3),
                                options=inference.options_for(trained, restarts=3))
  assert three["restart_energies"].shape == (8, 3)
  # Restart 0 is the single start; the kept one is the best of the three.
  np.testing.assert_allclose(three["restart_energies"][:, 0], one["energy"], rtol=1e-4,
                             atol=1e-2)
  np.testing.assert_allclose(three["energy"], three["restart_energies"].min(axis=1))
  assert np.all(three["energy"] <= one["energy"] + 1e-2)
  # Healthy: each ends below where it started, and none counts as diverged.
  for out in (one, three):
    assert np.all(out["energy"] <= out["start_energy"]), (out["energy"], out["start_energy"])
    assert out["diverged"].shape == (8,) and not out["diverged"].any(), out["energy"]
  np.testing.assert_allclose(three["start_energy"], np.minimum(  # Restart 0's start, or lower.
      one["start_energy"], three["start_energy"]), rtol=1e-4)


def test_inference_that_blows_up_finitely_counts_as_diverged(cvae, caplog):
  """Fault hunt: a learning rate that threw z far off while the energy stayed finite (1e4 on
  a tiny CVAE: energies of 7.5e9 from the recognition network's 1.6e3, a worse error than
  its) was not warned of, scored "diverged" 0 by the tuning and published by the evaluation;
  only a NaN or infinite energy counted. An image whose energy ends clearly above where it
  started now counts as diverged, as one without a finite energy does (healthy runs flag
  none: test_restarts_never_worse_than_one_start, test_discvae_uses). The programs of
  test_restarts_never_worse_than_one_start (the learning rate is traced)."""
  from a2i_jax import evaluation  # pylint: disable=import-outside-toplevel
  trained, ds = cvae
  x, y = _test_batch(ds)
  key = jax.random.key(3)
  warned = lambda: [r.getMessage() for r in caplog.records if "diverged" in r.getMessage()]
  region = np.ones((8, 32, 32, 1), np.float32)
  for restarts in (1, 3):
    caplog.clear()
    out = inference.reconstruct(trained, x, y, key=key, options=inference.options_for(
        trained, learning_rate=1e4, restarts=restarts))
    assert np.all(np.isfinite(out["energy"])), out["energy"]  # Finite: what went unseen.
    assert out["diverged"].all(), (out["energy"], out["start_energy"])
    assert warned() == [
        "posterior inference diverged for 8 of 8 images (8 ending clearly higher in energy "
        "than where it started); their outputs mean nothing: lower the learning rate (now "
        "10000)."], warned()
    # The tuning's cell counts them (`evaluate_model` refuses them by the same mask).
    cell = evaluation._tuning_cell(  # pylint: disable=protected-access
        inputs.to_unit(x), out["reconstruction"], region,
        inference.posterior.diverged_of(out))
    assert cell["diverged"] == 8 and np.isnan(cell["mean"]), cell
    with pytest.raises(InputError, match="reconstructs 8 of 8 test images by an inference "
                       "whose energy ended clearly above its start"):
      evaluation._check_outputs_finite(  # pylint: disable=protected-access
          trained, out["reconstruction"], "optimisation", optimised=True,
          diverged=out["diverged"], energy=out["energy"])
    # Each kind counted apart (was: all 8 "as NaN or infinity" where one energy was NaN).
    energy = out["energy"].copy()
    energy[0] = np.nan
    with pytest.raises(InputError, match=r"reconstructs 8 of 8 test images wrongly \(1 as NaN "
                       r"or infinity, 7 by an inference whose energy ended clearly above"):
      evaluation._check_outputs_finite(  # pylint: disable=protected-access
          trained, out["reconstruction"], "optimisation", optimised=True,
          diverged=out["diverged"], energy=energy)
  # The rule: a rise beyond a tenth of the start's size, and beyond 10 nats; negative too.
  np.testing.assert_array_equal(inference.posterior.diverged_images(
      [100.0, 111.0, 5.0, 16.0, -100.0, -89.0, np.nan, np.inf, 1e9],
      [100.0, 100.0, 0.0, 0.0, -100.0, -100.0, 1.0, 1.0, np.inf]),
      [False, True, False, True, False, True, True, True, False])


def test_four_devices_equal_one(cvae):
  trained, ds = cvae
  x, y = _test_batch(ds, 6)  # Not a multiple of 4: padding is exercised too.
  # One step per call: the steps' program is called 4 times per mesh, with the carry from
  # `init` and then from itself.
  opts = inference.options_for(trained, init="zeros", restarts=2, steps=4, steps_per_call=1)
  xs = inference.check_images(x, 32)
  fns = dict(inference.make_inference_fns(trained.model, inference.posterior._static(opts)))
  carries = []  # The carry's sharding in each call of the Adam steps.

  def recording_run(*args):
    carries.append(jax.tree_util.tree_map(lambda a: getattr(a.sharding, "spec", None), args[4]))
    return run_steps(*args)

  run_steps, fns["run"] = fns["run"], recording_run
  run = lambda mesh: inference.infer_latents(trained, xs, y, key=jax.random.key(1),
                                             options=opts, mesh=mesh, fns=fns)
  four, one = run(parallel.make_mesh()), run(parallel.make_mesh(jax.devices()[:1]))
  assert parallel.make_mesh().devices.size == 4
  for k in ("z", "energy", "start_energy", "reconstruction"):
    np.testing.assert_allclose(four[k], one[k], rtol=1e-4, atol=1e-4)
  # The starts of the real rows alone (padded images, one step per call), none diverged.
  assert four["start_energy"].shape == (6,)
  assert not (four["diverged"].any() or one["diverged"].any()), four["energy"]
  # Every call gets the carry split over the devices (Adam's moments too, which `init` leaves
  # replicated, and which the steps leave replicated on one device), so the steps compile
  # once per mesh, not again for each sharding the carry arrives in.
  batch = {"latents": {"z": P("data")}, "mu": {"z": P("data")}, "nu": {"z": P("data")},
           "t": P()}
  assert len(carries) == 8 and all(c == batch for c in carries), carries
  assert run_steps._cache_size() == 2  # A private jit method of jax 0.7.2 .. 0.10.x.


@pytest.fixture(scope="module")
def adam_loops(cvae):
  """{"cpu" | "gpu": (outputs, the text of the compiled `run`)} of one `infer_latents` call
  on 4 test images, 7 zero-init steps in one call (steps_per_call=0), with the Adam loop as
  `perf.inference_scan_unroll` gives it for that backend: rolled on CPU, unrolled by 5 on GPU.

  The text is that of the program the call compiled itself (`Lowered.compile` recorded): was
  a second compile of each, through `_lowered_run`, and a third of the rolled loop (3 steps)
  in test_steps_per_call_zero_runs_every_step_in_one_rolled_loop."""
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  trained, ds = cvae
  x, y = _test_batch(ds, 4)
  xs = inference.check_images(x, 32)
  opts = inference.options_for(trained, init="zeros", steps=7)
  real_compile, real_unroll = jax.stages.Lowered.compile, perf.inference_scan_unroll
  loops = {}
  for backend in ("cpu", "gpu"):
    compiled = []

    def recorded(self, *args, **kwargs):
      compiled.append(real_compile(self, *args, **kwargs))
      return compiled[-1]
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(jax.stages.Lowered, "compile", recorded)
      patch.setattr(perf, "inference_scan_unroll", lambda b=backend: real_unroll(b))
      out = inference.infer_latents(trained, xs, y, key=jax.random.key(1), options=opts)
    runs = [c.as_text() for c in compiled if c.as_text().startswith("HloModule jit_run")]
    assert len(runs) == 1, (backend, [c.as_text().split(",")[0] for c in compiled])
    loops[backend] = out, runs[0]
  return loops


def test_steps_per_call_zero_runs_every_step_in_one_rolled_loop(adam_loops):
  """steps_per_call=0, on CPU as elsewhere: all the steps in one call, one rolled `lax.scan`
  (its program compiles one step, whatever the steps), whose convolutions are all in the
  layout XLA:CPU runs in its library kernels (`perf.conv_input_grad`; the chunks of unrolled
  steps CPU used before compiled 2-3x longer, BENCHMARKS.md "Convolutions in a loop on
  CPU"). A count divides `steps`. The program: `adam_loops`' rolled one (was a compile of
  its own, of 3 steps)."""
  from a2i_jax import models  # pylint: disable=import-outside-toplevel
  for name, steps, per_call, expected in (("cvae", 300, 0, 300), ("discvae", 300, 0, 300),
                                          ("discvae", 12, 5, 4), ("cvae", 3, 10, 3)):
    cfg = tiny_config(name)
    opts = inference.InferenceOptions.from_config(cfg.inference, steps=steps,
                                                  steps_per_call=per_call)
    fns = inference.make_inference_fns(models.create_model(cfg.model), opts)
    assert fns["steps_per_call"] == expected, (name, steps)
  text = adam_loops["cpu"][1]
  labels = re.findall(r"dim_labels=([^,\s}]+)", text)
  assert "while" in text and labels and set(labels) == {"b01f_01io->b01f"}, set(labels)


def _lowered_run(cvae, steps: int, steps_per_call: int):
  """The trained CVAE's `run` program for 4 test images, lowered."""
  trained, ds = cvae
  x, y = _test_batch(ds, 4)
  xs = inference.check_images(x, 32)
  opts = inference.options_for(trained, init="zeros", steps=steps, steps_per_call=steps_per_call)
  fns = inference.make_inference_fns(trained.model, opts)
  prior = (jnp.zeros(y.shape[1]), jnp.eye(y.shape[1]))
  obs = jnp.ones(xs.shape[:3] + (1,))
  yj = jnp.asarray(y, jnp.float32)
  carry = fns["init"](trained.variables, xs, yj, obs, None, jax.random.key(0), prior)
  hyper = inference.posterior._hyper(opts)  # pylint: disable=protected-access
  return fns["run"].lower(trained.variables, xs, yj, obs, carry, prior, hyper)


def test_steps_per_call_changes_nothing_and_one_step_has_no_loop(cvae):
  """1, 2 or 4 Adam steps per jitted call: the same latents. A one-step call has no loop in
  it: a `lax.scan` of length 1 stays a while loop, which XLA:CPU ran 3x slower per step
  (paper CVAE, BENCHMARKS.md "Inference steps per call")."""
  trained, ds = cvae
  x, y = _test_batch(ds, 4)
  xs = inference.check_images(x, 32)
  out = {}
  for k in (1, 2, 4):
    opts = inference.options_for(trained, init="zeros", steps=4, steps_per_call=k)
    out[k] = inference.infer_latents(trained, xs, y, key=jax.random.key(1), options=opts)
  for k in (2, 4):
    np.testing.assert_allclose(out[k]["z"], out[1]["z"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[k]["energy_trace"], out[1]["energy_trace"], rtol=1e-5)
  assert "while" not in _lowered_run(cvae, steps=4, steps_per_call=1).as_text()


def test_gpu_and_tpu_unroll_the_adam_loop_by_five_to_the_same_latents(adam_loops):
  """The loop's steps per iteration by backend (`perf.inference_scan_unroll`): rolled on CPU,
  5 steps on GPU and TPU (1.045-1.049x on an H200). Unrolled, 7 steps (a remainder of 2) end
  where the rolled loop does, and the program's loop body holds 5 steps' convolutions (the
  calls and their programs: `adam_loops`)."""
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  from a2i_jax.inference import posterior  # pylint: disable=import-outside-toplevel
  assert perf.inference_scan_unroll("cpu") == 1
  assert perf.inference_scan_unroll("gpu") == perf.inference_scan_unroll("tpu") == 5
  assert posterior.SCAN_UNROLL is None  # The backend's, unless a benchmark sets it.
  out, convolutions = {}, {}
  for backend, (outputs, text) in adam_loops.items():
    out[backend] = outputs
    convolutions[backend] = len(re.findall(r"= \S+ convolution\(", text))
  np.testing.assert_allclose(out["gpu"]["z"], out["cpu"]["z"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["gpu"]["energy_trace"], out["cpu"]["energy_trace"], rtol=1e-5)
  # 5 steps in the body plus the remainder's 2 after it: 7 steps' convolutions, against 1.
  assert convolutions["gpu"] == 7 * convolutions["cpu"], convolutions


def test_a_call_compiles_its_three_programs_and_nothing_eager(cvae, caplog):
  """Checking, padding (7 images on 4 devices) and repeating (3 restarts) the batch happen on
  the host: done with jnp, each compiled an eager program per shape, 15 of them, 0.3 s of
  the paper disCVAE's first call (BENCHMARKS.md).

  The three programs are compiled side by side in threads (`compile_ahead`), each once and
  each waited for before its first use: the call's own programs find them compiled (a
  program called before its compile ended would log a second "Compiling" line), and a
  second call compiles nothing."""
  trained, ds = cvae
  # 7 images, a batch size no other test uses: JAX keeps an eager program for the rest of
  # the process, so one compiled earlier for the same shapes would not be logged here.
  x, y = _test_batch(ds, 7)
  observed = np.ones((7, 32, 32), np.uint8) * 255
  opts = inference.options_for(trained, restarts=3, steps=2, steps_per_call=2)
  fns = dict(inference.make_inference_fns(trained.model, inference.posterior._static(opts)))
  ahead, compiled_ahead = fns["compile_ahead"], []

  def recorded(*args):
    compiled_ahead.append(ahead(*args))
    return compiled_ahead[-1]
  fns["compile_ahead"] = recorded
  xs = inference.check_images(x, 32)
  assert isinstance(xs, np.ndarray) and xs.dtype == np.float32
  key = jax.random.key(3)
  caplog.set_level("WARNING")
  for _ in range(2):
    caplog.clear()
    with jax.log_compiles(True):
      out = inference.infer_latents(trained, xs, y, observed, key=key, options=opts, fns=fns)
    compiled = [m.split()[1] for m in caplog.messages if m.startswith("Compiling ")]
    names = sorted(c[len("jit("):-1] if c.startswith("jit(") else c for c in compiled)
    assert names == (["finish", "init", "run"] if len(compiled_ahead) == 1 else []), compiled
  first, second = (handle.wait_all() for handle in compiled_ahead)
  assert sorted(first) == ["finish", "init", "run"] and second == {}
  assert all(t["compile"] > 0 for t in first.values())
  assert out["z"].shape == (7, trained.model.latent_dims["z"])
  assert out["restart_energies"].shape == (7, 3)


def test_a_failed_compile_is_tried_again_by_the_next_call(cvae, monkeypatch):
  """A program whose compile fails in `compile_ahead`'s thread (out of memory, say) stops the
  call with that error, and the next call with the same programs and shapes compiles again:
  `run_inference` keeps the programs for the trained model's life, so a failure kept and
  re-raised would stop every later call too."""
  trained, ds = cvae
  x, y = _test_batch(ds, 5)
  x = inference.check_images(x, 32)  # infer_latents takes [-1, 1].
  opts = inference.options_for(trained, steps=2, steps_per_call=2, init="zeros")
  fns = dict(inference.make_inference_fns(trained.model, inference.posterior._static(opts)))
  real, compiles = jax.stages.Lowered.compile, []

  def fails_once(self, *args, **kwargs):
    compiles.append(1)
    if len(compiles) == 1:
      raise MemoryError("out of memory while compiling (injected)")
    return real(self, *args, **kwargs)
  monkeypatch.setattr(jax.stages.Lowered, "compile", fails_once)
  call = lambda: inference.infer_latents(trained, x, y, key=jax.random.key(0), options=opts,
                                         fns=fns)
  with pytest.raises(MemoryError, match="injected"):
    call()
  out = call()
  assert len(compiles) > 3  # The second call compiled again.
  assert out["z"].shape == (5, trained.model.latent_dims["z"])
  assert np.isfinite(out["energy"]).all()


def test_ragged_last_batch_reuses_the_compiled_program(cvae, monkeypatch):
  trained, ds = cvae
  x, y = _test_batch(ds, 6)
  opts = inference.options_for(trained, steps=4, init="zeros")
  # Programs of its own: those shared by the TrainedModels of this module may have compiled
  # other shapes in another test.
  monkeypatch.setattr(inference.restore, "_SHARED", memo.BoundedCache(32))
  batched = inference.run_inference(trained, x, y, key=jax.random.key(0), options=opts,
                                    batch_size=4)
  run = trained.cache[("infer", inference.posterior._static(opts))]["run"]
  assert run._cache_size() == 1  # Batches of 4 and 2 (padded to 4): one program.
  # Zero init and no restarts: the result does not depend on how images are batched.
  whole = inference.run_inference(trained, x, y, key=jax.random.key(0), options=opts,
                                  batch_size=8)
  np.testing.assert_allclose(batched["z"], whole["z"], rtol=1e-4, atol=1e-4)
  assert batched["reconstruction"].shape == (6, 32, 32, 3)


def test_a_few_programs_serve_every_count_of_images(cvae, monkeypatch):
  """Fault hunt: every new count of images compiled the programs again (reconstruct of 3, 4,
  3, 5 images: 3.1 s, 3.7 s, 0.07 s, 2.9 s): run_inference padded only past a call's batch,
  and sample and decode only past `config.inference.batch_size`. A smaller count is padded
  to a bucket (a power of two, at least the device count); each image's result is its own
  row's, so the counts give the same images where they share their rows."""
  trained, ds = cvae
  # Programs of its own: those shared by the TrainedModels of this module (`_SHARED`, the
  # model's cache and its sampler) may have compiled other shapes in another test.
  monkeypatch.setattr(inference.restore, "_SHARED", memo.BoundedCache(32))
  fresh = dataclasses.replace(trained, cache={},
                              sample_fn=sampling.make_jitted_sample_fn(trained.model))
  x, y = _test_batch(ds, 13)
  key = jax.random.key(1)
  opts = inference.options_for(trained, steps=2, init="prior", restarts=2)  # Start noise.
  # 9 and 13 images on 4 devices: were padded to 12 and 16 (two programs); now both to 16.
  inferred = {n: inference.run_inference(fresh, x[:n], y[:n], key=key, options=opts)
              for n in (9, 13)}
  fns = fresh.cache[("infer", inference.posterior._static(opts))]
  assert [fns[name]._cache_size() for name in ("init", "run", "finish")] == [1, 1, 1]
  sampled = {n: inference.sample(fresh, y[:n], key) for n in (3, 4)}
  assert fresh.sample_fn._cache_size() == 1
  latents = inference.prior_latents(fresh, 4, key)
  decoded = {n: inference.decode(fresh, {k: v[:n] for k, v in latents.items()}, y[:n])
             for n in (3, 4)}
  assert fresh.cache["decode"]._cache_size() == 1
  for few, many in ((inferred[9], inferred[13]), (sampled[3], sampled[4]),
                    (decoded[3], decoded[4])):
    assert set(few) == set(many)
    for name, value in few.items():
      if name != "energy_trace":  # The mean over the images given.
        assert value.shape[0] == len(few["image" if "image" in few else "z"]), name
        np.testing.assert_array_equal(value, many[name][:len(value)], err_msg=name)


def test_attributes_outside_the_training_range_are_warned_of_in_every_use(cvae, discvae,
                                                                         caplog, monkeypatch):
  """Fault hunt: only edit's new values and progression's swept ones were checked against the
  training range; -1 / +1 for a 0 / 1 attribute, or 50 for one in [-1, 1], passed sample,
  decode, run_inference, reconstruct, complete, progression's base vector and swap without a
  word. Each call now says so once, naming itself, the columns and their ranges; the test
  split's own attributes say nothing."""
  trained, ds = cvae
  x, y = _test_batch(ds)
  bad = y.copy()
  bad[:, 1], bad[:, 6] = 50.0, np.tile([-1.0, 1.0], 4)  # face_width x50; eyeglasses as +-1.
  # No Adam steps, and the programs of test_energy_decreases_and_recognition_init_is_the_start.
  opts = inference.options_for(trained, steps=0)
  key = jax.random.key(0)
  observed = np.ones((8, 32, 32), np.float32)
  observed[:, :16] = 0
  uses = {
      "sample": lambda a: inference.sample(trained, a, key),
      "decode": lambda a: inference.decode(trained, inference.prior_latents(trained, 8, key),
                                           a),
      "run_inference": lambda a: inference.run_inference(trained, x, a, key=key, options=opts),
      "reconstruct": lambda a: inference.reconstruct(trained, x, a, key=key, options=opts),
      "complete": lambda a: inference.complete(trained, x, a, observed, key=key, options=opts),
      "edit": lambda a: inference.edit(trained, x, a, {0: 0.0}, key=key, options=opts),
      "progression": lambda a: inference.progression(trained, a[0], 0, [0.0, 0.5], key=key,
                                                     num_latents=1),
      "infer_latents": lambda a: inference.infer_latents(
          trained, inputs.to_signed(x), a, key=key, options=opts,
          fns=trained.cache[("infer", inference.posterior._static(opts))]),  # run_inference's.
      "swap": lambda a: inference.swap(discvae[0], a[0], key=key, num=3)}
  said = lambda: [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
  for use, call in uses.items():
    caplog.clear()
    call(bad)
    assert len(said()) == 1, (use, said())  # edit decodes its edit, progression its sweep.
    one = use in ("progression", "swap")  # One vector: the first row.
    lo, hi = (discvae[0] if use == "swap" else trained).attribute_ranges[1]
    assert said()[0].startswith(
        f"the attributes given to {use} lie outside their training range in 2 of 10 columns "
        f"(attribute 1 (face_width): 50, trained on [{lo:.3g}, {hi:.3g}]; attribute 6 "
        f"(eyeglasses): {'-1' if one else '-1 to 1'}, trained on [0, 1]); the model has not "
        "seen such values, so its output may not follow them"), (use, said())
    caplog.clear()
    call(y)  # The test split's own: inside.
    assert not said(), (use, said())
  caplog.clear()
  base = y[1].copy()
  base[0] = 40.0  # The swept column: its given value is not used.
  inference.progression(trained, base, 0, [0.0, 0.5], key=key, num_latents=1)
  prior = inference.AttributePrior.fit(ds["train"].attributes)
  inferring = dataclasses.replace(opts, infer_attributes=True)

  def stop(*args, **kwargs):  # The check comes first; what these would compile is not needed.
    raise StopIteration
  monkeypatch.setattr(inference.uses, "_infer_latents", stop)
  with pytest.raises(StopIteration):  # None given: nothing to warn of.
    inference.run_inference(trained, x, None, key=key, options=inferring, attribute_prior=prior)
  # Given where they are inferred: refused (they would be ignored), not warned of.
  with pytest.raises(InputError, match="was given attributes"):
    inference.run_inference(trained, x, bad, key=key, options=inferring, attribute_prior=prior)
  assert not said(), said()


def test_attribute_report(cvae):
  from a2i_jax import attribute_predictor, evaluation  # pylint: disable=import-outside-toplevel
  trained, ds = cvae
  predictor = attribute_predictor.train_predictor(ds, steps=20, batch_size=16, width=8)
  report = evaluation.attribute_report(trained, ds, predictor, key=jax.random.key(0),
                                       num_examples=16, num_bases=1, num_values=3,
                                       options=inference.options_for(trained, steps=4))
  assert report["model"] == "cvae" and report["samples"]["num_images"] == 16
  assert set(report["progression"]) == set(ds.attribute_names)
  assert report["inference"]["num_images"] == 16
  assert 0.0 <= report["samples"]["binary_accuracy"] <= 1.0
  table = evaluation.attribute_table([report])
  assert table.count("\n") == 3 and "| cvae |" in table


def test_attribute_inference_beats_chance(cvae):
  trained, ds = cvae
  test = ds["test"]
  prior = inference.AttributePrior.fit(ds["train"].attributes)
  out = inference.infer_attributes(trained, test.images, prior, key=jax.random.key(0),
                                   options=inference.options_for(trained, steps=40))
  # Skin tone is the largest visual attribute of the synthetic faces. With 64 test images a
  # correlation above 0.4 has p < 0.001 under chance (correlation 0); shuffling the images
  # against their attributes gives the chance level of this very estimate.
  j = list(ds.attribute_names).index("skin_tone")
  r = np.corrcoef(out["y"][:, j], test.attributes[:, j])[0, 1]
  shuffled = np.corrcoef(out["y"][:, j], np.roll(test.attributes[:, j], 7))[0, 1]
  assert r > 0.4 and r > abs(shuffled) + 0.2, (r, shuffled)


def test_discvae_uses(discvae):
  trained, ds = discvae
  x, y = _test_batch(ds, 4)
  masks = ds["test"].masks[:4]
  # With and without foreground masks for the encoder init.
  for fg in (masks, None):
    out = inference.reconstruct(trained, x, y, key=jax.random.key(0), fg_masks=fg)
    assert set(out) >= {"z_fg", "z_bg", "foreground", "gate", "background", "reconstruction"}
    assert out["z_fg"].shape == (4, 6) and out["z_bg"].shape == (4, 4)
    assert not out["diverged"].any(), (out["energy"], out["start_energy"])  # Healthy.
  # The images are the generator's for the latents kept, the best restart's (here not always
  # the first): `finish` decodes once for the energies and the images.
  out = inference.reconstruct(trained, x, y, key=jax.random.key(0),
                              options=inference.options_for(trained, init="prior", restarts=3))
  assert (out["restart_energies"].argmin(axis=1) != 0).any()
  assert not out["diverged"].any(), (out["energy"], out["start_energy"])
  decoded = inference.decode(trained, {"z_fg": out["z_fg"], "z_bg": out["z_bg"]}, out["y"])
  for name in ("foreground", "gate", "background"):
    np.testing.assert_allclose(out[name], decoded[name], atol=1e-5)
  np.testing.assert_allclose(out["reconstruction"], decoded["image"], atol=1e-5)
  edited = inference.edit(trained, x, y, {0: 1.0}, key=jax.random.key(0))
  assert edited["edited"].shape == (4, 32, 32, 3) and np.all(edited["edited_y"][:, 0] == 1.0)
  grid = inference.swap(trained, y[0], key=jax.random.key(0), num=3)["grid"]
  assert grid.shape == (3, 3, 32, 32, 3)
  # Along a row zF is fixed and zB varies: the images differ.
  assert not np.allclose(grid[0, 0], grid[0, 1])
  prog = inference.progression(trained, y[0], 2, np.linspace(-1, 1, 5), key=jax.random.key(0),
                               num_latents=2)
  assert prog.shape == (2, 5, 32, 32, 3)


def test_bad_inputs(cvae, discvae):
  trained, ds = cvae
  x, y = _test_batch(ds, 2)
  key = jax.random.key(0)
  with pytest.raises(InputError, match=r"2 attribute vectors for 3 images"):
    inference.reconstruct(trained, np.concatenate([x, x[:1]]), y, key=key)
  with pytest.raises(InputError, match=r"observed has shape \(2, 16, 16\)"):
    inference.complete(trained, x, y, np.ones((2, 16, 16)), key=key)
  with pytest.raises(InputError, match=r"observed values must lie in \[0, 1\]"):
    inference.complete(trained, x, y, np.full((2, 32, 32), 2.0), key=key)
  with pytest.raises(InputError, match="needs an attribute_prior"):
    inference.reconstruct(trained, x, None, key=key,
                          options=inference.options_for(trained, infer_attributes=True))
  with pytest.raises(InputError, match="attributes are needed"):
    inference.reconstruct(trained, x, None, key=key)
  with pytest.raises(InputError, match=r"index=10 is not valid; pass an integer in \[0, 10\)"):
    inference.edit(trained, x, y, {10: 1.0}, key=key)
  with pytest.raises(InputError, match=r"index='hat' is not valid; pass an integer"):
    inference.edit(trained, x, y, {"hat": 1.0}, key=key)
  with pytest.raises(InputError, match="swap needs a disCVAE"):
    inference.swap(trained, y[0], key=key)
  with pytest.raises(ConfigError, match="inference.init='mean' is not valid"):
    inference.options_for(trained, init="mean")
  with pytest.raises(ConfigError, match=r"unknown inference option\(s\) \['stpes'\]"):
    inference.options_for(trained, stpes=3)
  dis, _ = discvae
  with pytest.raises(ConfigError, match="energy='gaussian' is not available for DisCVAE"):
    inference.reconstruct(dis, x, y, key=key, options=inference.options_for(dis, energy="gaussian"))


def test_the_energy_carries_the_models_recon_weight(discvae):
  """A disCVAE trained with recon_weight w has the MAP energy w SmoothL1 + |z|^2 / 2: the
  energy at the same latents (zero steps) with prior weight w is w times the w = 1 one."""
  trained, ds = discvae
  x, y = _test_batch(ds, 4)
  key = jax.random.key(0)
  with_weight = lambda w: inference.TrainedModel.from_variables(
      trained.config, trained.variables, trained.step, model=trained.model.clone(recon_weight=w))
  one, three = with_weight(1.0), with_weight(3.0)
  base = inference.reconstruct(one, x, y, key=key, options=inference.options_for(one, steps=0))
  out = inference.reconstruct(three, x, y, key=key,
                              options=inference.options_for(three, steps=0, prior_weight=3.0))
  np.testing.assert_allclose(out["energy"], 3.0 * base["energy"], rtol=1e-4)
