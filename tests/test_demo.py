"""``basicsr demo --quick``: the main job's whole path on real photos, in under a few minutes."""
import json
import math
from os import path as osp
from pathlib import Path

import cv2
import pytest
import torch
import yaml

import skd_basicsr  # noqa: F401
from basicsr.archs import build_network

from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


def test_quick_demo_writes_results_table_and_figure(tmp_path):
    from skd_basicsr.tools.demo import DEMO_VARIANTS, STUDENTS, TEACHER_WEIGHTS

    proc = run_cli(['demo', '--quick', '--out', 'out'], cwd=tmp_path, env={'OMP_NUM_THREADS': '2'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'[demo] stage 1/6: teacher 16-channel Restormer, shipped weights {TEACHER_WEIGHTS}' in proc.stdout
    assert '[demo] stage 5/6: recommended student (gkn_kd_warmup_init), 10 iterations at lr 0.004' in proc.stdout
    out = tmp_path / 'out'
    results = json.loads((out / 'results.json').read_text())
    assert set(STUDENTS) == {'scratch', 'scratch_init', 'output_kd', 'skd', 'skd_paper'}
    for key in ('teacher', ) + tuple(STUDENTS):
        entry = results[key]
        assert math.isfinite(entry['psnr']) and 0 < entry['ssim'] <= 1
        assert set(entry['per_image']) == {'coffee', 'chelsea'}
        net = build_network(dict(entry['network']))
        net.load_state_dict(torch.load(out / entry['weights'], weights_only=True)['params'], strict=True)
        assert entry['params'] == sum(p.numel() for p in net.parameters())
    # the shipped teacher is loaded, not trained: the quick run scores the same teacher every time
    assert results['teacher']['weights'] == osp.relpath(TEACHER_WEIGHTS, out)
    assert results['teacher']['psnr'] > 31
    ratio = results['scratch']['params'] / results['teacher']['params']
    assert 0.35 <= ratio <= 0.42
    assert all(results[key]['network'] == results['scratch']['network'] for key in STUDENTS)
    assert results['run']['lr'] == 4e-3
    table = (out / 'results.md').read_text()
    assert 'from the same seed at lr 0.004 (AdamW, cosine to 1/100)' in table
    for row in ('| recommended |', '| SKD (paper) |', '| scratch, init |', '| noisy input |'):
        assert row in table
    for key, variant in STUDENTS.items():
        name = f'demo_student_{key}'
        logs = list((out / 'experiments' / name).glob('train_*.log'))  # each stage keeps its own training log
        assert len(logs) == 1, name
        text = logs[0].read_text()
        assert f'name: {name}' in text and 'End of training' in text
        assert ('l_gk' in text) == ('feature_opt' in DEMO_VARIANTS[variant].train), name
        assert ('initialised from network_t by weight selection' in text) == (
            DEMO_VARIANTS[variant].init and DEMO_VARIANTS[variant].skd), name
    figure = cv2.imread(str(out / 'comparison.png'))
    assert figure.shape[1] == 8 * (2 * 128 + 4)  # eight labelled crops side by side


def test_demo_trains_the_width_regimes_recommendation():
    """The demo's student is the study's width regime, and its `skd` row and learning rate are that regime's measured
    best (docs/kd_study.json), written as a product option file: SKDModel's warm-up and SKDFeatureLoss, not the
    study's classes."""
    from benchmarks.study.regimes import REGIMES
    from skd_basicsr.tools.demo import DEMO_PAIR, DEMO_VARIANTS, STUDENT, STUDENTS, student_options

    width = json.loads((REPO / 'docs' / 'kd_study.json').read_text())['width']
    assert STUDENTS['skd'] == width['recommended']['variant'] == 'gkn_kd_warmup_init'
    assert DEMO_PAIR.lr == width['lr'] == REGIMES['width'].pair.lr
    assert width['student'] == STUDENT == DEMO_PAIR.student
    folders = {'train': 'train', 'val': 'val'}
    budget = {'iter': 600, 'gt_size': 48, 'batch': 4}
    opt = student_options(DEMO_VARIANTS['gkn_kd_warmup_init'], 'skd', folders, budget, 'teacher.pth')
    assert opt['model_type'] == 'SKDModel' and opt['train']['distill_schedule'] == {'warmup_iter': 60}
    assert opt['train']['optim_g']['lr'] == 4e-3 and opt['train']['scheduler']['eta_min'] == pytest.approx(4e-5)
    assert opt['train']['output_opt'] == {'type': 'L1Loss', 'loss_weight': 1.0}
    feature = opt['train']['feature_opt']
    assert feature['type'] == 'SKDFeatureLoss' and feature['loss_weight'] == 0.1
    assert (feature['feature_norm'], feature['level_reduction']) == ('teacher_rms', 'mean')
    assert opt['distill']['init_from_teacher'] is True
    assert len(opt['distill']['features']) == 8
    assert [f.get('spatial_window') for f in opt['distill']['features']] == [8, None, None, None, None, None, 8, 8]


def test_cross_family_demo_starts_every_student_from_one_kaiming_start(tmp_path):
    """`basicsr demo --regime cross_family`: the study's cross-family student (BasicSR's own SRVGGNetCompact, not the
    study's class), its rate and its recommendation (docs/kd_study.json), every student from the same saved
    Kaiming start, and L_GK on the layers `basicsr distill` pairs."""
    from benchmarks.study.regimes import CNN_LAYERS as STUDY_LAYERS
    from benchmarks.study.regimes import REGIMES
    from skd_basicsr.distill.feature_pairs import pair_features
    from skd_basicsr.tools.demo import DEMO_REGIMES, DEMO_VARIANTS

    regime = DEMO_REGIMES['cross_family']
    cross = json.loads((REPO / 'docs' / 'kd_study.json').read_text())['cross_family']
    assert regime.students['skd'] == cross['recommended']['variant'] == 'output_kd'
    assert regime.pair.lr == cross['lr'] == REGIMES['cross_family'].pair.lr
    assert dict(regime.pair.student, type='StudySRVGGNetCompact') == cross['student']
    assert regime.pair.student_layers == STUDY_LAYERS
    student, teacher = build_network(dict(regime.pair.student)), build_network(dict(regime.pair.teacher))
    found = pair_features(student, teacher, torch.zeros(1, 3, 32, 32))
    # a teacher level's output is that of its last block
    last = {f'{level}.{len(getattr(teacher, level)) - 1}': level for level in regime.pair.student_layers}
    assert {last[p['teacher']]: p['student'] for p in found} == regime.pair.student_layers

    proc = run_cli(['demo', '--regime', 'cross_family', '--quick', '--out', 'out'], cwd=tmp_path,
                   env={'OMP_NUM_THREADS': '2'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '[demo] stage 3/5: recommended student (output_kd), 10 iterations at lr 0.0005' in proc.stdout
    out = tmp_path / 'out'
    results = json.loads((out / 'results.json').read_text())
    assert results['run']['regime'] == 'cross_family' and results['run']['start'] == 'kaiming'
    start = torch.load(out / 'student_start.pth', weights_only=True)['params']
    # distill.student_init: kaiming: the last convolution scaled by 0.1 against the one before it
    assert start['body.26.weight'].std() < 0.2 * start['body.24.weight'].std()
    for key, variant in regime.students.items():
        opt = yaml.safe_load((out / 'options' / f'demo_cross_family_student_{key}.yml').read_text())
        assert opt['path']['pretrain_network_g'] == str(out / 'student_start.pth'), key
        assert not (opt.get('distill') or {}).get('init_from_teacher'), key
        trained = torch.load(out / results[key]['weights'], weights_only=True)['params']
        assert not torch.equal(trained['body.0.weight'], start['body.0.weight']), key  # trained from the start
        assert results[key]['network'] == regime.pair.student and results[key]['variant'] == variant
        log = next((out / 'experiments' / f'demo_cross_family_student_{key}').glob('train_*.log')).read_text()
        assert ('l_gk' in log) == ('feature_opt' in DEMO_VARIANTS[variant].train), key
    assert [p['student'] for p in opt['distill']['features']] == ['body.6', 'body.19', 'body.25']  # skd_paper
    table = (out / 'results.md').read_text()
    for row in ('| recommended |', '| L_GK + output-KD |', '| SKD (paper) |'):
        assert row in table
    assert 'every student from the same Kaiming-initialised weights' in table
