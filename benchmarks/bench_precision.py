"""Inference precision on the CPU: what ``basicsr infer --amp`` and ``basicsr export --fp16`` change, measured.

The demo's trained teacher (``skd_basicsr/tools/demo_teacher.pth``, Restormer dim 16) restores a crop of a photo it
never trained on (coffee, ``--size`` square, sigma 25 noise, seed 0) and a random input of the export check's kind
(64 x 96, uniform). Each way of running it is compared with the float32 PyTorch forward: largest and mean absolute
difference, and on the photo the PSNR against the clean crop; then its median latency on the photo. The ways:

* ``torch fp32``: the reference;
* ``autocast bf16`` / ``autocast fp16``: ``basicsr infer --amp``;
* ``torch float16``: the network cast to float16 (float16 arithmetic), the second check of ``basicsr export --fp16``;
* ``onnxruntime fp32`` / ``onnxruntime fp16``: the files ``basicsr export`` and ``basicsr export --fp16`` write, on
  onnxruntime's CPU provider.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_precision.py --size 256 --repeats 3
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from os import path as osp

import numpy as np
import torch


def psnr(out, clean):
    return float(10 * torch.log10(1 / ((out.clamp(0, 1) - clean)**2).mean()))


def median_seconds(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=256, help='side of the photo crop. Default: 256')
    parser.add_argument('--repeats', type=int, default=3, help='timed forwards per way. Default: 3')
    args = parser.parse_args(argv)
    if __package__ in (None, ''):  # run as a file: the repository root makes the package importable
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    import skimage.data

    import skd_basicsr  # noqa: F401  (registries, compatibility layer)
    from skd_basicsr.deploy import onnx_util
    from skd_basicsr.deploy.network_io import load_restorer
    from skd_basicsr.tools.demo import SIGMA, TEACHER, TEACHER_WEIGHTS
    from skd_basicsr.tools.infer import autocast_forward

    net = load_restorer(TEACHER, TEACHER_WEIGHTS)
    crop = skimage.data.coffee()[:args.size, :args.size].astype(np.float32) / 255
    clean = torch.from_numpy(crop).permute(2, 0, 1)[None]
    gen = torch.Generator().manual_seed(0)
    inputs = {'photo': clean + torch.randn(clean.shape, generator=gen) * SIGMA / 255,
              'random 64x96': torch.rand(1, 3, 64, 96, generator=gen)}
    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for name, fp16 in (('onnxruntime fp32', False), ('onnxruntime fp16', True)):
            files[name] = osp.join(folder, f'{fp16}.onnx')
            onnx_util.export_onnx(net, files[name], 3, 8, TEACHER, fp16=fp16)
        ways = {'torch fp32': net, 'autocast bf16': autocast_forward(net, 'cpu', torch.bfloat16),
                'autocast fp16': autocast_forward(net, 'cpu', torch.float16),
                'torch float16': onnx_util.Float16Body(net)}
        ways.update((name, onnx_util.OnnxRunner(path)) for name, path in files.items())
        sizes = {name: os.path.getsize(path) for name, path in files.items()}
        rows = []
        with torch.inference_mode():
            reference = {key: net(x) for key, x in inputs.items()}
            for name, run in ways.items():
                row = [name]
                for key, x in inputs.items():
                    diff = (run(x) - reference[key]).abs()
                    row += [f'{diff.max():.2e}', f'{diff.mean():.2e}']
                row.append(f'{psnr(run(inputs["photo"]), clean):.3f}')
                row.append(f'{median_seconds(lambda: run(inputs["photo"]), args.repeats) * 1000:.0f}')
                row.append(f'{sizes[name] / 2**20:.2f}' if name in sizes else '')
                rows.append(row)
                print(f'[bench] {" | ".join(row)}', flush=True)
    print(f'\nCommand: OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/bench_precision.py '
          f'{" ".join(argv if argv is not None else sys.argv[1:])}\n')
    print(f'Demo teacher; photo: coffee {args.size} x {args.size}, sigma {SIGMA}; noisy input PSNR '
          f'{psnr(inputs["photo"], clean):.3f} dB; latency: median of {args.repeats} forwards on the photo.\n')
    print('| way | photo max abs | photo mean abs | random max abs | random mean abs | PSNR (dB) | latency (ms) | '
          'file (MiB) |')
    print('| --- |' + ' ---: |' * 7)
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')


if __name__ == '__main__':
    main()
