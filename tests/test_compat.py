"""Each workaround in skd_basicsr/compat.py, checked against the unmodified basicsr 1.4.2 it patches."""
import collections
import os
import subprocess
import sys

import pytest
import torch

import skd_basicsr  # noqa: F401  (applies compat)
from skd_basicsr import compat


def test_basicsr_imports_with_current_torchvision_and_no_warning():
    # a fresh interpreter, warnings as errors: the functional_tensor alias and the scipy warning are handled
    code = ('import skd_basicsr, torchvision.transforms.functional_tensor as ft, basicsr.data.degradations as d; '
            'assert d.rgb_to_grayscale is ft.rgb_to_grayscale')
    proc = subprocess.run([sys.executable, '-W', 'error', '-c', code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_yaml_object_tags_are_refused(tmp_path):
    marker = tmp_path / 'pwned'
    text = f'name: x\nrun: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(compat.OptionError, match=r'line 2: .*python/object/apply:os.system.*nothing in the file'):
        compat.yaml_load(text, source='evil.yml')
    assert not marker.exists()


def test_yaml_keeps_order_and_plain_types():
    opt = compat.yaml_load('b: 1\na: {y: !!float 1e-4, x: [1, 2]}\nc: ~\n')
    assert isinstance(opt, collections.OrderedDict) and list(opt) == ['b', 'a', 'c']
    assert list(opt['a']) == ['y', 'x'] and opt['a']['y'] == 1e-4 and opt['c'] is None


def test_basicsr_ordered_yaml_is_the_safe_loader():
    from basicsr.utils.options import ordered_yaml
    assert issubclass(ordered_yaml()[0], compat.OrderedSafeLoader)


@pytest.mark.parametrize('text, value', [('0.999', 0.999), ('7', 7), ('~', None), ('None', None), ('true', True),
                                         ('False', False), ('!!float 2e-4', 2e-4), ('[1, 2]', [1, 2]),
                                         ('abc', 'abc'), ('a:b', 'a:b')])
def test_force_yml_values_like_basicsr(text, value):
    assert compat.parse_force_yml_value(text) == value


def test_force_yml_sets_nested_keys_without_exec(tmp_path):
    opt = {'train': {'ema_decay': 0, 'optim_g': {'lr': 1}}, 'name': 'a'}
    compat.apply_force_yml(opt, ['train:ema_decay=0.999', 'train:optim_g:lr=!!float 1e-3', 'name=b'])
    assert opt == {'train': {'ema_decay': 0.999, 'optim_g': {'lr': 1e-3}}, 'name': 'b'}

    marker = tmp_path / 'pwned'
    # what BasicSR would exec is only a strange key and value here
    evil = f'name"]=0;import os;os.system("touch {marker}");x=opt["a'
    compat.apply_force_yml(opt, [evil])
    assert not marker.exists() and opt['name"]'] == f'0;import os;os.system("touch {marker}");x=opt["a'
    with pytest.raises(compat.OptionError, match=r"no key 'val'.*keys there are: train, name"):
        compat.apply_force_yml(opt, ['val:val_freq=3'])
    with pytest.raises(compat.OptionError, match='expected key:subkey=value'):
        compat.apply_force_yml(opt, ['train:ema_decay'])


def test_dist_backend_is_gloo_without_gpu():
    assert compat.default_backend() == ('nccl' if torch.cuda.is_available() else 'gloo')


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


class _Payload:

    def __reduce__(self):
        return (os.system, ('true',))


def test_safe_torch_load_refuses_code_and_accepts_training_states(tmp_path):
    evil = tmp_path / 'evil.pth'
    torch.save({'params': _Payload()}, evil)
    with pytest.raises(compat.OptionError, match='cannot be loaded as weights only'):
        compat.safe_torch_load(str(evil))
    with pytest.raises(compat.OptionError, match='no such file'):
        compat.safe_torch_load(str(tmp_path / 'missing.pth'))

    state_path = tmp_path / '4.state'
    sched = {'milestones': collections.Counter([2, 4]), 'last_epoch': 4}
    torch.save({'iter': 4, 'epoch': 1, 'schedulers': [sched], 'optimizers': []}, state_path)
    assert compat.safe_torch_load(str(state_path))['schedulers'][0]['milestones'] == sched['milestones']


def test_resume_keeps_the_teacher_weights(tmp_path):
    states = tmp_path / 'training_states'
    states.mkdir()
    for it in (2, 10, 4):
        torch.save({'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / f'{it}.state')
    opt = {'name': 'x', 'auto_resume': True, 'network_g': {}, 'network_t': {},
           'path': {'training_states': str(states), 'models': str(tmp_path / 'models'), 'resume_state': None,
                    'pretrain_network_t': 'teacher.pth', 'param_key_t': 'params_ema', 'param_key_g': 'params_ema'}}
    state = compat.load_resume_state(opt)
    assert state['iter'] == 10
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'models' / 'net_g_10.pth')
    assert opt['path']['param_key_g'] == 'params'
    assert opt['path']['pretrain_network_t'] == 'teacher.pth' and opt['path']['param_key_t'] == 'params_ema'


def test_resume_without_state_is_a_fresh_start(tmp_path):
    opt = {'name': 'x', 'auto_resume': True, 'path': {'training_states': str(tmp_path / 'none')}}
    assert compat.load_resume_state(opt) is None


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
