"""The layered disCVAE (docs/reference.md §1.3): foreground and gate from (y, zF), background
from zB, composited by `compose`; its background encoder and decoder (§2.4-2.5)."""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from a2i_jax import objectives
from a2i_jax.errors import ConfigError, InputError
from a2i_jax.models.blocks import ImageDecoder, ImageEncoder, ImageTrunk
from a2i_jax.models.layers import (check_image_size, check_inputs, conv_bn_relu, decoder_tail,
                                   dense, raw_input_dense, reparametrize, scaled)

Array = jax.Array
Dtype = Any
# How the layers make the image (model.composition; docs/reference.md §1.3.1).
COMPOSITIONS = ("reference", "layered")


def compose(foreground: Array, gate: Array, background: Array, composition: str) -> Array:
  """The image from the foreground, the gate (1 = background shows) and the background.

  "reference": x = h_fg + g * h_bg, the authors' code, bit for bit. In [-1, 1] it cannot
  draw a bright background where the foreground is black (-1): there x <= 0, mid-grey.
  "layered": x = (1 - g) * h_fg + g * h_bg, the convex blend of the paper's description,
  which can show any background; its values stay in [-1, 1].

  Args:
    foreground, background: [B, S, S, 3] in [-1, 1].
    gate: [B, S, S, 3] in [0, 1].
    composition: one of COMPOSITIONS.
  Returns:
    [B, S, S, 3], the composite.
  """
  if composition == "reference":
    return foreground + gate * background
  if composition == "layered":
    return (1.0 - gate) * foreground + gate * background
  raise ConfigError(f"model.composition={composition!r} is not one of {', '.join(COMPOSITIONS)}.")


class BackgroundTrunk(nn.Module):
  """disCVAE background encoder, image part (docs/reference.md §2.4 rows 1-6)."""
  width: float = 1.0
  dtype: Dtype = jnp.float32
  conv_weight_grad: str = "xla"

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    return ImageTrunk([scaled(64, self.width)] * 4, scaled(256, self.width), self.dtype,
                      self.conv_weight_grad, name="trunk")(x, train)


class BackgroundHead(nn.Module):
  """disCVAE background encoder head (docs/reference.md §2.4 rows 7-8): [h_x; y; zF] ->
  (muB, logvarB).

  `LinearGaussian` is two independent Linear layers with the Torch default init (its
  sigma layer is not zeroed in the reference).
  """
  zb_dim: int
  width: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h_x: Array, y: Array, z_fg: Array) -> tuple[Array, Array]:
    h = jnp.concatenate([h_x, y, z_fg], axis=-1)
    # In float32, as the layers on y alone (`raw_input_dense`): bf16 would round y first.
    h = raw_input_dense(h, scaled(256, self.width), self.dtype)
    return (dense(h, self.zb_dim, self.dtype, name="mu"),
            dense(h, self.zb_dim, self.dtype, name="logvar"))


class BackgroundDecoder(nn.Module):
  """disCVAE background decoder p(xB | zB), no attributes (docs/reference.md §2.5)."""
  image_size: int
  width: float = 1.0
  dtype: Dtype = jnp.float32
  upsample_mode: str = "polyphase"
  conv_weight_grad: str = "xla"
  tail: str = "full"  # The last layer and head: "full" or "phase" (`decoder_tail`).

  @nn.compact
  def __call__(self, z: Array, train: bool) -> Array:
    w, d = self.width, self.dtype
    cbr = functools.partial(conv_bn_relu, train=train, dtype=d,
                            upsample_mode=self.upsample_mode,
                            conv_weight_grad=self.conv_weight_grad)
    s0, c0 = self.image_size // 32, scaled(256, w)
    h = nn.relu(dense(z, c0 * s0 * s0, d).reshape(-1, s0, s0, c0))
    # (upsample first?, channels, kernel) for steps a-g of docs/reference.md §2.5.
    # The last, (True, 32, 5), with the head: `decoder_tail`.
    plan = ((True, 128, 3), (True, 128, 3), (True, 64, 3), (False, 64, 3), (True, 64, 3),
            (False, 64, 3))
    for up, c, k in plan:
      h = cbr(h, scaled(c, w), k, upsample_first=up)
    image, = decoder_tail(h, scaled(32, w), 5, (3,), 5, train=train, dtype=d,
                          upsample_mode=self.upsample_mode,
                          conv_weight_grad=self.conv_weight_grad, tail=self.tail)
    return jnp.tanh(image.astype(jnp.float32))  # In float32, as `ImageDecoder`'s heads.


class DisCVAE(nn.Module):
  """The layered disCVAE (docs/reference.md §1.3): foreground and gate from (y, zF),
  background from zB.

  The composite is `compose(h_fg, g, h_bg, composition)`: the reference code's h_fg + g * h_bg,
  or the layered blend (1 - g) h_fg + g h_bg.

  Attributes:
    y_dim: attribute vector length.
    zf_dim, zb_dim: foreground / background latent sizes (LFW 192 / 64, CUB 128 / 128).
    image_size, width, dtype, upsample_mode, conv_weight_grad, decoder_tail: as for `CVAE`.
    block_kl_bg_grad_to_fg: the reference back-propagates the background KL separately,
      so d KL_B / d zF never reaches the foreground encoder; True reproduces that.
    gate_loss_weight: alpha, the weight of the gate's BCE in the loss (0.3, the reference
      code's `opts.alpha`).
    composition: "reference" or "layered" (`compose`); it also sets the foreground's target
      in the loss (`objectives.discvae_terms`).
    recon_weight: the weight of both SmoothL1 terms in the loss (1 in the reference); the
      posterior energy's data term carries it too, so that prior weight 1 stays the MAP.
  """
  y_dim: int
  zf_dim: int = 192
  zb_dim: int = 64
  image_size: int = 64
  width: float = 1.0
  block_kl_bg_grad_to_fg: bool = True
  gate_loss_weight: float = 0.3
  composition: str = "reference"
  recon_weight: float = 1.0
  dtype: Dtype = jnp.float32
  upsample_mode: str = "polyphase"
  conv_weight_grad: str = "xla"
  decoder_tail: str = "full"

  needs_masks = True  # Foreground masks: the gate's target and the foreground encoder's input.
  uses_attributes = True
  image_layers = ("foreground", "gate", "background")  # Shown beside the composite.
  energies = ("smooth_l1", "l2")  # No variance head, so no "gaussian".
  default_energy = "smooth_l1"  # Its training reconstruction loss.

  @property
  def label(self) -> str:
    """The model's name in reports and tables: "discvae (reference)" or "discvae (layered)"."""
    return f"discvae ({self.composition})"

  @property
  def latent_dims(self) -> dict[str, int]:
    """The latents' names and sizes: {"z_fg": zf_dim, "z_bg": zb_dim}."""
    return {"z_fg": self.zf_dim, "z_bg": self.zb_dim}

  def loss_terms(self, outputs: dict, x: Array, mask: Optional[Array]) -> dict[str, Array]:
    """Per-example terms of the disCVAE loss ("loss" is minimised).

    Args:
      outputs: `__call__`'s outputs.
      x: [B, S, S, 3] targets in [-1, 1].
      mask: [B, S, S, 1] foreground masks in [0, 1].
    Returns:
      `objectives.discvae_terms` with this model's `gate_loss_weight`, `composition` and
      `recon_weight`.
    """
    return objectives.discvae_terms(outputs, x, mask, self.gate_loss_weight, self.composition,
                                    self.recon_weight)

  def encode_latents(self, x: Array, y: Array, mask: Optional[Array] = None,
                     train: bool = False) -> dict[str, tuple[Array, Array]]:
    """The posterior's parameters per latent.

    Without a mask the model estimates the foreground itself: it encodes once with the whole
    image as foreground, decodes the posterior means, and takes 1 - gate (averaged over the
    channels) as the mask of a second pass.

    Args:
      x: [B, S, S, 3] images in [-1, 1]; y: [B, y_dim]; mask: [B, S, S, 1] or None.
      train: BatchNorm / dropout mode.
    Returns:
      {"z_fg": (mu, logvar), "z_bg": (mu, logvar)}, float32.
    """
    if mask is None:
      q = self.encode(x, y, jnp.ones(x.shape[:3] + (1,), x.dtype), train)
      out = self.decode(q["mu_fg"], q["mu_bg"], y, train)
      mask = 1.0 - out["gate"].mean(-1, keepdims=True)
    q = self.encode(x, y, mask, train)
    return {"z_fg": (q["mu_fg"], q["logvar_fg"]), "z_bg": (q["mu_bg"], q["logvar_bg"])}

  def decode_latents(self, latents: dict, y: Array, train: bool = False) -> dict[str, Array]:
    """The generator on named latents: the one decoding path of every caller.

    Args:
      latents: {"z_fg": [B, zf_dim], "z_bg": [B, zb_dim]}.
      y: [B, y_dim].
      train: BatchNorm mode.
    Returns:
      `decode`'s outputs ("mean" is the composite image).
    """
    return self.decode(latents["z_fg"], latents["z_bg"], y, train)

  def setup(self):
    check_image_size(self.image_size)
    if self.composition not in COMPOSITIONS:
      raise ConfigError(f"model.composition={self.composition!r} is not one of "
                        f"{', '.join(COMPOSITIONS)}.")
    cwg = self.conv_weight_grad
    self.encoder_fg = ImageEncoder(self.zf_dim, self.width, True, self.dtype, cwg)
    self.encoder_bg_trunk = BackgroundTrunk(self.width, self.dtype, cwg)
    self.encoder_bg_head = BackgroundHead(self.zb_dim, self.width, self.dtype)
    self.decoder_fg = ImageDecoder(self.image_size, self.width, True, self.dtype,
                                   self.upsample_mode, cwg, self.decoder_tail)
    self.decoder_bg = BackgroundDecoder(self.image_size, self.width, self.dtype,
                                        self.upsample_mode, cwg, self.decoder_tail)

  def decode(self, z_fg: Array, z_bg: Array, y: Array,
             train: bool = False) -> dict[str, Array]:
    """The generator: foreground and gate from (y, zF), background from zB, composited.

    Args:
      z_fg: [B, zf_dim] foreground latents.
      z_bg: [B, zb_dim] background latents.
      y: [B, y_dim] attributes.
      train: BatchNorm in train mode.
    Returns:
      float32 [B, S, S, 3] each: "foreground" and "background" in [-1, 1], "gate" in
      [0, 1] (1 = the background shows through) and its pre-sigmoid "gate_logits",
      "mean" = the composite (`compose`).
    """
    check_inputs(None, y, self.image_size, self.y_dim)
    fg, logits = self.decoder_fg(z_fg, y, train)
    gate = nn.sigmoid(logits)
    bg = self.decoder_bg(z_bg, train)
    fg, gate, bg, logits = (a.astype(jnp.float32) for a in (fg, gate, bg, logits))
    return {"foreground": fg, "gate": gate, "gate_logits": logits, "background": bg,
            "mean": compose(fg, gate, bg, self.composition)}

  def _encode_fg(self, x: Array, y: Array, mask: Array,
                 train: bool) -> tuple[Array, Array, Array]:
    check_inputs(x, y, self.image_size, self.y_dim)
    if mask is None or tuple(mask.shape) != tuple(x.shape[:3]) + (1,):
      raise InputError("disCVAE needs a foreground mask of shape [batch, S, S, 1] in [0, 1]; "
                       f"got {None if mask is None else tuple(mask.shape)}.")
    x_fg = (x + 1.0) * mask - 1.0  # (x01 * m) * 2 - 1, as the reference builds x_fg.
    mu, logvar = self.encoder_fg(x_fg, y, train)
    return x_fg, mu.astype(jnp.float32), logvar.astype(jnp.float32)

  def _encode_bg(self, h_bg: Array, y: Array, z_fg: Array) -> tuple[Array, Array]:
    mu, logvar = self.encoder_bg_head(h_bg, y, z_fg)
    return mu.astype(jnp.float32), logvar.astype(jnp.float32)

  def encode(self, x: Array, y: Array, mask: Array, train: bool = False,
             z_fg: Optional[Array] = None) -> dict[str, Array]:
    """q(zF | x_fg, y) and q(zB | x, y, zF).

    Args:
      x: images [B,S,S,3] in [-1,1]; y: [B,y_dim]; mask: foreground mask [B,S,S,1] in [0,1].
      train: BatchNorm / dropout mode.
      z_fg: the zF to condition the background encoder on; by default the foreground
        posterior mean.
    Returns:
      mu_fg, logvar_fg, mu_bg, logvar_bg and x_fg (the masked image, background = -1).
    """
    x_fg, mu_f, lv_f = self._encode_fg(x, y, mask, train)
    mu_b, lv_b = self._encode_bg(self.encoder_bg_trunk(x, train), y,
                                 mu_f if z_fg is None else z_fg)
    return {"mu_fg": mu_f, "logvar_fg": lv_f, "mu_bg": mu_b, "logvar_bg": lv_b, "x_fg": x_fg}

  def __call__(self, x: Array, y: Array, mask: Array,
               train: bool = False) -> dict[str, Array]:
    """Encode (zF from the masked image, then zB given the sampled zF), sample, decode."""
    x_fg, mu_f, lv_f = self._encode_fg(x, y, mask, train)
    z_fg = reparametrize(mu_f, lv_f, self.make_rng("reparam"))
    h_bg = self.encoder_bg_trunk(x, train)
    mu_b, lv_b = self._encode_bg(h_bg, y, z_fg)
    z_bg = reparametrize(mu_b, lv_b, self.make_rng("reparam"))
    if self.block_kl_bg_grad_to_fg:
      # Same head on a zF with no gradient: KL_B computed from this one reaches the background
      # encoder's parameters but not the foreground encoder (docs/reference.md §1.3.2).
      mu_b, lv_b = self._encode_bg(h_bg, y, jax.lax.stop_gradient(z_fg))
    out = self.decode(z_fg, z_bg, y, train)
    out.update({"x_fg": x_fg, "z_fg": z_fg, "z_bg": z_bg, "mu_fg": mu_f, "logvar_fg": lv_f,
                "mu_bg": mu_b, "logvar_bg": lv_b})
    return out

