"""The API reference stays complete and current: every public function of a2i_jax documents
its arguments and return value, and docs/api.md is what docs/make_api.py generates now."""

import importlib.util
import os
import re

import pytest

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
  # A function wrapped by jax.custom_jvp is listed too (README walk-through: it was not).
  assert "- **`bounded_exp(x: Array) -> Array`**" in committed


def test_make_api_help_writes_nothing(monkeypatch, capsys):
  # Was: any argument, --help too, rewrote docs/api.md (a helper's slip undid a regeneration).
  module = _make_api()
  monkeypatch.setattr(module, "render", lambda: pytest.fail("api.md was rendered"))
  for args, status in ((["--help"], 0), (["--chek"], 2)):
    monkeypatch.setattr("sys.argv", ["make_api.py", *args])
    assert module.main() == status
    assert "usage: python docs/make_api.py [--check]" in "".join(capsys.readouterr())


def _headings(path: str) -> set[str]:
  """The section numbers of a Markdown file's headings ("## 2.1 Title" -> "2.1")."""
  numbers = set()
  with open(path, encoding="utf-8") as f:
    for line in f:
      m = re.match(r"#+\s+(\d+(?:\.\d+)*)\.?\s", line)
      if m:
        numbers.add(m.group(1))
  return numbers


def _repository_text_files():
  for folder, dirs, names in os.walk(ROOT):
    dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "runs")]
    for name in names:
      if name.endswith((".py", ".md", ".sh", ".ipynb")) and name != "api.md":
        yield os.path.join(folder, name)


def test_every_design_and_reference_citation_resolves_to_a_heading():
  # The repository stands on its own: the code cites docs/reference.md and docs/design.md by
  # section, never the specification or design notes outside the repository.
  headings = {doc: _headings(os.path.join(ROOT, "docs", doc))
              for doc in ("reference.md", "design.md")}
  unresolved, outside = [], []
  for path in _repository_text_files():
    with open(path, encoding="utf-8") as f:
      text = f.read()
    rel = os.path.relpath(path, ROOT)
    for doc, number in re.findall(r"docs/(reference\.md|design\.md) §(\d+(?:\.\d+)*)", text):
      if number not in headings[doc]:
        unresolved.append(f"{rel}: docs/{doc} §{number}")
    if rel.startswith(("a2i_jax", "configs", "tests", "benchmarks", "scripts", "infer.py",
                       "train.py")):
      outside += [f"{rel}: {m}" for m in re.findall(r"\bspec \d+(?:\.\d+)*|DESIGN\.md", text)]
  assert not unresolved, unresolved
  assert not outside, outside
