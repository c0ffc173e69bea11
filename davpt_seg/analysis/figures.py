# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Matplotlib (Agg) figures of the prompt-analysis tools: the per-image
prompt-attention sheet and the class -> prompt mapping picture."""
import math
import textwrap
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

COL_W = 2.6      # inches per panel column
LINE_H = 0.16    # inches per title line (FONT pt)
FONT = 9


def wrap(text: str, width: int = 30, lines: int = 3) -> str:
    """``text`` wrapped to ``width`` characters, at most ``lines`` lines."""
    out = textwrap.wrap(text, width) or ['']
    if len(out) > lines:
        out = out[:lines - 1] + [out[lines - 1][:width - 5] + ' ...']
    return '\n'.join(out)


def class_list(ids: Sequence[int], names: Sequence[str]) -> str:
    return ', '.join(names[c] for c in ids) if ids else '(no class)'


def colorize(labels: np.ndarray, palette, ignore: int = 255) -> np.ndarray:
    """[H, W] labels -> [H, W, 3] uint8 RGB (ignored pixels black)."""
    pal = np.zeros((256, 3), np.uint8)
    pal[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    out = pal[np.clip(labels, 0, 255)]
    out[labels == ignore] = 0
    return out


def _gray(image: np.ndarray) -> np.ndarray:
    g = image.astype(np.float32).mean(-1, keepdims=True)
    return np.repeat(g, 3, -1).astype(np.uint8)


def _contours(ax, gt, classes, palette, color=None, lw=1.4):
    for c in classes:
        mask = (gt == c).astype(float)
        if mask.any() and not mask.all():
            col = color or tuple(np.asarray(palette[c]) / 255.)
            ax.contour(mask, levels=[0.5], colors=[col], linewidths=lw)


def _image_ax(fig, spec, title):
    ax = fig.add_subplot(spec)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=FONT)
    return ax


def _heat(ax, image, heat, alpha=0.6):
    """Heat map (scaled to its max) over the desaturated image."""
    ax.imshow(_gray(image))
    top = float(heat.max())
    ax.imshow(heat / top if top > 0 else heat, cmap='inferno', vmin=0,
              vmax=1, alpha=alpha)


def _overview_row(fig, gs, row, ncols, image, pred, gt, meta):
    names, palette = meta['classes'], meta['palette']
    present = sorted(set(np.unique(pred).tolist()) |
                     (set(np.unique(gt).tolist()) if gt is not None
                      else set()))
    present = [c for c in present if 0 <= c < len(names)]
    ax = _image_ax(fig, gs[row, 0], 'image' + (
        '\n(ground truth outlined)' if gt is not None else ''))
    ax.imshow(image)
    if gt is not None:
        _contours(ax, gt, present, palette)
    ax = _image_ax(fig, gs[row, 1], 'prediction')
    ax.imshow((0.4 * image + 0.6 * colorize(pred, palette)).astype(np.uint8))
    col = 2
    if gt is not None:
        ax = _image_ax(fig, gs[row, col], 'ground truth')
        ax.imshow(colorize(gt, palette))
        col += 1
    if col < ncols:
        ax = fig.add_subplot(gs[row, col:])
        ax.axis('off')
        handles = [Patch(color=np.asarray(palette[c]) / 255.,
                         label=f'{c}: {names[c]}') for c in present]
        ax.legend(handles=handles, loc='center left', fontsize=FONT,
                  ncol=max(1, math.ceil(len(handles) / 8)), frameon=False,
                  title='classes in prediction' + (
                      ' / ground truth' if gt is not None else ''))


def _cls_row(fig, gs, row, ncols, image, view):
    ax = _image_ax(fig, gs[row, 0],
                   f'layer {view["layer"]}: [CLS] -> patches\n'
                   f'(on patches: {view["cls_mass"][0]:.0%} of [CLS] '
                   'attention)')
    _heat(ax, image, view['cls_map'])
    ax = fig.add_subplot(gs[row, 1:])
    w = view['cls_prompt']              # [heads, P]
    if w.shape[1] == 0:
        ax.axis('off')
        ax.text(0.5, 0.5, f'layer {view["layer"]} has no prompts',
                ha='center', va='center', fontsize=FONT + 1)
        return
    x = np.arange(w.shape[1])
    colors = ['tab:orange' if view['classes'] is not None else
              'tab:blue'] * len(x)
    ax.bar(x, w.mean(0), color=colors, alpha=0.8, label='heads averaged')
    for h in range(w.shape[0]):
        ax.plot(x, w[h], 'k.', ms=3, label='single heads' if h == 0 else None)
    ax.set_xticks(x)
    ax.set_xticklabels([f'p{k}' for k in x], fontsize=FONT - 1)
    ax.yaxis.tick_right()  # keep clear of the [CLS] map on the left
    ax.tick_params(labelsize=FONT - 1)
    kind = view.get('kind_label') or ('class-assigned prompts' if
                                      view['classes'] is not None else
                                      'unassigned prompts')
    ax.set_title(f'layer {view["layer"]}: [CLS] attention probability on '
                 f'each prompt ({kind}; all prompts together: '
                 f'{view["cls_mass"][1]:.0%})', fontsize=FONT)
    ax.legend(fontsize=FONT - 1, loc='upper left')


def _prompt_panels(fig, gs, row, ncols, image, view, gt, palette, per_head):
    """Prompt panels from ``row`` on; returns the next free row."""
    col = 0
    for j, k in enumerate(view['prompts']):
        maps = [view['maps'][j]] + (list(view['head_maps'][j])
                                    if per_head else [])
        for h, heat in enumerate(maps):
            if col == ncols or (per_head and h == 0 and col):
                row, col = row + 1, 0
            title = view['titles'][j] if h == 0 else f'p{k}, head {h - 1}'
            ax = _image_ax(fig, gs[row, col], title)
            _heat(ax, image, heat)
            if gt is not None and view['classes'] is not None:
                _contours(ax, gt, view['classes'][j], palette,
                          color='cyan', lw=1.0)
            col += 1
    return row + 1


def _rows_for(view, ncols, per_head):
    n = len(view['prompts'])
    top = int(view['cls_map'] is not None)
    if per_head:
        per = 1 + view['head_maps'].shape[1]
        return top + n * math.ceil(per / ncols)
    return top + math.ceil(n / ncols)


def draw_prompt_sheet(out_file: str, image: np.ndarray, pred: np.ndarray,
                      gt: Optional[np.ndarray], meta: dict,
                      views: List[dict], title: str,
                      per_head: bool = False, ncols: int = 5,
                      dpi: int = 100) -> None:
    """One PNG: image, prediction and per layer the [CLS] maps and the
    prompt attention maps.

    Args:
        image (ndarray): [H, W, 3] uint8 RGB at original size.
        pred (ndarray): [H, W] predicted labels; ``gt`` likewise (or None).
        meta (dict): ``classes`` and ``palette`` of the dataset.
        views (list[dict]): per layer ``layer``, ``kind`` ('proxy' |
            'plain'), ``kind_label`` (optional: how the prompts are named
            in the bar chart's title), ``prompts`` (shown prompt ids),
            ``titles`` (one per shown prompt), ``classes`` (class ids per
            shown prompt, or None), ``maps`` [P', H, W] (heads
            averaged), ``head_maps`` [P', heads, H, W] (with
            ``per_head``), ``cls_map`` [H, W],
            ``cls_prompt`` [heads, P] and ``cls_mass`` (share of [CLS]
            attention on patches, on prompts).
        dpi (int): resolution of the PNG (the layout is in inches).
    """
    if per_head and views:
        ncols = max(ncols, min(1 + views[0]['head_maps'].shape[1], 9))
    nrows = 1 + sum(_rows_for(v, ncols, per_head) for v in views)
    left, right, wspace, head, foot = 0.03, 0.955, 0.08, 0.5, 0.3
    ax_w = COL_W * (right - left) * ncols / (ncols + (ncols - 1) * wspace)
    ax_h = ax_w * image.shape[0] / image.shape[1]
    lines = max([2] + [t.count('\n') + 1 for v in views
                       for t in v['titles']])
    title_h = 0.3 + LINE_H * lines  # room for titles and tick labels
    height = head + title_h + nrows * ax_h + (nrows - 1) * title_h + foot
    fig = plt.figure(figsize=(COL_W * ncols, height), dpi=dpi)
    gs = GridSpec(nrows, ncols, figure=fig, hspace=title_h / ax_h,
                  wspace=wspace, left=left, right=right,
                  bottom=foot / height, top=1 - (head + title_h) / height)
    fig.suptitle(title, fontsize=FONT + 2, y=1 - 0.12 / height, va='top')
    _overview_row(fig, gs, 0, ncols, image, pred, gt, meta)
    row = 1
    for view in views:
        if view['cls_map'] is not None:
            _cls_row(fig, gs, row, ncols, image, view)
            row += 1
        if view['prompts']:
            row = _prompt_panels(fig, gs, row, ncols, image, view, gt,
                                 meta['palette'], per_head)
    fig.savefig(out_file)
    plt.close(fig)


def draw_mapping(out_file: str, class_lists: List[List[int]],
                 names: Sequence[str], similarity: Optional[np.ndarray],
                 title: str, palette=None) -> None:
    """The class -> prompt mapping (classes grouped by prompt, cluster
    sizes) and the [K, K] centroid cosine-similarity matrix."""
    K = len(class_lists)
    texts = [textwrap.wrap(class_list(ids, names), 60) or ['']
             for ids in class_lists]
    lines = sum(len(t) for t in texts) + K
    height = max(3.5, 0.22 * lines + 1.2, 0.45 * K + 1.5)
    fig, (ax, ax_sim) = plt.subplots(
        1, 2, figsize=(13, height), dpi=100,
        gridspec_kw=dict(width_ratios=[1.5, 1]))
    fig.suptitle(title, fontsize=FONT + 2)
    ax.axis('off')
    y, step = 1.0, 1.0 / max(lines, 1)
    biggest = max(len(c) for c in class_lists) or 1
    for k, (ids, text) in enumerate(zip(class_lists, texts)):
        ax.add_patch(plt.Rectangle((0, y - 0.75 * step), 0.12 *
                                   len(ids) / biggest, 0.6 * step,
                                   color='tab:orange',
                                   transform=ax.transAxes))
        ax.text(0.13, y, f'prompt {k}: {len(ids)} classes',
                fontsize=FONT, weight='bold', va='top',
                transform=ax.transAxes)
        for i, line in enumerate(text):
            ax.text(0.42, y - i * step, line, fontsize=FONT, va='top',
                    transform=ax.transAxes)
        y -= (len(text) + 1) * step
    ax.set_title('classes grouped by prompt (bar: cluster size)',
                 fontsize=FONT + 1, loc='left')
    if similarity is None:
        ax_sim.axis('off')
        ax_sim.text(0.5, 0.5, 'no k-means centroids stored\n(mapping never '
                    'set by k-means)', ha='center', va='center',
                    fontsize=FONT + 1)
    else:
        im = ax_sim.imshow(similarity, cmap='RdBu_r', vmin=-1, vmax=1)
        ax_sim.set_xticks(range(K))
        ax_sim.set_yticks(range(K))
        ax_sim.set_xlabel('prompt', fontsize=FONT)
        ax_sim.set_ylabel('prompt', fontsize=FONT)
        ax_sim.tick_params(labelsize=FONT - 1)
        if K <= 16:
            for i in range(K):
                for j in range(K):
                    ax_sim.text(j, i, f'{similarity[i, j]:.2f}',
                                ha='center', va='center', fontsize=FONT - 2,
                                color='white' if abs(similarity[i, j]) > .6
                                else 'black')
        ax_sim.set_title('centroid cosine similarity', fontsize=FONT + 1)
        fig.colorbar(im, ax=ax_sim, fraction=0.046)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(out_file)
    plt.close(fig)
