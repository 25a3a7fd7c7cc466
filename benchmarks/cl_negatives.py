"""L_CL when the negative nears the positive: blind denoising at a low noise level (issue 21).

In blind denoising (``sigma_range: [0, 50]``, as options/SKD_Denoise.yml trains) the input negative of L_CL tends to
the clean image as sigma goes to 0, and so to the teacher's output, the positive. The ratio
``d(a, p) / d(a, n)`` of a student output ``a`` near both then has a vanishing denominator, and its gradient grows
like 1 / sigma. This script measures it on the demo's teacher and held-out photos, in the teacher feature space
that SKDModel uses by default, for the ratio as the paper states it and with ``negative_margin`` (a negative closer
to the positive than ``margin`` times the positive's mean absolute feature is left out, per sample and layer).

The positive is the clean image: the ground truth (``positive: gt``), and what a blind teacher returns as sigma goes
to 0 (the demo's teacher, trained at sigma 25 only, smooths a clean input instead, so it is the feature space here,
not the positive). The anchor stands for a student near it: the clean image plus Gaussian noise of
``--anchor-noise`` (0-255 scale). Every sigma uses the same crops, anchor error and input noise pattern (scaled by
sigma).

``--at-init`` measures the other way the denominator vanishes: a student whose output starts at its input (a residual
network at random initialisation, such as the study's SRVGGNetCompact) starts at the negative. For each regime of the
study (:mod:`benchmarks.study.regimes`) it gives, at the student's random initialisation on four noisy 48 px crops,
the distances in the teacher space and the gradient norms of L_CL and of L1 to the ground truth at the output.

Usage:
    python benchmarks/cl_negatives.py [--margins 0.02 0.05 0.1] [--out benchmarks/RESULTS.md]
    python benchmarks/cl_negatives.py --at-init [--out benchmarks/RESULTS.md]
"""
import argparse
import statistics
import sys
import tempfile
from os import path as osp

import torch

if __package__ in (None, ''):  # run as a file: the repository root makes `benchmarks` importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

SIGMAS = (0, 0.5, 1, 2, 5, 10, 25, 50)


def crops(size, count):
    """``count`` centre-ish crops of the demo's held-out photos, RGB in [0, 1], (count, 3, size, size)."""
    import cv2

    from skd_basicsr.tools.demo import write_photos

    folder = write_photos(tempfile.mkdtemp(prefix='cl_negatives_'))['val']
    images = []
    for name in sorted(p for p in __import__('os').listdir(folder)):
        img = cv2.cvtColor(cv2.imread(osp.join(folder, name)), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        for k in range(count // 2):
            top, left = (h - size) * (k + 1) // (count // 2 + 1), (w - size) // 2
            images.append(torch.from_numpy(img[top:top + size, left:left + size]).permute(2, 0, 1).float() / 255)
    return torch.stack(images)


def teacher_space(network, weights):
    """The frozen teacher ``network`` with ``weights`` (key params), and L_CL's teacher feature space on it."""
    import skd_basicsr  # noqa: F401  (BasicSR made fit, registries; before basicsr)
    from basicsr.archs import build_network
    from skd_basicsr.distill.feature_space import TeacherFeatureSpace
    from skd_basicsr.distill.taps import FeatureTaps

    net_t = build_network(dict(network)).eval().requires_grad_(False)
    net_t.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True)['params'])
    space = TeacherFeatureSpace(None)
    taps = FeatureTaps(net_t, space.layers, 'network_t')
    space.extract = lambda img, layers: taps.capture(net_t, img, layers)
    return net_t, space


def measure(margins, size=96, count=4, anchor_noise=1.0, seed=0):
    """Rows of (sigma, relative d(p, n) per layer, then per form: L_CL and the gradient norm at the anchor)."""
    from skd_basicsr.distill.contrastive_loss import SKDContrastiveLoss
    from skd_basicsr.tools.demo import TEACHER, TEACHER_WEIGHTS

    _, space = teacher_space(TEACHER, TEACHER_WEIGHTS)
    forms = {'ratio': SKDContrastiveLoss(feature_space=space, negative_margin=0)}
    forms.update({f'margin {m}': SKDContrastiveLoss(feature_space=space, negative_margin=m) for m in margins})

    clean = crops(size, count)
    gen = torch.Generator().manual_seed(seed)
    pattern = torch.randn(clean.shape, generator=gen)
    student_error = torch.randn(clean.shape, generator=gen) * anchor_noise / 255
    rows = []
    for sigma in SIGMAS:
        noisy = clean + pattern * sigma / 255
        positive = clean
        with torch.no_grad():
            feats_p, feats_n = space(positive), space(noisy)
        relative = {layer: statistics.median(
            ((feats_p[layer] - feats_n[layer]).abs().flatten(1).mean(1)
             / feats_p[layer].abs().flatten(1).mean(1)).tolist()) for layer in space.layers}
        row = {'sigma': sigma, 'relative': relative, 'forms': {}}
        for name, loss in forms.items():
            anchor = (positive + student_error).requires_grad_(True)
            value = loss(anchor, positive, noisy, negative_feats=feats_n)
            grad, = torch.autograd.grad(value, anchor)
            row['forms'][name] = (float(value), float(grad.norm()))
        rows.append(row)
    return rows


def at_init(seed=0):
    """Per regime: the mean distances of the student's output (a), the teacher's (p) and the input (n) per layer, and
    the gradient norms of L_CL (the product's defaults) and of L1 to the ground truth at the student's output."""
    import skd_basicsr  # noqa: F401  (BasicSR made fit, registries; before basicsr)
    from basicsr.archs import build_network

    from benchmarks.study.regimes import REGIMES
    from skd_basicsr.distill.contrastive_loss import SKDContrastiveLoss, l1_per_sample

    torch.manual_seed(seed)
    clean = crops(48, 4)
    noisy = clean + 25 / 255 * torch.randn_like(clean)
    rows = []
    for name, regime in REGIMES.items():
        net_t, space = teacher_space(regime.pair.teacher, regime.teacher_weights)  # float16 files load as float32
        out = build_network(dict(regime.pair.student))(noisy)
        with torch.no_grad():
            positive = net_t(noisy)
        feats = {'a': space(out), 'p': space(positive), 'n': space(noisy)}
        distances = {layer: {pair: float(l1_per_sample(feats[pair[0]][layer], feats[pair[1]][layer]).mean().detach())
                             for pair in ('an', 'pn', 'ap')} for layer in space.layers}
        l_cl = SKDContrastiveLoss(feature_space=space).from_features(feats['a'], [feats['p']], [feats['n']])
        grad_cl, = torch.autograd.grad(l_cl, out, retain_graph=True)
        grad_l1, = torch.autograd.grad((out - clean).abs().mean(), out)
        rows.append((name, distances, float(l_cl), float(grad_cl.norm()), float(grad_l1.norm())))
    return rows


def init_report(rows, command):
    lines = ['## L_CL at the student\'s random initialisation: the anchor at the negative', '', f'`{command}`', '',
             '| regime | layer | d(a, n) | d(p, n) | d(a, p) | L_CL | gradient norm of L_CL | of L1 to the ground truth |',
             '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |']
    for name, distances, l_cl, grad_cl, grad_l1 in rows:
        for i, (layer, d) in enumerate(distances.items()):
            tail = f'{l_cl:.3f} | {grad_cl:.3g} | {grad_l1:.3g}' if i == 0 else ' | | '
            lines.append(f'| {name if i == 0 else ""} | {layer} | {d["an"]:.4f} | {d["pn"]:.4f} | {d["ap"]:.4f} | '
                         f'{tail} |')
    return '\n'.join(lines) + '\n'


def report(rows, command):
    layers = list(rows[0]['relative'])
    forms = list(rows[0]['forms'])
    lines = ['| sigma | ' + ' | '.join(f'd(p, n) / mean abs p, {layer}' for layer in layers) + ' | '
             + ' | '.join(f'{form}: L_CL, gradient norm' for form in forms) + ' |',
             '| ---: | ' + ' | '.join('---:' for _ in layers) + ' | ' + ' | '.join('---:' for _ in forms) + ' |']
    for row in rows:
        lines.append(f'| {row["sigma"]} | ' + ' | '.join(f'{row["relative"][layer]:.4f}' for layer in layers) + ' | '
                     + ' | '.join(f'{v:.3g}, {g:.3g}' for v, g in row['forms'].values()) + ' |')
    return '\n'.join(['## L_CL as the negative nears the positive (blind denoising at low sigma)', '',
                      f'`{command}`', ''] + lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--margins', nargs='+', type=float, default=[0.02, 0.05, 0.1])
    parser.add_argument('--anchor-noise', type=float, default=1.0, help='the anchor\'s error, 0-255 scale')
    parser.add_argument('--at-init', action='store_true', help='the students of the study\'s regimes at their random '
                        'initialisation instead')
    parser.add_argument('--out', help='append the table to this markdown file')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = ' '.join(['python benchmarks/cl_negatives.py'] + (argv if argv is not None else sys.argv[1:]))
    if args.at_init:
        table = init_report(at_init(), command)
    else:
        table = report(measure(args.margins, anchor_noise=args.anchor_noise), command)
    print(table)
    if args.out:
        with open(args.out, 'a') as f:
            f.write('\n' + table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
