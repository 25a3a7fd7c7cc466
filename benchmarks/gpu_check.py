"""GPU check of skd_basicsr: MCA on CUDA against a float64 CPU reference, the SKD iteration against its floor,
student against teacher latency, SKD iterations under bf16, and what mixed precision, channels_last and compile
(issue 20's ``train.*`` options) do to the SKD iteration, to a short training run and to the student's latency.

Seven sections, each timed and reported on its own, so that one that fails still leaves the others' results:

1. ``mca``: every form of the MCA branches in ``skd_basicsr/distill/mca.py`` (exact global spatial on fused
   SDPA, its chunked exact fallback forced, local windows, pooled tokens, and the channel branch) in float32 and
   bf16 on the device, forward and backward, against the same computation in float64 on the CPU (max abs error
   and that error over the reference's max abs value, for the output and for the student's gradient); median time
   of forward + backward, and its peak memory (``torch.cuda.max_memory_allocated``). On CUDA a float64 row shows
   the automatic chunked fallback where no fused kernel takes the inputs.
2. ``iteration``: one training iteration of the ``--opt`` pair (``options/SKD_Denoise.yml``) on a random batch,
   with :mod:`bench_skd`'s cases: the student alone, the floor (student step + one teacher forward), SKD without
   L_CL with the spatial branch dropped, in its exact global form, and with windows at the full-resolution levels.
3. ``latency``: student and teacher inference at batch 1 and each ``--sizes``, timed alternately after warm-up
   (CUDA events on a GPU).
4. ``bf16``: SKD iterations (the option file's model, L_CL included) with ``train.amp: bf16``, every logged loss
   asserted finite.
5. ``amp_iteration``: the option file's SKD iteration (L_CL included) and its floor, each built from the option
   file with the ``train`` options of :data:`AMP_CASES` (fp32, bf16, bf16 + channels_last, bf16 + compile), as a
   user's run builds them; every case against the fp32 floor and against its own floor, peak memory of each, and
   issue 20's targets (:data:`TARGETS`) marked met or missed.
6. ``amp_training``: the demo's recommended student (output-L1 from the teacher's selected weights; the shipped
   demo teacher) trained from the same seed on the same batches of the demo's photos in fp32 and in bf16
   (``train.amp``), both scored in float32 on the demo's held-out photos; the PSNR difference must stay within
   :data:`PSNR_TOLERANCE_DB` (reported, not checked, with ``--smoke``, whose networks are tiny and untrained).
7. ``amp_latency``: the option file's student at batch 1 in float32 and under bf16 autocast at each ``--sizes``,
   timed alternately.

Nothing is downloaded: the teacher of sections 2-5 and 7 has random weights (its speed does not depend on its
values), their data are random, and the demo's photos ship with scikit-image. ``--device cpu --smoke`` runs the
same code with tiny networks at 16 x 16 in well under a minute; there ``train.compile`` cases run eagerly
(``torch._dynamo.config.disable``), because inductor compiles a tiny Restormer's training step for minutes on a CPU.
The exit status is 1 when a section failed or a check missed its tolerance (the report is written anyway); a
missed speed target is reported, not a failure.

Usage:
    python benchmarks/gpu_check.py --out benchmarks/RESULTS_gpu.md
    python benchmarks/gpu_check.py --device cpu --smoke --out /tmp/RESULTS_gpu.md
"""
import argparse
import datetime
import functools
import math
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from copy import deepcopy
from os import path as osp

import torch

if __package__ in (None, ''):  # run as a file: the repository root makes `benchmarks` importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks import bench_skd  # noqa: E402

START = time.time()  # the report's total includes the imports
ROOT = bench_skd.ROOT
MIB = 2**20

# max |error| / max |reference| allowed: float32 kernels reorder sums; bf16 keeps 8 bits of mantissa
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float64: 1e-10}

FULL = {
    'mca_shape': (8, 48, 128, 128),
    'ref_samples': 2,  # samples compared with the float64 CPU reference, which costs seconds at 128 x 128
    'window': 8,
    'tokens': 1024,
    'chunk': 256,
    'mca_repeats': 10,
    'batch': 8,
    'patch': 128,
    'rounds': 10,
    'sizes': (256, 512),
    'latency_warmup': 5,
    'latency_repeats': 20,
    'bf16_iters': 50,
    # the demo's student budget (48 px patches, batch 4) for a few hundred iterations
    'train_iters': 300,
    'train_gt_size': 48,
    'train_batch': 4,
}
SMOKE = {
    'mca_shape': (2, 8, 16, 16),
    'ref_samples': 2,
    'window': 8,
    'tokens': 16,
    'chunk': 64,  # several chunks even at 16 x 16
    'mca_repeats': 2,
    'batch': 2,
    'patch': 16,
    'rounds': 2,
    'sizes': (16, 32),
    'latency_warmup': 1,
    'latency_repeats': 2,
    'bf16_iters': 3,
    'train_iters': 4,
    'train_gt_size': 16,
    'train_batch': 2,
}
# Restormers small enough for a CPU smoke run; the channel counts still differ, so the adapters are exercised
SMOKE_NETS = {'network_g': {'dim': 4}, 'network_t': {'dim': 8}}
SMOKE_SHAPE = {'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1, 'heads': [1, 1, 1, 1]}

# issue 20's cases: the train options set on the option file
NO_SPEED_OPTIONS = {'amp': False, 'channels_last': False, 'compile': False, 'tf32': False}
AMP_CASES = {
    'fp32': NO_SPEED_OPTIONS,
    'bf16': dict(NO_SPEED_OPTIONS, amp='bf16'),
    'bf16_channels_last': dict(NO_SPEED_OPTIONS, amp='bf16', channels_last=True),
    'bf16_compile': dict(NO_SPEED_OPTIONS, amp='bf16', compile='default'),
}
# issue 20's targets for the bf16 SKD iteration: (name, numerator, denominator, at most)
TARGETS = (('bf16 SKD iteration / fp32 SKD iteration', 'bf16/skd', 'fp32/skd', 0.6),
           ('bf16 SKD iteration / bf16 floor', 'bf16/skd', 'bf16/floor', 1.15))
PSNR_TOLERANCE_DB = 0.05  # |bf16 - fp32| of the short training run's held-out PSNR


class SectionFailed(Exception):
    """A section ran to its end but a check in it missed (tolerance, non-finite loss)."""


class Device:
    """Timing and memory on one device: CUDA events and the caching allocator's counters, or the CPU clock."""

    def __init__(self, name):
        self.device = torch.device(name)
        self.cuda = self.device.type == 'cuda'

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def seconds(self, fn):
        """Wall time of ``fn()``, measured on the GPU's stream with CUDA events there."""
        if not self.cuda:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000

    def median_seconds(self, fn, repeats, warmup=1):
        for _ in range(warmup):
            fn()
        self.sync()
        return statistics.median(self.seconds(fn) for _ in range(repeats))

    def peak_memory(self, fn):
        """(peak allocated, peak above what was allocated before) in bytes while ``fn()`` runs; None on the CPU."""
        if not self.cuda:
            fn()
            return None
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        fn()
        self.sync()
        peak = torch.cuda.max_memory_allocated(self.device)
        return peak, peak - before

    def describe(self):
        if not self.cuda:
            return f'CPU ({platform.processor() or platform.machine()}), torch threads: {torch.get_num_threads()}'
        props = torch.cuda.get_device_properties(self.device)
        return (f'{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, cuDNN '
                f'{torch.backends.cudnn.version()}, float32 matmul precision {torch.get_float32_matmul_precision()!r}')


# ----------------------------------------------------------------------------------------------------------------
# 1. MCA forms against the float64 CPU reference
# ----------------------------------------------------------------------------------------------------------------
def mca_forms(cfg):
    """name -> (MCA function of (s, t), name of its reference form, forward MACs of a (B, C, H, W) input)."""
    from skd_basicsr.distill.mca import mca_channel, mca_spatial, mca_spatial_pooled, mca_spatial_window, pool_tokens

    window, tokens, chunk = cfg['window'], cfg['tokens'], cfg['chunk']

    def pooled_macs(b, c, h, w):
        n = pool_tokens(torch.empty(1, 1, h, w, device='meta'), tokens).shape[-2:].numel()
        return 2 * b * n * n * c

    def global_macs(b, c, h, w):
        return 2 * b * (h * w)**2 * c

    def chunked(s, t):
        return mca_spatial(s, t, chunk_size=chunk, attention='chunked')

    return {
        'global': (mca_spatial, 'global', global_macs),
        # the chunked fallback is checked against the fused global form's reference: both are exact
        'chunked': (chunked, 'global', global_macs),
        f'window{window}': (lambda s, t: mca_spatial_window(s, t, window), f'window{window}',
                            lambda b, c, h, w: 2 * b * h * w * min(window, h) * min(window, w) * c),
        f'pooled{tokens}': (lambda s, t: mca_spatial_pooled(s, t, tokens), f'pooled{tokens}', pooled_macs),
        'channel': (mca_channel, 'channel', lambda b, c, h, w: 2 * b * c * c * h * w),
    }


def attention_kernel(name, shape, dtype, dev, cfg):
    """The kernel that runs a spatial form's attention: what :mod:`skd_basicsr.distill.attention` allows SDPA
    (flash, then memory efficient on CUDA; flash on the CPU), else its chunked exact fallback."""
    from skd_basicsr.distill.mca import pool_tokens

    if name == 'channel':
        return 'bmm'
    if name == 'chunked':
        return 'chunked (forced)'
    if not dev.cuda:
        return 'flash (CPU)'
    b, c, h, w = shape
    if name.startswith('window'):
        side_h, side_w = min(cfg['window'], h), min(cfg['window'], w)  # sides that are multiples of the window
        tokens = (b, (h // side_h) * (w // side_w), side_h * side_w, c)
    elif name.startswith('pooled'):
        tokens = (b, 1, pool_tokens(torch.empty(1, 1, h, w, device='meta'), cfg['tokens']).shape[-2:].numel(), c)
    else:
        tokens = (b, 1, h * w, c)
    q = torch.empty(tokens, dtype=dtype, device=dev.device)
    params = torch.backends.cuda.SDPAParams(q, q, q, None, 0.0, False, False)
    if torch.backends.cuda.can_use_flash_attention(params):
        return 'flash'
    if torch.backends.cuda.can_use_efficient_attention(params):
        return 'efficient'
    return 'chunked (fallback)'


def forward_backward(fn, s, t, grad_out):
    """Output of ``fn(s, t)`` and the student's gradient for the output gradient ``grad_out``."""
    s = s.detach().requires_grad_(True)
    out = fn(s, t)
    out.backward(grad_out)
    return out.detach(), s.grad


def reference(fn, s, t, gen):
    """Output, student gradient and the random output gradient behind it, of ``fn`` in float64 on the CPU."""
    s = s.double().requires_grad_(True)
    out = fn(s, t.double())
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    out.backward(grad_out)
    return out.detach(), s.grad, grad_out


def relative_error(x, ref):
    err = float((x.detach().cpu().double() - ref).abs().max())
    return err, err / float(ref.abs().max())


def section_mca(dev, cfg, ctx):
    """Each form in float32 and bf16 (and float64 on CUDA, global only) against float64 on the CPU."""
    b, c, h, w = cfg['mca_shape']
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(b, c, h, w, generator=gen)
    # a teacher close to the student gives the peaked affinities of features that already agree in part
    t = s + 0.5 * torch.randn(b, c, h, w, generator=gen)
    r = min(cfg['ref_samples'], b)
    forms = mca_forms(cfg)
    references = {}
    for name, (fn, ref_name, _) in forms.items():
        if ref_name not in references:
            start = time.perf_counter()
            references[ref_name] = reference(fn, s[:r], t[:r], gen)
            print(f'[gpu_check] mca reference {ref_name}: {time.perf_counter() - start:.1f} s', flush=True)

    runs = [(name, dtype) for name in forms for dtype in (torch.float32, torch.bfloat16)]
    if dev.cuda:
        runs.append(('global', torch.float64))
    rows, missed = [], []
    for name, dtype in runs:
        fn, ref_name, macs = forms[name]
        ref_out, ref_grad, ref_grad_out = references[ref_name]
        s_d, t_d = s.to(dev.device, dtype), t.to(dev.device, dtype)
        # the reference's output gradient on its samples, a fixed random one on the others
        # float64, so that the float64 row gets the reference's output gradient unrounded
        grad_out = torch.randn((b, ) + tuple(ref_grad_out.shape[1:]), dtype=torch.float64, generator=gen)
        grad_out[:r] = ref_grad_out
        grad_out = grad_out.to(dev.device, dtype)
        out, grad = forward_backward(fn, s_d, t_d, grad_out)
        out_err = relative_error(out[:r], ref_out)
        grad_err = relative_error(grad[:r], ref_grad)
        seconds = dev.median_seconds(lambda: forward_backward(fn, s_d, t_d, grad_out), cfg['mca_repeats'])
        memory = dev.peak_memory(lambda: forward_backward(fn, s_d, t_d, grad_out))
        ok = max(out_err[1], grad_err[1]) <= TOLERANCE[dtype]
        if not ok:
            missed.append(f'{name} {dtype}')
        rows.append({
            'form': name,
            'dtype': str(dtype).replace('torch.', ''),
            'kernel': attention_kernel(name, (b, c, h, w), dtype, dev, cfg),
            'gmacs': macs(b, c, h, w) / 1e9,
            'out_err': out_err,
            'grad_err': grad_err,
            'ms': seconds * 1000,
            'memory': memory,
            'ok': ok
        })
        print(
            f'[gpu_check] mca {name} {rows[-1]["dtype"]} ({rows[-1]["kernel"]}): out rel {out_err[1]:.1e}, '
            f'grad rel {grad_err[1]:.1e}, {seconds * 1000:.2f} ms',
            flush=True)
        del s_d, t_d, out, grad
    lines = [
        f'Student and teacher features ({b}, {c}, {h}, {w}) (teacher = student + 0.5 noise), temperature auto; '
        f'window {cfg["window"]}, pooled to at most {cfg["tokens"]} tokens, chunked fallback forced with '
        f'{cfg["chunk"]} queries a chunk. Errors against the same form in float64 on the CPU, over the first '
        f'{r} samples: output, and the gradient w.r.t. the student feature for a fixed random output '
        'gradient; rel = max abs error / max abs reference. Time: median of '
        f'{cfg["mca_repeats"]} forward + backward passes. Memory: peak allocated during one forward + '
        'backward, and that peak above what was allocated before it (inputs included in the former only).', '',
        '| form | dtype | kernel | fwd GMACs | out max abs | out rel | grad max abs | grad rel | fwd+bwd (ms) | '
        'peak (MiB) | above inputs (MiB) | within tolerance |', '| --- | --- | --- |' + ' ---: |' * 8 + ' --- |'
    ]
    for row in rows:
        memory = ('-', '-') if row['memory'] is None else tuple(f'{m / MIB:.0f}' for m in row['memory'])
        lines.append(f'| {row["form"]} | {row["dtype"]} | {row["kernel"]} | {row["gmacs"]:.3g} | '
                     f'{row["out_err"][0]:.2e} | {row["out_err"][1]:.2e} | {row["grad_err"][0]:.2e} | '
                     f'{row["grad_err"][1]:.2e} | {row["ms"]:.2f} | {memory[0]} | {memory[1]} | '
                     f'{"yes" if row["ok"] else "NO"} |')
    lines += [
        '', 'Tolerance on the larger rel: ' + ', '.join(f'{str(k).replace("torch.", "")} {v:g}'
                                                        for k, v in TOLERANCE.items()) + '.'
    ]
    if missed:
        raise SectionFailed('\n'.join(lines) + f'\n\nOutside tolerance: {", ".join(missed)}.')
    return lines


# ----------------------------------------------------------------------------------------------------------------
# 2.-4. The option file's networks: models built once, shared by the sections
# ----------------------------------------------------------------------------------------------------------------
class Models:
    """The option file's options and BasicSR models, built on first use: bench_skd's cases, plus SKD without L_CL in
    the exact global spatial form at every level (``skd_exact``) and with windows at the full-resolution levels
    (``skd_window``), whatever spatial forms the option file ships (its own stays in ``skd_no_cl``)."""

    def __init__(self, args, dev, cfg, workdir):
        self.args, self.dev, self.cfg, self.workdir = args, dev, cfg, workdir
        self._opt = self._built = None

    def options(self):
        """The option file's options, networks shrunk with ``--smoke``, pointing at a random teacher."""
        if self._opt is None:
            opt = bench_skd.read_options(self.args.opt, self.workdir, num_gpu=1 if self.dev.cuda else 0)
            if self.args.smoke:
                for key, size in SMOKE_NETS.items():
                    opt[key].update(size, **SMOKE_SHAPE)
            bench_skd.save_random_teacher(opt, self.workdir)
            self._opt = opt
        return self._opt

    def get(self):
        """(options, name -> model, spatial window per distilled pair of ``skd_window``)."""
        if self._built is None:
            self._built = self._build()
        return self._built

    def _build(self):
        opt = self.options()
        options = bench_skd.case_options(opt)
        if 'skd_exact' not in options:  # the option file ships the exact form: skd_no_cl is it, built again by name
            options['skd_exact'] = bench_skd.exact_spatial(options['skd_no_cl'])
        models = bench_skd.build_all(options)
        windows = full_resolution_windows(models['skd_exact'], self.cfg['window'], self.dev)
        models.update(bench_skd.build_all({'skd_window': bench_skd.with_windows(options['skd_no_cl'], windows)}))
        return opt, models, windows


def full_resolution_windows(skd, window, dev):
    """Per distilled pair: ``window`` where the teacher feature has the input's resolution, None (global) elsewhere."""
    probe = torch.zeros(1, 3, 32, 32, device=dev.device)
    with torch.inference_mode(), skd.taps_t.recording() as feats:
        skd.net_t(probe)
    return [window if feats[p['teacher']].shape[-2:] == probe.shape[-2:] else None for p in skd.pairs]


def random_batch(cfg, dev, seed):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(cfg['batch'], 3, cfg['patch'], cfg['patch'], generator=gen)
    lq = gt + torch.randn(gt.shape, generator=gen) * 25 / 255
    return {'gt': gt.to(dev.device), 'lq': lq.to(dev.device)}


def synced(dev, run):
    """``run(i)`` followed by a device synchronize, so that a case's time holds all of its work."""

    def step(i):
        run(i)
        dev.sync()

    return step


def section_iteration(dev, cfg, ctx):
    """The iteration cases round-robin, medians; peak memory of one more run of each."""
    opt, models, windows = ctx.get()
    windowed = ', '.join(p['teacher'] for p, w in zip(models['skd_window'].pairs, windows) if w is not None)
    what = {
        'student': 'student alone: forward, L1, backward, optimizer step',
        'floor': 'student iteration + one teacher forward (inference mode)',
        'skd_no_spatial': 'SKD, L_REC + L_GK (direct + channel), no spatial MCA',
        'skd_exact': 'SKD, L_REC + L_GK (direct + channel + spatial), exact global spatial MCA at every level',
        'skd_window': f'the same, spatial window {cfg["window"]} at full resolution ({windowed}), global elsewhere',
    }
    if bench_skd.ships_spatial_forms(opt):
        what['skd_no_cl'] = 'the same with the spatial forms of the option file'
    cases = bench_skd.step_cases(models, random_batch(cfg, dev, 1))  # feeds every model
    cases.update((name, models[name].optimize_parameters) for name in ('skd_exact', 'skd_window'))
    medians, times = bench_skd.round_robin({name: synced(dev, cases[name]) for name in what}, cfg['rounds'])
    memory = {name: dev.peak_memory(lambda: cases[name](0)) for name in what}
    lines = [
        f'Option file `{osp.relpath(ctx.args.opt, ROOT)}`: student {bench_skd.net_text(opt["network_g"])}, '
        f'teacher {bench_skd.net_text(opt["network_t"])}, {len(opt["distill"]["features"])} feature pairs; '
        f'batch ({cfg["batch"]}, 3, {cfg["patch"]}, {cfg["patch"]}), float32, {cfg["rounds"]} rounds after one '
        'warm-up round (cases round-robin, each followed by a device synchronize).', '',
        '| case | what runs | median (ms) | / floor | peak (MiB) | runs (ms) |',
        '| --- | --- |' + ' ---: |' * 3 + ' --- |'
    ]
    for name in what:
        peak = '-' if memory[name] is None else f'{memory[name][0] / MIB:.0f}'
        lines.append(f'| {name} | {what[name]} | {medians[name] * 1000:.1f} | {medians[name] / medians["floor"]:.3f} '
                     f'| {peak} | {", ".join(f"{t * 1000:.1f}" for t in times[name])} |')
    skd = [name for name in what if name.startswith('skd_') and name != 'skd_no_spatial']
    lines += [
        '', '- SKD without L_CL / floor: ' + ', '.join(f'{name} {medians[name] / medians["floor"]:.3f}'
                                                       for name in skd) + ' (target on the CPU bench: 1.15).'
    ]
    return lines


def section_latency(dev, cfg, ctx):
    """Student and teacher forward at batch 1, alternately, after warm-up; medians."""
    nets = option_networks(ctx, dev, ('network_g', 'network_t'))
    params = {key: sum(p.numel() for p in net.parameters()) for key, net in nets.items()}
    lines = [
        f'Batch 1, float32, inference mode; {cfg["latency_warmup"]} warm-up forwards of each, then '
        f'{cfg["latency_repeats"]} of each alternately, medians. Parameters: student {params["network_g"]:,}, '
        f'teacher {params["network_t"]:,} ({params["network_g"] / params["network_t"]:.3f}x).', '',
        '| size | student (ms) | teacher (ms) | student / teacher |', '| --- | ---: | ---: | ---: |'
    ]
    for size in cfg['sizes']:
        x = torch.rand(1, 3, size, size, device=dev.device)
        s, t = alternate_medians(dev, cfg, {key: functools.partial(net, x) for key, net in nets.items()})
        lines.append(f'| {size}^2 | {s:.2f} | {t:.2f} | {s / t:.3f} |')
        print(f'[gpu_check] latency {size}^2: student {s:.2f} ms, teacher {t:.2f} ms', flush=True)
    return lines


def option_networks(ctx, dev, keys):
    """key -> the option file's network ``key`` (``network_g``, ``network_t``) on the device in eval mode, seed 0."""
    from basicsr.archs import build_network

    nets = {}
    for key in keys:
        torch.manual_seed(0)
        nets[key] = build_network(deepcopy(ctx.options()[key])).to(dev.device).eval()
    return nets


def alternate_medians(dev, cfg, forwards):
    """Median milliseconds of each of ``forwards`` (name -> callable), in inference mode: ``latency_warmup`` runs of
    each, then ``latency_repeats`` rounds running each once, so that drift in the device's speed hits all alike."""
    times = {key: [] for key in forwards}
    with torch.inference_mode():
        for forward in forwards.values():
            for _ in range(cfg['latency_warmup']):
                forward()
        dev.sync()
        for _ in range(cfg['latency_repeats']):
            for key, forward in forwards.items():
                times[key].append(dev.seconds(forward))
    return [statistics.median(times[key]) * 1000 for key in forwards]


def case_models(ctx, case, names):
    """name -> the option file's model ``name`` (:func:`bench_skd.case_options`' 'skd', 'student', ...) built with
    the train options of ``AMP_CASES[case]``, as a user's run with those options builds it."""
    case_opt = deepcopy(ctx.options())
    case_opt['train'].update(AMP_CASES[case])
    options = bench_skd.case_options(case_opt)
    return bench_skd.build_all({name: options[name] for name in names})


def section_bf16(dev, cfg, ctx):
    """The option file's SKD model (L_CL included) trained with ``train.amp: bf16``; every logged loss must be
    finite."""
    skd = case_models(ctx, 'bf16', ('skd', ))['skd']
    logs, seconds, failure = [], [], None
    for i in range(1, cfg['bf16_iters'] + 1):
        skd.feed_data(random_batch(cfg, dev, 100 + i))
        try:
            seconds.append(dev.seconds(functools.partial(skd.optimize_parameters, i)))
        except FloatingPointError as err:  # SKDModel stops on a non-finite total loss before the step
            failure = f'iteration {i}: {err}'
            break
        logs.append(dict(skd.log_dict))
        bad = [k for k, v in logs[-1].items() if not math.isfinite(v)]
        if bad:
            failure = f'iteration {i}: non-finite {", ".join(bad)}'
            break
    if failure is None and not all(torch.isfinite(p).all() for p in skd.net_g.parameters()):
        failure = 'non-finite student weights after the last iteration'
    summed = [k for k in logs[0] if not k.startswith('l_gk_')] if logs else []
    lines = [
        f'{len(logs)} of {cfg["bf16_iters"]} iterations of SKDModel as in the option file (its commented '
        f'L_GK and L_CL restored) with `train.amp: bf16` (bf16 autocast on {dev.device.type}), a new '
        f'random batch ({cfg["batch"]}, 3, {cfg["patch"]}, {cfg["patch"]}) each; median '
        f'{statistics.median(seconds) * 1000 if seconds else float("nan"):.1f} ms per iteration '
        '(the first included in the runs, not in a warm-up).', '', '| iteration | ' + ' | '.join(summed) + ' |',
        '| ---: |' + ' ---: |' * len(summed)
    ]
    for i in sorted({1, 2, len(logs) // 2, len(logs)} - {0}):
        lines.append(f'| {i} | ' + ' | '.join(f'{logs[i - 1][k]:.5g}' for k in summed) + ' |')
    if failure:
        raise SectionFailed('\n'.join(lines) + f'\n\nFAILED: {failure}')
    lines += ['', f'Every logged loss finite at all {len(logs)} iterations, and the student weights after them.']
    return lines


# ----------------------------------------------------------------------------------------------------------------
# 5.-7. Issue 20: mixed precision, channels_last and compile, through the train options users set
# ----------------------------------------------------------------------------------------------------------------
def one_line(err):
    """The error's type and the first line of its message, for a table cell."""
    text = str(err).strip()
    return f'{type(err).__name__}: {text.splitlines()[0]}' if text else type(err).__name__


def options_text(train_opt):
    """Train options as the option file writes them."""
    return ', '.join(f'{key}: {str(value).lower()}' for key, value in train_opt.items())


def section_amp_iteration(dev, cfg, ctx):
    """The option file's SKD iteration and its floor under each case of :data:`AMP_CASES`, built from the option
    file with the case's train options, round-robin; peak memory of each; the targets."""
    opt = ctx.options()
    steps, failed = {}, {}
    for case in AMP_CASES:
        try:  # a case the device cannot honour (refused, or failing in its first step) must not cost the others
            built = case_models(ctx, case, ('skd', 'student'))
            for model in built.values():
                model.feed_data(random_batch(cfg, dev, 1))
            case_steps = {f'{case}/skd': synced(dev, built['skd'].optimize_parameters),
                          f'{case}/floor': synced(dev, bench_skd.floor_step(built['student'], built['skd']))}
            for step in case_steps.values():
                step(0)  # the first step, where compile compiles
        except Exception as err:
            traceback.print_exc()
            failed[case] = one_line(err)
            continue
        steps.update(case_steps)
    medians, _ = bench_skd.round_robin(steps, cfg['rounds'])
    memory = {name: dev.peak_memory(lambda: step(0)) for name, step in steps.items()}
    lines = [
        f'Option file `{osp.relpath(ctx.args.opt, ROOT)}`: student {bench_skd.net_text(opt["network_g"])}, teacher '
        f'{bench_skd.net_text(opt["network_t"])}; SKDModel as the file has it (L_CL included), and its floor (the '
        'student alone as SRModel, then one teacher forward in inference mode, under the case\'s autocast), each '
        'built from the option file with the case\'s train options; batch '
        f'({cfg["batch"]}, 3, {cfg["patch"]}, {cfg["patch"]}); one first step, then {cfg["rounds"]} rounds after a '
        'warm-up round, cases round-robin, medians. Peak: memory allocated during one more step (CUDA).', '',
        '| case | train options | SKD (ms) | floor (ms) | SKD / own floor | SKD / fp32 floor | SKD / fp32 SKD | '
        'SKD peak (MiB) | floor peak (MiB) |', '| --- | --- |' + ' ---: |' * 7
    ]
    fp32_skd, fp32_floor = medians.get('fp32/skd'), medians.get('fp32/floor')
    for case, train_opt in AMP_CASES.items():
        if case in failed:
            lines.append(f'| {case} | {options_text(train_opt)} | FAILED: {failed[case]} |' + ' |' * 6)
            continue
        skd, floor = medians[f'{case}/skd'], medians[f'{case}/floor']
        peaks = ['n/a' if memory[f'{case}/{k}'] is None else f'{memory[f"{case}/{k}"][0] / MIB:.0f}'
                 for k in ('skd', 'floor')]
        vs_fp32 = [f'{skd / ref:.3f}' if ref else '-' for ref in (fp32_floor, fp32_skd)]
        lines.append(f'| {case} | {options_text(train_opt)} | {skd * 1000:.1f} | {floor * 1000:.1f} | '
                     f'{skd / floor:.3f} | {vs_fp32[0]} | {vs_fp32[1]} | {peaks[0]} | {peaks[1]} |')
    lines += ['', 'Targets (issue 20):']
    for name, numerator, denominator, limit in TARGETS:
        if numerator in medians and denominator in medians:
            ratio = medians[numerator] / medians[denominator]
            lines.append(f'- {name} = {ratio:.3f}, target at most {limit}: {"met" if ratio <= limit else "MISSED"}.')
        else:
            lines.append(f'- {name}: not measured (a case failed).')
    if ctx.args.smoke:
        lines.append('- Smoke run: toy sizes on a CPU; the targets are for the GPU, and compile ran eagerly.')
    if failed:
        raise SectionFailed('\n'.join(lines) + f'\n\nFailed cases: {", ".join(failed)}.')
    return lines


def training_pair(ctx):
    """The networks of the short training run and the teacher's weights: the demo's student and its shipped,
    trained teacher; with ``--smoke``, the smoke networks' shapes and a teacher of random weights."""
    from basicsr.archs import build_network

    from skd_basicsr.tools import demo

    if not ctx.args.smoke:
        return demo.DEMO_PAIR, demo.TEACHER_WEIGHTS
    student, teacher = (dict(net, dim=SMOKE_NETS[key]['dim'], **SMOKE_SHAPE)
                        for key, net in (('network_g', demo.STUDENT), ('network_t', demo.TEACHER)))
    torch.manual_seed(0)
    weights = osp.join(ctx.workdir, 'smoke_teacher.pth')
    torch.save({'params': build_network(deepcopy(teacher)).state_dict()}, weights)
    return demo.Pair(student, teacher), weights


def train_and_score(opt, dev, workdir, folders, iters):
    """Train ``opt``'s model ``iters`` iterations as BasicSR's loop does (seed, loader, learning rate, step), then
    score its student in float32 on the demo's held-out photos; (mean PSNR, seconds, the last logged losses)."""
    import yaml
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.metrics import calculate_psnr
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed, tensor2img

    from skd_basicsr.tools import demo

    path = osp.join(workdir, f'{opt["name"]}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    opt = bench_skd.read_options(path, workdir, num_gpu=1 if dev.cuda else 0, restore_terms=False)
    set_random_seed(opt['manual_seed'])
    dataset_opt = opt['datasets']['train']
    dataset = build_dataset(dataset_opt)
    sampler = EnlargedSampler(dataset, 1, 0, dataset_opt['dataset_enlarge_ratio'])
    loader = build_dataloader(dataset, dataset_opt, num_gpu=opt['num_gpu'], dist=False, sampler=sampler,
                              seed=opt['manual_seed'])
    model = build_model(opt)
    start, current, epoch = time.perf_counter(), 0, 0
    while current < iters:
        sampler.set_epoch(epoch)
        for batch in loader:
            current += 1
            model.update_learning_rate(current, warmup_iter=opt['train'].get('warmup_iter', -1))
            model.feed_data(batch)
            model.optimize_parameters(current)
            bad = [k for k, v in model.log_dict.items() if not math.isfinite(v)]
            if bad:
                raise SectionFailed(f'{opt["name"]}: non-finite {", ".join(bad)} at iteration {current}.')
            if current == iters:
                break
        epoch += 1
    dev.sync()
    seconds = time.perf_counter() - start
    net = model.get_bare_model(model.net_g).eval()
    held_out = demo.held_out_dataset(folders, build_dataset)
    psnrs = []
    with torch.inference_mode():
        for item in (held_out[i] for i in range(len(held_out))):
            restored = net(item['lq'][None].to(dev.device)).float().cpu()
            psnrs.append(calculate_psnr(tensor2img([restored[0]]), tensor2img([item['gt']]), 0))
    return float(statistics.mean(psnrs)), seconds, dict(model.log_dict)


def section_amp_training(dev, cfg, ctx):
    """The demo's recommended student trained in fp32 and in bf16 from the same seed on the same batches, scored on
    the held-out photos; the PSNR difference within :data:`PSNR_TOLERANCE_DB` (reported only with ``--smoke``)."""
    from skd_basicsr.tools import demo

    folders = demo.write_photos(osp.join(ctx.workdir, 'photos'))
    pair, teacher_weights = training_pair(ctx)
    budget = {'iter': cfg['train_iters'], 'gt_size': cfg['train_gt_size'], 'batch': cfg['train_batch']}
    variant = demo.DEMO_VARIANTS[demo.STUDENTS['skd']]
    runs = {}
    for case in ('fp32', 'bf16'):
        opt = demo.student_options(variant, f'amp_training_{case}', folders, budget, teacher_weights, pair=pair)
        opt['train'].update(AMP_CASES[case])
        runs[case] = train_and_score(opt, dev, ctx.workdir, folders, cfg['train_iters'])
        print(f'[gpu_check] amp_training {case}: {runs[case][0]:.3f} dB, {runs[case][1]:.1f} s', flush=True)
    losses = [k for k in runs['fp32'][2] if not k.startswith('l_gk_')]
    source = 'random weights' if ctx.args.smoke else f'`{osp.relpath(teacher_weights, ROOT)}`'
    lines = [
        f'The demo\'s recommended student ({variant.what}; student {bench_skd.net_text(pair.student)}, teacher '
        f'{bench_skd.net_text(pair.teacher)}, {source}), '
        f'{cfg["train_iters"]} iterations of {cfg["train_batch"]} x {cfg["train_gt_size"]} px crops of the demo\'s '
        f'{len(demo.TRAIN_PHOTOS)} training photos, seed 0 in both runs (the same initialisation, batches and noise); '
        f'scored in float32 on the {len(demo.HELD_OUT_PHOTOS)} held-out photos with the demo\'s fixed sigma-'
        f'{demo.SIGMA} noise (mean PSNR, RGB).', '',
        '| train.amp | held-out PSNR (dB) | training (s) | ' + ' | '.join(f'last {k}' for k in losses) + ' |',
        '| --- |' + ' ---: |' * (2 + len(losses))
    ]
    for case, (psnr, seconds, log) in runs.items():
        lines.append(f'| {AMP_CASES[case]["amp"] or "false"} | {psnr:.3f} | {seconds:.1f} | ' +
                     ' | '.join(f'{log[k]:.4g}' for k in losses) + ' |')
    diff = runs['bf16'][0] - runs['fp32'][0]
    within = abs(diff) <= PSNR_TOLERANCE_DB
    verdict = 'within' if within else 'OUTSIDE'
    lines += ['', f'bf16 - fp32 = {diff:+.3f} dB: {verdict} the tolerance of {PSNR_TOLERANCE_DB} dB'
              f'{" (smoke run: tiny untrained networks, reported, not checked)" if ctx.args.smoke else ""}.']
    if not within and not ctx.args.smoke:
        raise SectionFailed('\n'.join(lines))
    return lines


def section_amp_latency(dev, cfg, ctx):
    """The option file's student at batch 1 in float32 and under bf16 autocast (``basicsr infer --amp bf16``'s
    forward), alternately, after warm-up; medians."""
    from skd_basicsr.tools.infer import autocast_forward

    net = option_networks(ctx, dev, ('network_g', ))['network_g']
    bf16 = autocast_forward(net, dev.device.type, torch.bfloat16)
    lines = [
        f'Student {bench_skd.net_text(ctx.options()["network_g"])}, batch 1, inference mode; float32, and the forward '
        'of `basicsr infer --amp bf16` (bf16 autocast, output back to float32); '
        f'{cfg["latency_warmup"]} warm-up forwards of each, then {cfg["latency_repeats"]} of each alternately, '
        'medians.', '', '| size | fp32 (ms) | bf16 (ms) | bf16 / fp32 |', '| --- | ---: | ---: | ---: |'
    ]
    for size in cfg['sizes']:
        x = torch.rand(1, 3, size, size, device=dev.device)
        fp32_ms, bf16_ms = alternate_medians(dev, cfg, {'fp32': functools.partial(net, x),
                                                        'bf16': functools.partial(bf16, x)})
        lines.append(f'| {size}^2 | {fp32_ms:.2f} | {bf16_ms:.2f} | {bf16_ms / fp32_ms:.3f} |')
        print(f'[gpu_check] amp_latency {size}^2: fp32 {fp32_ms:.2f} ms, bf16 {bf16_ms:.2f} ms', flush=True)
    return lines


SECTIONS = (
    ('mca', 'MCA on the device against the float64 CPU reference', section_mca),
    ('iteration', 'One SKD iteration against the floor', section_iteration),
    ('latency', 'Student against teacher latency', section_latency),
    ('bf16', 'SKD iterations with train.amp: bf16', section_bf16),
    ('amp_iteration', 'The SKD iteration in fp32, bf16, bf16 + channels_last and bf16 + compile',
     section_amp_iteration),
    ('amp_training', 'A short training run in fp32 and in bf16, scored on held-out photos', section_amp_training),
    ('amp_latency', 'Student latency in fp32 and bf16', section_amp_latency),
)


def opt_path(opt):
    return opt if osp.isabs(opt) else osp.join(ROOT, opt)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', help='cuda (the check) or cpu (with --smoke). Default: cuda')
    parser.add_argument('--smoke', action='store_true', help='tiny networks and sizes, a few repeats')
    parser.add_argument('--opt', default=osp.join('options', 'SKD_Denoise.yml'), help='option file (from repo root)')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'RESULTS_gpu.md'), help='markdown report')
    parser.add_argument('--sections', nargs='+', choices=[key for key, *_ in SECTIONS],
                        help='run only these sections. Default: all')
    args = parser.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('CUDA is not available here: run with --device cpu --smoke for the CPU version.')
    import skd_basicsr  # the compatibility layer, before anything of basicsr
    import basicsr

    dev = Device(args.device)
    cfg = SMOKE if args.smoke else FULL
    if args.smoke:  # inductor compiles a tiny Restormer's training step for minutes on a CPU; the cases run eagerly
        torch._dynamo.config.disable = True
    args.opt = opt_path(args.opt)
    body, failed = [], []

    def write_report(done):
        """The report so far: written after every section, so that a check cut short keeps what it measured."""
        sections_run = sum(line.startswith('### ') for line in body)
        if not done:
            verdict = f'PARTIAL: {sections_run} of {len(args.sections or SECTIONS)} sections so far.'
        elif failed:
            verdict = f'FAILED sections: {", ".join(failed)}.'
        else:
            verdict = 'Every section ran and every check passed.'
        head = [
            f'## GPU check, {datetime.datetime.now():%Y-%m-%d %H:%M}', '',
            f'Command: `python benchmarks/gpu_check.py {" ".join(shlex.quote(a) for a in sys.argv[1:])}`', '',
            f'{dev.describe()}; torch {torch.__version__}, Python {platform.python_version()}, basicsr '
            f'{basicsr.__version__} ({osp.dirname(basicsr.__file__)}), skd_basicsr {skd_basicsr.__version__}; '
            f'{"smoke sizes" if args.smoke else "full sizes"}; {time.time() - START:.0f} s in all. {verdict}', ''
        ]
        text = '\n'.join(head + body)
        with open(args.out, 'w') as f:
            f.write(text)
        return text

    with tempfile.TemporaryDirectory() as workdir:
        ctx = Models(args, dev, cfg, workdir)
        for key, title, run in SECTIONS:
            if args.sections and key not in args.sections:
                continue
            section_start = time.time()
            try:
                lines = run(dev, cfg, ctx)
            except SectionFailed as err:
                lines = str(err).split('\n')
                failed.append(key)
            except Exception:  # one broken section must not cost the results of the others on a lent machine
                traceback.print_exc()
                lines = ['FAILED with:', '', '```', traceback.format_exc().strip(), '```']
                failed.append(key)
            elapsed = time.time() - section_start
            print(f'[gpu_check] section {key}: {elapsed:.1f} s{" (FAILED)" if key in failed else ""}', flush=True)
            body += [f'### {title} ({key}, {elapsed:.1f} s)', ''] + lines + ['']
            write_report(done=False)
    print(write_report(done=True))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
