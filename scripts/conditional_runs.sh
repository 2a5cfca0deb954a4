#!/usr/bin/env bash
# Conditional models beside unconditional ones trained the same way (docs/conditional.md):
# each pair is trained on full MNIST with one thread, one after the other, then evaluated.
#   scripts/conditional_runs.sh RUNS_DIR MNIST_ROOT
# RUNS_DIR gets one run folder per model (runs/<name>-<kind>, kind unconditional, conditional, or
# conditional-prior for a flow conditioned by its class prior alone) and the eval reports
# (<name>-<kind>.eval.json, and the printed tables in .txt); MNIST_ROOT holds MNIST/raw.
# The unconditional flow-ms run is the 3-epoch multi-scale flow kept in git at commit aa5544c (trained the same way).
set -euo pipefail
runs=${1:?give a folder for the runs}
data=${2:?give the MNIST root (the folder holding MNIST/raw)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$runs"
common=(--dataset mnist --data-dir "$data" --checkpoint-dir "$runs/checkpoints")

run() {  # name, kind, model, then its training options (eval_options say how it is evaluated)
    local name=$1 kind=$2 model=$3; shift 3
    [[ -f $runs/$name-$kind/last.safetensors ]] ||
        dgm train "$model" "$@" "${common[@]}" --out "$runs/$name-$kind" 2> "$runs/$name-$kind.train.log"
    dgm eval "$model" "$runs/$name-$kind/last.safetensors" --full "${eval_options[@]}" --data-dir "$data" \
        --result "$runs/$name-$kind.eval.json" > "$runs/$name-$kind.txt" 2> "$runs/$name-$kind.eval.log"
}

train_pair() {  # model, then its options
    local model=$1; shift
    run "$model" unconditional "$model" "$@"
    run "$model" conditional "$model" "$@" --conditional
}

eval_options=(--samples 10000)
train_pair gan --ema 0.999 --epochs 10 --sample-epochs 0,10
eval_options=(--iw-samples 1000 --mc-samples 0 --samples 10000)
train_pair vae --epochs 20 --sample-epochs 0,20
eval_options=(--dequantization-draws 1 --samples 10000)
train_pair flow --epochs 5 --sample-epochs 0,5
run flow conditional-prior flow --epochs 5 --sample-epochs 0,5 --conditional --conditioning prior
run flow-ms conditional flow --arch realnvp-ms --epochs 3 --max-grad-norm 100 --sample-epochs 0,3 --conditional
# the same run trained on to 10 epochs (the model shipped before the 20-epoch one below); after this the
# run folder holds the 10-epoch model, so a second pass of this script evaluates that one as flow-ms-conditional
dgm train flow --resume "$runs/flow-ms-conditional" --epochs 10 --data-dir "$data" 2> "$runs/flow-ms-conditional-epoch10.train.log"
for temperature in 1 0.7; do
    dgm eval flow "$runs/flow-ms-conditional/last.safetensors" --full --dequantization-draws "$([[ $temperature == 1 ]] && echo 1 || echo 0)" \
        --samples 10000 --temperature "$temperature" --data-dir "$data" \
        --result "$runs/flow-ms-conditional-epoch10.t$temperature.eval.json" > "$runs/flow-ms-conditional-epoch10.t$temperature.txt"
done
# the pretrained flow-conditional: one run of
# 20 epochs (the same options and constant learning rate as the 3-then-10 run above), at temperature 1 and 0.7
eval_options=(--dequantization-draws 1 --samples 10000)
run flow-ms-epoch20 conditional flow --arch realnvp-ms --epochs 20 --max-grad-norm 100 --sample-epochs 0,20 --conditional
dgm eval flow "$runs/flow-ms-epoch20-conditional/last.safetensors" --full --dequantization-draws 0 --samples 10000 --temperature 0.7 \
    --data-dir "$data" --result "$runs/flow-ms-epoch20-conditional.t07.eval.json" > "$runs/flow-ms-epoch20-conditional.t07.txt"
git -C "$(dirname "$0")" show aa5544c:checkpoints/flow-ms-epoch3.safetensors > "$runs/flow-ms-epoch3.safetensors"
dgm eval flow "$runs/flow-ms-epoch3.safetensors" --full "${eval_options[@]}" --data-dir "$data" \
    --result "$runs/flow-ms-unconditional.eval.json" > "$runs/flow-ms-unconditional.txt"
