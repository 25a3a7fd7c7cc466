"""basicsr infer: tiling that equals the untiled output where it must, image I/O at 8 and 16 bits, bad input."""
import json
import os
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from helpers import tiny_restormer, write_options

import skd_basicsr  # noqa: F401  (before basicsr)
from basicsr.archs import build_network
from skd_basicsr.tools import infer
from skd_basicsr.deploy.image_io import image_to_tensor, read_image, tensor_to_image
from skd_basicsr.deploy.tiling import tiled_forward

# BasicSR's EDSR, fully convolutional; x2 so that tiling is also checked across a scale
EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}


def build(net_opt, seed=0):
    torch.manual_seed(seed)
    return build_network(dict(net_opt)).eval()


def save_network(net, folder, name='net.pth', param_key='params'):
    path = osp.join(folder, name)
    torch.save({param_key: net.state_dict()}, path)
    return path


def identity_restormer(folder):
    """Option file and weights of a Restormer whose output convolution is zero: its global residual makes it the
    identity, so a file goes through read, network, write and must come back as it was."""
    net = build(tiny_restormer(4))
    with torch.no_grad():
        net.output.weight.zero_()
    weights = save_network(net, folder)
    opt = write_options(osp.join(folder, 'identity.yml'), {'network_g': tiny_restormer(4)})
    return opt, weights


def random_image(shape, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)


def test_window_blends_to_the_input_for_the_identity_at_any_size_and_scale():
    x = torch.rand(1, 3, 37, 53, dtype=torch.float64)
    assert torch.allclose(tiled_forward(lambda t: t, x, tile=16, overlap=8), x, atol=1e-12)
    upscaled = tiled_forward(lambda t: t.repeat_interleave(2, -1).repeat_interleave(2, -2), x, tile=16, overlap=4)
    assert torch.allclose(upscaled[..., ::2, ::2], x, atol=1e-12)
    assert upscaled.shape[-2:] == (74, 106)


def test_restormer_tile_covering_the_image_is_the_untiled_output():
    net = build(tiny_restormer(4))
    x = torch.rand(1, 3, 21, 30)  # not a multiple of 8: padded by the tiling, cropped after
    with torch.no_grad():
        untiled = net(x)
        assert torch.equal(tiled_forward(net, x, tile=32, overlap=8, multiple=8), untiled)
        assert torch.equal(tiled_forward(net, x, multiple=8), untiled)


def test_fully_convolutional_network_tiled_with_overlap_over_its_receptive_field_is_exact():
    net = build(EDSR)
    x = torch.rand(1, 3, 45, 70)
    with torch.no_grad():
        untiled = net(x)
        # EDSR here sees 6 input pixels each way; the window ignores the outer quarter (8 pixels) of the overlap
        tiled = tiled_forward(net, x, tile=40, overlap=32)
        seamy = tiled_forward(net, x, tile=40, overlap=4)
    assert tiled.shape == untiled.shape == (1, 3, 90, 140)
    assert torch.allclose(tiled, untiled, atol=1e-5)
    assert not torch.allclose(seamy, untiled, atol=1e-3)  # the check can fail: too little overlap shows


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16])
def test_png_round_trip_keeps_bit_depth_and_values(tmp_path, dtype):
    img = random_image((9, 11, 3), dtype)
    cv2.imwrite(str(tmp_path / 'in.png'), img)
    read, depth = read_image(str(tmp_path / 'in.png'), channels=3)
    assert depth == dtype
    np.testing.assert_array_equal(tensor_to_image(image_to_tensor(read), depth), img)


@pytest.mark.parametrize('name, dtype, gray', [('a.png', np.uint16, False), ('b.png', np.uint8, True),
                                               ('c.tif', np.uint16, False), ('d.bmp', np.uint8, False)])
def test_infer_writes_each_format_at_its_depth(tmp_path, capsys, name, dtype, gray):
    opt, weights = identity_restormer(str(tmp_path))
    img = random_image((13, 17) if gray else (13, 17, 3), dtype)
    cv2.imwrite(str(tmp_path / name), img)
    assert infer.main(['-opt', opt, '--weights', weights, '--input', str(tmp_path / name), '--output',
                       str(tmp_path / 'out')]) == 0
    out = cv2.imread(str(tmp_path / 'out' / name), cv2.IMREAD_UNCHANGED)
    assert out.dtype == dtype
    # a colour network gives colour: a gray input comes back on three equal channels
    expected = np.repeat(img[..., None], 3, axis=2) if gray else img
    assert np.abs(out.astype(np.int64) - expected).max() <= 1
    assert 'Wrote 1 image(s)' in capsys.readouterr().out


def test_corrupt_file_is_named_and_skipped_and_the_exit_is_not_zero(tmp_path, capsys):
    opt, weights = identity_restormer(str(tmp_path))
    folder = tmp_path / 'in'
    folder.mkdir()
    cv2.imwrite(str(folder / 'good.png'), random_image((8, 8, 3)))
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    rc = infer.main(['-opt', opt, '--weights', weights, '--input', str(folder), '--output', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert rc == 1
    assert 'broken.png' in err and 'Skipped 1 file(s)' in err
    assert os.listdir(tmp_path / 'out') == ['good.png']


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    opt, weights = identity_restormer(str(tmp_path))
    cv2.imwrite(str(tmp_path / 'x.png'), random_image((8, 8, 3)))
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'x.png').write_bytes(b'keep me')
    args = ['-opt', opt, '--weights', weights, '--input', str(tmp_path / '*.png'), '--output', str(tmp_path / 'out')]
    assert infer.main(args) == 0
    assert (tmp_path / 'out' / 'x.png').read_bytes() == b'keep me'
    assert 'Kept 1 existing output(s)' in capsys.readouterr().out
    assert infer.main(args + ['--overwrite']) == 0
    assert cv2.imread(str(tmp_path / 'out' / 'x.png')) is not None


def test_demo_results_json_names_network_and_weights(tmp_path):
    _, weights = identity_restormer(str(tmp_path))
    results = {'skd': {'psnr': 30.0, 'network': tiny_restormer(4), 'weights': osp.basename(weights)},
               'noisy_input': {'psnr': 20.0}}
    (tmp_path / 'results.json').write_text(json.dumps(results))
    img = random_image((8, 12, 3))
    cv2.imwrite(str(tmp_path / 'x.png'), img)
    args = ['-opt', str(tmp_path / 'results.json'), '--input', str(tmp_path / 'x.png'), '--output',
            str(tmp_path / 'out')]
    assert infer.main(args + ['--entry', 'skd']) == 0
    assert np.abs(cv2.imread(str(tmp_path / 'out' / 'x.png')).astype(int) - img).max() <= 1
    assert infer.main(args + ['--entry', 'teacher']) == 2


def test_weights_errors_are_one_line_and_exit_2(tmp_path, capsys):
    opt, weights = identity_restormer(str(tmp_path))
    cv2.imwrite(str(tmp_path / 'x.png'), random_image((8, 8, 3)))
    base = ['-opt', opt, '--input', str(tmp_path / 'x.png'), '--output', str(tmp_path / 'out')]
    ema_only = save_network(build(tiny_restormer(4)), str(tmp_path), 'ema.pth', param_key='params_ema')
    assert infer.main(base + ['--weights', ema_only, '--param_key', 'params']) == 2
    err = capsys.readouterr().err
    assert "'params'" in err and 'params_ema' in err  # says what the file has
    assert infer.main(base + ['--weights', str(tmp_path / 'missing.pth')]) == 2
    assert 'missing.pth' in capsys.readouterr().err
    edsr_weights = save_network(build(EDSR), str(tmp_path), 'edsr.pth')
    assert infer.main(base + ['--weights', edsr_weights]) == 2
    assert 'does not fit' in capsys.readouterr().err
    assert infer.main(base + ['--weights', weights, '--tile', '12', '--tile_overlap', '4']) == 2
    assert 'multiple of 8' in capsys.readouterr().err
