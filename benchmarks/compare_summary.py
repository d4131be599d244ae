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
files per model. A JAX case that measured other work than the port's record before it (batch,
dtype or compute dtype, width, image size, inference images or steps) is refused with one
`error:` line: until 2026-12-06 its ratios were printed without a word.
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py: the scripts' one-line refusals)

_FILES = "name an output file of benchmarks/compare_cpu.sh"


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


def _times_ok(block: object, what: str) -> bool:
  """Whether `block` (a record's "train" or "infer" entry) is absent or holds its timed calls
  as a list of positive numbers."""
  if block is None:
    return True
  if not isinstance(block, dict):
    return False
  times = block.get("step_s_all" if what == "train" else "run_s_all")
  return times is None or (isinstance(times, list) and all(
      isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in times))


def _check(record: dict, where: str) -> None:
  """Refuses (one `error:` line) a record that is neither a port record with its model nor a
  bench.py record whose cases name theirs, or whose timed calls are not positive numbers.

  Args:
    record: one line's JSON object.
    where: "<path> line <n>", for the error line.
  Raises:
    SystemExit: the record does not have the fields the ratios read (was: a KeyError or
      TypeError traceback, or a record passed over without a word).
  """
  if record.get("framework") == "torch":
    parts, kind = [record], "the port's record"
  elif isinstance(record.get("cases"), list):
    parts, kind = record["cases"], "a case of bench.py's record"
  else:
    raise SystemExit(f"error: {where} is neither a port record (\"framework\": \"torch\") nor "
                     f"a bench.py record (\"cases\": [...]); {_FILES}.")
  for part in parts:
    if not isinstance(part, dict) or not isinstance(part.get("model"), str):
      raise SystemExit(f"error: {where}: {kind} names no \"model\"; {_FILES}.")
    for what in ("train", "infer"):
      if not _times_ok(part.get(what), what):
        raise SystemExit(f"error: {where}: {kind} of {part['model']} has {what} times that "
                         f"are not a list of positive numbers; {_FILES}.")


# The settings a JAX case and the port's record must share for their times to be compared:
# (where in the record, the name the error line gives it).
_SAME = ((("batch",), "batch"), (("width",), "width"), (("image_size",), "image size"),
         (("dtype",), "dtype"), (("compute_dtype",), "compute dtype"),
         (("infer", "images"), "inference images"), (("infer", "steps"), "inference steps"))


def _setting(record: dict, keys: tuple, port: bool) -> object:
  """One setting of a record (None where it does not say); the port runs float32 throughout,
  whether its record says so or not."""
  value = record
  for key in keys:
    value = value.get(key) if isinstance(value, dict) else None
  if value is None and port and keys[0] in ("dtype", "compute_dtype"):
    return "float32"
  return value


def mismatch(ref: dict, case: dict) -> list:
  """The settings in which a bench.py case and the port's record before it differ.

  Args:
    ref: the port's record.
    case: one case of bench.py's record.
  Returns:
    "name: JAX's vs the port's" strings, one per setting both records give and differ in
    (empty: the two measured the same work).
  """
  out = []
  for keys, name in _SAME:
    mine, theirs = _setting(case, keys, False), _setting(ref, keys, True)
    if mine is not None and theirs is not None and mine != theirs:
      out.append(f"{name} {mine} vs the port's {theirs}")
  return out


def rows_of(path: str) -> list:
  """One row per JAX record in a compare_cpu.sh output file.

  Args:
    path: the file: JSON records, one a line.
  Returns:
    The rows.
  Raises:
    SystemExit: the file cannot be read, a line of it is not a JSON record, a record lacks
      the fields the ratios read (`_check`), or a JAX case measured other work than the port's
      record before it (batch, dtype, width, image size, inference images or steps:
      `mismatch`), as one `error:` line (was: a JSONDecodeError or KeyError traceback, or a
      ratio of unlike runs without a word).
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
    _check(record, f"{path} line {number}")
    if record.get("framework") == "torch":
      port[record["model"]] = record
      continue
    for case in record.get("cases", []):
      ref = port.get(case["model"])
      if ref is None:
        continue
      differ = mismatch(ref, case)
      if differ:
        raise SystemExit(f"error: {path} line {number}: the JAX case of {case['model']} and the "
                         f"port's record before it measured different work ({'; '.join(differ)})"
                         "; compare runs of the same settings (benchmarks/compare_cpu.sh runs "
                         "both sides with its own).")
      row = {"file": path, "model": case["model"],
             "mode": (case.get("train") or case.get("infer") or {}).get("upsample_mode", "?")}
      for what in ("train", "infer"):
        row[what] = ratios(_times(ref, what), _times(case, what))
      rows.append(row)
  return rows


def _fmt(x) -> str:
  return "-" if x is None else f"{x:.2f}x"


def main(argv=None) -> int:
  """Prints the ratios of the files the command line names (see the module docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The exit status: 0, or 1 where no JAX record has a port record of its model before it.
  Raises:
    SystemExit: (one `error:` line) no file named, or a file that is not compare_cpu.sh's.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("files", nargs="+", help="Output files of benchmarks/compare_cpu.sh.")
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
