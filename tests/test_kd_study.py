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
    return {(v, s): {'psnr': p[s], 'variant': v, 'seed': s, 'iters': 600} for v, p in PSNR.items() for s in seeds}


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
    (runs / 'gkn_kd_init_s2.json').write_text(json.dumps({'psnr': 30.0, 'iters': 600}))  # no bases on seed 2

    import skd_basicsr.tools.demo as demo
    monkeypatch.setattr(demo, 'evaluate', lambda *a, **k: ({'coffee': {'psnr': 31.5, 'ssim': 0.9}}, {}))
    monkeypatch.setattr(demo, 'shrink_student', lambda out, teacher, student: osp.join(out, 'student_init.pth'))
    monkeypatch.setattr(demo, 'write_photos', lambda out: {'train': 'train', 'val': 'val'})
    monkeypatch.setattr(demo, 'held_out_pairs', lambda folders: {})
    monkeypatch.setattr(demo, 'noisy_psnr', lambda pairs: 20.5)
    # the runs carry no regime or learning rate: the width regime's at 1e-3, as runs made before regimes existed
    argv = ['--out', str(tmp_path / 'study'), '--seeds', '0', '1', '2', '--variants', *PSNR, '--lr', '1e-3',
            '--report', str(tmp_path / 'table.md'), '--no-train']
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


# ---------------------------------------------------------------------------------------------------------------
# regimes (issue 21)
# ---------------------------------------------------------------------------------------------------------------
def count(net):
    from basicsr.archs import build_network

    return sum(p.numel() for p in build_network(dict(net)).parameters())


def test_each_regimes_student_is_the_size_the_study_says():
    from benchmarks.study.regimes import REGIMES

    ratios = {name: count(r.pair.student) / count(r.pair.teacher) for name, r in REGIMES.items()}
    assert ratios['width'] == pytest.approx(0.402, abs=1e-3)
    assert ratios['depth'] == pytest.approx(0.372, abs=1e-3)
    assert ratios['cross_family'] == pytest.approx(0.385, abs=1e-3)
    depth = REGIMES['depth'].pair
    assert depth.student['dim'] == depth.teacher['dim']  # cut in depth only
    assert (depth.teacher['num_blocks'], depth.student['num_blocks']) == ([4, 6, 6, 8], [1, 1, 2, 2])


def test_the_cross_family_pairs_are_those_basicsr_distill_finds():
    import torch
    from basicsr.archs import build_network

    from benchmarks.study.regimes import REGIMES
    from skd_basicsr.distill.feature_pairs import pair_features

    pair = REGIMES['cross_family'].pair
    teacher = build_network(dict(pair.teacher))
    found = pair_features(build_network(dict(pair.student)), teacher, torch.zeros(1, 3, 32, 32))
    # a level's output is the output of its last block
    last = {f'{level}.{len(getattr(teacher, level)) - 1}': level for level in pair.student_layers}
    assert {last[p['teacher']]: p['student'] for p in found} == pair.student_layers


def test_a_cross_family_option_file_pairs_the_cnn_layers_in_windows_and_starts_at_random():
    from benchmarks.study.regimes import REGIMES
    from benchmarks.study.variants import VARIANTS
    from skd_basicsr.tools.demo import BUDGETS, student_options

    regime = REGIMES['cross_family']
    folders = {'train': 'train', 'val': 'val'}
    opt = student_options(VARIANTS['skdf_kd'], 'x', folders, dict(BUDGETS['full'], iter=600), 'teacher.pth', seed=1,
                          pair=regime.pair)
    assert opt['network_g'] == regime.pair.student and opt['network_t'] == regime.pair.teacher
    assert opt['distill']['features'] == [{'student': s, 'teacher': t, 'spatial_window': 8}
                                          for t, s in regime.pair.student_layers.items()]
    assert opt['train']['optim_g']['lr'] == regime.pair.lr
    assert opt['train']['scheduler']['eta_min'] == pytest.approx(regime.pair.lr / 100)
    assert opt['distill']['init_from_teacher'] is False and opt['manual_seed'] == 1


def test_a_regime_without_weight_selection_refuses_init_variants(tmp_path):
    with pytest.raises(SystemExit, match='regime cross_family has no weight selection from its teacher'):
        kd_study.main(['--regime', 'cross_family', '--out', str(tmp_path), '--variants', 'scratch', 'scratch_init'])


def test_a_folder_keeps_one_regime_learning_rate_and_budget(tmp_path):
    runs = tmp_path / 'runs'
    runs.mkdir()
    (runs / 'scratch_s0.json').write_text(json.dumps({'psnr': 29.0, 'iters': 600, 'regime': 'depth', 'lr': 1e-3}))
    args = kd_study.build_parser().parse_args(['--regime', 'depth', '--out', str(tmp_path)])
    from benchmarks.study.regimes import REGIMES

    args.iters, args.pair = 600, REGIMES['depth'].pair._replace(lr=1e-3)
    assert kd_study.finished_run(str(runs / 'scratch_s0.json'), args)['psnr'] == 29.0
    args.pair = args.pair._replace(lr=5e-4)
    with pytest.raises(SystemExit, match=r'is a run of regime depth at lr 0.001, 600 iterations, not of regime depth '
                                         r'at lr 0.0005'):
        kd_study.finished_run(str(runs / 'scratch_s0.json'), args)


def test_collect_sorts_studies_into_sweep_main_and_longer_and_recommends_the_best(tmp_path):
    from benchmarks.study.regimes import REGIMES

    regime = REGIMES['cross_family']
    psnr = {'scratch': [25.0, 25.2, 25.1], 'output_kd': [25.1, 25.3, 25.2], 'gkn_kd': [25.5, 25.6, 25.7],
            'clf_kd': [25.0, 25.4, 25.2]}

    def study(name, lr, iters, variants):
        results = {(v, s): {'psnr': psnr[v][s] + (iters > regime.iters) * 0.5} for v in variants for s in (0, 1, 2)}
        folder = tmp_path / name
        folder.mkdir()
        summary = {'rows': kd_study.paired_summary(results, variants, [0, 1, 2]), 'iters': iters, 'seeds': [0, 1, 2],
                   'lr': lr, 'regime': 'cross_family', 'teacher_psnr': 31.7, 'noisy_psnr': 20.5, 'command': 'c'}
        (folder / 'summary.json').write_text(json.dumps(summary))
        return str(folder)

    folders = [study('sweep', regime.pair.lr * 5, regime.iters, ['scratch']),
               study('main', regime.pair.lr, regime.iters, list(psnr)),
               study('longer', regime.pair.lr, 3 * regime.iters, ['scratch', 'gkn_kd']),
               study('earlier', regime.pair.lr / 2, regime.iters, ['scratch', 'output_kd'])]
    out = tmp_path / 'kd_study.json'
    assert kd_study.main(['--collect', *folders, '--json', str(out)]) == 0
    entry = json.loads(out.read_text())['cross_family']
    assert entry['params_ratio'] == pytest.approx(0.385, abs=1e-3)
    assert [p['lr'] for p in entry['sweep']] == [regime.pair.lr / 2, regime.pair.lr * 5]
    assert entry['sweep'][1]['mean'] == 25.1
    # a study at another learning rate is a sweep point and is kept whole; a scratch-only one is a point only
    assert [(o['lr'], set(o['rows'])) for o in entry['other']] == [(regime.pair.lr / 2, {'scratch', 'output_kd'})]
    # a sweep point at the regime's own rate and budget would be a second main study: refused, not overwritten
    folders.append(study('sweep_at_main', regime.pair.lr, regime.iters, ['scratch']))
    with pytest.raises(SystemExit, match=r'main and .*sweep_at_main are both the main study of regime cross_family'):
        kd_study.main(['--collect', *folders, '--json', str(out)])
    assert set(entry['main']['rows']) == set(psnr) and set(entry['longer']['rows']) == {'scratch', 'gkn_kd'}
    # gkn_kd - output_kd: +0.4 on every seed, a win; clf_kd - output_kd: -0.1, +0.1, 0, not one
    rec = entry['recommended']
    assert rec['variant'] == 'gkn_kd'
    assert [w['variant'] for w in rec['skd_terms_that_win']] == ['gkn_kd']
    assert rec['skd_terms_that_win'][0]['mean'] == pytest.approx(0.4)
    assert rec['iters'] == regime.iters  # the longer check ran no output-KD beside gkn_kd: it cannot judge it


def test_a_longer_check_that_ran_output_kd_beside_an_skd_variant_has_the_last_word(tmp_path):
    from benchmarks.study.regimes import REGIMES

    regime = REGIMES['depth']
    # the depth regime's pattern: within the spread at 600 iterations, a win at 1800
    main = {'scratch': [30.1, 30.2, 30.2], 'scratch_init': [31.2, 31.1, 31.2], 'output_kd_init': [31.27, 31.16, 31.26],
            'gkn_kd_init': [31.29, 31.29, 31.35]}
    longer = {'output_kd_init': [31.50, 31.44, 31.52], 'gkn_kd_init': [31.54, 31.49, 31.61]}
    folders = []
    for name, psnr, iters in (('main', main, regime.iters), ('longer', longer, 3 * regime.iters)):
        results = {(v, s): {'psnr': p[s]} for v, p in psnr.items() for s in (0, 1, 2)}
        (tmp_path / name).mkdir()
        summary = {'rows': kd_study.paired_summary(results, list(psnr), [0, 1, 2]), 'iters': iters,
                   'seeds': [0, 1, 2], 'lr': regime.pair.lr, 'regime': 'depth', 'teacher_psnr': 31.4,
                   'noisy_psnr': 20.5, 'command': 'c'}
        (tmp_path / name / 'summary.json').write_text(json.dumps(summary))
        folders.append(str(tmp_path / name))
    out = tmp_path / 'kd_study.json'
    assert kd_study.main(['--collect', *folders, '--json', str(out)]) == 0
    rec = json.loads(out.read_text())['depth']['recommended']
    assert (rec['variant'], rec['iters']) == ('gkn_kd_init', 3 * regime.iters)
    assert rec['skd_terms_that_win'][0]['mean'] == pytest.approx(0.06)
    assert kd_study.main(['--collect', folders[0], '--json', str(out)]) == 0  # the main study alone: no win
    rec = json.loads(out.read_text())['depth']['recommended']
    assert (rec['variant'], rec['iters']) == ('output_kd_init', regime.iters)


def test_an_skd_variant_that_leads_within_its_spread_is_not_recommended():
    from benchmarks.study.variants import VARIANTS

    # the depth regime's pattern: gkn_kd_init leads output_kd_init by +0.02, +0.13, +0.09 (mean 0.08 < 2 std 0.11)
    psnr = {'scratch_init': [31.24, 31.14, 31.23], 'output_kd_init': [31.27, 31.16, 31.26],
            'gkn_kd_init': [31.29, 31.29, 31.35], 'clf_kd_init': [30.0, 30.1, 30.2]}
    results = {(v, s): {'psnr': p[s]} for v, p in psnr.items() for s in (0, 1, 2)}
    rows = kd_study.paired_summary(results, list(psnr), [0, 1, 2])
    rec = kd_study.recommend(rows, VARIANTS)
    assert rec['variant'] == 'output_kd_init' and rec['skd_terms_that_win'] == []
    assert rec['best_mean']['variant'] == 'gkn_kd_init'
    # the same lead on every seed by the same margin is a win, and then the SKD variant is the recommendation
    psnr['gkn_kd_init'] = [p + 0.08 for p in psnr['output_kd_init']]
    results = {(v, s): {'psnr': p[s]} for v, p in psnr.items() for s in (0, 1, 2)}
    rec = kd_study.recommend(kd_study.paired_summary(results, list(psnr), [0, 1, 2]), VARIANTS)
    assert rec['variant'] == 'gkn_kd_init' and [w['variant'] for w in rec['skd_terms_that_win']] == ['gkn_kd_init']


def longer_from(folder, psnr, regime):
    """The arguments ``--longer-from`` sets for a 600-iteration study of ``regime`` with these per-seed PSNRs."""
    results = {(v, s): {'psnr': p[s]} for v, p in psnr.items() for s in (0, 1, 2)}
    summary = {'rows': kd_study.paired_summary(results, list(psnr), [0, 1, 2]), 'iters': 600, 'seeds': [0, 1, 2],
               'regime': regime, 'lr': 5e-4}
    (folder / 'summary.json').write_text(json.dumps(summary))
    args = kd_study.build_parser().parse_args(['--longer-from', str(folder)])
    kd_study.longer_budget(args)
    return args


def test_the_longer_budget_takes_the_two_best_and_scratch_at_three_times_the_iterations(tmp_path):
    psnr = {'scratch': [29.0, 29.5, 29.2], 'scratch_init': [30.0, 30.6, 30.1], 'output_kd_init': [30.1, 30.7, 30.3],
            'gkn_kd_init': [29.9, 30.5, 30.0]}
    args = longer_from(tmp_path, psnr, 'depth')
    # means: output_kd_init 30.37, scratch_init 30.23, gkn_kd_init 30.13, scratch 29.23
    assert args.variants == ['scratch', 'output_kd_init', 'scratch_init']
    assert (args.regime, args.lr, args.iters, args.seeds) == ('depth', 5e-4, 1800, [0, 1, 2])


def test_the_longer_budget_runs_output_kd_beside_an_skd_variant_among_the_two_best(tmp_path):
    # the cross-family pattern: the two best are SKD variants; without output-KD the check could not judge them
    psnr = {'scratch': [29.61, 29.82, 29.68], 'output_kd': [29.69, 29.89, 29.54], 'gkn_kd': [29.67, 29.97, 29.71],
            'gkn_kd_warmup': [29.68, 29.92, 29.70], 'clf_kd': [24.3, 19.3, 22.8]}
    args = longer_from(tmp_path, psnr, 'cross_family')
    assert args.variants == ['scratch', 'gkn_kd', 'gkn_kd_warmup', 'output_kd']
