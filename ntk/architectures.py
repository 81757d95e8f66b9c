"""One architecture spec, two views: the neural-tangents stax triple and an identical Flax linen module.

The finite ensembles (``ntk/ensemble.py``) are Flax networks and the infinite-width predictions
(``ntk/kernels.py``) come from the stax ``kernel_fn``; both are built from one frozen :class:`ArchSpec` so
that they describe the same function family, parameterization included:

- ``parameterization="ntk"`` (Jacot et al. 2018, https://arxiv.org/abs/1806.07572): every weight and bias is
  drawn ``N(0, 1)`` and the forward pass scales them, ``z = W_std / sqrt(fan_in) * x @ W + b_std * b``
  (``fan_in = in_features`` for Dense, ``in_channels * prod(kernel_size)`` for Conv). Gradient descent on
  these parameters has the NTK of stax's ``kernel_fn(..., "ntk")``.
- ``parameterization="standard"`` (Sohl-Dickstein et al. 2020, https://arxiv.org/abs/2001.07301):
  ``W ~ N(0, W_std^2 / fan_in)``, ``b ~ N(0, b_std^2)``, ``z = x @ W + b``. Same NNGP, different NTK (it
  depends on the finite widths, which stax reads from ``width``).

Zero-mean initialization (needed by Gerken & Kessel's argument, arXiv 2403.03103): all weights and biases
are zero-mean Gaussians and the readout is linear, so ``E_theta[f_theta(x)] = 0`` for *every* input ``x``:
the infinite ensemble is constant (hence equivariant) at initialization, and full augmentation keeps it so.
Each single member still has ``f_0(x) != 0`` with variance ``K(x, x)`` (the NNGP kernel); those fluctuations
are part of the covariance Sigma_t of neural-tangents' ``gradient_descent_mse_ensemble`` and are what make a
finite ensemble of M members deviate from mu_t by ``O(sqrt(Sigma_t / M))``. We deliberately do *not* offer a
"centered" variant (``f_theta - f_theta0``, or antisymmetric init) that makes every member's initial output
exactly zero: its mean is still mu_t in the linearized regime, but its covariance is not Sigma_t (the
``K(x, x')`` terms disappear), so the finite-M error could no longer be compared against Sigma_t.

Your own Flax module in an ensemble. :mod:`ntk.ensemble` trains any module, but its finite ensembles
converge to the analytic mu_t of :mod:`ntk.kernels` (at ``t = learning_rate × steps``) only when the module
and its stax ``kernel_fn`` describe the same function family in the NTK parameterization:

1. every trainable weight and bias is drawn ``N(0, 1)`` (zero mean, so the infinite ensemble starts at 0)
   and scaled in the forward pass by ``W_std / sqrt(fan_in)`` (weights) and ``b_std`` (biases), with the
   ``W_std``/``b_std`` of the corresponding stax layer; :class:`NTKDense` is such a layer;
2. the readout is linear (no activation after it), with the stax readout's ``W_std`` and a bias only if
   the stax readout has ``b_std`` (stax's ``Dense(out, W_std=...)`` with ``b_std=None`` has none);
3. the loss is :func:`ntk.ensemble.mse_loss` (``||f - y||² / (2 y.size)``, neural-tangents' normalization)
   and training is full-batch gradient descent.

Check a module against its kernel with :func:`empirical_ntk_relerr` (``model=`` the module,
``kernel_fn=`` the stax kernel): the relative error of the empirical NTK at initialization falls as
``O(1/sqrt(width))``; an error that does not fall with width means the two views differ.

Shapes: MLP inputs are ``(B, ...)`` and are flattened to ``(B, D)``; CNN inputs are NHWC ``(B, H, W, C)``.
Outputs are ``(B, out_dim)``.

Example::

  spec = ArchSpec(kind="mlp", width=512, depth=2, out_dim=1)
  init_fn, apply_fn, kernel_fn = spec.stax()
  model = spec.flax()
  params = model.init(key, x)["params"]
  y = model.apply({"params": params}, x)          # (B, 1)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ntk import _nt_compat  # noqa: F401  (compat layer before neural_tangents)
import neural_tangents as nt
from neural_tangents import stax

_KINDS = ("mlp", "cnn")
_ACTIVATIONS = ("relu", "erf", "gelu")
_READOUTS = ("flatten", "gap")
_PARAMETERIZATIONS = ("ntk", "standard")
_PADDINGS = ("SAME", "VALID", "CIRCULAR")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
  """A fully-connected or convolutional network in NTK (default) or standard parameterization.

  Attributes:
    kind: ``"mlp"`` (Flatten, ``depth`` x [Dense(width), act], Dense(out_dim)) or ``"cnn"`` (``depth`` x
      [Conv(width, kernel_size, padding), act], readout, Dense(out_dim)).
    width: hidden features (MLP) / channels (CNN), >= 1.
    depth: number of hidden Dense layers (MLP) or Conv layers (CNN), >= 1.
    out_dim: output features of the linear readout (number of classes / regression targets).
    activation: ``"relu"``, ``"erf"`` (``erf(x)``, stax ``Erf()``) or ``"gelu"`` (exact, ``approximate=False``).
    readout: CNN only: ``"flatten"`` (cheap analytic kernel) or ``"gap"`` (global average pooling; its analytic
      kernel needs the full spatial covariance and is orders of magnitude more expensive).
    pool: CNN only: average pooling with this window and stride after every conv layer's activation (``1``: none;
      ``stax.AvgPool`` with VALID padding). With sides divisible by ``pool`` at every layer it keeps rot90 of the
      image a symmetry of the network's weight distribution.
    kernel_size: CNN filter size (square).
    padding: CNN padding, ``"SAME"`` (zeros), ``"CIRCULAR"`` (periodic) or ``"VALID"``. SAME/CIRCULAR with an
      odd ``kernel_size`` keep rot90 of the image a symmetry of the weight distribution.
    W_std: weight standard deviation sigma_w (all layers, readout included).
    b_std: bias standard deviation sigma_b; ``None`` means no biases.
    parameterization: ``"ntk"`` or ``"standard"`` (see the module docstring).
  """

  kind: Literal["mlp", "cnn"] = "mlp"
  width: int = 512
  depth: int = 2
  out_dim: int = 1
  activation: Literal["relu", "erf", "gelu"] = "relu"
  readout: Literal["flatten", "gap"] = "flatten"
  pool: int = 1
  kernel_size: int = 3
  padding: Literal["SAME", "VALID", "CIRCULAR"] = "SAME"
  W_std: float = math.sqrt(2.0)
  b_std: float | None = None
  parameterization: Literal["ntk", "standard"] = "ntk"

  def __post_init__(self):
    def choice(name, options):
      value = getattr(self, name)
      if value not in options:
        raise ValueError(f"ArchSpec.{name}={value!r} is not supported; use one of {options}.")

    choice("kind", _KINDS)
    choice("activation", _ACTIVATIONS)
    choice("readout", _READOUTS)
    choice("parameterization", _PARAMETERIZATIONS)
    choice("padding", _PADDINGS)
    for name in ("width", "depth", "out_dim", "kernel_size", "pool"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ArchSpec.{name}={value!r} must be a positive int.")
    if not (isinstance(self.W_std, (int, float)) and self.W_std > 0):
      raise ValueError(f"ArchSpec.W_std={self.W_std!r} must be a positive number.")
    if self.b_std is not None and not (isinstance(self.b_std, (int, float)) and self.b_std >= 0):
      raise ValueError(f"ArchSpec.b_std={self.b_std!r} must be a non-negative number or None (no bias).")

  def replace(self, **changes) -> "ArchSpec":
    """A copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  # ---------------------------------------------------------------------------------------------------------
  def _activation_stax(self):
    return {"relu": stax.Relu, "erf": stax.Erf, "gelu": lambda: stax.Gelu(approximate=False)}[self.activation]()

  def stax(self) -> tuple[Callable, Callable, Callable]:
    """The neural-tangents ``(init_fn, apply_fn, kernel_fn)`` triple of this architecture.

    ``kernel_fn(x1, x2, ("nngp", "ntk"))`` is the infinite-width limit of the network :meth:`flax` builds.
    """
    dense = lambda n: stax.Dense(n, W_std=self.W_std, b_std=self.b_std, parameterization=self.parameterization)
    layers = []
    if self.kind == "mlp":
      layers.append(stax.Flatten())
      for _ in range(self.depth):
        layers += [dense(self.width), self._activation_stax()]
    else:
      for _ in range(self.depth):
        layers += [stax.Conv(self.width, (self.kernel_size, self.kernel_size), padding=self.padding,
                             W_std=self.W_std, b_std=self.b_std, parameterization=self.parameterization),
                   self._activation_stax()]
        if self.pool > 1:
          layers.append(stax.AvgPool((self.pool, self.pool), strides=(self.pool, self.pool), padding="VALID"))
      layers.append(stax.Flatten() if self.readout == "flatten" else stax.GlobalAvgPool())
    layers.append(dense(self.out_dim))
    return stax.serial(*layers)

  def flax(self) -> "StaxNet":
    """A Flax linen module computing exactly the function of :meth:`stax`'s ``apply_fn`` (same parameters'
    distribution and scaling); apply it as ``model.apply({"params": params}, x)``."""
    return StaxNet(spec=self)


# -------------------------------------------------------------------------------------------------------------
# Flax view. Parameters are named "kernel"/"bias" like linen's Dense/Conv, but initialized and scaled the
# neural-tangents way (linen's own layers bake the scale into the initializer, i.e. standard parameterization).


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
  return {"relu": jax.nn.relu, "erf": jax.scipy.special.erf,
          "gelu": lambda x: jax.nn.gelu(x, approximate=False)}[name]


SPARSE_DENSITY = 1.0 / 16.0  # nonzero fraction of the "sparse" weight law


def _weight_init(parameterization: str, W_std: float, fan_in: int, law: str = "normal"):
  """Zero-mean, unit-variance i.i.d. draws (times the standard parameterization's scale): ``"normal"``
  N(0, 1) (excess kurtosis 0); ``"uniform"`` U(-sqrt(3), sqrt(3)) (the law of PyTorch's default
  ``kaiming_uniform`` init; excess kurtosis -1.2); ``"sparse"`` ``±1/sqrt(p)`` with probability ``p`` =
  ``SPARSE_DENSITY``, else 0 (sparse initialization; excess kurtosis ``1/p - 3`` = 13)."""
  scale = 1.0 if parameterization == "ntk" else W_std / math.sqrt(fan_in)
  if law == "uniform":
    return lambda key, shape, dtype=jnp.float32: scale * jax.random.uniform(key, shape, dtype, -math.sqrt(3.0),
                                                                             math.sqrt(3.0))
  if law == "sparse":
    def sparse(key, shape, dtype=jnp.float32):
      k_on, k_sign = jax.random.split(key)
      on = jax.random.bernoulli(k_on, SPARSE_DENSITY, shape)
      return (scale / math.sqrt(SPARSE_DENSITY)) * jnp.where(on, jax.random.rademacher(k_sign, shape, dtype), 0)
    return sparse
  return lambda key, shape, dtype=jnp.float32: scale * jax.random.normal(key, shape, dtype)


def _bias_init(parameterization: str, b_std: float | None):
  scale = 1.0 if parameterization == "ntk" else b_std
  return lambda key, shape, dtype=jnp.float32: scale * jax.random.normal(key, shape, dtype)


def _forward_scales(parameterization: str, W_std: float, b_std: float | None, fan_in: int) -> tuple[float, float]:
  """(weight scale, bias scale) applied in the forward pass."""
  if parameterization == "ntk":
    return W_std / math.sqrt(fan_in), (b_std or 0.0)
  return 1.0, 1.0


def _expand(bias: jax.Array, ndim: int) -> jax.Array:
  """(F,) -> (1, ..., 1, F): explicit broadcasting (the tests run with rank promotion raising)."""
  return bias.reshape((1,) * (ndim - 1) + bias.shape)


class NTKDense(nn.Module):
  """``(..., D) -> (..., features)``: stax's ``Dense(features, W_std, b_std, parameterization)`` in Flax.

  NTK parameterization (default): ``kernel (D, features)`` and ``bias (features,)`` are drawn ``N(0, 1)`` and
  the forward pass is ``W_std / sqrt(D) * x @ kernel + b_std * bias``; ``b_std=None`` means no bias. Use it
  for the layers (readout included) of your own module when its ensemble is compared with an analytic kernel
  (requirements in the module docstring). ``weight_law="uniform"`` draws the kernel from U(-sqrt(3), sqrt(3))
  instead (same mean and variance, non-Gaussian: see :class:`ReadInSpec`); ``"sparse"``: see ``_weight_init``.
  """

  features: int
  W_std: float = math.sqrt(2.0)
  b_std: float | None = None
  parameterization: Literal["ntk", "standard"] = "ntk"
  weight_law: Literal["normal", "uniform", "sparse"] = "normal"

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    par = self.parameterization
    w = self.param("kernel", _weight_init(par, self.W_std, fan_in, self.weight_law), (fan_in, self.features),
                   x.dtype)
    w_scale, b_scale = _forward_scales(par, self.W_std, self.b_std, fan_in)
    y = w_scale * (x @ w)
    if self.b_std is not None:
      y = y + b_scale * _expand(self.param("bias", _bias_init(par, self.b_std), (self.features,), x.dtype), y.ndim)
    return y


def _dense(spec: ArchSpec, features: int, name: str) -> NTKDense:
  return NTKDense(features, spec.W_std, spec.b_std, spec.parameterization, name=name)


class _Conv(nn.Module):
  """``(B, H, W, C) -> (B, H', W', features)``, HWIO filters, in the spec's parameterization."""

  spec: ArchSpec
  features: int

  @nn.compact
  def __call__(self, x):
    k = self.spec.kernel_size
    fan_in = x.shape[-1] * k * k
    spec = self.spec
    w = self.param("kernel", _weight_init(spec.parameterization, spec.W_std, fan_in), (k, k, x.shape[-1], self.features),
                   x.dtype)
    padding = self.spec.padding
    if padding == "CIRCULAR":
      # Periodic padding by the SAME amounts, then a VALID convolution (what stax does for CIRCULAR).
      lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
      x = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)), mode="wrap")
      padding = "VALID"
    w_scale, b_scale = _forward_scales(spec.parameterization, spec.W_std, spec.b_std, fan_in)
    y = w_scale * lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if spec.b_std is not None:
      bias = self.param("bias", _bias_init(spec.parameterization, spec.b_std), (self.features,), x.dtype)
      y = y + b_scale * _expand(bias, y.ndim)
    return y


class StaxNet(nn.Module):
  """The Flax view of an :class:`ArchSpec`: ``(B, ...) -> (B, out_dim)`` (CNN: ``(B, H, W, C)`` NHWC)."""

  spec: ArchSpec

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    spec, act = self.spec, _activation(self.spec.activation)
    if spec.kind == "mlp":
      if x.ndim < 2:
        raise ValueError(f"MLP input must be (B, ...) with a batch axis; got shape {x.shape}.")
      x = x.reshape(x.shape[0], -1)
      for i in range(spec.depth):
        x = act(_dense(spec, spec.width, f"Dense_{i}")(x))
    else:
      if x.ndim != 4:
        raise ValueError(f"CNN input must be NHWC (B, H, W, C); got shape {x.shape}. "
                         "Add a channel axis with x[..., None].")
      for i in range(spec.depth):
        x = act(_Conv(spec, spec.width, name=f"Conv_{i}")(x))
        if spec.pool > 1:
          x = nn.avg_pool(x, (spec.pool, spec.pool), strides=(spec.pool, spec.pool), padding="VALID")
      x = x.reshape(x.shape[0], -1) if spec.readout == "flatten" else jnp.mean(x, axis=(1, 2))
    return _dense(spec, spec.out_dim, "Readout")(x)


_WEIGHT_LAWS = ("normal", "uniform", "sparse")


@dataclasses.dataclass(frozen=True)
class ReadInSpec:
  """An MLP whose first ("read-in") layer's weights have a chosen i.i.d. law, in NTK parameterization.

  ``x (B, ...) -> flatten (B, D) -> z = x @ W0 / sqrt(D)`` (``width`` features; followed by the activation
  only if ``linear_readin`` is False) ``-> depth x [Dense(width, W_std), act] -> Dense(out_dim, W_std)``, no
  biases. ``W0``'s entries are i.i.d. zero-mean, unit-variance draws of ``readin_law`` (``"normal"``,
  ``"uniform"`` or ``"sparse"``, see :class:`NTKDense`); every other weight is N(0, 1).

  Why (Gerken & Kessel, arXiv 2403.03103, vs Nordenfors & Flinth, arXiv 2410.01452): for an orthogonal input
  action ``x -> R x``, ``W0 -> W0 R`` (on the rows of ``W0``) maps members onto members of the same GD-on-the-
  full-orbit dynamics; it preserves the *normal* law of ``W0`` (so the M -> inf ensemble is R-invariant at every
  width) but not the *uniform* or *sparse* one unless R is a signed permutation. With a linear read-in the layers above see
  ``x`` only through ``x^T (W0 W0^T / width) x' / D``, which tends to ``x.x' / D`` for either law (law of large
  numbers over the width): the infinite-width NTK is the one of :meth:`stax` and is O(D)-invariant, and a
  non-normal law's finite-width asymmetry enters through its fourth cumulant, O(kurtosis / width). With a non-linear
  read-in the first layer's kernel ``E_w[act(w.x) act(w.x')]`` depends on the law of ``w`` at every width, so
  no width makes the uniform-init ensemble invariant (and :meth:`stax` is not its limit).

  Attributes:
    width: read-in and hidden features.
    out_dim: outputs of the linear readout.
    depth: hidden [Dense(width), act] layers after the read-in, >= 1.
    readin_law: ``"normal"``, ``"uniform"`` or ``"sparse"``.
    linear_readin: True: no activation after the read-in (W_std 1); False: ``act`` after it (W_std ``W_std``).
    activation: ``"relu"``, ``"erf"`` or ``"gelu"``.
    W_std: weight standard deviation of the hidden and readout layers.
  """

  width: int = 512
  out_dim: int = 1
  depth: int = 1
  readin_law: Literal["normal", "uniform", "sparse"] = "normal"
  linear_readin: bool = True
  activation: Literal["relu", "erf", "gelu"] = "relu"
  W_std: float = math.sqrt(2.0)

  def __post_init__(self):
    if self.readin_law not in _WEIGHT_LAWS:
      raise ValueError(f"ReadInSpec.readin_law={self.readin_law!r} is not supported; use one of {_WEIGHT_LAWS}.")
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f"ReadInSpec.activation={self.activation!r} is not supported; use one of {_ACTIVATIONS}.")
    for name in ("width", "out_dim", "depth"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ReadInSpec.{name}={value!r} must be a positive int.")

  @property
  def readin_W_std(self) -> float:
    return 1.0 if self.linear_readin else self.W_std

  def stax(self) -> tuple[Callable, Callable, Callable]:
    """The neural-tangents triple of the infinite-width limit (read-in N(0, 1), the limit for either law when
    the read-in is linear). Raises for a uniform non-linear read-in, whose limit is not this kernel."""
    if self.readin_law != "normal" and not self.linear_readin:
      raise ValueError("ReadInSpec(readin_law='uniform', linear_readin=False) has no stax kernel: the first "
                       "layer's infinite-width kernel depends on the uniform law. Use linear_readin=True or "
                       "readin_law='normal'.")
    act = ArchSpec(activation=self.activation)._activation_stax
    layers = [stax.Flatten(), stax.Dense(self.width, W_std=self.readin_W_std)]
    if not self.linear_readin:
      layers.append(act())
    for _ in range(self.depth):
      layers += [stax.Dense(self.width, W_std=self.W_std), act()]
    return stax.serial(*layers, stax.Dense(self.out_dim, W_std=self.W_std))

  def flax(self) -> "ReadInNet":
    return ReadInNet(spec=self)


class ReadInNet(nn.Module):
  """The Flax network of a :class:`ReadInSpec`: ``(B, ...) -> (B, out_dim)``; first layer ``ReadIn``."""

  spec: ReadInSpec

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    spec, act = self.spec, _activation(self.spec.activation)
    if x.ndim < 2:
      raise ValueError(f"ReadInNet input must be (B, ...) with a batch axis; got shape {x.shape}.")
    x = NTKDense(spec.width, spec.readin_W_std, weight_law=spec.readin_law, name="ReadIn")(x.reshape(x.shape[0], -1))
    if not spec.linear_readin:
      x = act(x)
    for i in range(spec.depth):
      x = act(NTKDense(spec.width, spec.W_std, name=f"Dense_{i}")(x))
    return NTKDense(spec.out_dim, spec.W_std, name="Readout")(x)


def empirical_ntk_relerr(model: ArchSpec | nn.Module | Callable, x: jax.Array, key: jax.Array, n_seeds: int = 1,
                         *, kernel_fn: Callable | None = None,
                         init_fn: Callable[[jax.Array], Any] | None = None) -> float:
  """Relative Frobenius error of a finite network's NTK at init vs an analytic one.

  The empirical NTK of the network (``nt.empirical_ntk_fn``, output channel 0: channels are i.i.d.) is
  averaged over ``n_seeds`` initializations ``fold_in(key, s)`` and compared with ``kernel_fn(x, None,
  "ntk")``: ``||mean_s Theta_s - Theta|| / ||Theta||``. For a network that matches its kernel it falls as
  O(1/sqrt(width)) (and as O(1/sqrt(n_seeds)) for its Monte-Carlo part).

  Args:
    model: an :class:`ArchSpec` (network ``spec.flax()``, kernel ``spec.stax()``), any Flax module
      (``params = model.init(key, x)["params"]``), or an ``apply_fn(params, x) -> (n, out)`` with ``init_fn``.
    x: (n, ...) inputs.
    key: PRNG key.
    n_seeds: number of initializations averaged.
    kernel_fn: the analytic stax ``kernel_fn``; required unless ``model`` is an :class:`ArchSpec`.
    init_fn: ``key -> params``; required when ``model`` is a plain apply function.
  """
  if isinstance(model, ArchSpec):
    kernel_fn = kernel_fn or model.stax()[2]
    model = model.flax()
  if kernel_fn is None:
    raise ValueError("empirical_ntk_relerr needs kernel_fn= (the stax kernel_fn the network should match) "
                     "unless model is an ArchSpec.")
  if isinstance(model, nn.Module):
    module = model
    f = lambda params, x: module.apply({"params": params}, x)
    init_fn = init_fn or (lambda k: module.init(k, x)["params"])
  elif callable(model):
    f = model
    if init_fn is None:
      raise ValueError("a plain apply function needs init_fn=(key -> params) to draw the initializations.")
  else:
    raise TypeError(f"model must be an ArchSpec, a flax.linen.Module or an apply_fn(params, x); got "
                    f"{type(model).__name__}.")
  ntk_fn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=2))
  total = 0.0
  for s in range(n_seeds):
    params = init_fn(jax.random.fold_in(key, s))
    emp_s = ntk_fn(x, None, params)
    if emp_s.ndim != 4:
      raise ValueError(f"the network's outputs must be (n, out) for the per-channel NTK, got an NTK of shape "
                       f"{emp_s.shape}.")
    total = total + emp_s[..., 0, 0]  # (n, n): channel 0 (channels are i.i.d.)
  emp = jnp.asarray(total) / n_seeds
  ana = kernel_fn(x, None, "ntk")
  return float(jnp.linalg.norm(emp - ana) / jnp.linalg.norm(ana))


def stax_params_to_flax(spec: ArchSpec, stax_params) -> dict:
  """Converts parameters from ``spec.stax()[0]`` into the ``params`` dict of ``spec.flax()``.

  Lets tests (and users) evaluate both views on *identical* weights: stax stores ``(W, b)`` per Dense/Conv
  layer (``()`` for activations, Flatten and pooling); biases have broadcast shapes ``(1, ..., out)``.
  """
  weights = [p for p in stax_params if p != ()]
  names = ([f"Dense_{i}" if spec.kind == "mlp" else f"Conv_{i}" for i in range(spec.depth)] + ["Readout"])
  if len(weights) != len(names):
    raise ValueError(f"expected {len(names)} weight layers for {spec}, got {len(weights)}.")
  out = {}
  for name, (w, b) in zip(names, weights):
    out[name] = {"kernel": w}
    if b is not None:
      out[name]["bias"] = jnp.reshape(b, (-1,))
  return out
