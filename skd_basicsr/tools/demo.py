"""``basicsr demo``: an offline end-to-end proof on real photos, through BasicSR's own training pipeline.

Gaussian colour denoising at sigma 25 on the colour photos that ship inside scikit-image (a train / held-out split).
The teacher, a small Restormer trained once until its held-out PSNR flattened, ships with the package
(``demo_teacher.pth``; ``--train-teacher`` re-makes it). One student, 0.40x the teacher's parameters, is then trained
the same number of iterations from the same seed and at the same learning rate in five ways (:data:`STUDENTS`): alone,
alone from the teacher's selected weights, with output-L1 distillation, with the recommended setting (the distillation
study's best for this student, docs/kd_study.json) and with the paper's form of SKD.
All six networks are scored on the held-out photos. Each stage is an ordinary option file (written to OUT/options)
run by ``train_pipeline``; the distillation study (``benchmarks/kd_study.py``, its variants in
``benchmarks/study/variants.py``) trains these and more on paired seeds.

``--regime cross_family`` runs the study's cross-family regime instead (:data:`DEMO_REGIMES`): a plain CNN of
another family (BasicSR's ``SRVGGNetCompact``, 0.385x the teacher's parameters), which cannot start from the
teacher's weights, trained from one Kaiming-initialised start alone, with its recommended setting (output-L1), with
SKD's best form of L_GK beside output-L1 and with the paper's form.
"""
import json
import os
import sys
import time
from collections import namedtuple
from copy import deepcopy
from os import path as osp

import cv2
import numpy as np

from skd_basicsr.tools import command_parser, run_command
from skd_basicsr.tools.distill import FEATURE_LOSS, NORMALISED_FEATURE_LOSS

TRAIN_PHOTOS = ('astronaut', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina')
HELD_OUT_PHOTOS = ('coffee', 'chelsea')
MAX_SIDE = 512
SIGMA = 25
TEACHER = {'type': 'Restormer', 'dim': 16, 'num_blocks': [2, 2, 2, 2], 'num_refinement_blocks': 1,
           'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'BiasFree'}
# 0.40x the teacher's parameters, cut in width only (dim 16 -> 10, the same depth and heads): students cut in depth
# and width at once are where distillation is known to fail (MiPKD, ICLR 2025), and a student of the teacher's
# depth takes every teacher block when initialised from it
STUDENT = {'type': 'Restormer', 'dim': 10, 'num_blocks': [2, 2, 2, 2], 'num_refinement_blocks': 1,
           'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'BiasFree'}
TEACHER_WEIGHTS = osp.join(osp.dirname(osp.abspath(__file__)), 'demo_teacher.pth')
# iterations of the teacher (only with --train-teacher; the shipped one had 8000) and of every student, patch, batch
BUDGETS = {'full': {'teacher_iter': 8000, 'student_iter': 600, 'gt_size': 48, 'batch': 4},
           'quick': {'teacher_iter': 20, 'student_iter': 10, 'gt_size': 32, 'batch': 2}}

LEVELS = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent', 'decoder_level3', 'decoder_level2',
          'decoder_level1', 'refinement')
FULL_RESOLUTION = ('encoder_level1', 'decoder_level1', 'refinement')
OUTPUT_KD = {'output_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
PAPER = {'feature_opt': FEATURE_LOSS,
         'contrast_opt': {'type': 'SKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher',
                          'positive': 'teacher'}}
# A student variant: what it adds to L1 to the ground truth, its train options, the spatial MCA form of the distilled
# levels at full resolution (None: no features distilled; 'exact', 'window' = 8 x 8 windows, 'tokens' = pooled to 256
# tokens), whether it distils (SKDModel, or `model`), the distilled levels, and whether it starts from the teacher's
# selected weights (basicsr shrink for SRModel, distill.init_from_teacher for SKDModel; its name ends in _init). In
# train options, a distill_schedule given in fractions of the budget ({'warmup': 0.1}) becomes iterations per run.
# The distillation study (benchmarks/study/variants.py) trains these and its own on paired seeds.
Variant = namedtuple('Variant', 'what train form skd levels init model', defaults=(LEVELS, False, 'SKDModel'))
# The networks of a student run: the student, its teacher, the student module compared with each distilled teacher
# level (None: the module of the same name, as for two Restormers), and the learning rate of the student's AdamW
# (cosine to 1/100 of it). The demo trains DEMO_PAIR; the distillation study has a pair per regime
# (benchmarks/study/regimes.py).
Pair = namedtuple('Pair', 'student teacher student_layers lr', defaults=(None, 1e-3))
DEMO_VARIANTS = {
    'scratch': Variant('nothing', {}, None, False),
    'scratch_init': Variant('nothing; initialised from the teacher', {}, None, False, init=True),
    'output_kd': Variant('L1 to the teacher output', OUTPUT_KD, None, True),
    'output_kd_init': Variant('L1 to the teacher output; initialised from the teacher', OUTPUT_KD, None, True,
                              init=True),
    'gkn_kd': Variant('normalised L_GK (teacher RMS, mean over levels and branches; windows), alpha2 = 0.1 + L1 to '
                      'the teacher output', dict(OUTPUT_KD, feature_opt=NORMALISED_FEATURE_LOSS), 'window', True),
    'gkn_kd_init': Variant('normalised L_GK (teacher RMS, mean over levels and branches; windows), alpha2 = 0.1 + L1 '
                           'to the teacher output; initialised from the teacher',
                           dict(OUTPUT_KD, feature_opt=NORMALISED_FEATURE_LOSS), 'window', True, init=True),
    'gkn_kd_warmup_init': Variant('normalised L_GK (teacher RMS, mean over levels and branches; windows), alpha2 = '
                                  '0.1 warmed up over the first 10% of iterations + L1 to the teacher output; '
                                  'initialised from the teacher',
                                  dict(OUTPUT_KD, feature_opt=NORMALISED_FEATURE_LOSS,
                                       distill_schedule={'warmup': 0.1}), 'window', True, init=True),
    'skd_paper': Variant('L_GK (every paired level, 3 branches, exact spatial) + L_CL (teacher space), alpha2 = '
                         'alpha3 = 0.1', PAPER, 'exact', True),
}
# what the demo trains: results.json key -> variant. `skd` is the project's recommended setting for this student, the
# width regime's best in the paired-seed study (docs/kd_study.json, docs/kd_study.md 5.7, 5.8 and 5.12): the teacher's
# selected weights plus output-KD and normalised L_GK with alpha2 warmed up over the first 10% of the iterations
STUDENTS = {'scratch': 'scratch', 'scratch_init': 'scratch_init', 'output_kd': 'output_kd',
            'skd': 'gkn_kd_warmup_init', 'skd_paper': 'skd_paper'}
LABELS = {'teacher': 'teacher', 'scratch': 'scratch', 'scratch_init': 'scratch, init', 'output_kd': 'output-KD',
          'skd': 'recommended', 'skd_paper': 'SKD (paper)'}

# the demo's student at the learning rate its own sweep chose (docs/kd_study.md 5.1: 29.25, 29.61, 30.08, 30.41 and
# 29.44 dB trained alone at 5e-4, 1e-3, 2e-3, 4e-3 and 8e-3); the teacher keeps the 1e-3 it was trained with
DEMO_PAIR = Pair(STUDENT, TEACHER, lr=4e-3)

# The cross-family student: BasicSR's SRVGGNetCompact (the Real-ESRGAN compact network) at upscale 1, 64 features and
# 12 convolutions, 0.385x the teacher's parameters; its full-resolution layers paired with the teacher's
# full-resolution levels as `basicsr distill` pairs them (pair_features), at lr 5e-4, the best of its own sweep
# (docs/kd_study.md 5.1: 29.25, 29.61 and 29.51 dB trained alone at 2e-4, 5e-4 and 1e-3)
CNN_STUDENT = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_conv': 12,
               'upscale': 1, 'act_type': 'prelu'}
CNN_LAYERS = {'encoder_level1': 'body.6', 'decoder_level1': 'body.19', 'refinement': 'body.25'}
CROSS_PAIR = Pair(CNN_STUDENT, TEACHER, CNN_LAYERS, lr=5e-4)
# A regime of the demo: what it is, its networks (Pair), how every student starts ('teacher': the `_init` variants
# from the teacher's selected weights, the others at random; 'kaiming': every student from one Kaiming-initialised
# start, distill.student_init's, saved once), the students it trains (results key -> variant) and their labels.
# `skd` is the regime's recommendation in docs/kd_study.json: for the CNN, output-L1 (normalised L_GK beside it led
# within its spread at 600 iterations, +0.08 +- 0.10 dB, and did not win at 1800, docs/kd_study.md 5.4-5.5).
DemoRegime = namedtuple('DemoRegime', 'what pair start students labels')
DEMO_REGIMES = {
    'width': DemoRegime('the 0.40x Restormer student, cut in width', DEMO_PAIR, 'teacher', STUDENTS, LABELS),
    'cross_family': DemoRegime(
        'the 0.385x SRVGGNetCompact student, another family', CROSS_PAIR, 'kaiming',
        {'scratch': 'scratch', 'skd': 'output_kd', 'gkn_kd': 'gkn_kd', 'skd_paper': 'skd_paper'},
        {'teacher': 'teacher', 'scratch': 'scratch', 'skd': 'recommended', 'gkn_kd': 'L_GK + output-KD',
         'skd_paper': 'SKD (paper)'}),
}


def write_photos(out):
    """Write the scikit-image photos as PNGs: out/data/train and out/data/val (held out, never trained on)."""
    import skimage.data

    folders = {}
    for split, names in (('train', TRAIN_PHOTOS), ('val', HELD_OUT_PHOTOS)):
        folder = osp.join(out, 'data', split)
        os.makedirs(folder, exist_ok=True)
        for name in names:
            img = getattr(skimage.data, name)()[..., :3]
            scale = MAX_SIDE / max(img.shape[:2])
            if scale < 1:
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cv2.imwrite(osp.join(folder, f'{name}.png'), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        folders[split] = folder
    return folders


def stage_options(name, folders, budget, network, seed=0, lr=1e-3):
    """A plain BasicSR option file for one stage (SRModel); the SKD stages extend it. AdamW at ``lr``, cosine to
    ``lr`` / 100 over the budget."""
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': seed,
        'datasets': {
            'train': {'name': 'skimage_train', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': folders['train'],
                      'io_backend': {'type': 'disk'}, 'sigma': SIGMA, 'in_ch': 3, 'gt_size': budget['gt_size'],
                      'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0, 'cache_data': True,
                      'batch_size_per_gpu': budget['batch'], 'dataset_enlarge_ratio': 100},
        },
        'network_g': deepcopy(network),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'total_iter': budget['iter'], 'warmup_iter': -1,
                  'optim_g': {'type': 'AdamW', 'lr': lr, 'weight_decay': 1e-4, 'betas': [0.9, 0.999]},
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [budget['iter']],
                                'restart_weights': [1], 'eta_min': lr / 100},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': max(budget['iter'] // 5, 1), 'save_checkpoint_freq': 10**9,
                   'use_tb_logger': False},
    }


def teacher_options(folders, iters, network=TEACHER, name='demo_teacher'):
    """The teacher's stage: the stage options plus the held-out PSNR every 500 iterations, the curve that shows
    when its training has flattened (the last weights are kept whatever the curve says). The distillation study
    trains its depth regime's deeper teacher (``network``) with the same recipe."""
    opt = stage_options(name, folders, dict(BUDGETS['full'], iter=iters), network)
    opt['datasets']['val'] = held_out_options(folders)
    opt['val'] = {'val_freq': min(500, iters), 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}
    opt['logger'].update(print_freq=min(100, iters), save_checkpoint_freq=min(500, iters))
    return opt


def student_options(variant, name, folders, budget, teacher_weights, init_weights=None, seed=0, pair=DEMO_PAIR,
                    start_weights=None):
    """The option dict of one student run of ``variant`` (a :class:`Variant`, e.g. ``DEMO_VARIANTS['skd_paper']``).

    Args:
        variant (Variant): The variant.
        name (str): Experiment name.
        folders (dict): Photo folders from :func:`write_photos`.
        budget (dict): ``iter``, ``gt_size``, ``batch``.
        teacher_weights (str): Teacher checkpoint (key ``params``).
        init_weights (str | None): The teacher-selected student (:func:`shrink_student`), for the plain ``_init``
            variants. Default: None.
        seed (int): ``manual_seed``: the student's random initialisation, the batches and the noise. Default: 0.
        pair (Pair): The student, the teacher, their feature pairs and the learning rate. Default: the demo's.
        start_weights (str | None): Where every variant not started from the teacher starts (the cross-family
            regime's Kaiming start, :func:`kaiming_student`); None: BasicSR builds it at random. Default: None.
    """
    opt = stage_options(name, folders, budget, pair.student, seed=seed, lr=pair.lr)
    if not variant.init:
        opt['path']['pretrain_network_g'] = start_weights
    if not variant.skd:
        if variant.init:
            opt['path']['pretrain_network_g'] = init_weights
        return opt
    opt['model_type'] = variant.model
    opt['network_t'] = deepcopy(pair.teacher)
    opt['path'].update({'pretrain_network_t': teacher_weights, 'param_key_t': 'params', 'strict_load_t': True})
    opt['train'].update(deepcopy(variant.train))
    schedule = opt['train'].pop('distill_schedule', None)
    if schedule:  # fractions of the budget -> iterations
        opt['train']['distill_schedule'] = {f'{key}_iter': max(1, round(fraction * budget['iter']))
                                            for key, fraction in schedule.items()}
    opt['distill'] = {'init_from_teacher': variant.init}
    if variant.form:
        cheap = {'window': {'spatial_window': 8}, 'tokens': {'spatial_tokens': 256}, 'exact': {}}[variant.form]
        layers = pair.student_layers or {level: level for level in variant.levels}
        opt['distill']['features'] = [dict({'student': layers[level], 'teacher': level}, **(
            cheap if level in FULL_RESOLUTION else {})) for level in variant.levels if level in layers]
    return opt


def shrink_student(out, teacher_weights, student=STUDENT):
    """``basicsr shrink`` of ``student`` (default :data:`STUDENT`) from the teacher into ``out/student_init.pth``
    (once; it has no seed)."""
    import yaml

    from skd_basicsr.tools import shrink

    path = osp.join(out, 'student_init.pth')
    if osp.isfile(path):
        return path
    opt_path = osp.join(out, 'options', 'student.yml')
    os.makedirs(osp.dirname(opt_path), exist_ok=True)
    with open(opt_path, 'w') as f:
        yaml.safe_dump({'network_g': deepcopy(student)}, f, sort_keys=False)
    status = shrink.main(['-opt', opt_path, '--teacher', teacher_weights, '--out', path])
    release_logger()  # building the student set BasicSR's logger up without a file; the next stage needs its own
    if status != 0:
        raise RuntimeError(f'basicsr shrink of the demo student from {teacher_weights} failed (see above).')
    return path


def kaiming_student(out, network, seed=0):
    """``network`` initialised as ``distill.student_init: kaiming`` initialises a student (Kaiming-normal convolutions,
    the last x0.1; :func:`skd_basicsr.distill.student_init.kaiming_start`) from ``seed``, saved once as
    ``out/student_start.pth``: the one start of every student of the cross-family regime."""
    import torch
    from basicsr.archs import build_network

    from skd_basicsr.distill.student_init import kaiming_start

    path = osp.join(out, 'student_start.pth')
    if not osp.isfile(path):
        torch.manual_seed(seed)
        net = build_network(deepcopy(network))
        release_logger()  # building it set BasicSR's logger up without a file; the first stage needs its own
        kaiming_start(net)
        torch.save({'params': net.state_dict()}, path)
    return path


def run_stage(opt, out):
    """Write the option file and run BasicSR's train_pipeline on it with ``out`` as root; return the weights."""
    import yaml
    from basicsr.train import train_pipeline

    os.makedirs(osp.join(out, 'options'), exist_ok=True)
    opt_path = osp.join(out, 'options', f'{opt["name"]}.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    from skd_basicsr.platform.options import argv_for_basicsr

    try:
        with argv_for_basicsr(['basicsr train', '-opt', opt_path]):
            train_pipeline(out)
    finally:
        release_logger()
    return latest_weights(out, opt['name'])


def latest_weights(root, name):
    """Where ``basicsr train`` run from ``root`` leaves experiment ``name``'s last student weights."""
    return osp.join(root, 'experiments', name, 'models', 'net_g_latest.pth')


def release_logger(name='basicsr'):
    """Close BasicSR's root logger handlers and forget it, so the next stage logs to its own train_*.log.

    ``get_root_logger`` sets the logger up once per process (its file handler is the first stage's file) and then
    returns it as it is; without this, every later stage would write into the first stage's log.
    """
    import logging

    from basicsr.utils import logger as basicsr_logger

    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    basicsr_logger.initialized_logger.pop(name, None)


def evaluate(network, weights, folders):
    """PSNR / SSIM (RGB, no border crop) of a network on the held-out photos with fixed sigma-25 noise."""
    import torch
    from basicsr.archs import build_network
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img

    net = build_network(deepcopy(network)).eval()
    net.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True)['params'], strict=True)
    dataset = held_out_dataset(folders, build_dataset)
    per_image, outputs = {}, {}
    for i in range(len(dataset)):
        item = dataset[i]
        with torch.inference_mode():
            restored = tensor2img([net(item['lq'][None])[0]])
        clean = tensor2img([item['gt']])
        name = osp.splitext(osp.basename(item['gt_path']))[0]
        per_image[name] = {'psnr': round(float(calculate_psnr(restored, clean, 0)), 3),
                           'ssim': round(float(calculate_ssim(restored, clean, 0)), 4)}
        outputs[name] = restored
    return per_image, outputs


def held_out_options(folders):
    return {'name': 'skimage_held_out', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': folders['val'],
            'io_backend': {'type': 'disk'}, 'sigma': SIGMA, 'in_ch': 3}


def held_out_dataset(folders, build_dataset):
    return build_dataset(dict(held_out_options(folders), phase='val'))


def held_out_pairs(folders):
    """{photo name: (noisy, clean)} of the held-out photos as 8-bit images, the noise the fixed one of scoring."""
    from basicsr.data import build_dataset
    from basicsr.utils import tensor2img

    dataset = held_out_dataset(folders, build_dataset)
    return {osp.splitext(osp.basename(item['gt_path']))[0]: (tensor2img([item['lq']]), tensor2img([item['gt']]))
            for item in (dataset[i] for i in range(len(dataset)))}


def noisy_psnr(pairs):
    """Mean PSNR of the noisy inputs of :func:`held_out_pairs` against the clean photos."""
    from basicsr.metrics import calculate_psnr

    return float(np.mean([calculate_psnr(noisy, clean, 0) for noisy, clean in pairs.values()]))


def summarise(per_image):
    return {'psnr': round(float(np.mean([v['psnr'] for v in per_image.values()])), 3),
            'ssim': round(float(np.mean([v['ssim'] for v in per_image.values()])), 4), 'per_image': per_image}


def comparison_figure(path, noisy, clean, outputs, crop=128, zoom=2, regime=DEMO_REGIMES['width']):
    """Crops of the noisy input, the teacher, every student and the clean photo side by side, labelled."""
    h, w = clean.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    panels = [('noisy', noisy)] + [(regime.labels[k], outputs[k]) for k in ('teacher', ) + tuple(regime.students)]
    tiles = []
    for label, img in panels + [('clean', clean)]:
        tile = cv2.resize(img[top:top + crop, left:left + crop], None, fx=zoom, fy=zoom,
                          interpolation=cv2.INTER_NEAREST)
        tile = cv2.copyMakeBorder(tile, 28, 0, 0, 4, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    cv2.imwrite(path, np.concatenate(tiles, axis=1))


def results_table(results, noisy_input_psnr, budget, regime=DEMO_REGIMES['width']):
    students, labels = regime.students, regime.labels
    lines = ['| model | PSNR (dB) | SSIM | params | MACs (G) | latency (ms) | training (min) |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: |', f'| noisy input | {noisy_input_psnr:.2f} | | | | | |']
    for key in ('teacher', ) + tuple(students):
        r = results[key]
        minutes = f'{r["minutes"]:.1f}' if 'minutes' in r else ''
        lines.append(f'| {labels[key]} | {r["psnr"]:.2f} | {r["ssim"]:.4f} | {r["params"]:,} | '
                     f'{r["macs"] / 1e9:.3f} | {r["latency_ms"]:.1f} | {minutes} |')
    t, s = results['teacher']['psnr'], results['scratch']['psnr']
    gap = t - s
    closed = {key: (results[key]['psnr'] - s) / gap if gap > 0 else float('nan') for key in students}
    run = results['run']
    start = ('the `_init` students from the teacher\'s selected weights, the others at random' if regime.start ==
             'teacher' else 'every student from the same Kaiming-initialised weights (distill.student_init: kaiming)')
    lines += ['', f'Held-out photos: {", ".join(HELD_OUT_PHOTOS)} (scikit-image), Gaussian noise sigma {SIGMA}, fixed '
              'per image; PSNR/SSIM on RGB, no border crop.',
              f'Teacher: {run["teacher"]}. Each student {budget["student_iter"]} iterations from the same seed at lr '
              f'{run["lr"]:g} (AdamW, cosine to 1/100), patches {budget["gt_size"]}, batch {budget["batch"]}; '
              f'{run["minutes"]:.1f} min in all.',
              f'Student: {regime.what}; start: {start}.',
              f'Recommended (key skd) is `{students["skd"]}`: {DEMO_VARIANTS[students["skd"]].what}. ' + ' '.join(
                  f'{labels[key]}: {DEMO_VARIANTS[variant].what}.' for key, variant in students.items()
                  if key not in ('scratch', 'scratch_init', 'skd', 'output_kd')),
              f'Teacher - scratch gap: {gap:.2f} dB; closed by ' + ', '.join(
                  f'{labels[key]} {closed[key]:.0%}' for key in students if key != 'scratch') + '.',
              'MACs: thop at 256x256 (convolutions; attention matmuls not counted); latency: median CPU forward.']
    return '\n'.join(lines) + '\n'


def build_parser():
    parser = command_parser('basicsr demo', __doc__)
    parser.add_argument('--quick', action='store_true', help='a few iterations: checks the path, not the method')
    parser.add_argument('--train-teacher', action='store_true',
                        help=f'train the teacher ({BUDGETS["full"]["teacher_iter"]} iterations, about 40 min on 2 '
                        'cores; 20 with --quick) instead of loading the one shipped with the package')
    parser.add_argument('--regime', choices=tuple(DEMO_REGIMES), default='width',
                        help='width: the 0.40x Restormer student (default); cross_family: a 0.385x CNN of another '
                        'family (SRVGGNetCompact), which cannot start from the teacher\'s weights')
    parser.add_argument('--out', help='output folder. Default: demo_out (demo_out_cross_family for that regime)')
    return parser


def main(argv=None):
    return run_command(build_parser(), run, argv)


def run(args):
    """Load (or train) the teacher, train the students, score them on the held-out photos and write results.json,
    results.md and comparison.png."""
    import torch

    import skd_basicsr  # noqa: F401  (registries)
    from skd_basicsr.platform.errors import OptionError
    from skd_basicsr.tools.flops import measure

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    budget = dict(BUDGETS['quick' if args.quick else 'full'])
    regime = DEMO_REGIMES[args.regime]
    out = osp.abspath(args.out or ('demo_out' if args.regime == 'width' else f'demo_out_{args.regime}'))
    os.makedirs(out, exist_ok=True)
    start = time.time()
    folders = write_photos(out)
    stages = len(regime.students) + 1

    def stage(i, text):
        print(f'[demo] stage {i}/{stages}: {text} ({(time.time() - start) / 60:.1f} min so far)', flush=True)

    if args.train_teacher:
        stage(1, f'teacher {TEACHER["dim"]}-channel Restormer, {budget["teacher_iter"]} iterations')
        weights = {'teacher': run_stage(teacher_options(folders, budget['teacher_iter']), out)}
        teacher_note = f'trained here, {budget["teacher_iter"]} iterations ({weights["teacher"]})'
    else:
        if not osp.isfile(TEACHER_WEIGHTS):
            raise OptionError(f'The demo teacher {TEACHER_WEIGHTS} is missing from this installation; run '
                              '`basicsr demo --train-teacher` to train it (about 40 min on 2 cores).')
        stage(1, f'teacher {TEACHER["dim"]}-channel Restormer, shipped weights {TEACHER_WEIGHTS}')
        weights = {'teacher': TEACHER_WEIGHTS}
        teacher_note = f'shipped with the package ({BUDGETS["full"]["teacher_iter"]} iterations, docs/demo/teacher)'
    pair, students = regime.pair, regime.students
    if regime.start == 'teacher':
        init_weights, start_weights = shrink_student(out, weights['teacher'], pair.student), None
    else:
        init_weights, start_weights = None, kaiming_student(out, pair.student)
    prefix = 'demo_student' if args.regime == 'width' else f'demo_{args.regime}_student'
    minutes = {}
    student_budget = dict(budget, iter=budget['student_iter'])
    for i, (key, variant) in enumerate(students.items(), start=2):
        stage(i, f'{regime.labels[key]} student ({variant}), {budget["student_iter"]} iterations at lr {pair.lr:g}')
        began = time.time()
        opt = student_options(DEMO_VARIANTS[variant], f'{prefix}_{key}', folders, student_budget,
                              weights['teacher'], init_weights, pair=pair, start_weights=start_weights)
        weights[key] = run_stage(opt, out)
        minutes[key] = round((time.time() - began) / 60, 2)

    print('[demo] evaluating on the held-out photos', flush=True)
    results, outputs = {}, {}
    for key in ('teacher', ) + tuple(students):
        network = TEACHER if key == 'teacher' else pair.student
        per_image, outputs[key] = evaluate(network, weights[key], folders)
        cost = measure(network, (256, 256), 3)
        results[key] = dict(summarise(per_image), params=cost['params'], macs=cost['macs'],
                            latency_ms=cost['latency_ms'], network=network,
                            weights=osp.relpath(weights[key], out))
        if key in students:
            results[key].update(variant=students[key], minutes=minutes[key])
    noisy = held_out_pairs(folders)
    noisy_input_psnr = noisy_psnr(noisy)
    results['noisy_input'] = {'psnr': round(noisy_input_psnr, 3)}

    first = HELD_OUT_PHOTOS[0]
    comparison_figure(osp.join(out, 'comparison.png'), noisy[first][0], noisy[first][1],
                      {k: v[first] for k, v in outputs.items()}, regime=regime)
    results['run'] = {'regime': args.regime, 'start': regime.start, 'budget': budget, 'lr': pair.lr,
                      'minutes': round((time.time() - start) / 60, 2),
                      'sigma': SIGMA, 'held_out': HELD_OUT_PHOTOS, 'train': TRAIN_PHOTOS, 'quick': args.quick,
                      'teacher': teacher_note}
    with open(osp.join(out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    table = results_table(results, noisy_input_psnr, budget, regime)
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write(table)
    print(table)
    print(f'[demo] wrote {osp.join(out, "results.json")}, results.md and comparison.png in '
          f'{results["run"]["minutes"]:.1f} min')
    return 0


if __name__ == '__main__':
    sys.exit(main())
