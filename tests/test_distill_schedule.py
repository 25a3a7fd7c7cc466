"""``train.distill_schedule``: a factor on alpha2 L_GK and alpha3 L_CL over the iterations, in the product's SKDModel
(a warm-up of L_GK won for a student cut in width only, docs/kd_study.md 5.12)."""
import pytest

import skd_basicsr  # noqa: F401
from basicsr.models import build_model
from skd_basicsr.distill.distill_schedule import DistillSchedule
from skd_basicsr.platform.errors import OptionError

from helpers import logged_terms, skd_model_opt


def test_schedule_warms_up_holds_and_decays_to_zero():
    schedule = DistillSchedule.from_options({'warmup_iter': 10, 'decay_iter': 20, 'end_iter': 30})
    values = [schedule(i) for i in (1, 5, 10, 15, 20, 25, 29, 30, 100)]
    assert values == pytest.approx([0.1, 0.5, 1, 1, 1, 0.5, 0.1, 0, 0])
    assert DistillSchedule.from_options(None).constant and DistillSchedule.from_options(None)(7) == 1
    decay_only = DistillSchedule.from_options({'end_iter': 10})
    assert [decay_only(i) for i in (0, 5, 10)] == pytest.approx([1, 0.5, 0])


@pytest.mark.parametrize('opt, message', [
    ({'warmup': 10}, r"unknown option\(s\) \['warmup'\]"),
    ({'warmup_iter': -1}, r'warmup_iter must be an integer >= 0, got -1'),
    ({'end_iter': 1.5}, r'end_iter must be an integer >= 0, got 1.5'),
    ({'decay_iter': 5}, r'decay_iter needs end_iter'),
    ({'warmup_iter': 10, 'end_iter': 5}, r'need warmup_iter <= decay_iter < end_iter'),
    ([10], r'must be a mapping'),
])
def test_schedule_options_are_checked(opt, message):
    with pytest.raises(OptionError, match=message):
        DistillSchedule.from_options(opt)


def test_schedule_scales_l_gk_and_l_cl_and_stops_computing_them(tmp_path):
    opt = skd_model_opt(tmp_path)
    opt['train']['distill_schedule'] = {'warmup_iter': 4, 'end_iter': 8}
    model = build_model(opt)
    opt_constant = skd_model_opt(tmp_path / 'constant')
    constant = build_model(opt_constant)
    constant.net_g.load_state_dict(model.net_g.state_dict())
    constant.adapters.load_state_dict(model.adapters.state_dict())
    full = logged_terms(constant, 2)
    half = logged_terms(model, 2)
    assert half['distill_scale'] == 0.5 and 'distill_scale' not in full
    for name in ('l_gk', 'l_gk_direct', 'l_cl'):
        assert half[name] == pytest.approx(full[name] / 2, rel=1e-5)
    assert half['l_pix'] == pytest.approx(full['l_pix'], rel=1e-6)

    calls = []
    model.cri_feat.register_forward_pre_hook(lambda *a: calls.append('feat'))
    from_features, space = model.cri_contrast.from_features, model.contrast_space
    model.cri_contrast.from_features = lambda *a: calls.append('contrast') or from_features(*a)
    model.contrast_space = lambda img: calls.append('space') or space(img)
    ended = logged_terms(model, 8)
    assert ended['distill_scale'] == 0 and ended['l_gk'] == 0 and ended['l_cl'] == 0
    assert calls == []  # not computed at all once the factor is 0
    logged_terms(model, 7)
    assert calls == ['space', 'space', 'feat', 'contrast']  # passes 3 and 4 (the input's features are recorded)


def test_schedule_without_a_distillation_term_is_refused(tmp_path):
    opt = skd_model_opt(tmp_path)
    del opt['train']['feature_opt'], opt['train']['contrast_opt'], opt['distill']['features']
    opt['train']['output_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
    opt['train']['distill_schedule'] = {'end_iter': 10}
    with pytest.raises(OptionError, match=r'distill_schedule scales feature_opt and contrast_opt, but neither is '
                                          r'set'):
        build_model(opt)
