#!/usr/bin/env bash
# GPU check of both jobs (run on a CUDA machine from the repository root):
#   bash bench/gpu_check.sh [cpu]     # the optional argument runs the same steps on the CPU
#   EPOCHS=6 STEPS=40 bash bench/gpu_check.sh   # longer particle training (the default is a smoke test)
# Trains each job briefly with --device cuda, predicts, evaluates, and prints one line per step.
set -euo pipefail
DEV=${1:-cuda}
EPOCHS=${EPOCHS:-2} STEPS=${STEPS:-5}
W=$(mktemp -d)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} MICROMETRY_QUIET=1 PYTHONUNBUFFERED=1
m() { python3 -m micrometry "$@"; }
step() { local t0=$SECONDS; echo "== $*"; "$@"; echo "   ($((SECONDS - t0)) s)"; }
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
step m synth sem "$W/sem" --truth "$W/semt" --n-structures 100 --n-sites 20 --images-per-site 10 --n-test 100
step m depth train "$W/sem" --out "$W/drun" --device "$DEV" --epochs 2
step m depth predict "$W/sem" --model "$W/drun" --out "$W/dpred" --device "$DEV"
step m depth evaluate "$W/dpred" "$W/semt/test_depth"
step m synth particles "$W/p" --truth "$W/pt" --n-train 4 --n-test 2 --n-batch 0
for model in center-offset maskrcnn; do
  step m particles train "$W/p/train" --model "$model" --out "$W/prun-$model" --device "$DEV" --epochs "$EPOCHS" --steps-per-epoch "$STEPS"
  step m particles predict "$W/p/test/images" --images-json "$W/p/test/images.json" --model "$W/prun-$model" --out "$W/ppred-$model"
  step m particles evaluate "$W/ppred-$model" "$W/pt/test_annotations.json"
done
echo "gpu check done on $DEV"
