#!/usr/bin/env bash
# The default model, one command per half, each resumable (run it again after a stop):
#   bash launch/default_model.sh teacher [--config.data.source=folder:PHOTOS ...]   # 113 min on 2 CPU cores
#   bash launch/default_model.sh student [--config.data.source=folder:PHOTOS ...]   #  46 min on 2 CPU cores
# teacher: configs/default_model.py (14,000 steps), then configs/default_model_finetune.py twice, and the
#   result's EMA parameters written to $TEACHER (default zoom_enhance/assets/weights/default_teacher).
# student: configs/distill_default_branch.py (4 -> 2 steps) from $TEACHER, then
#   configs/distill_default_branch_final.py (2 -> 1), the weights to $STUDENT and the bundle to $BUNDLE.
# Extra flags go to every stage. Workdirs are under $WORKDIRS (default workdirs/).
set -euo pipefail
cd "$(dirname "$0")/.."
W="${WORKDIRS:-workdirs}"
TEACHER="${TEACHER:-zoom_enhance/assets/weights/default_teacher}"
STUDENT="${STUDENT:-zoom_enhance/assets/weights/default_student}"
BUNDLE="${BUNDLE:-zoom_enhance/assets/default_bundle}"
stage="${1:-}"
shift || true
case "$stage" in
  teacher)
    zoom-enhance train --config configs/default_model.py --workdir "$W/default-teacher" "$@"
    zoom-enhance train --config configs/default_model_finetune.py --workdir "$W/default-teacher-ft" \
      --config.train.init_from="$W/default-teacher" "$@"
    zoom-enhance train --config configs/default_model_finetune.py --workdir "$W/default-teacher-ft2" \
      --config.train.init_from="$W/default-teacher-ft" --config.train.lr=1e-4 --config.train.warmup_steps=20 "$@"
    zoom-enhance save-weights --workdir "$W/default-teacher-ft2" --out "$TEACHER"
    ;;
  student)
    zoom-enhance distill --config configs/distill_default_branch.py --workdir "$W/default-branch" \
      --config.distill.teacher_workdir="$TEACHER" "$@"
    zoom-enhance distill --config configs/distill_default_branch_final.py --workdir "$W/default-branch-final" \
      --config.distill.teacher_workdir="$W/default-branch" "$@"
    zoom-enhance save-weights --workdir "$W/default-branch-final" --out "$STUDENT"
    zoom-enhance export --workdir "$W/default-branch-final" --out "$BUNDLE" \
      --quant fp16,int8,int8_full --tile 192 --overlap 24 --cpu-quant int8
    ;;
  *)
    echo "usage: bash launch/default_model.sh teacher|student [--config.FIELD=VALUE ...]" >&2
    exit 2
    ;;
esac
