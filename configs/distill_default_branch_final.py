"""The default model's student, round 2: distill_default_branch's 2-step student into 1 step.

  zoom-enhance distill --config configs/distill_default_branch.py --workdir workdirs/default-branch
  zoom-enhance distill --config configs/distill_default_branch_final.py \
      --workdir workdirs/default-branch-final

The second command is this config: one 2 -> 1 round of 1,600 steps of batch
16 from the first command's 2-step student (`distill.teacher_step` 400, the
end of that round), 36 minutes on a 2-core CPU. Its result is the shipped
student (zoom_enhance/assets/weights/default_student and the default
bundle). The branch trained in round 1 carries on; the trunk stays the
teacher's. Round report (8 dev-val photos, x4, JAX, without the runtime's
back-projection; docs/default_model/distill_report_branch_final_2to1.json):
the 1-step student 26.515 dB PSNR-Y / LPIPS 0.323 at detail 1 and
26.890 / 0.447 at detail 0, against the 2-step student's own 1-step DDIM
26.862 / 0.426; the noise is used (1.81 levels of 255 between two seeds).
To make a student of your own photos, run both commands with
`--config.data.source=folder:PATH` (from the shipped teacher, or from your
fine-tune of it with `--config.distill.teacher_workdir=W` on the first).
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """distill_default_branch's settings, one 2 -> 1 round of 1,600 steps from its 2-step student."""
  del arg
  c = config.sibling(__file__, 'distill_default_branch')
  c.distill.teacher_workdir = 'workdirs/default-branch'
  c.distill.teacher_step = 400
  c.distill.start_steps = 2
  c.distill.end_steps = 1
  c.distill.steps_per_round = 1600
  return c
