"""Procedural cartoon faces with known attributes, independent backgrounds and exact masks.

The whole project can run offline on this dataset in minutes: every image is drawn from an
attribute vector y plus nuisance factors that are *not* in y (pose, scale, lighting, clothing
and accessory colours, and an independent background), so a conditional model's latent z has
real work to do, and the foreground / background split of disCVAE has ground truth.

Attributes (columns of y, in this order):

  ============  ==========  ===============================================================
  name          kind        meaning
  ============  ==========  ===============================================================
  smile         continuous  mouth curvature in [-1, 1]: -1 = frown (arc bending down),
                            0 = straight mouth, +1 = broad open smile (filled crescent).
  face_width    continuous  [-1, 1]: -1 = narrow oval face, +1 = wide round face.
  skin_tone     continuous  [-1, 1]: -1 = dark brown, 0 = tan, +1 = light pink.
  hair_color    continuous  [-1, 1]: -1 = black, 0 = brown, +1 = blond. Also colours the
                            beard.
  hair_length   continuous  [-1, 1]: -1 = short (a cap ending at the temples), +1 = long
                            (down past the chin to the shoulders).
  eyes_open     binary      1 = open eyes (white with a dark pupil), 0 = closed (dark arcs).
  eyeglasses    binary      1 = dark round glasses with a bridge and temples.
  hat           binary      1 = a brimmed hat (colour is a nuisance factor) on the head.
  beard         binary      1 = a full beard around the jaw and chin, in the hair colour.
  bangs         binary      1 = a fringe covering the forehead down to just above the eyes.
  ============  ==========  ===============================================================

Binary attributes are exactly 0.0 or 1.0 in sampled data; `render` treats values >= 0.5 as 1.
Continuous attributes lie in [-1, 1]; `render` clips them to that range. `sample_attributes`
draws every attribute independently: continuous ones uniform on [-1, 1], binary ones with
P(1) = 0.7 (eyes_open), 0.35 (eyeglasses), 0.3 (hat), 0.3 (beard), 0.4 (bangs).

Nuisance factors (drawn from a separate generator, never in y): face centre shift of up to
+-3.5 % of the image, scale 1.0..1.2, head tilt up to +-9 degrees, gaze, brightness gain,
directional shading, small hair / skin colour jitter, hat, shirt and glasses-frame colours.
Backgrounds: a linear gradient (random angle and colours, sometimes flat), optionally
overlaid with soft stripes and up to three soft blobs.

All geometry is defined in a face-local coordinate frame where the image spans [-1, 1], and
every shape is a signed distance field, so features scale with the image size (any multiple
of 8 from 16 to 512; designed for 32 and 64) and the anti-aliased coverage gives a soft mask
that is exactly consistent with the image: image = mask * foreground + (1 - mask) * background
(with the quantised mask), so pixels with mask 0 hold the background unchanged.

This module is longer than the house limit (~450 lines) because the renderer is one unit: the
nuisance draws, the signed-distance shapes and the compositing share one face-local frame and
one fixed order of random draws (which the cached datasets and the tests depend on), and the
loader around them is short.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time
from typing import Optional

import numpy as np

from a2i_jax import distributed, files
from a2i_jax.data.base import ConfigError, DataError, Dataset, Split
from a2i_jax.inputs import is_integer

# Bump when the rendering changes, so old cache files are not reused.
VERSION = 1

ATTRIBUTE_NAMES: tuple[str, ...] = ("smile", "face_width", "skin_tone", "hair_color",
                                    "hair_length", "eyes_open", "eyeglasses", "hat", "beard",
                                    "bangs")
ATTRIBUTE_KINDS: tuple[str, ...] = ("continuous",) * 5 + ("binary",) * 5

# Probability of 1 for each binary attribute; unbalanced like real face attributes.
_BINARY_PROB = {"eyes_open": 0.7, "eyeglasses": 0.35, "hat": 0.3, "beard": 0.3, "bangs": 0.4}

_IDX = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
_CHUNK = 128  # images per vectorised call: small enough for the arrays to stay in cache
_MAX_SIZE = 512

# Piecewise-linear colour ramps (at -1, 0, +1) for the continuous colour attributes.
_SKIN_RAMP = np.array([[0.36, 0.22, 0.14], [0.78, 0.55, 0.38], [0.96, 0.80, 0.68]],
                      np.float32)
_HAIR_RAMP = np.array([[0.07, 0.06, 0.06], [0.42, 0.24, 0.10], [0.98, 0.84, 0.42]],
                      np.float32)


def _check_rng(rng, what: str) -> None:
  if not isinstance(rng, np.random.Generator):  # Was "'int' object has no attribute ...".
    raise DataError(f"synthetic: {what} is {type(rng).__name__} {rng!r:.40}; pass a NumPy "
                    "generator, np.random.default_rng(seed).")


def _check_image_size(image_size: int) -> None:
  if (not is_integer(image_size) or image_size < 16
      or image_size % 8 != 0 or image_size > _MAX_SIZE):
    raise ConfigError(f"synthetic: data.image_size={image_size!r} is not supported; use a "
                      f"multiple of 8 from 16 to {_MAX_SIZE} (32 or 64 are the tested sizes).")


def check_options(*, image_size: int, num_train: int, num_validation: int, num_test: int,
                  seed: int) -> None:
  """Raises `ConfigError` for settings `load` cannot use (`config.data` / `.synthetic`).

  Args:
    image_size, num_train, num_validation, num_test, seed: as for `load`.
  Raises:
    ConfigError: a value that is not an integer (a bool included) or out of its range.
  """
  _check_image_size(image_size)
  # Bools were taken as integers: num_train=True a split of one image (or NumPy's TypeError,
  # "an integer is required"), seed=True seed 1 (fault hunt).
  for name, n in (("train", num_train), ("validation", num_validation), ("test", num_test)):
    if not is_integer(n) or n <= 0:
      raise ConfigError(f"synthetic: data.synthetic.num_{name}={n!r}; every split needs a "
                        "positive number of images.")
  if not is_integer(seed) or seed < 0:
    raise ConfigError(f"synthetic: data.synthetic.seed={seed!r}; use a non-negative integer.")


def sample_attributes(rng: np.random.Generator, n: int) -> np.ndarray:
  """Draws attribute vectors independently per attribute.

  Args:
    rng: the generator to draw from.
    n: how many vectors.

  Returns:
    float32 [n, A]: continuous attributes uniform in [-1, 1], binary ones exactly 0 or 1.
  Raises:
    DataError: `rng` is not a NumPy generator, or `n` not an integer of at least 0.
  """
  _check_rng(rng, "rng")
  if not is_integer(n) or n < 0:
    raise DataError(f"synthetic: cannot sample {n!r} attribute vectors; pass an integer of "
                    "at least 0.")
  out = np.empty((n, len(ATTRIBUTE_NAMES)), np.float32)
  for i, (name, kind) in enumerate(zip(ATTRIBUTE_NAMES, ATTRIBUTE_KINDS)):
    if kind == "continuous":
      out[:, i] = rng.uniform(-1.0, 1.0, n)
    else:
      out[:, i] = rng.random(n) < _BINARY_PROB[name]
  return out


# ----------------------------------------------------------------------------- nuisance


def _random_colours(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
  return rng.uniform(lo, hi, (n, 3)).astype(np.float32)


def _sample_nuisance(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
  """Draws every non-attribute factor for n images, in a fixed order.

  The draws never depend on the attributes, so re-rendering with one attribute changed and
  the same generator state changes only that attribute.
  """
  u = lambda lo, hi, shape=(n,): rng.uniform(lo, hi, shape).astype(np.float32)
  p = {}
  # Face pose: shifts are in image half-widths, so 0.07 is 3.5 % of the image width.
  p["cx"], p["cy"] = u(-0.07, 0.07), u(-0.07, 0.05)
  p["scale"] = u(1.0, 1.2)
  p["tilt"] = u(-0.16, 0.16)
  p["gaze"] = u(-0.018, 0.018)
  # Lighting: gain kept moderate so it does not masquerade as skin tone.
  p["gain"] = u(0.86, 1.1)
  p["light_angle"] = u(0.0, 2 * np.pi)
  p["light_amount"] = u(0.0, 0.35)
  p["skin_jitter"] = u(-0.03, 0.03, (n, 3))
  p["hair_jitter"] = u(-0.03, 0.03, (n, 3))
  p["hat_colour"] = _random_colours(rng, n, 0.05, 0.95)
  p["shirt_colour"] = _random_colours(rng, n, 0.05, 0.95)
  p["frame_colour"] = _random_colours(rng, n, 0.0, 0.25)
  p["pupil_colour"] = _random_colours(rng, n, 0.02, 0.3)
  p["fringe_phase"] = u(0.0, 2 * np.pi)
  # Background.
  p["bg_c1"] = _random_colours(rng, n, 0.03, 0.97)
  p["bg_c2"] = _random_colours(rng, n, 0.03, 0.97)
  p["bg_angle"] = u(0.0, 2 * np.pi)
  p["bg_grad"] = u(0.0, 1.0) * (rng.random(n) < 0.75)  # a quarter are flat
  p["stripe_on"] = (rng.random(n) < 0.35).astype(np.float32)
  p["stripe_colour"] = _random_colours(rng, n, 0.03, 0.97)
  p["stripe_angle"] = u(0.0, np.pi)
  p["stripe_freq"] = u(1.5, 4.5)
  p["stripe_phase"] = u(0.0, 2 * np.pi)
  p["stripe_weight"] = u(0.3, 0.8)
  nb = 3
  p["blob_on"] = (rng.random((n, nb)) < 0.4).astype(np.float32)
  p["blob_x"], p["blob_y"] = u(-1.0, 1.0, (n, nb)), u(-1.0, 1.0, (n, nb))
  p["blob_sigma"] = u(0.12, 0.45, (n, nb))
  p["blob_weight"] = u(0.4, 0.9, (n, nb))
  p["blob_colour"] = rng.uniform(0.03, 0.97, (n, nb, 3)).astype(np.float32)
  return p


# ----------------------------------------------------------------- signed distance helpers
# All distances are negative inside, in face-local units; `_cover` turns them into
# anti-aliased coverage with a one-pixel ramp.


def _cover(d: np.ndarray, px: np.ndarray) -> np.ndarray:
  return np.clip(0.5 - d / px, 0.0, 1.0)


def _ellipse(x, y, rx, ry):
  # First-order distance (k - 1) / |grad k|; k / |grad k| lies between the two radii, which
  # also keeps the centre (where both vanish) well defined.
  qx, qy = x / rx, y / ry
  k = np.sqrt(qx * qx + qy * qy)
  g = np.sqrt((qx / rx) ** 2 + (qy / ry) ** 2)
  lo, hi = np.minimum(rx, ry), np.maximum(rx, ry)
  return (k - 1.0) * np.clip(k / (g + 1e-12), lo, hi)


def _circle(x, y, r):
  return np.sqrt(x * x + y * y) - r


def _box(x, y, hx, hy, r):
  """Rounded box centred at the origin with half sizes hx, hy and corner radius r."""
  qx, qy = np.abs(x) - hx + r, np.abs(y) - hy + r
  outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
  return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def _parabola_band(x, y, yc, bend, half_width, half_thick):
  """A stroke along y = yc + bend * (1 - (x / half_width)^2) for |x| <= half_width."""
  t = x / half_width
  curve = yc + bend * (1.0 - t * t)
  slope = -2.0 * bend * x / (half_width * half_width)
  dy = np.abs(y - curve) / np.sqrt(1.0 + slope * slope)
  # Round caps: beyond the ends, distance to the end point.
  ex = np.abs(x) - half_width
  dend = np.sqrt(np.maximum(ex, 0.0) ** 2 + np.where(ex > 0, (y - yc) ** 2, 0.0))
  return np.where(ex > 0, dend, dy) - half_thick


def _ramp(ramp: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Piecewise-linear colour lookup of v in [-1, 1] on a 3-stop ramp; [n] -> [n, 3]."""
  v = np.clip(v, -1.0, 1.0)[:, None]
  lo = np.where(v < 0, ramp[0], ramp[1])
  hi = np.where(v < 0, ramp[1], ramp[2])
  t = np.where(v < 0, v + 1.0, v)
  return (lo + (hi - lo) * t).astype(np.float32)


# ------------------------------------------------------------------------------ rendering


@dataclasses.dataclass
class _Layers:
  """Back-to-front compositing state in premultiplied colour."""
  colour: np.ndarray  # [n, S, S, 3] premultiplied foreground colour
  trans: np.ndarray  # [n, S, S] product of (1 - alpha) over the layers so far

  def over(self, alpha: np.ndarray, colour, idx: Optional[np.ndarray] = None) -> None:
    """Draws a layer on top.

    Args:
      alpha: coverage [m, S, S], where m is n, or len(idx) when idx is given.
      colour: [m, 1, 1, 3], [m, S, S, 3] or [3].
      idx: the images (rows of the chunk) the layer is drawn on; None for all. Drawing
        optional features only where they are present roughly halves the render time.
    """
    a = alpha[..., None]
    if idx is None:
      self.colour *= 1.0 - a
      self.colour += a * colour
      self.trans *= 1.0 - alpha
    else:
      self.colour[idx] = self.colour[idx] * (1.0 - a) + a * colour
      self.trans[idx] *= 1.0 - alpha


def _background(p: dict[str, np.ndarray], sl: slice, ux: np.ndarray,
                uy: np.ndarray) -> np.ndarray:
  """Background colours [n, S, S, 3] in image coordinates (independent of the face)."""
  col = lambda k: p[k][sl][:, None, None, :]
  sc = lambda k: p[k][sl][:, None, None]
  a = sc("bg_angle")
  t = np.clip(0.5 + 0.5 * sc("bg_grad") * (np.cos(a) * ux + np.sin(a) * uy), 0.0, 1.0)
  bg = col("bg_c1") + (col("bg_c2") - col("bg_c1")) * t[..., None]
  i = np.flatnonzero(p["stripe_on"][sl])
  if i.size:
    q = lambda k: p[k][sl][i][:, None, None]
    b = q("stripe_angle")
    phase = np.pi * q("stripe_freq") * (np.cos(b) * ux + np.sin(b) * uy) + q("stripe_phase")
    w = (0.5 + 0.5 * np.tanh(3.0 * np.sin(phase))) * q("stripe_weight")
    bg[i] += (p["stripe_colour"][sl][i][:, None, None, :] - bg[i]) * w[..., None]
  for j in range(p["blob_on"].shape[1]):
    i = np.flatnonzero(p["blob_on"][sl, j])
    if not i.size:
      continue
    q = lambda k: p[k][sl][i, j][:, None, None]
    sig = q("blob_sigma")
    w = q("blob_weight") * np.exp(((ux - q("blob_x")) ** 2 + (uy - q("blob_y")) ** 2) *
                                  (-0.5 / (sig * sig)))
    bg[i] += (p["blob_colour"][sl][i, j][:, None, None, :] - bg[i]) * w[..., None]
  return bg


def _render_chunk(attrs: np.ndarray, p: dict[str, np.ndarray], sl: slice,
                  image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders one chunk; returns float foreground [n,S,S,3], mask [n,S,S], background."""
  n, s = attrs.shape[0], image_size
  f32 = np.float32
  sc = lambda k: p[k][sl][:, None, None]
  at = lambda name: attrs[:, _IDX[name]][:, None, None]
  where = lambda name, value=True: np.flatnonzero((attrs[:, _IDX[name]] >= 0.5) == value)

  # Pixel centres in image coordinates spanning [-1, 1], y pointing down.
  g = ((np.arange(s, dtype=f32) + 0.5) * (2.0 / s) - 1.0)
  ux, uy = g[None, None, :], g[None, :, None]
  bg = _background(p, sl, ux, uy)

  # Face-local frame: undo shift, tilt and scale so all features are drawn at fixed sizes.
  scale, tilt = sc("scale"), sc("tilt")
  ct, st = np.cos(tilt), np.sin(tilt)
  dx, dy = ux - sc("cx"), uy - sc("cy")
  x = (ct * dx + st * dy) / scale
  y = (-st * dx + ct * dy) / scale
  ax = np.abs(x)  # the face is left-right symmetric: paired features are drawn once
  px = (2.0 / s) / scale  # one pixel in local units
  thin = lambda w, px: np.maximum(w, 0.6 * px)  # keeps strokes over a pixel wide

  skin = _ramp(_SKIN_RAMP, attrs[:, _IDX["skin_tone"]]) + p["skin_jitter"][sl]
  hair = _ramp(_HAIR_RAMP, attrs[:, _IDX["hair_color"]]) + p["hair_jitter"][sl]
  skin, hair = skin[:, None, None, :], hair[:, None, None, :]

  fy = f32(0.1)  # face centre in local coordinates
  rx = 0.40 + 0.11 * np.clip(at("face_width"), -1, 1)
  ry = f32(0.5)
  ex = 0.08 + 0.22 * rx  # eye offset follows face width so narrow faces stay tidy
  ey = fy - 0.04
  my = fy + 0.3

  lay = _Layers(np.zeros((n, s, s, 3), f32), np.ones((n, s, s), f32))

  # Shoulders and neck.
  lay.over(_cover(_ellipse(x, y - (fy + 1.25), f32(0.8), f32(0.45)), px),
           p["shirt_colour"][sl][:, None, None, :])
  lay.over(_cover(_box(x, y - (fy + 0.75), f32(0.13), f32(0.32), f32(0.02)), px), skin * 0.82)

  # Hair behind the head: a cap over the skull that continues straight down, cut at a length
  # set by hair_length (temples for -1, past the chin for +1).
  t_len = (np.clip(at("hair_length"), -1, 1) + 1.0) * 0.5
  y_end = fy - 0.12 + 0.9 * t_len
  hw = rx + 0.07
  cap = _ellipse(x, y - (fy - 0.04), hw, ry + 0.07)
  drop = _box(x, y - (fy + 0.4), hw, f32(0.44), f32(0.1))
  hair_back = np.maximum(np.minimum(cap, drop), y - y_end - 0.02 * np.cos(x * 40.0))
  lay.over(_cover(hair_back, px), hair)

  # Face with a soft spherical falloff towards the edge for a 3D look.
  face = _ellipse(x, y - fy, rx, ry)
  k2 = (x / rx) ** 2 + ((y - fy) / ry) ** 2
  face_shade = (1.04 - 0.16 * np.clip(k2, 0.0, 1.0) ** 2)[..., None]
  lay.over(_cover(face, px), skin * face_shade)

  # Nose.
  lay.over(_cover(_ellipse(x, y - (fy + 0.14), f32(0.035), f32(0.05)), px) * 0.7, skin * 0.75)

  # Mouth: the upper lip bends with `smile`; positive smiles also open into a filled crescent.
  smile = np.clip(at("smile"), -1, 1)
  mw, bend = f32(0.19), 0.12
  t2 = (x / mw) ** 2
  upper = my - smile * bend * (t2 - 0.5)
  opening = np.maximum(smile, 0.0) * 0.09 * np.maximum(1.0 - t2, 0.0)
  slope = (2.0 * bend / (mw * mw)) * smile * x
  half_t = thin(f32(0.028), px)
  mouth = np.maximum(np.maximum(upper - half_t - y, y - (upper + opening + half_t)) /
                     np.sqrt(1.0 + slope * slope), ax - mw)

  # Beard: the lower face and chin in the hair colour, with a skin margin around the mouth.
  i = where("beard")
  if i.size:
    xi, yi = x[i], y[i]
    beard = _ellipse(xi, yi - (fy + 0.04), rx[i] + 0.03, ry + 0.05)
    beard = np.maximum(np.maximum(beard, (my - 0.15) - yi), 0.035 - mouth[i])
    lay.over(_cover(beard, px[i]), hair[i] * 0.8, i)
  lay.over(_cover(mouth, px), np.array([0.35, 0.04, 0.07], f32))

  # Eyes: white with a pupil when open, a dark arc when closed. Mirrored gaze keeps both
  # pupils looking the same way.
  ew, eh = f32(0.095), f32(0.072)
  i = where("eyes_open")
  if i.size:
    xe, ye = ax[i] - ex[i], y[i] - ey
    white = _ellipse(xe, ye, ew, eh)
    lay.over(_cover(white, px[i]), np.array([0.97, 0.97, 0.97], f32), i)
    pupil = np.maximum(_circle(xe - np.sign(x[i]) * sc("gaze")[i], ye, f32(0.05)), white)
    lay.over(_cover(pupil, px[i]), p["pupil_colour"][sl][i][:, None, None, :], i)
  i = where("eyes_open", False)
  if i.size:
    closed = _parabola_band(ax[i] - ex[i], y[i], ey, f32(0.03), ew, thin(f32(0.02), px[i]))
    lay.over(_cover(closed, px[i]), np.array([0.12, 0.07, 0.06], f32), i)

  # Hair over the forehead: a thin hairline, or a wavy fringe down to just above the eyes.
  bangs = attrs[:, _IDX["bangs"]][:, None, None] >= 0.5
  line = np.where(bangs, fy - 0.19 - 0.025 * (1.0 + np.sin(x * 45.0 + sc("fringe_phase"))),
                  fy - 0.4)
  lay.over(_cover(np.maximum(face, y - line), px), hair)

  # Glasses: two tinted lenses with rims, and one bar for the bridge and both temples.
  i = where("eyeglasses")
  if i.size:
    r_ring, half_f = f32(0.12), thin(f32(0.018), px[i])
    lens = _circle(ax[i] - ex[i], y[i] - ey, r_ring)
    bar = _box(x[i], y[i] - (ey - 0.01), rx[i], half_f, f32(0.0))
    frame = np.minimum(np.abs(lens) - half_f, np.maximum(bar, -lens))
    lay.over(_cover(lens, px[i]) * 0.18, np.array([0.75, 0.85, 1.0], f32), i)
    lay.over(_cover(frame, px[i]), p["frame_colour"][sl][i][:, None, None, :], i)

  # Hat: a rounded crown with a darker band, and a brim across the forehead.
  i = where("hat")
  if i.size:
    xi, yi, pi = x[i], y[i], px[i]
    yb = fy - 0.33
    hat_c = p["hat_colour"][sl][i][:, None, None, :]
    crown = _box(xi, yi - (yb - 0.19), rx[i] * 0.85 + 0.02, f32(0.2), f32(0.08))
    lay.over(_cover(crown, pi), hat_c, i)
    lay.over(_cover(np.maximum(crown, (yb - 0.09) - yi), pi), hat_c * 0.55, i)
    lay.over(_cover(_ellipse(xi, yi - yb, rx[i] + 0.16, f32(0.05)), pi), hat_c * 0.85, i)

  alpha = 1.0 - lay.trans
  fg = lay.colour / np.maximum(alpha, 1e-6)[..., None]
  # Directional light across the head and an overall gain; foreground only.
  la = sc("light_angle")
  light = sc("gain") * (1.0 + sc("light_amount") * (np.cos(la) * x + np.sin(la) * y))
  fg *= light[..., None]
  return fg, alpha, bg


def _to_uint8(v: np.ndarray) -> np.ndarray:
  return np.rint(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)


def render(attributes: np.ndarray, nuisance_rng: np.random.Generator, image_size: int, *,
           return_background: bool = False) -> tuple[np.ndarray, ...]:
  """Renders faces for the given attribute vectors.

  Nuisance factors are drawn from `nuisance_rng` in a fixed order that does not depend on
  the attributes, so two calls with generators in the same state and attribute rows that
  differ in one column give images that differ only in that attribute.

  Args:
    attributes: float [N, A] in the column order of `ATTRIBUTE_NAMES`. Continuous values are
      clipped to [-1, 1]; binary values >= 0.5 count as 1.
    nuisance_rng: generator for pose, lighting, colours and backgrounds.
    image_size: height and width in pixels, a multiple of 8 from 16 to 512.
    return_background: also return the background rendered alone.

  Returns:
    (images uint8 [N, S, S, 3], masks uint8 [N, S, S]) with mask 255 on the foreground
    (head, hair, hat, neck, shoulders) and 0 on the background; anti-aliased edges have
    values in between. With `return_background`, a third array: the background alone, uint8
    [N, S, S, 3]; wherever the mask is 0 the image equals it exactly.
  Raises:
    ConfigError: an image size it cannot draw.
    DataError: attributes not [N, A] real numbers, NaN or infinite, or a `nuisance_rng` that
      is not a NumPy generator.
  """
  _check_image_size(image_size)
  _check_rng(nuisance_rng, "nuisance_rng")
  try:
    attributes = np.asarray(attributes, np.float32)
  except (TypeError, ValueError):  # Was NumPy's "could not convert string to float".
    raise DataError(f"synthetic: attributes {attributes!r:.60} are not numbers; pass floats "
                    f"[N, {len(ATTRIBUTE_NAMES)}].") from None
  if attributes.ndim != 2 or attributes.shape[1] != len(ATTRIBUTE_NAMES):
    raise DataError(f"synthetic: attributes have shape {attributes.shape}, expected "
                    f"[N, {len(ATTRIBUTE_NAMES)}] in the order {ATTRIBUTE_NAMES}.")
  if not np.all(np.isfinite(attributes)):
    raise DataError("synthetic: attributes contain NaN or infinity.")
  n = attributes.shape[0]
  p = _sample_nuisance(nuisance_rng, n)
  images = np.empty((n, image_size, image_size, 3), np.uint8)
  masks = np.empty((n, image_size, image_size), np.uint8)
  bgs = np.empty_like(images) if return_background else None

  def draw(start: int) -> None:
    sl = slice(start, min(n, start + _CHUNK))
    fg, alpha, bg = _render_chunk(attributes[sl], p, sl, image_size)
    # Composite with the quantised mask so the stored mask and image agree exactly.
    m8 = _to_uint8(alpha)
    m = (m8.astype(np.float32) * (1.0 / 255.0))[..., None]
    bg = np.clip(bg, 0.0, 1.0)
    images[sl] = _to_uint8(bg + (np.clip(fg, 0.0, 1.0) - bg) * m)
    masks[sl] = m8
    if bgs is not None:
      bgs[sl] = _to_uint8(bg)

  # NumPy releases the GIL in its array loops, so threads over chunks use all cores; every
  # random draw happened above, so the result does not depend on the scheduling.
  starts = range(0, n, _CHUNK)
  workers = min(len(starts), os.cpu_count() or 1, 8)
  if workers > 1:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(draw, starts))
  else:
    for start in starts:
      draw(start)
  if return_background:
    return images, masks, bgs
  return images, masks


# -------------------------------------------------------------------------------- loading


def _generate_split(seq: np.random.SeedSequence, n: int, image_size: int) -> Split:
  attr_seq, nuis_seq = seq.spawn(2)
  attributes = sample_attributes(np.random.default_rng(attr_seq), n)
  images, masks = render(attributes, np.random.default_rng(nuis_seq), image_size)
  return Split(images=images, attributes=attributes, masks=masks)


def cache_path(cache_dir: str, *, image_size: int, num_train: int, num_validation: int,
               num_test: int, seed: int) -> str:
  """The .npz file `load` uses for these arguments inside cache_dir.

  Args:
    cache_dir: the cache folder (`~` expanded).
    image_size, num_train, num_validation, num_test, seed: as for `load`.
  Returns:
    The file path (the name encodes the arguments and the renderer's VERSION).
  """
  name = (f"synthetic_v{VERSION}_s{image_size}_n{num_train}-{num_validation}-{num_test}"
          f"_seed{seed}.npz")
  return os.path.join(os.path.expanduser(cache_dir), name)


def _read_cache(path: str, sizes: dict[str, int], image_size: int) -> Optional[dict]:
  """Returns the cached splits, or None when the file is missing or unusable."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as z:
      splits = {}
      for name, n in sizes.items():
        im, at, ma = z[f"{name}_images"], z[f"{name}_attributes"], z[f"{name}_masks"]
        # Masks and attributes of another dtype, or NaN attributes, were trusted: float masks
        # read as 1/255 of themselves by the pipeline (fault hunt).
        if (im.shape != (n, image_size, image_size, 3) or im.dtype != np.uint8
            or at.shape != (n, len(ATTRIBUTE_NAMES)) or at.dtype != np.float32
            or not np.isfinite(at).all() or ma.shape != im.shape[:3] or ma.dtype != np.uint8):
          return None
        splits[name] = Split(images=im, attributes=at.astype(np.float32), masks=ma)
      return splits
  except Exception:  # pylint: disable=broad-except
    # A corrupt or foreign file is just a cache miss; it is overwritten below.
    return None


def _write_cache(path: str, splits: dict[str, Split]) -> None:
  arrays = {}
  for name, sp in splits.items():
    arrays[f"{name}_images"] = sp.images
    arrays[f"{name}_attributes"] = sp.attributes
    arrays[f"{name}_masks"] = sp.masks
  with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.savez_compressed(f, **arrays)


def _generate(sizes: dict[str, int], seed: int, image_size: int) -> dict[str, Split]:
  seqs = np.random.SeedSequence(seed).spawn(len(sizes))
  return {name: _generate_split(sq, n, image_size) for (name, n), sq in zip(sizes.items(), seqs)}


# A temporary cache file untouched for this long is a killed writer's: a write takes seconds
# and keeps touching its file.
STALE_TEMPORARY_S = 3600.0


def _remove_stale_temporaries(path: str, now: Optional[float] = None) -> None:
  """Removes the temporary files of `path` (`.<name>.<random>.tmp.npz`, `files.atomic_path`'s)
  that a killed writer left, those untouched for `STALE_TEMPORARY_S`.

  Was: one per kill, never removed, each the size of the cache file (review finding). Newer
  ones are left: another process may be writing the same cache file now (there is no lock).
  """
  directory, name = os.path.split(path)
  try:
    entries = os.listdir(directory)
  except OSError:  # Not made yet: nothing left behind.
    return
  now = time.time() if now is None else now
  for entry in entries:
    if not (entry.startswith(f".{name}.") and entry.endswith(".tmp.npz")):
      continue
    file = os.path.join(directory, entry)
    try:
      if now - os.stat(file).st_mtime > STALE_TEMPORARY_S:
        os.remove(file)
    except OSError:  # Gone meanwhile, or not ours to remove: it costs only space.
      pass


def _cached(path: str, sizes: dict[str, int], seed: int, image_size: int) -> dict[str, Split]:
  """The splits from the cache file, generated and written there when it is unusable."""
  # At every load, a cache hit too: a killed writer's file was otherwise removed only by a
  # write more than an hour after the kill, which a cache hit never makes (review finding).
  _remove_stale_temporaries(path)
  splits = _read_cache(path, sizes, image_size)
  if splits is None:
    splits = _generate(sizes, seed, image_size)
    try:
      _write_cache(path, splits)
    except OSError as e:
      # The data is in memory already; an unwritable cache only costs time next run. One log
      # line (was Python's two-line UserWarning with its source line; review finding).
      logging.warning("synthetic: could not write the cache file %s (%s); the data is made "
                      "again at the next run: set --config.data.cache_dir to a writable folder",
                      path, files.describe_storage_error(e))
  return splits


def load(*, image_size: int = 32, num_train: int = 12000, num_validation: int = 1000,
         num_test: int = 1000, seed: int = 0, cache_dir: Optional[str] = None) -> Dataset:
  """Generates (or loads from the cache) the synthetic faces dataset.

  Args:
    image_size: height and width in pixels, a multiple of 8 from 16 to 512.
    num_train: images in the train split.
    num_validation: images in the validation split.
    num_test: images in the test split.
    seed: the splits come from independent children of SeedSequence(seed), so they never
      share images and the same seed always gives identical arrays.
    cache_dir: where to keep one .npz per (version, size, counts, seed); None or "" disables
      caching (as `config.data.cache_dir` does). "~" is expanded.

  Returns:
    A `Dataset` named "synthetic" with train / validation / test splits holding uint8
    images [N, S, S, 3], float32 attributes [N, A] and uint8 masks [N, S, S].
  """
  check_options(image_size=image_size, num_train=num_train, num_validation=num_validation,
                num_test=num_test, seed=seed)
  sizes = {"train": num_train, "validation": num_validation, "test": num_test}

  name = os.path.basename(cache_path("", image_size=image_size, num_train=num_train,
                                     num_validation=num_validation, num_test=num_test,
                                     seed=seed))
  # No cache: every process generates the same arrays. Was: "" wrote the cache into the
  # current folder, where `data.load` (config.data.cache_dir="") keeps none (fault hunt).
  if not cache_dir:
    work = lambda: _generate(sizes, seed, image_size)
  else:
    path = cache_path(cache_dir, image_size=image_size, num_train=num_train,
                      num_validation=num_validation, num_test=num_test, seed=seed)
    work = lambda: _cached(path, sizes, seed, image_size)
  # Many processes: process 0 generates (and writes the cache), the others then read it or
  # generate. Every process takes this step, with or without a cache (data.cache_dir may
  # differ by host): a host without one skipped it, and the others waited 6 hours for it.
  splits = distributed.main_first(f"synthetic data {name}", work)
  return Dataset(name="synthetic", attribute_names=ATTRIBUTE_NAMES,
                 attribute_kinds=ATTRIBUTE_KINDS, splits=splits)
