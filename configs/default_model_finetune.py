"""The default teacher's second stage: the 14,000-step teacher fine-tuned on 96-px crops, at t = 1 mostly.

  zoom-enhance train --config configs/default_model_finetune.py --workdir workdirs/default-teacher-ft \
      --config.train.init_from=workdirs/default-teacher
  zoom-enhance train --config configs/default_model_finetune.py --workdir workdirs/default-teacher-ft2 \
      --config.train.init_from=workdirs/default-teacher-ft --config.train.lr=1e-4 \
      --config.train.warmup_steps=20
  zoom-enhance save-weights --workdir workdirs/default-teacher-ft2 \
      --out zoom_enhance/assets/weights/default_teacher

The first command starts from the EMA parameters of configs/default_model.py's
run (workdirs/default-teacher, 14,000 steps on 64-px crops); the second
continues from the first at a third of the learning rate. Its result is the
shipped teacher (zoom_enhance/assets/weights/default_teacher): the trunk of
the shipped student (configs/distill_default_branch.py), whose fidelity end
(`--detail 0`) is this teacher's 1-step output. Each command is 3,000 steps
of batch 16 on crops of 96 px instead of 64 (more of each crop is far from
its border, as in the 192-px tiles the runtime runs), nine examples in ten
at t = 1, where the 1-step output is a regression on the LR image; the other
examples keep the first stage's noise levels, so it stays a diffusion
teacher. 18 and 16 minutes on a 2-core CPU. Measured on dev-val (x4, int8,
1 step, the runtime, detail 0): 26.685 dB PSNR-Y for the 14,000-step
teacher, 26.708 after the first command (the same 3,000 steps on 64-px
crops: 26.699), 26.719 / LPIPS 0.443 after the second; with the runtime's
back-projection at detail 0 (imaging.consistency, 2 rounds) 26.746 / 0.436.
To fine-tune the shipped teacher on your own photos, pass
`--config.train.init_from=zoom_enhance/assets/weights/default_teacher` and
`--config.data.source=folder:PATH`.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """default_model's settings from its first stage: larger crops, t = 1 mostly, a smaller learning rate."""
  del arg
  c = config.sibling(__file__, 'default_model')
  c.train.init_from = 'workdirs/default-teacher'
  c.data.patch_size = 96
  c.diffusion.max_time_prob = 0.9
  c.train.num_steps = 3000
  c.train.lr = 3e-4
  c.train.warmup_steps = 50
  c.train.ema_decay = 0.998
  c.train.checkpoint_every = 1000
  c.train.sample_every = 0
  return c
