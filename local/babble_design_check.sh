#!/usr/bin/env bash
# Task-design check (issue 11): one trained model scored on test sets whose babble is built both
# ways -- talkers other than the target speaker (the default) and any speaker of the pool, the
# target's own voice included (the old design) -- to measure how adversarial own-voice babble is.
# Run from the recipe dir after stage 1:
#   local/babble_design_check.sh --model_dir exp/teacher_conventional [--fs 8000 --n_mels 40] [--out exp/babble_check]
# Writes <out>/RESULTS.md (WER per noise type and SNR, both designs); the data of both designs are
# rebuilt under <out>/data_<design>/ with the recipe's defaults (same seed, sets test and test_unseen).
set -euo pipefail
model_dir="" fs=8000 n_mels=40 out=exp/babble_check fsdd=${FSDD:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --model_dir|--fs|--n_mels|--out|--fsdd) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -f "${model_dir}/config.yaml" ] || { echo "$0: --model_dir must be a trained model dir (config.yaml)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC1091
. "${root}/path.sh"
[ -f db.sh ] && . ./db.sh
fsdd=${fsdd:-${FSDD:?set FSDD or pass --fsdd}}
mkdir -p "${out}"
echo "$(date '+%F %T') cd $(pwd) && $0 --model_dir ${model_dir} --fs ${fs} --n_mels ${n_mels} --out ${out}" >> "${out}/commands.log"
for design in other any; do
    data=${out}/data_${design}
    python local/prepare_fsdd_digits.py --fsdd "${fsdd}" --data_dir "${data}" --num_train 0 --num_dev 0 \
        --babble_speakers "${design}" --no_progress
    for x in test test_unseen; do
        feats=${out}/dump_${design}/${x}
        if [ ! -s "${feats}/feats.scp" ]; then
            python -m espnet_oracle.bin.make_features --wav_scp "${data}/${x}/wav.scp" --out_dir "${feats}" \
                --fs "${fs}" --n_mels "${n_mels}"
            mv "${feats}/feats.1.scp" "${feats}/feats.scp"; mv "${feats}/feats_shape.1" "${feats}/feats_shape"
            cp "${data}/${x}/text" "${feats}/text"
        fi
    done
    # a private experiment dir per design: decode dirs land next to the (linked) model files
    sys=${out}/exp_${design}/model
    mkdir -p "${sys}"
    for f in "${model_dir}"/*; do [ -d "${f}" ] || ln -sfn "$(readlink -f "${f}")" "${sys}/$(basename "${f}")"; done
    python -m espnet_oracle.bin.decode --exp "${out}/exp_${design}" --systems model --dump_dir "${out}/dump_${design}" \
        --sets "test test_unseen" --modes greedy
    for x in test test_unseen; do
        python -m espnet_oracle.bin.score --data_dir "${data}/${x}" --decode_dir "${sys}/decode_${x}_greedy" \
            --condition_files utt2snr utt2noise
    done
done
python - "${out}" "${model_dir}" <<'PY'
import sys
from pathlib import Path
out, model = Path(sys.argv[1]), sys.argv[2]
def table(design, x):
    rows = {}
    for line in (out / f"exp_{design}/model/decode_{x}_greedy/score_conditions.tsv").read_text().splitlines()[1:]:
        cond, n, _, wer = line.split("\t")
        rows[cond] = (n, wer)
    return rows
conds = ["all", "noise=clean", "noise=white", "noise=pink", "noise=babble"] + [f"snr={s},noise=babble" for s in (20, 15, 10, 5, 0)]
lines = ["# Babble design check (greedy CTC WER %, one model)", "", f"Model: `{model}`. *other*: babble talkers are",
         "speakers other than the target (default design); *any*: any recording of the pool, the target's own voice",
         "included (old design). Utterances n per cell in brackets.", "",
         "| set | design | " + " | ".join(c.replace("noise=", "").replace("snr=", "").replace(",", " dB ") for c in conds) + " |", "|---|---|" + "---|" * len(conds)]
for x in ("test", "test_unseen"):
    for design in ("other", "any"):
        t = table(design, x)
        cells = [f"{t[c][1]} ({t[c][0]})" if c in t else "–" for c in conds]
        lines.append(f"| {x} | {design} | " + " | ".join(cells) + " |")
(out / "RESULTS.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
