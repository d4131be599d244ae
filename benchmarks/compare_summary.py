"""The speed ratios in benchmarks/compare_cpu.sh's output: JAX against the PyTorch port.

  python benchmarks/compare_summary.py benchmarks/results/cpu_vs_torch.json [more.json ...]

Each JAX record (one `bench.py` run: one model, one upsample mode) is compared with the port's
record of the same model just before it in the file. Two ratios per measure (the port's time
over JAX's: above 1, JAX is the faster):
* "medians": the port's median time over JAX's;
* "pairs": the median over i of the port's i-th timed call over JAX's i-th. Under
  compare_cpu.sh's turn-taking (INTERLEAVE=1) the two calls of a pair ran one right after the
  other, which cancels the machine's drift but slowed JAX's calls by a fifth to a half (the
  port's less; benchmarks/timing.py); without it, the pairs are as far apart as the runs.
Several files: one row per file and model, then the median of the pair ratios over the
files per model.
"""

import argparse
import json
import statistics
import sys


def _times(record: dict, what: str) -> list:
  """The timed calls of a port record or a bench.py case, for "train" or "infer"."""
  block = record.get(what) or {}
  return block.get("step_s_all" if what == "train" else "run_s_all") or []


def ratios(torch_times: list, jax_times: list) -> dict:
  """{"medians": ..., "pairs": ...} for two lists of call times (None where either is empty)."""
  if not torch_times or not jax_times:
    return {"medians": None, "pairs": None}
  n = min(len(torch_times), len(jax_times))
  return {"medians": statistics.median(torch_times) / statistics.median(jax_times),
          "pairs": statistics.median(t / j for t, j in zip(torch_times[:n], jax_times[:n]))}


def rows_of(path: str) -> list:
  """One row per JAX record in a compare_cpu.sh output file.

  Args:
    path: the file: JSON records, one a line.
  Returns:
    The rows.
  Raises:
    SystemExit: the file cannot be read, or a line of it is not a JSON record, as one
      `error:` line (was: a JSONDecodeError traceback).
  """
  rows, port = [], {}
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    why = getattr(e, "strerror", None) or str(e).splitlines()[0]
    raise SystemExit(f"error: {path}: cannot read it ({why}); name an output file of "
                     "benchmarks/compare_cpu.sh.") from None
  for number, line in enumerate(lines, 1):
    line = line.strip()
    if not line:
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if not isinstance(record, dict):
      raise SystemExit(f"error: {path} line {number} is not a JSON record; name an output "
                       "file of benchmarks/compare_cpu.sh (one JSON object a line).")
    if record.get("framework") == "torch":
      port[record["model"]] = record
      continue
    for case in record.get("cases", []):
      ref = port.get(case["model"])
      if ref is None:
        continue
      row = {"file": path, "model": case["model"],
             "mode": (case.get("train") or case.get("infer") or {}).get("upsample_mode", "?")}
      for what in ("train", "infer"):
        row[what] = ratios(_times(ref, what), _times(case, what))
      rows.append(row)
  return rows


def _fmt(x) -> str:
  return "-" if x is None else f"{x:.2f}x"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("files", nargs="+")
  args = p.parse_args(argv)
  rows = [r for path in args.files for r in rows_of(path)]
  if not rows:
    print("error: no JAX record follows a port record of its model in "
          f"{', '.join(args.files)}; run benchmarks/compare_cpu.sh to make one.", file=sys.stderr)
    return 1
  print("| file | model | mode | train (medians) | train (pairs) | infer (medians) | "
        "infer (pairs) |\n|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['file']} | {r['model']} | {r['mode']} | {_fmt(r['train']['medians'])} | "
          f"{_fmt(r['train']['pairs'])} | {_fmt(r['infer']['medians'])} | "
          f"{_fmt(r['infer']['pairs'])} |")
  if len(args.files) > 1:
    print("\nMedian over the files:\n\n| model | mode | train (pairs) | infer (pairs) |\n"
          "|---|---|---|---|")
    for key in sorted({(r["model"], r["mode"]) for r in rows}):
      sel = [r for r in rows if (r["model"], r["mode"]) == key]
      med = {w: [r[w]["pairs"] for r in sel if r[w]["pairs"] is not None]
             for w in ("train", "infer")}
      print(f"| {key[0]} | {key[1]} | "
            + " | ".join(_fmt(statistics.median(v)) if v else "-" for v in med.values()) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
