"""Feature taps: what they record is the module's output even when the network later changes it in place, and it
is copied only then."""
import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.archs.rrdbnet_arch import RRDBNet
from skd_basicsr.distill import FeatureTaps
from skd_basicsr.distill.taps import FeatureChangedInPlace

CONV1 = 'body.0.rdb1.conv1'  # followed by the block's LeakyReLU(inplace=True)
RDB = 'body.0.rdb1'  # returns a fresh tensor that nothing changes in place


def rrdbnet():
    torch.manual_seed(0)
    return RRDBNet(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)


def real_outputs(net, names):
    """Copies of the outputs of ``names``, made inside the forward before anything can change them."""
    modules = dict(net.named_modules())
    outputs = {}
    for name in names:
        modules[name].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.clone()))
    return outputs


@pytest.mark.parametrize('grad', [False, True])
def test_a_feature_changed_in_place_later_is_recorded_as_the_module_output(grad):
    net = rrdbnet()
    taps = FeatureTaps(net, [CONV1, RDB])
    real = real_outputs(net, [CONV1, RDB])
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        taps.find_inplace(net, torch.zeros(1, 3, 8, 8))
    assert taps.copied == {CONV1}
    with torch.set_grad_enabled(grad), taps.recording() as feats:
        net(x)
    assert real[CONV1].min() < 0  # the LeakyReLU would have scaled the negatives by 0.2
    assert torch.equal(feats[CONV1], real[CONV1])
    assert torch.equal(feats[RDB], real[RDB])


def test_an_unchanged_feature_is_not_copied():
    net = rrdbnet()
    taps = FeatureTaps(net, [RDB])
    outputs = []
    dict(net.named_modules())[RDB].register_forward_hook(lambda m, i, o: outputs.append(o))
    taps.find_inplace(net, torch.zeros(1, 3, 8, 8))
    with taps.recording() as feats:
        net(torch.rand(1, 3, 8, 8))
    assert taps.copied == set() and feats[RDB] is outputs[-1]


def test_a_change_found_while_recording_is_an_error_never_a_wrong_feature():
    net = rrdbnet()
    taps = FeatureTaps(net, [CONV1])
    with pytest.raises(FeatureChangedInPlace, match=f'output of {CONV1} was changed in place'):
        with taps.recording():
            net(torch.rand(1, 3, 8, 8))
    assert taps.copied == {CONV1}
