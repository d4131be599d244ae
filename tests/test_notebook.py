"""Runs notebooks/attribute2image.ipynb top to bottom in its tiny setting (A2I_NOTEBOOK_TINY=1).

The kernel is this interpreter (a kernel spec written to a temp dir points at sys.executable),
imports this checkout's `a2i_jax` (PYTHONPATH) and runs on ONE CPU device: the multi-device
paths are tested elsewhere, and with conftest's 4 fake devices compiling and checkpointing take
a third longer. Any cell error fails the test; the figures must come out as inline PNGs.
"""

import json
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "attribute2image.ipynb")
KERNEL = "a2i-test-python"


def _kernel_spec(jupyter_dir: str) -> None:
  """A kernel spec that runs this very interpreter, whatever `python3` means elsewhere."""
  spec_dir = os.path.join(jupyter_dir, "kernels", KERNEL)
  os.makedirs(spec_dir)
  with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": KERNEL, "language": "python"}, f)


def test_notebook_runs_in_tiny_setting(tmp_path, monkeypatch):
  jupyter_dir = tmp_path / "jupyter"
  _kernel_spec(str(jupyter_dir))
  monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
  monkeypatch.setenv("A2I_NOTEBOOK_TINY", "1")
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  monkeypatch.setenv("XLA_FLAGS", " ".join(flags))  # conftest's fast-compile flags stay.
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  work = tmp_path / "work"
  work.mkdir()

  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(nb, kernel_name=KERNEL, timeout=300, allow_errors=False,
                          resources={"metadata": {"path": str(work)}})
  try:
    client.execute()
  except CellExecutionError as e:  # Show the failing cell's traceback, not nbclient's.
    pytest.fail(f"a notebook cell failed:\n{e}")

  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  pngs = [o for o in outputs if "image/png" in o.get("data", {})]
  # The sample grid from training, samples, progression, completion, two edits, swap.
  assert len(pngs) >= 6, f"expected the notebook's figures inline, got {len(pngs)} PNGs"
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "tiny setting: True" in text
  assert "devices: [CpuDevice(id=0)]" in text
  assert "trained to step 4" in text
  # Both runs wrote their checkpoints in the temp working dir, not in the repository.
  assert (work / "runs" / "notebook_cvae" / "checkpoints").is_dir()
  assert (work / "runs" / "notebook_discvae" / "checkpoints").is_dir()
