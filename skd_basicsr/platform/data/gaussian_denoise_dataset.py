"""Gaussian denoising from clean images: the noisy input is made on the fly."""
from os import path as osp

import numpy as np
import torch
from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from skd_basicsr.platform.data.decoded_images import DecodingDataset
from skd_basicsr.platform.data.transforms import IMAGE_EXTENSIONS, pad_to_crop, to_float


@DATASET_REGISTRY.register()
class GaussianDenoiseDataset(DecodingDataset, data.Dataset):
    """Clean images (a folder or a BasicSR LMDB) with additive white Gaussian noise, as BasicSR paired samples.

    Returns ``{'lq', 'gt', 'lq_path', 'gt_path'}`` like BasicSR's PairedImageDataset: float32 CHW tensors, RGB, in
    [0, 1]; ``lq`` = ``gt`` + noise, not clipped (as in Restormer's Gaussian denoising recipe: clipping would change
    the noise statistics the network learns to remove).

    In training (``phase: train``) each read draws fresh noise (and a fresh level within ``sigma_range``), takes a
    random ``gt_size`` crop and flips/rotates; an image smaller than ``gt_size`` (BSD400's 180 x 180 in DFWB) is
    first reflect-padded at the bottom and right to it, as Restormer's denoising dataset does. Otherwise the noise of
    image i is fixed, drawn from a generator seeded by ``noise_seed`` and i, so validation PSNR is the same in every
    run and process.

    Args:
        opt (dict): Options:
            dataroot_gt (str): Folder of clean images, or a BasicSR LMDB (``*.lmdb`` with meta_info.txt).
            io_backend (dict): ``{type: disk}`` or ``{type: lmdb}``.
            sigma (float): Noise standard deviation on the 0-255 scale. Give this or ``sigma_range``.
            sigma_range (list[float]): [low, high]: a level drawn uniformly per training image (blind denoising);
                in validation the level is drawn once per image from the fixed generator.
            in_ch (int): 3 for colour, 1 for gray. Default: 3.
            gt_size (int): Training crop size. Required in training.
            use_hflip (bool), use_rot (bool): Training augmentation. Default: True.
            noise_seed (int): Seed of the fixed validation noise. Default: 0.
            cache_data (bool): Decode every image once, when the dataset is built, and hold it in memory
                (:mod:`skd_basicsr.platform.data.decoded_images`); the samples are the same. Default: False.
            phase (str): 'train', 'val' or 'test' (set by BasicSR from the dataset key).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.phase = opt.get('phase', 'train')
        self.in_ch = opt.get('in_ch', 3)
        if self.in_ch not in (1, 3):
            raise ValueError(f'GaussianDenoiseDataset: in_ch must be 1 (gray) or 3 (colour), got {self.in_ch!r}.')
        self.sigma, self.sigma_range = _parse_sigma(opt)
        if self.phase == 'train' and not opt.get('gt_size'):
            raise ValueError('GaussianDenoiseDataset: training needs `gt_size`, the size of the random crops.')
        self.noise_seed = int(opt.get('noise_seed', 0))
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})

        root = opt.get('dataroot_gt')
        if not root or not osp.exists(root):
            raise ValueError(f'GaussianDenoiseDataset: dataroot_gt {root} does not exist.')
        if self.io_backend_opt['type'] == 'lmdb':
            if not osp.isfile(osp.join(root, 'meta_info.txt')):
                raise ValueError(f'GaussianDenoiseDataset: {root} has no meta_info.txt; is it a BasicSR LMDB? '
                                 'Make one with `basicsr lmdb --input FOLDER --output NAME.lmdb`.')
            self.io_backend_opt['db_paths'] = [root]
            self.io_backend_opt['client_keys'] = ['gt']
            self.paths = paths_from_lmdb(root)
        else:
            self.paths = sorted(p for p in paths_from_folder(root) if p.lower().endswith(IMAGE_EXTENSIONS))
        if not self.paths:
            raise ValueError(f'GaussianDenoiseDataset: no images in dataroot_gt {root}.')
        self.setup_decoding(opt, 'grayscale' if self.in_ch == 1 else 'color')

    def image_items(self):
        return [(path, 'gt') for path in self.paths]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        img = self.decoded(path, 'gt')

        if self.phase == 'train':
            img = to_float(_random_crop(pad_to_crop(img, self.opt['gt_size']), self.opt['gt_size']))
            img = augment(img, self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
            rng = np.random.default_rng(np.random.randint(2**31))  # numpy's global RNG: seeded by BasicSR
        else:
            img = to_float(img)
            rng = np.random.default_rng([self.noise_seed, index])
        sigma = self.sigma if self.sigma is not None else rng.uniform(*self.sigma_range)

        gt = img2tensor(img, bgr2rgb=self.in_ch == 3, float32=True)
        noise = torch.from_numpy(rng.standard_normal(gt.shape, dtype=np.float32)) * (sigma / 255.0)
        return {'lq': gt + noise, 'gt': gt, 'lq_path': path, 'gt_path': path}


def _parse_sigma(opt):
    sigma, sigma_range = opt.get('sigma'), opt.get('sigma_range')
    if (sigma is None) == (sigma_range is None):
        raise ValueError('GaussianDenoiseDataset: give exactly one of `sigma` (a level, e.g. 25) and `sigma_range` '
                         f'([low, high], e.g. [0, 50]) on the 0-255 scale; got sigma={sigma!r}, '
                         f'sigma_range={sigma_range!r}.')
    if sigma is not None:
        if not isinstance(sigma, (int, float)) or sigma < 0:
            raise ValueError(f'GaussianDenoiseDataset: sigma must be a number >= 0, got {sigma!r}.')
        return float(sigma), None
    if (not isinstance(sigma_range, (list, tuple)) or len(sigma_range) != 2
            or not all(isinstance(v, (int, float)) for v in sigma_range) or not 0 <= sigma_range[0] <= sigma_range[1]):
        raise ValueError(f'GaussianDenoiseDataset: sigma_range must be [low, high] with 0 <= low <= high, got '
                         f'{sigma_range!r}.')
    return None, (float(sigma_range[0]), float(sigma_range[1]))


def _random_crop(img, size):
    h, w = img.shape[:2]
    top = np.random.randint(0, h - size + 1)
    left = np.random.randint(0, w - size + 1)
    return img[top:top + size, left:left + size, ...]
