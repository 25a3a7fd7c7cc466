"""What one SKD training iteration costs next to training the student alone, and how fast the student is.

Three measurements, all in one process so that the ratios share the machine's state:

1. One training iteration (forward, losses, backward, optimizer step) of the networks of an option file
   (``options/SKD_Denoise.yml`` by default: Restormer dim 48 teacher, dim 32 student) on one random batch:

   * ``student``: the student alone (SRModel, L1, the same optimizer and gradient clipping);
   * ``floor``: ``student`` followed by one teacher forward under inference mode, the least any distillation of
     this teacher can cost;
   * ``skd_no_cl``: SKDModel with L_REC + L_GK (every ``distill.features`` pair, adapters, both MCA branches, the
     spatial one in the forms the file chooses per level; where the file leaves L_GK commented out, as every
     shipped file does, with that commented block restored);
   * ``skd_exact``: where the file chooses cheap spatial forms, ``skd_no_cl`` with the exact global form instead;
   * ``skd``: SKDModel with L_REC + L_GK + L_CL, as the option file has it; where the file leaves L_CL commented
     out (every shipped file does), with that commented block restored (the paper's L_CL), so that L_CL's cost is
     measured all the same;
   * ``cl_passes``: the contrastive term's unavoidable work alone, timed by itself: its feature extractor forward
     on the teacher output (no gradient) and forward + backward on a student output (in the ``teacher`` feature
     space the extractor is the teacher's encoder and the degraded input's features come free from the teacher's
     own forward).

   The cases run round-robin (one of each per round, after one warm-up round), so drift in the machine's speed
   hits all of them alike; medians over the rounds are reported.
2. The teacher forward alone in float32, under bf16 autocast and in channels_last memory format, with the relative
   change of L_GK and L_CL when the teacher's features come from the bf16 forward: the evidence for or against a
   ``distill.teacher_dtype`` option.
3. Student against teacher inference latency (batch 1, median of ``--latency-repeats``) at each ``--sizes``, from
   ``skd_basicsr.tools.flops.measure_pair`` (student and teacher timed alternately), with parameters and MACs.

The teacher has random weights (nothing can be downloaded; its speed does not depend on its values).

Usage:
    python benchmarks/bench_skd.py --out benchmarks/RESULTS.md
"""
import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from copy import deepcopy
from os import path as osp

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def read_options(opt_file, workdir, num_gpu=0, restore_terms=True):
    """The option file's training options, set up for timing one fixed batch on ``num_gpu`` GPUs (0: the CPU).
    With ``restore_terms``, the ``feature_opt`` and ``contrast_opt`` blocks the file leaves commented out are
    restored, so that the cases time L_GK and L_CL; a file with neither the section nor its commented block is an
    error then. Training runs pass False: they train the file as it is."""
    import skd_basicsr  # noqa: F401  (registries, compatibility layer)
    from skd_basicsr.platform.options import parse_options

    opt, _ = parse_options(workdir, is_train=True, argv=['-opt', opt_file])
    for key in ('feature_opt', 'contrast_opt') if restore_terms else ():
        if key not in opt['train']:
            opt['train'][key] = commented_section(opt_file, key)
    opt['num_gpu'] = num_gpu
    opt['train'].pop('progressive', None)  # one fixed patch size here; progressive cropping is not being timed
    opt['logger']['use_tb_logger'] = False
    return opt


def commented_section(opt_file, key):
    """The ``train`` section ``key`` the option file leaves commented out (``  # KEY:`` and its lines, each
    ``  #   ``-prefixed, as the shipped files write it), as options; an error if the file has none."""
    import yaml

    with open(opt_file, encoding='utf-8') as f:
        lines = f.read().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(f'  # {key}:'))
    except StopIteration:
        raise ValueError(f'{opt_file}: no train.{key}, commented or not; bench_skd times it and needs one.') from None
    block = [f'{key}:' + lines[start][len(f'  # {key}:'):]]
    for line in lines[start + 1:]:
        if not line.startswith('  #   '):
            break
        block.append('  ' + line[len('  #   '):])
    return yaml.safe_load('\n'.join(block))[key]


def save_random_teacher(opt, workdir):
    """Point ``opt`` at a teacher checkpoint of random weights (its speed does not depend on its values)."""
    from basicsr.archs import build_network

    torch.manual_seed(0)
    teacher_path = osp.join(workdir, 'teacher.pth')
    torch.save({'params': build_network(deepcopy(opt['network_t'])).state_dict()}, teacher_path)
    opt['path']['pretrain_network_t'] = teacher_path


def case_options(opt):
    """Options of each model: SKDModel as in the file (``skd``), without L_CL (``skd_no_cl``), without L_CL and the
    spatial MCA branch (``skd_no_spatial``), and SRModel on the student alone (``student``)."""
    opt_no_cl = deepcopy(opt)
    opt_no_cl['train'].pop('contrast_opt', None)
    opt_no_spatial = deepcopy(opt_no_cl)
    opt_no_spatial['train']['feature_opt']['branches'] = ['direct', 'channel']
    opt_student = deepcopy(opt)
    opt_student['model_type'] = 'SRModel'
    for key in ('network_t', 'distill'):
        opt_student.pop(key, None)
    for key in ('feature_opt', 'contrast_opt', 'output_opt'):
        opt_student['train'].pop(key, None)
    cases = {'skd': opt, 'skd_no_cl': opt_no_cl, 'skd_no_spatial': opt_no_spatial, 'student': opt_student}
    if ships_spatial_forms(opt):  # the exact global form everywhere, measured beside the file's cheap forms
        cases['skd_exact'] = exact_spatial(opt_no_cl)
    return cases


def ships_spatial_forms(opt):
    """Whether the option file chooses a cheap spatial form anywhere (in feature_opt or on a distilled pair)."""
    from skd_basicsr.distill.distill_options import SPATIAL_FORM_KEYS

    pairs = [p for p in opt['distill']['features'] if isinstance(p, dict)]
    return any(key in opt['train']['feature_opt'] or any(key in p for p in pairs) for key in SPATIAL_FORM_KEYS)


def with_windows(model_opt, windows):
    """A copy of ``model_opt`` in which distilled pair i takes the spatial window ``windows[i]`` (None: the exact
    global form), every spatial form of the option file removed."""
    from skd_basicsr.distill.distill_options import SPATIAL_FORM_KEYS

    model_opt = deepcopy(model_opt)
    for key in SPATIAL_FORM_KEYS:
        model_opt['train']['feature_opt'].pop(key, None)
    pairs = []
    for pair, window in zip(model_opt['distill']['features'], windows):
        if isinstance(pair, str):
            pair = {'student': pair, 'teacher': pair}
        pair = {k: v for k, v in pair.items() if k not in SPATIAL_FORM_KEYS}
        if window is not None:
            pair['spatial_window'] = window
        pairs.append(pair)
    model_opt['distill']['features'] = pairs
    return model_opt


def exact_spatial(model_opt):
    """A copy of ``model_opt`` with the exact global spatial form at every distilled level."""
    return with_windows(model_opt, [None] * len(model_opt['distill']['features']))


def build_all(options):
    """name -> BasicSR model built from ``options[name]``, each from the same seed."""
    from basicsr.models import build_model

    models = {}
    for name, model_opt in options.items():
        torch.manual_seed(0)
        models[name] = build_model(model_opt)
    return models


def build_models(opt_file, workdir):
    """The models of :func:`case_options` for the option file, on the CPU, sharing one random teacher."""
    opt = read_options(opt_file, workdir)
    save_random_teacher(opt, workdir)
    return opt, build_all(case_options(opt))


def floor_step(student, skd):
    """One iteration of the floor: ``student``'s training iteration, then one forward of ``skd``'s teacher on the
    input ``skd`` was fed, in inference mode under ``skd``'s training autocast (``train.amp``): the least that any
    distillation of this teacher can cost. Both models must have been fed the batch."""

    def floor(i):
        student.optimize_parameters(i)
        with torch.inference_mode(), skd.precision.autocast():
            skd.net_t(skd.lq)

    return floor


def step_cases(models, batch):
    """name -> callable running one iteration of that case on ``batch``."""
    for model in models.values():
        model.feed_data(batch)
    skd = models['skd']
    net_t = skd.net_t
    cri = skd.cri_contrast
    floor = floor_step(models['student'], skd)

    with torch.inference_mode():
        output_t = net_t(batch['lq'])  # computed once: the teacher forward is not part of L_CL's own cost

    def cl_passes(i):
        anchor = output_t.clone().requires_grad_(True)
        with torch.no_grad():
            cri.space(output_t)
        feats = cri.space(anchor)
        sum(f.mean() for f in feats.values()).backward()

    cases = {'student': models['student'].optimize_parameters, 'floor': floor,
             'skd_no_spatial': models['skd_no_spatial'].optimize_parameters,
             'skd_no_cl': models['skd_no_cl'].optimize_parameters, 'skd': skd.optimize_parameters}
    if 'skd_exact' in models:
        cases['skd_exact'] = models['skd_exact'].optimize_parameters
    if cri is not None:
        cases['cl_passes'] = cl_passes
    return cases


def round_robin(cases, rounds, warmup=True):
    """Median seconds per case: one warm-up round (unless ``warmup`` is False), then ``rounds`` rounds running every
    case once."""
    times = {name: [] for name in cases}
    first = 0 if warmup else 1
    for r in range(first, rounds + 1):
        for name, run in cases.items():
            start = time.perf_counter()
            run(r)
            if r:
                times[name].append(time.perf_counter() - start)
        print(f'[bench] round {r}/{rounds}: ' + ', '.join(f'{n} {t[-1]:.2f}s' for n, t in times.items() if t),
              flush=True)
    return {name: statistics.median(t) for name, t in times.items()}, times


def teacher_variants(skd, lq, rounds, bf16_rounds):
    """Teacher forward in float32 / bf16 autocast / channels_last, and what bf16 features do to the losses."""
    net_t = skd.net_t

    def autocast(bf16):
        return torch.autocast('cpu', dtype=torch.bfloat16) if bf16 else nullcontext()

    def forward(bf16=False, channels_last=False):
        x = lq.contiguous(memory_format=torch.channels_last) if channels_last else lq
        with torch.inference_mode(), autocast(bf16):
            return net_t(x)

    cases = {'float32': lambda r: forward(), 'channels_last': lambda r: forward(channels_last=True)}
    medians, _ = round_robin(cases, rounds)
    # without bf16 instructions, autocast runs tens of times slower: a few runs, no warm-up, say enough
    bf16, _ = round_robin({'bf16_autocast': lambda r: forward(bf16=True)}, bf16_rounds, warmup=False)
    medians.update(bf16)

    # the losses with the teacher features of each forward, against the same student features
    losses = {}
    with torch.inference_mode():
        with skd.taps_s.recording() as feats_s:
            out_s = skd.net_g(lq)
        student = skd.adapters([feats_s[p['student']] for p in skd.pairs])
        for name, bf16 in (('float32', False), ('bf16', True)):
            with autocast(bf16), skd.taps_t.recording() as feats_t:
                out_t = net_t(lq).float()
            feats_t = {k: v.float() for k, v in feats_t.items()}
            l_gk, _ = skd.cri_feat(student, [feats_t[p['teacher']] for p in skd.pairs])
            losses[name] = {'l_gk': float(l_gk)}
            if skd.cri_contrast is not None:
                neg = skd.cri_contrast.space.recorded(feats_t)
                with autocast(bf16):
                    l_cl = skd.cri_contrast(out_s, out_t, lq, gt=skd.gt, negative_feats=neg)
                losses[name]['l_cl'] = float(l_cl)
    rel = {k: abs(losses['bf16'][k] - losses['float32'][k]) / abs(losses['float32'][k]) for k in losses['float32']}
    return medians, losses, rel


def distillation_macs(skd, lq):
    """Forward MACs of the student and teacher on ``lq`` (thop) and of the spatial MCA products (2 B N^2 C per
    distilled level, C the teacher's channels), to explain where the distillation time goes."""
    from skd_basicsr.tools.flops import thop_macs

    with torch.no_grad(), skd.taps_t.recording() as feats_t:
        skd.net_t(lq)
    spatial = {}
    for pair in skd.pairs:
        b, c, h, w = feats_t[pair['teacher']].shape
        spatial[pair['teacher']] = 2 * b * (h * w)**2 * c
    return {'student': thop_macs(skd.get_bare_model(skd.net_g), lq), 'teacher': thop_macs(skd.net_t, lq),
            'spatial_mca': spatial}


def latency_rows(opt, sizes, repeats):
    from skd_basicsr.tools.flops import measure_pair

    rows = []
    for size in sizes:
        s, t = measure_pair(opt['network_g'], opt['network_t'], (size, size), repeats)  # timed alternately
        rows.append((size, s, t))
        print(f'[bench] latency {size}^2: student {s["latency_ms"]:.0f} ms, teacher {t["latency_ms"]:.0f} ms',
              flush=True)
    return rows


def write_report(path, args, opt, batch_shape, medians, all_times, macs, teacher_medians, losses, rel, rows,
                 minutes):
    """Write this run's section at the top of ``path``, keeping the sections already there (earlier runs, the soak)."""
    path_text = open(path).read() if osp.isfile(path) else ''
    m = medians
    lines = [f'## SKD iteration and inference benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}', '',
             f'Command: `python benchmarks/bench_skd.py {" ".join(shlex.quote(a) for a in sys.argv[1:])}`', '',
             f'torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or "CPU"} '
             f'({os.cpu_count()} cores visible), float32. Option file `{args.opt}`: student '
             f'{net_text(opt["network_g"])}, teacher {net_text(opt["network_t"])}, '
             f'{len(opt["distill"]["features"])} feature pairs, batch '
             f'{tuple(batch_shape)}, {args.rounds} rounds after one warm-up round; {minutes:.1f} min in all.', '',
             '### One training iteration', '',
             '| case | what runs | median (s) | runs (s) |', '| --- | --- | ---: | --- |']
    what = {'student': 'student alone: forward, L1, backward, AdamW step',
            'floor': 'student iteration + one teacher forward (inference mode)',
            'skd_no_spatial': 'SKDModel, L_REC + L_GK without the spatial MCA branch (direct + channel)',
            'skd_no_cl': 'SKDModel, L_REC + L_GK (adapters, direct + channel + spatial MCA in the forms of the file; '
                         'the file\'s, commented out or not)',
            'skd_exact': 'the same, with the exact global spatial form at every level',
            'skd': 'SKDModel, L_REC + L_GK + L_CL (the file\'s, commented out or not)',
            'cl_passes': "L_CL's extractor: forward on the teacher output + forward and backward on the student's"}
    for name in m:
        lines.append(f'| {name} | {what[name]} | {m[name]:.3f} | {", ".join(f"{t:.2f}" for t in all_times[name])} |')
    ratio_no_cl = m['skd_no_cl'] / m['floor']
    lines += ['', f'- SKD without L_CL / floor = {ratio_no_cl:.3f} (target <= 1.15: '
              f'{"met" if ratio_no_cl <= 1.15 else f"missed by {ratio_no_cl - 1.15:.3f}"}).',
              f'- SKD without L_CL / student alone = {m["skd_no_cl"] / m["student"]:.3f}; teacher forward share of the '
              f'floor = {(m["floor"] - m["student"]) / m["floor"]:.2f}.']
    if 'skd_exact' in m:
        lines.append(f'- The exact global spatial form at every level instead: SKD without L_CL / floor = '
                     f'{m["skd_exact"] / m["floor"]:.3f}.')
    spatial = sum(macs['spatial_mca'].values())
    lines += [f'- Spatial MCA: L_GK without its spatial branch / floor = {m["skd_no_spatial"] / m["floor"]:.3f}; the '
              f'spatial branch adds {m["skd_no_cl"] - m["skd_no_spatial"]:.3f} s. Its two products (S^T T and the '
              f'weighted sum of S, 2 B N^2 C MACs per level) cost {spatial / 1e9:.1f} GMACs forward for this batch '
              f'({", ".join(f"{k} {v / 1e9:.1f}" for k, v in macs["spatial_mca"].items())}), against '
              f'{macs["student"] / 1e9:.1f} GMACs for the student forward and {macs["teacher"] / 1e9:.1f} for the '
              "teacher's (thop): exact spatial attention over every full-resolution level is more arithmetic than "
              'the student itself.']
    if 'skd' in m and 'cl_passes' in m:
        extra = m['skd'] - m['skd_no_cl']
        lines += [f'- SKD with L_CL / floor = {m["skd"] / m["floor"]:.3f}; SKD with L_CL / student alone = '
                  f'{m["skd"] / m["student"]:.3f}.',
                  f'- L_CL adds {extra:.3f} s to the iteration; its extractor passes alone take {m["cl_passes"]:.3f} s '
                  f'(extra / passes = {extra / m["cl_passes"]:.2f}; target: no more than the passes).']
    lines += ['', '### Teacher forward: float32, bf16 autocast, channels_last', '',
              '| teacher forward | median (s) | / float32 |', '| --- | ---: | ---: |']
    for name, value in teacher_medians.items():
        lines.append(f'| {name} | {value:.3f} | {value / teacher_medians["float32"]:.2f} |')
    lines += ['', 'Losses with the teacher features of each forward (same student, same batch): ' +
              '; '.join(f'{k} float32 {losses["float32"][k]:.5g}, bf16 {losses["bf16"][k]:.5g} '
                        f'(relative change {rel[k]:.1e})' for k in rel) + '.', '',
              f'### Inference latency, batch 1, median of {args.latency_repeats}', '',
              '| size | student params | teacher params | student MACs (G) | teacher MACs (G) | MACs ratio | '
              'student (ms) | teacher (ms) | latency ratio |', '|' + ' ---: |' * 9]
    for size, s, t in rows:
        lines.append(f'| {size}^2 | {s["params"]:,} | {t["params"]:,} | {s["macs"] / 1e9:.2f} | '
                     f'{t["macs"] / 1e9:.2f} | {s["macs"] / t["macs"]:.3f} | {s["latency_ms"]:.0f} | '
                     f'{t["latency_ms"]:.0f} | '
                     f'{s["latency_ms"] / t["latency_ms"]:.3f} |')
    lines += ['', 'MACs: thop (convolutions, norms, activations; attention matmuls not counted, the convention of the '
              '141 G quoted for Restormer at 256^2); `basicsr flops` also gives them with the matmuls.', '']
    text = '\n'.join(lines)
    with open(path, 'w') as f:
        f.write(text + kept_sections(path_text))
    print(text)


def kept_sections(text):
    """The ``## `` sections of an existing report, to follow the new one (nothing when there are none)."""
    start = text.find('## ')
    return '' if start < 0 else '\n' + text[start:]


def net_text(network):
    return (f'Restormer dim {network["dim"]} blocks {network["num_blocks"]} refinement '
            f'{network["num_refinement_blocks"]}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--opt', default=osp.join('options', 'SKD_Denoise.yml'), help='option file (from repo root)')
    parser.add_argument('--patch', type=int, default=64, help='training patch side. Default: 64')
    parser.add_argument('--batch', type=int, default=4, help='training batch. Default: 4')
    parser.add_argument('--rounds', type=int, default=5, help='timed rounds of the iteration cases. Default: 5')
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512], help='latency sizes. Default: 256 512')
    parser.add_argument('--latency-repeats', type=int, default=5, help='latency runs per net and size. Default: 5')
    parser.add_argument('--bf16-rounds', type=int, default=2, help='timed bf16 teacher forwards. Default: 2')
    parser.add_argument('--threads', type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument('--out', default=None, help='markdown file for the results (printed anyway)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as workdir:
        opt, models = build_models(args.opt, workdir)
        torch.manual_seed(1)
        gt = torch.rand(args.batch, 3, args.patch, args.patch)
        batch = {'gt': gt, 'lq': gt + torch.randn_like(gt) * 25 / 255}
        medians, all_times = round_robin(step_cases(models, batch), args.rounds)
        macs = distillation_macs(models['skd'], batch['lq'])
        teacher_medians, losses, rel = teacher_variants(models['skd'], batch['lq'], args.rounds, args.bf16_rounds)
    rows = latency_rows(opt, args.sizes, args.latency_repeats)
    minutes = (time.time() - start) / 60
    write_report(args.out or os.devnull, args, opt, batch['gt'].shape, medians, all_times, macs, teacher_medians,
                 losses, rel, rows, minutes)
    return 0


if __name__ == '__main__':
    sys.exit(main())
