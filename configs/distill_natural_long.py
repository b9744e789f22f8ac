"""distill_natural's run continued: 1,500 more steps with a 5x stronger discriminator and second-order data.

  zoom-enhance distill --config configs/distill_natural.py --workdir workdirs/natural
  zoom-enhance distill --config configs/distill_natural_long.py --workdir workdirs/natural

The second command resumes the first's workdir at step 1,000 (its last
checkpoint, critic and Adam state included) and trains the round on to
2,500 steps; the round's learning-rate schedule is then the 2,500-step one,
so the run restarts at about 2/3 of the peak rate and decays to zero.
Changes against distill_natural (issue 29):
- distill.adversarial_weight 0.2 -> 1.0: the critic's generator loss was
  about 3% of the image loss in the first 1,000 steps (metrics.jsonl).
- data.second_order_prob 0.15: Real-ESRGAN's second-order degradations
  (blur, resize, noise, JPEG, twice) beside the first-order realistic ones.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """distill_natural, 2,500 steps, adversarial weight 1.0, 15% second-order degradations."""
  del arg
  c = config.sibling(__file__, 'distill_natural')
  c.distill.steps_per_round = 2500
  c.distill.adversarial_weight = 1.0
  c.data.second_order_prob = 0.15
  return c
