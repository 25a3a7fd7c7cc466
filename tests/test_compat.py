"""Each shim in skd_basicsr/platform/compat.py, checked against the unmodified basicsr 1.4.2 and the libraries it
patches."""
import os
import subprocess
import sys

import pytest
import torch

import skd_basicsr  # noqa: F401  (applies the patches)
from skd_basicsr.platform import patches


def test_basicsr_imports_with_current_torchvision_and_no_warning():
    # a fresh interpreter, warnings as errors: the functional_tensor alias and the scipy warning are handled
    code = ('import skd_basicsr, torchvision.transforms.functional_tensor as ft, basicsr.data.degradations as d; '
            'assert d.rgb_to_grayscale is ft.rgb_to_grayscale')
    proc = subprocess.run([sys.executable, '-W', 'error', '-c', code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_init_dist_uses_gloo_on_cpu_whatever_the_options_say(tmp_path):
    # BasicSR passes dist_params (backend: nccl in its own files) to init_dist under slurm; on CPU only gloo works
    code = ('import torch, torch.distributed as dist, skd_basicsr; from skd_basicsr.platform.compat import init_dist; '
            'init_dist("pytorch", backend="nccl"); print(dist.get_backend(), torch.cuda.is_available())')
    env = dict(os.environ, RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='29631',
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    backend, cuda = proc.stdout.split()
    assert backend == ('nccl' if cuda == 'True' else 'gloo')


def test_model_to_device_wraps_in_ddp_on_cpu(tmp_path):
    import torch.distributed as dist
    from basicsr.models.base_model import BaseModel
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try:
        model = BaseModel({'num_gpu': 0, 'is_train': True, 'dist': True})
        net = model.model_to_device(torch.nn.Conv2d(3, 3, 1))
        assert isinstance(net, DistributedDataParallel) and net.device_ids is None
        net(torch.rand(1, 3, 4, 4)).sum().backward()
    finally:
        dist.destroy_process_group()


def test_two_readers_of_one_lmdb_in_one_process(tmp_path):
    import lmdb
    from basicsr.utils import FileClient
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    from helpers import write_images
    write_images(str(tmp_path / 'img'), count=2, size=16)
    make_lmdb_from_imgs(str(tmp_path / 'img'), str(tmp_path / 'x.lmdb'), ['000.png', '001.png'], ['000', '001'],
                        map_size=1 << 24)
    env = lmdb.open(str(tmp_path / 'x.lmdb'), readonly=True, lock=False)
    with pytest.raises(lmdb.Error, match='already open'):  # what broke BasicSR's LmdbBackend
        lmdb.open(str(tmp_path / 'x.lmdb'), readonly=True, lock=False)
    env.close()
    train = FileClient('lmdb', db_paths=[str(tmp_path / 'x.lmdb')], client_keys=['gt'])
    val = FileClient('lmdb', db_paths=[str(tmp_path / 'x.lmdb')], client_keys=['gt'])
    assert train.get('000', 'gt') == val.get('000', 'gt') and len(val.get('001', 'gt')) > 0


def test_patches_are_one_list_applied_once():
    first = patches.applied()
    patches.apply()
    assert patches.applied() == first and len(first) == len({(id(o), n) for o, n, _ in first})
    for owner, name, replacement in first:
        assert getattr(owner, name) is replacement, f'{owner.__name__}.{name} was changed again elsewhere'
