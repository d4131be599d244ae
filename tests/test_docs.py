"""The API reference stays complete and current: every public function of a2i_jax documents
its arguments and return value, and docs/api.md is what docs/make_api.py generates now."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make_api():
  spec = importlib.util.spec_from_file_location("make_api", os.path.join(ROOT, "docs",
                                                                          "make_api.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_public_functions_have_args_and_returns():
  # No exemptions: `python docs/make_api.py --check` lists any gap this reports.
  assert _make_api().missing_sections() == []


def test_api_md_is_current():
  with open(os.path.join(ROOT, "docs", "api.md")) as f:
    committed = f.read()
  assert committed == _make_api().render(), (
      "docs/api.md is out of date: run python docs/make_api.py and commit the result.")
