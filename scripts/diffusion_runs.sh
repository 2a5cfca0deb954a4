#!/usr/bin/env bash
# The diffusion run of docs/diffusion.md and its measurements, on full MNIST, one thread each:
#   scripts/diffusion_runs.sh RUNS_DIR MNIST_ROOT
# RUNS_DIR gets the run folders (diffusion/, and gan/ for the comparison at an equal sample count) and
# the reports: diffusion.bound.json (the bound on the 10,000 test digits, 25 timesteps each),
# diffusion.samplers.txt (benchmarks/diffusion_samplers.py: DDIM 10/20/50 steps on 1,000 samples, ancestral
# 1,000 steps on 100; diffusion.samplers-ancestral-1000.txt: ancestral on 1,000), diffusion.samplers-10000.txt (DDIM 50 steps on 10,000 samples),
# gan.eval.json (the GAN's sample quality on 1,000 samples).
set -euo pipefail
runs=${1:?give a folder for the runs}
data=${2:?give the MNIST root (the folder holding MNIST/raw)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common=(--dataset mnist --data-dir "$data" --checkpoint-dir "$runs/checkpoints")
mkdir -p "$runs"
[[ -f $runs/diffusion/last.safetensors ]] ||
    dgm train diffusion --width 16 --epochs 24 --lr 5e-4 --sample-epochs 0,1,2,4,8,24 "${common[@]}" --out "$runs/diffusion"
dgm eval diffusion "$runs/diffusion/last.safetensors" --full --bound-timesteps 25 --samples 0 \
    --data-dir "$data" --result "$runs/diffusion.bound.json" > "$runs/diffusion.bound.txt"
python "$(dirname "$0")/../benchmarks/diffusion_samplers.py" "$runs/diffusion/last.safetensors" --data-dir "$data" \
    --samples 1000 --ancestral-samples 100 --json > "$runs/diffusion.samplers.txt"
python "$(dirname "$0")/../benchmarks/diffusion_samplers.py" "$runs/diffusion/last.safetensors" --data-dir "$data" \
    --samples 1000 --ancestral-samples 1000 --configs ancestral:1000 --json > "$runs/diffusion.samplers-ancestral-1000.txt"
python "$(dirname "$0")/../benchmarks/diffusion_samplers.py" "$runs/diffusion/last.safetensors" --data-dir "$data" \
    --samples 10000 --configs ddim:50 --json > "$runs/diffusion.samplers-10000.txt"
[[ -f $runs/gan/last.safetensors ]] ||
    dgm train gan --ema 0.999 --epochs 30 --sample-epochs 0,30 "${common[@]}" --out "$runs/gan"
dgm eval gan "$runs/gan/last.safetensors" --full --samples 1000 --data-dir "$data" --result "$runs/gan.eval.json" > "$runs/gan.txt"
# classifier-free guidance: a conditional model of the same size, 6 epochs, sampled at guidance 0 and 2
[[ -f $runs/diffusion-conditional/last.safetensors ]] ||
    dgm train diffusion --conditional --width 16 --epochs 6 --lr 5e-4 --sample-epochs 0,6 "${common[@]}" \
        --out "$runs/diffusion-conditional"
for w in 0 2; do
    dgm eval diffusion "$runs/diffusion-conditional/last.safetensors" --full --bound-timesteps 0 --samples 1000 --steps 50 \
        --guidance "$w" --data-dir "$data" --result "$runs/conditional-guidance-$w.eval.json" > "$runs/conditional-guidance-$w.txt"
done
