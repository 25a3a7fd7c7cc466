"""distill.student_init: kaiming (skd_basicsr/distill/student_init.py): a random start that sees its input, for a
student of another family than its teacher."""
import copy

import pytest
import torch
from torch import nn

import skd_basicsr  # noqa: F401
from basicsr.archs import build_network
from basicsr.models import build_model
from skd_basicsr.distill.student_init import kaiming_start
from skd_basicsr.platform.errors import OptionError

from helpers import basicsr_log
from helpers import skd_model_opt as make_opt

# the study's cross-family student (benchmarks/study/regimes.py), as BasicSR builds it
CNN = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_conv': 12, 'upscale': 1,
       'act_type': 'prelu'}


def body_sensitivity(net):
    """Mean change of the body's output (output minus input) when the input gets noise of std 0.1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    noisy = x + 0.1 * torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        return float(((net(x) - x) - (net(noisy) - noisy)).abs().mean())


@pytest.mark.parametrize('seed', [0, 1])
def test_the_default_initialisation_is_blind_to_its_input_and_kaiming_start_is_not(seed):
    torch.manual_seed(seed)
    net = build_network(dict(CNN))
    assert body_sensitivity(net) < 1e-5
    kaiming_start(net)
    assert body_sensitivity(net) > 1e-3
    # it still starts near the identity (the last convolution scaled by 0.1): the body adds a fraction of the
    # image's values (0.5 on average), not the image again
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert float((net(x) - x).abs().mean()) < 0.15


def test_kaiming_start_draws_kaiming_normal_weights_zero_biases_and_scales_the_last_convolution():
    torch.manual_seed(0)
    net = build_network(dict(CNN))
    kaiming_start(net)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1] is net.body[-1]  # the output layer
    for i, conv in enumerate(convs):
        fan_in = conv.weight[0].numel()
        expected = (2 / fan_in) ** 0.5 * (0.1 if i == len(convs) - 1 else 1)
        assert float(conv.weight.detach().std()) == pytest.approx(expected, rel=0.05)
        assert not conv.bias.any()


def test_kaiming_start_refuses_a_network_without_convolutions():
    with pytest.raises(OptionError, match='kaiming re-initialises convolutions, and Sequential has none'):
        kaiming_start(nn.Sequential(nn.Linear(4, 4)))


def cnn_student_opt(tmp_path, student_init='kaiming'):
    """An SKD run of the CNN from the tests' tiny Restormer teacher, output-L1 only."""
    opt = make_opt(tmp_path)
    opt['network_g'] = dict(CNN)
    opt['distill'] = {'student_init': student_init}
    for key in ('feature_opt', 'contrast_opt'):
        opt['train'].pop(key)
    opt['train']['output_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
    return opt


def test_skd_model_starts_the_student_with_kaiming_start_on_a_fresh_run(tmp_path):
    torch.manual_seed(0)
    with basicsr_log() as log:
        model = build_model(cnn_student_opt(tmp_path))
    assert body_sensitivity(model.net_g) > 1e-3
    assert any('distill.student_init: kaiming: network_g\'s convolutions re-initialised' in line for line in log)
    torch.manual_seed(0)
    again = build_model(cnn_student_opt(tmp_path))  # seeded: the same start
    assert all(torch.equal(v, again.net_g.state_dict()[k]) for k, v in model.net_g.state_dict().items())
    torch.manual_seed(0)
    plain = build_model(cnn_student_opt(tmp_path, 'default'))
    assert body_sensitivity(plain.net_g) < 1e-5


def test_student_init_leaves_a_resumed_student_alone_and_refuses_a_second_start(tmp_path):
    model = build_model(cnn_student_opt(tmp_path))
    model.save(0, 1)
    saved = copy.deepcopy(model.net_g.state_dict())

    from skd_basicsr.platform.checkpoint import load_resume_state
    opt = cnn_student_opt(tmp_path)
    opt['auto_resume'] = True
    state = load_resume_state(opt)
    with basicsr_log() as log:
        resumed = build_model(opt)
    resumed.resume_training(state)
    assert all(torch.equal(v, resumed.net_g.state_dict()[k]) for k, v in saved.items())
    assert 'distill.student_init: resuming, so the student continues from its own checkpoint.' in log

    opt = cnn_student_opt(tmp_path)
    opt['path']['pretrain_network_g'] = str(tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_1.pth')
    with pytest.raises(OptionError, match='student_init and path.pretrain_network_g both set'):
        build_model(opt)


@pytest.mark.parametrize('distill, message', [
    ({'student_init': 'xavier'}, r"distill.student_init: 'xavier' is not one of \['default', 'kaiming'\]"),
    ({'student_init': 'kaiming', 'init_from_teacher': True},
     'distill.init_from_teacher and distill.student_init: kaiming both set the student\'s initial weights'),
])
def test_student_init_option_problems_are_named(tmp_path, distill, message):
    opt = cnn_student_opt(tmp_path)
    opt['distill'] = distill
    with pytest.raises(OptionError, match=message):
        build_model(opt)
