"""SKDModel: teacher hygiene, taps, adapters, gradients of every term, checkpoints, end to end through the CLI."""
import copy
import os

import pytest
import torch
from torch import nn

import skd_basicsr  # noqa: F401
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.distill import SKDContrastiveLoss, SKDFeatureLoss

from helpers import noisy_batch as batch
from helpers import basicsr_log, run_cli, save_teacher, tiny_restormer, write_options
from helpers import skd_model_opt as make_opt


def grads_after_one_backward(model):
    model.optimizer_g.step = lambda *a, **k: None  # keep the gradients of this one backward to look at
    model.feed_data(batch())
    model.optimize_parameters(1)
    student = [p.grad for p in model.net_g.parameters()]
    adapters = [p.grad for p in model.adapters.parameters()]
    teacher = [p.grad for p in model.net_t.parameters()]
    return student, adapters, teacher


def nonzero(grads):
    return any(g is not None and g.abs().sum() > 0 for g in grads)


def test_build_types_and_teacher_hygiene(tmp_path):
    model = build_model(make_opt(tmp_path))
    assert isinstance(model.cri_feat, SKDFeatureLoss) and isinstance(model.cri_contrast, SKDContrastiveLoss)
    assert not model.net_t.training and not any(p.requires_grad for p in model.net_t.parameters())
    in_optimizer = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert all(id(p) in in_optimizer for p in model.net_g.parameters())
    assert all(id(p) in in_optimizer for p in model.adapters.parameters())
    assert not any(id(p) in in_optimizer for p in model.net_t.parameters())
    # dim 8 -> 16 at every level: one 1x1 conv per distilled level
    assert [tuple(a.weight.shape) for a in model.adapters.levels] == [(16, 8, 1, 1), (128, 64, 1, 1), (32, 16, 1, 1)]


def test_one_step_logs_every_term_and_leaves_the_teacher_alone(tmp_path):
    model = build_model(make_opt(tmp_path))
    teacher_before = copy.deepcopy(model.net_t.state_dict())
    student_before = copy.deepcopy(model.net_g.state_dict())
    adapters_before = copy.deepcopy(model.adapters.state_dict())
    for it in (1, 2, 3):
        model.feed_data(batch(it))
        model.optimize_parameters(it)
    log = model.get_current_log()
    assert list(log) == ['l_pix', 'l_gk', 'l_gk_direct', 'l_gk_channel', 'l_gk_spatial', 'l_cl']
    assert all(torch.isfinite(torch.tensor(v)) for v in log.values())
    assert log['l_gk'] == pytest.approx(log['l_gk_direct'] + log['l_gk_channel'] + log['l_gk_spatial'], rel=1e-5)
    assert all(torch.equal(v, model.net_t.state_dict()[k]) for k, v in teacher_before.items())
    assert not model.net_t.training
    assert any(not torch.equal(v, model.net_g.state_dict()[k]) for k, v in student_before.items())
    assert any(not torch.equal(v, model.adapters.state_dict()[k]) for k, v in adapters_before.items())


@pytest.mark.parametrize('term', ['pixel', 'feature', 'contrast'])
def test_every_term_reaches_the_student_and_never_the_teacher(tmp_path, term):
    opt = make_opt(tmp_path)
    weights = {'pixel': 'pixel_opt', 'feature': 'feature_opt', 'contrast': 'contrast_opt'}
    for name, key in weights.items():
        opt['train'][key]['loss_weight'] = 1.0 if name == term else 0.0
    student, adapters, teacher = grads_after_one_backward(build_model(opt))
    assert nonzero(student)
    assert nonzero(adapters) == (term == 'feature')  # adapters only enter L_GK
    assert all(g is None for g in teacher)


def test_contrast_in_teacher_space_reuses_the_teacher_forward(tmp_path):
    model = build_model(make_opt(tmp_path))
    calls = []
    model.net_t.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    model.feed_data(batch())
    model.optimize_parameters(1)
    # the forward on lq (features, output, negative), then the anchor and the positive: nothing more
    assert len(calls) == 3


def test_taps_record_nothing_outside_distillation(tmp_path):
    model = build_model(make_opt(tmp_path, total_iter=4))
    model.feed_data(batch())
    model.optimize_parameters(1)

    class NoWrites(dict):

        def __setitem__(self, key, value):
            raise AssertionError(f'{key} recorded outside distillation')

    model.taps_s.features = NoWrites()
    model.taps_t.features = NoWrites()
    model.test()
    assert model.output.shape == model.gt.shape


def test_unknown_module_name_lists_the_names_that_exist(tmp_path):
    opt = make_opt(tmp_path)
    opt['distill']['features'][0] = {'student': 'encoder_levl1', 'teacher': 'encoder_level1'}
    with pytest.raises(ValueError, match=r"network_g has no module named 'encoder_levl1'(.|\n)*closest to "
                                         r"'encoder_levl1': encoder_level1(.|\n)*top-level modules of network_g"):
        build_model(opt)


@pytest.mark.parametrize('break_it, message', [
    (lambda opt: opt['distill'].update(features=[{'student': 'encoder_level1', 'teacher': 'latent'}]),
     r'encoder_level1 -> latent: spatial sizes differ'),
    (lambda opt: opt['distill'].update(adapter='none'),
     r'channels differ \(student 8, teacher 16\) and distill.adapter is none'),
    (lambda opt: opt['distill'].update(adaptor='conv1x1'), r"distill: unknown option\(s\) \['adaptor'\]"),
    (lambda opt: opt.pop('distill'), 'train.feature_opt needs `distill: features:`'),
    (lambda opt: opt['train']['feature_opt'].update(sigmaa=1.0),
     r"train.feature_opt: unknown option\(s\) 'sigmaa' \(did you mean 'sigma'\?\)"),
    (lambda opt: opt['train']['contrast_opt'].update(postive='gt'),
     r"train.contrast_opt: unknown option\(s\) 'postive' \(did you mean 'positive'\?\)"),
    (lambda opt: opt['train']['feature_opt'].update(branches=['direct', 'chanel']),
     r"train.feature_opt: branches: 'chanel' is not allowed"),
])
def test_distillation_and_loss_option_problems_are_named(tmp_path, break_it, message):
    opt = make_opt(tmp_path)
    break_it(opt)
    with pytest.raises(OptionError, match=message):
        build_model(opt)


def test_init_from_teacher_selects_the_student_before_the_first_step(tmp_path):
    from skd_basicsr.distill.weight_selection import select_weights
    opt = make_opt(tmp_path)
    opt['distill']['init_from_teacher'] = True
    model = build_model(opt)
    teacher = torch.load(tmp_path / 'teacher.pth', weights_only=True)['params']
    student = build_network(copy.deepcopy(opt['network_g']))
    expected, _ = select_weights(teacher, student)
    assert all(torch.equal(v, model.net_g.state_dict()[k]) for k, v in expected.items())
    # the selected student is the one the first step starts from, not a random init: its output is the teacher's
    # own leading-channel computation, far closer to the teacher than a random student of the same shape
    x = batch()['lq']
    with torch.no_grad():
        out_t = model.net_t(x)
        selected_gap = (model.net_g(x) - out_t).abs().mean()
        random_gap = (build_network(copy.deepcopy(opt['network_g']))(x) - out_t).abs().mean()
    assert selected_gap < random_gap


def test_init_from_teacher_leaves_a_resumed_or_pretrained_student_alone(tmp_path):
    opt = make_opt(tmp_path)
    model = build_model(opt)
    model.feed_data(batch(1))
    model.optimize_parameters(1)
    model.save(0, 1)
    saved = copy.deepcopy(model.net_g.state_dict())

    from skd_basicsr.platform.checkpoint import load_resume_state
    opt = make_opt(tmp_path)
    opt['distill']['init_from_teacher'] = True
    opt['auto_resume'] = True
    state = load_resume_state(opt)
    resumed = build_model(opt)
    resumed.resume_training(state)
    assert all(torch.equal(v, resumed.net_g.state_dict()[k]) for k, v in saved.items())

    opt = make_opt(tmp_path)
    opt['distill']['init_from_teacher'] = True
    opt['path']['pretrain_network_g'] = str(tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_1.pth')
    with pytest.raises(OptionError, match='init_from_teacher and path.pretrain_network_g both set'):
        build_model(opt)


def test_init_from_teacher_refuses_a_wider_student(tmp_path):
    opt = make_opt(tmp_path)
    opt['distill']['init_from_teacher'] = True
    opt['network_g'] = copy.deepcopy(opt['network_t'])
    opt['network_g']['dim'] = 24
    with pytest.raises(OptionError, match=r'distill.init_from_teacher: .*wider in the student'):
        build_model(opt)


def test_spatial_form_chosen_per_feature_pair(tmp_path):
    opt = make_opt(tmp_path)
    opt['distill']['features'][0]['spatial_window'] = 4
    opt['distill']['features'][2]['spatial_tokens'] = 16
    model = build_model(opt)
    assert model.pairs == [{'student': n, 'teacher': n} for n in ('encoder_level1', 'latent', 'refinement')]
    reference = SKDFeatureLoss(**{k: v for k, v in opt['train']['feature_opt'].items() if k != 'type'},
                               spatial_window=[4, None, None], spatial_tokens=[None, None, 16])
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 16, 16, 16, generator=g), torch.randn(2, 128, 2, 2, generator=g),
             torch.randn(2, 16, 16, 16, generator=g)]
    targets = [f + 0.1 * torch.randn(f.shape, generator=g) for f in feats]
    ours, ours_parts = model.cri_feat(feats, targets)
    expected, expected_parts = reference(feats, targets)
    global_form, _ = SKDFeatureLoss(**{k: v for k, v in opt['train']['feature_opt'].items() if k != 'type'})(
        feats, targets)
    assert torch.equal(ours, expected) and ours_parts.keys() == expected_parts.keys()
    assert not torch.equal(ours, global_form)

    opt = make_opt(tmp_path)
    opt['distill']['features'][0]['spatial_window'] = 4
    opt['train']['feature_opt']['spatial_window'] = 8
    with pytest.raises(OptionError, match='spatial_window is set both in train.feature_opt and on distill.features'):
        build_model(opt)


def test_vgg19_without_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match='needs VGG19 ImageNet weights on disk(.|\n)*feature_space: teacher'):
        SKDContrastiveLoss(feature_space='vgg19')


def test_first_validation_reports_the_teacher(tmp_path):
    from basicsr.data import build_dataloader, build_dataset
    opt = make_opt(tmp_path)
    model = build_model(opt)
    loader = build_dataloader(build_dataset(opt['datasets']['val']), opt['datasets']['val'], num_gpu=0, dist=False)
    with basicsr_log() as records:
        model.validation(loader, 1, None, False)
        model.validation(loader, 2, None, False)
    teacher_lines = [r for r in records if 'Teacher (network_t) on tiny_val' in r]
    assert len(teacher_lines) == 1 and '# psnr:' in teacher_lines[0]


def test_train_through_cli_and_export_a_plain_restormer(tmp_path):
    opt = make_opt(tmp_path)
    for key in ('is_train', 'dist', 'rank', 'world_size', 'auto_resume'):
        opt.pop(key)
    opt['path'] = {k: v for k, v in opt['path'].items() if k in ('pretrain_network_t', 'param_key_t',
                                                                 'strict_load_t', 'resume_state')}
    write_options(tmp_path / 'skd.yml', opt)
    proc = run_cli(['train', '-opt', 'skd.yml'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    for name in ('l_pix:', 'l_gk:', 'l_gk_direct:', 'l_gk_channel:', 'l_gk_spatial:', 'l_cl:', 'Teacher (network_t)'):
        assert name in log
    exp = tmp_path / 'experiments' / 'tiny_SKD'
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    exported = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert list(exported) == ['params']
    student = build_network(tiny_restormer(8))
    student.load_state_dict(exported['params'], strict=True)
    state = torch.load(exp / 'training_states' / '4.state', weights_only=True)
    assert set(state['adapters']) == {f'levels.{i}.{p}' for i in range(3) for p in ('weight', 'bias')}

    test_opt = {'name': 'tiny_student_test', 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0,
                'datasets': {'test_1': opt['datasets']['val']}, 'network_g': tiny_restormer(8),
                'path': {'pretrain_network_g': str(exp / 'models' / 'net_g_latest.pth'), 'strict_load_g': True},
                'val': {'save_img': False, 'metrics': opt['val']['metrics']}}
    write_options(tmp_path / 'test.yml', test_opt)
    tested = run_cli(['test', '-opt', 'test.yml'], cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert '# psnr:' in tested.stdout + tested.stderr


def test_output_distillation_baseline(tmp_path):
    opt = make_opt(tmp_path)
    del opt['distill'], opt['train']['feature_opt'], opt['train']['contrast_opt']
    opt['train']['output_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
    model = build_model(opt)
    student, adapters, teacher = grads_after_one_backward(model)
    assert list(model.get_current_log()) == ['l_pix', 'l_kd']
    assert nonzero(student) and adapters == [] and all(g is None for g in teacher)


def test_feature_pairs_without_l_gk_are_neither_tapped_nor_adapted(tmp_path):
    """The shipped files keep distill.features for their commented L_GK block: without feature_opt the pairs cost
    nothing, and the log says they are unused."""
    opt = make_opt(tmp_path)
    del opt['train']['feature_opt'], opt['train']['contrast_opt']
    opt['train']['output_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
    assert len(opt['distill']['features']) == 3  # student dim 8, teacher dim 16: each pair would get an adapter
    with basicsr_log() as records:
        model = build_model(opt)
    assert any('distill.features: 3 pair(s) unused, train.feature_opt (L_GK) is not set' in r for r in records)
    assert model.pairs == [] and not list(model.adapters.parameters())
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert list(model.get_current_log()) == ['l_pix', 'l_kd']
    assert model.taps_s.features == {} and model.taps_t.features == {}


@pytest.mark.parametrize('loss_type', ['MSELoss', 'CharbonnierLoss'])
def test_output_distillation_with_a_loss_that_saves_its_target(tmp_path, loss_type):
    # MSELoss's backward keeps the target: a teacher output made under inference mode cannot be saved for it
    opt = make_opt(tmp_path)
    opt['train']['output_opt'] = {'type': loss_type, 'loss_weight': 1.0}
    opt['train']['pixel_opt']['loss_weight'] = 0.0
    model = build_model(opt)
    student, _, teacher = grads_after_one_backward(model)
    assert 'l_kd' in model.get_current_log() and nonzero(student) and all(g is None for g in teacher)
    assert not model.output_t.requires_grad


def test_nonfinite_loss_stops_before_the_step_or_skips_it(tmp_path):
    opt = make_opt(tmp_path)
    model = build_model(opt)
    before = copy.deepcopy(model.net_g.state_dict())
    data = batch()
    data['gt'][0, 0, 0, 0] = float('nan')
    model.feed_data(data)
    with pytest.raises(FloatingPointError, match=r'iter 7: the loss term\(s\) l_pix became non-finite(.|\n)*Last '
                                                 r'good checkpoint: none yet'):
        model.optimize_parameters(7)
    assert all(torch.equal(v, model.net_g.state_dict()[k]) for k, v in before.items())

    opt['train']['skip_nonfinite'] = True
    model = build_model(opt)
    before = copy.deepcopy(model.net_g.state_dict())
    model.feed_data(data)
    model.optimize_parameters(7)
    assert all(torch.equal(v, model.net_g.state_dict()[k]) for k, v in before.items())
    model.feed_data(batch())
    model.optimize_parameters(8)
    assert any(not torch.equal(v, model.net_g.state_dict()[k]) for k, v in before.items())


def test_checkpoints_never_hold_nan_and_are_written_whole(tmp_path):
    model = build_model(make_opt(tmp_path))
    model.save(0, 2)
    models_dir = tmp_path / 'experiments' / 'tiny_SKD' / 'models'
    assert sorted(os.listdir(models_dir)) == ['net_g_2.pth']
    with torch.no_grad():
        next(model.net_g.parameters())[0] = float('nan')
    with pytest.raises(FloatingPointError, match='Not writing .*net_g_4.pth: 1 tensor'):
        model.save(0, 4)
    assert sorted(os.listdir(models_dir)) == ['net_g_2.pth']  # no partial or temporary file left behind


def test_resume_restores_student_adapters_optimizer_and_keeps_the_teacher(tmp_path):
    from skd_basicsr.platform.checkpoint import load_resume_state
    opt = make_opt(tmp_path)
    model = build_model(opt)
    for it in (1, 2):
        model.feed_data(batch(it))
        model.optimize_parameters(it)
    model.save(0, 2)
    saved_adapters = copy.deepcopy(model.adapters.state_dict())
    saved_optimizer = copy.deepcopy(model.optimizer_g.state_dict())
    saved_student = copy.deepcopy(model.net_g.state_dict())

    opt = make_opt(tmp_path)
    opt['auto_resume'] = True
    state = load_resume_state(opt)
    assert state['iter'] == 2 and opt['path']['pretrain_network_t'] == str(tmp_path / 'teacher.pth')
    resumed = build_model(opt)
    resumed.resume_training(state)
    assert all(torch.equal(v, resumed.net_g.state_dict()[k]) for k, v in saved_student.items())
    assert all(torch.equal(v, resumed.adapters.state_dict()[k]) for k, v in saved_adapters.items())
    new_optimizer = resumed.optimizer_g.state_dict()
    assert new_optimizer['param_groups'] == saved_optimizer['param_groups']
    for key, value in saved_optimizer['state'].items():
        assert all(torch.equal(value[name], new_optimizer['state'][key][name]) for name in value)
    teacher = torch.load(tmp_path / 'teacher.pth', weights_only=True)['params']
    assert all(torch.equal(v, resumed.net_t.state_dict()[k]) for k, v in teacher.items())


class _Code:

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize('break_it, message', [
    (lambda opt, tmp: opt['path'].update(pretrain_network_t=str(tmp / 'nowhere.pth')), r'nowhere.pth: no such file'),
    (lambda opt, tmp: opt['path'].update(param_key_t='params_ema'),
     r"no param_key_t 'params_ema' in the file; it has \['params'\]"),
    (lambda opt, tmp: opt['network_t'].update(LayerNorm_type='BiasFree'),
     r'does not fit network_t \(strict_load_t\): 0 missing key\(s\) \[\], \d+ unexpected key\(s\) '
     r"\['encoder_level1.0.norm1.body.bias'"),
    (lambda opt, tmp: opt['network_t'].update(dim=24), r'does not fit network_t: \d+ shape mismatch\(es\), first: '
                                                       r"\['patch_embed.proj.weight: file \(16, 3, 3, 3\), network "
                                                       r"\(24, 3, 3, 3\)'"),
    (lambda opt, tmp: torch.save({'params': _Code()}, tmp / 'teacher.pth'), 'cannot be loaded as weights only'),
    (lambda opt, tmp: opt['network_t'].update(out_channels=1, dual_pixel_task=True),
     r'network_g outputs \(1, 3, 64, 64\) but network_t outputs \(1, 1, 64, 64\)'),
])
def test_teacher_problems_are_named_before_training(tmp_path, break_it, message):
    opt = make_opt(tmp_path)
    break_it(opt, tmp_path)
    if 'dual_pixel_task' in opt['network_t']:
        save_teacher(tmp_path / 'teacher.pth', opt['network_t'])
    with pytest.raises(OptionError, match=message):
        build_model(opt)


@ARCH_REGISTRY.register()
class ProbeTestBatchNormNet(nn.Module):
    """A student with BatchNorm, whose running statistics the shape probe must not touch."""

    def __init__(self, channels=8):
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x):
        return x + self.tail(self.bn(self.head(x)))


def test_shape_probe_leaves_batchnorm_statistics_and_the_train_mode_alone(tmp_path):
    opt = make_opt(tmp_path)
    opt['network_g'] = {'type': 'ProbeTestBatchNormNet'}
    opt['distill']['features'] = [{'student': 'bn', 'teacher': 'encoder_level1'}]
    model = build_model(opt)
    bn = model.net_g.bn
    assert model.net_g.training and int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))


class _TensorBoard:

    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = (value, step)


def test_teacher_metrics_go_to_tensorboard_under_teacher(tmp_path):
    from basicsr.data import build_dataloader, build_dataset
    opt = make_opt(tmp_path)
    model = build_model(opt)
    loader = build_dataloader(build_dataset(opt['datasets']['val']), opt['datasets']['val'], num_gpu=0, dist=False)
    tb_logger = _TensorBoard()
    model.validation(loader, 3, tb_logger, False)
    value, step = tb_logger.scalars['teacher/metrics/tiny_val/psnr']
    assert step == 3 and value == pytest.approx(model.teacher_metrics['tiny_val']['psnr'])
    assert 'metrics/tiny_val/psnr' in tb_logger.scalars  # BasicSR's own, for the student


def test_contrast_space_defaults_to_the_teacher_under_skdmodel(tmp_path, monkeypatch):
    from skd_basicsr.distill.feature_space import TeacherFeatureSpace
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # no VGG19 weights anywhere
    monkeypatch.chdir(tmp_path)
    opt = make_opt(tmp_path)
    opt['train']['contrast_opt'] = {'type': 'SKDContrastiveLoss', 'loss_weight': 0.1}
    model = build_model(opt)
    assert isinstance(model.cri_contrast.space, TeacherFeatureSpace)
    opt['train']['contrast_opt']['layer_weights'] = {'encoder_levl1': 1.0}
    with pytest.raises(OptionError, match=r"contrast_opt.layer_weights: network_t has no module named "
                                          r"'encoder_levl1'(.|\n)*closest to 'encoder_levl1': encoder_level1"):
        build_model(opt)


def test_resuming_a_state_without_adapters_says_so_before_the_optimizer_load(tmp_path):
    opt = make_opt(tmp_path)
    model = build_model(opt)
    state = model.get_training_state(0, 1)
    # the state of a plain SRModel run: no adapters, and an optimizer over the student alone
    plain = torch.optim.Adam(model.net_g.parameters(), lr=1e-4)
    state['optimizers'] = [plain.state_dict()]
    del state['adapters']
    with pytest.raises(OptionError, match='The training state has no adapters: it was not written by SKDModel'):
        model.resume_training(state)
