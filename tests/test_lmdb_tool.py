"""``basicsr lmdb``: BasicSR-format LMDBs that BasicSR's own datasets train from, and clear refusals."""
import os
import re
import shutil

import pytest

import skd_basicsr  # noqa: F401
from basicsr.data import build_dataset
from skd_basicsr.tools.lmdb import main as lmdb_main

from helpers import ridnet_options, run_cli, write_images, write_noisy_pairs, write_options


def pack(capsys, *argv):
    code = lmdb_main(list(argv))
    return code, capsys.readouterr().err


def test_packs_meta_info_and_basicsr_datasets_read_it(tmp_path, capsys):
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), count=3, size=48)
    assert pack(capsys, '--input', gt, '--output', str(tmp_path / 'gt.lmdb'))[0] == 0
    assert pack(capsys, '--input', lq, '--output', str(tmp_path / 'lq.lmdb'), '--match', gt, '--n-thread', '1')[0] == 0
    meta = (tmp_path / 'gt.lmdb' / 'meta_info.txt').read_text().splitlines()
    assert meta == ['000.png (48,48,3) 1', '001.png (48,48,3) 1', '002.png (48,48,3) 1']
    paired = build_dataset({'name': 'p', 'type': 'PairedImageDataset', 'phase': 'val', 'scale': 1,
                            'dataroot_gt': str(tmp_path / 'gt.lmdb'), 'dataroot_lq': str(tmp_path / 'lq.lmdb'),
                            'io_backend': {'type': 'lmdb'}})
    assert len(paired) == 3 and paired[2]['lq'].shape == (3, 48, 48)


def test_mixed_sizes_fit_in_the_map(tmp_path, capsys):
    write_images(str(tmp_path / 'img'), count=1, size=8, prefix='a')
    write_images(str(tmp_path / 'img'), count=2, size=256, prefix='b', seed=1)
    assert pack(capsys, '--input', str(tmp_path / 'img'), '--output', str(tmp_path / 'x.lmdb'))[0] == 0


@pytest.mark.parametrize('setup, args, message', [
    (lambda d: (d / 'out.lmdb').mkdir(), ['--output', 'out.lmdb'], 'exists; remove it'),
    (None, ['--output', 'out'], 'must end with .lmdb'),
    (lambda d: shutil.copy(d / 'gt' / '000.png', d / 'gt' / 'a.b.png'), ['--output', 'o.lmdb'], 'extra dots'),
    (lambda d: shutil.copy(d / 'gt' / '000.png', d / 'gt' / '000.jpg'), ['--output', 'o.lmdb'], 'several files'),
    (lambda d: os.remove(d / 'lq' / '001.png'), ['--output', 'o.lmdb', '--match', 'LQ'],
     r"names in --input and --match .* differ: 1 only in --input \(e.g. \['001'\]\)"),
    (lambda d: (d / 'empty').mkdir(), ['--output', 'o.lmdb', '--input', 'EMPTY'], 'has no images'),
])
def test_refusals_write_nothing(tmp_path, capsys, setup, args, message):
    write_noisy_pairs(str(tmp_path), count=2, size=32)
    if setup:
        setup(tmp_path)
    args = [a.replace('LQ', str(tmp_path / 'lq')).replace('EMPTY', str(tmp_path / 'empty')) for a in args]
    args = ['--input', str(tmp_path / 'gt')] + [str(tmp_path / a) if a.endswith(('.lmdb', 'out')) else a
                                                for a in args]
    before = sorted(os.listdir(tmp_path))
    code, err = pack(capsys, *args)
    assert code == 2 and err.startswith('basicsr lmdb: error: ')
    assert re.search(message, err), err
    assert sorted(os.listdir(tmp_path)) == before


def test_lmdb_output_trains_through_basicsr(tmp_path):
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), count=3, size=32)
    for name, folder, extra in (('gt', gt, []), ('lq', lq, ['--match', gt])):
        proc = run_cli(['lmdb', '--input', folder, '--output', str(tmp_path / f'{name}.lmdb')] + extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    opt = ridnet_options('tiny_lmdb', str(tmp_path / 'gt.lmdb'), str(tmp_path / 'lq.lmdb'), total_iter=2)
    for phase in ('train', 'val'):
        opt['datasets'][phase]['io_backend'] = {'type': 'lmdb'}
    opt['datasets']['val_2'] = {'name': 'gauss', 'type': 'GaussianDenoiseDataset', 'sigma': 25,
                                'dataroot_gt': str(tmp_path / 'gt.lmdb'), 'io_backend': {'type': 'lmdb'}}
    write_options(tmp_path / 'lmdb.yml', opt)
    proc = run_cli(['train', '-opt', 'lmdb.yml'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'iter:       2' in log and 'Validation tiny_val' in log and 'Validation gauss' in log
