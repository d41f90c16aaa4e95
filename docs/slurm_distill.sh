#!/bin/bash
# Distil a pruned 8B-shape student from a 14B-shape teacher on 2 nodes of 8 GPUs with FSDP2 (README,
# "More than one process"). Not run by this project (no GPU here): each line is the command tested on
# CPU in tests/test_distributed.py, with torchrun's multi-node rendezvous around it.
#
#   sbatch docs/slurm_distill.sh /data/ministral-3-14b /data/student-8b /data/corpus.txt /data/runs/8b
#
# Before: `minimistral prune --checkpoint TEACHER --out STUDENT --layers 34 --hidden 4096 --ffn 14336`
# (one process, any node: it streams one layer at a time when the model is large), and
# `minimistral plan --teacher ministral-3-14b --student ministral-3-8b --gpus 16 --gpu-memory 80`.
# The corpus is encoded once, in the job's first step, into a windows file every rank reads.
#SBATCH --job-name=minimistral-distill
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --requeue
set -euo pipefail
TEACHER=$1 STUDENT=$2 DATA=$3 OUT=$4
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
WINDOWS="$OUT/windows.safetensors"

# Encode the corpus once with the student's tokenizer (one process; skipped when a requeued job has it).
[ -f "$WINDOWS" ] || srun --nodes 1 --ntasks 1 minimistral tokenize --checkpoint "$STUDENT" --data "$DATA" \
    --tokens 200000000 --seq-len 16384 --out "$WINDOWS"

# One torchrun per node; they meet at the head node. A requeued job runs the same line and resumes
# from $OUT/checkpoint (any number of processes).
srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 8 \
    --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$HEAD:29500" \
    -m minimistral distill --student "$STUDENT" --teacher "$TEACHER" --data "$WINDOWS" \
    --tokens 200000000 --seq-len 16384 --batch-size 16 --steps 760 --lr 1e-4 \
    --fsdp --activation-checkpointing --out "$OUT"
