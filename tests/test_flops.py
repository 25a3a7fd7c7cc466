"""``basicsr flops``: parameter and MAC counts that can be checked by hand, and the JSON shape."""
import json
import time

import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.archs import build_network
from skd_basicsr.tools import flops

from helpers import run_cli, tiny_restormer, write_options


def test_attention_matmuls_are_counted_by_hand():
    net = build_network(tiny_restormer(8)).eval()
    # heads 1 at every level; q k^T and attn v: 2 * C^2 * H*W per block, blocks at (C, HW) for a 16x16 input:
    # enc1 (8, 256), enc2 (16, 64), enc3 (32, 16), latent (64, 4), dec3 (32, 16), dec2 (16, 64), dec1 (16, 256),
    # refinement (16, 256)
    blocks = [(8, 256), (16, 64), (32, 16), (64, 4), (32, 16), (16, 64), (16, 256), (16, 256)]
    assert flops.attention_matmul_macs(net, torch.rand(1, 3, 16, 16)) == sum(2 * c * c * hw for c, hw in blocks)


def test_profiling_leaves_the_network_untouched():
    net = build_network(tiny_restormer(8)).eval()
    keys = list(net.state_dict())
    assert flops.thop_macs(net, torch.rand(1, 3, 16, 16)) > 0
    assert list(net.state_dict()) == keys


def test_json_report_student_teacher_ratio(tmp_path):
    write_options(tmp_path / 'o.yml', {'network_g': tiny_restormer(8), 'network_t': tiny_restormer(16)})
    proc = run_cli(['flops', '-opt', 'o.yml', '--size', '32', '32', '--repeats', '1', '--json'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {'student', 'teacher', 'ratio', 'size', 'counter'} and result['size'] == [32, 32]
    for name, dim in (('student', 8), ('teacher', 16)):
        net = build_network(tiny_restormer(dim))
        assert result[name]['params'] == sum(p.numel() for p in net.parameters())
        assert result[name]['macs_with_attention'] > result[name]['macs'] > 0 and result[name]['latency_ms'] > 0
    for key in ('params', 'macs', 'macs_with_attention'):
        assert result['ratio'][key] == pytest.approx(result['student'][key] / result['teacher'][key], abs=1e-4)


def test_default_restormer_is_the_quoted_141_gmacs():
    """141 GMACs at 256 x 256, counted at 64 x 64: every operation of Restormer (convolutions, the C x C channel
    attention) costs the same per pixel, so the count is 16 times smaller there (a 256 x 256 forward took 20 s)."""
    net = build_network({'type': 'Restormer'}).eval()
    assert flops.thop_macs(net, torch.rand(1, 3, 64, 64)) * 16 == pytest.approx(140.99e9, rel=1e-3)


def test_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert flops.main(['-opt', 'missing.yml']) == 2
    assert 'basicsr flops: error: -opt missing.yml: no such option file' in capsys.readouterr().err
    write_options(tmp_path / 'o.yml', {'network_t': tiny_restormer(8)})
    assert flops.main(['-opt', 'o.yml']) == 2
    assert 'has no network_g' in capsys.readouterr().err


def test_student_and_teacher_are_timed_alternately():
    from skd_basicsr.tools.flops import alternating_latency_ms

    calls = []

    class Recorder(torch.nn.Module):

        def __init__(self, name, seconds):
            super().__init__()
            self.name, self.seconds = name, seconds

        def forward(self, x):
            calls.append(self.name)
            time.sleep(self.seconds)
            return x

    medians = alternating_latency_ms([Recorder('s', 0.001), Recorder('t', 0.02)], torch.zeros(1), repeats=3)
    assert calls == ['s', 't'] + ['s', 't'] * 3  # one warm-up of each, then one of each per round
    assert medians[0] >= 1 and medians[1] >= 20  # each median is of its own net (sleep gives lower bounds only)
