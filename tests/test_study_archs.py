"""The cross-family regime's student (benchmarks/study/archs.py): BasicSR's SRVGGNetCompact, initialised to see its
input, and still loadable as the plain network."""
import pytest
import torch

import benchmarks.study  # noqa: F401  (registers StudySRVGGNetCompact)
from basicsr.archs import build_network

from benchmarks.study.regimes import REGIMES

CNN = dict(REGIMES['cross_family'].pair.student)


def body_sensitivity(net):
    """Mean change of the body's output (output minus input) when the input gets noise of std 0.1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    noisy = x + 0.1 * torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        return float(((net(x) - x) - (net(noisy) - noisy)).abs().mean())


def test_the_regime_trains_the_kaiming_initialised_cnn():
    assert CNN['type'] == 'StudySRVGGNetCompact' and CNN['num_conv'] == 12


@pytest.mark.parametrize('seed', [0, 1])
def test_the_default_initialisation_is_blind_to_its_input_and_the_studys_is_not(seed):
    torch.manual_seed(seed)
    plain = build_network(dict(CNN, type='SRVGGNetCompact'))
    torch.manual_seed(seed)
    study = build_network(dict(CNN))
    assert body_sensitivity(plain) < 1e-5
    assert body_sensitivity(study) > 1e-3
    # it still starts near the identity (the last convolution scaled by 0.1): the body adds a fraction of the
    # image's values (0.5 on average), not the image again
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert float((study(x) - x).abs().mean()) < 0.15


def test_a_trained_student_loads_into_the_plain_network_strictly():
    torch.manual_seed(0)
    study = build_network(dict(CNN)).eval()
    plain = build_network(dict(CNN, type='SRVGGNetCompact')).eval()
    plain.load_state_dict(study.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(x), study(x))
