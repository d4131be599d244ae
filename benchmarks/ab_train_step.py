"""Config variants of the paper train step side by side: compiled in one process, timed in
alternating rounds so that every variant sees the same machine load.

  python benchmarks/ab_train_step.py --models=cvae,discvae \
      --variants="taps:model.conv_weight_grad=auto;xla:model.conv_weight_grad=xla"
  python benchmarks/ab_train_step.py --smoke --variants="a:;b:model.conv_weight_grad=xla"

Each variant is `name:key=value,key=value` over `bench.py`'s paper config (64x64, width 1,
float32, `--batch`); the step is the library's (`perf.jit` of `train_lib.make_multi_step`).
Prints one JSON line per (model, variant): compile seconds, images/s (the median of `--rounds`
timed steps after a warm-up) and every step's time, and the ratio to the first variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _variants(spec: str) -> list[tuple[str, dict]]:
  out = []
  for part in (p for p in spec.split(";") if p.strip()):
    name, colon, kvs = part.partition(":")
    pairs = [kv.split("=", 1) for kv in kvs.split(",") if kv.strip()]
    if not colon or not name.strip() or any(len(kv) != 2 for kv in pairs):
      raise SystemExit(f"error: --variants part {part!r} is not name:key=value,...; e.g. "
                       "\"taps:model.conv_weight_grad=auto;xla:model.conv_weight_grad=xla\".")
    out.append((name.strip(), dict(pairs)))
  if not out:
    raise SystemExit("error: --variants names no variant; give name:key=value,...;name:...")
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cvae,discvae")
  p.add_argument("--variants", required=True, help="name:key=value,...;name:...")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--smoke", action="store_true", help="Tiny models, 2 rounds.")
  args = p.parse_args(argv)
  import jax  # pylint: disable=import-outside-toplevel
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  variants = _variants(args.variants)
  if args.smoke:
    args.rounds = 2
  for model_name in args.models.split(","):
    compiled = {}
    for name, overrides in variants:
      if args.smoke:
        overrides = {"model.image_size": "32", "model.width": "0.0625", **overrides}
      config = bench.make_config(bench.Case(model_name, args.batch, "float32"), overrides)
      steps, state, data, _ = bench.train_program(config, 2 * args.batch)
      fn = perf.jit(steps)
      t0 = time.perf_counter()
      step = fn.lower(state, data, jax.random.key(1)).compile()
      compiled[name] = (step, state, data, time.perf_counter() - t0)
    times = {name: [] for name in compiled}
    for step, state, data, _ in compiled.values():  # Warm-up.
      jax.block_until_ready(step(state, data, jax.random.key(1)))
    for _ in range(args.rounds):
      for name, (step, state, data, _) in compiled.items():
        t0 = time.perf_counter()
        jax.block_until_ready(step(state, data, jax.random.key(1)))
        times[name].append(time.perf_counter() - t0)
    first = statistics.median(times[variants[0][0]])
    for name, (_, _, _, compile_s) in compiled.items():
      med = statistics.median(times[name])
      print(json.dumps({"model": model_name, "variant": name, "compile_s": round(compile_s, 2),
                        "images_per_s": round(args.batch / med, 2),
                        "speed_vs_first": round(first / med, 3),
                        "step_s_all": [round(t, 3) for t in times[name]]}), flush=True)


if __name__ == "__main__":
  main()
