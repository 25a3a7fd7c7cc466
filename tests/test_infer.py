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


def demo_teacher_on_a_photo(folder, size=(48, 64)):
    """Option file of the demo's trained teacher, its weights, and a noisy crop of a photo it never trained on
    (coffee, sigma 25) written as an 8-bit PNG: trained weights and a real image, where precision shows as it does
    in use (random weights on random pixels say little about it)."""
    import skimage.data

    from skd_basicsr.tools.demo import SIGMA, TEACHER, TEACHER_WEIGHTS

    clean = skimage.data.coffee()[100:100 + size[0], 200:200 + size[1]].astype(np.float64)
    noisy = clean + np.random.default_rng(0).normal(0, SIGMA, clean.shape)
    path = osp.join(folder, 'coffee.png')
    cv2.imwrite(path, cv2.cvtColor(np.clip(noisy, 0, 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
    return write_options(osp.join(folder, 'teacher.yml'), {'network_g': TEACHER}), TEACHER_WEIGHTS, path


# largest difference from the float32 forward on the demo teacher's photo: bfloat16 keeps 8 bits of mantissa
# (measured 5.0e-3 on this 48 x 64 crop, 7.9e-3 at 256 x 256: two 8-bit levels), float16 11 bits (6.0e-4, 9.7e-4)
AMP_TOLERANCE = {'bf16': 2e-2, 'fp16': 2e-3}


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_amp_forward_is_close_to_float32(tmp_path, amp):
    opt, weights, photo = demo_teacher_on_a_photo(str(tmp_path))
    x = image_to_tensor(read_image(photo, 3)[0])
    args = infer.build_parser().parse_args(['-opt', opt, '--weights', weights, '--input', photo, '--output', 'o'])
    run32, *_ = infer.load_runner(args)
    run_amp, _, _, label = infer.load_runner(infer.build_parser().parse_args(
        ['-opt', opt, '--weights', weights, '--input', photo, '--output', 'o', '--amp', amp]))
    with torch.inference_mode():
        expected, out = run32(x), run_amp(x)
    assert out.dtype == torch.float32 and f'autocast {amp}' in label
    diff = (out - expected).abs().max().item()
    assert 1e-6 < diff < AMP_TOLERANCE[amp]  # autocast changed the arithmetic, within the tolerance


def test_infer_amp_writes_images_within_a_few_levels_of_float32(tmp_path, capsys):
    opt, weights, photo = demo_teacher_on_a_photo(str(tmp_path))
    common = ['-opt', opt, '--weights', weights, '--input', photo]
    assert infer.main(common + ['--output', str(tmp_path / 'fp32')]) == 0
    assert infer.main(common + ['--output', str(tmp_path / 'bf16'), '--amp', 'bf16']) == 0
    assert '(cpu, autocast bf16)' in capsys.readouterr().err
    by_fp32 = cv2.imread(str(tmp_path / 'fp32' / 'coffee.png')).astype(int)
    by_bf16 = cv2.imread(str(tmp_path / 'bf16' / 'coffee.png')).astype(int)
    # measured here: 1 level at most, 0.22 on average (the forward differs by 5.0e-3, 1.3 levels, at most)
    assert np.abs(by_fp32 - by_bf16).max() <= 3 and np.abs(by_fp32 - by_bf16).mean() < 0.5


def test_half_is_an_alias_of_amp_fp16(tmp_path, capsys):
    opt, weights, photo = demo_teacher_on_a_photo(str(tmp_path), size=(16, 24))
    common = ['-opt', opt, '--weights', weights, '--input', photo]
    assert infer.main(common + ['--output', str(tmp_path / 'half'), '--half']) == 0
    err = capsys.readouterr().err
    assert '--half is deprecated, use --amp fp16' in err and '(cpu, autocast fp16)' in err
    assert infer.main(common + ['--output', str(tmp_path / 'amp'), '--amp', 'fp16']) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / 'half' / 'coffee.png')),
                          cv2.imread(str(tmp_path / 'amp' / 'coffee.png')))


def test_amp_refusals_are_one_line(tmp_path, capsys):
    opt, weights = identity_restormer(str(tmp_path))
    cv2.imwrite(str(tmp_path / 'x.png'), random_image((8, 8, 3)))
    io = ['--input', str(tmp_path / 'x.png'), '--output', str(tmp_path / 'out')]
    assert infer.main(['--onnx', str(tmp_path / 'net.onnx'), '--amp', 'bf16'] + io) == 2
    assert "--amp bf16 runs the PyTorch network under autocast; an ONNX file's precision is set when it is written " \
        '(basicsr export --fp16).' in capsys.readouterr().err
    assert infer.main(['-opt', opt, '--weights', weights, '--half', '--amp', 'bf16'] + io) == 2
    assert '--half is the old spelling of --amp fp16 and contradicts --amp bf16' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        infer.main(['-opt', opt, '--weights', weights, '--amp', 'fp32'] + io)
    assert "invalid choice: 'fp32'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'out')
