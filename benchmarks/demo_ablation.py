"""Variants of the demo's student runs, scored on the same held-out photos: what each SKD setting gives.

Run ``basicsr demo --out DIR`` first: it loads the teacher and writes the student option files
(``DIR/options/demo_student_*.yml``). Each variant here is one of those files with ``--force_yml`` changes; it is
trained with ``basicsr train`` (same data, seed and teacher as the demo) and scored as the demo scores its
students. Results are appended to ``DIR/ablation.json`` (one entry per variant, re-running a variant replaces it)
and the table of everything scored so far is printed.

Run variants one at a time on a small machine (two PyTorch processes on two cores slow each other down more
than tenfold).

Usage:
    python benchmarks/demo_ablation.py --demo DIR --run cl_0.01 gk_only_w1
    python benchmarks/demo_ablation.py --demo DIR --list
"""
import argparse
import json
import os
import subprocess
import sys
import time
from os import path as osp


def budget(iters):
    return [f'train:total_iter={iters}', f'train:scheduler:periods=[{iters}]', f'logger:print_freq={iters // 5}']


# name -> (demo option file it starts from, --force_yml entries, what it tests)
VARIANTS = {
    'cl_0.01': ('skd_paper', ['train:contrast_opt:loss_weight=0.01'], 'alpha3 0.01 (L_GK kept at 0.1)'),
    'cl_0.001': ('skd_paper', ['train:contrast_opt:loss_weight=0.001'], 'alpha3 0.001 (L_GK kept at 0.1)'),
    'cl_both': ('skd_paper', ['train:contrast_opt:positive=both'], 'L_CL positive: both teacher output and GT'),
    'cl_gt': ('skd_paper', ['train:contrast_opt:positive=gt'], 'L_CL positive: GT'),
    'gk_only_w1': ('skd_paper', ['train:contrast_opt:loss_weight=0', 'train:feature_opt:loss_weight=1.0'],
                   'L_GK alone at alpha2 1.0 (sigma 1)'),
    'gk_only_levels3': ('skd_paper', ['train:contrast_opt:loss_weight=0',
                                      'distill:features=[encoder_level1, latent, refinement]'],
                        'L_GK alone, 3 levels (encoder_level1, latent, refinement)'),
    'temp_1e-6': ('skd_paper', ['train:contrast_opt:loss_weight=0', 'train:feature_opt:temperature=1.0e-6'],
                  'L_GK alone, MCA temperature 1e-6'),
    'scratch_1800': ('scratch', budget(1800), 'scratch student, 1800 iterations'),
    'output_kd_1800': ('output_kd', budget(1800), 'output-KD student, 1800 iterations'),
    'skd_1800': ('skd', budget(1800), 'SKD as the demo recommends it, 1800 iterations'),
}


def run_variant(demo, name):
    import skd_basicsr  # noqa: F401  (registries)
    from skd_basicsr.tools.demo import STUDENT, evaluate, latest_weights, summarise

    base, entries, what = VARIANTS[name]
    opt_file = osp.join(demo, 'options', f'demo_student_{base}.yml')
    if not osp.isfile(opt_file):
        raise SystemExit(f'{opt_file} does not exist: run `basicsr demo --out {demo}` first.')
    exp_name = f'ablation_{name}'
    cmd = ['basicsr', 'train', '-opt', opt_file, '--force_yml', f'name={exp_name}'] + entries
    print('[ablation] ' + ' '.join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, cwd=demo, check=True)
    minutes = (time.time() - start) / 60
    per_image, _ = evaluate(STUDENT, latest_weights(demo, exp_name), {'val': osp.join(demo, 'data', 'val')})
    return dict(summarise(per_image), base=base, force_yml=entries, what=what, minutes=round(minutes, 2))


def read_json(path):
    """The JSON object in ``path``, or {} when there is no such file yet."""
    if not osp.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def table(results, demo_results):
    from skd_basicsr.tools.demo import STUDENTS

    lines = ['| variant | what | PSNR (dB) | SSIM | minutes |', '| --- | --- | ---: | ---: | ---: |']
    for key in ('teacher', ) + tuple(STUDENTS):
        if key in demo_results:
            lines.append(f'| demo {key} | demo default | {demo_results[key]["psnr"]:.2f} | '
                         f'{demo_results[key]["ssim"]:.4f} | |')
    for name, r in results.items():
        lines.append(f'| {name} | {r["what"]} | {r["psnr"]:.2f} | {r["ssim"]:.4f} | {r["minutes"]:.1f} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--demo', required=True, help='a folder written by `basicsr demo --out DIR`')
    parser.add_argument('--run', nargs='*', default=[], choices=sorted(VARIANTS), help='variants to train and score')
    parser.add_argument('--list', action='store_true', help='list the variants')
    args = parser.parse_args(argv)
    if args.list:
        for name, (base, entries, what) in VARIANTS.items():
            print(f'{name}: {what} (from demo_student_{base}.yml; {" ".join(entries)})')
        return 0
    demo = osp.abspath(args.demo)
    store = osp.join(demo, 'ablation.json')
    results = read_json(store)
    for name in args.run:
        results[name] = run_variant(demo, name)
        with open(store + '.tmp', 'w') as f:
            json.dump(results, f, indent=2)
        os.replace(store + '.tmp', store)
        print(f'[ablation] {name}: PSNR {results[name]["psnr"]:.2f} dB, SSIM {results[name]["ssim"]:.4f}', flush=True)
    demo_json = osp.join(demo, 'results.json')
    print(table(results, read_json(demo_json)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
