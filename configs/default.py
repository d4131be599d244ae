"""Defaults: the paper's LFW CVAE (reference `train_lfw_condVAE.lua`, docs/reference.md §2-§3).

Every other config imports this one and overrides what differs. Numbers the paper or the
reference code fixes carry their source; the rest are this project's choices.

  python train.py --config=configs/default.py --workdir=runs/lfw_cvae
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The paper's LFW CVAE settings."""
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.name = "cvae"  # "vae" | "cvae" | "discvae".
  config.model.y_dim = 73  # LFW: 73 Kumar et al. attributes (train_lfw_condVAE.lua:29).
  config.model.z_dim = 256  # CVAE latent size (train_lfw_condVAE.lua:30).
  config.model.zf_dim = 192  # disCVAE foreground latent, LFW (train_lfw_disCVAE.lua:31).
  config.model.zb_dim = 64  # disCVAE background latent, LFW (train_lfw_disCVAE.lua:32).
  config.model.image_size = 64  # The paper's resolution; 32 for small variants.
  config.model.width = 1.0  # Multiplier on every hidden width; 1.0 = the reference.
  # Compute dtype: "auto" = bfloat16 on GPU / TPU, float32 on CPU (a2i_jax/perf.py); or
  # "float32" / "bfloat16". Parameters and optimiser state are float32 whatever it says.
  config.model.dtype = "auto"
  # The decoders' nearest-x2-upsample + conv layers: "polyphase" computes the same function
  # at the low resolution (5x5: 36/100 of the multiply-adds; on CPU the disCVAE background's
  # 3x3 ones from 8x8 inputs up: about half; models.UpsampleConv); "direct" upsamples then convolves, as
  # written in the reference; "transposed" computes it as one stride-2 transposed convolution
  # (no shuffle; for GPUs, not measured yet; 5-17x slower on CPU). Same parameters and
  # checkpoints either way.
  config.model.upsample_mode = "polyphase"
  # How the convolutions' kernel gradients are computed: "xla" (XLA's own), "taps" (matrix
  # products over the kernel taps, conv_grad.taps_conv_general_dilated: XLA:CPU's own runs at a third
  # of the forward convolution's rate) or "auto" ("taps" on CPU, "xla" on GPU / TPU and on a
  # CPU whose convolutions run in XLA's own kernels, perf.xla_convolutions): on the paper
  # models "taps" is the faster with YNNPACK's convolutions (BENCHMARKS.md, "Weight gradients
  # as matrix products"). Same values, parameters and checkpoints either way.
  config.model.conv_weight_grad = "auto"
  # How the decoders' last upsampling layer and 5x5 output heads are computed: "full" (the
  # layer's output at full resolution, all of a decoder's heads as one convolution),
  # "phase" (the same function and parameters, with that output kept in 2x2 phase blocks and
  # the heads as one convolution over them; models.decoder_tail) or "auto" ("phase" on GPU /
  # TPU, where it is the faster, and on a CPU whose convolutions run in XLA's own kernels;
  # "full" on a CPU whose convolutions run in YNNPACK's). BENCHMARKS.md, "One NVIDIA H200: a
  # profile" and "The convolution kernels chosen on the machine".
  config.model.decoder_tail = "auto"
  config.model.gate_loss_weight = 0.3  # alpha on BCE(gate, 1 - mask) (opts.alpha).
  # disCVAE composite: "reference" = h_fg + g * h_bg (the authors' code; cannot draw a bright
  # background behind a dark foreground) | "layered" = (1 - g) h_fg + g h_bg (the paper's
  # layers). docs/reference.md §1.3.1; the choice per dataset is in its config.
  config.model.composition = "reference"
  # disCVAE: weight of both SmoothL1 terms against the KLs; 1 = the reference (RESULTS.md,
  # "disCVAE: the reconstruction weight").
  config.model.recon_weight = 1.0
  config.model.block_kl_bg_grad_to_fg = True  # Reference: d KL_B / d zF not back-propagated.

  config.data = ml_collections.ConfigDict()
  config.data.name = "lfw"  # "synthetic" | "lfw" | "cub" | "folder".
  config.data.image_size = 64  # Size of the stored images fed to augmentation.
  config.data.data_dir = "~/a2i_data"  # Where prepared real datasets live.
  # Cache of generated arrays; this default follows $XDG_CACHE_HOME/a2i_jax where set
  # (`data.cache_folder`).
  config.data.cache_dir = "~/.cache/a2i_jax"
  config.data.download = True  # LFW / CUB builders fetch missing sources; False: manual only.
  config.data.masks = False  # Load foreground masks (disCVAE needs them; configs set this).
  config.data.path = ""  # data.name="folder": a folder with images/, attributes.csv, masks/.
  config.data.resize = "centre_crop"  # Folder images: "centre_crop" (centred square) | "stretch".
  config.data.cub_attributes = "is_present"  # "is_present" (per image, 0/1) | "class_continuous".
  config.data.mask_net = ml_collections.ConfigDict()  # LFW masks for unlabelled images.
  config.data.mask_net.steps = 2_000  # Adam steps on the 1,500 parts_train images.
  config.data.mask_net.batch_size = 32
  config.data.mask_net.learning_rate = 1e-3
  config.data.mask_net.width = 16  # Channels of the first U-Net level (x2 per level).
  config.data.mask_net.resolution = 32  # The net sees 32x32; part labels are superpixels.
  config.data.mask_net.depth = 3  # U-Net levels below the top (32 -> 4).
  config.data.mask_net.seed = 0
  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.flip = True  # Horizontal flip, p = 0.5 (docs/reference.md §3.3).
  config.data.augment.crop_size = 0  # Random crop size; 0 = none (CUB: 64 from 72).
  config.data.augment.max_rotation = 0.0  # Radians, uniform +-, at most pi; CUB 0.08.
  config.data.augment.color_gain = 0.03  # Per-channel gain U[0.97, 1.03) (docs/reference.md §3.3).
  config.data.augment.max_sharpen = 1.5  # Strength U[0, 1.5) (docs/reference.md §3.3); <= 10.
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.num_train = 12_000  # Synthetic dataset sizes.
  config.data.synthetic.num_validation = 1_000
  config.data.synthetic.num_test = 1_000
  config.data.synthetic.seed = 0  # The dataset's own seed (independent of `seed`).

  # Attribute predictor that scores generated images (a2i_jax/attribute_predictor/): a
  # 4-layer CNN trained on the training split, saved in workdir/attribute_predictor/. What
  # these values reach on the synthetic data: RESULTS.md, "Attribute fidelity".
  config.attribute_predictor = ml_collections.ConfigDict()
  config.attribute_predictor.steps = 2_000  # Adam steps.
  config.attribute_predictor.batch_size = 64  # Images per step, drawn with replacement.
  config.attribute_predictor.learning_rate = 1e-3  # Adam, cosine-decayed to 0 over `steps`.
  config.attribute_predictor.width = 32  # Channels of the first conv (then 2x, 2x, 4x).

  config.batch_size = 32  # Global batch, split over all devices (reference: 32).
  config.learning_rate = 3e-4  # Adam (utils/adam_v2.lua, --adam 1).
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  config.weight_decay = 0.004  # Coupled: 0.004 * theta added to the summed-loss gradient.
  # Clip the summed-loss gradient to this global norm before Adam; 0 = off (the reference has
  # no clipping). The losses are sums over pixels and the batch, so gradient norms are large:
  # pick a value from the run's logged train/grad_norm.
  config.grad_clip_norm = 0.0
  config.num_train_steps = 26_600  # 100 epochs x 266 iterations (demo_lfw_trainCVAE.sh).
  config.steps_per_dispatch = 1  # Train steps fused into one jitted call (lax.scan).
  # Unroll that scan: compiles every step (3x the compile time of the rolled loop), for no
  # speed on CPU since the gradients are written in the layout XLA:CPU runs fast in a loop body
  # (BENCHMARKS.md, "Train steps in a rolled loop on CPU"). Not measured on accelerators.
  config.scan_unroll = False
  # Dispatch the next train step before reading the last one's metrics, so that an accelerator
  # does not idle while the host reads them; the results are the same either way.
  config.dispatch_ahead = True
  config.log_every_steps = 50
  config.eval_every_steps = 2_660  # Every 10 epochs of 266 iterations.
  config.checkpoint_every_steps = 2_660
  config.max_checkpoints_to_keep = 3
  config.num_eval_examples = -1  # Validation examples per evaluation; -1 = the whole split.
  config.num_sample_rows = 8  # Validation attribute vectors shown in the sample grid.
  config.num_sample_cols = 8  # Latent draws per attribute vector (CVAE/VAE grids).
  config.seed = 0  # Parameter init, batches, augmentation, reparametrisation noise.
  config.progress_bar = True
  # Persistent XLA cache; "" = off. This default follows $JAX_COMPILATION_CACHE_DIR, else
  # $XDG_CACHE_HOME/a2i_jax/xla, where set (`files.enable_compilation_cache`).
  config.compilation_cache_dir = "~/.cache/a2i_jax/xla"

  # Posterior inference by optimisation (infer.py, a2i_jax/inference/). The paper gives no
  # values (docs/reference.md §5); these were chosen on the synthetic validation split
  # (RESULTS.md).
  config.inference = ml_collections.ConfigDict()
  config.inference.steps = 300  # Adam steps on z.
  config.inference.learning_rate = 0.05  # Peak learning rate.
  config.inference.schedule = "cosine"  # "constant" | "cosine" (decays to 0.1x).
  config.inference.prior_weight = 1.0  # lambda on ||z||^2/2; 1 = the model's own prior (MAP).
  config.inference.energy = "auto"  # "auto" | "gaussian" | "smooth_l1" | "l2".
  config.inference.init = "encoder"  # "encoder" | "zeros" | "prior".
  config.inference.restarts = 1  # Starts per image; the lowest energy wins.
  # Optimise y too (attribute inference): False in a run's config (validate_config refuses
  # True), as each use chooses: infer.py's --mode=infer_attributes and
  # inference.infer_attributes turn it on, with a prior fitted to the training attributes.
  config.inference.infer_attributes = False
  # Weight of that fitted Gaussian prior on y (models with attributes: cvae, discvae).
  config.inference.attribute_prior_weight = 1.0
  # 0: all the steps in one call, one lax.scan: rolled on CPU (its program compiles one step,
  # whatever the steps), 5 steps per iteration on GPU / TPU (perf.inference_scan_unroll); a
  # count caps the steps per call (BENCHMARKS.md, "Convolutions in a loop on CPU").
  config.inference.steps_per_call = 0
  # Rows per inference call, images x restarts (images per sampling call): infer.py, evaluation.
  config.inference.batch_size = 256
  return config
