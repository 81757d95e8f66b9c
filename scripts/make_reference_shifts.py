"""Regenerates tests/data/healswin_reference_shifts.npz: golden shift tables of the original torch HEAL-SWIN.

Reference parity: for the original's 8 upper base pixels, our "grid" and "ring"
shifts must reproduce the original ``NestGridShift`` / ``RingShift``. This script runs those classes and saves
what they produce; ``tests/test_healpix_reference_parity.py`` compares ours with it and needs neither torch nor
the original code.

The original is not part of this repository and nothing of it is copied here: pass a local checkout of the
public repository JanEGerken/HEAL-SWIN (``--heal_swin_repo``); its module ``heal_swin/models_torch/
hp_shifting.py`` (which imports ``heal_swin/models_torch/hp_windowing.py``) is imported from there. The saved
file was made from those two files at commit 0d5ec8f5971a85f63aeff697e0c8a868ea836ebf (the HEAL-SWIN paper cites
the repository's HEAD b88af4c; whether the two files differ there was not checked), with Python 3.11.7, torch
2.13.0+cpu, numpy 2.4.6 and healpy 1.20.1 (the original needs only these), in a separate virtual environment::

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 numpy healpy einops
  /tmp/torchvenv/bin/python scripts/make_reference_shifts.py --heal_swin_repo /path/to/HEAL-SWIN

Parameters, as the original model builds its shifters (``SwinTransformerBlock``): ``base_pix=8``, token nside
8 and 16, window sizes 4, 16 and (nside 16 only) 64 tokens. ``NestGridShift(nside, base_pix, window_size)``
always shifts by half a window; ``RingShift(nside, base_pix, window_size, shift_size)`` gets the configured
``shift_size``, here sqrt(ws) / 2 (1, 2, 4), our ``h``; the paper's runs use ws 64 with shift 4.

Saved arrays, per ``{grid,ring}_nside{N}_ws{W}`` prefix (token order = NEST order of faces 0..7):

- ``_src`` (int16): ``shift(x)[:, p] == x[:, src[p]]``, read off the class's ``shift`` applied to arange;
- ``_inv`` (int16): the same for ``shift_back``;
- ``_labels`` (int16): ``get_mask(get_attn_mask=False)``, the per-token region labels;
- ``_attn_mask`` (int8): ``get_mask()``, the additive (N / ws, ws, ws) attention mask (0 or -100).

``meta`` holds this provenance as a JSON string.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys

import numpy as np

GEOMETRIES = ((8, 4), (8, 16), (16, 4), (16, 16), (16, 64))  # (token nside, window size)
BASE_PIX = 8
COMMIT = "0d5ec8f5971a85f63aeff697e0c8a868ea836ebf"


def _gather_index(torch, apply, n: int) -> np.ndarray:
  """The gather index of a token permutation ``apply`` on (B, N, C) tensors."""
  return apply(torch.arange(n).reshape(1, n, 1))[0, :, 0].numpy()


def build(repo: str) -> dict[str, np.ndarray]:
  sys.path.insert(0, os.path.abspath(repo))
  hp_shifting = importlib.import_module("heal_swin.models_torch.hp_shifting")
  torch = importlib.import_module("torch")
  healpy = importlib.import_module("healpy")
  out = {}
  for nside, ws in GEOMETRIES:
    shift_size = int(round(ws**0.5)) // 2
    shifters = {"grid": hp_shifting.NestGridShift(nside=nside, base_pix=BASE_PIX, window_size=ws),
                "ring": hp_shifting.RingShift(nside=nside, base_pix=BASE_PIX, window_size=ws,
                                              shift_size=shift_size)}
    n = BASE_PIX * nside * nside
    for name, shifter in shifters.items():
      src = _gather_index(torch, shifter.shift, n)
      inv = _gather_index(torch, shifter.shift_back, n)
      labels = shifter.get_mask(get_attn_mask=False).numpy()
      attn = shifter.get_mask().numpy()
      assert np.array_equal(np.sort(src), np.arange(n)) and np.array_equal(src[inv], np.arange(n))
      assert np.array_equal(labels, np.round(labels)) and attn.shape == (n // ws, ws, ws)
      assert set(np.unique(attn).tolist()) <= {0.0, -100.0}
      key = f"{name}_nside{nside}_ws{ws}"
      out[key + "_src"] = src.astype(np.int16)
      out[key + "_inv"] = inv.astype(np.int16)
      out[key + "_labels"] = labels.astype(np.int16)
      out[key + "_attn_mask"] = attn.astype(np.int8)
  meta = {
      "source": "JanEGerken/HEAL-SWIN heal_swin/models_torch/hp_shifting.py (+ hp_windowing.py)",
      "commit": COMMIT,
      "classes": {"grid": "NestGridShift(nside, base_pix=8, window_size)",
                  "ring": "RingShift(nside, base_pix=8, window_size, shift_size=sqrt(window_size) // 2)"},
      "geometries": GEOMETRIES,
      "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                   "healpy": healpy.__version__},
  }
  out["meta"] = np.array(json.dumps(meta, sort_keys=True))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--heal_swin_repo", required=True, help="local checkout of JanEGerken/HEAL-SWIN")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), os.pardir, "tests", "data",
                                                    "healswin_reference_shifts.npz"))
  args = parser.parse_args()
  arrays = build(args.heal_swin_repo)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {len(arrays)} arrays to {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
  main()
