"""One process of tests/test_multiprocess.py: a few train steps of the tiny config on the global
mesh, through the library's own functions.

  python tests/multiprocess_driver.py --out=r.npz --local_devices=4           # 1 process
  python tests/multiprocess_driver.py --out=r.npz --local_devices=2 \\
      --coordinator=localhost:PORT --num_processes=2 --process_id=0|1         # each of 2

Process 0 writes the per-step loss and gradient norm, an evaluation of a validation batch
put with `parallel.put_batch`, and the final parameters to `--out` (.npz). `--die_after=K`
makes process `--dying_process` kill itself after K steps while the other keeps
stepping: the survivor must
stop with an error, not hang. `--fail_preparing` fails process 0's data preparation: every
process must stop with an error. A join that fails (`--timeout_s`) is one `error:` line and
exit code 1, as in the entry points.

  python tests/multiprocess_driver.py --raise_at=PROCESS:STEP[:val] train.py ARGS

runs an entry point (train.py, infer.py) with ARGS instead, and makes process PROCESS raise a
RuntimeError, a bug's exception, once its metrics row of step STEP is written (with ":val",
once the step's validation scalars are: they go into the row after its checkpoint).

  python tests/multiprocess_driver.py --sigint_twice_in_eval=PROCESS train.py ARGS

likewise sends process PROCESS two Ctrl-Cs (a stop, then "stop now") as its first
evaluation begins.
"""

import argparse
import os
import runpy
import signal
import sys
import time


def _run_entry_point_raising(raise_at: str, script: str, argv: list) -> None:
  """Runs `script` as `python script argv` would, with the exception `raise_at` asks for."""
  from a2i_jax import distributed, metrics  # pylint: disable=import-outside-toplevel
  process, at_step, *val = raise_at.split(":")
  process, at_step = int(process), int(at_step)
  write = metrics.MetricWriter.write

  def write_then_raise(self, step, scalars):
    write(self, step, scalars)
    if (step == at_step and distributed.process_index() == process
        and (not val or any(k.startswith("val/") for k in scalars))):
      print(f"raising at {time.time()}", file=sys.stderr, flush=True)  # For the test's clock.
      raise RuntimeError(f"injected on process {process} at step {step}")
  metrics.MetricWriter.write = write_then_raise
  sys.argv = [script, *argv]
  runpy.run_path(script, run_name="__main__")


def _run_entry_point_stopped_in_eval(process: str, script: str, argv: list) -> None:
  """Runs `script` as `python script argv` would, with two Ctrl-Cs (a stop, then "stop now")
  to process `process` as its first evaluation begins."""
  from a2i_jax import distributed, train_eval  # pylint: disable=import-outside-toplevel
  evaluate = train_eval.evaluate

  def stopped_then_evaluate(*args, **kwargs):
    if distributed.process_index() == int(process):
      print(f"interrupting at {time.time()}", file=sys.stderr, flush=True)  # The test's clock.
      os.kill(os.getpid(), signal.SIGINT)
      os.kill(os.getpid(), signal.SIGINT)  # Raises here, as the handler runs.
    return evaluate(*args, **kwargs)
  train_eval.evaluate = stopped_then_evaluate
  sys.argv = [script, *argv]
  runpy.run_path(script, run_name="__main__")


if len(sys.argv) > 2 and sys.argv[1].startswith("--raise_at="):
  _run_entry_point_raising(sys.argv[1].split("=", 1)[1], sys.argv[2], sys.argv[3:])
  sys.exit(0)
if len(sys.argv) > 2 and sys.argv[1].startswith("--sigint_twice_in_eval="):
  _run_entry_point_stopped_in_eval(sys.argv[1].split("=", 1)[1], sys.argv[2], sys.argv[3:])
  sys.exit(0)

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--cache", default="")
parser.add_argument("--compile_cache", default="")
parser.add_argument("--local_devices", type=int, default=4)
parser.add_argument("--coordinator", default=None)
parser.add_argument("--num_processes", type=int, default=None)
parser.add_argument("--process_id", type=int, default=None)
parser.add_argument("--heartbeat_timeout_s", type=int, default=10)
parser.add_argument("--timeout_s", type=int, default=60)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--die_after", type=int, default=0)
parser.add_argument("--dying_process", type=int, default=1)
parser.add_argument("--fail_preparing", action="store_true")
args = parser.parse_args()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_config  # noqa: E402  (sets the tests' XLA flags, then we fix the count)

os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ["XLA_FLAGS"].split() if "device_count" not in f]
    + [f"--xla_force_host_platform_device_count={args.local_devices}"])

import jax  # noqa: E402

# What the join and the failed preparation need; the rest after them (half a second of
# imports in each process of the tests that end there).
from a2i_jax import distributed, interrupts  # noqa: E402
from a2i_jax.errors import A2IError, DataError  # noqa: E402

if args.compile_cache:
  jax.config.update("jax_compilation_cache_dir", args.compile_cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# The entry points' handler (`interrupts.stop_on_signals`): must survive the join, and end a
# process that waits in it for the others with status 143.
signal.signal(signal.SIGTERM, interrupts.raise_terminated)
try:
  distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                         timeout_s=args.timeout_s, heartbeat_timeout_s=args.heartbeat_timeout_s)
except A2IError as e:  # As the entry points do: one line, and no wait at the shutdown barrier.
  print(f"error: {e}", file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access
distributed.configure_logging()
if args.fail_preparing:  # Process 0 fails to prepare the data: everyone stops, no one waits.
  def prepare():
    if distributed.is_main():
      raise DataError("no images in /nowhere; put them there.")
    return "read"
  try:
    distributed.main_first("prepare the data", prepare)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  sys.exit(0)
assert jax.device_count() == 4 and jax.local_device_count() == args.local_devices

import numpy as np  # noqa: E402
import optax  # noqa: E402

from a2i_jax import models, parallel, train_lib  # noqa: E402
from a2i_jax.data import load_dataset  # noqa: E402
from a2i_jax.train_state import create_train_state  # noqa: E402

config = tiny_config("cvae", tmp_cache=args.cache)
config.steps_per_dispatch = 1
mesh = parallel.make_mesh()
model = models.create_model(config.model)
dataset = load_dataset(config.data)  # Process 0 writes the cache; the others then read it.
train = dataset["train"]
data = parallel.put_replicated({"images": train.images,
                                "attributes": train.attributes.astype(np.float32)}, mesh)
# SGD, not Adam: Adam's first step moves every parameter by about its learning rate whatever
# the gradient's size, so the rounding noise of a zero gradient (a bias before BatchNorm)
# would show as a difference between the runs.
tx = optax.sgd(1e-6)
state = parallel.put_replicated(create_train_state(model, config, tx, jax.random.key(0)), mesh)
step = jax.jit(train_lib.make_multi_step(train_lib.make_train_step(model, tx, config), config,
                                         mesh))
key = jax.random.key(1)
losses, grad_norms, step_s = [], [], []
try:
  with distributed.peers_checked():
    for i in range(args.steps):
      t0 = time.perf_counter()
      state, metrics = step(state, data, key)
      metrics = parallel.fetch(metrics)
      step_s.append(time.perf_counter() - t0)  # The first one includes the compilation.
      losses.append(float(metrics["loss"][0]))
      grad_norms.append(float(metrics["grad_norm"][0]))
      if args.die_after and i + 1 == args.die_after:
        if distributed.process_index() == args.dying_process:
          os.kill(os.getpid(), signal.SIGKILL)
except distributed.PeerError as e:
  # As the entry points do (train.py's `_fail`): one line, then `exit_now`, not the shutdown
  # barrier.
  print(f"error: {e}", file=sys.stderr, flush=True)
  distributed.exit_now(1)

# A batch split over the processes' devices, evaluated and gathered back.
val = dataset["validation"]
batch = parallel.put_batch({"images": val.images[:8], "attributes": val.attributes[:8]}, mesh)
weights = parallel.put_batch(np.ones(8, np.float32), mesh)
ev = parallel.fetch(jax.jit(train_lib.make_eval_step(model, config))(
    state.variables, batch, weights, jax.random.key(2)))
assert np.array_equal(parallel.fetch(batch["images"]), val.images[:8])

# Whether a SIGTERM still reaches the handler set before the join (JAX's preemption notifier
# takes the signal in C++ at the join; `distributed.initialize` puts the handler back).
sigterm_kept = False
try:
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(1)  # A Python handler runs here, in the main thread.
except KeyboardInterrupt:
  sigterm_kept = True
params = parallel.fetch(state.params)
if distributed.is_main():
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(params)}
  np.savez(args.out, loss=np.array(losses), grad_norm=np.array(grad_norms), step_s=np.array(step_s),
           sigterm_kept=sigterm_kept,
           eval_loss=np.array(ev["loss"]), **{"param/" + k: v for k, v in flat.items()})
