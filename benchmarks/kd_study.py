"""The distillation study: named student variants on the demo's data and a fixed teacher, on paired seeds.

Every run is an ordinary BasicSR option file trained with ``basicsr train`` in its own process, then scored on the
demo's held-out photos (coffee, chelsea; fixed sigma-25 noise) exactly as ``basicsr demo`` scores its students.
Seeds are paired: seed k gives every variant the same ``manual_seed``, hence the same random initialisation of the
student (where a variant does not replace it) and the same training batches and noise, so the difference between two
variants on seed k is a paired difference. The study reports, per variant, the mean PSNR, the paired difference to
``scratch`` and its standard deviation over the seeds.

Variants (``--variants``; ``--list`` prints them). A name ending in ``_init`` starts the student from the teacher
by weight selection: ``basicsr shrink`` for the plain students (SRModel), ``distill.init_from_teacher`` for the
distilled ones; the other variants start from the seed's random initialisation.

* ``scratch`` / ``scratch_init``: the student alone, L1 to the ground truth.
* ``output_kd`` / ``output_kd_init``: plus L1 to the teacher's output (``train.output_opt``).
* ``skd_paper`` / ``skd_paper_init``: the paper's form as the demo has it: L_GK on all 8 levels with the three
  branches (exact global spatial MCA), L_CL in the teacher's feature space with the degraded input as negative,
  alpha2 = alpha3 = 0.1.
* ``gk_init`` / ``gk_kd_init``: L_GK alone (all 8 levels, three branches, the spatial branch in 8 x 8 windows at the
  three full-resolution levels), without / with output-KD.

Each finished run leaves ``OUT/runs/<variant>_s<seed>.json``; a run whose file exists is not trained again, so an
interrupted study continues where it stopped. ``--report FILE`` writes the markdown table of everything scored.

Run one study at a time on a small machine (two PyTorch processes on two cores slow each other more than tenfold).

Usage:
    python benchmarks/kd_study.py --teacher T.pth --out study_out --variants scratch scratch_init --seeds 0 1 2 \
        --iters 600 --report docs/kd_study.md
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from copy import deepcopy
from os import path as osp

# 0.40x the demo teacher's parameters, cut in width only (dim 16 -> 10, the same depth and heads); see DESIGN.md
STUDENT = {'type': 'Restormer', 'dim': 10, 'num_blocks': [2, 2, 2, 2], 'num_refinement_blocks': 1,
           'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'BiasFree'}
LEVELS = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent', 'decoder_level3', 'decoder_level2',
          'decoder_level1', 'refinement')
FULL_RESOLUTION = ('encoder_level1', 'decoder_level1', 'refinement')
OUTPUT_KD = {'output_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
FEATURE_LOSS = {'type': 'SKDFeatureLoss', 'loss_weight': 0.1, 'mca_weight': 1.0, 'sigma': 1.0, 'temperature': 'auto',
                'branches': ['direct', 'channel', 'spatial'], 'spatial_softmax': 'contracted'}
PAPER = {'feature_opt': FEATURE_LOSS,
         'contrast_opt': {'type': 'SKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher',
                          'positive': 'teacher'}}
# name -> (what it tests, train options added to L1, distill.features pairs or None, whether SKDModel runs it)
VARIANTS = {
    'scratch': ('L1 to the ground truth', {}, None, False),
    'output_kd': ('+ L1 to the teacher output', OUTPUT_KD, None, True),
    'skd_paper': ('+ L_GK (8 levels, 3 branches, exact spatial) + L_CL (teacher space), 0.1 / 0.1', PAPER, 'exact',
                  True),
    'gk': ('+ L_GK (8 levels, 3 branches, 8x8 windows at full resolution), 0.1', {'feature_opt': FEATURE_LOSS},
           'window', True),
    'gk_kd': ('+ L_GK as gk + L1 to the teacher output', dict(OUTPUT_KD, feature_opt=FEATURE_LOSS), 'window', True),
}
VARIANTS.update({f'{name}_init': (f'{what}; initialised from the teacher', train, pairs, skd)
                 for name, (what, train, pairs, skd) in list(VARIANTS.items())})


def variant_options(variant, seed, folders, iters, teacher, init_weights):
    """The BasicSR option dict of one run."""
    from skd_basicsr.tools.demo import BUDGETS, TEACHER, stage_options

    opt = stage_options(f'study_{variant}_s{seed}', folders, dict(BUDGETS['full'], iter=iters), STUDENT, seed=seed)
    _, train, pairs, skd = VARIANTS[variant]
    init = variant.endswith('_init')
    if not skd:
        if init:
            opt['path']['pretrain_network_g'] = init_weights
        return opt
    opt['model_type'] = 'SKDModel'
    opt['network_t'] = deepcopy(TEACHER)
    opt['path'].update({'pretrain_network_t': teacher, 'param_key_t': 'params', 'strict_load_t': True})
    opt['train'].update(deepcopy(train))
    opt['distill'] = {'init_from_teacher': init}
    if pairs:
        window = {'spatial_window': 8} if pairs == 'window' else {}
        opt['distill']['features'] = [dict({'student': level, 'teacher': level}, **(
            window if level in FULL_RESOLUTION else {})) for level in LEVELS]
    return opt


def shrink_teacher(out, teacher):
    """Write the student initialised from the teacher with ``basicsr shrink`` (once; the selection has no seed)."""
    import yaml

    from skd_basicsr.tools.demo import stage_options

    path = osp.join(out, 'student_init.pth')
    if not osp.isfile(path):
        opt_path = osp.join(out, 'options', 'student.yml')
        os.makedirs(osp.dirname(opt_path), exist_ok=True)
        with open(opt_path, 'w') as f:
            yaml.safe_dump({'network_g': deepcopy(STUDENT)}, f, sort_keys=False)
        subprocess.run(['basicsr', 'shrink', '-opt', opt_path, '--teacher', teacher, '--out', path], check=True)
    return path


def run(variant, seed, args, folders, init_weights):
    """Train one run (unless its result exists) and return its result dict."""
    import yaml

    from skd_basicsr.tools.demo import evaluate, latest_weights, summarise

    result_path = osp.join(args.out, 'runs', f'{variant}_s{seed}.json')
    if osp.isfile(result_path):
        with open(result_path) as f:
            return json.load(f)
    opt = variant_options(variant, seed, folders, args.iters, args.teacher, init_weights)
    opt_path = osp.join(args.out, 'options', f'{opt["name"]}.yml')
    os.makedirs(osp.dirname(opt_path), exist_ok=True)
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    print(f'[kd_study] {variant} seed {seed}: basicsr train -opt {opt_path}', flush=True)
    start = time.time()
    subprocess.run(['basicsr', 'train', '-opt', opt_path], cwd=args.out, check=True)
    minutes = (time.time() - start) / 60
    per_image, _ = evaluate(STUDENT, latest_weights(args.out, opt['name']), folders)
    result = dict(summarise(per_image), variant=variant, seed=seed, iters=args.iters, minutes=round(minutes, 2))
    os.makedirs(osp.dirname(result_path), exist_ok=True)
    with open(result_path, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'[kd_study] {variant} seed {seed}: {result["psnr"]:.3f} dB in {minutes:.1f} min', flush=True)
    return result


def paired_summary(results, variants, seeds, base='scratch'):
    """Per variant: PSNR per seed, mean, and the paired difference to ``base`` (mean, sample std) over the seeds."""
    rows = {}
    for variant in variants:
        psnr = [results[(variant, s)]['psnr'] for s in seeds]
        row = {'psnr': psnr, 'mean': statistics.mean(psnr)}
        if variant != base and all((base, s) in results for s in seeds):
            diff = [results[(variant, s)]['psnr'] - results[(base, s)]['psnr'] for s in seeds]
            row['diff'] = diff
            row['diff_mean'] = statistics.mean(diff)
            row['diff_std'] = statistics.stdev(diff) if len(diff) > 1 else float('nan')
        rows[variant] = row
    return rows


def report(rows, seeds, args, teacher_psnr, noisy_psnr, minutes):
    seed_cols = ' | '.join(f'seed {s}' for s in seeds)
    lines = [f'| variant | {seed_cols} | mean | paired diff to scratch (mean ± std) | 2 std < diff? |',
             '| --- | ' + ' | '.join('---:' for _ in seeds) + ' | ---: | ---: | :---: |']
    for variant, row in rows.items():
        cells = ' | '.join(f'{p:.2f}' for p in row['psnr'])
        if 'diff' in row:
            diff = f'{row["diff_mean"]:+.2f} ± {row["diff_std"]:.2f}'
            passed = 'yes' if row['diff_mean'] > 2 * row['diff_std'] else 'no'
        else:
            diff, passed = '', ''
        lines.append(f'| {variant} | {cells} | {row["mean"]:.2f} | {diff} | {passed} |')
    command = ' '.join(['python', 'benchmarks/kd_study.py'] + [a for a in sys.argv[1:]])
    lines += ['', f'Teacher: {teacher_psnr:.2f} dB on the same photos; noisy input: {noisy_psnr:.2f} dB. Each student '
              f'{args.iters} iterations; {minutes:.1f} min for the runs made by this invocation.',
              f'Command: `{command}`']
    return '\n'.join(lines) + '\n'


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--teacher', required=True, help='teacher weights (the demo teacher config, key params)')
    parser.add_argument('--out', default='study_out', help='work folder. Default: study_out')
    parser.add_argument('--variants', nargs='+', default=['scratch', 'scratch_init'], choices=list(VARIANTS))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=600, help='iterations of every student. Default: 600')
    parser.add_argument('--report', help='write the markdown table here too')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    import numpy as np

    import skd_basicsr  # noqa: F401  (registries)
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img
    from skd_basicsr.tools.demo import TEACHER, evaluate, held_out_dataset, summarise, write_photos

    args.out = osp.abspath(args.out)
    args.teacher = osp.abspath(args.teacher)
    if not osp.isfile(args.teacher):
        raise SystemExit(f'--teacher {args.teacher}: no such file.')
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    folders = write_photos(args.out)
    init_weights = None
    if any(v.endswith('_init') and not VARIANTS[v][3] for v in args.variants):
        init_weights = shrink_teacher(args.out, args.teacher)
    results = {}
    for seed in args.seeds:  # seed-major, so that a cut-short study has complete pairs
        for variant in args.variants:
            results[(variant, seed)] = run(variant, seed, args, folders, init_weights)
    minutes = (time.time() - start) / 60

    teacher_psnr = summarise(evaluate(TEACHER, args.teacher, folders)[0])['psnr']
    dataset = held_out_dataset(folders, build_dataset)
    noisy_psnr = float(np.mean([calculate_psnr(tensor2img([item['lq']]), tensor2img([item['gt']]), 0)
                                for item in (dataset[i] for i in range(len(dataset)))]))
    rows = paired_summary(results, args.variants, args.seeds)
    table = report(rows, args.seeds, args, teacher_psnr, noisy_psnr, minutes)
    print(table)
    with open(osp.join(args.out, 'summary.json'), 'w') as f:
        json.dump({'rows': rows, 'teacher_psnr': teacher_psnr, 'noisy_psnr': noisy_psnr, 'iters': args.iters,
                   'seeds': args.seeds, 'student': STUDENT}, f, indent=2)
    if args.report:
        with open(args.report, 'w') as f:
            f.write(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
