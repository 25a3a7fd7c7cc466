"""Every shipped option file parses safely and builds: model, networks and datasets on tiny stand-in data."""
import glob
import os
from os import path as osp

import pytest
import torch

import skd_basicsr  # noqa: F401
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from skd_basicsr.compat import parse_options

from helpers import save_teacher, write_images

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
OPTION_FILES = sorted(glob.glob(osp.join(REPO, 'options', '*.yml')) + glob.glob(osp.join(REPO, 'options', 'train',
                                                                                         '*.yml')))


@pytest.fixture(scope='module')
def tiny_lmdb(tmp_path_factory):
    root = tmp_path_factory.mktemp('lmdb')
    write_images(str(root / 'img'), count=2, size=64)
    names = sorted(os.listdir(root / 'img'))
    make_lmdb_from_imgs(str(root / 'img'), str(root / 'tiny.lmdb'), names, [n[:-4] for n in names], map_size=1 << 24)
    return str(root / 'tiny.lmdb')


def test_there_is_an_option_file_per_task_and_baseline():
    names = {osp.relpath(p, osp.join(REPO, 'options')) for p in OPTION_FILES}
    for task in ('Denoise', 'Denoise_SIDD', 'Derain', 'Deblur'):
        assert {f'SKD_{task}.yml', f'train/Restormer_{task}.yml', f'train/Student_{task}_scratch.yml'} <= names


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: osp.relpath(p, osp.join(REPO, 'options')))
def test_option_file_builds(path, tmp_path, tiny_lmdb, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opt, _ = parse_options(str(tmp_path), is_train=True, argv=['-opt', path])
    assert opt['num_gpu'] == torch.cuda.device_count()
    opt['num_gpu'] = 0
    for phase, dataset_opt in opt['datasets'].items():
        for key in ('dataroot_gt', 'dataroot_lq'):
            if key in dataset_opt:
                dataset_opt[key] = tiny_lmdb
        dataset = build_dataset(dataset_opt)
        assert len(dataset) == 2
        if phase != 'train':
            assert dataset[0]['gt'].shape == (3, 64, 64)
    if opt['model_type'] == 'SKDModel':
        opt['path']['pretrain_network_t'] = str(tmp_path / 'teacher.pth')
        save_teacher(opt['path']['pretrain_network_t'], opt['network_t'])
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key], exist_ok=True)
    model = build_model(opt)
    params = sum(p.numel() for p in model.net_g.parameters())
    if 'Restormer_' in path:
        assert 26.1e6 < params <= 26126644  # the official teacher (BiasFree layer norms have no bias)
    else:
        assert 0.37 < params / 26126644 < 0.38  # the dim-32 student
    if opt['model_type'] == 'SKDModel':
        assert len(model.pairs) == 8 and model.cri_feat is not None and model.cri_contrast is not None
