"""``basicsr distill``: an SKD option file from a BasicSR training file and its trained weights, in one command.

``network_g`` of the training file is the teacher; its weights (``--teacher``) must fit it strictly. The student is
chosen for one cost target against the teacher (``--params R``, ``--macs R`` or ``--latency R``, a ratio; latency
measured here, at ``--size``), by a search over the width and depth of the teacher's family
(:mod:`skd_basicsr.distill.student_search`), or given (``--student FILE``, any BasicSR network). The feature pairs
are found on a probe forward (:mod:`skd_basicsr.distill.feature_pairs`). The file written keeps everything else of the
training file (datasets, schedule, validation, logging) and runs as it is with ``basicsr train -opt OUT``.

``--terms`` chooses what the student learns beside L1 to the ground truth:

* ``recommended`` (default): the distillation study's best setting for the kind of student (docs/kd_study.md,
  section 5 and its conclusion): the teacher's weights where weight selection maps the pair, plus L1 to the teacher's
  output, and, for a student that keeps the teacher's depth (cut in width only), L_GK in its normalised form on the
  feature pairs (alpha2 0.1, warmed up over the first tenth of ``train.total_iter``: ``train.distill_schedule``). At
  the learning rate tuned for the student trained alone, that L_GK won on the teacher's weights for a Restormer cut in
  width only (+0.15 ± 0.04 dB warmed up, +0.07 ± 0.02 dB without, and +0.12 ± 0.05 and +0.10 ± 0.04 dB at three times
  the budget); for one cut in depth it won at the study's budget (+0.12 ± 0.05 dB) but not at three times it (+0.04 ±
  0.03 dB, 6 seeds),
  so a student cut in depth, as every shipped file cuts its own, gets output-L1 alone. A student of another family,
  which cannot start from the teacher's weights, gets output-L1 alone too: for a CNN from a Restormer teacher, L_GK
  beside output-L1 led within its spread at the study's budget and did not win at three times it;
* ``skd``: the same start and output L1, plus L_GK as the paper sums it and L_CL;
* ``paper``: the paper's form: L_GK and L_CL, a random start, no output L1.

A student of another family than the teacher starts at random with ``distill.student_init: kaiming`` (BasicSR's
Kaiming initialisation of its convolutions, the last one scaled by 0.1), whatever the terms: the study measured that
start (with PyTorch's default initialisation the CNN it trained was blind to its input and training a lottery of the
seed, :mod:`skd_basicsr.distill.student_init`).
"""
import copy
import os
import sys
import textwrap
from os import path as osp

from skd_basicsr.platform.errors import OptionError
from skd_basicsr.tools import command_parser, run_command

TERMS = ('recommended', 'skd', 'paper')
SPATIAL_WINDOW = 8  # the cheap spatial MCA form at full-resolution levels, as in the shipped files
FEATURE_LOSS = {'type': 'SKDFeatureLoss', 'loss_weight': 0.1, 'mca_weight': 1.0, 'sigma': 1.0, 'temperature': 'auto',
                'branches': ['direct', 'channel', 'spatial'], 'spatial_softmax': 'contracted'}
# the recommended terms' L_GK: the teacher's per-level RMS and a mean over levels and branches
NORMALISED_FEATURE_LOSS = dict(FEATURE_LOSS, feature_norm='teacher_rms', level_reduction='mean')
WARMUP_FRACTION = 0.1  # ... with alpha2 warmed up over this fraction of the steps (train.distill_schedule)
OUTPUT_LOSS = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
CONTRAST_LAYERS = 3  # L_CL's teacher feature space: the teacher modules of the first pairs


def build_parser():
    parser = command_parser('basicsr distill', __doc__)
    parser.add_argument('-opt', required=True, help='a BasicSR training option file; its network_g is the teacher')
    parser.add_argument('--teacher', required=True, help="the teacher's trained weights (.pth)")
    parser.add_argument('--param_key', help="key of the weights in the file (default: params_ema, else params, else "
                        "the file is the state dict); '' for a bare state dict")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--params', type=float, metavar='R', help='the student at most R x the parameters')
    target.add_argument('--macs', type=float, metavar='R', help='the student at most R x the MACs (thop)')
    target.add_argument('--latency', type=float, metavar='R', help='the student at most R x the latency, measured '
                        'here on the CPU at --size, alternately with the teacher')
    target.add_argument('--student', metavar='FILE', help='an option file whose network_g is the student (any '
                        'BasicSR network, another family included)')
    parser.add_argument('--size', nargs=2, type=int, default=[256, 256], metavar=('H', 'W'),
                        help='input size of the latency (default 256 x 256)')
    parser.add_argument('--repeats', type=int, default=3, help='timed forwards per network (medians; default 3)')
    parser.add_argument('--terms', choices=TERMS, default='recommended', help='what the student learns beside L1 to '
                        'the ground truth (default: recommended, the distillation study\'s best)')
    parser.add_argument('--out', help='the SKD option file to write; must not exist')
    parser.add_argument('--dry-run', action='store_true', help='print the choice and the candidates; write nothing')
    return parser


def main(argv=None):
    return run_command(build_parser(), run, argv)


def check_training_file(opt, path):
    """Refuse a file that is not a BasicSR training file, or that distils already."""
    missing = [key for key in ('network_g', 'train') if not isinstance(opt.get(key), dict)]
    if missing or not isinstance((opt.get('datasets') or {}).get('train'), dict):
        raise OptionError(f'-opt {path} is not a BasicSR training file: it needs network_g, train and datasets.train '
                          f'(missing: {missing or ["datasets.train"]}).')
    total = opt['train'].get('total_iter')
    if isinstance(total, bool) or not isinstance(total, (int, float)):
        raise OptionError(f'-opt {path}: train.total_iter is missing or not a number ({total!r}); BasicSR trains for '
                          'that many iterations.')
    if opt.get('model_type') == 'SKDModel' or 'network_t' in opt:
        raise OptionError(f'-opt {path} distils already (model_type {opt.get("model_type")}, network_t); give the '
                          "teacher's own training file.")


def read_teacher(net_opt, path, param_key):
    """The teacher built from ``net_opt`` with the weights of ``path`` loaded strictly, and the param key used."""
    from skd_basicsr.deploy.network_io import build_network_from_options
    from skd_basicsr.platform.checkpoint import check_fit, read_weights, safe_torch_load

    if param_key is None:
        state = safe_torch_load(path)
        param_key = next((k for k in ('params_ema', 'params') if isinstance(state, dict) and k in state), '')
    state = read_weights(path, param_key or None, key_option='--param_key')
    net = build_network_from_options(net_opt)
    check_fit(net, state, True, f'--teacher {path} does not fit network_g of the training file')
    net.load_state_dict(state, strict=True)
    return net.eval(), state, param_key or None


def choose_student(args, teacher_opt):
    """(student options, candidates measured, target name, target value) for the arguments."""
    from skd_basicsr.distill import student_search

    what = next(name for name in student_search.TARGETS if getattr(args, name) is not None)
    target = getattr(args, what)
    if not target > 0:
        raise OptionError(f'--{what} {target}: give a ratio to the teacher above 0, e.g. 0.4.')
    found = student_search.candidates(teacher_opt)
    student_search.measure(found, teacher_opt, what, tuple(args.size), max(args.repeats, 1), budget=target)
    return student_search.choose(found, what, target).options, found, what, target


def start_from_teacher(teacher_state, teacher_net, student_net, terms):
    """(whether the student starts from the teacher's weights, why): weight selection where it maps the pair."""
    from skd_basicsr.distill.weight_selection import select_weights

    if terms == 'paper':
        return False, 'the paper\'s form starts at random'
    try:
        select_weights(teacher_state, student_net, teacher_net=teacher_net)
    except OptionError as err:
        return False, f'weight selection cannot map this pair ({str(err).splitlines()[0]})'
    return True, 'weight selection maps the pair'


def same_family(student_opt, teacher_opt):
    return student_opt['type'] == teacher_opt['type']


def out_terms(terms, init, width_only):
    """The train sections the file gets beside the user's: output_opt, feature_opt, contrast_opt (``init``: the
    student starts from the teacher's weights; ``width_only``: it keeps the teacher's depth,
    :func:`skd_basicsr.distill.student_search.keeps_depth`)."""
    sections = [] if terms == 'paper' else ['output_opt']
    if terms in ('skd', 'paper') or (init and width_only):
        sections.append('feature_opt')
    if terms in ('skd', 'paper'):
        sections.append('contrast_opt')
    return sections


def recommended_note(init, width_only):
    """The line that says why the recommended terms include L_GK or not, for the printed summary and the header."""
    if not init:
        return ('(the pairs are for L_GK, which the recommended terms leave out for a student that cannot start from '
                'the teacher\'s weights: --terms skd adds it)')
    if not width_only:
        return ('(the pairs are for L_GK, which the recommended terms leave out for a student cut in depth: on the '
                'teacher\'s weights it did not win over output-L1 alone at three times the study\'s budget, '
                'docs/kd_study.md; --terms skd adds it)')
    return ('(the student keeps the teacher\'s depth and starts from its weights: the recommended terms add '
            f'normalised L_GK, alpha2 warmed up over the first {WARMUP_FRACTION:.0%} of the steps, which won for '
            'such a student in the study, docs/kd_study.md)')


def skd_options(opt, teacher_opt, student_opt, weights, param_key, pairs, init, terms, full_size, width_only):
    """The SKD option dict: ``opt`` with the student, the teacher and the distillation terms, in BasicSR's order
    (the teacher after the student, distill after path)."""
    sections = out_terms(terms, init, width_only)
    feature = 'feature_opt' in sections
    out = {}
    for key, value in copy.deepcopy(opt).items():
        out[key] = value
        if key == 'network_g':
            out['network_t'] = None
        if key == 'path':
            out['distill'] = None
    out['name'] = f'{opt.get("name", "experiment")}_SKD'
    out['model_type'] = 'SKDModel'
    out['network_g'] = copy.deepcopy(student_opt)
    out['network_t'] = copy.deepcopy(teacher_opt)
    out['path'] = dict(out.get('path') or {})
    out['path'].update(pretrain_network_g=None, resume_state=None, pretrain_network_t=osp.abspath(weights),
                       param_key_t=param_key, strict_load_t=True)
    distill = {}
    if feature:
        distill['features'] = [dict(pair, **({'spatial_window': SPATIAL_WINDOW} if size == full_size else {}))
                               for pair, size in pairs]
    distill.update(adapter='conv1x1', init_from_teacher=init)
    if not same_family(student_opt, teacher_opt):
        distill['student_init'] = 'kaiming'
    out['distill'] = distill
    train = out['train']
    for key in ('output_opt', 'feature_opt', 'contrast_opt', 'distill_schedule'):
        train.pop(key, None)
    if 'output_opt' in sections:
        train['output_opt'] = dict(OUTPUT_LOSS)
    if feature:
        train['feature_opt'] = dict(NORMALISED_FEATURE_LOSS if terms == 'recommended' else FEATURE_LOSS)
        if terms == 'recommended':  # alpha2 warmed up over the first WARMUP_FRACTION of the steps
            train['distill_schedule'] = {'warmup_iter': max(1, round(WARMUP_FRACTION * int(train['total_iter'])))}
    if 'contrast_opt' in sections:
        layers = {pair['teacher']: 1.0 for pair, _ in pairs[:CONTRAST_LAYERS]}
        train['contrast_opt'] = {'type': 'SKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher',
                                 'positive': 'teacher', 'layer_weights': layers}
    return out


def table(found, teacher_opt, chosen, what):
    """The candidates measured, one line each, the chosen one marked."""
    lines = [f'   {"student (what differs from the teacher)":<64} {"params":>8} {"MACs":>8} {"latency":>8}']
    for c in found:
        cells = [f'{c.ratios[k]:.3f}x' if c.ratios.get(k) is not None else '-' for k in ('params', 'macs', 'latency')]
        mark = '*' if c.options == chosen else ' '
        lines.append(f' {mark} {c.describe(teacher_opt):<64} ' + ' '.join(f'{cell:>8}' for cell in cells))
    return lines


def run(args):
    import yaml
    from basicsr.archs import build_network

    import skd_basicsr  # noqa: F401  (registries)
    from skd_basicsr.deploy.network_io import network_from_file
    from skd_basicsr.distill.feature_pairs import pair_features
    from skd_basicsr.distill.student_search import Candidate, keeps_depth
    from skd_basicsr.platform.cost import count_params
    from skd_basicsr.platform.network_spec import NetworkSpec
    from skd_basicsr.platform.options import ordered_yaml, read_option_file

    if not args.dry_run and not args.out:
        raise OptionError('--out is required (the SKD option file to write), or --dry-run.')
    if args.out and osp.exists(args.out) and not args.dry_run:
        raise OptionError(f'--out {args.out} exists; remove it or choose another name.')
    opt = read_option_file(args.opt, required=())
    check_training_file(opt, args.opt)
    teacher_opt = copy.deepcopy(opt['network_g'])
    teacher_net, teacher_state, param_key = read_teacher(teacher_opt, args.teacher, args.param_key)

    if args.student:
        student_opt = network_from_file(args.student)[0]
        params = count_params(build_network(dict(student_opt)))
        found = [Candidate(student_opt, params, {'params': params / count_params(teacher_net)})]
        what, target = 'student', None
    else:
        student_opt, found, what, target = choose_student(args, teacher_opt)
    student_net = build_network(dict(student_opt))
    spec_t = NetworkSpec.from_options(teacher_opt, 'network_g of the training file')
    spec_s = NetworkSpec.from_options(student_opt, 'the student')
    if spec_s.in_channels != spec_t.in_channels:
        raise OptionError(f'the student takes {spec_s.in_channels} input channels, the teacher {spec_t.in_channels}.')
    probe = spec_s.probe(None, spec_t)
    try:
        sized = pair_features(student_net, teacher_net, probe, with_sizes=True)
    except ValueError as err:
        raise OptionError(str(err))
    full_size = tuple(probe.shape[-2:])
    init, why = start_from_teacher(teacher_state, teacher_net, student_net, args.terms)

    rule = {'student': 'given with --student',
            'params': f'the most parameters within --params {target}',
            'macs': f'the most parameters within --macs {target}',
            'latency': f'the most parameters within --latency {target} (those within it by MACs timed at '
                       f'{args.size[0]} x {args.size[1]}, in order of parameters, alternately with the teacher)'}[what]
    chosen = next(c for c in found if c.options == student_opt)
    lines = table(found, teacher_opt, student_opt, what)
    lines += ['', f'rule: {rule}', f'chosen: {chosen.describe(teacher_opt)} ({chosen.params:,} parameters)',
              'feature pairs (student -> teacher):']
    lines += [f'  {p["student"]} -> {p["teacher"]} ({h} x {w} on a {full_size[0]} x {full_size[1]} probe)'
              for p, (h, w) in sized]
    start = "from the teacher's weights" if init else 'random'
    if not same_family(student_opt, teacher_opt):
        start += ', its convolutions Kaiming-initialised (distill.student_init: kaiming, the start the study measured)'
    lines.append(f'start: {start} ({why}); terms: {args.terms}')
    width_only = keeps_depth(student_opt, teacher_opt)
    if args.terms == 'recommended':
        lines.append(recommended_note(init, width_only))
    print('\n'.join(lines))
    if args.dry_run:
        return 0

    out = skd_options(opt, teacher_opt, student_opt, args.teacher, param_key, sized, init, args.terms, full_size,
                      width_only)
    intro = (f'SKD option file written by `basicsr distill` from {args.opt} and the teacher {args.teacher} (param key '
             f'{param_key or "none: a bare state dict"}). Everything but the networks, path, distill and the '
             f'distillation terms is the training file\'s; the experiment name has _SKD appended. Student: {rule}.')
    header = textwrap.wrap(intro, 110) + [''] + lines + ['', f'Run: basicsr train -opt {args.out}']
    text = ''.join(f'# {line}'.rstrip() + '\n' for line in header) + '\n'
    text += yaml.dump(out, Dumper=ordered_yaml()[1], sort_keys=False, default_flow_style=False)
    tmp = f'{args.out}.tmp{os.getpid()}'
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, args.out)
    print(f'Wrote {args.out}; run it with `basicsr train -opt {args.out}`.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
