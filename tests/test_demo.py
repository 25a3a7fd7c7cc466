"""``basicsr demo --quick``: the main job's whole path on real photos, in under a few minutes."""
import json
import math
from os import path as osp
from pathlib import Path

import cv2
import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.archs import build_network

from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


def test_quick_demo_writes_results_table_and_figure(tmp_path):
    from skd_basicsr.tools.demo import DEMO_VARIANTS, STUDENTS, TEACHER_WEIGHTS

    proc = run_cli(['demo', '--quick', '--out', 'out'], cwd=tmp_path, env={'OMP_NUM_THREADS': '2'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'[demo] stage 1/6: teacher 16-channel Restormer, shipped weights {TEACHER_WEIGHTS}' in proc.stdout
    assert '[demo] stage 5/6: recommended student (gkn_kd_init), 10 iterations at lr 0.004' in proc.stdout
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
    best (docs/kd_study.json), written as a product option file: SKDFeatureLoss, not the study's class."""
    from benchmarks.study.regimes import REGIMES
    from skd_basicsr.tools.demo import DEMO_PAIR, DEMO_VARIANTS, STUDENT, STUDENTS, student_options

    width = json.loads((REPO / 'docs' / 'kd_study.json').read_text())['width']
    assert STUDENTS['skd'] == width['recommended']['variant'] == 'gkn_kd_init'
    assert DEMO_PAIR.lr == width['lr'] == REGIMES['width'].pair.lr
    assert width['student'] == STUDENT == DEMO_PAIR.student
    folders = {'train': 'train', 'val': 'val'}
    opt = student_options(DEMO_VARIANTS['gkn_kd_init'], 'skd', folders, {'iter': 600, 'gt_size': 48, 'batch': 4},
                          'teacher.pth')
    assert opt['train']['optim_g']['lr'] == 4e-3 and opt['train']['scheduler']['eta_min'] == pytest.approx(4e-5)
    assert opt['train']['output_opt'] == {'type': 'L1Loss', 'loss_weight': 1.0}
    feature = opt['train']['feature_opt']
    assert feature['type'] == 'SKDFeatureLoss' and feature['loss_weight'] == 0.1
    assert (feature['feature_norm'], feature['level_reduction']) == ('teacher_rms', 'mean')
    assert opt['distill']['init_from_teacher'] is True
    assert len(opt['distill']['features']) == 8
    assert [f.get('spatial_window') for f in opt['distill']['features']] == [8, None, None, None, None, None, 8, 8]
