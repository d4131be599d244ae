"""The PyTorch port of the paper's CVAE and disCVAE that benchmarks/torch_reference.py times
(its module docstring says what is measured and how). Imports torch: torch_reference.py
imports it only after its command line is checked, so that --help and a refused flag need no
PyTorch.
"""

from __future__ import annotations

import argparse
import math
import os

import torch
from torch import nn
import torch.nn.functional as F

from timing import median_time, start_turns  # benchmarks/timing.py


def scaled(n: int, width: float) -> int:
  return max(1, int(round(n * width)))


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None,
            bn: bool = True) -> list[nn.Module]:
  layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2 if pad is None else pad)]
  if bn:
    layers.append(nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))
  layers.append(nn.ReLU())
  return layers


class Trunk(nn.Module):
  def __init__(self, chans, top, size):
    super().__init__()
    c0, c1, c2, c3 = chans
    self.net = nn.Sequential(
        *conv_bn(3, c0, 5, bn=False), nn.MaxPool2d(2),
        *conv_bn(c0, c1, 5), nn.MaxPool2d(2),
        *conv_bn(c1, c2, 3), nn.MaxPool2d(2),
        *conv_bn(c2, c3, 3, stride=2, pad=1),
        nn.Conv2d(c3, top, size // 16), nn.ReLU(), nn.Flatten(),
        nn.Linear(top, top), nn.ReLU(), nn.Dropout(0.5))

  def forward(self, x):
    return self.net(x)


class Encoder(nn.Module):
  def __init__(self, y_dim, z_dim, width, size):
    super().__init__()
    top = scaled(1024, width)
    self.trunk = Trunk([scaled(c, width) for c in (64, 128, 256, 256)], top, size)
    self.y_embed = nn.Linear(y_dim, z_dim)
    self.mu = nn.Linear(top + z_dim, z_dim)
    self.logvar = nn.Linear(top, z_dim)

  def forward(self, x, y):
    h = self.trunk(x)
    hy = F.relu(self.y_embed(y))
    return self.mu(torch.cat([h, hy], 1)), self.logvar(h)


class Decoder(nn.Module):
  def __init__(self, y_dim, z_dim, width, size, gate):
    super().__init__()
    self.gate, self.s0, self.c0 = gate, size // 8, scaled(256, width)
    self.y_embed = nn.Linear(y_dim, 2 * z_dim)
    self.mix = nn.Linear(3 * z_dim, scaled(256, width))
    self.fc = nn.Linear(scaled(256, width), self.c0 * self.s0 * self.s0)
    layers = conv_bn(self.c0, self.c0, 3)
    cin = self.c0
    for c in (256, 128, 64):
      layers += [nn.Upsample(scale_factor=2, mode="nearest"), *conv_bn(cin, scaled(c, width), 5)]
      cin = scaled(c, width)
    self.body = nn.Sequential(*layers)
    self.image = nn.Conv2d(cin, 3, 5, padding=2)
    self.second = nn.Conv2d(cin, 3, 5, padding=2)

  def forward(self, z, y):
    h = torch.cat([z, F.relu(self.y_embed(y))], 1)
    h = F.relu(self.fc(F.relu(self.mix(h)))).view(-1, self.c0, self.s0, self.s0)
    h = self.body(h)
    second = self.second(h)
    return torch.tanh(self.image(h)), torch.sigmoid(second) if self.gate else second


class BackgroundDecoder(nn.Module):
  def __init__(self, zb_dim, width, size):
    super().__init__()
    self.s0, self.c0 = size // 32, scaled(256, width)
    self.fc = nn.Linear(zb_dim, self.c0 * self.s0 * self.s0)
    plan = ((True, 128, 3), (True, 128, 3), (True, 64, 3), (False, 64, 3), (True, 64, 3),
            (False, 64, 3), (True, 32, 5))
    layers, cin = [], self.c0
    for up, c, k in plan:
      if up:
        layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
      layers += conv_bn(cin, scaled(c, width), k)
      cin = scaled(c, width)
    self.body = nn.Sequential(*layers, nn.Conv2d(cin, 3, 5, padding=2), nn.Tanh())

  def forward(self, z):
    return self.body(F.relu(self.fc(z)).view(-1, self.c0, self.s0, self.s0))


def reparam(mu, logvar):
  return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl(mu, logvar):
  return (-0.5 * (1 + logvar - mu.square() - logvar.exp())).sum()


def gaussian_nll(x, mean, logvar):
  return (0.5 * (logvar + math.log(2 * math.pi))
          + 0.5 * (x - mean).square() * (-logvar).exp()).sum()


class CVAE(nn.Module):
  def __init__(self, y_dim=73, z_dim=256, width=1.0, size=64):
    super().__init__()
    self.z_dims = (z_dim,)
    self.encoder = Encoder(y_dim, z_dim, width, size)
    self.decoder = Decoder(y_dim, z_dim, width, size, gate=False)

  def loss(self, x, y, m):
    mu, lv = self.encoder(x, y)
    mean, xlv = self.decoder(reparam(mu, lv), y)
    return gaussian_nll(x, mean, xlv) + kl(mu, lv)

  def energy(self, zs, x, y, out=None, smooth_l1=None):
    del smooth_l1  # The CVAE's energy is its own likelihood.
    mean, xlv = out or self.decode(zs, y)
    return gaussian_nll(x, mean, xlv) + 0.5 * zs[0].square().sum()

  def init_latents(self, x, y):
    return [self.encoder(x, y)[0]]

  def decode(self, zs, y):
    """(image, log-variance)."""
    return self.decoder(zs[0], y)


class DisCVAE(nn.Module):
  def __init__(self, y_dim=73, zf_dim=192, zb_dim=64, width=1.0, size=64):
    super().__init__()
    self.z_dims = (zf_dim, zb_dim)
    self.encoder_fg = Encoder(y_dim, zf_dim, width, size)
    self.trunk_bg = Trunk([scaled(64, width)] * 4, scaled(256, width), size)
    self.head_bg = nn.Linear(scaled(256, width) + y_dim + zf_dim, scaled(256, width))
    self.mu_bg = nn.Linear(scaled(256, width), zb_dim)
    self.lv_bg = nn.Linear(scaled(256, width), zb_dim)
    self.decoder_fg = Decoder(y_dim, zf_dim, width, size, gate=True)
    self.decoder_bg = BackgroundDecoder(zb_dim, width, size)

  def _bg_head(self, h, y, zf):
    h = F.relu(self.head_bg(torch.cat([h, y, zf], 1)))
    return self.mu_bg(h), self.lv_bg(h)

  def loss(self, x, y, m):
    x_fg = (x + 1) * m - 1
    mu_f, lv_f = self.encoder_fg(x_fg, y)
    zf = reparam(mu_f, lv_f)
    h = self.trunk_bg(x)
    mu_b, lv_b = self._bg_head(h, y, zf)
    zb = reparam(mu_b, lv_b)
    mu_b, lv_b = self._bg_head(h, y, zf.detach())
    fg, gate = self.decoder_fg(zf, y)
    bg = self.decoder_bg(zb)
    mean = fg + gate * bg
    bce = F.binary_cross_entropy(gate, (1 - m).expand_as(gate), reduction="sum")
    return (F.smooth_l1_loss(fg, x_fg, reduction="sum") + F.smooth_l1_loss(mean, x, reduction="sum")
            + kl(mu_f, lv_f) + kl(mu_b, lv_b) + 0.3 * bce)

  def energy(self, zs, x, y, out=None, smooth_l1=True):
    mean = out[0] if out else self.decode(zs, y)[0]
    data = (F.smooth_l1_loss(mean, x, reduction="sum") if smooth_l1
            else (0.5 * (x - mean).square()).sum())
    return data + sum(0.5 * z.square().sum() for z in zs)

  def init_latents(self, x, y):
    """The encoder's means; without masks, the foreground is estimated first: the whole
    image as foreground, decoded, 1 - gate (the library's `encode_latents`)."""
    h = self.trunk_bg(x)
    mu_f, _ = self.encoder_fg(x, y)
    _, gate = self.decoder_fg(mu_f, y)
    mask = 1 - gate.mean(1, keepdim=True)
    mu_f, _ = self.encoder_fg((x + 1) * mask - 1, y)
    return [mu_f, self._bg_head(h, y, mu_f)[0]]

  def decode(self, zs, y):
    """(the composite,)."""
    fg, gate = self.decoder_fg(zs[0], y)
    return (fg + gate * self.decoder_bg(zs[1]),)


def augment(images_u8, masks_u8, box):
  """flip, colour gain, sharpening, to [-1, 1] (the JAX train step's augmentation)."""
  x = images_u8.float() / 255.0
  b = x.shape[0]
  flip = torch.rand(b, 1, 1, 1) < 0.5
  x = torch.where(flip, x.flip(3), x)
  m = None
  if masks_u8 is not None:
    m = masks_u8.float()[:, None] / 255.0
    m = torch.where(flip, m.flip(3), m)
  x = x * (1 + 0.03 * (2 * torch.rand(b, 3, 1, 1) - 1))
  s = 1.5 * torch.rand(b, 1, 1, 1)
  x = x + s * (x - F.conv2d(x, box, padding=2, groups=3))
  return 2 * x - 1, m


def measure(args: argparse.Namespace) -> dict:
  """Times what `args` (torch_reference.py's checked command line) asks for.

  Args:
    args: from `torch_reference.parse_args`.
  Returns:
    The record torch_reference.py prints: the setup, and "train" and / or "infer" figures.
  """
  start_turns()  # Under compare_cpu.sh's turn-taking: all work in this process's turns.
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  s, b = args.image_size, args.batch
  model = (CVAE(width=args.width, size=s) if args.model == "cvae"
           else DisCVAE(width=args.width, size=s))
  fmt = torch.channels_last if args.channels_last else torch.contiguous_format
  model = model.to(memory_format=fmt)
  n = max(512, 2 * b)
  images = torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8)
  attrs = torch.randn(n, 73)
  masks = torch.randint(0, 256, (n, s, s), dtype=torch.uint8) if args.model == "discvae" else None
  box = torch.full((3, 1, 5, 5), 1 / 25)
  out = {"framework": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
         "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
         # The instruction sets ATen's kernels and oneDNN's may use: the widest the CPU has
         # unless ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA hold them lower.
         "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")(),
         "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
         "model": args.model, "batch": b, "width": args.width, "image_size": s,
         "channels_last": args.channels_last}
  what = set(args.what)
  if "train" in what:
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=0.004)
    model.train()

    def step():
      idx = torch.randint(0, n, (b,))
      x, m = augment(images[idx], None if masks is None else masks[idx], box)
      x = x.contiguous(memory_format=fmt)
      opt.zero_grad(set_to_none=True)
      model.loss(x, attrs[idx], m).backward()
      opt.step()

    med, times = median_time(step, args.repeats)
    out["train"] = {"step_s_median": round(med, 4), "step_s_all": [round(t, 4) for t in times],
                    "images_per_s": round(b / med, 2)}
  if "infer" in what:
    model.eval()
    for prm in model.parameters():
      prm.requires_grad_(False)
    k = args.infer_images or b
    x = (images[:k].float() / 127.5 - 1).contiguous(memory_format=fmt)
    y = attrs[:k]

    def run():
      if args.infer_ends == "none":
        zs = [torch.randn(k, d, requires_grad=True) for d in model.z_dims]
        opt = torch.optim.Adam(zs, lr=0.01)
        for _ in range(args.infer_steps):
          opt.zero_grad(set_to_none=True)
          model.energy(zs, x, y, smooth_l1=False).backward()  # As measured before.
          opt.step()
        return
      with torch.no_grad():
        zs = [z.clone().requires_grad_(True) for z in model.init_latents(x, y)]
      opt = torch.optim.Adam(zs, lr=0.05)
      for t in range(args.infer_steps):  # Cosine from 0.05 to 0.005, as the library's default.
        opt.param_groups[0]["lr"] = 0.05 * (0.1 + 0.45 * (1 + math.cos(math.pi * t /
                                                                       args.infer_steps)))
        opt.zero_grad(set_to_none=True)
        model.energy(zs, x, y).backward()
        opt.step()
      with torch.no_grad():  # The outputs: the reconstruction and the energy (summed here).
        decoded = model.decode(zs, y)
        return (decoded[0] + 1) / 2, model.energy(zs, x, y, decoded)

    med, times = median_time(run, args.repeats)
    out["infer"] = {"images": k, "steps": args.infer_steps, "ends": args.infer_ends,
                    "run_s_median": round(med, 4),
                    "run_s_all": [round(t, 4) for t in times],
                    "image_iterations_per_s": round(k * args.infer_steps / med, 2)}
  return out
