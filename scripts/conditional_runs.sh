#!/usr/bin/env bash
# Conditional models beside unconditional ones trained the same way (docs/conditional.md):
# each pair is trained on full MNIST with one thread, one after the other, then evaluated.
#   scripts/conditional_runs.sh RUNS_DIR MNIST_ROOT
# RUNS_DIR gets one run folder per model (runs/<model>-<conditional|unconditional>) and the eval
# reports (<model>-<kind>.eval.json, and the printed tables in .txt); MNIST_ROOT holds MNIST/raw.
set -euo pipefail
runs=${1:?give a folder for the runs}
data=${2:?give the MNIST root (the folder holding MNIST/raw)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$runs"
common=(--dataset mnist --data-dir "$data" --checkpoint-dir "$runs/checkpoints")

train_pair() {  # model, then its options
    local model=$1; shift
    for kind in unconditional conditional; do
        local extra=(); [[ $kind == conditional ]] && extra=(--conditional)
        [[ -f $runs/$model-$kind/last.safetensors ]] ||
            dgm train "$model" "$@" "${extra[@]}" "${common[@]}" --out "$runs/$model-$kind" 2> "$runs/$model-$kind.train.log"
        dgm eval "$model" "$runs/$model-$kind/last.safetensors" "${eval_options[@]}" --data-dir "$data" \
            --result "$runs/$model-$kind.eval.json" > "$runs/$model-$kind.txt" 2> "$runs/$model-$kind.eval.log"
    done
}

eval_options=(--samples 10000)
train_pair gan --ema 0.999 --epochs 10 --sample-epochs 0,10
eval_options=(--iw-samples 1000 --mc-samples 0 --samples 10000)
train_pair vae --epochs 20 --sample-epochs 0,20
eval_options=(--dequantization-draws 1 --samples 10000)
train_pair flow --epochs 5 --sample-epochs 0,5
