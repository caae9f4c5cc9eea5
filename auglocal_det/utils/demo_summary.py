"""The demo's summary: a table, the last lines and a chart.

``tools/demo.py`` pretrains with several rules and fine-tunes a detector
from each start point. :func:`write_summary` turns what those runs wrote
into a Markdown table, a few last lines and a bar chart.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

from .jobs import clock

__all__ = [
    'REAL_DATA_NOTE', 'RULE_NAMES', 'plot_summary', 'summary_lines',
    'summary_table', 'write_summary'
]

#: How the summary names each rule and start point.
RULE_NAMES = {'auglocal': 'AugLocal', 'bp': 'BP', 'random': 'random init'}


def _mib(value: Optional[float]) -> str:
    if value is None:
        return 'n/a'
    return f'{value / 1024:.2f} GiB' if value >= 1024 else f'{value:.0f} MiB'


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f'{a / b:.2f}x' if a is not None and b else 'n/a'


#: Where the rules are compared on real data, printed after the demo's
#: top-1 line.
REAL_DATA_NOTE = (
    'this top-1 comes from a few hundred iterations on generated shapes; '
    'every rule compared on real data (Fashion-MNIST, the full test set): '
    'docs/benchmarks.md#fashion-mnist-every-rule-on-real-data')


def summary_lines(pretrained: List[Dict], detected: List[Dict],
                  wall_seconds: float) -> List[str]:
    """The demo's last lines: top-1, memory, AP and wall time."""
    lines = []
    by_rule = {res['rule']: res for res in pretrained}
    if pretrained:
        chance = next((r['chance'] for r in pretrained if r['chance']), None)
        parts = [
            f'{RULE_NAMES[r["rule"]]} {r["val_top1"]:.2f}%'
            if r['val_top1'] is not None else f'{RULE_NAMES[r["rule"]]} n/a'
            for r in pretrained
        ]
        gap = ''
        if all(by_rule.get(k, {}).get('val_top1') is not None
               for k in ('auglocal', 'bp')):
            diff = by_rule['auglocal']['val_top1'] - by_rule['bp']['val_top1']
            gap = f'; AugLocal - BP {diff:+.2f} points'
        chance_str = f'; chance {chance:.1f}%' if chance else ''
        lines.append(f'val top-1 of ResNet-34 on the synthetic shapes: '
                     f'{", ".join(parts)}{gap}{chance_str}')
        lines.append(REAL_DATA_NOTE)
        memory = {r['rule']: r.get('memory') or {} for r in pretrained}
        for key, what in (
                ('peak_rss', 'peak training memory (process RSS, whole '
                 'iteration)'),
                ('activation_rss', 'activation memory (peak before the '
                 'optimizer step - memory alive before the iteration - '
                 'gradients)')):
            parts = [
                f'{RULE_NAMES[rule]} {_mib(mem.get(key))}'
                for rule, mem in memory.items()
            ]
            ratio = ''
            if 'auglocal' in memory and 'bp' in memory:
                ratio = (' (AugLocal / BP ' + _ratio(
                    memory['auglocal'].get(key), memory['bp'].get(key)) +
                         ')')
            lines.append(f'{what}: {", ".join(parts)}{ratio}')
    if detected:
        rows = {d['start']: d['row'] for d in detected}
        parts = []
        for start, row in rows.items():
            text = (f'{RULE_NAMES[start]} {row["box AP"]} / '
                    f'{row["mask AP"]}')
            if start != 'random' and 'random' in rows:
                try:
                    text += (
                        ' ({:+.1f} / {:+.1f} over random init)'.format(
                            float(row['box AP']) -
                            float(rows['random']['box AP']),
                            float(row['mask AP']) -
                            float(rows['random']['mask AP'])))
                except ValueError:
                    pass
            parts.append(text)
        lines.append('Mask R-CNN box AP / mask AP (synthetic shapes val) '
                     'from ' + ', '.join(parts))
    lines.append(f'total wall time: {clock(wall_seconds)} '
                 f'({wall_seconds:.0f} s)')
    return lines


def summary_table(pretrained: List[Dict], detected: List[Dict]) -> str:
    """A markdown table: one column per rule / start point."""
    starts = [d['start'] for d in detected]
    names = []
    for key in [r['rule'] for r in pretrained] + starts:
        if key not in names:
            names.append(key)
    by_rule = {r['rule']: r for r in pretrained}
    rows_det = {d['start']: d for d in detected}

    def cell(key, get):
        try:
            value = get(key)
        except (KeyError, TypeError):
            value = None
        return '-' if value is None else value

    def top1(key):
        value = by_rule[key]['val_top1']
        return None if value is None else f'{value:.2f}'

    def mem(field_name):
        return lambda key: _mib((by_rule[key].get('memory') or {}).get(
            field_name)) if key in by_rule else None

    def seconds(key):
        return f'{by_rule[key]["seconds"]:.0f} s'

    def ap(column):
        return lambda key: rows_det[key]['row'][column]

    def ft_seconds(key):
        return f'{rows_det[key]["train_seconds"]:.0f} s'

    table = [
        ('pretraining val top-1 (%)', top1),
        ('peak training memory (process RSS)', mem('peak_rss')),
        ('activation memory (process RSS)', mem('activation_rss')),
        ('parameters + buffers (tensors)', mem('params')),
        ('pretraining time', seconds),
        ('Mask R-CNN box AP', ap('box AP')),
        ('Mask R-CNN mask AP', ap('mask AP')),
        ('fine-tuning time', ft_seconds),
    ]
    out = ['| | ' + ' | '.join(RULE_NAMES[n] for n in names) + ' |',
           '|---' * (len(names) + 1) + '|']
    for title, get in table:
        values = [str(cell(n, get)) for n in names]
        if all(v == '-' for v in values):
            continue
        out.append(f'| {title} | ' + ' | '.join(values) + ' |')
    return '\n'.join(out) + '\n'


def plot_summary(pretrained: List[Dict], detected: List[Dict],
                 path: str) -> None:
    """Bar charts of the top-1, the memory figures and the AP; a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    if pretrained:
        names = [RULE_NAMES[r['rule']] for r in pretrained]
        panels.append(('val top-1 (%)', names,
                       [[r['val_top1'] or 0. for r in pretrained]], None))
        memory = [r.get('memory') or {} for r in pretrained]
        # two panels: the activations are far smaller than the peak
        panels.append(('peak training memory (MiB, RSS)', names,
                       [[m.get('peak_rss', 0.) for m in memory]], None))
        panels.append(('activation memory (MiB, RSS)', names,
                       [[m.get('activation_rss', 0.) for m in memory]],
                       None))
    if detected:
        names = [RULE_NAMES[d['start']] for d in detected]

        def value(row, key):
            try:
                return float(row[key])
            except (KeyError, ValueError):
                return 0.

        panels.append(('Mask R-CNN AP', names,
                       [[value(d['row'], 'box AP') for d in detected],
                        [value(d['row'], 'mask AP') for d in detected]],
                       ['box AP', 'mask AP']))
    if not panels:
        return
    fig = Figure(figsize=(4 * len(panels), 3.6), dpi=110)
    FigureCanvasAgg(fig)
    for k, (title, names, series, labels) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        width = 0.8 / len(series)
        for s, values in enumerate(series):
            xs = [i + (s - (len(series) - 1) / 2) * width
                  for i in range(len(names))]
            bars = ax.bar(xs, values, width,
                          label=labels[s] if labels else None)
            for bar, v in zip(bars, values):
                ax.annotate(f'{v:.0f}' if v >= 100 else f'{v:.1f}',
                            (bar.get_x() + bar.get_width() / 2, v),
                            textcoords='offset points', xytext=(0, 2),
                            ha='center', fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis='y', alpha=0.3)
        if labels:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def write_summary(pretrained: List[Dict], detected: List[Dict],
                  work_root: str,
                  wall_seconds: float = 0.) -> Tuple[str, List[str], str,
                                                     str]:
    """Write ``summary.md`` and ``summary.png`` into ``work_root``.

    Args:
        pretrained (list[dict]): One dict per pretraining: ``rule``,
            ``val_top1``, ``chance``, ``seconds`` and ``memory``
            (``TrainingMemoryHook``'s figures in MiB, or None).
        detected (list[dict]): One dict per start point: ``start``,
            ``row`` (the model-zoo row) and ``train_seconds``.
        work_root (str): Where the files go.
        wall_seconds (float): Wall time of the whole run. Defaults to 0.

    Returns:
        tuple: The table, the last lines, and the paths of the Markdown
        file and of the chart.
    """
    os.makedirs(work_root, exist_ok=True)
    table = summary_table(pretrained, detected)
    lines = summary_lines(pretrained, detected, wall_seconds)
    md_path = osp.join(work_root, 'summary.md')
    png_path = osp.join(work_root, 'summary.png')
    with open(md_path, 'w') as f:
        f.write('# Demo summary\n\n' + table + '\n' +
                ''.join(f'- {line}\n' for line in lines))
    plot_summary(pretrained, detected, png_path)
    return table, lines, md_path, png_path
