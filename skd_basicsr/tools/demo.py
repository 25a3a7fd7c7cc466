"""``basicsr demo``: an offline end-to-end proof on real photos, through BasicSR's own training pipeline.

From the colour photos that ship inside scikit-image: a train / held-out split, a small Restormer teacher trained
for Gaussian colour denoising at sigma 25, then one small student trained three times from the same seed for the
same iterations (from scratch, with output-L1 distillation, with SKD), and all four evaluated on the
held-out photos. Each stage is an ordinary option file (written to OUT/options) run by ``train_pipeline``.
"""
import json
import os
import sys
import time
from copy import deepcopy
from os import path as osp

import cv2
import numpy as np

from skd_basicsr.tools import command_parser, run_command

TRAIN_PHOTOS = ('astronaut', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina')
HELD_OUT_PHOTOS = ('coffee', 'chelsea')
MAX_SIDE = 512
SIGMA = 25
TEACHER = {'type': 'Restormer', 'dim': 16, 'num_blocks': [2, 2, 2, 2], 'num_refinement_blocks': 1,
           'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'BiasFree'}
STUDENT = {'type': 'Restormer', 'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
           'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'BiasFree'}
LEVELS = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent', 'decoder_level3', 'decoder_level2',
          'decoder_level1', 'refinement')
# iterations (teacher, each student), patch, batch: the full run took 20.1 min, --quick under 1 min, on 2 cores
BUDGETS = {'full': {'teacher_iter': 1000, 'student_iter': 600, 'gt_size': 48, 'batch': 4},
           'quick': {'teacher_iter': 20, 'student_iter': 10, 'gt_size': 32, 'batch': 2}}
STUDENTS = ('scratch', 'output_kd', 'skd')
LABELS = {'teacher': 'teacher', 'scratch': 'scratch', 'output_kd': 'output-KD', 'skd': 'SKD'}


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


def stage_options(name, folders, budget, network, seed=0):
    """A plain BasicSR option file for one stage (SRModel); the SKD stages extend it."""
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': seed,
        'datasets': {
            'train': {'name': 'skimage_train', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': folders['train'],
                      'io_backend': {'type': 'disk'}, 'sigma': SIGMA, 'in_ch': 3, 'gt_size': budget['gt_size'],
                      'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': budget['batch'], 'dataset_enlarge_ratio': 100},
        },
        'network_g': deepcopy(network),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'total_iter': budget['iter'], 'warmup_iter': -1,
                  'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 1e-4, 'betas': [0.9, 0.999]},
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [budget['iter']],
                                'restart_weights': [1], 'eta_min': 1e-5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': max(budget['iter'] // 5, 1), 'save_checkpoint_freq': 10**9,
                   'use_tb_logger': False},
    }


def student_options(kind, folders, budget, teacher_weights):
    opt = stage_options(f'demo_student_{kind}', folders, budget, STUDENT)
    if kind == 'scratch':
        return opt
    opt['model_type'] = 'SKDModel'
    opt['network_t'] = deepcopy(TEACHER)
    opt['path'].update({'pretrain_network_t': teacher_weights, 'param_key_t': 'params', 'strict_load_t': True})
    if kind == 'output_kd':
        opt['train']['output_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
        return opt
    opt['distill'] = {'features': [{'student': level, 'teacher': level} for level in LEVELS]}
    opt['train']['feature_opt'] = {'type': 'SKDFeatureLoss', 'loss_weight': 0.1, 'mca_weight': 1.0, 'sigma': 1.0,
                                   'temperature': 'auto', 'branches': ['direct', 'channel', 'spatial'],
                                   'spatial_softmax': 'contracted'}
    opt['train']['contrast_opt'] = {'type': 'SKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher',
                                    'positive': 'teacher'}
    return opt


def run_stage(opt, out):
    """Write the option file and run BasicSR's train_pipeline on it with ``out`` as root; return the weights."""
    import yaml
    from basicsr.train import train_pipeline

    os.makedirs(osp.join(out, 'options'), exist_ok=True)
    opt_path = osp.join(out, 'options', f'{opt["name"]}.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    saved = sys.argv
    sys.argv = ['basicsr train', '-opt', opt_path]
    try:
        train_pipeline(out)
    finally:
        sys.argv = saved
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


def held_out_dataset(folders, build_dataset):
    return build_dataset({'name': 'skimage_held_out', 'type': 'GaussianDenoiseDataset', 'phase': 'val',
                          'dataroot_gt': folders['val'], 'io_backend': {'type': 'disk'}, 'sigma': SIGMA, 'in_ch': 3})


def summarise(per_image):
    return {'psnr': round(float(np.mean([v['psnr'] for v in per_image.values()])), 3),
            'ssim': round(float(np.mean([v['ssim'] for v in per_image.values()])), 4), 'per_image': per_image}


def comparison_figure(path, noisy, clean, outputs, crop=128, zoom=2):
    """Crops of noisy / teacher / scratch / output-KD / SKD / clean side by side, labelled."""
    h, w = clean.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    panels = [('noisy', noisy)] + [(LABELS[k], outputs[k]) for k in ('teacher', ) + STUDENTS] + [('clean', clean)]
    tiles = []
    for label, img in panels:
        tile = cv2.resize(img[top:top + crop, left:left + crop], None, fx=zoom, fy=zoom,
                          interpolation=cv2.INTER_NEAREST)
        tile = cv2.copyMakeBorder(tile, 28, 0, 0, 4, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    cv2.imwrite(path, np.concatenate(tiles, axis=1))


def results_table(results, noisy_psnr, budget, minutes):
    lines = ['| model | PSNR (dB) | SSIM | params | MACs (G) | latency (ms) |',
             '| --- | ---: | ---: | ---: | ---: | ---: |', f'| noisy input | {noisy_psnr:.2f} | | | | |']
    for key in ('teacher', ) + STUDENTS:
        r = results[key]
        lines.append(f'| {LABELS[key]} | {r["psnr"]:.2f} | {r["ssim"]:.4f} | {r["params"]:,} | '
                     f'{r["macs"] / 1e9:.3f} | {r["latency_ms"]:.1f} |')
    t, s = results['teacher']['psnr'], results['scratch']['psnr']
    gap = t - s
    closed = (results['skd']['psnr'] - s) / gap if gap > 0 else float('nan')
    lines += ['', f'Held-out photos: {", ".join(HELD_OUT_PHOTOS)} (scikit-image), Gaussian noise sigma {SIGMA}, fixed '
              'per image; PSNR/SSIM on RGB, no border crop.',
              f'Teacher {budget["teacher_iter"]} iterations, each student {budget["student_iter"]} iterations '
              f'(same seed), patches {budget["gt_size"]}, batch {budget["batch"]}; {minutes:.1f} min in all.',
              f'Teacher - scratch gap: {gap:.2f} dB; SKD closes {closed:.0%} of it; SKD - output-KD: '
              f'{results["skd"]["psnr"] - results["output_kd"]["psnr"]:+.2f} dB.',
              'MACs: thop at 256x256 (convolutions; attention matmuls not counted); latency: median CPU forward.']
    return '\n'.join(lines) + '\n'


def build_parser():
    parser = command_parser('basicsr demo', __doc__)
    parser.add_argument('--quick', action='store_true', help='a few iterations: checks the path, not the method')
    parser.add_argument('--out', default='demo_out', help='output folder. Default: demo_out')
    return parser


def main(argv=None):
    return run_command(build_parser(), run, argv)


def run(args):
    """Train the demo's nets, score them on the held-out photos and write results.json, results.md and
    comparison.png."""
    import torch

    import skd_basicsr  # noqa: F401  (registries)
    from basicsr.data import build_dataset
    from basicsr.utils import tensor2img
    from basicsr.metrics import calculate_psnr
    from skd_basicsr.tools.flops import measure

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    budget = dict(BUDGETS['quick' if args.quick else 'full'])
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    folders = write_photos(out)

    def stage(i, text):
        print(f'[demo] stage {i}/5: {text} ({(time.time() - start) / 60:.1f} min so far)', flush=True)

    stage(1, f'teacher {TEACHER["dim"]}-channel Restormer, {budget["teacher_iter"]} iterations')
    teacher_opt = stage_options('demo_teacher', folders, dict(budget, iter=budget['teacher_iter']), TEACHER)
    weights = {'teacher': run_stage(teacher_opt, out)}
    for i, kind in enumerate(STUDENTS, start=2):
        stage(i, f'{LABELS[kind]} student, {budget["student_iter"]} iterations')
        student_budget = dict(budget, iter=budget['student_iter'])
        weights[kind] = run_stage(student_options(kind, folders, student_budget, weights['teacher']), out)

    print('[demo] evaluating on the held-out photos', flush=True)
    results, outputs = {}, {}
    for key in ('teacher', ) + STUDENTS:
        network = TEACHER if key == 'teacher' else STUDENT
        per_image, outputs[key] = evaluate(network, weights[key], folders)
        cost = measure(network, (256, 256), 3)
        results[key] = dict(summarise(per_image), params=cost['params'], macs=cost['macs'],
                            latency_ms=cost['latency_ms'], network=network, weights=osp.relpath(weights[key], out))
    dataset = held_out_dataset(folders, build_dataset)
    noisy = {}
    for i in range(len(dataset)):
        item = dataset[i]
        name = osp.splitext(osp.basename(item['gt_path']))[0]
        noisy[name] = (tensor2img([item['lq']]), tensor2img([item['gt']]))
    noisy_psnr = float(np.mean([calculate_psnr(n, c, 0) for n, c in noisy.values()]))
    results['noisy_input'] = {'psnr': round(noisy_psnr, 3)}

    first = HELD_OUT_PHOTOS[0]
    comparison_figure(osp.join(out, 'comparison.png'), noisy[first][0], noisy[first][1],
                      {k: v[first] for k, v in outputs.items()})
    minutes = (time.time() - start) / 60
    results['run'] = {'budget': budget, 'minutes': round(minutes, 2), 'sigma': SIGMA, 'held_out': HELD_OUT_PHOTOS,
                      'train': TRAIN_PHOTOS, 'quick': args.quick}
    with open(osp.join(out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    table = results_table(results, noisy_psnr, budget, minutes)
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write(table)
    print(table)
    print(f'[demo] wrote {osp.join(out, "results.json")}, results.md and comparison.png in {minutes:.1f} min')
    return 0


if __name__ == '__main__':
    sys.exit(main())
