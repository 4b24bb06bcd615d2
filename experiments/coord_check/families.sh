#!/usr/bin/env bash
# The coordinate check for every optimizer family, one after another, in the reduced setting of
# experiments/coord_check/README.md ("Every optimizer family"); each run's coord_check.json is copied to
# experiments/coord_check/families/<family>.json and the table is printed by families_table.py.
#   OMP_NUM_THREADS=1 bash experiments/coord_check/families.sh [family ...]   # default: all eight
#   OMP_NUM_THREADS=1 WIDTHS=[64,128] SEEDS=[0,1] bash experiments/coord_check/families.sh muon_kimi  # smaller
set -euo pipefail
cd "$(dirname "$0")/../.."
families=("${@:-adamw lion sgd muon muon_kimi adafactor soap shampoo_grafted}")
for family in ${families[@]}; do
  experiment=coord_check_gpt2_$family
  [ "$family" = adamw ] && experiment=coord_check_gpt2
  dir=outputs/coord_check_families/$family
  start=$(date +%s)
  .venv/bin/python -m src.run experiment=$experiment hydra.run.dir=$dir "coord_check.seeds=${SEEDS:-[0,1,2]}" \
      "coord_check.widths=${WIDTHS:-[64,128,256]}" "coord_check.depths=[4,8,16,32]" coord_check.steps=5 \
      coord_check.judge_step=5 "coord_check.plot_steps=[0,1,5]"
  cp $dir/coord_check.json experiments/coord_check/families/$family.json
  echo "$family: $(( $(date +%s) - start )) s"
done
