"""The recipe check: every shipped option file, SKD and baselines, trains through every progressive stage and validates
once through `basicsr train`, on stand-ins laid out as datasets/README.md says and sized like the real datasets
(Rain13K's and BSD400's images smaller than the 384 crop, portrait and landscape; Set5's LR images that are not
multiples of SwinIR's window; SIDD and GoPro patches), with the networks cut in width, so that every module named in
distill.features exists as in the file (each SKD file trains again with its commented L_GK restored, on those pairs)
and the students are selected from teachers of the files' depths (the Restormer baselines, which name no module, keep
one block per level). What the test changes besides the networks is listed in `shrunk`: the iterations (one per
progressive stage), validation at the end only, no loader workers, the teacher's weights (random, saved here),
dataset_enlarge_ratio (a handful of images must make a step's batches), and two costs a CPU cannot pay at the
recipes' 384-pixel crops: one micro-batch per step (train.accum_iter 1; what accumulation does is checked in
test_accumulation.py) and the spatial MCA in 8 x 8 windows at every level (the exact global form at 192 x 192 is
attention over 36864 tokens; test_mca_forms.py checks the forms against each other)."""
import glob
import json
import os
from os import path as osp

import cv2
import numpy as np
import pytest

import skd_basicsr  # noqa: F401
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from skd_basicsr.platform.checkpoint import safe_torch_load
from skd_basicsr.platform.options import yaml_load

from benchmarks.bench_skd import commented_section

from helpers import save_teacher, train_here, write_options

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
OPTION_FILES = sorted(glob.glob(osp.join(REPO, 'options', '*.yml')) + glob.glob(osp.join(REPO, 'options', 'train',
                                                                                         '*.yml')))
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings('ignore:torch.meshgrid')]

BSD_LANDSCAPE, BSD_PORTRAIT = (321, 481), (481, 321)  # (h, w) of the BSD-sized images of Rain13K, BSD400, CBSD68
# the stand-in images of each dataset root the option files read, as (h, w); paired roots get their input alike
STAND_INS = {
    'datasets/Denoise/train/DFWB.lmdb': [(180, 180), BSD_LANDSCAPE, BSD_PORTRAIT, (375, 500), (512, 512)],
    'datasets/Denoise/test/CBSD68.lmdb': [BSD_LANDSCAPE, BSD_PORTRAIT],
    'datasets/Denoise/train/SIDD': [(512, 512), (512, 512)],
    'datasets/Denoise/val/SIDD': [(256, 256), (256, 256)],
    'datasets/Deraining/train/Rain13K': [BSD_LANDSCAPE, BSD_PORTRAIT, (400, 600)],
    'datasets/Deraining/test/Rain100L': [BSD_LANDSCAPE, BSD_PORTRAIT],
    'datasets/Deblur/GoPro/train': [(512, 512), (512, 512)],
    'datasets/Deblur/GoPro/val': [(256, 256), (256, 256)],
    'datasets/DIV2K': [(480, 480), (480, 480)],  # HR sub-images; the LR ones are 120 x 120
    'datasets/Set5': [(276, 276), (336, 228)],  # head and woman of GTmod12: LR 69 x 69 and 84 x 57
}
# widths cut for the check, (teacher, student): a value, or a function of the file's; depths and every module name stay
# those of the files. SwinIR keeps one head per block, whose cost is its windows' attention maps whatever the width.
WIDTHS = {
    'Restormer': {'dim': (2, 2)},
    'EDSR': {'num_feat': (16, 8)},
    'RRDBNet': {'num_feat': (8, 8), 'num_grow_ch': (4, 4)},
    'SwinIR': {'embed_dim': (12, 6), 'num_heads': (lambda heads: [1] * len(heads), ) * 2},
}
HUGE = 10**9


def smooth_image(shape, rng):
    h, w = shape
    base = rng.random((max(h // 8, 2), max(w // 8, 2), 3))
    return np.clip(cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC) * 255, 0, 255).astype(np.uint8)


def write_set(folder, images):
    os.makedirs(folder, exist_ok=True)
    for name, img in images.items():
        cv2.imwrite(osp.join(folder, f'{name}.png'), img)


def pack(folder, lmdb_path):
    names = sorted(os.listdir(folder))
    os.makedirs(osp.dirname(lmdb_path), exist_ok=True)
    make_lmdb_from_imgs(folder, lmdb_path, names, [n[:-4] for n in names], map_size=1 << 28)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """A folder laid out as datasets/README.md lays out the real datasets, with stand-ins of their sizes."""
    top = tmp_path_factory.mktemp('recipes')
    rng = np.random.default_rng(0)
    for where, shapes in STAND_INS.items():
        gt = {f'{i:04d}': smooth_image(shape, rng) for i, shape in enumerate(shapes)}
        noisy = {k: np.clip(v + rng.normal(0, 20, v.shape), 0, 255).astype(np.uint8) for k, v in gt.items()}
        base = top / where
        if where.endswith('.lmdb'):  # clean images only (noise added on the fly)
            write_set(str(top / 'png' / where), gt)
            pack(str(top / 'png' / where), str(base))
        elif where == 'datasets/DIV2K':
            lr = {k: cv2.resize(v, (v.shape[1] // 4, v.shape[0] // 4), interpolation=cv2.INTER_CUBIC)
                  for k, v in gt.items()}
            for name, images in (('DIV2K_train_HR_sub', gt), ('DIV2K_train_LR_bicubic_X4_sub', lr)):
                write_set(str(top / 'png' / name), images)
                pack(str(top / 'png' / name), str(base / f'{name}.lmdb'))
        elif where == 'datasets/Set5':
            write_set(str(base / 'GTmod12'), gt)
            write_set(str(base / 'LRbicx4'), {k: cv2.resize(v, (v.shape[1] // 4, v.shape[0] // 4),
                                                            interpolation=cv2.INTER_CUBIC) for k, v in gt.items()})
        else:
            for side, images in (('target', gt), ('input', noisy)):
                write_set(str(top / 'png' / where / side), images)
                pack(str(top / 'png' / where / side), str(base / f'{side}.lmdb'))
    return top


def shrunk(path, root, restore_l_gk=False):
    """The option file as plain data, cut in width and in length for the check (see the module doc); with
    ``restore_l_gk``, with the L_GK block the file leaves commented restored."""
    with open(path) as f:
        opt = json.loads(json.dumps(yaml_load(f.read(), source=path)))
    if restore_l_gk:
        opt['train']['feature_opt'] = commented_section(path, 'feature_opt')
    arch = opt['network_g']['type']
    for key, widths in WIDTHS[arch].items():
        for net, width in zip(('network_t', 'network_g'), widths):
            if net in opt:
                opt[net][key] = width(opt[net][key]) if callable(width) else width
    if arch == 'Restormer' and opt['model_type'] != 'SKDModel':
        # a baseline names no module by depth: one block per level (the teacher baselines' 4, 6, 6, 8 and 4 cost
        # most of the check, and blocks keep the shapes the stages and validation exercise)
        opt['network_g'].update(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
    stages = len(opt['train'].get('progressive', {}).get('iters', [1]))
    if 'progressive' in opt['train']:
        opt['train']['progressive']['iters'] = [1] * stages
    opt['train']['total_iter'] = stages
    if opt['train'].get('accum_iter', 1) > 1:
        opt['train']['accum_iter'] = 1
    for pair in (opt.get('distill') or {}).get('features', []):
        if not {'spatial_window', 'spatial_tokens'} & set(pair):
            pair['spatial_window'] = 8
    opt.update(name=f'recipe_{osp.basename(path)[:-4]}', num_gpu=0)
    train = opt['datasets']['train']
    train.update(num_worker_per_gpu=0, dataset_enlarge_ratio=100)
    opt['val']['val_freq'] = HUGE  # BasicSR validates once more after the last iteration: that is the one
    opt['logger'].update(print_freq=1, save_checkpoint_freq=HUGE, use_tb_logger=False, wandb=None)
    for dataset_opt in opt['datasets'].values():
        for key in ('dataroot_gt', 'dataroot_lq'):
            assert key not in dataset_opt or osp.exists(root / dataset_opt[key]), f'{path}: {key} has no stand-in'
    if 'network_t' in opt:
        opt['path']['pretrain_network_t'] = str(root / f'{opt["name"]}_teacher.pth')
        save_teacher(opt['path']['pretrain_network_t'], opt['network_t'])
    return opt, stages


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: osp.relpath(p, osp.join(REPO, 'options')))
def test_option_file_trains_every_stage_and_validates_on_real_sizes(path, root, monkeypatch):
    opt, stages = shrunk(path, root)
    status, log = train_here(write_options(root / f'{opt["name"]}.yml', opt), root, monkeypatch)
    assert status == 0, log[-4000:]
    assert f'iter:{stages:8d}' in log and 'End of training' in log
    if 'progressive' in opt['train']:
        for stage in range(1, stages + 1):
            assert f'stage {stage}/{stages}, patch size {opt["train"]["progressive"]["gt_sizes"][stage - 1]}' in log
    val = opt['datasets']['val']['name']
    assert log.count(f'Validation {val}') == 1 and '# psnr:' in log
    if opt['model_type'] == 'SKDModel':
        assert f'Teacher (network_t) on {val}' in log
        assert 'distill.init_from_teacher: network_g initialised from network_t' in log
        # every term the file trains is logged, and only those (the shipped files leave L_GK and L_CL out, and
        # their feature pairs, kept for L_GK's commented block, are not tapped)
        terms = {'l_kd:': 'output_opt', 'l_gk:': 'feature_opt', 'l_cl:': 'contrast_opt'}
        assert 'l_pix:' in log and 'l_kd:' in log
        if opt.get('distill', {}).get('features') and 'feature_opt' not in opt['train']:
            assert 'pair(s) unused, train.feature_opt (L_GK) is not set' in log
        for name, section in terms.items():
            assert (name in log) == (section in opt['train'])
    exported = safe_torch_load(str(root / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth'))
    # BasicSR's model-zoo keys: with EMA (the SR recipes) both, else the trained weights alone
    assert sorted(exported) == (['params', 'params_ema'] if opt['train'].get('ema_decay', 0) > 0 else ['params'])


@pytest.mark.parametrize('path', [p for p in OPTION_FILES if osp.basename(p).startswith('SKD_')],
                         ids=lambda p: osp.basename(p))
def test_the_commented_l_gk_of_each_skd_file_trains_on_its_pairs(path, root, monkeypatch):
    """The shipped files leave L_GK commented (docs/kd_study.md, 5.11); uncommented, as the header says, it trains on
    every pair of distill.features at the real sizes, with the file's spatial forms."""
    opt, stages = shrunk(path, root, restore_l_gk=True)
    assert opt['train']['feature_opt']['feature_norm'] == 'teacher_rms'
    opt['name'] += '_l_gk'
    status, log = train_here(write_options(root / f'{opt["name"]}.yml', opt), root, monkeypatch)
    assert status == 0, log[-4000:]
    assert f'iter:{stages:8d}' in log and 'End of training' in log
    assert 'l_gk:' in log and 'l_kd:' in log and 'l_cl:' not in log and 'pair(s) unused' not in log
