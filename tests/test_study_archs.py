"""The cross-family regime's student (benchmarks/study/archs.py): BasicSR's SRVGGNetCompact with the product's
Kaiming start, and still loadable as the plain network."""
import pytest
import torch

import benchmarks.study  # noqa: F401  (registers StudySRVGGNetCompact)
from basicsr.archs import build_network

from benchmarks.study.regimes import REGIMES
from skd_basicsr.distill.student_init import kaiming_start

CNN = dict(REGIMES['cross_family'].pair.student)


def test_the_regime_trains_the_kaiming_initialised_cnn():
    assert CNN['type'] == 'StudySRVGGNetCompact' and CNN['num_conv'] == 12


@pytest.mark.parametrize('seed', [0, 1])
def test_the_studys_cnn_is_srvggnetcompact_with_the_products_kaiming_start_bit_for_bit(seed):
    """What the study measured is what distill.student_init: kaiming gives (tests/test_student_init.py)."""
    torch.manual_seed(seed)
    study = build_network(dict(CNN))
    torch.manual_seed(seed)
    plain = build_network(dict(CNN, type='SRVGGNetCompact'))
    kaiming_start(plain)
    assert all(torch.equal(v, study.state_dict()[k]) for k, v in plain.state_dict().items())


def test_a_trained_student_loads_into_the_plain_network_strictly():
    torch.manual_seed(0)
    study = build_network(dict(CNN)).eval()
    plain = build_network(dict(CNN, type='SRVGGNetCompact')).eval()
    plain.load_state_dict(study.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(x), study(x))
