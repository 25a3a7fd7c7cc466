"""What ``cache_data: true`` saves a training loader: the demo's photos read with and without decoded images in memory.

The demo's training set (five scikit-image photos of at most 512 pixels, ``skd_basicsr.tools.demo.write_photos``)
is read through the demo's own dataset options (``stage_options``: GaussianDenoiseDataset, sigma 25, random crops,
flips and rotations, ``dataset_enlarge_ratio`` 100) and BasicSR's ``build_dataloader`` with its ``EnlargedSampler``,
as a training run reads it. Each repeat times ``--batches`` batches from a fresh iterator (worker start-up included)
in each mode, the modes round-robin so that the machine's drift hits them alike; medians are reported:

* ``off``: ``cache_data: false``, every sample decodes its PNG;
* ``cache``: ``cache_data: true``, every image decoded once when the dataset is built, before the loader starts its
  workers (they share the decoded pages);
* ``per_worker`` (with workers only): ``cache_data: false``, and each worker decodes every image into its own copy
  when it starts (``worker_init_fn``), the alternative the shipped cache was chosen against.

With workers, the memory of each worker is read from ``/proc/PID/smaps_rollup`` after the last batch: its
unique set size (USS, the pages only it holds: what the cache costs per worker) and its proportional set size.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_data_cache.py --workers 0 2
"""
import argparse
import statistics
import sys
import tempfile
import time
from os import path as osp

import torch

MIB = 2**20


def train_options(folder, gt_size, batch, workers, cache):
    """The demo's training-set options with ``cache_data`` and ``num_worker_per_gpu`` set."""
    from skd_basicsr.tools.demo import BUDGETS, STUDENT, stage_options

    budget = dict(BUDGETS['full'], iter=1, gt_size=gt_size, batch=batch)
    opt = stage_options('bench', folder, budget, STUDENT)['datasets']['train']
    opt.update(phase='train', cache_data=cache, num_worker_per_gpu=workers)
    return opt


def decode_in_each_worker(worker_id):
    """``worker_init_fn`` of ``per_worker``: the worker's copy of the dataset decodes every image for itself."""
    torch.utils.data.get_worker_info().dataset.cache_images()


def memory_kib(pid):
    """(USS, PSS) of process ``pid`` in KiB, from /proc/PID/smaps_rollup."""
    fields = {}
    with open(f'/proc/{pid}/smaps_rollup') as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == 'kB':
                fields[parts[0].rstrip(':')] = int(parts[1])
    return fields['Private_Clean'] + fields['Private_Dirty'], fields['Pss']


def run_mode(folders, args, workers, mode):
    """Seconds to build the dataset, seconds for ``args.batches`` batches, and (USS, PSS) KiB of each worker."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler

    opt = train_options(folders, args.gt_size, args.batch, workers, mode == 'cache')
    start = time.perf_counter()
    dataset = build_dataset(opt)
    built = time.perf_counter() - start
    sampler = EnlargedSampler(dataset, 1, 0, opt['dataset_enlarge_ratio'])
    loader = build_dataloader(dataset, opt, num_gpu=0, dist=False, sampler=sampler, seed=0)
    if mode == 'per_worker':
        loader.worker_init_fn = decode_in_each_worker
    start = time.perf_counter()
    batches = iter(loader)
    for _ in range(args.batches):
        next(batches)
    seconds = time.perf_counter() - start
    memory = [memory_kib(w.pid) for w in getattr(batches, '_workers', [])]
    del batches
    return built, seconds, memory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workers', type=int, nargs='+', default=[0], help='num_worker_per_gpu values. Default: 0')
    parser.add_argument('--batches', type=int, default=100, help='batches per timed loop. Default: 100')
    parser.add_argument('--repeats', type=int, default=5, help='timed loops per mode. Default: 5')
    parser.add_argument('--gt-size', type=int, default=48, help='crop side (the demo: 48). Default: 48')
    parser.add_argument('--batch', type=int, default=4, help='batch size (the demo: 4). Default: 4')
    args = parser.parse_args(argv)
    if __package__ in (None, ''):  # run as a file: the repository root makes the package importable
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    import skd_basicsr  # noqa: F401  (registries, compatibility layer)
    from skd_basicsr.tools.demo import write_photos

    rows = []
    with tempfile.TemporaryDirectory() as out:
        folders = write_photos(out)
        for workers in args.workers:
            modes = ('off', 'cache') + (('per_worker', ) if workers else ())
            runs = {mode: [] for mode in modes}
            for repeat in range(args.repeats):
                for mode in modes:
                    runs[mode].append(run_mode(folders, args, workers, mode))
                    print(f'[bench] workers {workers} repeat {repeat + 1}/{args.repeats} {mode}: '
                          f'{runs[mode][-1][1]:.2f} s', flush=True)
            for mode in modes:
                built = statistics.median(r[0] for r in runs[mode])
                seconds = [r[1] for r in runs[mode]]
                uss = pss = '-'
                if workers:
                    uss = f'{statistics.median(sum(m[0] for m in r[2]) / len(r[2]) for r in runs[mode]) / 1024:.1f}'
                    pss = f'{statistics.median(sum(m[1] for m in r[2]) / len(r[2]) for r in runs[mode]) / 1024:.1f}'
                rows.append((workers, mode, built, statistics.median(seconds), seconds, uss, pss))
    print(f'\nCommand: OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/bench_data_cache.py '
          f'{" ".join(argv if argv is not None else sys.argv[1:])}\n')
    print(f'{args.batches} batches of {args.batch} x {args.gt_size} px crops of the demo\'s 5 training photos, '
          f'median of {args.repeats} loops per mode.\n')
    print('| workers | mode | dataset build (s) | loop (s) | batches/s | vs off | runs (s) | USS/worker (MiB) | '
          'PSS/worker (MiB) |')
    print('| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |')
    off = {row[0]: row[3] for row in rows if row[1] == 'off'}
    for workers, mode, built, seconds, runs, uss, pss in rows:
        print(f'| {workers} | {mode} | {built:.3f} | {seconds:.3f} | {args.batches / seconds:.1f} | '
              f'{off[workers] / seconds:.2f}x | {", ".join(f"{s:.2f}" for s in runs)} | {uss} | {pss} |')


if __name__ == '__main__':
    main()
