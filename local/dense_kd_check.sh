#!/usr/bin/env bash
# Retrain trained KD students from the same top-k dump through the dense data type
# (teacher_posterior: the loader expands each frame to V log-probs, the KL runs over all of them),
# the way students read dumps before the closed-form top-k loss (2026-12-02); greedy WER per seed.
# Each student's options are those of its own stamp.json with the data type swapped, one thread
# each, two side by side; then mean and std over the seeds, beside the originals.
# Run from the recipe dir after a whole run:
#   local/dense_kd_check.sh [--exp exp] [--system student_convkd_a0.5_t1_nonblank] [--seeds "1 2 3"]
#                           [--sets "test test_unseen"] [--out exp_dense_check]
set -euo pipefail
exp=exp system=student_convkd_a0.5_t1_nonblank seeds="1 2 3" sets="test test_unseen" out=exp_dense_check
while [ $# -gt 0 ]; do
    case "$1" in
        --exp|--system|--seeds|--sets|--out) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
# shellcheck disable=SC1091
. ./path.sh
export OMP_NUM_THREADS=1
mkdir -p "${out}"
train() {  # train SEED
    local original=${exp}/${system}_seed$1 dir=${out}/${system}_seed$1
    # the stamp's config, then its options with the data type swapped, one a line
    mapfile -t stamp < <(python -c 'import json, sys
stamp = json.load(open(sys.argv[1]))
print(stamp["config"])
for option in stamp["options"]:
    print(option.replace("teacher_topk_post,teacher_topk_posterior", "teacher_post,teacher_posterior"))' \
        "${original}/stamp.json")
    python -m espnet_oracle.bin.asr_train --config "${stamp[0]}" --output_dir "${dir}" "${stamp[@]:1}" \
        > "${dir}.log" 2>&1
    python -m espnet_oracle.bin.export_student --exp_dir "${dir}" >> "${dir}.log" 2>&1
}
running=0
for s in ${seeds}; do
    train "${s}" &
    running=$((running + 1))
    if [ "${running}" -ge 2 ]; then wait -n; running=$((running - 1)); fi
done
wait
for s in ${seeds}; do  # a failed training names its log here, not later as a failed decode
    [ -f "${out}/${system}_seed${s}/config.inference.yaml" ] || { echo "$0: seed ${s} failed; see ${out}/${system}_seed${s}.log" >&2; exit 1; }
done
dirs=$(for s in ${seeds}; do echo "${system}_seed${s}"; done)
# shellcheck disable=SC2086
python -m espnet_oracle.bin.decode --exp "${out}" --systems ${dirs} --dump_dir dump/fbank --sets "${sets}" \
    --modes greedy --nj 2 > "${out}/decode.log" 2>&1
for d in ${dirs}; do
    for x in ${sets}; do
        python -m espnet_oracle.bin.score --data_dir "data/${x}" --decode_dir "${out}/${d}/decode_${x}_greedy" > /dev/null
    done
done
python - "${exp}" "${out}" "${system}" "${sets}" ${seeds} <<'PY'
import sys
from pathlib import Path
from espnet_oracle.bin.make_results import fmt, scores  # the RESULTS.md tables' mean ± std over seeds
exp, out, system, sets, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5:]
for label, root in (("top-k (the run's)", exp), ("dense data type", out)):
    cells = []
    for x in sets:
        wers = [scores(Path(root) / f"{system}_seed{s}", x, "greedy")["wer"] for s in seeds]
        cells.append(f"{x} {fmt(wers)} ({' '.join(f'{w:.2f}' for w in wers)})")
    print(f"{system}, {label}: " + "; ".join(cells))
PY
