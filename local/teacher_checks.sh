#!/usr/bin/env bash
# Two checks of the digits recipe's teachers (issue 11), in their own dirs beside a normal run:
#  (1) teacher seeds: both teachers trained with each of --seeds (stages 4-6: accuracy, copy probe,
#      epochs to the conventional teacher's best dev CER), so the Oracle Teacher's advantage can be
#      told from one run's accident; the recipe's own teachers use ESPnet's default seed 0;
#  (2) units: the conventional teacher with each of --units (word = the recipe default, char, bpe)
#      through local/model_sweep.sh (own dump_<unit>/ for stages 2-3, greedy WER per SNR).
# Run from the recipe dir. Stages 1-3 of the default run are reused when up to date.
#   local/teacher_checks.sh [--seeds "0 1"] [--units "word char bpe"] [--ngpu 0] [--nj 2] [--out exp_checks]
# Outputs: <out>/seed<s>/teacher_eval/summary.tsv, <out>/units_<u>/RESULTS.md, <out>/SUMMARY.md.
# All jobs run side by side (one core each; with --ngpu 1 all on the one GPU).
set -euo pipefail
command_line="$0 $*"
seeds="0 1" units="word char bpe" ngpu=0 nj=2 out=exp_checks
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds|--units|--ngpu|--nj|--out) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "${out}"
echo "$(date '+%F %T') cd $(pwd) && ${command_line}" >> "${out}/commands.log"
log() { echo "$(date '+%H:%M:%S') teacher_checks: $*"; }

log "stages 1-3 (word units; reused when up to date)"
./run.sh --stage 1 --stop_stage 3 --nj "${nj}" > "${out}/prepare.log" 2>&1
prep=()
for u in ${units}; do
    [ "${u}" = word ] && continue
    log "stages 2-3 with ${u} units (dump_${u}/)"
    ./run.sh --stage 2 --stop_stage 3 --nj "${nj}" --token_type "${u}" --dump "dump_${u}" > "${out}/prepare_${u}.log" 2>&1 &
    prep+=($!)
done
for p in "${prep[@]}"; do wait "${p}" || { echo "$0: stages 2-3 failed; see ${out}/prepare_*.log" >&2; exit 1; }; done

pids=() failed=0
for s in ${seeds}; do
    log "teachers, seed ${s} -> ${out}/seed${s}"
    OMP_NUM_THREADS=1 ./run.sh --stage 4 --stop_stage 6 --nj 1 --ngpu "${ngpu}" --exp "${out}/seed${s}" \
        --teacher_train_opts "--seed ${s}" > "${out}/seed${s}.log" 2>&1 &
    pids+=($!)
done
for u in ${units}; do
    dump=dump; [ "${u}" = word ] || dump=dump_${u}
    log "conventional teacher, ${u} units -> ${out}/units_${u}"
    OMP_NUM_THREADS=1 local/model_sweep.sh --configs conf/train_teacher_conventional.yaml --seeds 0 \
        --dump "${dump}" --out "${out}/units_${u}" --run_opts "--token_type ${u} --ngpu ${ngpu}" \
        > "${out}/units_${u}.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "${p}" || failed=$((failed + 1)); done

python3 - "${out}" ${seeds} <<'PY'
import csv, sys
from pathlib import Path
out, seeds = Path(sys.argv[1]), sys.argv[2:]
lines = ["# Teacher checks (local/teacher_checks.sh)", "",
         "## Teacher seeds (stage 6, greedy WER %; follow rate: copy probe, share of deciding words)", "",
         "| seed | set | conventional WER | Oracle WER (true transcript) | Oracle follow rate | chance | Oracle zeroed-audio CER |",
         "|---|---|---|---|---|---|---|"]
for s in seeds:
    f = out / f"seed{s}" / "teacher_eval" / "summary.tsv"
    if not f.is_file():
        lines.append(f"| {s} | failed or unfinished | | | | | |"); continue
    v = {}
    for r in csv.DictReader(f.open(), delimiter="\t"):
        v[(r["system"], r["set"], r["probe"], r["metric"])] = float(r["value"])
    for x in sorted({k[1] for k in v}):
        g = lambda *k: v.get(k)
        fmt = lambda a, pct=False: "–" if a is None else (f"{100 * a:.1f} %" if pct else f"{a:.2f}")
        lines.append(f"| {s} | {x} | {fmt(g('teacher_conventional', x, 'audio_only', 'wer'))} "
                     f"| {fmt(g('teacher_oracle', x, 'true_transcript', 'wer'))} "
                     f"| {fmt(g('teacher_oracle', x, 'other_transcript', 'follow_rate'), True)} "
                     f"| {fmt(g('teacher_conventional', x, 'other_transcript_chance', 'follow_rate'), True)} "
                     f"| {fmt(g('teacher_oracle', x, 'zeroed_source', 'cer'))} |")
    ratio = out / f"seed{s}.log"
    lines += [f"", f"seed {s}: " + "; ".join(l.strip() for l in ratio.read_text().splitlines() if "time-to-CER" in l), ""]
for d in sorted(out.glob("units_*")):
    if (d / "RESULTS.md").is_file():
        lines += ["", f"## Units: {d.name[6:]}", ""] + (d / "RESULTS.md").read_text().splitlines()[4:]
(out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
[ "${failed}" -eq 0 ] || { echo "$0: ${failed} job(s) failed; see ${out}/*.log" >&2; exit 1; }
