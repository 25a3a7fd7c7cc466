"""GaussianDenoiseDataset: folders and LMDBs, noise statistics, reproducible validation noise, option errors."""
import numpy as np
import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.data import build_dataset
from skd_basicsr.platform.data import GaussianDenoiseDataset

from helpers import write_images


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
