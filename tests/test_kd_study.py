"""benchmarks/kd_study.py: the paired statistics, the report, and a study continued from finished runs."""
import json
import statistics
import sys
from os import path as osp

import pytest

from benchmarks import kd_study

PSNR = {  # variant -> PSNR per seed 0, 1, 2
    'scratch': [29.0, 29.5, 29.2],
    'scratch_init': [30.0, 30.6, 30.1],
    'output_kd_init': [30.1, 30.7, 30.3],
    'gkn_kd_init': [29.9, 30.8, 30.0],
}


def fake_results(seeds=(0, 1, 2)):
    return {(v, s): {'psnr': p[s], 'variant': v, 'seed': s} for v, p in PSNR.items() for s in seeds}


def test_paired_differences_are_per_seed_and_against_every_base_that_ran():
    rows = kd_study.paired_summary(fake_results(), list(PSNR), [0, 1, 2])
    row = rows['gkn_kd_init']
    assert row['mean'] == pytest.approx(statistics.mean(PSNR['gkn_kd_init']))
    for base in ('scratch', 'scratch_init', 'output_kd_init'):
        diff = [a - b for a, b in zip(PSNR['gkn_kd_init'], PSNR[base])]
        assert row['vs'][base]['diff'] == pytest.approx(diff)
        assert row['vs'][base]['mean'] == pytest.approx(statistics.mean(diff))
        assert row['vs'][base]['std'] == pytest.approx(statistics.stdev(diff))
    assert 'scratch' not in rows['scratch']['vs']  # no difference to itself
    # a base that did not run on every seed gives no column
    partial = {k: v for k, v in fake_results().items() if k != ('scratch_init', 2)}
    rows = kd_study.paired_summary(partial, ['scratch', 'gkn_kd_init'], [0, 1, 2])
    assert set(rows['gkn_kd_init']['vs']) == {'scratch', 'output_kd_init'}


def test_a_margin_counts_only_above_twice_its_spread():
    rows = kd_study.paired_summary(fake_results(), list(PSNR), [0, 1, 2])
    # output_kd_init - scratch_init: +0.1, +0.1, +0.2 -> mean 0.133, std 0.058: a win
    assert kd_study._paired_cell(rows['output_kd_init'], 'scratch_init') == '+0.13 ± 0.06 (yes)'
    # gkn_kd_init - scratch_init: -0.1, +0.2, -0.1 -> mean 0, std 0.17: no win
    assert kd_study._paired_cell(rows['gkn_kd_init'], 'scratch_init').endswith('(no)')
    assert kd_study._paired_cell(rows['scratch'], 'scratch') == ''


def test_no_train_reports_the_finished_runs_with_the_training_command(tmp_path, monkeypatch, capsys):
    runs = tmp_path / 'study' / 'runs'
    runs.mkdir(parents=True)
    for (variant, seed), result in fake_results(seeds=(0, 1)).items():  # seed 2 never finished
        (runs / f'{variant}_s{seed}.json').write_text(json.dumps(result))
    (runs / 'gkn_kd_init_s2.json').write_text(json.dumps({'psnr': 30.0}))  # a variant's seed without its bases

    import skd_basicsr.tools.demo as demo
    monkeypatch.setattr(demo, 'evaluate', lambda *a, **k: ({'coffee': {'psnr': 31.5, 'ssim': 0.9}}, {}))
    monkeypatch.setattr(demo, 'shrink_student', lambda out, teacher: osp.join(out, 'student_init.pth'))
    monkeypatch.setattr(demo, 'write_photos', lambda out: {'train': 'train', 'val': 'val'})
    monkeypatch.setattr(demo, 'held_out_pairs', lambda folders: {})
    monkeypatch.setattr(demo, 'noisy_psnr', lambda pairs: 20.5)
    argv = ['--out', str(tmp_path / 'study'), '--seeds', '0', '1', '2', '--variants', *PSNR, '--report',
            str(tmp_path / 'table.md'), '--no-train']
    monkeypatch.setattr(sys, 'argv', ['kd_study.py'] + argv)
    assert kd_study.main(argv) == 0
    table = (tmp_path / 'table.md').read_text()
    assert '| variant | seed 0 | seed 1 | mean | vs scratch | vs scratch_init | vs output_kd_init |' in table
    assert '| scratch | 29.00 | 29.50 | 29.25 |' in table
    assert 'seed 2' not in table
    command = [line for line in table.splitlines() if line.startswith('Command:')][0]
    assert '--no-train' not in command and '--report' not in command and '--variants scratch' in command
    summary = json.loads((tmp_path / 'study' / 'summary.json').read_text())
    assert summary['seeds'] == [0, 1] and summary['teacher_psnr'] == 31.5


def test_no_train_without_finished_runs_says_so(tmp_path, monkeypatch):
    import skd_basicsr.tools.demo as demo
    monkeypatch.setattr(demo, 'write_photos', lambda out: {'train': 'train', 'val': 'val'})
    with pytest.raises(SystemExit, match='--no-train: no complete seeds'):
        kd_study.main(['--out', str(tmp_path / 'study'), '--variants', 'scratch', '--no-train'])


def test_unknown_variant_is_refused_with_the_way_to_list_them(tmp_path):
    with pytest.raises(SystemExit, match=r"--variants: unknown \['gkn_kdd'\]; --list prints the variants"):
        kd_study.main(['--out', str(tmp_path), '--variants', 'scratch', 'gkn_kdd'])
