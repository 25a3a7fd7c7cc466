"""Mixed precision, channels_last, torch.compile and TF32 (issue 20, skd_basicsr/platform/precision.py): every option
trains SRModel and SKDModel with finite losses under autocast, weights and checkpoints stay float32, the fp16 scaler
skips an overflow without moving a weight and resumes at its scale, wrong values and what the device or the model
cannot honour are refused in one line, and a compiled student's taps record what the eager one records."""
import copy
import os
import shutil
import subprocess

import pytest
import torch
from torch.nn import functional as F

import skd_basicsr  # noqa: F401  (compat and registries, before basicsr)
from basicsr.archs import build_network
from basicsr.models import build_model
from skd_basicsr.distill.contrastive_loss import l1_per_sample
from skd_basicsr.distill.mca import gaussian_kernel_distance
from skd_basicsr.distill.skd_loss import SKDFeatureLoss
from skd_basicsr.distill.taps import FeatureTaps
from skd_basicsr.distill.teacher import teacher_metrics
from skd_basicsr.platform.checkpoint import safe_torch_load
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.precision import TrainingPrecision, sr_step

from helpers import (basicsr_log, noisy_batch, save_teacher, skd_model_opt, skd_options, tiny_restormer,
                     write_noisy_pairs, write_options)
from test_accumulation import batch_of, step_difference, weights
from test_exact_resume import options as exact_resume_options
from test_exact_resume import train as train_run
from test_faults import snapshot
from test_training import make_opt


def sr_opt(tmp_path, **train):
    """SRModel with a tiny MSRResNet (x2): its first fp16 step does not overflow, so a good step is a good step."""
    return make_opt(tmp_path, scale=2, batch=2, **train)


def sr_batch(seed=0):
    data = batch_of(2, size=16, seed=seed)
    data['lq'] = data['lq'][..., ::2, ::2]
    return data


def skd_opt(tmp_path, **train):
    opt = skd_model_opt(tmp_path)
    opt['train'].update(train)
    return opt


MODELS = {'SRModel': (sr_opt, sr_batch), 'SKDModel': (skd_opt, lambda seed=0: noisy_batch(seed=seed))}


def train(model, batch, iters, start=1):
    for it in range(start, start + iters):
        model.feed_data(batch(seed=it))
        model.optimize_parameters(it)


def inf_gradient_hook(model):
    """A hook that makes the gradient of the student's first parameter infinite, as an fp16 overflow does."""
    param = next(model.get_bare_model(model.net_g).parameters())
    return param.register_hook(lambda grad: torch.full_like(grad, float('inf')))


# --------------------------------------------------------------------------------------------------------------
# training under each option
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('model_type', sorted(MODELS))
@pytest.mark.parametrize('amp, dtype', [('bf16', torch.bfloat16), ('fp16', torch.float16)])
def test_each_amp_trains_under_autocast_and_keeps_float32_weights(model_type, amp, dtype, tmp_path):
    make, batch = MODELS[model_type]
    model = build_model(make(tmp_path, amp=amp, channels_last=True, ema_decay=0.5))
    start = copy.deepcopy(model.get_bare_model(model.net_g).state_dict())
    seen = {}

    def dtype_of(label):

        def record(module, args, out):
            seen[label] = out.dtype

        return record

    for label in ('net_g', 'net_t'):  # the teacher runs under the student's autocast
        if hasattr(model, label):
            net = model.get_bare_model(getattr(model, label))
            next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(dtype_of(label))
    train(model, batch, 3)
    assert set(seen.values()) == {dtype} and len(seen) == (2 if model_type == 'SKDModel' else 1)
    assert model.log_dict and all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
    net = model.get_bare_model(model.net_g)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert any(not torch.equal(v, start[k]) for k, v in net.state_dict().items())
    conv = next(p for p in net.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    states = [v for s in model.optimizer_g.state_dict()['state'].values() for v in s.values() if v.dim()]
    assert states and all(v.dtype == torch.float32 for v in states)
    assert all(p.dtype == torch.float32 for p in model.net_g_ema.parameters())


def test_the_float32_sr_step_is_srmodels_own(tmp_path):
    """sr_step replaces SRModel's step under train.amp; with autocast off it computes what SRModel's step computes, bit
    for bit (so under amp only the precision differs)."""
    models = []
    for own in (True, False):
        torch.manual_seed(0)
        model = build_model(sr_opt(tmp_path, ema_decay=0.5))
        for it in (1, 2):
            model.feed_data(sr_batch(seed=it))
            if own:
                model.optimize_parameters(it)
            else:
                model.precision = TrainingPrecision(None, model.device)
                sr_step(model, it)
        models.append(model)
    assert torch.equal(weights(models[0]), weights(models[1]))
    assert models[0].log_dict == models[1].log_dict
    ema = [torch.cat([p.flatten() for p in m.net_g_ema.parameters()]) for m in models]
    assert torch.equal(*ema)


def test_amp_off_leaves_srmodels_step_on_the_class(tmp_path):
    plain = build_model(sr_opt(tmp_path))
    amp = build_model(sr_opt(tmp_path, amp='bf16'))
    assert plain.optimize_parameters.__wrapped__.__func__ is type(plain).optimize_parameters
    assert amp.optimize_parameters.__wrapped__.__func__ is sr_step


def test_a_checkpoint_written_under_amp_loads_into_a_float32_network(tmp_path):
    opt = skd_opt(tmp_path, amp='fp16', channels_last=True)
    model = build_model(opt)
    train(model, MODELS['SKDModel'][1], 2)
    model.save(0, 2)
    saved = safe_torch_load(str(tmp_path / 'experiments' / 'tiny_SKD' / 'models' / 'net_g_2.pth'))['params']
    net = build_network(copy.deepcopy(opt['network_g']))
    net.load_state_dict(saved, strict=True)
    assert all(v.dtype == torch.float32 for v in saved.values())
    assert torch.equal(weights(model), torch.cat([p.detach().flatten() for p in net.parameters()]))


@pytest.mark.parametrize('model_type', sorted(MODELS))
def test_accumulation_under_fp16_makes_the_step_of_one_batch(model_type, tmp_path):
    """Each micro-batch's loss scaled at the one scale of the step; unscaled, clipped and stepped once."""
    make, _ = MODELS[model_type]
    data = batch_of(4, size=16)
    if model_type == 'SRModel':
        data['lq'] = data['lq'][..., ::2, ::2]
    train_opt = {'amp': 'fp16', 'optim_g': {'type': 'SGD', 'lr': 0.01}}
    models = {}
    for count in (1, 2):
        opt = make(tmp_path, accum_iter=count, **train_opt)
        opt['train'].pop('contrast_opt', None)  # a ratio of batch means: not exactly the mean of micro-batch ratios
        opt['datasets']['train']['batch_size_per_gpu'] = 4 // count
        torch.manual_seed(0)
        model = build_model(opt)
        models[count] = (model, weights(model))
        model.update_learning_rate(1)
        model.feed_data(data)
        model.optimize_parameters(1)
    (whole, start), (accumulated, _) = models[1], models[2]
    assert step_difference(whole, accumulated, start) < 2e-3  # float16 rounding of the two forwards
    scaler = accumulated.precision.scaler
    assert scaler.get_scale() == 65536.0 and scaler.state_dict()['_growth_tracker'] == 1  # one update per step


# --------------------------------------------------------------------------------------------------------------
# the fp16 loss scale
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('model_type', sorted(MODELS))
def test_an_fp16_overflow_skips_the_step_lowers_the_scale_and_the_run_goes_on(model_type, tmp_path):
    make, batch = MODELS[model_type]
    model = build_model(make(tmp_path, amp='fp16', ema_decay=0.5))  # skip_nonfinite is off: an overflow is no fault
    train(model, batch, 1)
    scale = model.precision.scaler.get_scale()
    handle = inf_gradient_hook(model)
    before = snapshot(model)
    ema_before = copy.deepcopy(model.net_g_ema.state_dict())
    with basicsr_log() as records:
        train(model, batch, 1, start=2)
    assert (f'iter 2: fp16 gradient overflow at loss scale {scale:g}; step skipped, loss scale lowered to '
            f'{scale / 2:g} (train.amp: fp16).') in records
    assert model.precision.scaler.get_scale() == scale / 2 and model.skipped_in_a_row == 1
    weights_before, optimizer_before = before
    for name, value in model.get_bare_model(model.net_g).state_dict().items():
        assert torch.equal(value, weights_before[name]), name
    assert str(model.optimizer_g.state_dict()['state']) == str(optimizer_before['state'])
    for name, value in model.net_g_ema.state_dict().items():
        assert torch.equal(value, ema_before[name]), name
    handle.remove()
    train(model, batch, 1, start=3)
    assert model.skipped_in_a_row == 0
    assert any(not torch.equal(v, weights_before[k]) for k, v in model.get_bare_model(model.net_g).state_dict().items())


def test_overflowing_at_every_scale_stops_after_max_skipped_steps(tmp_path):
    model = build_model(sr_opt(tmp_path, amp='fp16', max_skipped_steps=2))
    inf_gradient_hook(model)
    train(model, sr_batch, 2)
    with pytest.raises(FloatingPointError, match=r'iter 3: 3 steps in a row were skipped, more than '
                                                 r'train.max_skipped_steps \(2\); the last because the fp16 gradient '
                                                 r'overflowed at loss scale 16384\. The run is not training'):
        train(model, sr_batch, 1, start=3)


def test_the_loss_scale_survives_a_save_and_a_resume(tmp_path):
    opt = sr_opt(tmp_path, amp='fp16')
    model = build_model(opt)
    handle = inf_gradient_hook(model)
    train(model, sr_batch, 1)
    handle.remove()
    train(model, sr_batch, 2, start=2)
    expected = model.precision.scaler.state_dict()
    assert expected['scale'] == 32768.0 and expected['_growth_tracker'] == 2
    (tmp_path / 'training_states').mkdir()
    model.save_training_state(0, 3)
    state = safe_torch_load(str(tmp_path / 'training_states' / '3.state'))
    state.pop('position')  # the loader's place: not what is resumed here
    resumed = build_model(sr_opt(tmp_path, amp='fp16'))
    assert resumed.precision.scaler.state_dict() != expected
    resumed.resume_training(state)
    assert resumed.precision.scaler.state_dict() == expected
    bf16 = build_model(sr_opt(tmp_path, amp='bf16'))  # another precision resumes the same state without its scale
    with basicsr_log() as records:
        bf16.resume_training(state)
    assert 'The training state holds an fp16 loss scale; train.amp is not fp16 now, so it is not used.' in records


def test_an_fp16_run_killed_and_resumed_ends_bit_identical(tmp_path, monkeypatch):
    """Through `basicsr train`: RIDNet's first fp16 steps overflow, so the scale moves before the state at 3 is
    written; resumed at another scale, the run would skip other steps."""
    opt = exact_resume_options(tmp_path, 'SRModel')
    opt['train']['amp'] = 'fp16'
    whole = train_run(tmp_path, opt, 'whole', monkeypatch=monkeypatch)
    resumed = train_run(tmp_path, opt, 'resumed', kill_at=5, resume=True, monkeypatch=monkeypatch)
    state = safe_torch_load(str(tmp_path / 'resumed' / 'experiments' / 'exact' / 'training_states' / '3.state'))
    assert state['precision']['grad_scaler']['scale'] < 65536
    for key in ('params', 'params_ema'):
        for name, value in whole[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('torchrun') is None, reason='torchrun comes with torch')
def test_skd_under_fp16_on_two_processes_with_accumulation(tmp_path):
    """torchrun, 2 CPU processes (gloo), 2 micro-batches a step, channels_last: the ranks scale, unscale, skip and
    update together (a rank that stepped alone would hang the next all-reduce), validation in bf16."""
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), size=32)
    save_teacher(tmp_path / 'teacher.pth', tiny_restormer(16))
    opt = skd_options('skd_amp_ddp', gt, lq, tmp_path / 'teacher.pth', total_iter=2, checkpoint_freq=2)
    opt['train'].update(amp='fp16', accum_iter=2, channels_last=True)  # converted after DDP wrapped the student
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    opt['val']['amp'] = 'bf16'
    write_options(tmp_path / 'skd_amp_ddp.yml', opt)
    proc = subprocess.run(['torchrun', '--nproc_per_node=2', '--master_port=29623', '-m', 'skd_basicsr.train', '-opt',
                           'skd_amp_ddp.yml', '--launcher', 'pytorch'], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'World size (gpu number): 2' in log and 'l_gk:' in log and 'Validation tiny_val' in log
    state = safe_torch_load(str(tmp_path / 'experiments' / 'skd_amp_ddp' / 'training_states' / '2.state'))
    assert state['precision']['grad_scaler']['scale'] > 0 and len(state['position']['random']) == 2


# --------------------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------------------
def test_val_amp_runs_the_test_under_autocast_and_hands_back_float32(tmp_path):
    outputs = {}
    for amp in (False, 'bf16'):
        torch.manual_seed(0)
        opt = make_opt(tmp_path)
        opt['val']['amp'] = amp
        model = build_model(opt)
        model.feed_data(batch_of(1, size=16))
        model.test()
        outputs[amp] = model.output
    assert outputs['bf16'].dtype == torch.float32
    difference = (outputs['bf16'] - outputs[False]).abs().max()
    assert 0 < difference < 0.05 * outputs[False].abs().max()  # bfloat16 arithmetic, the same network


def test_the_teachers_scores_follow_val_amp(tmp_path):
    opt = skd_opt(tmp_path)
    net_t = build_network(copy.deepcopy(opt['network_t']))
    net_t.load_state_dict(safe_torch_load(opt['path']['pretrain_network_t'])['params'])
    net_t.eval()
    loader = [{'lq': noisy_batch(seed=s)['lq'][:1], 'gt': noisy_batch(seed=s)['gt'][:1]} for s in range(2)]
    plain = teacher_metrics(net_t, loader, opt, torch.device('cpu'))['psnr']
    opt['val']['amp'] = 'bf16'
    amp = teacher_metrics(net_t, loader, opt, torch.device('cpu'))['psnr']
    assert amp != plain and abs(amp - plain) < 0.5


# --------------------------------------------------------------------------------------------------------------
# SKD's losses under autocast
# --------------------------------------------------------------------------------------------------------------
def test_the_gaussian_kernel_of_a_student_close_to_its_teacher_keeps_float32_under_fp16():
    """The squares of differences of 1e-3 fall below float16's normal range: in float16 GK was 1.8e-2 off."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 16, 32, 32, generator=g).half()
    s = (t.float() + 1e-3 * torch.randn(t.shape, generator=g)).half()
    reference = gaussian_kernel_distance(s.float(), t.float())
    with torch.autocast('cpu', dtype=torch.float16):
        value = gaussian_kernel_distance(s, t)
    assert value.dtype == torch.float32
    assert torch.allclose(value, reference, rtol=1e-5)
    in_float16 = -torch.expm1(-(s - t).pow(2).flatten(1).mean(1) / 2)
    assert not torch.allclose(in_float16.float(), reference, rtol=1e-3)  # what the float32 step spares


def test_l_cl_distances_are_summed_in_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(2, 8, 16, 16, generator=g).bfloat16() for _ in range(2))
    distance = l1_per_sample(x, y)
    assert distance.dtype == torch.float32
    assert torch.allclose(distance, l1_per_sample(x.float(), y.float()), rtol=1e-4)  # bfloat16 differences
    assert l1_per_sample(x.double(), y.double()).dtype == torch.float64


@pytest.mark.parametrize('spatial', [{'spatial_softmax': 'rows'}, {'spatial_softmax': 'rows', 'spatial_window': 4}])
def test_the_row_softmax_reading_runs_under_autocast_with_features_of_two_dtypes(spatial):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 8, 8, 8, generator=g).requires_grad_()
    t = torch.randn(2, 8, 8, 8, generator=g)
    loss = SKDFeatureLoss(branches=['spatial'], **spatial)
    reference, = torch.autograd.grad(loss([s], [t])[0], s)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss([s], [t.bfloat16()])[0]  # a student in float32, a teacher in bfloat16
    grad, = torch.autograd.grad(value, s)
    assert grad.dtype == torch.float32
    assert torch.linalg.vector_norm(grad - reference) < 1e-2 * torch.linalg.vector_norm(reference)


# --------------------------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('section, key, value, message', [
    ('train', 'amp', 'float16', r"train\.amp must be bf16, fp16 or false, got 'float16'\."),
    ('train', 'amp', 'bf17', r"train\.amp must be bf16, fp16 or false, got 'bf17'\. Did you mean bf16\?"),
    ('train', 'amp', True, r'train\.amp must be bf16, fp16 or false, got True\.'),
    ('val', 'amp', 'int8', r"val\.amp must be bf16, fp16 or false, got 'int8'\."),
    ('train', 'compile', True, r'train\.compile must be false or one of default, reduce-overhead, max-autotune, got '
                               r'True\. Write `compile: default` for the default mode\.'),
    ('train', 'compile', 'max_autotune', r"got 'max_autotune'\. Did you mean max-autotune\?"),
    ('train', 'channels_last', 'yes', r"train\.channels_last must be true or false, got 'yes'\."),
    ('train', 'tf32', 1, r'train\.tf32 must be true or false, got 1\.'),
])
def test_wrong_values_are_refused_in_one_line(tmp_path, section, key, value, message):
    opt = make_opt(tmp_path)
    opt[section][key] = value
    with pytest.raises(OptionError, match=message):
        build_model(opt)


def test_amp_is_refused_for_a_model_with_its_own_step(tmp_path):
    opt = make_opt(tmp_path, amp='bf16')
    opt['model_type'] = 'ESRGANModel'
    with pytest.raises(OptionError, match=r"train\.amp: bf16: ESRGANModel has its own optimize_parameters, which "
                                          r"autocast cannot reach; mixed precision is built for SRModel's step \(and "
                                          r"subclasses that keep it, such as SwinIRModel\) and SKDModel's\. Set "
                                          r'train\.amp: false\.'):
        build_model(opt)
    opt['model_type'] = 'SwinIRModel'  # an SRModel subclass that keeps SRModel's step
    assert build_model(opt).optimize_parameters.__wrapped__.__func__ is sr_step


def test_fp16_is_refused_where_the_device_has_no_float16_kernels(tmp_path, monkeypatch):
    conv2d = F.conv2d

    def no_half_conv2d(*args, **kwargs):
        if torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.float16:
            raise NotImplementedError('"slow_conv2d_cpu" not implemented for \'Half\'')
        return conv2d(*args, **kwargs)

    monkeypatch.setattr(F, 'conv2d', no_half_conv2d)
    with pytest.raises(OptionError, match=r"train\.amp: fp16: cpu has no torch\.float16 kernels for a training step "
                                          r"\(\"slow_conv2d_cpu\" not implemented for 'Half'\); use train\.amp: bf16 "
                                          r'or false\.'):
        build_model(sr_opt(tmp_path, amp='fp16'))
    opt = sr_opt(tmp_path)
    opt['val']['amp'] = 'fp16'
    with pytest.raises(OptionError, match=r'val\.amp: fp16: cpu has no torch\.float16 kernels'):
        build_model(opt)
    assert build_model(sr_opt(tmp_path, amp='bf16')).precision.amp == 'bf16'


def test_compile_is_refused_without_a_cpp_compiler(tmp_path, monkeypatch):
    from torch._inductor import config
    from torch._inductor.cpp_builder import cpp_compiler_search

    monkeypatch.setattr(config.cpp, 'cxx', ('no-such-c++-compiler', ))
    cpp_compiler_search.cache_clear()
    try:
        with pytest.raises(OptionError, match=r'train\.compile: default: compiling for the CPU needs a working '
                                              r'C\+\+ compiler, and none was found \(InvalidCxxCompiler\); install '
                                              r'g\+\+ \(or set CXX\), or set train\.compile: false\.'):
            build_model(sr_opt(tmp_path, compile='default'))
    finally:
        monkeypatch.undo()
        cpp_compiler_search.cache_clear()


def test_tf32_on_the_cpu_is_a_warning_and_changes_nothing(tmp_path):
    switches = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    with basicsr_log() as records:
        build_model(sr_opt(tmp_path, tf32=True))
    assert ('train.tf32: true has no effect on cpu: TF32 is a format of NVIDIA tensor cores. Nothing was changed.'
            in records)
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == switches


# --------------------------------------------------------------------------------------------------------------
# torch.compile (slow: two tiny networks compiled once, forward and backward)
# --------------------------------------------------------------------------------------------------------------
def srvgg(num_feat):
    # leaky ReLU in place: the output of every tapped convolution is changed later, so its tap records a copy
    return {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': num_feat, 'num_conv': 2,
            'upscale': 1, 'act_type': 'leakyrelu'}


# dynamo reads .grad of a non-leaf input while tracing (the teacher on the student's output, L_CL's anchor pass): a
# warning of torch's, an error under this suite's filterwarnings
@pytest.mark.filterwarnings('ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning')
def test_compiled_networks_keep_their_taps_and_their_checkpoint_keys(tmp_path):
    opt = skd_model_opt(tmp_path)
    opt['network_g'], opt['network_t'] = srvgg(4), srvgg(8)
    save_teacher(tmp_path / 'teacher.pth', opt['network_t'])
    opt['distill'] = {'features': [{'student': 'body.0', 'teacher': 'body.0'}, {'student': 'body.3',
                                                                               'teacher': 'body.3'}]}
    opt['train']['contrast_opt']['layer_weights'] = {'body.2': 1.0}  # the teacher's capture, compiled
    opt['train'].update(compile='default', channels_last=True)
    with basicsr_log() as records:
        model = build_model(opt)
    assert any(line.startswith('network_g, network_t: channels_last and compiled (mode default).') for line in records)
    assert model.taps_s.copied == {'body.0'}  # found by the eager probe before compiling
    net_g = model.get_bare_model(model.net_g)
    eager = build_network(copy.deepcopy(opt['network_g']))
    eager.load_state_dict(net_g.state_dict())
    eager_taps = FeatureTaps(eager, ['body.0', 'body.3'])
    eager_taps.find_inplace(eager, torch.zeros(1, 3, 16, 16))
    lq = noisy_batch()['lq']
    for _ in range(2):  # the second recording runs the compiled graph without compiling
        with model.taps_s.recording() as compiled_feats:
            compiled_out = model.net_g(lq)
        with eager_taps.recording() as eager_feats:
            eager_out = eager(lq)
        assert torch.allclose(compiled_out, eager_out, atol=1e-5)
        assert list(compiled_feats) == ['body.0', 'body.3']
        for name in compiled_feats:
            assert torch.allclose(compiled_feats[name], eager_feats[name], atol=1e-5), name
    train(model, MODELS['SKDModel'][1], 2)
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values()) and model.log_dict['l_gk'] > 0
    model.save(0, 2)
    saved = safe_torch_load(str(tmp_path / 'experiments' / 'tiny_SKD' / 'models' / 'net_g_2.pth'))['params']
    assert list(saved) == list(eager.state_dict())
    eager.load_state_dict(saved, strict=True)
