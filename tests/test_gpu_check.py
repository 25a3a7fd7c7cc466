"""benchmarks/gpu_check.py runs on the CPU at toy sizes (``--device cpu --smoke``) and reports every section."""
import math
import os
import re
import subprocess
import sys
from os import path as osp
from pathlib import Path

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

from benchmarks import bench_skd, gpu_check

SECTIONS = ('mca', 'iteration', 'latency', 'bf16', 'amp_iteration', 'amp_training', 'amp_latency')
NUMBER = re.compile(r'(?<![\w.])[-+]?(?:\d[\d,]*\.?\d*(?:e[-+]?\d+)?|nan|inf)(?![\w.])', re.IGNORECASE)


def table_numbers(text):
    """Every number in the report's table rows, as floats (nan and inf included)."""
    numbers = []
    for line in text.splitlines():
        if line.startswith('|') and not line.startswith('| ---'):
            numbers += [float(m.replace(',', '')) for m in NUMBER.findall(line)]
    return numbers


def report_section(text, key):
    """The report's section ``key``, from its heading to the next."""
    return next(part for part in text.split('\n### ') if re.match(rf'.* \({key}, \d+\.\d s\)\n', part))


def test_gpu_check_smoke_on_cpu(tmp_path):
    out = tmp_path / 'RESULTS_gpu.md'
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, env.get('PYTHONPATH')]))
    proc = subprocess.run(
        [sys.executable,
         osp.join(REPO, 'benchmarks', 'gpu_check.py'), '--device', 'cpu', '--smoke', '--out',
         str(out)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = out.read_text()
    assert 'Every section ran and every check passed.' in text
    for section in SECTIONS:  # a heading each, with the section's elapsed time
        assert re.search(rf'^### .* \({section}, \d+\.\d s\)$', text, re.MULTILINE), f'{section} missing:\n{text}'
    assert 'FAILED' not in text and ' NO |' not in text
    numbers = table_numbers(text)
    assert len(numbers) > 50
    assert all(math.isfinite(x) for x in numbers), [x for x in numbers if not math.isfinite(x)]
    # every form in both float32 and bf16, each within tolerance
    for form in ('global', 'chunked', 'window8', 'pooled16', 'channel'):
        for dtype in ('float32', 'bfloat16'):
            assert re.search(rf'^\| {form} \| {dtype} \|.*\| yes \|$', text, re.MULTILINE), (form, dtype)
    for case in ('student', 'floor', 'skd_no_spatial', 'skd_exact', 'skd_window'):
        assert re.search(rf'^\| {case} \|', text, re.MULTILINE), case
    assert 'Every logged loss finite at all 3 iterations' in text
    # issue 20: each precision case against both floors with its memory (n/a on the CPU), the targets marked, the
    # training run's PSNR difference reported, the student's latency in both precisions at both sizes
    amp = report_section(text, 'amp_iteration')
    for case in gpu_check.AMP_CASES:
        assert re.search(rf'^\| {case} \| amp: .*\| n/a \| n/a \|$', amp, re.MULTILINE), case
    for name, *_, limit in gpu_check.TARGETS:
        assert re.search(rf'^- {re.escape(name)} = \d+\.\d+, target at most {limit}: (met|MISSED)\.$', amp,
                         re.MULTILINE), name
    training = report_section(text, 'amp_training')
    assert re.search(r'^\| false \| \d+\.\d+ \|.*\n\| bf16 \| \d+\.\d+ \|', training, re.MULTILINE)
    assert re.search(r'^bf16 - fp32 = [-+]\d\.\d{3} dB: (within|OUTSIDE) the tolerance of 0.05 dB \(smoke run',
                     training, re.MULTILINE)
    latency = report_section(text, 'amp_latency')
    for size in gpu_check.SMOKE['sizes']:
        assert re.search(rf'^\| {size}\^2 \| \d+\.\d+ \| \d+\.\d+ \| \d+\.\d+ \|$', latency, re.MULTILINE)


def test_windowed_and_exact_options_replace_the_shipped_spatial_forms():
    opt = {
        'train': {
            'feature_opt': {
                'spatial_tokens': 64
            }
        },
        'distill': {
            'features': ['latent', {
                'student': 'a',
                'teacher': 'b',
                'spatial_window': 4
            }]
        }
    }
    assert bench_skd.ships_spatial_forms(opt)
    windowed = bench_skd.with_windows(opt, [8, None])
    assert windowed['train']['feature_opt'] == {}
    assert windowed['distill']['features'] == [{
        'student': 'latent',
        'teacher': 'latent',
        'spatial_window': 8
    }, {
        'student': 'a',
        'teacher': 'b'
    }]
    assert not bench_skd.ships_spatial_forms(bench_skd.with_windows(opt, [None, None]))
    assert opt['distill']['features'][1]['spatial_window'] == 4  # the option file's own stay as they were


def test_bench_skd_times_l_gk_and_l_cl_where_the_file_leaves_them_commented(tmp_path):
    """The shipped files comment L_GK and L_CL out: the benchmark restores both blocks, so `skd_no_cl` times L_GK and
    `skd` no longer coincides with it."""
    from skd_basicsr.tools.distill import NORMALISED_FEATURE_LOSS

    opt = bench_skd.read_options(osp.join(REPO, 'options', 'SKD_SRx4_EDSR.yml'), str(tmp_path))
    cases = bench_skd.case_options(opt)
    assert cases['skd']['train']['contrast_opt'] == {
        'type': 'SKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher', 'positive': 'teacher',
        'layer_weights': {'conv_first': 1.0, 'body.0': 1.0}}
    assert 'contrast_opt' not in cases['skd_no_cl']['train'] and 'contrast_opt' not in cases['student']['train']
    assert cases['skd']['train']['feature_opt'] == cases['skd_no_cl']['train']['feature_opt'] == \
        NORMALISED_FEATURE_LOSS
    assert 'feature_opt' not in cases['student']['train']
    plain = tmp_path / 'plain.yml'
    plain.write_text(Path(REPO, 'options', 'SKD_SRx4_EDSR.yml').read_text().replace('  # contrast_opt:', '  #'))
    with pytest.raises(ValueError, match='plain.yml: no train.contrast_opt, commented or not; bench_skd times it'):
        bench_skd.read_options(str(plain), str(tmp_path))
    trained = bench_skd.read_options(str(plain), str(tmp_path), restore_terms=False)  # training runs: as written
    assert 'contrast_opt' not in trained['train'] and 'feature_opt' not in trained['train']


def test_a_failing_section_leaves_the_others_and_exit_status_1(tmp_path):
    out = tmp_path / 'RESULTS_gpu.md'
    code = gpu_check.main(['--device', 'cpu', '--smoke', '--opt', str(tmp_path / 'missing.yml'), '--out', str(out)])
    text = out.read_text()
    assert code == 1
    assert 'FAILED sections: iteration, latency, bf16, amp_iteration, amp_latency.' in text
    assert re.search(r'^\| global \| float32 \|.*\| yes \|$', text, re.MULTILINE)  # mca needs no option file
    assert 'bf16 - fp32 = ' in report_section(text, 'amp_training')  # nor does the training run on the demo's photos


def test_the_cost_benchmark_keeps_the_sections_already_in_its_report():
    """bench_skd.py writes its run at the top of RESULTS.md and keeps the earlier runs and the soak below it."""
    kept = bench_skd.kept_sections('## SKD iteration and inference benchmark, 2026-11-26\n\n| a |\n\n## Soak: exact '
                                   'resume after 10 SIGKILLs\n\n- bit-identical\n')
    assert kept.startswith('\n## SKD iteration and inference benchmark, 2026-11-26') and '## Soak' in kept
    assert bench_skd.kept_sections('') == '' and bench_skd.kept_sections('no section') == ''
