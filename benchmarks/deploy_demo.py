"""The demo's student deployed: ``basicsr infer`` untiled and tiled, ``basicsr export`` and ``infer --onnx``, scored.

Writes the demo's held-out photos with their fixed sigma-25 noise (the same noisy inputs the demo scores on) to
``DEMO/deploy/noisy``, restores them with the commands a user runs, and scores every output against the clean
photos: the PSNR cost of tiling (Restormer's channel attention is global, so tiles change the result) at each
``--tiles`` size, and the ONNX file against PyTorch. Each command's output is printed as it runs.

Usage:
    python benchmarks/deploy_demo.py --demo demo_out --entry skd --tiles 128 256
"""
import argparse
import glob
import os
import subprocess
import sys
from os import path as osp


def write_noisy(demo, folder):
    """The held-out photos with the demo's fixed noise, as 8-bit PNGs; returns {file name: clean image}."""
    import cv2

    import skd_basicsr  # noqa: F401  (registries)
    from skd_basicsr.tools.demo import held_out_pairs

    os.makedirs(folder, exist_ok=True)
    clean = {}
    for name, (noisy, clean_img) in held_out_pairs({'val': osp.join(demo, 'data', 'val')}).items():
        cv2.imwrite(osp.join(folder, f'{name}.png'), noisy)
        clean[f'{name}.png'] = clean_img
    return clean


def score(folder, clean):
    """Mean PSNR (RGB, no border crop) of the images in ``folder`` against ``clean``."""
    import cv2
    import numpy as np
    from basicsr.metrics import calculate_psnr

    return float(np.mean([calculate_psnr(cv2.imread(osp.join(folder, name)), img, 0) for name, img in clean.items()]))


def basicsr(*args):
    cmd = ['basicsr'] + [str(a) for a in args]
    print('$ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--demo', default='demo_out', help='a folder written by `basicsr demo --out DIR`')
    parser.add_argument('--entry', default='skd', help='the demo student to deploy. Default: skd')
    parser.add_argument('--tiles', nargs='+', type=int, default=[128, 256], help='tile sizes to score')
    parser.add_argument('--tile_overlap', type=int, default=32)
    args = parser.parse_args(argv)

    results = osp.join(args.demo, 'results.json')
    work = osp.join(args.demo, 'deploy')
    noisy = osp.join(work, 'noisy')
    clean = write_noisy(args.demo, noisy)
    rows = [('noisy input', score(noisy, clean))]

    whole = osp.join(work, 'restored')
    basicsr('infer', '-opt', results, '--entry', args.entry, '--input', noisy, '--output', whole, '--overwrite')
    rows.append(('PyTorch, whole image', score(whole, clean)))
    for tile in args.tiles:
        out = osp.join(work, f'restored_tile{tile}')
        basicsr('infer', '-opt', results, '--entry', args.entry, '--input', noisy, '--output', out, '--tile', tile,
                '--tile_overlap', args.tile_overlap, '--overwrite')
        rows.append((f'PyTorch, tiles {tile} (overlap {args.tile_overlap})', score(out, clean)))

    onnx = osp.join(work, f'{args.entry}.onnx')
    basicsr('export', '-opt', results, '--entry', args.entry, '--onnx', onnx, '--overwrite')
    out = osp.join(work, 'restored_onnx')
    basicsr('infer', '--onnx', onnx, '--input', noisy, '--output', out, '--overwrite')
    rows.append(('onnxruntime, whole image', score(out, clean)))

    print(f'\n{len(glob.glob(osp.join(noisy, "*.png")))} held-out photos, demo student `{args.entry}`:')
    print('| run | PSNR (dB) | vs whole image |\n| --- | ---: | ---: |')
    base = rows[1][1]
    for label, psnr in rows:
        print(f'| {label} | {psnr:.3f} | {psnr - base:+.3f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
