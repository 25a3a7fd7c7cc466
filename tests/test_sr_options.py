"""Super-resolution across families by configuration alone: the SwinIR teacher of SKD_SRx4_SwinIR.yml distils into the
EDSR student of SKD_SRx4_EDSR.yml on tiny x4 stand-in DIV2K LMDBs (tests/test_recipes.py trains every SR option file
as shipped, on stand-ins of the real sizes)."""
import json
import os
from os import path as osp

import cv2
import pytest

import skd_basicsr  # noqa: F401
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.options import yaml_load
from skd_basicsr.tools.distill import NORMALISED_FEATURE_LOSS

from helpers import run_cli, save_teacher, write_images, write_options

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ARCHS = ('EDSR', 'RRDBNet', 'SwinIR')
# widths cut for the tests; depths (and so every tapped module name) stay those of the option files, except
# SwinIR's blocks per RSTB, which its tapped names (layers.i.conv) do not contain
TINY = {
    'EDSR': {'num_feat': (16, 8)},
    'RRDBNet': {'num_feat': (8, 8), 'num_grow_ch': (4, 4)},
    'SwinIR': {'embed_dim': (12, 6), 'depths': ([1] * 6, [1] * 4), 'num_heads': ([1] * 6, [1] * 4)},
}
pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')  # BasicSR's SwinIR calls it the old way


@pytest.fixture(scope='module')
def div2k_x4(tmp_path_factory):
    """DIV2K_train_HR_sub.lmdb and DIV2K_train_LR_bicubic_X4_sub.lmdb stand-ins: 64x64 HR, 16x16 bicubic LR, one key
    per pair, as `basicsr lmdb` writes them."""
    root = tmp_path_factory.mktemp('div2k')
    hr_paths = write_images(str(root / 'hr'), count=2, size=64, prefix='0001_s')
    os.makedirs(root / 'lr')
    for path in hr_paths:
        cv2.imwrite(str(root / 'lr' / osp.basename(path)), cv2.resize(cv2.imread(path), (16, 16),
                                                                      interpolation=cv2.INTER_CUBIC))
    names = sorted(os.listdir(root / 'hr'))
    for side, lmdb in (('hr', 'DIV2K_train_HR_sub.lmdb'), ('lr', 'DIV2K_train_LR_bicubic_X4_sub.lmdb')):
        make_lmdb_from_imgs(str(root / side), str(root / lmdb), names, [n[:-4] for n in names], map_size=1 << 24)
    return root


def read_options(path):
    with open(path) as f:
        return yaml_load(f.read(), source=path)


def tiny_options(path, data, name):
    """The option file at ``path``, as plain data, on the stand-in data with tiny widths, for 2 iterations."""
    opt = json.loads(json.dumps(read_options(path)))
    arch = opt['network_g']['type'] if opt['network_g']['type'] in TINY else None
    for key, (teacher, student) in TINY.get(arch, {}).items():
        opt['network_g'][key] = student
        if 'network_t' in opt:
            opt['network_t'][key] = teacher
    opt.update(name=name, num_gpu=0)
    train = opt['datasets']['train']
    train.update(dataroot_gt=str(data / 'DIV2K_train_HR_sub.lmdb'),
                 dataroot_lq=str(data / 'DIV2K_train_LR_bicubic_X4_sub.lmdb'), gt_size=32, num_worker_per_gpu=0,
                 batch_size_per_gpu=2)
    opt['datasets']['val'].update(dataroot_gt=train['dataroot_gt'], dataroot_lq=train['dataroot_lq'],
                                  io_backend={'type': 'lmdb'})
    opt['train']['total_iter'] = 2
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False, wandb=None)
    return opt


def train(tmp_path, opt):
    if 'network_t' in opt:
        opt['path']['pretrain_network_t'] = str(tmp_path / 'teacher.pth')
        save_teacher(opt['path']['pretrain_network_t'], opt['network_t'])
    proc = run_cli(['train', '-opt', write_options(tmp_path / f"{opt['name']}.yml", opt)], cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def cross_family(data):
    """The SwinIR teacher of SKD_SRx4_SwinIR.yml distilled into the EDSR-M student of SKD_SRx4_EDSR.yml: both body
    outputs are at the LR resolution, so they pair with an adapter (60 -> 16 channels in the tiny nets)."""
    opt = tiny_options(osp.join(REPO, 'options', 'SKD_SRx4_EDSR.yml'), data, 'tiny_SKD_SwinIR_to_EDSR')
    swinir = tiny_options(osp.join(REPO, 'options', 'SKD_SRx4_SwinIR.yml'), data, 'unused')
    opt['network_t'] = swinir['network_t']
    opt['distill']['features'] = [{'student': 'body.7', 'teacher': 'layers.2.conv'},
                                  {'student': 'body.15', 'teacher': 'layers.5.conv'},
                                  {'student': 'conv_after_body', 'teacher': 'conv_after_body'}]
    # L_GK and the paper's L_CL, which the files leave commented: L_GK in its normalised form, as the EDSR file's
    # block has it, L_CL in the teacher's first convolution as the SwinIR file has it
    opt['train']['feature_opt'] = dict(NORMALISED_FEATURE_LOSS)
    opt['train']['contrast_opt'] = {'type': 'SKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher',
                                    'positive': 'teacher', 'layer_weights': {'conv_first': 1.0}}
    opt['distill']['init_from_teacher'] = False  # weight selection refuses another family
    return opt


def test_swinir_teacher_to_edsr_student(tmp_path, div2k_x4):
    log = train(tmp_path, cross_family(div2k_x4))
    assert 'l_gk:' in log and 'l_cl:' in log


def test_cross_family_pair_of_different_resolutions_fails_before_training(tmp_path, div2k_x4):
    from basicsr.models import build_model
    opt = cross_family(div2k_x4)
    opt['distill']['features'][0] = {'student': 'upsample', 'teacher': 'conv_after_body'}  # HR against LR
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(pretrain_network_t=str(tmp_path / 'teacher.pth'), models=str(tmp_path), training_states='',
                       visualization=str(tmp_path))
    for dataset_opt in opt['datasets'].values():
        dataset_opt.update(scale=4)
    save_teacher(opt['path']['pretrain_network_t'], opt['network_t'])
    with pytest.raises(OptionError, match=r'upsample -> conv_after_body: spatial sizes differ \(student \(256, 256\), '
                                          r'teacher \(64, 64\)'):
        build_model(opt)
