"""The distillation study: named student variants on the demo's data and a fixed teacher, on paired seeds.

A study runs in one regime (``--regime``, :mod:`benchmarks.study.regimes`): ``width`` (the demo's student and
teacher, the default), ``depth`` (a student of the teacher's width at a quarter of its depth) or ``cross_family`` (a
plain CNN student). The regime gives the student, the teacher and its weights, the feature pairs, and the learning
rate and iterations chosen for its scratch student; ``--lr`` and ``--iters`` override them (the sweep that chose
them). A work folder holds the runs of one regime, learning rate and budget: a run of another is refused.

Every run is an ordinary BasicSR option file trained with ``basicsr train`` in its own process, then scored on the
demo's held-out photos (coffee, chelsea; fixed sigma-25 noise) exactly as ``basicsr demo`` scores its students.
Seeds are paired: seed k gives every variant the same ``manual_seed``, hence the same random initialisation of the
student (where a variant does not replace it) and the same training batches and noise, so the difference between two
variants on seed k is a paired difference. The study reports, per variant, the mean PSNR and the paired difference to
``scratch`` and to ``scratch_init`` (where those ran), with its standard deviation over the seeds.

Variants (``--variants``; ``--list`` prints them) are those of :mod:`benchmarks.study.variants`: the variants of
``basicsr demo``, so that a setting the study recommends is the one the demo runs, and the candidates beyond them.
A name ending in ``_init`` starts the student from the teacher by weight selection (``basicsr shrink`` for the
plain students, ``distill.init_from_teacher`` for the distilled ones); the others start from the seed's random
initialisation.

Each finished run leaves ``OUT/runs/<variant>_s<seed>.json``; a run whose file exists is not trained again, so an
interrupted study continues where it stopped. ``--report FILE`` writes the markdown table of everything scored.
``--collect DIR [DIR ...] --json FILE`` gathers the summaries of finished studies into one file per regime (the
sweep, the main study, the longer budget, and the recommendation; ``docs/kd_study.json``), without training.
``--train-teacher`` trains the regime's teacher with the demo teacher's recipe and writes its weights where the
regime reads them (the ``depth`` regime's; the others use the demo's shipped teacher).

Run one study at a time on a small machine (two PyTorch processes on two cores slow each other more than tenfold).
On a GPU machine ``--num-gpu 1 --jobs N`` trains N runs at once on the one GPU (small students leave it mostly
idle, so several processes share it well); ``--workers`` gives each run data-loading processes. Both change the
batches' random draws (BasicSR seeds each worker), the same way for every variant, so runs stay paired within a
study, but numbers from different settings of ``--workers`` or devices are not paired with each other.
``--no-train`` reports the runs already finished (the complete seeds of each variant) without training.

Usage (from the repository root; ``python -m benchmarks.kd_study`` works too):
    python benchmarks/kd_study.py --out study_out --variants scratch scratch_init --seeds 0 1 2 --iters 600
    python benchmarks/kd_study.py --regime cross_family --out study/cross_family --seeds 0 1 2
    python benchmarks/kd_study.py --regime depth --train-teacher --out study/depth_teacher
    python benchmarks/kd_study.py --collect study/* --json docs/kd_study.json
    python benchmarks/kd_study.py --out study_gpu --num-gpu 1 --jobs 8 --workers 1 --variants ... --iters 2400
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if __package__ in (None, ''):  # run as a file: the repository root makes `benchmarks` importable
    sys.path.insert(0, REPO)

from benchmarks.study.regimes import REGIMES, regime_pair  # noqa: E402


RUNNING = set()  # the training processes of the runs in progress
STOPPING = []  # set on SIGTERM: no new run starts


def stop_running(signum, frame):
    """On SIGTERM (``timeout``, a batch system), stop the runs in progress too instead of leaving them orphaned."""
    STOPPING.append(signum)
    for proc in list(RUNNING):
        proc.terminate()
    raise SystemExit(128 + signum)


def finished_run(result_path, args):
    """The result of a finished run, or None; a run of another regime, learning rate or budget is refused (runs
    made before regimes existed are the width regime's at the learning rate of its time, 1e-3)."""
    if not osp.isfile(result_path):
        return None
    with open(result_path) as f:
        result = json.load(f)
    made = (result.get('regime', 'width'), result.get('lr', 1e-3), result['iters'])
    if made != (args.regime, args.pair.lr, args.iters):
        raise SystemExit(f'{result_path} is a run of regime {made[0]} at lr {made[1]:g}, {made[2]} iterations, not of '
                         f'regime {args.regime} at lr {args.pair.lr:g}, {args.iters} iterations: use another --out.')
    return result


def run(variant, seed, args, folders, init_weights):
    """Train one run (unless its result exists) and return its result dict."""
    import yaml

    from skd_basicsr.tools.demo import BUDGETS, evaluate, latest_weights, student_options, summarise

    from benchmarks.study.variants import VARIANTS

    result_path = osp.join(args.out, 'runs', f'{variant}_s{seed}.json')
    result = finished_run(result_path, args)
    if result is not None:
        return result
    if args.no_train or STOPPING:
        return None
    opt = student_options(VARIANTS[variant], f'study_{variant}_s{seed}', folders,
                          dict(BUDGETS['full'], iter=args.iters), args.teacher, init_weights, seed=seed,
                          pair=args.pair)
    opt['num_gpu'] = args.num_gpu
    opt['datasets']['train']['num_worker_per_gpu'] = args.workers
    opt_path = osp.join(args.out, 'options', f'{opt["name"]}.yml')
    os.makedirs(osp.dirname(opt_path), exist_ok=True)
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    print(f'[kd_study] {variant} seed {seed}: basicsr train -opt {opt_path}', flush=True)
    start = time.time()
    # `basicsr train` with the study's types registered (benchmarks.study.train), the repository on the path
    # runs trained at once write their output to OUT/logs/<name>.txt instead of interleaving it on the console
    log_path = osp.join(args.out, 'logs', f'{opt["name"]}.txt')
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, 'w') if args.jobs > 1 else open(os.devnull) as log:
        redirect = {'stdout': log, 'stderr': subprocess.STDOUT} if args.jobs > 1 else {}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
        proc = subprocess.Popen([sys.executable, '-m', 'benchmarks.study.train', '-opt', opt_path],
                                cwd=args.out, env=env, **redirect)
        RUNNING.add(proc)
        try:
            proc.wait()
        finally:
            RUNNING.discard(proc)
    if proc.returncode != 0:  # reported and left out; the other runs go on
        print(f'[kd_study] {variant} seed {seed}: basicsr train failed with exit status {proc.returncode} (see '
              f'{log_path if args.jobs > 1 else "above"})', flush=True)
        return None
    minutes = (time.time() - start) / 60
    per_image, _ = evaluate(args.pair.student, latest_weights(args.out, opt['name']), folders)
    result = dict(summarise(per_image), variant=variant, seed=seed, iters=args.iters, regime=args.regime,
                  lr=args.pair.lr, minutes=round(minutes, 2))
    os.makedirs(osp.dirname(result_path), exist_ok=True)
    with open(result_path, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'[kd_study] {variant} seed {seed}: {result["psnr"]:.3f} dB in {minutes:.1f} min', flush=True)
    return result


# a variant is compared with the student alone and with output-KD, from a random start and from the teacher's
# weights (every candidate of the study is output_kd or output_kd_init plus something)
BASES = ('scratch', 'output_kd', 'scratch_init', 'output_kd_init')


def paired_summary(results, variants, seeds):
    """Per variant: PSNR per seed, mean, and the paired difference to each base in :data:`BASES` that was run
    (mean and sample std over the seeds), under ``row['vs'][base]``."""
    rows = {}
    for variant in variants:
        psnr = [results[(variant, s)]['psnr'] for s in seeds]
        row = {'psnr': psnr, 'mean': statistics.mean(psnr), 'vs': {}}
        for base in BASES:
            if variant == base or not all((base, s) in results for s in seeds):
                continue
            diff = [results[(variant, s)]['psnr'] - results[(base, s)]['psnr'] for s in seeds]
            row['vs'][base] = {'diff': diff, 'mean': statistics.mean(diff),
                               'std': statistics.stdev(diff) if len(diff) > 1 else float('nan')}
        rows[variant] = row
    return rows


def _paired_cell(row, base):
    """'+1.14 ± 0.15 (yes)': the mean paired margin, its std, and whether the margin exceeds twice the std."""
    if base not in row['vs']:
        return ''
    d = row['vs'][base]
    return f'{d["mean"]:+.2f} ± {d["std"]:.2f} ({"yes" if d["mean"] > 2 * d["std"] else "no"})'


def report(rows, seeds, args, teacher_psnr, noisy_psnr, minutes):
    bases = [base for base in BASES if base in rows]
    seed_cols = ' | '.join(f'seed {s}' for s in seeds)
    lines = [f'| variant | {seed_cols} | mean | ' + ' | '.join(f'vs {base}' for base in bases) + ' |',
             '| --- | ' + ' | '.join('---:' for _ in seeds) + ' | ---: | ' + ' | '.join('---:' for _ in bases) + ' |']
    for variant, row in rows.items():
        cells = ' | '.join(f'{p:.2f}' for p in row['psnr'])
        paired = ' | '.join(_paired_cell(row, base) for base in bases)
        lines.append(f'| {variant} | {cells} | {row["mean"]:.2f} | {paired} |')
    lines += ['', 'vs X: the paired difference to X over the seeds, mean ± sample std (yes: the mean exceeds twice '
              'the std).',
              f'Regime {args.regime}: {REGIMES[args.regime].what}. Teacher: {teacher_psnr:.2f} dB on the same photos; '
              f'noisy input: {noisy_psnr:.2f} dB. Each student {args.iters} iterations at lr {args.pair.lr:g}; '
              f'{minutes:.1f} min for the runs made by this invocation.',
              f'Command: `{command_line()}`']
    return '\n'.join(lines) + '\n'


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--regime', choices=list(REGIMES), default='width',
                        help='student, teacher and budget (benchmarks/study/regimes.py). Default: width')
    parser.add_argument('--teacher', help='teacher weights (key params). Default: the regime\'s')
    parser.add_argument('--out', default='study_out', help='work folder. Default: study_out')
    parser.add_argument('--variants', nargs='+', help='variants of benchmarks/study/variants.py (--list prints them). '
                        'Default: the regime\'s')
    parser.add_argument('--list', action='store_true', help='print the variants and exit')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--iters', type=int, help='iterations of every student. Default: the regime\'s')
    parser.add_argument('--lr', type=float, help='learning rate of every student. Default: the regime\'s')
    parser.add_argument('--train-teacher', action='store_true',
                        help='train the regime\'s teacher (demo teacher recipe, 8000 iterations) into its weights file')
    parser.add_argument('--longer-from', metavar='DIR', help='the longer-budget check of the study in DIR: its two '
                        'best variants and scratch (and output-KD from the same start where one of them has SKD\'s '
                        'terms, to judge it), at 3 times its iterations, on its seeds, its regime and learning rate')
    parser.add_argument('--collect', nargs='+', metavar='DIR', help='gather the summary.json of these study folders '
                        'into --json, without training')
    parser.add_argument('--json', help='with --collect: the file to write (docs/kd_study.json)')
    parser.add_argument('--report', help='write the markdown table here too')
    parser.add_argument('--num-gpu', type=int, default=0, help='num_gpu of every run (0: CPU). Default: 0')
    parser.add_argument('--jobs', type=int, default=1, help='runs trained at once. Default: 1')
    parser.add_argument('--workers', type=int, default=0, help='num_worker_per_gpu of every run. Default: 0')
    parser.add_argument('--no-train', action='store_true', help='report the finished runs only')
    parser.add_argument('--order', choices=('seed', 'variant'), default='seed',
                        help='train seed by seed (every variant of seed 0 first) or variant by variant, in the order '
                        'given. Default: seed')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, stop_running)
    from benchmarks.study.variants import VARIANTS

    if args.list:
        print('\n'.join(f'{name:<16}L1 to the ground truth + {v.what}' for name, v in VARIANTS.items()))
        return 0
    if args.collect:
        if not args.json:
            raise SystemExit('--collect needs --json FILE, the file to write.')
        collect(args.collect, args.json)
        return 0
    if args.longer_from:
        longer_budget(args)
    regime = REGIMES[args.regime]
    args.pair = regime_pair(regime, args.lr)
    args.iters = args.iters or regime.iters
    args.variants = args.variants or list(regime.variants)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f'--variants: unknown {unknown}; --list prints the variants.')
    if not regime.init and any(VARIANTS[v].init for v in args.variants):
        raise SystemExit(f'--variants: regime {args.regime} has no weight selection from its teacher '
                         f'({regime.what}); leave out the _init variants.')

    from skd_basicsr.tools.demo import evaluate, held_out_pairs, noisy_psnr, shrink_student, summarise, write_photos

    args.out = osp.abspath(args.out)
    args.teacher = osp.abspath(args.teacher or regime.teacher_weights)
    os.makedirs(args.out, exist_ok=True)
    if args.train_teacher:
        return train_teacher(args, regime)
    if not osp.isfile(args.teacher):
        raise SystemExit(f'--teacher {args.teacher}: no such file. The {args.regime} regime\'s teacher is made by '
                         f'`python benchmarks/kd_study.py --regime {args.regime} --train-teacher --out FOLDER`.')
    start = time.time()
    folders = write_photos(args.out)
    init_weights = None
    if any(VARIANTS[v].init and not VARIANTS[v].skd for v in args.variants):
        init_weights = shrink_student(args.out, args.teacher, args.pair.student)
    # seed-major: a study cut short has complete pairs of every variant on its first seeds; variant-major: the
    # first variants have every seed
    if args.order == 'seed':
        tasks = [(variant, seed) for seed in args.seeds for variant in args.variants]
    else:
        tasks = [(variant, seed) for variant in args.variants for seed in args.seeds]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        finished = pool.map(lambda task: run(*task, args, folders, init_weights), tasks)
        results = {task: result for task, result in zip(tasks, finished) if result is not None}
    minutes = (time.time() - start) / 60
    if args.no_train:  # keep the seeds that every base and variant finished
        args.seeds = [s for s in args.seeds if all((v, s) in results for v in args.variants if v in BASES)]
        args.variants = [v for v in args.variants if all((v, s) in results for s in args.seeds)]
        if not args.seeds or not args.variants:
            raise SystemExit(f'--no-train: no complete seeds in {args.out}/runs yet.')

    teacher_psnr = summarise(evaluate(args.pair.teacher, args.teacher, folders)[0])['psnr']
    noisy_input_psnr = noisy_psnr(held_out_pairs(folders))
    rows = paired_summary(results, args.variants, args.seeds)
    table = report(rows, args.seeds, args, teacher_psnr, noisy_input_psnr, minutes)
    print(table)
    with open(osp.join(args.out, 'summary.json'), 'w') as f:
        json.dump({'rows': rows, 'teacher_psnr': teacher_psnr, 'noisy_psnr': noisy_input_psnr, 'iters': args.iters,
                   'seeds': args.seeds, 'regime': args.regime, 'lr': args.pair.lr, 'student': args.pair.student,
                   'teacher': args.pair.teacher, 'command': command_line()}, f, indent=2)
    if args.report:
        with open(args.report, 'w') as f:
            f.write(table)
    return 0


def longer_budget(args):
    """Set ``args`` for the longer-budget check of the study in ``args.longer_from`` (see ``--longer-from``)."""
    path = osp.join(args.longer_from, 'summary.json')
    if not osp.isfile(path):
        raise SystemExit(f'--longer-from: {path} does not exist (run that study, or --no-train there, first).')
    with open(path) as f:
        summary = json.load(f)
    from benchmarks.study.variants import VARIANTS

    rows = summary['rows']
    best = sorted((v for v in rows if v != 'scratch'), key=lambda v: rows[v]['mean'], reverse=True)[:2]
    # an SKD variant is judged against output-KD from the same start (recommend()): that base runs too
    bases = [_base(VARIANTS[v]) for v in best if _skd(VARIANTS[v])]
    args.variants = list(dict.fromkeys(['scratch'] + best + [b for b in bases if b in rows]))
    args.regime, args.lr = summary.get('regime', 'width'), summary.get('lr', 1e-3)
    args.iters, args.seeds = 3 * summary['iters'], summary['seeds']


def collect(folders, json_path):
    """Write ``json_path``: per regime, its networks, the sweep that chose its learning rate and budget, every variant
    of its main study (per-seed PSNR, mean, paired differences), the recommendation, and the longer-budget check.

    A folder's role follows from its summary: at the regime's learning rate and budget it is the main study, at three
    times the budget the longer-budget check, anything else a point of the sweep (its scratch row); a study at another
    learning rate or budget with more than a scratch row is also kept whole under ``other`` (a regime's earlier main
    study, from before a sweep moved its learning rate).
    """
    import skd_basicsr  # noqa: F401  (before basicsr)
    from basicsr.archs import build_network

    from benchmarks.study.variants import VARIANTS

    def params(net):
        return sum(p.numel() for p in build_network(dict(net)).parameters())

    regimes = {}
    for folder in folders:
        path = osp.join(folder, 'summary.json')
        if not osp.isfile(path):
            raise SystemExit(f'--collect: {path} does not exist (run the study, or --no-train, there first).')
        with open(path) as f:
            summary = json.load(f)
        name = summary.get('regime', 'width')
        regime = REGIMES[name]
        entry = regimes.setdefault(name, {
            'what': regime.what, 'student': regime.pair.student, 'teacher': regime.pair.teacher,
            'params_ratio': round(params(regime.pair.student) / params(regime.pair.teacher), 4),
            'lr': regime.pair.lr, 'iters': regime.iters, 'sweep': [], 'main': None, 'longer': None, 'other': []})
        lr = summary.get('lr', 1e-3)
        study = {key: summary[key] for key in ('seeds', 'iters', 'teacher_psnr', 'noisy_psnr', 'rows')}
        study.update(lr=lr, command=summary.get('command'), folder=osp.relpath(folder))
        at_rate = lr == regime.pair.lr
        role = {regime.iters: 'main', 3 * regime.iters: 'longer'}.get(summary['iters']) if at_rate else None
        if role and entry[role]:
            raise SystemExit(f'--collect: {entry[role]["folder"]} and {osp.relpath(folder)} are both the {role} study '
                             f'of regime {name} (lr {lr:g}, {summary["iters"]} iterations); pass one of them.')
        if role:
            entry[role] = study
        else:
            if 'scratch' in summary['rows']:
                entry['sweep'].append(dict(lr=lr, iters=summary['iters'], seeds=summary['seeds'],
                                           psnr=summary['rows']['scratch']['psnr'],
                                           mean=summary['rows']['scratch']['mean'], folder=osp.relpath(folder)))
            if set(summary['rows']) - {'scratch'}:
                entry['other'].append(study)
    for entry in regimes.values():
        entry['sweep'].sort(key=lambda point: (point['iters'], point['lr']))
        entry['other'].sort(key=lambda study: (study['iters'], study['lr']))
        if entry['main']:
            entry['recommended'] = dict(recommend(entry['main']['rows'], VARIANTS), iters=entry['main']['iters'])
        # the longer-budget check, closer to the budgets users train with, has the last word where it can judge: where
        # it ran an SKD variant beside output-KD from the same start
        if entry['longer'] and any(_skd(VARIANTS[v]) and _base(VARIANTS[v]) in entry['longer']['rows']
                                   for v in entry['longer']['rows']):
            entry['recommended'] = dict(recommend(entry['longer']['rows'], VARIANTS), iters=entry['longer']['iters'])
    os.makedirs(osp.dirname(osp.abspath(json_path)), exist_ok=True)
    with open(json_path, 'w') as f:
        json.dump(regimes, f, indent=2)
    print(f'[kd_study] wrote {json_path}: ' + ', '.join(
        f'{name} ({"main" if e["main"] else "no main"}, {len(e["sweep"])} sweep points, '
        f'{"longer" if e["longer"] else "no longer"}, {len(e["other"])} other)' for name, e in regimes.items()))


def _skd(variant):
    """Whether a variant trains with SKD's terms (L_GK, L_CL)."""
    return 'feature_opt' in variant.train or 'contrast_opt' in variant.train


def _base(variant):
    """The output-KD variant from the same start: what an SKD variant must beat."""
    return 'output_kd_init' if variant.init else 'output_kd'


def recommend(rows, variants):
    """The recommendation of a study, as issue 21 sets the rule: SKD's terms (L_GK, L_CL) are recommended only
    where they win, that is where a variant with them beats output-KD from the same start by a mean paired margin
    above twice its std. The recommended variant is the best winner by mean PSNR if any wins, else the best variant
    without SKD's terms. ``best_mean`` is the highest mean whatever its terms (a lead within the spread is no win)."""
    def skd(name):
        return _skd(variants[name])

    wins = []
    for name, row in rows.items():
        base = _base(variants[name])
        if skd(name) and base in row['vs']:
            d = row['vs'][base]
            if d['mean'] > 2 * d['std']:
                wins.append({'variant': name, 'vs': base, 'mean': d['mean'], 'std': d['std']})
    candidates = [w['variant'] for w in wins] or [v for v in rows if not skd(v)]
    best = max(candidates, key=lambda v: rows[v]['mean'])
    best_mean = max(rows, key=lambda v: rows[v]['mean'])
    return {'variant': best, 'mean': rows[best]['mean'], 'skd_terms_that_win': wins,
            'best_mean': {'variant': best_mean, 'mean': rows[best_mean]['mean']}}


def train_teacher(args, regime):
    """Train the regime's teacher with the demo teacher's recipe in ``args.out`` and write its weights (float16, key
    ``params``) to ``args.teacher``; the held-out PSNR every 500 iterations is in the training log."""
    import torch

    from skd_basicsr.platform.checkpoint import atomic_torch_save
    from skd_basicsr.tools.demo import BUDGETS, run_stage, teacher_options, write_photos

    if osp.isfile(args.teacher):
        raise SystemExit(f'{args.teacher} exists; remove it to train the {args.regime} regime\'s teacher again.')
    opt = teacher_options(write_photos(args.out), BUDGETS['full']['teacher_iter'], regime.pair.teacher,
                          f'study_{args.regime}_teacher')
    weights = run_stage(opt, args.out)
    params = torch.load(weights, map_location='cpu', weights_only=True)['params']
    # float16 halves the committed file; every run of the study loads this file, so they share its rounding
    atomic_torch_save({'params': {k: v.half() for k, v in params.items()}}, args.teacher)
    print(f'[kd_study] wrote {args.teacher} (from {weights}; its training log holds the held-out PSNR curve)')
    return 0


def command_line():
    """The command that trains this study (without the flags that only report)."""
    argv = list(sys.argv[1:])
    for flag, values in (('--no-train', 0), ('--report', 1)):
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 1 + values]
    return ' '.join(['python', 'benchmarks/kd_study.py'] + argv)


if __name__ == '__main__':
    sys.exit(main())
