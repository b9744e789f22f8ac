#!/usr/bin/env bash
# The default model, one command per half, each resumable (run it again after a stop):
#   bash launch/default_model.sh teacher [--config.data.source=folder:PHOTOS ...]   # 113 min on 2 CPU cores
#   bash launch/default_model.sh student [--config.data.source=folder:PHOTOS ...]   #  40 min on 2 CPU cores
# teacher: configs/default_model.py (14,000 steps), then configs/default_model_finetune.py twice, and the
#   result's EMA parameters written to $TEACHER_OUT (default workdirs/default_teacher).
# student: configs/distill_natural.py (2 -> 1 steps, the full-resolution detail branch trained with a
#   discriminator) from $TEACHER (default: the shipped teacher), the weights to $STUDENT (default
#   workdirs/default_student) and the bundle to $BUNDLE (default workdirs/default_bundle).
# Nothing is written into the package: copy the results over zoom_enhance/assets/ to ship them. (The first shipped
#   student, configs/distill_default_branch.py then distill_default_branch_final.py, drew a lattice.)
# Extra flags go to every stage. Workdirs are under $WORKDIRS (default workdirs/).
set -euo pipefail
cd "$(dirname "$0")/.."
W="${WORKDIRS:-workdirs}"
TEACHER="${TEACHER:-zoom_enhance/assets/weights/default_teacher}"
TEACHER_OUT="${TEACHER_OUT:-$W/default_teacher}"
STUDENT="${STUDENT:-$W/default_student}"
BUNDLE="${BUNDLE:-$W/default_bundle}"
stage="${1:-}"
shift || true
case "$stage" in
  teacher)
    zoom-enhance train --config configs/default_model.py --workdir "$W/default-teacher" "$@"
    zoom-enhance train --config configs/default_model_finetune.py --workdir "$W/default-teacher-ft" \
      --config.train.init_from="$W/default-teacher" "$@"
    zoom-enhance train --config configs/default_model_finetune.py --workdir "$W/default-teacher-ft2" \
      --config.train.init_from="$W/default-teacher-ft" --config.train.lr=1e-4 --config.train.warmup_steps=20 "$@"
    zoom-enhance save-weights --workdir "$W/default-teacher-ft2" --out "$TEACHER_OUT"
    ;;
  student)
    zoom-enhance distill --config configs/distill_natural.py --workdir "$W/natural" \
      --config.distill.teacher_workdir="$TEACHER" "$@"
    zoom-enhance save-weights --workdir "$W/natural" --out "$STUDENT"
    zoom-enhance export --workdir "$W/natural" --out "$BUNDLE" \
      --quant fp16,int8,int8_full --tile 192 --overlap 24 --cpu-quant int8
    ;;
  *)
    echo "usage: bash launch/default_model.sh teacher|student [--config.FIELD=VALUE ...]" >&2
    exit 2
    ;;
esac
