"""basicsr export: ONNX with dynamic height and width that matches PyTorch, and basicsr infer --onnx."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import tiny_restormer, write_options

import skd_basicsr  # noqa: F401  (before basicsr)
from basicsr.archs import build_network
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.tools import export, infer
from skd_basicsr.deploy import onnx_util

pytest.importorskip('onnxruntime')

EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}


def export_network(folder, net_opt):
    """Save random weights of ``net_opt``, export them with the command, and return (net, onnx path, opt, weights)."""
    torch.manual_seed(0)
    net = build_network(dict(net_opt)).eval()
    weights = str(folder / 'net.pth')
    torch.save({'params': net.state_dict()}, weights)
    opt = write_options(folder / 'net.yml', {'network_g': net_opt})
    onnx_path = str(folder / 'net.onnx')
    assert export.main(['-opt', opt, '--weights', weights, '--onnx', onnx_path]) == 0
    return net, onnx_path, opt, weights


@pytest.mark.parametrize('net_opt, multiple', [(tiny_restormer(4), 8), (EDSR, 1)])
def test_onnx_matches_pytorch_at_two_sizes(tmp_path, capsys, net_opt, multiple):
    net, onnx_path, _, _ = export_network(tmp_path, net_opt)
    assert capsys.readouterr().out.count('max abs diff') == 2
    runner = onnx_util.OnnxRunner(onnx_path)
    assert runner.multiple == multiple
    for size in [(16, 16), (24, 40)]:  # neither is the traced size (32 x 32)
        assert onnx_util.max_abs_diff(net, runner, size, seed=1) < 1e-4


def test_infer_onnx_gives_the_pytorch_image(tmp_path):
    _, onnx_path, opt, weights = export_network(tmp_path, tiny_restormer(4))
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / 'x.png'), rng.integers(0, 256, (27, 45, 3), dtype=np.uint8))
    common = ['--input', str(tmp_path / 'x.png'), '--tile', '16', '--tile_overlap', '8']
    assert infer.main(['-opt', opt, '--weights', weights, '--output', str(tmp_path / 'torch')] + common) == 0
    assert infer.main(['--onnx', onnx_path, '--output', str(tmp_path / 'onnx')] + common) == 0
    by_torch = cv2.imread(str(tmp_path / 'torch' / 'x.png')).astype(int)
    by_onnx = cv2.imread(str(tmp_path / 'onnx' / 'x.png')).astype(int)
    assert np.abs(by_torch - by_onnx).max() <= 1  # float differences of 1e-6 can round the other way


def test_existing_onnx_is_kept_without_overwrite(tmp_path, capsys):
    opt = write_options(tmp_path / 'net.yml', {'network_g': EDSR})
    (tmp_path / 'net.onnx').write_bytes(b'keep me')
    assert export.main(['-opt', opt, '--weights', 'w.pth', '--onnx', str(tmp_path / 'net.onnx')]) == 2
    assert '--overwrite' in capsys.readouterr().err
    assert (tmp_path / 'net.onnx').read_bytes() == b'keep me'


def test_missing_deploy_extra_names_the_install_command():
    with pytest.raises(OptionError, match=r'pip install -e \.\[deploy\]'):
        onnx_util.import_deploy('onnxruntime_that_is_not_installed')


def test_package_and_infer_import_without_onnx():
    code = ('import sys; sys.modules["onnx"] = sys.modules["onnxruntime"] = None; '
            'import skd_basicsr, skd_basicsr.tools.infer, skd_basicsr.tools.export, skd_basicsr.deploy.onnx_util')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_fp16_export_is_float16_inside_and_close_to_float32(tmp_path, capsys):
    """--fp16: float16 weights behind a float32 input and output, within 2e-3 (half an 8-bit level) of the float32
    PyTorch network at two sizes (onnxruntime, and PyTorch in float16 arithmetic), and ``basicsr infer --onnx``
    writes an image within one level of PyTorch's."""
    onnx = pytest.importorskip('onnx')
    net, fp32_path, opt, weights = export_network(tmp_path, tiny_restormer(4))
    capsys.readouterr()
    fp16_path = str(tmp_path / 'net16.onnx')
    assert export.main(['-opt', opt, '--weights', weights, '--onnx', fp16_path, '--fp16']) == 0
    out = capsys.readouterr().out
    assert out.count('(tolerance 2e-03)') == 4 and 'float16 inside, float32 input and output' in out
    assert out.count('onnxruntime vs PyTorch (float32)') == out.count('PyTorch in float16 vs PyTorch (float32)') == 2
    fallback = onnx_util.float32_fallback_ops(fp16_path)
    assert ('no float16 kernel for ' + ', '.join(sorted(fallback))) in out if fallback else 'no float16' not in out
    assert not onnx_util.float32_fallback_ops(fp32_path)  # a float32 file needs no casts

    model = onnx.load(fp16_path)
    weights_4d = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert weights_4d and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights_4d)
    assert {model.graph.input[0].type.tensor_type.elem_type, model.graph.output[0].type.tensor_type.elem_type} == {
        onnx.TensorProto.FLOAT}
    runner = onnx_util.OnnxRunner(fp16_path)
    assert runner.precision == 'float16' and onnx_util.OnnxRunner(fp32_path).precision == 'float32'
    for size in [(16, 16), (24, 40)]:
        diff = onnx_util.max_abs_diff(net, runner, size, seed=1)
        assert 1e-6 < diff < export.TOLERANCE_FP16  # float16 rounding shows, within the tolerance

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / 'x.png'), rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    common = ['--input', str(tmp_path / 'x.png')]
    assert infer.main(['-opt', opt, '--weights', weights, '--output', str(tmp_path / 'torch')] + common) == 0
    assert infer.main(['--onnx', fp16_path, '--output', str(tmp_path / 'onnx16')] + common) == 0
    by_torch = cv2.imread(str(tmp_path / 'torch' / 'x.png')).astype(int)
    assert np.abs(by_torch - cv2.imread(str(tmp_path / 'onnx16' / 'x.png')).astype(int)).max() <= 1


def test_fp16_export_that_overflows_is_refused(tmp_path, capsys):
    """EDSR scales its input by 255; weights 1000 times larger take its features past float16's 65504."""
    torch.manual_seed(0)
    net = build_network(dict(EDSR)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1000)
    weights = str(tmp_path / 'big.pth')
    torch.save({'params': net.state_dict()}, weights)
    opt = write_options(tmp_path / 'net.yml', {'network_g': EDSR})
    onnx_path = tmp_path / 'big.onnx'
    assert export.main(['-opt', opt, '--weights', weights, '--onnx', str(onnx_path), '--fp16']) == 1
    err = capsys.readouterr().err
    assert ('PyTorch in float16 gives non-finite values: float16 overflows above 65504, export this network in '
            'float32') in err
    assert list(tmp_path.glob('big.onnx*')) == []  # neither the file nor its temporary
