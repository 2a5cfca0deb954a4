#!/usr/bin/env bash
# Every model on Fashion-MNIST, measured in Fashion-MNIST's own feature space (docs/metrics.md):
# each model is trained with one thread, one after the other, then evaluated with the shipped
# Fashion-MNIST classifier, which dgm eval picks from the checkpoint's dataset.
#   scripts/fashion_runs.sh RUNS_DIR [FASHION_ROOT]
# RUNS_DIR gets one run folder per model and the eval reports (<model>.eval.json, the printed tables
# in <model>.txt); FASHION_ROOT holds the four .gz files (default: Debian's dataset-fashion-mnist,
# /usr/share/datasets/fashion-mnist, which dgm finds by itself).
set -euo pipefail
runs=${1:?give a folder for the runs}
data=(); [[ -n ${2:-} ]] && data=(--data-dir "$2")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$runs"
common=(--dataset fashion-mnist "${data[@]}" --checkpoint-dir "$runs/checkpoints")

train_and_eval() {  # model, then its options
    local model=$1; shift
    [[ -f $runs/$model/last.safetensors ]] ||
        dgm train "$model" "$@" "${common[@]}" --out "$runs/$model" 2> "$runs/$model.train.log"
    dgm eval "$model" "$runs/$model/last.safetensors" --full "${eval_options[@]}" "${data[@]}" \
        --result "$runs/$model.eval.json" > "$runs/$model.txt" 2> "$runs/$model.eval.log"
}

eval_options=(--iw-samples 1000 --mc-samples 0 --samples 10000)
train_and_eval vae --epochs 40 --sample-epochs 0,40
eval_options=(--samples 10000)
train_and_eval gan --ema 0.999 --epochs 30 --sample-epochs 0,30
eval_options=(--dequantization-draws 1 --samples 10000)
train_and_eval flow --epochs 10 --sample-epochs 0,10
