"""The conditional VAE of the paper and the VAE baseline (docs/reference.md §1.2)."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from a2i_jax import objectives
from a2i_jax.models.blocks import ImageDecoder, ImageEncoder
from a2i_jax.models.layers import check_image_size, check_inputs, reparametrize

Array = jax.Array
Dtype = Any


class CVAE(nn.Module):
  """The conditional VAE of the paper (and, with `conditional=False`, the VAE baseline).

  Attributes:
    y_dim: attribute vector length (ignored by the VAE, but still checked).
    z_dim: latent size (LFW: 256).
    image_size: 64 (paper) or 32.
    width: multiplier on every hidden width (1.0 = the reference).
    conditional: False gives the VAE: no attribute streams in encoder or decoder.
    dtype: compute dtype (parameters stay float32).
    upsample_mode: "polyphase" (default) or "direct": how the decoder's upsample-then-5x5
      layers are computed; the same function and parameters either way (`UpsampleConv`).
    conv_weight_grad: "xla" (default), "taps" or "auto": how the convolutions' kernel
      gradients are computed (`conv`); the same function and parameters either way.
    decoder_tail: "full" (default) or "phase": how the decoder's last layer and heads are
      computed (`decoder_tail`); the same function and parameters either way.
  """
  y_dim: int
  z_dim: int = 256
  image_size: int = 64
  width: float = 1.0
  conditional: bool = True
  dtype: Dtype = jnp.float32
  upsample_mode: str = "polyphase"
  conv_weight_grad: str = "xla"
  decoder_tail: str = "full"

  # What callers ask of a model (docs/design.md): they never test its name.
  needs_masks = False  # Training and encoding need no foreground masks.
  image_layers = ()  # No separate layers beside the image ("mean").
  energies = ("gaussian", "smooth_l1", "l2")  # Posterior-inference energies it supports.
  default_energy = "gaussian"  # Its own likelihood (the learned per-pixel variance).
  recon_weight = 1.0  # Weight of the "smooth_l1" / "l2" energies' data term (DisCVAE: trained).

  @property
  def uses_attributes(self) -> bool:
    """Whether y enters the model (False for the VAE)."""
    return self.conditional

  @property
  def label(self) -> str:
    """The model's name in reports and tables: "cvae" or "vae"."""
    return "cvae" if self.conditional else "vae"

  @property
  def latent_dims(self) -> dict[str, int]:
    """The latents' names and sizes: {"z": z_dim}."""
    return {"z": self.z_dim}

  def loss_terms(self, outputs: dict, x: Array, mask: Optional[Array]) -> dict[str, Array]:
    """Per-example terms of this model's training loss ("loss" is minimised).

    Args:
      outputs: `__call__`'s outputs.
      x: [B, S, S, 3] targets in [-1, 1].
      mask: unused (the (C)VAE needs no masks).
    Returns:
      `objectives.cvae_terms`.
    """
    del mask
    return objectives.cvae_terms(outputs, x)

  def encode_latents(self, x: Array, y: Optional[Array], mask: Optional[Array] = None,
                     train: bool = False) -> dict[str, tuple[Array, Array]]:
    """The posterior's parameters per latent.

    Args:
      x: [B, S, S, 3] images in [-1, 1]; y: [B, y_dim] (ignored by the VAE); mask: unused.
      train: BatchNorm / dropout mode.
    Returns:
      {"z": (mu, logvar)}, float32 [B, z_dim] each.
    """
    del mask
    q = self.encode(x, y, train)
    return {"z": (q["mu"], q["logvar"])}

  def decode_latents(self, latents: dict, y: Optional[Array],
                     train: bool = False) -> dict[str, Array]:
    """The generator on named latents: the one decoding path of every caller.

    Args:
      latents: {"z": [B, z_dim]}.
      y: [B, y_dim] (ignored by the VAE).
      train: BatchNorm mode.
    Returns:
      "mean" (the image, [-1, 1]) and "logvar", float32 [B, S, S, 3].
    """
    return self.decode(latents["z"], y, train)

  def setup(self):
    check_image_size(self.image_size)
    self.encoder = ImageEncoder(self.z_dim, self.width, self.conditional, self.dtype,
                                self.conv_weight_grad)
    self.decoder = ImageDecoder(self.image_size, self.width, self.conditional, self.dtype,
                                self.upsample_mode, self.conv_weight_grad, self.decoder_tail)

  def _y(self, y: Optional[Array]) -> Optional[Array]:
    return y if self.conditional else None

  def encode(self, x: Array, y: Optional[Array], train: bool = False) -> dict[str, Array]:
    """q(z | x, y).

    Args:
      x: [B, S, S, 3] images in [-1, 1].
      y: [B, y_dim] attributes (ignored by the VAE).
      train: BatchNorm in train mode.
    Returns:
      {"mu", "logvar"}: float32 [B, z_dim].
    """
    check_inputs(x, y if self.conditional else None, self.image_size, self.y_dim)
    mu, logvar = self.encoder(x, self._y(y), train)
    return {"mu": mu.astype(jnp.float32), "logvar": logvar.astype(jnp.float32)}

  def decode(self, z: Array, y: Optional[Array], train: bool = False) -> dict[str, Array]:
    """p(x | y, z).

    Args:
      z: [B, z_dim] latents.
      y: [B, y_dim] attributes (ignored by the VAE).
      train: BatchNorm in train mode.
    Returns:
      {"mean", "logvar"}: float32 [B, S, S, 3]; the mean lies in [-1, 1].
    """
    check_inputs(None, y if self.conditional else None, self.image_size, self.y_dim)
    mean, logvar = self.decoder(z, self._y(y), train)
    return {"mean": mean.astype(jnp.float32), "logvar": logvar.astype(jnp.float32)}

  def __call__(self, x: Array, y: Optional[Array], mask: Optional[Array] = None,
               train: bool = False) -> dict[str, Array]:
    """Encode, sample z, decode. `mask` is accepted for a uniform signature and unused."""
    del mask
    q = self.encode(x, y, train)
    z = reparametrize(q["mu"], q["logvar"], self.make_rng("reparam"))
    p = self.decode(z, y, train)
    return {"z": z, "mu": q["mu"], "logvar": q["logvar"], "mean": p["mean"],
            "x_logvar": p["logvar"]}

