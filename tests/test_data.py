"""GaussianDenoiseDataset: folders and LMDBs, noise statistics, reproducible validation noise, option errors; both
datasets' ``cache_data``: the same batches as without it, the bytes it holds in the log, its refusals."""
import logging

import cv2
import numpy as np
import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.data import build_dataloader, build_dataset
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import get_root_logger, imfrombytes, set_random_seed
from skd_basicsr.platform.data import GaussianDenoiseDataset, decoded_images
from skd_basicsr.platform.errors import OptionError

from helpers import write_images, write_noisy_pairs


def dataset(root, **opt):
    base = {'name': 'd', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': str(root), 'io_backend': {'type': 'disk'},
            'phase': 'val', 'sigma': 25}
    base.update(opt)
    return build_dataset(base)


@pytest.fixture
def folder(tmp_path):
    write_images(str(tmp_path / 'clean'), count=3, size=64)
    return tmp_path / 'clean'


def test_validation_sample_is_clean_plus_fixed_noise(folder):
    ds = dataset(folder, sigma=25)
    assert isinstance(ds, GaussianDenoiseDataset) and len(ds) == 3
    item = ds[0]
    assert item['gt'].shape == (3, 64, 64) and item['gt'].dtype == torch.float32
    assert 0 <= item['gt'].min() and item['gt'].max() <= 1 and item['lq_path'] == item['gt_path']
    noise = (item['lq'] - item['gt']) * 255
    assert abs(noise.std().item() - 25) < 1.5 and abs(noise.mean().item()) < 1
    again = dataset(folder, sigma=25)[0]
    assert torch.equal(item['lq'], again['lq'])  # another instance (another run) sees the same noise
    assert not torch.equal(noise, (ds[1]['lq'] - ds[1]['gt']) * 255)
    assert not torch.equal(item['lq'], dataset(folder, sigma=25, noise_seed=1)[0]['lq'])


def test_training_sample_is_cropped_augmented_and_freshly_noisy(folder):
    ds = dataset(folder, phase='train', gt_size=32, use_hflip=True, use_rot=True)
    first, second = ds[0], ds[0]
    assert first['lq'].shape == first['gt'].shape == (3, 32, 32)
    assert not torch.equal(first['lq'] - first['gt'], second['lq'] - second['gt'])


def test_sigma_range_draws_levels_within_bounds(folder):
    ds = dataset(folder, phase='train', gt_size=64, sigma=None, sigma_range=[10, 30])
    stds = [((item['lq'] - item['gt']) * 255).std().item() for item in (ds[i % 3] for i in range(30))]
    assert 9 < min(stds) and max(stds) < 31.5 and np.std(stds) > 2


def test_gray_images(tmp_path):
    write_images(str(tmp_path / 'gray'), count=2, size=32, channels=1)
    item = dataset(tmp_path / 'gray', in_ch=1)[0]
    assert item['gt'].shape == (1, 32, 32)


def test_reads_a_basicsr_lmdb(folder, tmp_path):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    names = sorted(p.name for p in folder.iterdir())
    make_lmdb_from_imgs(str(folder), str(tmp_path / 'clean.lmdb'), names, [n[:-4] for n in names])
    from_lmdb = dataset(tmp_path / 'clean.lmdb', io_backend={'type': 'lmdb'})
    from_disk = dataset(folder)
    assert len(from_lmdb) == 3
    assert torch.allclose(from_lmdb[1]['gt'], from_disk[1]['gt'])
    assert torch.equal(from_lmdb[1]['lq'] - from_lmdb[1]['gt'], from_disk[1]['lq'] - from_disk[1]['gt'])
    cached = dataset(tmp_path / 'clean.lmdb', io_backend={'type': 'lmdb'}, cache_data=True)
    assert torch.equal(cached[1]['lq'], from_lmdb[1]['lq'])


@pytest.mark.parametrize('opt, message', [
    ({'sigma': None}, 'give exactly one of `sigma`'),
    ({'sigma_range': [0, 50]}, 'give exactly one of `sigma`'),
    ({'sigma': None, 'sigma_range': [30, 10]}, r'sigma_range must be \[low, high\]'),
    ({'sigma': -1}, 'sigma must be a number >= 0'),
    ({'in_ch': 2}, 'in_ch must be 1'),
    ({'phase': 'train'}, 'training needs `gt_size`'),
])
def test_option_errors(folder, opt, message):
    with pytest.raises(ValueError, match=message):
        dataset(folder, **opt)


def test_path_errors(tmp_path, folder):
    with pytest.raises(ValueError, match='dataroot_gt .*nowhere does not exist'):
        dataset(tmp_path / 'nowhere')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no images in dataroot_gt'):
        dataset(tmp_path / 'empty')
    with pytest.raises(ValueError, match='has no meta_info.txt'):
        dataset(folder, io_backend={'type': 'lmdb'})
    (folder / 'broken.png').write_bytes(b'not a png')
    ds = dataset(folder)
    with pytest.raises(ValueError, match='cannot decode .*broken.png'):
        ds[ds.paths.index(str(folder / 'broken.png'))]


# ----------------------------------------------------------------------------------------------------------------
# cache_data: decoded images held in memory
# ----------------------------------------------------------------------------------------------------------------
def denoise_train_opt(folder, cache, workers=0):
    return {'name': 'train', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': str(folder),
            'io_backend': {'type': 'disk'}, 'phase': 'train', 'sigma': None, 'sigma_range': [5, 50], 'gt_size': 24,
            'use_hflip': True, 'use_rot': True, 'cache_data': cache, 'num_worker_per_gpu': workers,
            'batch_size_per_gpu': 3, 'dataset_enlarge_ratio': 4}


def paired_train_opt(gt, lq, cache, workers=0, gt_size=48):
    """PaddedPairedImageDataset reading pairs smaller than the crop (padded), in Y as BasicSR's SR files read."""
    return {'name': 'pairs', 'type': 'PaddedPairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
            'io_backend': {'type': 'disk'}, 'phase': 'train', 'scale': 1, 'gt_size': gt_size, 'use_hflip': True,
            'use_rot': True, 'color': 'y', 'cache_data': cache, 'num_worker_per_gpu': workers,
            'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 3}


def batches(opt, epochs=3):
    """Every batch of ``epochs`` epochs of BasicSR's training loader over ``opt``'s dataset, from seed 0."""
    set_random_seed(0)
    dataset = build_dataset(opt)
    sampler = EnlargedSampler(dataset, 1, 0, opt['dataset_enlarge_ratio'])
    loader = build_dataloader(dataset, opt, num_gpu=0, dist=False, sampler=sampler, seed=0)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += [(b['lq'], b['gt']) for b in loader]
    return dataset, out


@pytest.mark.parametrize('workers', [0, 2])
def test_cache_gives_the_same_batches_as_decoding_every_time(folder, workers):
    """Same seed, same crops, flips, rotations, noise levels and noise, with the images decoded once (before the
    workers start) or for every sample; three epochs, so every image is cropped and flipped many times and a flip
    that wrote into a held image would show."""
    _, plain = batches(denoise_train_opt(folder, False, workers))
    cached_set, cached = batches(denoise_train_opt(folder, True, workers))
    assert len(plain) == len(cached) == 3 * 4  # 3 images x 4 / batch 3, per epoch
    for (lq, gt), (lq_c, gt_c) in zip(plain, cached):
        assert torch.equal(gt, gt_c) and torch.equal(lq, lq_c)
    assert not torch.equal(plain[0][1], plain[4][1])  # the epochs differ: the check compares different crops
    for path in cached_set.paths:  # what is held is still the file's samples
        assert np.array_equal(cached_set.cache.get(path, 'gt'), cv2.imread(path))


def test_paired_cache_gives_the_same_batches_padded_in_y(tmp_path):
    gt, lq = write_noisy_pairs(str(tmp_path), count=3, size=32)  # smaller than the 48 crop: padded first
    _, plain = batches(paired_train_opt(gt, lq, False))
    _, cached = batches(paired_train_opt(gt, lq, True))
    assert len(plain) == len(cached) == 3 * 4 and plain[0][0].shape == (2, 1, 48, 48)
    for (lq_p, gt_p), (lq_c, gt_c) in zip(plain, cached):
        assert torch.equal(gt_p, gt_c) and torch.equal(lq_p, lq_c)


@pytest.mark.parametrize('cache', [False, True])
def test_validation_samples_are_basicsr_s(tmp_path, folder, cache):
    """Whole images converted to float exactly as BasicSR's ``imfrombytes(..., float32=True)`` converts them, and
    PaddedPairedImageDataset's validation pairs equal to BasicSR's PairedImageDataset's (Y channel included)."""
    item = dataset(folder, cache_data=cache)[1]
    path = item['gt_path']
    with open(path, 'rb') as f:
        expected = imfrombytes(f.read(), float32=True)[..., ::-1].transpose(2, 0, 1)
    assert torch.equal(item['gt'], torch.from_numpy(expected.copy()))

    gt, lq = write_noisy_pairs(str(tmp_path / 'pairs'), count=2, size=24)
    for color in (None, 'y'):
        opt = {'name': 'v', 'type': 'PaddedPairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
               'io_backend': {'type': 'disk'}, 'phase': 'val', 'scale': 1, 'cache_data': cache, 'color': color}
        ours = build_dataset(opt)[1]
        theirs = PairedImageDataset(dict(opt, io_backend={'type': 'disk'}))[1]
        assert ours.keys() == theirs.keys()
        assert torch.equal(ours['lq'], theirs['lq']) and torch.equal(ours['gt'], theirs['gt'])


def test_cache_logs_the_bytes_it_holds(tmp_path):
    write_images(str(tmp_path / 'a'), count=2, size=40)
    write_images(str(tmp_path / 'a'), count=1, size=24, prefix='small_')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = get_root_logger()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as train_pipeline sets it with its log file
    try:
        ds = dataset(tmp_path / 'a', cache_data=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    expected = 2 * 40 * 40 * 3 + 24 * 24 * 3
    assert ds.cache.nbytes == expected
    messages = [r.getMessage() for r in records if 'cache_data' in r.getMessage()]
    assert len(messages) == 1 and '3 images decoded' in messages[0] and f'({expected} bytes)' in messages[0]


def test_held_images_are_read_only(folder):
    img = dataset(folder, cache_data=True).cache.get(str(folder / '000.png'), 'gt')
    with pytest.raises(ValueError, match='read-only'):
        img[0, 0, 0] = 1


def test_cache_refusals(folder, monkeypatch):
    with pytest.raises(OptionError, match="datasets d: cache_data must be true or false, got 'yes'"):
        dataset(folder, cache_data='yes')
    # an image that does not decode is named when the dataset is built, before any training
    (folder / 'broken.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match='GaussianDenoiseDataset: cannot decode .*broken.png'):
        dataset(folder, cache_data=True)
    (folder / 'broken.png').unlink()
    monkeypatch.setattr(decoded_images, 'available_memory', lambda: 20000)  # the images need 3 x 12288 bytes
    with pytest.raises(OptionError, match=r'GaussianDenoiseDataset: cache_data: 1 of 3 decoded images already hold '
                       r'.* MiB, more than 50% of the .* MiB available; set cache_data: false for this set'):
        dataset(folder, cache_data=True)
