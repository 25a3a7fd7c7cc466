"""Student and teacher CPU latency under onnxruntime against PyTorch, batch 1, at each size.

Each network of the option file (``network_g``, the student; ``network_t``, the teacher) is built with random
weights (speed does not depend on their values), exported as ``basicsr export`` does, and run by both runtimes on the
same input with the same thread count; the two alternate within each round so that drift in the machine's speed hits
both alike. Medians over the rounds are reported, with the largest absolute difference between the two outputs.

Usage:
    python benchmarks/bench_deploy.py --out benchmarks/RESULTS_deploy.md     # 256 and 512, SKD_Denoise.yml
    python benchmarks/bench_deploy.py --smoke                                # tiny networks and sizes: a check
"""
import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from os import path as osp

import torch

import skd_basicsr  # noqa: F401  (before basicsr)
from basicsr.archs import build_network
from skd_basicsr.platform.options import yaml_load
from skd_basicsr.deploy import onnx_util
from skd_basicsr.platform.network_spec import NetworkSpec

SMOKE_NET = {'type': 'Restormer', 'dim': 4, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
             'heads': [1, 1, 1, 1], 'ffn_expansion_factor': 2.0, 'bias': False, 'LayerNorm_type': 'WithBias'}


def networks(args):
    """name -> network options: the student and the teacher of the option file (two tiny ones with --smoke)."""
    if args.smoke:
        return {'student': SMOKE_NET, 'teacher': dict(SMOKE_NET, dim=8)}
    with open(args.opt, encoding='utf-8') as f:
        opt = yaml_load(f, source=args.opt)
    return {name: opt[key] for name, key in (('student', 'network_g'), ('teacher', 'network_t')) if opt.get(key)}


def median_latencies(runtimes, x, rounds):
    """Median milliseconds of each runtime on ``x``: one warm-up call each, then ``rounds`` alternating rounds."""
    times = {name: [] for name in runtimes}
    with torch.inference_mode():
        for run in runtimes.values():
            run(x)
        for _ in range(rounds):
            for name, run in runtimes.items():
                start = time.perf_counter()
                run(x)
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(net_opt, sizes, rounds, workdir):
    """Rows (size, PyTorch ms, onnxruntime ms, max abs diff) of one network."""
    torch.manual_seed(0)
    net = build_network(dict(net_opt)).eval().requires_grad_(False)
    path = osp.join(workdir, f'{net_opt["type"]}_{net_opt.get("dim", "")}.onnx')
    spec = NetworkSpec.from_options(net_opt)
    onnx_util.export_onnx(net, path, spec.in_channels, spec.size_multiple, net_opt)
    runner = onnx_util.OnnxRunner(path)
    rows = []
    for size in sizes:
        x = torch.rand(1, spec.in_channels, size, size)
        ms = median_latencies({'pytorch': net, 'onnxruntime': runner}, x, rounds)
        with torch.inference_mode():
            diff = (net(x) - runner(x)).abs().max().item()
        rows.append((size, ms['pytorch'], ms['onnxruntime'], diff))
        print(f'[bench] {net_opt["type"]} dim {net_opt.get("dim")} at {size}: PyTorch {ms["pytorch"]:.1f} ms, '
              f'onnxruntime {ms["onnxruntime"]:.1f} ms, max abs diff {diff:.1e}', flush=True)
    return rows


def report(args, results, minutes):
    import onnxruntime

    lines = [f'## Deploy benchmark: onnxruntime against PyTorch on CPU, {datetime.datetime.now():%Y-%m-%d %H:%M}', '',
             f'Command: `python benchmarks/bench_deploy.py {shlex.join(sys.argv[1:])}`', '',
             f'torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {torch.get_num_threads()} threads in '
             f'both, {platform.processor() or "CPU"} ({os.cpu_count()} cores visible), float32, batch 1, median of '
             f'{args.rounds} alternating rounds after one warm-up; random weights. {minutes:.1f} min in all.', '',
             '| network | size | PyTorch (ms) | onnxruntime (ms) | speed-up | max abs diff |',
             '| --- | ---: | ---: | ---: | ---: | ---: |']
    for name, (net_opt, rows) in results.items():
        label = f'{name} ({net_opt["type"]} dim {net_opt.get("dim")}, blocks {net_opt.get("num_blocks")})'
        for size, torch_ms, ort_ms, diff in rows:
            lines.append(f'| {label} | {size}^2 | {torch_ms:.1f} | {ort_ms:.1f} | {torch_ms / ort_ms:.2f}x | '
                         f'{diff:.1e} |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--opt', default=osp.join('options', 'SKD_Denoise.yml'),
                        help='option file with network_g (student) and network_t (teacher). Default: SKD_Denoise.yml')
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512], help='square input sides')
    parser.add_argument('--rounds', type=int, default=5, help='timed rounds; the median is reported')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(), help='threads of both runtimes')
    parser.add_argument('--smoke', action='store_true', help='tiny networks at 32 and 64, two rounds: a check only')
    parser.add_argument('--out', default=None, help='markdown file for the results (printed anyway)')
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.rounds = [32, 64], 2
    torch.set_num_threads(args.threads)
    start = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        results = {name: (net_opt, measure(net_opt, args.sizes, args.rounds, workdir))
                   for name, net_opt in networks(args).items()}
    text = report(args, results, (time.time() - start) / 60)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
