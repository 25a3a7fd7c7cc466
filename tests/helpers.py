"""Tiny data and option files for the tests: everything is made on the fly, nothing is downloaded."""
import contextlib
import logging
import os
import subprocess
import sys
from os import path as osp

import cv2
import numpy as np
import yaml


def write_images(folder, count=4, size=32, seed=0, channels=3, prefix=''):
    """Write ``count`` random-textured PNGs (smooth enough for restoration to be learnable) and return their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        base = rng.random((size // 4, size // 4, channels))
        img = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img * 255, 0, 255).astype(np.uint8)
        path = osp.join(folder, f'{prefix}{i:03d}.png')
        cv2.imwrite(path, img if channels == 3 else img.reshape(size, size))
        paths.append(path)
    return paths


def write_noisy_pairs(root, count=4, size=32, sigma=25, seed=0):
    """Folders root/gt and root/lq of matching names: clean images and their noisy copies."""
    gt_paths = write_images(osp.join(root, 'gt'), count, size, seed)
    rng = np.random.default_rng(seed + 1)
    os.makedirs(osp.join(root, 'lq'), exist_ok=True)
    for path in gt_paths:
        img = cv2.imread(path).astype(np.float64)
        noisy = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(osp.join(root, 'lq', osp.basename(path)), noisy)
    return osp.join(root, 'gt'), osp.join(root, 'lq')


def paired_dataset_opt(gt, lq, phase='train', gt_size=16, batch=2):
    """Options of BasicSR's PairedImageDataset reading two folders."""
    opt = {'name': f'tiny_{phase}', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
           'io_backend': {'type': 'disk'}}
    if phase == 'train':
        opt.update(gt_size=gt_size, use_hflip=True, use_rot=True, num_worker_per_gpu=0, batch_size_per_gpu=batch,
                   dataset_enlarge_ratio=1)
    return opt


def ridnet_options(name, gt, lq, total_iter=4, checkpoint_freq=2):
    """A plain BasicSR SRModel + RIDNet config, as a BasicSR user would write it."""
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': paired_dataset_opt(gt, lq), 'val': paired_dataset_opt(gt, lq, phase='val')},
        'network_g': {'type': 'RIDNet', 'in_channels': 3, 'mid_channels': 16, 'out_channels': 3, 'num_block': 1},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': checkpoint_freq, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': checkpoint_freq, 'use_tb_logger': False},
        'dist_params': {'backend': 'nccl', 'port': 29500},  # as BasicSR's own files have it; nccl needs a GPU
    }


def write_options(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run_cli(args, cwd, timeout=600, env=None):
    """Run the ``basicsr`` command as a user would (through this interpreter) and return the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault('OMP_NUM_THREADS', '1')
    return subprocess.run([sys.executable, '-m', 'skd_basicsr.cli'] + list(args), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def tiny_restormer(dim):
    """A Restormer small enough for tests: one block per level, one head."""
    return {'type': 'Restormer', 'dim': dim, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
            'heads': [1, 1, 1, 1], 'ffn_expansion_factor': 2.0, 'bias': False, 'LayerNorm_type': 'WithBias'}


def save_teacher(path, network_opt, seed=0, param_key='params'):
    """Save a (randomly initialised) teacher checkpoint in BasicSR's format and return its state_dict."""
    import torch

    import skd_basicsr  # noqa: F401  (before basicsr)
    from basicsr.archs import build_network

    torch.manual_seed(seed)
    net = build_network(dict(network_opt))
    state = net.state_dict()
    torch.save({param_key: state}, path)
    return state


def skd_options(name, gt, lq, teacher_path, total_iter=4, checkpoint_freq=2, contrast_space='teacher'):
    """A tiny SKD config: Restormer dim 16 teacher, dim 8 student, every distillation term on."""
    opt = ridnet_options(name, gt, lq, total_iter, checkpoint_freq)
    opt['model_type'] = 'SKDModel'
    opt['datasets']['train']['gt_size'] = 16
    opt['network_g'] = tiny_restormer(8)
    opt['network_t'] = tiny_restormer(16)
    opt['path'].update({'pretrain_network_t': str(teacher_path), 'param_key_t': 'params', 'strict_load_t': True})
    opt['distill'] = {'features': [{'student': 'encoder_level1', 'teacher': 'encoder_level1'},
                                   {'student': 'latent', 'teacher': 'latent'},
                                   {'student': 'refinement', 'teacher': 'refinement'}]}
    opt['train'].update({
        'feature_opt': {'type': 'SKDFeatureLoss', 'loss_weight': 0.1, 'mca_weight': 1.0, 'sigma': 1.0,
                        'temperature': 'auto', 'branches': ['direct', 'channel', 'spatial'],
                        'spatial_softmax': 'contracted'},
        'contrast_opt': {'type': 'SKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': contrast_space,
                         'positive': 'teacher'},
    })
    return opt


def skd_model_opt(tmp_path, **kwargs):
    """skd_options on written data and a saved teacher, completed as BasicSR's parse_options would for training."""
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), size=32)
    save_teacher(tmp_path / 'teacher.pth', tiny_restormer(16))
    opt = skd_options('tiny_SKD', gt, lq, tmp_path / 'teacher.pth', **kwargs)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    root = tmp_path / 'experiments' / opt['name']
    opt['path'].update(experiments_root=str(root), models=str(root / 'models'),
                       training_states=str(root / 'training_states'), log=str(root), visualization=str(root / 'vis'))
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key], exist_ok=True)
    for phase in ('train', 'val'):
        opt['datasets'][phase].update(phase=phase, scale=1)
    return opt


def noisy_batch(seed=0, size=16):
    """A random batch of 2 {lq, gt} pairs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, size, size, generator=g)
    return {'lq': (gt + 0.1 * torch.randn(2, 3, size, size, generator=g)), 'gt': gt}


@contextlib.contextmanager
def basicsr_log():
    """The messages BasicSR's logger gets inside the block, at INFO as train_pipeline sets it (it does not propagate
    to pytest's caplog, and an earlier build_network may have made the logger at another level)."""
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def train_here(option_file, cwd, monkeypatch):
    """`basicsr train -opt option_file` in this process (the import of torch, torchvision and basicsr is most of a
    small run's time), with BasicSR's log collected: returns (exit status, log text)."""
    from skd_basicsr import cli

    monkeypatch.chdir(cwd)
    with basicsr_log() as records:
        status = cli.main(['train', '-opt', option_file])
    return status, '\n'.join(records)


class PixelSpace:
    """An L_CL feature space that is the image itself, one layer of weight 1: distances are plain per-sample L1."""
    layer_weights = {'img': 1.0}
    layers = ['img']

    def __call__(self, img):
        return {'img': img}


def l1(x, y):
    """Per-sample mean absolute difference, as L_CL measures distances."""
    return (x - y).abs().flatten(1).mean(1)


def logged_terms(model, current_iter):
    """The loss terms one ``optimize_parameters`` of ``model`` logs on :func:`noisy_batch`, with the optimizer's step
    disabled so that every call sees the same weights."""
    model.optimizer_g.step = lambda *a, **k: None
    model.feed_data(noisy_batch())
    model.optimize_parameters(current_iter)
    return {k: float(v) for k, v in model.log_dict.items()}
