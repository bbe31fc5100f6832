"""Stage 10 plots: CTC posteriorgrams of teachers and students, true word spans shaded.
Why it exists: CTC spike alignments of teachers and students are what the method is about; no ESPnet plot shows them.

For a few utterances of a set, one PNG each: the systems named by --systems
(run.sh: both teachers, the Oracle Teacher fed the true transcript, and the
students of its first seed) stacked; every panel shows per-frame probabilities of the non-blank tokens
(blank in grey; dotted black over images), with the true word spans shaded when the set has a ``word_align`` file.

``--image_input`` (text recognition: features are image columns, e.g. ``(W, 32)`` pixel columns of a
word image): the x axis is the input column; the input is drawn as an image on top and faintly behind
every panel, so each CTC spike sits over the image columns its encoder frame covers (frame t of T
spans columns ``[t W / T, (t + 1) W / T)``); the utterances are spread over the set.
"""

import argparse
import logging
from pathlib import Path

import numpy as np

from espnet_oracle.bin.make_results import LABELS, group_label
from espnet_oracle.bin.score import read_word_align
from espnet_oracle.utils.systems import parse_student_dir

def label_of(name: str) -> str:
    """RESULTS.md's label of a system (make_results), with the student's seed."""
    info = parse_student_dir(name)
    return LABELS.get(name, name) if info is None else f"{group_label(info['group'], info['system'])}, seed {info['seed']}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp", default="exp")
    parser.add_argument("--dump_dir", default="dump/fbank")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--set", default="test")
    parser.add_argument("--num_utts", type=int, default=3)
    parser.add_argument("--image_input", action="store_true",
                        help="features are image columns: draw the input and the spikes over its columns")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--systems", nargs="+", default=["teacher_conventional", "teacher_oracle", "student_nokd_seed1"],
                        help="experiment dir names under --exp, one panel each (missing ones are left out)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from espnet_oracle.utils.inference import FeatureSet, ctc_log_probs, greedy_path, load_model

    systems = [(name, label_of(name)) for name in args.systems if (Path(args.exp) / name / "config.yaml").exists()]
    if not systems:
        raise SystemExit(f"plot_posteriorgram: no trained systems under {args.exp}")
    align_file = Path(args.data_dir) / args.set / "word_align"
    word_align = read_word_align(align_file) if align_file.is_file() else {}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = [(label,) + load_model(Path(args.exp) / name) for name, label in systems]
    data = FeatureSet(Path(args.dump_dir) / args.set, loaded[0][2])
    if args.image_input:  # spread over the set (ids sort by speaker: font family for word images)
        n = min(args.num_utts, len(data.utt_ids))
        chosen = [data.utt_ids[i * len(data.utt_ids) // n] for i in range(n)]
    else:  # Prefer noisy, multi-word utterances: they show alignment differences best.
        chosen = sorted(data.utt_ids, key=lambda u: (len(data.texts[u].split()) < 3, u))[: args.num_utts]
    for utt_id in chosen:
        utt = data.get(utt_id)
        rows = len(loaded) + (1 if args.image_input else 0)
        fig, axes = plt.subplots(rows, 1, figsize=(10, 1.6 * rows), sharex=True)
        axes = list(np.atleast_1d(axes))
        if args.image_input:
            image = np.asarray(utt.feats, dtype=np.float32).T  # (rows, W): row y, column w
            width = image.shape[1]
            axes[0].imshow(image, cmap="gray", aspect="auto", extent=(0, width, image.shape[0], 0))
            axes[0].set_title(f"input ({image.shape[0]} x {width}; x: image column)", fontsize=7, loc="left")
            axes[0].tick_params(labelsize=6)
            axes = axes[1:]
        for ax, (label, model, train_args) in zip(axes, loaded):
            log_probs, lengths, _ = ctc_log_probs(model, [utt])
            probs = log_probs[0, : int(lengths[0])].exp().numpy()
            tokens = list(model.token_list)
            if args.image_input:
                times = (np.arange(probs.shape[0]) + 0.5) * width / probs.shape[0]
                ax.imshow(image, cmap="gray", aspect="auto", alpha=0.25, extent=(0, width, 0, 1.15))
                ids, _ = greedy_path(log_probs[0, : int(lengths[0])].exp(), model.blank_id)  # the path drawn
                label = f"{label}: greedy '{''.join(tokens[k] for k in ids)}'"
            else:
                shift = data.frame_shift_ms(utt, int(lengths[0])) / 1000.0
                times = np.arange(probs.shape[0]) * shift
            for w in word_align.get(utt_id, []):
                ax.axvspan(w.start, w.end, color="tab:orange", alpha=0.15)
                ax.text((w.start + w.end) / 2, 1.02, w.word, ha="center", va="bottom", fontsize=6)
            blank_style = dict(color="k", ls=":") if args.image_input else dict(color="0.7")
            ax.plot(times, probs[:, model.blank_id], lw=0.8, **blank_style)
            for index in range(probs.shape[1]):
                if index != model.blank_id and probs[:, index].max() > 0.3:
                    ax.plot(times, probs[:, index], lw=1.0)
                    peak = int(probs[:, index].argmax())
                    ax.text(times[peak], probs[peak, index], tokens[index].replace("<space>", "_"), fontsize=6)
            ax.set_ylim(0, 1.15)
            ax.set_title(label, fontsize=7, loc="left")
            ax.tick_params(labelsize=6)
        axes[-1].set_xlabel("image column" if args.image_input else "time (s)")
        fig.suptitle(f"{args.set} {utt_id}: {data.texts[utt_id]}" + (" (shaded: true word spans)" if word_align else ""), fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{'spikes' if args.image_input else 'posteriorgram'}_{utt_id}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"plot_posteriorgram: {path}")


if __name__ == "__main__":
    main()
