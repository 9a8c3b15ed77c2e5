#!/usr/bin/env bash
# The GPU check, for a machine with one CUDA GPU (never run by CI): under 8 minutes on one H100-class card.
#
#   perf/gpu_check.sh [OUT_DIR]          # on the GPU: writes OUT_DIR (default gpu-check-<date>)
#   perf/gpu_check.sh OUT_DIR --cpu      # a tiny run on the CPU: checks the script itself, measures nothing
#
# 1. bf16 equivalence: ours and PEFT's DoRA in bf16 against PEFT's DoRA in fp32 (logits and every gradient,
#    dropout 0 and 0.05) on the LLaMA-7B and LLaMA3-8B blocks: ours within PEFT's own bf16 error.
# 2. The matrix (python -m perf.matrix) at the LLaMA-7B and LLaMA3-8B block shapes in bf16, timed with CUDA
#    events: eager training steps at dropout 0 / paper / lora_branch with the allocator's peak memory per
#    candidate, greedy and 4-beam generation through lm-eval (one item per call); then compiled (inductor) steps of the LLaMA-7B block at dropout 0 and paper dropout.
# Every step has its own time limit, so a slow step costs its own result only; the exit status is 1 if any failed.
# Results: OUT_DIR/{gpu.txt,bf16_*.json,matrix_eager.json,matrix_compiled.json,*.log}; the tables are in the logs,
# and `python -m perf.matrix --render OUT_DIR/matrix_eager.json --markdown docs/performance.md` puts them on the page.
set -uo pipefail

OUT=${1:-gpu-check-$(date -u +%Y%m%d-%H%M)}
MODE=${2:-}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
failed=0

if [ "$MODE" = "--cpu" ]; then
    DEVICE=(--device cpu)
    BLOCKS=(tiny)
    SIZES=(--batch 2 --seq 8)
    EQ_SIZES=(--batch 2 --seq 8)
    MATRIX=(--repetitions 1 --steps 1 --compile-backend eager --threads 1 --no-peak-memory --no-generate)
    COMPILED_MODES=(dropout0)  # the dry run checks the script, not the numbers: the least that runs each step
    LIMITS=(300 300 300)  # a loaded CI machine: the limits are for the GPU
else
    DEVICE=(--device cuda)
    BLOCKS=(llama7b-block llama3-8b-block)
    SIZES=(--batch 4 --seq 1024)
    EQ_SIZES=(--batch 2 --seq 512)
    MATRIX=(--repetitions 3 --steps 5 --generation lm_eval --lm-eval-items 1)  # generation: the target rows
    COMPILED_MODES=(dropout0 paper)
    LIMITS=(60 150 200)
    nvidia-smi >"$OUT/gpu.txt" 2>&1 || { echo "gpu_check: nvidia-smi failed; is a GPU here? (--cpu for a dry run)"; exit 2; }
fi
python -c "import torch, peft, transformers; print('torch', torch.__version__, 'peft', peft.__version__, \
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" >>"$OUT/gpu.txt" 2>&1

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, keep its log, note a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s)"
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        tail -n 40 "$OUT/$name.log"
    else
        echo "gpu_check: $name failed or ran past ${limit}s (exit $?); see $OUT/$name.log"
        tail -n 20 "$OUT/$name.log"
        failed=1
    fi
}

for block in "${BLOCKS[@]}"; do
    step "bf16_$block" "${LIMITS[0]}" python -m perf.bf16_check "${DEVICE[@]}" --workload "$block" "${EQ_SIZES[@]}" \
        --output "$OUT/bf16_$block.json"
done
step matrix_eager "${LIMITS[1]}" python -m perf.matrix "${DEVICE[@]}" --dtype bfloat16 --workloads "${BLOCKS[@]}" \
    "${SIZES[@]}" "${MATRIX[@]}" --no-compile --output "$OUT/matrix_eager.json"
step matrix_compiled "${LIMITS[2]}" python -m perf.matrix "${DEVICE[@]}" --dtype bfloat16 --workloads "${BLOCKS[0]}" \
    "${SIZES[@]}" "${MATRIX[@]}" --compiled-only --modes "${COMPILED_MODES[@]}" --no-generate \
    --output "$OUT/matrix_compiled.json"
echo "gpu_check: results in $OUT ($([ $failed = 0 ] && echo 'every step passed' || echo 'a step FAILED'))"
exit $failed
