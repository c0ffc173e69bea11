# Copyright (c) davpt-seg contributors. Apache-2.0.
"""One picture of ``tools/prompt_influence.py`` results: per layer, the
share of patch attention on the prompts, the output cosine with the frozen
backbone, and (optionally) the training loss curves of an accuracy-bench
report.

    python tools/plot_prompt_influence.py A.json B.json ... --labels A B ...
        --out FILE.png [--curves RESULTS.json --curve-variants heads vpt]
"""
import argparse
import json
import statistics

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('results', nargs='+', help='prompt_influence.py JSONs')
    p.add_argument('--labels', nargs='+', required=True)
    p.add_argument('--out', required=True, help='FILE.png')
    p.add_argument('--curves', help='an accuracy-bench results.json')
    p.add_argument('--curve-variants', nargs='+', default=['heads', 'vpt'])
    args = p.parse_args(argv)
    if len(args.labels) != len(args.results):
        p.error(f'{len(args.labels)} labels for {len(args.results)} files')
    return args


def mean_curves(path: str, variants) -> dict:
    """variant -> (steps, mean training loss over the report's seeds)."""
    with open(path) as f:
        runs = json.load(f)['runs']
    out = {}
    for variant in variants:
        curves = [r['loss_curve'] for r in runs if r['variant'] == variant]
        if curves:
            steps = sorted(int(s) for s in curves[0])
            out[variant] = (steps, [statistics.fmean(
                c[str(s)] for c in curves if str(s) in c) for s in steps])
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    data = []
    for path in args.results:
        with open(path) as f:
            data.append(json.load(f))
    panels = 3 if args.curves else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6))
    for label, d in zip(args.labels, data):
        shares = d['attention_to_prompts']
        axes[0].plot(range(len(shares)), shares, marker='o', label=label)
    axes[0].set(xlabel='layer',
                ylabel='patch attention on prompts\n(gated: tanh(gate))',
                title='Patch-query attention on prompts')
    axes[0].legend(fontsize=7, loc='upper right', framealpha=0.7)
    layers = sorted({int(k) for d in data for k in d['output_cosine']})
    width = 0.8 / len(data)
    for i, (label, d) in enumerate(zip(args.labels, data)):
        values = [d['output_cosine'].get(str(k), float('nan'))
                  for k in layers]
        bars = axes[1].bar([j + i * width for j in range(len(layers))],
                           values, width, label=label)
        axes[1].bar_label(bars, fmt='%.2f', fontsize=7)
    axes[1].axhline(0, color='k', lw=0.5)
    axes[1].set(xticks=[j + 0.4 - width / 2 for j in range(len(layers))],
                xticklabels=[f'layer {k}' for k in layers],
                ylim=(-0.15, 1.1), ylabel='mean cosine over patches',
                title='Output patch features vs frozen ViT')
    if args.curves:
        for variant, (steps, loss) in mean_curves(
                args.curves, args.curve_variants).items():
            axes[2].plot(steps, loss, marker='.', label=variant)
        axes[2].set(xlabel='iteration', ylabel='training loss',
                    title='Training loss (mean over seeds)')
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
