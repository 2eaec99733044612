#!/usr/bin/env bash
# The GPU check of the paper setup: every GPU figure in one run, printed (and kept as JSON).
#
# Run on a machine with one CUDA GPU, from the project root (a few minutes on an H100):
#   benchmarks/gpu_check.sh [OUT_DIR]                 # default OUT_DIR: artifacts/gpu-check
#   srun --gpus=1 --time=15 benchmarks/gpu_check.sh   # from a SLURM login node
#
# 1. training throughput, one GPU, the paper's per-GPU batch (train.batch_size / executor.slurm.tasks_per_node
#    of profiles/paper.yaml: 16 / 4), 544x544, bf16 autocast, channels_last, synthetic batches:
#    ResNet-101 + GRAr (Table 1's main row) and ResNet-50 + GRAr (Tables 2 and 3), 20 steps after 5;
#    images/s, peak memory, and whether every loss term stayed finite (exit 1 if not);
# 2. the Table 3 module benchmark on CUDA with the paper profile's bench settings (float32, as the paper
#    states no precision), then in bfloat16 autocast.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-artifacts/gpu-check}
mkdir -p "$out"
grar=${GRAR:-.venv/bin/grar}
paper=profiles/paper.yaml
python=${PYTHON:-.venv/bin/python}
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here: run this on a GPU node')"
"$python" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
for backbone in resnet101 resnet50; do
  echo
  "$grar" bench train --params "$paper" --device cuda --backbone "$backbone" --json "$out/train-$backbone.json"
done
echo
"$grar" bench modules --params "$paper" --device cuda --json "$out/modules-float32.json"
echo
"$grar" bench modules --params "$paper" --device cuda --set bench.dtype=bfloat16 --json "$out/modules-bfloat16.json"
echo
echo "gpu check done: figures in $out/"
