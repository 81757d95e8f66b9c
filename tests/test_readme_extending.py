"""The README's "Extending" guide runs: every ```python block of that section, in order, each in a fresh
namespace and a temporary working directory, so the guide cannot drift from the public API."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _extending_blocks() -> list[str]:
  with open(README) as f:
    text = f.read()
  start = text.find("\n## Extending\n")
  if start < 0:
    raise AssertionError("README.md has no '## Extending' section.")
  end = text.find("\n## ", start + 1)
  section = text[start:end if end > 0 else None]
  return re.findall(r"```python\n(.*?)```", section, flags=re.S)


BLOCKS = _extending_blocks()


def test_the_guide_has_its_three_examples():
  assert len(BLOCKS) == 3, f"expected 3 python blocks in README 'Extending', found {len(BLOCKS)}"


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_extending_block_runs(i, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  code = compile(BLOCKS[i], f"README.md Extending block {i + 1}", "exec")
  exec(code, {"__name__": f"readme_extending_{i + 1}"})  # pylint: disable=exec-used
