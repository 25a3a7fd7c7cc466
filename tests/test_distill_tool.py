"""``basicsr distill``: from a plain BasicSR training file and its weights to an SKD file that trains as it is.

For tiny Restormer, EDSR, RRDBNet and SwinIR teachers the written file trains 2 iterations and validates, its student
meets the target and its pairs exist in both networks at equal sizes; a student of another family works; the rules
of the search and of the latency timing hold; each refusal says what was wrong.
"""
import json
import os
from os import path as osp

import cv2
import pytest
import torch

import skd_basicsr  # noqa: F401  (compat and registries, before basicsr)
from basicsr.archs import build_network
from skd_basicsr.distill import student_search
from skd_basicsr.distill.feature_pairs import pair_features, probe_shapes
from skd_basicsr.distill.student_search import keeps_depth
from skd_basicsr.platform.network_spec import NetworkSpec
from skd_basicsr.platform.options import yaml_load
from skd_basicsr.tools.distill import main as distill_main

from helpers import paired_dataset_opt, ridnet_options, save_teacher, train_here, write_images, write_noisy_pairs
from helpers import write_options

pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')  # BasicSR's SwinIR calls it the old way

TEACHERS = {  # family -> (tiny teacher, scale)
    'Restormer': ({'type': 'Restormer', 'dim': 16, 'num_blocks': [2, 2, 2, 2], 'num_refinement_blocks': 2,
                   'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.0, 'bias': False, 'LayerNorm_type': 'WithBias'}, 1),
    'EDSR': ({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 4, 'upscale': 4,
              'res_scale': 1, 'img_range': 255.0, 'rgb_mean': [0.4488, 0.4371, 0.4040]}, 4),
    'RRDBNet': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 4, 'num_grow_ch': 8,
                 'scale': 4}, 4),
    'SwinIR': ({'type': 'SwinIR', 'upscale': 4, 'in_chans': 3, 'img_size': 8, 'window_size': 4, 'img_range': 1.0,
                'depths': [1, 1, 1, 1], 'embed_dim': 16, 'num_heads': [2, 2, 2, 2], 'mlp_ratio': 2,
                'upsampler': 'pixelshuffledirect', 'resi_connection': '1conv'}, 4),
}
TARGETS = {'Restormer': ['--macs', '0.5'], 'EDSR': ['--params', '0.5'], 'RRDBNet': ['--params', '0.4'],
           'SwinIR': ['--params', '0.6']}


def sr_pairs(root, scale, count=2, size=32):
    """Folders root/gt and root/lq: random-textured images and their bicubic downscales by ``scale``."""
    gt_paths = write_images(str(root / 'gt'), count=count, size=size)
    os.makedirs(root / 'lq', exist_ok=True)
    for path in gt_paths:
        img = cv2.imread(path)
        cv2.imwrite(str(root / 'lq' / osp.basename(path)),
                    cv2.resize(img, (size // scale, size // scale), interpolation=cv2.INTER_CUBIC))
    return str(root / 'gt'), str(root / 'lq')


def training_file(tmp_path, family):
    """A plain BasicSR SRModel training file of the tiny teacher, and the teacher's weights."""
    teacher, scale = TEACHERS[family]
    if scale == 1:
        gt, lq = write_noisy_pairs(str(tmp_path / 'data'), count=2, size=32)
    else:
        gt, lq = sr_pairs(tmp_path / 'data', scale)
    opt = ridnet_options(f'{family}_teacher', gt, lq, total_iter=2, checkpoint_freq=2)
    opt.update(scale=scale, network_g=dict(teacher))
    for phase in ('train', 'val'):
        opt['datasets'][phase] = paired_dataset_opt(gt, lq, phase=phase, gt_size=16 if scale == 1 else 32)
        opt['datasets'][phase]['scale'] = scale
    weights = str(tmp_path / 'teacher.pth')
    save_teacher(weights, teacher)
    return write_options(tmp_path / 'train_teacher.yml', opt), weights


def read(path):
    """An option file as plain data (dicts, not the loader's OrderedDicts)."""
    with open(path) as f:
        return json.loads(json.dumps(yaml_load(f.read(), source=str(path))))


def count(net_opt):
    return sum(p.numel() for p in build_network(dict(net_opt)).parameters())


def assert_pairs_fit(opt):
    """Every pair names modules of both networks whose probe outputs have one spatial size."""
    student, teacher = build_network(dict(opt['network_g'])), build_network(dict(opt['network_t']))
    spec_t = NetworkSpec.from_options(opt['network_t'])
    probe = NetworkSpec.from_options(opt['network_g']).probe(None, spec_t)
    shapes_s, shapes_t = probe_shapes(student, probe), probe_shapes(teacher, probe)
    assert opt['distill']['features']
    for pair in opt['distill']['features']:
        assert shapes_s[pair['student']][-2:] == shapes_t[pair['teacher']][-2:], pair


@pytest.mark.parametrize('family', sorted(TEACHERS))
def test_the_written_file_trains_its_student_within_the_target_and_validates(family, tmp_path, monkeypatch, capsys):
    option_file, weights = training_file(tmp_path, family)
    out = str(tmp_path / 'SKD.yml')
    assert distill_main(['-opt', option_file, '--teacher', weights, '--out', out, '--terms', 'skd',
                         *TARGETS[family]]) == 0
    printed = capsys.readouterr().out
    assert 'rule: the most parameters within' in printed and 'chosen: ' in printed and f'Wrote {out}' in printed
    opt = read(out)
    what, ratio = TARGETS[family][0][2:], float(TARGETS[family][1])
    assert opt['model_type'] == 'SKDModel' and opt['network_t'] == TEACHERS[family][0]
    assert opt['network_g']['type'] == family and opt['network_g'] != opt['network_t']
    if what == 'params':
        assert count(opt['network_g']) <= ratio * count(opt['network_t'])
    else:  # macs, counted as the search counts them
        from skd_basicsr.platform.cost import thop_macs

        probe = NetworkSpec.from_options(opt['network_t']).probe()
        macs = [thop_macs(build_network(dict(opt[key])).eval(), probe) for key in ('network_g', 'network_t')]
        assert macs[0] <= ratio * macs[1]
    assert opt['distill']['init_from_teacher'] is True
    assert opt['path']['pretrain_network_t'] == osp.abspath(weights) and opt['path']['param_key_t'] == 'params'
    assert opt['datasets'] == read(option_file)['datasets']  # the user's data, untouched
    assert set(opt['train']) >= {'pixel_opt', 'output_opt', 'feature_opt', 'contrast_opt', 'optim_g', 'scheduler'}
    assert_pairs_fit(opt)
    status, log = train_here(out, tmp_path, monkeypatch)
    assert status == 0, log[-3000:]
    assert 'End of training' in log and 'Validation tiny_val' in log and 'Teacher (network_t) on tiny_val' in log
    assert 'distill.init_from_teacher: network_g initialised from network_t' in log


def test_the_recommended_terms_are_the_studys_best_and_a_dry_run_writes_nothing(tmp_path, capsys):
    """A student cut in depth (EDSR 4 -> 2 blocks) gets output-L1 on the teacher's weights and no SKD term: normalised
    L_GK did not win for such a student at three times the study's budget (docs/kd_study.md, 5.11); no L_CL."""
    option_file, weights = training_file(tmp_path, 'EDSR')
    assert distill_main(['-opt', option_file, '--teacher', weights, '--params', '0.5', '--dry-run']) == 0
    printed = capsys.readouterr().out
    assert '*' in printed and 'feature pairs (student -> teacher):' in printed
    assert 'which the recommended terms leave out for a student cut in depth' in printed
    assert sorted(os.listdir(tmp_path)) == ['data', 'teacher.pth', 'train_teacher.yml']
    out = str(tmp_path / 'SKD.yml')
    assert distill_main(['-opt', option_file, '--teacher', weights, '--params', '0.5', '--out', out]) == 0
    opt = read(out)
    assert opt['network_g']['num_block'] < opt['network_t']['num_block']
    assert opt['distill'] == {'adapter': 'conv1x1', 'init_from_teacher': True}
    assert opt['train']['output_opt']['type'] == 'L1Loss'
    assert 'feature_opt' not in opt['train'] and 'contrast_opt' not in opt['train']


def test_keeps_depth_tells_a_width_cut_from_a_depth_cut_per_family():
    restormer = {'type': 'Restormer', 'dim': 16, 'num_blocks': [4, 6, 6, 8], 'num_refinement_blocks': 4}
    assert keeps_depth(dict(restormer, dim=10), restormer) is True
    assert keeps_depth(dict(restormer, num_refinement_blocks=2), restormer) is False
    assert keeps_depth(dict(restormer, num_blocks=[1, 1, 2, 2]), restormer) is False
    # the architecture's defaults count: [4, 6, 6, 8] and 4 are Restormer's own
    assert keeps_depth({'type': 'Restormer', 'dim': 24}, {'type': 'Restormer', 'num_blocks': (4, 6, 6, 8)}) is True
    swinir = {'type': 'SwinIR', 'depths': [6, 6, 6, 6], 'embed_dim': 60}
    assert keeps_depth(dict(swinir, embed_dim=30), swinir) is True
    assert keeps_depth(dict(swinir, depths=[6, 6]), swinir) is False
    assert keeps_depth({'type': 'SRVGGNetCompact'}, restormer) is None  # another family: no depth to compare


def test_a_student_cut_in_width_only_gets_normalised_l_gk_and_skd_terms_are_the_papers(tmp_path, capsys):
    """At the learning rate tuned for the student trained alone, normalised L_GK won on the teacher's weights for a
    width cut, at both budgets (docs/kd_study.md, 5.7 and 5.8)."""
    option_file, weights = training_file(tmp_path, 'EDSR')
    student_file = write_options(tmp_path / 'student.yml', {'network_g': dict(TEACHERS['EDSR'][0], num_feat=8)})
    out = str(tmp_path / 'SKD.yml')
    assert distill_main(['-opt', option_file, '--teacher', weights, '--student', student_file, '--out', out]) == 0
    printed = capsys.readouterr().out
    assert 'keeps the teacher\'s depth and starts from its weights: the recommended terms add normalised L_GK, ' \
        'alpha2 warmed up over the first 10% of the steps' in printed
    opt = read(out)
    assert opt['distill']['init_from_teacher'] is True and opt['distill']['features']
    assert opt['train']['output_opt']['type'] == 'L1Loss'
    feature = opt['train']['feature_opt']
    assert (feature['feature_norm'], feature['level_reduction']) == ('teacher_rms', 'mean')
    assert 'contrast_opt' not in opt['train']
    # alpha2 warmed up over the first 10% of the training file's steps
    total_iter = read(option_file)['train']['total_iter']
    assert opt['train']['distill_schedule'] == {'warmup_iter': max(1, round(0.1 * total_iter))}
    out = str(tmp_path / 'SKD_terms.yml')
    assert distill_main(['-opt', option_file, '--teacher', weights, '--student', student_file, '--terms', 'skd',
                         '--out', out]) == 0
    opt = read(out)
    assert opt['train']['contrast_opt']['type'] == 'SKDContrastiveLoss'
    assert not {'feature_norm', 'level_reduction'} & set(opt['train']['feature_opt'])  # the paper's sum
    assert 'distill_schedule' not in opt['train']  # the paper's constant alphas


def test_a_student_of_another_family_distils_through_its_features(tmp_path, monkeypatch, capsys):
    option_file, weights = training_file(tmp_path, 'Restormer')
    student = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_conv': 4,
               'upscale': 1, 'act_type': 'prelu'}
    student_file = write_options(tmp_path / 'student.yml', {'network_g': student})
    # recommended: output-L1 from a random start (L_GK did not win for a CNN student in the study)
    out = str(tmp_path / 'SKD_recommended.yml')
    assert distill_main(['-opt', option_file, '--teacher', weights, '--student', student_file, '--out', out]) == 0
    assert 'leave out for a student that cannot start from the teacher\'s weights' in capsys.readouterr().out
    opt = read(out)
    # a random start that sees its input: the start the study measured for this CNN
    assert opt['distill'] == {'adapter': 'conv1x1', 'init_from_teacher': False, 'student_init': 'kaiming'}
    assert opt['train']['output_opt']['type'] == 'L1Loss' and 'feature_opt' not in opt['train']
    # --terms skd: through its features
    out = str(tmp_path / 'SKD.yml')
    assert distill_main(['-opt', option_file, '--teacher', weights, '--student', student_file, '--terms', 'skd',
                         '--out', out]) == 0
    opt = read(out)
    assert opt['network_g'] == student and opt['distill']['init_from_teacher'] is False
    assert opt['distill']['student_init'] == 'kaiming'
    assert opt['train']['feature_opt']['type'] == 'SKDFeatureLoss'
    assert_pairs_fit(opt)
    assert all(pair['student'].startswith('body.') for pair in opt['distill']['features'])
    status, log = train_here(out, tmp_path, monkeypatch)
    assert status == 0, log[-3000:]
    assert 'End of training' in log and 'l_gk:' in log


def test_same_family_pairs_are_stage_outputs_at_the_same_relative_depth():
    teacher = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 32, 'upscale': 2}
    student = dict(teacher, num_block=16)
    probe = torch.zeros(1, 3, 16, 16)
    pairs = pair_features(build_network(student), build_network(teacher), probe)
    # every 4th student block with every 8th teacher block (each ends the same fraction of the body), never the
    # upsampler
    expected = ((3, 7), (7, 15), (11, 23), (15, 31))
    assert pairs == [{'student': f'body.{s}', 'teacher': f'body.{t}'} for s, t in expected]


def test_a_cross_family_student_is_paired_by_its_features_never_by_its_output_head():
    # SRVGGNetCompact keeps its last convolution (3 channels: the image before the input is added back) inside
    # `body`, where it is the block at the relative position of the teacher's refinement
    student = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_conv': 4,
               'upscale': 1, 'act_type': 'prelu'}
    teacher = TEACHERS['Restormer'][0]
    pairs = pair_features(build_network(dict(student)), build_network(dict(teacher)), torch.zeros(1, 3, 16, 16))
    # body: conv 0, act 1, then (conv, act) x 4 at 2..9, the head at 10; encoder_level1.1, decoder_level1.1 and
    # refinement.1 are at 1/5, 3/5 and 5/5 of the teacher's six full-resolution blocks, so at 1.8, 5.4 and 9 of the
    # student's ten
    assert pairs == [{'student': 'body.2', 'teacher': 'encoder_level1.1'},
                     {'student': 'body.5', 'teacher': 'decoder_level1.1'},
                     {'student': 'body.9', 'teacher': 'refinement.1'}]


def candidate(count, **ratios):
    return student_search.Candidate({'type': 'X', 'width': count}, count, dict(ratios))


def test_the_choice_is_the_most_parameters_within_the_target_and_refusals_list_the_closest():
    found = [candidate(90, params=0.9), candidate(50, params=0.5), candidate(40, params=0.4)]
    assert student_search.choose(found, 'params', 0.5).params == 50
    with pytest.raises(Exception, match=r'no student of the search meets --params 0.3: the closest are 0.400x '
                                        r'\(40 parameters\); 0.500x \(50 parameters\); 0.900x'):
        student_search.choose(found, 'params', 0.3)


def test_latency_times_only_candidates_within_by_macs_in_order_and_stops_at_the_first_within(monkeypatch):
    teacher = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 4, 'upscale': 1}
    found = student_search.candidates(teacher)
    assert [c.params for c in found] == sorted((c.params for c in found), reverse=True)
    timed = []
    latencies = iter([0.8, 0.45, 0.1])  # the second timed is the first within 0.5

    def fake_timing(nets, x, repeats):
        timed.append(sum(p.numel() for p in nets[0].parameters()))
        return [next(latencies), 1.0]

    monkeypatch.setattr('skd_basicsr.platform.cost.alternating_latency_ms', fake_timing)
    student_search.measure(found, teacher, 'latency', (32, 32), 1, budget=0.5)
    within_by_macs = [c.params for c in found if c.ratios['macs'] <= 0.5]
    assert timed == within_by_macs[:2]
    assert all(c.ratios.get('latency') is None for c in found if c.params not in timed)
    assert student_search.choose(found, 'latency', 0.5).params == timed[1]


@pytest.mark.parametrize('case, message', [
    ('not_training', r'is not a BasicSR training file: it needs network_g, train and datasets.train'),
    ('distils', r'distils already \(model_type SKDModel, network_t\)'),
    ('no_search', r"no student search for RIDNet: the families with one are EDSR, RRDBNet, Restormer, SwinIR. Give "
                  r'the student yourself with --student FILE'),
    ('target', r'no student of the search meets --params 0.001: the closest are'),
    ('out_exists', r'--out .*SKD.yml exists; remove it or choose another name'),
    ('wrong_weights', r'--teacher .* does not fit network_g of the training file'),
])
def test_refusals_say_what_is_wrong_before_anything_is_written(case, message, tmp_path, capsys):
    option_file, weights = training_file(tmp_path, 'EDSR')
    opt = read(option_file)
    out = tmp_path / 'SKD.yml'
    args = ['--params', '0.5']
    if case == 'not_training':
        del opt['train']
    elif case == 'distils':
        opt.update(model_type='SKDModel', network_t=dict(opt['network_g']))
    elif case == 'no_search':
        opt['network_g'] = ridnet_options('x', 'gt', 'lq')['network_g']
        save_teacher(weights, opt['network_g'])
    elif case == 'target':
        args = ['--params', '0.001']
    elif case == 'out_exists':
        out.write_text('mine\n')
    elif case == 'wrong_weights':
        save_teacher(weights, dict(opt['network_g'], num_feat=8))
    option_file = write_options(tmp_path / 'train_case.yml', opt)
    assert distill_main(['-opt', option_file, '--teacher', weights, '--out', str(out), *args]) == 2
    assert 'basicsr distill: error:' in capsys.readouterr().err
    assert not out.exists() or out.read_text() == 'mine\n'
    with pytest.raises(Exception, match=message):
        from skd_basicsr.tools.distill import build_parser, run
        run(build_parser().parse_args(['-opt', option_file, '--teacher', weights, '--out', str(out), *args]))


def test_a_student_with_other_input_channels_is_refused(tmp_path, capsys):
    option_file, weights = training_file(tmp_path, 'EDSR')
    gray = {'type': 'SRVGGNetCompact', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8, 'num_conv': 2, 'upscale': 4}
    student_file = write_options(tmp_path / 'gray.yml', {'network_g': gray})
    out = tmp_path / 'SKD.yml'
    assert distill_main(['-opt', option_file, '--teacher', weights, '--student', student_file, '--out', str(out)]) == 2
    assert 'the student takes 1 input channels, the teacher 3.' in capsys.readouterr().err
    assert not out.exists()
