"""Restormer against the official implementation: reference output, parameter names and shapes, padding."""
import ast
from os import path as osp

import pytest
import torch
from torch.nn import functional as F

import skd_basicsr  # noqa: F401
from basicsr.archs import build_network
from skd_basicsr.platform.archs import Restormer

from helpers import tiny_restormer


def test_reproduces_the_official_reference_output(fixtures_dir):
    ref = torch.load(osp.join(fixtures_dir, 'restormer_reference_tiny.pt'), weights_only=True)
    net = Restormer(**ref['config'])
    net.load_state_dict(ref['state_dict'], strict=True)
    net.eval()
    with torch.no_grad():
        out = net(ref['input'])
    assert out.shape == ref['output'].shape
    assert (out - ref['output']).abs().max().item() < 1e-5


def test_default_config_has_the_official_names_and_shapes(fixtures_dir):
    official = {}
    with open(osp.join(fixtures_dir, 'restormer_official_keys.txt')) as f:
        for line in f:
            if line.strip() and not line.startswith('#'):
                name, shape = line.rstrip('\n').split('\t')
                official[name] = tuple(ast.literal_eval(shape))
    mine = {k: tuple(v.shape) for k, v in Restormer().state_dict().items()}
    assert mine == official
    assert sum(v.numel() for v in Restormer().parameters()) == 26126644  # the 26.13 M of the paper


def test_bias_true_has_the_official_key_set(fixtures_dir):
    # The official constructor passes `bias` to every convolution of the transformer blocks (attn.qkv,
    # attn.qkv_dwconv, attn.project_out, ffn.project_in, ffn.dwconv, ffn.project_out), to reduce_chan_level3,
    # reduce_chan_level2 and output (and skip_conv, dual-pixel only), but builds OverlapPatchEmbed(inp_channels, dim)
    # with its default bias=False, and Downsample/Upsample with bias=False. So a bias=True checkpoint is the
    # bias=False key set plus a `.bias` beside each of those weights, and nothing else: no patch_embed.proj.bias,
    # no down*/up*.body.0.bias.
    with open(osp.join(fixtures_dir, 'restormer_official_keys.txt')) as f:
        official = {line.split('\t')[0] for line in f if line.strip() and not line.startswith('#')}
    with_bias = ('attn.qkv.weight', 'attn.qkv_dwconv.weight', 'attn.project_out.weight', 'ffn.project_in.weight',
                 'ffn.dwconv.weight', 'ffn.project_out.weight')
    expected = official | {k[:-len('weight')] + 'bias' for k in official if k.endswith(with_bias)}
    expected |= {'reduce_chan_level3.bias', 'reduce_chan_level2.bias', 'output.bias'}
    assert set(Restormer(bias=True).state_dict()) == expected
    assert 'patch_embed.proj.bias' not in expected and 'down1_2.body.0.bias' not in expected
    dual = Restormer(**dict({k: v for k, v in tiny_restormer(8).items() if k != 'type'}, bias=True, inp_channels=6,
                            dual_pixel_task=True)).state_dict()
    assert 'skip_conv.bias' in dual and 'patch_embed.proj.bias' not in dual


def test_built_through_basicsr_registry():
    net = build_network(tiny_restormer(8))
    assert isinstance(net, Restormer) and net.encoder_level1[0].attn.qkv.in_channels == 8


@pytest.mark.parametrize('size', [(21, 30), (16, 13), (8, 13)])
def test_any_input_size_pads_and_crops_back(size):
    torch.manual_seed(0)
    net = Restormer(**{k: v for k, v in tiny_restormer(8).items() if k != 'type'}).eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = net(x)
        h, w = size
        expected = net(F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode='reflect'))[..., :h, :w]
    assert out.shape == x.shape
    assert torch.allclose(out, expected, atol=1e-6)


def test_variants_biasfree_and_dual_pixel():
    base = {k: v for k, v in tiny_restormer(8).items() if k != 'type'}
    bias_free = Restormer(**dict(base, LayerNorm_type='BiasFree')).state_dict()
    assert 'encoder_level1.0.norm1.body.weight' in bias_free and 'encoder_level1.0.norm1.body.bias' not in bias_free
    dual = Restormer(**dict(base, inp_channels=6, dual_pixel_task=True))
    assert 'skip_conv.weight' in dual.state_dict() and 'skip_conv.weight' not in Restormer(**base).state_dict()
    assert dual(torch.rand(1, 6, 16, 16)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="LayerNorm_type must be 'WithBias' or 'BiasFree'"):
        Restormer(**dict(base, LayerNorm_type='Batch'))
    with pytest.raises(ValueError, match='16 channels cannot be split into 3 heads'):
        Restormer(**dict(base, heads=[1, 3, 1, 1]))


def test_gradients_reach_every_parameter():
    net = Restormer(**dict({k: v for k, v in tiny_restormer(8).items() if k != 'type'}, bias=True))
    net(torch.rand(2, 3, 16, 16)).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
