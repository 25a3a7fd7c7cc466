"""Soak: a small SKD run killed with SIGKILL at random iterations, resumed each time, then finished; its final weights
must equal those of the run that was never interrupted (issue 22).

Every run is ``basicsr train`` in its own process (``python -m skd_basicsr.cli``), on the CPU, one thread, no loader
workers: the setting in which exact resume is promised. A killed run is a process that sends itself SIGKILL when the
training loop reaches the chosen iteration (no Python clean-up, no atexit, as a pre-empted job); the next start is
``--auto_resume``. The kill iterations are drawn at random (``--seed``); a kill lands between two iterations, right
after a save when the iteration before it was a checkpoint iteration (a kill during a save is in
tests/test_reliability.py).

Usage (from the repository root):
    python benchmarks/soak.py --kills 10 --out /tmp/soak
    python benchmarks/soak.py --kills 10 --out /tmp/soak --report benchmarks/RESULTS.md   # appends its section
"""
import argparse
import datetime
import os
import random
import subprocess
import sys
import time
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if __package__ in (None, ''):  # run as a file: the repository root makes `tests` and `benchmarks` importable
    sys.path.insert(0, REPO)

# `basicsr train` that SIGKILLs itself when the loop reaches iteration $SOAK_KILL_AT
KILLING = '''
import os
import signal
import sys

import skd_basicsr  # noqa: F401
from basicsr.models.base_model import BaseModel

update = BaseModel.update_learning_rate
kill_at = int(os.environ['SOAK_KILL_AT'])


def update_learning_rate(self, current_iter, *args, **kwargs):
    if current_iter >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return update(self, current_iter, *args, **kwargs)


BaseModel.update_learning_rate = update_learning_rate
from skd_basicsr.cli import main  # noqa: E402

sys.exit(main())
'''


def write_run(folder, total_iter, checkpoint_freq):
    """The tiny SKD option file of the tests (EMA, mixup and progressive patches on) and its data and teacher."""
    sys.path.insert(0, osp.join(REPO, 'tests'))
    from helpers import save_teacher, skd_options, tiny_restormer, write_noisy_pairs, write_options

    os.makedirs(folder, exist_ok=True)
    gt, lq = write_noisy_pairs(osp.join(folder, 'data'), count=8, size=32)
    teacher = osp.join(folder, 'teacher.pth')
    save_teacher(teacher, tiny_restormer(16))
    opt = skd_options('soak', gt, lq, teacher, total_iter=total_iter, checkpoint_freq=checkpoint_freq)
    opt['train'].update(ema_decay=0.9, mixing_augs={'mixup': True, 'mixup_beta': 1.2, 'use_identity': True},
                        progressive={'iters': [total_iter // 2, total_iter - total_iter // 2], 'gt_sizes': [16, 8],
                                     'mini_batch_sizes': [2, 1]})
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['logger']['print_freq'] = total_iter
    return write_options(osp.join(folder, 'soak.yml'), opt)


def train(folder, option_file, kill_at=None, resume=False):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    if kill_at is None:
        args = [sys.executable, '-m', 'skd_basicsr.cli']
    else:
        env['SOAK_KILL_AT'] = str(kill_at)
        args = [sys.executable, '-c', KILLING]
    args += ['train', '-opt', option_file] + (['--auto_resume'] if resume else [])
    proc = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def final_weights(folder):
    from skd_basicsr.platform.checkpoint import safe_torch_load

    return safe_torch_load(osp.join(folder, 'experiments', 'soak', 'models', 'net_g_latest.pth'))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--kills', type=int, default=10)
    parser.add_argument('--iters', type=int, default=60)
    parser.add_argument('--checkpoint', type=int, default=5, help='save_checkpoint_freq (and val_freq)')
    parser.add_argument('--seed', type=int, default=0, help='of the kill iterations')
    parser.add_argument('--out', default='soak_out')
    parser.add_argument('--report', help='append the result to this markdown file')
    args = parser.parse_args(argv)
    import torch

    start = time.time()
    whole_dir, soak_dir = osp.join(args.out, 'whole'), osp.join(args.out, 'killed')
    status, log = train(whole_dir, write_run(whole_dir, args.iters, args.checkpoint))
    if status != 0:
        raise SystemExit(f'the uninterrupted run failed:\n{log[-3000:]}')
    option_file = write_run(soak_dir, args.iters, args.checkpoint)
    rng = random.Random(args.seed)
    kills = sorted(rng.sample(range(2, args.iters), args.kills))
    statuses = []
    for i, kill_at in enumerate(kills):
        status, log = train(soak_dir, option_file, kill_at=kill_at, resume=i > 0)
        statuses.append(status)
        if status != -9:
            raise SystemExit(f'the run to be killed at {kill_at} ended with status {status}:\n{log[-3000:]}')
    status, log = train(soak_dir, option_file, resume=True)
    if status != 0:
        raise SystemExit(f'the last resume failed:\n{log[-3000:]}')
    whole, soaked = final_weights(whole_dir), final_weights(soak_dir)
    differing = [f'{key}.{name}' for key in ('params', 'params_ema') for name, value in whole[key].items()
                 if not torch.equal(value, soaked[key][name])]
    largest = max((float((whole[k][n] - soaked[k][n]).abs().max()) for k in ('params', 'params_ema')
                   for n in whole[k]), default=0.0)
    minutes = (time.time() - start) / 60
    verdict = 'bit-identical' if not differing else f'{len(differing)} tensors differ (largest {largest:.3e})'
    lines = [f'## Soak: exact resume after {args.kills} SIGKILLs, {datetime.date.today()}', '',
             f'Command: `python benchmarks/soak.py --kills {args.kills} --iters {args.iters} --checkpoint '
             f'{args.checkpoint} --seed {args.seed} --out {args.out}`', '',
             f'torch {torch.__version__}, CPU, one thread, no loader workers. The tiny SKD run of the tests (EMA, '
             f'mixup, progressive patches), {args.iters} iterations, a training state every {args.checkpoint}, '
             f'killed with SIGKILL at iterations {kills} and resumed with --auto_resume after each kill '
             f'(exit statuses {sorted(set(statuses))}), then finished.', '',
             f'- Final weights (params and params_ema) against the uninterrupted run: **{verdict}**.',
             f'- {minutes:.1f} min in all.', '']
    print('\n'.join(lines))
    if args.report:
        with open(args.report, 'a') as f:
            f.write('\n' + '\n'.join(lines))
    return 0 if not differing else 1


if __name__ == '__main__':
    sys.exit(main())
