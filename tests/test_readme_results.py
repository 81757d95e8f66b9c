"""README result tables agree with the run records (results/<experiment>/<name>.json via results/tables.json)."""

import json

import pytest

from infra import results


def test_readme_blocks_equal_the_tables_generated_from_the_records():
  with open(results.README) as f:
    text = f.read()
  tables = results.load_tables()
  assert tables, "results/tables.json defines no table"
  generated = results.readme_blocks(results.generate_readme(text, tables))
  current = results.readme_blocks(text)
  stale = sorted(name for name in tables if current[name] != generated[name])
  assert not stale, (f"README blocks {stale} differ from their records. Fix: `python -m infra.results --readme` "
                     f"(after re-running the experiment with --record if the numbers should change).")


def test_readme_values_equal_the_records():
  with open(results.README) as f:
    text = f.read()
  stale = [(t, old, new) for (t, old), (_, new) in zip(results.readme_values(text),
                                                       results.readme_values(results.render_values(text)))
           if old != new]
  assert not stale, f"README values differ from their records: {stale}. Fix: `python -m infra.results --readme`."


def test_inline_values_are_rewritten_from_the_named_record(tmp_path):
  _write_record(tmp_path, "exp", "full", {"acc": 0.91234})
  text = ("Members reach <!-- value:{acc@exp/full:.3f} -->0.5<!-- /value --> (and "
          "<!-- value:{acc@exp/full:.0%} -->x<!-- /value -->); `<!-- value:... -->` quoted is left alone.\n")
  new = results.render_values(text, root=str(tmp_path))
  assert new == ("Members reach <!-- value:{acc@exp/full:.3f} -->0.912<!-- /value --> (and "
                 "<!-- value:{acc@exp/full:.0%} -->91%<!-- /value -->); `<!-- value:... -->` quoted is left alone.\n")
  assert results.readme_values(new) == [("{acc@exp/full:.3f}", "0.912"), ("{acc@exp/full:.0%}", "91%")]
  with pytest.raises(ValueError, match="names no record"):
    results.render_values("<!-- value:{acc:.2f} -->1<!-- /value -->", root=str(tmp_path))
  with pytest.raises(KeyError, match="has no metric 'ac'"):
    results.render_values("<!-- value:{ac@exp/full:.2f} -->1<!-- /value -->", root=str(tmp_path))


def _write_record(root, experiment, name, metrics):
  results.record(experiment, name, metrics, {"n": 1}, 2.5, root=str(root))


def test_generate_rewrites_only_the_blocks_and_reads_other_records(tmp_path):
  _write_record(tmp_path, "exp", "quick", {"acc": 0.12345, "n": 3})
  _write_record(tmp_path, "exp", "full", {"acc": 0.9})
  tables = {"t": {"record": "exp/quick", "header": ["what", "quick", "full"],
                  "rows": [["acc", "{acc:.3f} ({n:.0f} runs, {wall_s:.1f} s)", "{acc@exp/full:.2f}"],
                           {"record": "exp/full", "cells": ["full acc", "", "{acc:.1%}"]}]}}
  text = "intro\n<!-- results:t -->\nold\n<!-- /results:t -->\nafter | 1 |\n"
  new = results.generate_readme(text, tables, root=str(tmp_path))
  assert new == ("intro\n<!-- results:t -->\n| what | quick | full |\n|---|---|---|\n"
                 "| acc | 0.123 (3 runs, 2.5 s) | 0.90 |\n| full acc |  | 90.0% |\n<!-- /results:t -->\nafter | 1 |\n")
  assert results.generate_readme(new, tables, root=str(tmp_path)) == new


def test_aggregate_over_records(tmp_path):
  for name, acc in (("s0", 0.5), ("s1", 0.7), ("s2", 0.9)):
    _write_record(tmp_path, "exp", name, {"acc": acc})
  tables = {"t": {"header": ["mean", "std", "range"],
                  "rows": [["{acc~mean@exp/s0,s1,s2:.3f}", "{acc~std@exp/s0,s1,s2:.3f}",
                            "{acc~min@exp/s0,s1,s2:.1f}-{acc~max@exp/s0,s2:.1f}"]]}}
  text = "<!-- results:t -->\n<!-- /results:t -->\n"
  new = results.generate_readme(text, tables, root=str(tmp_path))
  assert "| 0.700 | 0.200 | 0.5-0.9 |" in new
  for bad in ("{acc~mean@exp/s0:.3f}", "{acc@exp/s0,s1:.3f}", "{acc~median@exp/s0,s1:.3f}"):
    with pytest.raises(ValueError, match="aggregate needs"):
      results.generate_readme(text, {"t": {"header": ["a"], "rows": [[bad]]}}, root=str(tmp_path))


def test_missing_record_key_or_block_fails_with_the_name(tmp_path):
  _write_record(tmp_path, "exp", "quick", {"accuracy": 0.5})
  text = "<!-- results:t -->\n<!-- /results:t -->\n"
  spec = lambda cell, ref="exp/quick": {"t": {"record": ref, "header": ["a"], "rows": [[cell]]}}
  with pytest.raises(KeyError, match=r"'t'.*'exp/quick' has no metric 'acuracy' \(close: accuracy\)"):
    results.generate_readme(text, spec("{acuracy:.2f}"), root=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"'t' reads 'exp/full'.*--record"):
    results.generate_readme(text, spec("{accuracy:.2f}", "exp/full"), root=str(tmp_path))
  with pytest.raises(ValueError, match=r"blocks \['t'\] have no table.*tables \['u'\] have no"):
    results.generate_readme(text, {"u": spec("{accuracy}")["t"]}, root=str(tmp_path))
  with pytest.raises(ValueError, match="opened but not closed"):
    results.readme_blocks("<!-- results:t -->\n| a |\n")
  assert results.readme_blocks("a marker quoted in text, `<!-- results:NAME -->`, is not a block\n") == {}


def test_existing_records_load():
  """Every record a table reads is a valid record (metrics of numbers, the experiment named in the file)."""
  refs = set()
  for spec in results.load_tables().values():
    refs.add(spec.get("record"))
    refs.update(r.get("record") for r in spec["rows"] if isinstance(r, dict))
  for ref in sorted(r for r in refs if r):
    rec = results.load_ref(ref)
    assert rec["experiment"] == ref.split("/")[0] and rec["variant"] == ref.split("/")[1], ref
    assert all(isinstance(v, (int, float)) for v in rec["metrics"].values()), ref
    json.dumps(rec)
