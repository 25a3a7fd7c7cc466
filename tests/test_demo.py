"""``basicsr demo --quick``: the main job's whole path on real photos, in under a few minutes."""
import json
import math

import cv2
import torch

import skd_basicsr  # noqa: F401
from basicsr.archs import build_network

from helpers import run_cli


def test_quick_demo_writes_results_table_and_figure(tmp_path):
    proc = run_cli(['demo', '--quick', '--out', 'out'], cwd=tmp_path, env={'OMP_NUM_THREADS': '2'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '[demo] stage 4/5: SKD student' in proc.stdout
    out = tmp_path / 'out'
    results = json.loads((out / 'results.json').read_text())
    for key in ('teacher', 'scratch', 'output_kd', 'skd'):
        entry = results[key]
        assert math.isfinite(entry['psnr']) and 0 < entry['ssim'] <= 1
        assert set(entry['per_image']) == {'coffee', 'chelsea'}
        net = build_network(dict(entry['network']))
        net.load_state_dict(torch.load(out / entry['weights'], weights_only=True)['params'], strict=True)
        assert entry['params'] == sum(p.numel() for p in net.parameters())
    assert results['scratch']['params'] < results['teacher']['params'] / 4
    assert results['scratch']['network'] == results['skd']['network'] == results['output_kd']['network']
    table = (out / 'results.md').read_text()
    assert '| SKD |' in table and '| teacher |' in table and 'noisy input' in table
    for name in ('demo_teacher', 'demo_student_scratch', 'demo_student_output_kd', 'demo_student_skd'):
        logs = list((out / 'experiments' / name).glob('train_*.log'))  # each stage keeps its own training log
        assert len(logs) == 1, name
        text = logs[0].read_text()
        assert f'name: {name}' in text and 'End of training' in text
        assert ('l_gk' in text) == (name == 'demo_student_skd')
    figure = cv2.imread(str(out / 'comparison.png'))
    assert figure.shape[1] == 6 * (2 * 128 + 4)  # six labelled crops side by side
