"""Where a train step's time goes on XLA:CPU: per-op totals from a JAX profiler trace.

  python benchmarks/profile_step.py --model=cvae --batch=8 --top=25

Runs the library's train step (as bench.py does) a few times under `jax.profiler.trace` with
XLA:CPU's per-thunk trace events on, reads the Perfetto JSON the profiler writes and prints the
ops that took the most time, summed over the traced steps, with their share of the total.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="cvae")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--top", type=int, default=25)
  p.add_argument("--model_overrides", default="")
  p.add_argument("--what", default="train", help="train or infer (stand-in decoder step).")
  args = p.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_xprof_traceme=true").strip()
  import jax
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import models, parallel, train_lib

  overrides = dict(kv.split("=", 1) for kv in args.model_overrides.split(",") if kv)
  config = bench.make_config(bench.Case(args.model, args.batch, "float32"), overrides)
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = models.create_model(config.model)
  if args.what == "train":
    tx = train_lib.make_optimizer(config)
    state = parallel.put_replicated(
        train_lib.create_train_state(model, config, tx, jax.random.key(0)), mesh)
    data = parallel.put_replicated(bench.random_data(config, 512), mesh)
    fn = jax.jit(train_lib.make_multi_step(train_lib.make_train_step(model, tx, config), config,
                                           mesh), donate_argnums=(0,))
    key = jax.random.key(1)
    holder = [state]

    def step():
      holder[0], m = fn(holder[0], data, key)
      jax.block_until_ready(m)
  else:
    import jax.numpy as jnp
    variables = models.init_variables(model, config.model, jax.random.key(0))
    d = bench.random_data(config, args.batch)
    x = jnp.asarray(d["images"], jnp.float32) / 127.5 - 1.0
    y = jnp.asarray(d["attributes"])
    run = bench._standin_inference(model, variables, config, 1, 0.01)  # pylint: disable=protected-access

    def step():
      jax.block_until_ready(run(x, y, jax.random.key(0)))
  step()
  trace_dir = tempfile.mkdtemp(prefix="a2i_trace_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(args.steps):
      step()
  path = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  totals = collections.Counter()
  counts = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and "dur" in e:
      totals[e["name"]] += e["dur"]
      counts[e["name"]] += 1
  # The outermost events (the whole program) dwarf the rest; show the biggest leaves too.
  grand = max(totals.values())
  for name, us in totals.most_common(args.top):
    print(f"{us / 1e3 / args.steps:10.1f} ms/step {100 * us / grand:5.1f}%  x{counts[name] // args.steps:<4d} {name[:110]}")


if __name__ == "__main__":
  main()
