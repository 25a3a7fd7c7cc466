"""Bad dataset paths and damaged LMDBs are refused before training, naming the dataset, the key and the fix."""
import os
import shutil

import pytest

import skd_basicsr  # noqa: F401
from basicsr.data import build_dataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.data.preflight import check_dataset_options

from helpers import ridnet_options, run_cli, write_noisy_pairs, write_options


def paired(gt, lq, backend='disk'):
    return {'name': 'pairs', 'type': 'PairedImageDataset', 'phase': 'val', 'scale': 1, 'dataroot_gt': str(gt),
            'dataroot_lq': str(lq), 'io_backend': {'type': backend}}


def make_lmdb(folder, out):
    names = sorted(os.listdir(folder))
    make_lmdb_from_imgs(str(folder), str(out), names, [n[:-4] for n in names], map_size=1 << 24)


def test_missing_folder(tmp_path):
    gt, _ = write_noisy_pairs(str(tmp_path), count=1)
    with pytest.raises(OptionError, match=r'datasets pairs: dataroot_lq .*nowhere does not exist'):
        check_dataset_options(paired(gt, tmp_path / 'nowhere'))


def test_damaged_lmdbs(tmp_path):
    gt, lq = write_noisy_pairs(str(tmp_path), count=2, size=16)
    make_lmdb(gt, tmp_path / 'gt.lmdb')
    shutil.copytree(tmp_path / 'gt.lmdb', tmp_path / 'nometa.lmdb')
    os.remove(tmp_path / 'nometa.lmdb' / 'meta_info.txt')
    with pytest.raises(OptionError, match=r'nometa.lmdb is not a BasicSR LMDB(.|\n)*basicsr lmdb --input'):
        check_dataset_options(paired(tmp_path / 'gt.lmdb', tmp_path / 'nometa.lmdb', 'lmdb'))
    shutil.copytree(tmp_path / 'gt.lmdb', tmp_path / 'wrongkeys.lmdb')
    (tmp_path / 'wrongkeys.lmdb' / 'meta_info.txt').write_text('zzz.png (16,16,3) 1\n')
    with pytest.raises(OptionError, match=r"key 'zzz' of meta_info.txt is not in .*wrongkeys.lmdb"):
        check_dataset_options(paired(tmp_path / 'gt.lmdb', tmp_path / 'wrongkeys.lmdb', 'lmdb'))
    with pytest.raises(OptionError, match='does not end with .lmdb'):
        check_dataset_options(paired(gt, lq, 'lmdb'))


def test_undecodable_image_names_its_file(tmp_path):
    gt, lq = write_noisy_pairs(str(tmp_path), count=2, size=16)
    with open(os.path.join(lq, '001.png'), 'wb') as f:
        f.write(b'garbage')
    dataset = build_dataset(paired(gt, lq))
    with pytest.raises(ValueError, match=r'PairedImageDataset: cannot read sample 1 .*lq/001.png'):
        dataset[1]


def test_train_refuses_before_training(tmp_path):
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), count=2)
    opt = ridnet_options('bad_path', gt, str(tmp_path / 'data' / 'lq_typo'))
    write_options(tmp_path / 'bad.yml', opt)
    proc = run_cli(['train', '-opt', 'bad.yml'], cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'basicsr train: error: datasets tiny_train: dataroot_lq' in proc.stderr and 'lq_typo does not exist' in \
        proc.stderr
    assert not os.listdir(tmp_path / 'experiments' / 'bad_path' / 'models')
