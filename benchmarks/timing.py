"""Wall-clock timing shared by the benchmark scripts (PyTorch and JAX alike)."""

import statistics
import time


def median_time(fn, repeats):
  """Calls `fn` once to warm up, then `repeats` times; returns (median seconds, all times).

  `fn` must block until its work is done (e.g. `jax.block_until_ready` inside it).
  """
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times
