"""The figures of README.md and of the option headers come from committed result files.

README tables carry a marker on the line above them, ``<!-- figures: FILE [FILE ...] -->``: every decimal number
of the table (and every number written with thousands separators) must be one of the numbers in those files, as
written there or rounded to the digits the table shows. The option headers' cost and study claims are checked the
same way against benchmarks/RESULTS*.md and docs/kd_study.md. A figure that no committed run wrote fails here.
"""
import decimal
import glob
import re
from os import path as osp

import pytest
import yaml

import skd_basicsr  # noqa: F401  (compat and registries, before basicsr is imported)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MARKER = re.compile(r'^<!-- figures: (.+?) -->$')
# a decimal number, or an integer with thousands separators; signs are dropped (a table's +1.19 is its source's +1.19)
NUMBER = re.compile(r'(?<![\d.,])(\d{1,3}(?:,\d{3})+|\d+\.\d+)(?!\d|[.,]\d)')
SKD_FILES = sorted(glob.glob(osp.join(REPO, 'options', 'SKD_*.yml')))
RESTORMER_FILES = [f for f in SKD_FILES if 'SRx4' not in f]


def read(path):
    with open(osp.join(REPO, path), encoding='utf-8') as f:
        return f.read()


def numbers(text):
    return set(NUMBER.findall(text))


def written_by(figure, sources):
    """Whether ``figure`` is one of ``sources`` (numbers as strings), as written or rounded half up to its digits."""
    if ',' in figure:
        return figure in sources
    digits = decimal.Decimal(figure).as_tuple().exponent
    for source in sources:
        if ',' in source or decimal.Decimal(source).as_tuple().exponent > digits:
            continue  # a source with fewer digits cannot be the origin of this one
        if decimal.Decimal(source).quantize(decimal.Decimal(1).scaleb(digits), decimal.ROUND_HALF_UP) == \
                decimal.Decimal(figure):
            return True
    return False


def marked_tables(text):
    """(line number, sources, table lines) of every marked table."""
    lines = text.splitlines()
    tables = []
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if match:
            table = []
            for row in lines[i + 1:]:
                if not row.strip():
                    break
                table.append(row)
            tables.append((i + 1, match.group(1).split(), table))
    return tables


README_TABLES = marked_tables(read('README.md'))


def test_the_readme_marks_its_tables_of_measured_figures():
    sources = {source for _, files, _ in README_TABLES for source in files}
    assert {'docs/demo/results.md', 'docs/kd_study.md', 'benchmarks/RESULTS.md'} <= sources
    assert all(table and table[0].startswith('|') for _, _, table in README_TABLES)


@pytest.mark.parametrize('line, files, table', README_TABLES, ids=[f'README.md:{t[0]}' for t in README_TABLES])
def test_every_figure_of_a_marked_readme_table_is_in_its_sources(line, files, table):
    sources = set().union(*(numbers(read(f)) for f in files))
    figures = numbers('\n'.join(table))
    assert figures, f'README.md:{line}: a marked table without figures'
    missing = sorted(f for f in figures if not written_by(f, sources))
    assert not missing, f'README.md:{line}: {missing} are in no file of {files}'


def test_the_figure_check_refuses_what_no_run_wrote():
    assert written_by('1.86', {'1.855'}) and written_by('0.41', {'0.413'}) and written_by('467,563', {'467,563'})
    assert not written_by('1.87', {'1.855'}) and not written_by('1.855', {'1.86'})
    assert not written_by('467,564', {'467,563'})


def header(path):
    """The leading comment block of an option file."""
    lines = []
    for line in read(path).splitlines():
        if not line.startswith('#'):
            break
        lines.append(line)
    return '\n'.join(lines)


def results_row(size):
    """The student/teacher row of benchmarks/RESULTS.md's latency table at ``size`` (256 or 512)."""
    row = next(line for line in read('benchmarks/RESULTS.md').splitlines() if line.startswith(f'| {size}^2 |'))
    return [cell.strip() for cell in row.strip('|').split('|')]


@pytest.mark.parametrize('path', RESTORMER_FILES, ids=osp.basename)
def test_the_restormer_headers_cost_figures_are_the_benchmarks(path):
    text = ' '.join(header(path).replace('#', ' ').split())
    match = re.search(r'\(([\d.]+) x parameters, ([\d.]+) x MACs, ([\d.]+) x / ([\d.]+) x CPU latency at 256 / 512',
                      text)
    assert match, f'{path}: no cost line in the header'
    params, macs, latency_256, latency_512 = match.groups()
    row_256, row_512 = results_row(256), results_row(512)
    measured = [int(cell.replace(',', '')) for cell in row_256[1:3]]
    with open(path, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    from basicsr.archs import build_network

    student, teacher = (sum(p.numel() for p in build_network(dict(opt[key])).parameters())
                        for key in ('network_g', 'network_t'))
    assert written_by(params, {f'{student / teacher:.6f}'}), f'{path}: the networks have {student / teacher:.4f}x'
    teacher_millions = re.search(r'Teacher: .*?dim 48, ([\d.]+) M parameters', text).group(1)
    assert written_by(teacher_millions, {f'{teacher / 1e6:.6f}'}), f'{path}: the teacher has {teacher / 1e6:.2f} M'
    if [student, teacher] != measured:  # the benchmark ran other networks: the header must say which
        assert "measured on SKD_Denoise.yml's networks" in text, path
    assert written_by(macs, {row_256[5]}) and written_by(latency_256, {row_256[8]})
    assert written_by(latency_512, {row_512[8]})


@pytest.mark.parametrize('path', SKD_FILES, ids=osp.basename)
def test_the_headers_study_figures_are_the_studys(path):
    study = read('docs/kd_study.md')
    claims = re.findall(r'([-+]\d+\.\d+) \+- (\d+\.\d+) dB', header(path))
    assert claims, f'{path}: no study figure in the header'
    for mean, std in claims:
        assert f'{mean} ± {std}' in study, f'{path}: {mean} +- {std} dB is not in docs/kd_study.md'


@pytest.mark.parametrize('path', RESTORMER_FILES, ids=osp.basename)
def test_the_spatial_form_cost_figures_are_the_benchmarks(path):
    text = read(path)
    gpu, cpu = re.search(r'\(([\d.]+)x the floor on an H100, ([\d.]+)x on a CPU\)', text).groups()
    assert f'{gpu}x the floor' in read('benchmarks/RESULTS_gpu.md')
    assert written_by(cpu, numbers(read('benchmarks/RESULTS.md')))
