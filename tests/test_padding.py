"""Images of the real datasets' sizes: training images smaller than the crop are reflect-padded to it
(GaussianDenoiseDataset, PaddedPairedImageDataset), and validation pads the input to the multiple the network needs
(SRModel.test for every model whose test is SRModel's: SwinIR on Set5's 57 x 84 LR image)."""
import os

import cv2
import numpy as np
import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.models.sr_model import SRModel
from skd_basicsr.platform.data.transforms import pad_pair_to_crop, pad_to_crop

from test_training import make_opt

pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')  # BasicSR's SwinIR calls it the old way


def write(folder, name, img):
    os.makedirs(folder, exist_ok=True)
    cv2.imwrite(os.path.join(folder, name), img)


def ramp(h, w):
    """An image whose every pixel tells its position: (y, x, y + x) modulo 256."""
    y, x = np.mgrid[:h, :w]
    return np.stack([y % 256, x % 256, (y + x) % 256], -1).astype(np.uint8)


def test_pad_to_crop_reflects_at_the_bottom_and_right_as_often_as_needed():
    img = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    padded = pad_to_crop(img, 7)
    assert padded.shape == (7, 7, 1)
    assert np.array_equal(padded[:2, :3], img)
    assert padded[:, :, 0].tolist()[0] == [0, 1, 2, 2, 1, 0, 0]  # BORDER_REFLECT: cba|abc|cba
    assert [row[0] for row in padded[:, :, 0].tolist()] == [0, 3, 3, 0, 0, 3, 3]
    assert pad_to_crop(img, 2) is img


def test_pair_padding_keeps_the_scale():
    lq = ramp(20, 30).astype(np.float32)
    gt = lq.repeat(4, 0).repeat(4, 1)  # nearest x4
    gt_p, lq_p = pad_pair_to_crop(gt, lq, 128, scale=4)
    assert lq_p.shape == (32, 32, 3) and gt_p.shape == (128, 128, 3)
    assert np.array_equal(gt_p, lq_p.repeat(4, 0).repeat(4, 1))


def test_denoising_crop_larger_than_the_image_is_padded(tmp_path):
    """BSD400's 180 x 180 under DFWB's 384 crop: padded, not refused; the crop holds the whole image."""
    img = ramp(180, 180)
    write(tmp_path / 'DFWB', 'test_001.png', img)
    ds = build_dataset({'name': 'DFWB', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': str(tmp_path / 'DFWB'),
                        'io_backend': {'type': 'disk'}, 'phase': 'train', 'sigma_range': [0, 50], 'gt_size': 384,
                        'use_hflip': False, 'use_rot': False})
    gt = ds[0]['gt']
    assert gt.shape == (3, 384, 384)
    expected = pad_to_crop(img[..., ::-1].astype(np.float32) / 255, 384)  # RGB
    assert torch.allclose(gt, torch.from_numpy(expected.transpose(2, 0, 1).copy()), atol=1e-6)


def paired_opt(root, phase='train', gt_size=384, scale=1, type_='PaddedPairedImageDataset'):
    opt = {'name': 'Rain13K', 'type': type_, 'dataroot_gt': str(root / 'target'), 'dataroot_lq': str(root / 'input'),
           'io_backend': {'type': 'disk'}, 'phase': phase, 'scale': scale, 'filename_tmpl': '{}'}
    if phase == 'train':
        opt.update(gt_size=gt_size, use_hflip=True, use_rot=True)
    return opt


@pytest.mark.parametrize('shape', [(321, 481), (481, 321)])
def test_paired_training_pairs_smaller_than_the_crop_are_padded_alike(tmp_path, shape):
    """Rain13K's BSD-sized pairs (portrait and landscape) under the 384 crop: BasicSR refuses them, the padded
    dataset pads both images alike (input = target here, so any misalignment would show)."""
    img = ramp(*shape)
    for side in ('input', 'target'):
        write(tmp_path / side, 'rain_1.png', img)
    with pytest.raises(ValueError, match=r'smaller than patch size \(384, 384\)'):
        build_dataset(paired_opt(tmp_path, type_='PairedImageDataset'))[0]
    ds = build_dataset(paired_opt(tmp_path))
    for _ in range(3):
        sample = ds[0]
        assert sample['lq'].shape == sample['gt'].shape == (3, 384, 384)
        assert torch.equal(sample['lq'], sample['gt'])
    val = build_dataset(paired_opt(tmp_path, phase='val'))[0]
    assert val['gt'].shape == (3, *shape)  # validation images stay whole


def test_paired_sr_pairs_are_padded_at_scale(tmp_path):
    lq = ramp(20, 30)
    write(tmp_path / 'input', 'a.png', lq)
    write(tmp_path / 'target', 'a.png', lq.repeat(4, 0).repeat(4, 1))
    sample = build_dataset(paired_opt(tmp_path, gt_size=128, scale=4))[0]
    assert sample['lq'].shape == (3, 32, 32) and sample['gt'].shape == (3, 128, 128)
    assert torch.equal(sample['gt'], sample['lq'].repeat_interleave(4, 1).repeat_interleave(4, 2))


def test_paired_image_that_does_not_decode_names_its_file(tmp_path):
    write(tmp_path / 'target', 'a.png', ramp(8, 8))
    os.makedirs(tmp_path / 'input')
    (tmp_path / 'input' / 'a.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match=r'PaddedPairedImageDataset: cannot decode .*input/a\.png'):
        build_dataset(paired_opt(tmp_path, gt_size=8))[0]


def swinir_model(tmp_path):
    opt = make_opt(tmp_path, scale=4)
    opt['network_g'] = {'type': 'SwinIR', 'upscale': 4, 'in_chans': 3, 'img_size': 16, 'window_size': 8,
                        'img_range': 1., 'depths': [1], 'embed_dim': 6, 'num_heads': [1], 'mlp_ratio': 2,
                        'upsampler': 'pixelshuffledirect', 'resi_connection': '1conv'}
    return build_model(opt)


def test_validation_pads_a_windowed_network_to_its_window(tmp_path):
    """Set5's woman (57 x 84 LR) through a SwinIR of window 8: padded to 64 x 88, cropped back to 228 x 336."""
    model = swinir_model(tmp_path)
    lq = torch.rand(1, 3, 57, 84)
    model.feed_data({'lq': lq})
    model.test()
    assert model.output.shape == (1, 3, 228, 336) and model.lq is not None and model.lq.shape == lq.shape
    with torch.no_grad():
        padded = torch.nn.functional.pad(lq, (0, 4, 0, 7), mode='reflect')
        expected = model.net_g(padded)[..., :228, :336]
    assert torch.allclose(model.output, expected, atol=1e-6)
    unpadded = SRModel.test.__wrapped__  # BasicSR's own test, which this package wraps
    with pytest.raises(RuntimeError):
        unpadded(model)


def test_networks_without_a_multiple_are_run_as_they_are(tmp_path):
    model = build_model(make_opt(tmp_path))  # RIDNet: any size
    lq = torch.rand(1, 3, 13, 17)
    model.feed_data({'lq': lq})
    model.test()
    with torch.no_grad():
        assert torch.equal(model.output, model.net_g(lq))
