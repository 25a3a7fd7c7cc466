"""``basicsr demo --quick``: the main job's whole path on real photos, in under a few minutes."""
import json
import math
from os import path as osp

import cv2
import torch

import skd_basicsr  # noqa: F401
from basicsr.archs import build_network

from helpers import run_cli


def test_quick_demo_writes_results_table_and_figure(tmp_path):
    from skd_basicsr.tools.demo import DEMO_VARIANTS, STUDENTS, TEACHER_WEIGHTS

    proc = run_cli(['demo', '--quick', '--out', 'out'], cwd=tmp_path, env={'OMP_NUM_THREADS': '2'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'[demo] stage 1/6: teacher 16-channel Restormer, shipped weights {TEACHER_WEIGHTS}' in proc.stdout
    assert '[demo] stage 5/6: recommended student (output_kd_init)' in proc.stdout
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
    table = (out / 'results.md').read_text()
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
