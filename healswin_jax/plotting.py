"""Figures shared by the HEAL-SWIN experiments: maps on the sphere and predictions over fisheye images.

matplotlib is imported inside the functions (only figure-making code needs it); every function returns a
``matplotlib.figure.Figure`` (save it with ``infra.cli.save_figure``).
"""

from __future__ import annotations

import healpy as hp
import numpy as np

from healswin_jax.data import synthetic


def full_sky(values: np.ndarray, nside: int, faces) -> np.ndarray:
  """(N,) values on the used faces -> a full NEST map (12 nside^2,) with ``hp.UNSEEN`` elsewhere."""
  out = np.full(12 * nside * nside, hp.UNSEEN)
  npf = nside * nside
  for i, f in enumerate(faces):
    out[f * npf:(f + 1) * npf] = values[i * npf:(i + 1) * npf]
  return out


def label_cmap(num_classes: int):
  from matplotlib.colors import ListedColormap  # pylint: disable=g-import-not-at-top
  colors = synthetic.CLASS_COLORS if num_classes <= len(synthetic.CLASS_COLORS) else (
      (np.array(__import__("matplotlib").colormaps["tab10"].colors) * 255).astype(np.uint8))
  return ListedColormap(np.asarray(colors[:num_classes]) / 255.0)


def sphere_figure(panels, nside: int, faces, title: str):
  """Rows of (name, values (N,), kwargs) drawn as an orthographic view from the optical axis (north pole) and
  a Mollweide view of the whole sphere."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig = plt.figure(figsize=(4.2 * len(panels), 7.0))
  for j, (name, vals, kw) in enumerate(panels):
    m = full_sky(np.asarray(vals, np.float64), nside, faces)
    hp.orthview(m, nest=True, rot=(0, 90, 0), half_sky=True, fig=fig.number, sub=(2, len(panels), j + 1),
                title=f"{name} (orthographic)", cbar=False, **kw)
    hp.mollview(m, nest=True, fig=fig.number, sub=(2, len(panels), len(panels) + j + 1),
                title=f"{name} (Mollweide)", cbar=False, **kw)
  fig.suptitle(title, y=1.0)
  return fig


def overlay_figure(images, truth, preds, masks, num_classes: int, title: str):
  """Per row: image, ground truth, back-projected prediction over the image; the coverage mask boundary is
  drawn in white (pixels outside it are not scored)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cmap = label_cmap(num_classes)
  n = len(images)
  fig, axes = plt.subplots(n, 3, figsize=(11, 3.0 * n), squeeze=False)
  for i in range(n):
    axes[i, 0].imshow(images[i])
    axes[i, 1].imshow(truth[i], cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5, interpolation="nearest")
    axes[i, 2].imshow(images[i])
    shown = np.ma.masked_where(~masks[i], preds[i])
    axes[i, 2].imshow(shown, cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5, alpha=0.75, interpolation="nearest")
    for ax in axes[i]:
      ax.contour(masks[i].astype(float), levels=[0.5], colors="w", linewidths=0.8)
      ax.set_xticks([])
      ax.set_yticks([])
  for ax, t in zip(axes[0], ("image", "ground truth", "prediction (back-projected)")):
    ax.set_title(t)
  fig.suptitle(title, y=1.0)
  fig.tight_layout()
  return fig
