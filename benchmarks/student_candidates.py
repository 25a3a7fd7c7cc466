"""Student candidates for the Restormer option files: parameters, MACs and CPU latency against the teacher.

Issue 11's targets for the student of ``options/SKD_*.yml``: at most 0.38x the teacher's parameters, at most 0.42x
its MACs, and at most 0.45x its median CPU latency at both 256 x 256 and 512 x 512. Every candidate and the teacher
are timed in turn, one forward of each per round (:func:`skd_basicsr.tools.flops.measure_alternately`), in one run,
so that a change of machine load falls on all of them. Run it on idle cores; it prints a markdown table (and
writes it with ``--out``).

Usage:
    python benchmarks/student_candidates.py --threads 2 --repeats 5 --out /tmp/students.md
"""
import argparse
import os
import sys
import time
from os import path as osp

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE = {'type': 'Restormer', 'inp_channels': 3, 'out_channels': 3, 'heads': [1, 2, 4, 8],
        'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'BiasFree', 'dual_pixel_task': False}
TEACHER = dict(BASE, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4)
CANDIDATES = {  # name -> (dim, blocks, refinement blocks)
    'dim32 [4,4,6,6] r4 (the option files until now)': (32, [4, 4, 6, 6], 4),
    'dim40 [2,2,2,4] r4': (40, [2, 2, 2, 4], 4),
    'dim40 [2,2,2,4] r2': (40, [2, 2, 2, 4], 2),
    'dim48 [1,1,2,2] r2': (48, [1, 1, 2, 2], 2),
    'dim32 [2,3,4,6] r2': (32, [2, 3, 4, 6], 2),
}
TARGETS = {'params': 0.38, 'macs': 0.42, 'latency': 0.45}


def network(dim, blocks, refinement):
    return dict(BASE, dim=dim, num_blocks=list(blocks), num_refinement_blocks=refinement)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
    parser.add_argument('--repeats', type=int, default=5, help='timed forwards of each net per size. Default: 5')
    parser.add_argument('--threads', type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument('--only', nargs='+', help='candidate names (prefixes) to measure. Default: all')
    parser.add_argument('--out', help='markdown file for the table')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import skd_basicsr  # noqa: F401  (registries)
    from skd_basicsr.tools.flops import measure_alternately

    start = time.time()
    names = [name for name in CANDIDATES if not args.only or any(name.startswith(p) for p in args.only)]
    results = {name: [] for name in names}  # name -> [(student, teacher) per size]
    for size in args.sizes:
        # every candidate and the teacher timed in turn, one forward of each per round: one teacher timing for all
        measured = measure_alternately([network(*CANDIDATES[name]) for name in names] + [TEACHER], (size, size),
                                       args.repeats)
        for name, student in zip(names, measured):
            results[name].append((student, measured[-1]))
            print(f'[students] {name} {size}^2: student {student["latency_ms"]:.0f} ms, teacher '
                  f'{measured[-1]["latency_ms"]:.0f} ms', flush=True)
    header = ['candidate', 'params', 'MACs'] + [f'latency {s}^2' for s in args.sizes] + ['meets every target']
    lines = ['| ' + ' | '.join(header) + ' |', '| --- |' + ' ---: |' * (len(header) - 2) + ' --- |']
    for name in names:
        s, t = results[name][0]
        ratios = [s_['latency_ms'] / t_['latency_ms'] for s_, t_ in results[name]]
        cells = [f'{r:.3f} ({s_["latency_ms"]:.0f} / {t_["latency_ms"]:.0f} ms)'
                 for r, (s_, t_) in zip(ratios, results[name])]
        params, macs = s['params'] / t['params'], s['macs'] / t['macs']
        ok = params <= TARGETS['params'] and macs <= TARGETS['macs'] and max(ratios) <= TARGETS['latency']
        lines.append(f'| {name} | {params:.3f} | {macs:.3f} | ' + ' | '.join(cells) + f' | {"yes" if ok else "no"} |')
    command = ' '.join(['python', 'benchmarks/student_candidates.py'] + sys.argv[1:])
    lines += ['', f'Ratios to the teacher (Restormer dim 48, [4, 6, 6, 8], refinement 4). Latency: median of '
              f'{args.repeats} batch-1 CPU forwards at {args.threads} threads, every candidate and the teacher timed '
              f'in turn (student / teacher ms in brackets). Targets: params <= {TARGETS["params"]}, '
              f'MACs <= {TARGETS["macs"]}, latency <= {TARGETS["latency"]} at every size. '
              f'{(time.time() - start) / 60:.1f} min.',
              f'Command: `{command}`']
    table = '\n'.join(lines) + '\n'
    print(table)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
