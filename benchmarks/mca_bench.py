"""Spatial MCA, naive N x N product against ours and our cheap forms: forward + backward time and peak memory on CPU.

Every case runs in a fresh subprocess that imports everything, warms the kernels up on a tiny input, records its
resident set size as the baseline, resets the kernel's peak counter (``/proc/self/clear_refs``) and then times
forward + backward ``--repeats`` times (stopping early once ``--case-seconds`` are spent, at least one run). The
peak is the child's ``VmHWM`` minus that baseline: inputs, outputs, gradients and every temporary.

Implementations:

* ``naive``: ``softmax(S^T T / lambda) S^T`` with explicit matmuls, the whole (B, N, N) affinity in memory; the
  'contracted' reading, written the way attention is usually written (softmax over the last dimension).
* ``contracted``: ours, :func:`skd_basicsr.distill.mca.mca_spatial` (SDPA, flash kernel forced on CPU).
* ``rows``: ours, the literal row-wise reading (chunked, recomputed in backward); another formula, listed for
  its memory and time only.
* ``chunked``: ours, the 'contracted' reading by the exact chunked fallback that stands in for fused SDPA where
  it has no kernel (``attention='chunked'``).
* ``window<W>``, e.g. ``window8``: the local form, 'contracted' attention inside W x W windows
  (:func:`skd_basicsr.distill.mca.mca_spatial_window`), O(N W^2 C).
* ``pooled<M>``, e.g. ``pooled1024``: the pooled form, the global attention on features average-pooled to at most
  M tokens (:func:`skd_basicsr.distill.mca.mca_spatial_pooled`).

Naive cases whose estimated peak exceeds ``--max-naive-gb`` are not run; instead, when ``--naive-probe-batch``
fits, naive runs at that smaller batch and its time and memory are scaled linearly to the full batch (marked as
extrapolated in the table).

Usage:
    python benchmarks/mca_bench.py --out benchmarks/RESULTS_mca.md
    # the cheap forms against the exact global one (on idle cores)
    python benchmarks/mca_bench.py --sizes 64 128 --ours-sizes --batch 4 --channels 48 \
        --impls contracted window8 window16 pooled256 pooled1024 --out benchmarks/RESULTS_mca.md
    # every implementation at a toy size, to check that the script runs (numbers mean nothing)
    python benchmarks/mca_bench.py --smoke
"""
import argparse
import datetime
import functools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

IMPLS = ('naive', 'contracted', 'rows')
FIXED_IMPLS = IMPLS + ('chunked', )
SMOKE_IMPLS = ['naive', 'contracted', 'rows', 'chunked', 'window4', 'pooled16']
FLOAT_BYTES = 4
# naive forward + backward holds about four (B, N, N) blocks at once: the probabilities saved for backward, their
# gradient, the softmax-backward temporary and the logits gradient
NAIVE_BLOCKS = 4
# a fixed glibc mmap threshold: freed blocks above it go back to the system at once, so RSS follows live memory
# (left dynamic, glibc raises it to 32 MiB and keeps freed chunk-sized blocks resident)
MMAP_THRESHOLD = 2**20


def status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def impl_spec(text):
    """An implementation name: one of FIXED_IMPLS, window<W> or pooled<M> (W, M integers >= 2)."""
    for prefix in ('window', 'pooled'):
        if text.startswith(prefix) and text[len(prefix):].isdigit() and int(text[len(prefix):]) >= 2:
            return text
    if text in FIXED_IMPLS:
        return text
    raise argparse.ArgumentTypeError(f'{text!r}: use one of {FIXED_IMPLS}, window<W> or pooled<M> (e.g. window8, '
                                     'pooled1024)')


def child(impl, batch, channels, size, repeats, case_seconds, threads, chunk_size):
    """Run one case in this process and print a JSON line with the times and the peak memory above baseline."""
    import time

    import torch

    from skd_basicsr.distill.mca import mca_spatial, mca_spatial_pooled, mca_spatial_window

    torch.set_num_threads(threads)

    def naive(s, t):
        b, c, h, w = s.shape
        tokens_s = s.reshape(b, c, h * w).transpose(1, 2)
        tokens_t = t.reshape(b, c, h * w).transpose(1, 2)
        probs = torch.softmax(torch.bmm(tokens_s, tokens_t.transpose(1, 2)) / c**0.5, dim=-1)
        return torch.bmm(probs, tokens_s).transpose(1, 2).reshape(b, c, h, w)

    if impl.startswith('window'):
        run = functools.partial(mca_spatial_window, window=int(impl[len('window'):]))
    elif impl.startswith('pooled'):
        run = functools.partial(mca_spatial_pooled, max_tokens=int(impl[len('pooled'):]))
    else:
        run = {
            'naive': naive,
            'contracted': lambda s, t: mca_spatial(s, t, softmax='contracted'),
            'rows': lambda s, t: mca_spatial(s, t, softmax='rows', chunk_size=chunk_size),
            'chunked': lambda s, t: mca_spatial(s, t, chunk_size=chunk_size, attention='chunked'),
        }[impl]

    def step(s, t):
        s.grad = None
        out = run(s, t)
        (out * out).mean().backward()

    torch.manual_seed(0)
    warm_s = torch.randn(2, channels, 8, 8, requires_grad=True)
    step(warm_s, torch.randn(2, channels, 8, 8))
    del warm_s
    baseline_kib = status_kib('VmRSS')
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        reset = True
    except OSError:
        reset = False
    s = torch.randn(batch, channels, size, size, requires_grad=True)
    t = 0.5 * s.detach() + torch.randn(batch, channels, size, size)
    times = []
    start_all = time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        step(s, t)
        times.append(time.perf_counter() - start)
        if time.perf_counter() - start_all > case_seconds:
            break
    peak_kib = status_kib('VmHWM')
    print(json.dumps({'times': times, 'peak_bytes': (peak_kib - baseline_kib) * 1024, 'hwm_reset': reset}))


def naive_estimate_bytes(batch, size):
    return NAIVE_BLOCKS * batch * (size * size)**2 * FLOAT_BYTES


def mem_available_bytes():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('MemAvailable not in /proc/meminfo')


def run_case(args, impl, batch, size):
    options = {
        '--child': impl,
        '--batch': batch,
        '--channels': args.channels,
        '--child-size': size,
        '--repeats': args.repeats,
        '--case-seconds': args.case_seconds,
        '--threads': args.threads,
        '--chunk-size': args.chunk_size
    }
    cmd = [sys.executable, __file__] + [str(x) for pair in options.items() for x in pair]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    print(f'  {impl} {size}x{size} batch {batch} ...', file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {'error': (proc.stderr.strip().splitlines() or [f'exit code {proc.returncode}'])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mib(num_bytes):
    return num_bytes / 2**20


def benchmark(args):
    budget = args.max_naive_gb * 1e9
    rows = []
    cases = [(size, impl) for size in args.sizes for impl in args.impls]
    if 'contracted' in args.impls:
        cases += [(size, 'contracted') for size in args.ours_sizes if size not in args.sizes]
    for size, impl in cases:
        row = {'size': size, 'impl': impl, 'batch': args.batch, 'note': ''}
        if impl == 'naive':
            estimate = naive_estimate_bytes(args.batch, size)
            row['note'] = f'est. {estimate / 1e9:.2f} GB'
            if estimate > budget:
                probe = args.naive_probe_batch
                probe_estimate = naive_estimate_bytes(probe, size)
                row['note'] = (f'not run: est. {estimate / 1e9:.2f} GB > --max-naive-gb {args.max_naive_gb:g}')
                if probe and probe < args.batch and probe_estimate <= budget:
                    result = run_case(args, impl, probe, size)
                    if 'error' not in result:
                        factor = args.batch / probe
                        result = {
                            'times': [x * factor for x in result['times']],
                            'peak_bytes': result['peak_bytes'] * factor
                        }
                        row['extrapolated'] = True
                        row['note'] += f'; measured at batch {probe}, scaled x{factor:g}'
                    row.update(result)
                rows.append(row)
                continue
        row.update(run_case(args, impl, args.batch, size))
        rows.append(row)
    return rows


def render(args, rows):
    lines = [
        '| size | N | impl | runs | median fwd+bwd (s) | peak above baseline (MiB) | note |',
        '| ---: | ---: | --- | ---: | ---: | ---: | --- |',
    ]
    for row in rows:
        prefix = '~' if row.get('extrapolated') else ''
        if 'times' in row:
            median = f'{prefix}{statistics.median(row["times"]):.3f}'
            peak = f'{prefix}{mib(row["peak_bytes"]):.0f}'
            runs = str(len(row['times']))
        else:
            median = peak = runs = '-'
        note = row['note'] + (f'; error: {row["error"]}' if 'error' in row else '')
        lines.append(f'| {row["size"]}^2 | {row["size"]**2} | {row["impl"]} | {runs} | {median} | {peak} | {note} |')
    lines.append('')
    lines.extend(verdict(rows))
    lines.extend(against_global(rows))
    return '\n'.join(lines)


def verdict(rows):
    """Target: ours at 128^2 at most 1/10 of naive's peak; ours no slower than naive wherever naive ran."""
    by_key = {(r['size'], r['impl']): r for r in rows if 'times' in r}
    out = []
    for size in sorted({r['size'] for r in rows}):
        naive, ours = by_key.get((size, 'naive')), by_key.get((size, 'contracted'))
        if not naive or not ours:
            continue
        how = 'naive extrapolated' if naive.get('extrapolated') else 'both measured'
        ratio = ours['peak_bytes'] / naive['peak_bytes']
        speed = statistics.median(naive['times']) / statistics.median(ours['times'])
        target = f' (target <= 0.1: {"met" if ratio <= 0.1 else "NOT met"})' if size == 128 else ''
        out.append(f'- {size}^2, {how}: contracted/naive peak memory = {ratio:.3f}{target}; naive/contracted time = '
                   f'{speed:.2f} ({"contracted no slower" if speed >= 1 else "contracted SLOWER"}).')
    return out


def against_global(rows):
    """Every other implementation of ours against the exact global one ('contracted') at the same size."""
    by_key = {(r['size'], r['impl']): r for r in rows if 'times' in r}
    out = []
    for row in rows:
        exact = by_key.get((row['size'], 'contracted'))
        if row['impl'] in ('naive', 'contracted') or 'times' not in row or not exact:
            continue
        speed = statistics.median(exact['times']) / statistics.median(row['times'])
        memory = row['peak_bytes'] / exact['peak_bytes'] if exact['peak_bytes'] > 0 else float('nan')
        out.append(f'- {row["size"]}^2, {row["impl"]}: contracted/{row["impl"]} time = {speed:.2f}; '
                   f'{row["impl"]}/contracted peak memory = {memory:.3f}.')
    return out


def header(args):
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    command = 'python ' + ' '.join(shlex.quote(a) for a in [os.path.relpath(__file__)] + sys.argv[1:])
    return [
        f'## Spatial MCA benchmark, {datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}',
        '',
        f'Command: `{command}`',
        '',
        f'torch {torch.__version__}, {args.threads} threads, CPU {cpu} ({os.cpu_count()} cores visible), '
        f'float32, batch {args.batch}, {args.channels} channels, temperature sqrt(C), loss = mean(out^2). Peak '
        'memory: VmHWM of a fresh subprocess per case minus its RSS after imports and warm-up, glibc '
        f'MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}. Naive peak estimate: {NAIVE_BLOCKS} x B x N^2 x 4 bytes; naive '
        f'budget {args.max_naive_gb:g} GB.',
        '',
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[32, 64, 128], help='sides run by every impl')
    parser.add_argument('--ours-sizes', type=int, nargs='*', default=[256], help='sides run by contracted only')
    parser.add_argument('--impls',
                        nargs='+',
                        type=impl_spec,
                        default=list(IMPLS),
                        help=f'any of {FIXED_IMPLS}, window<W>, pooled<M> (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--channels', type=int, default=48)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--case-seconds', type=float, default=120, help='stop repeating a case after this long')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--chunk-size', type=int, default=256, help='row chunk of the rows reading')
    parser.add_argument('--max-naive-gb',
                        type=float,
                        default=None,
                        help='skip naive cases estimated above this (default: 80%% of MemAvailable at start)')
    parser.add_argument('--naive-probe-batch', type=int, default=1, help='batch for a skipped naive case; 0: none')
    parser.add_argument('--out', help='append the section (command, date, versions, table) to this markdown file')
    parser.add_argument('--smoke',
                        action='store_true',
                        help='every kind of implementation at a toy size (16^2, batch 2, 8 channels, one run, one '
                        'thread): checks that the script runs, the numbers mean nothing')
    parser.add_argument('--child', type=impl_spec, help=argparse.SUPPRESS)
    parser.add_argument('--child-size', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.ours_sizes, args.impls = [16], [], SMOKE_IMPLS
        args.batch, args.channels, args.repeats, args.threads = 2, 8, 1, 1
    if args.child:
        child(args.child, args.batch, args.channels, args.child_size, args.repeats, args.case_seconds, args.threads,
              args.chunk_size)
        return
    if args.max_naive_gb is None:
        args.max_naive_gb = round(0.8 * mem_available_bytes() / 1e9, 1)
    section = '\n'.join(header(args)) + render(args, benchmark(args)) + '\n'
    print(section)
    if args.out:
        with open(args.out, 'a') as f:
            f.write(section + '\n')


if __name__ == '__main__':
    main()
