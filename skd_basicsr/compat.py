"""Every workaround needed to run the unmodified PyPI ``basicsr`` 1.4.2 on today's torch, torchvision and numpy.

BasicSR 1.4.2 was released for torch 1.x. On a current stack it breaks in a handful of places; each fix lives
here, in one function, with a test in ``tests/test_compat.py``. :func:`apply` installs them all and is called by
``skd_basicsr/__init__.py`` before anything imports ``basicsr``. It is idempotent.

The fixes:

* ``torchvision.transforms.functional_tensor`` was removed from torchvision; ``basicsr.data.degradations``
  imports ``rgb_to_grayscale`` from it, so ``import basicsr`` fails. A small alias module is registered.
* Option files are read with PyYAML's full loader (a ``!!python/...`` tag runs code) and ``--force_yml`` goes
  through ``exec``. :func:`parse_options` replaces BasicSR's with a safe, ordered loader and a key-path setter.
* ``--launcher pytorch|slurm`` hard-codes NCCL and ``torch.cuda.set_device``. :func:`init_dist` uses gloo when
  no GPU is present so that distributed training also runs on CPU.
* ``load_resume_state`` maps the state onto ``torch.cuda.current_device()`` and so crashes without CUDA.
* ``BaseModel.model_to_device`` wraps networks in DDP with ``device_ids=[torch.cuda.current_device()]``.
* ``torch.load`` now defaults to ``weights_only=True``; BasicSR's resume states hold a ``collections.Counter``
  (the milestones of ``MultiStepRestartLR``), which is allow-listed instead of unpickling arbitrary code.
* torchvision warns on the ``pretrained=`` argument BasicSR's VGG feature extractor passes, and would download
  weights when asked for pretrained ones; nothing can be downloaded at run time, so that is a clear error instead.
* lmdb 3 refuses to open one path twice in a process, so training and validation on one LMDB failed in BasicSR's
  ``LmdbBackend``; environments are shared per path and process.
* ``basicsr.metrics.niqe`` imports from SciPy's deprecated ``scipy.ndimage.filters`` namespace; the warning is
  silenced at import so that test suites running with ``-W error`` can import basicsr.
"""
import argparse
import collections
import importlib.util
import os
import random
import sys
import types
import warnings
from os import path as osp

import torch
import yaml

_APPLIED = False


class OptionError(ValueError):
    """An option file or a command-line option that cannot be used as given."""


# --------------------------------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------------------------------
def _alias_functional_tensor():
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules or importlib.util.find_spec('torchvision.transforms') is None:
        return
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return
    from torchvision.transforms import _functional_tensor
    alias = types.ModuleType(name)
    alias.__dict__.update({k: v for k, v in vars(_functional_tensor).items() if not k.startswith('__')})
    alias.__doc__ = 'Alias of torchvision.transforms._functional_tensor installed by skd_basicsr.compat.'
    sys.modules[name] = alias


class _VGGFactory:
    """``torchvision.models.vgg`` as BasicSR calls it (``vgg19(pretrained=False)``), without the deprecated flag."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        builder = getattr(self._module, name)
        if not callable(builder) or not name.startswith('vgg'):
            return builder

        def build(*args, pretrained=False, **kwargs):
            if pretrained:
                raise RuntimeError(
                    f'BasicSR asked torchvision to download {name} weights, but nothing can be downloaded at run '
                    'time here. Put the weights file in place first (see the `vgg_weights` option of '
                    'SKDContrastiveLoss), or use `feature_space: teacher`.')
            return builder(*args, weights=None, **kwargs)

        return build


# --------------------------------------------------------------------------------------------------------------
# option files
# --------------------------------------------------------------------------------------------------------------
try:
    _BaseSafeLoader = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _BaseSafeLoader = yaml.SafeLoader


class OrderedSafeLoader(_BaseSafeLoader):
    """PyYAML's safe loader (plain data only, no object tags) that keeps mapping order as BasicSR expects."""


def _construct_ordered_mapping(loader, node):
    loader.flatten_mapping(node)
    return collections.OrderedDict(loader.construct_pairs(node))


OrderedSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_ordered_mapping)


def yaml_load(stream, source='<string>'):
    """Parse YAML option text with the safe ordered loader.

    Args:
        stream (str | file): YAML text or an open file.
        source (str): Name used in error messages. Default: '<string>'.

    Returns:
        OrderedDict: The parsed options.

    Raises:
        OptionError: When the text is not valid YAML or uses a tag that would construct Python objects.
    """
    try:
        return yaml.load(stream, Loader=OrderedSafeLoader)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        where = f'{source}, line {mark.line + 1}' if mark is not None else source
        raise OptionError(f'{where}: {err.problem}. Option files are plain data; tags that build Python objects '
                          '(!!python/...) are refused and nothing in the file was run.') from None
    except yaml.YAMLError as err:
        raise OptionError(f'{source} is not valid YAML: {err}') from None


def _ordered_yaml():
    """Replacement of ``basicsr.utils.options.ordered_yaml``: the same (Loader, Dumper) pair, with a safe loader."""
    try:
        from yaml import CDumper as Dumper
    except ImportError:
        from yaml import Dumper

    Dumper.add_representer(collections.OrderedDict, lambda dumper, data: dumper.represent_dict(data.items()))
    return OrderedSafeLoader, Dumper


def parse_force_yml_value(text):
    """Turn the right-hand side of ``--force_yml key=value`` into a Python value, the way BasicSR does, safely.

    ``~`` and ``none`` give None, ``true``/``false`` booleans, numbers and ``!!float 1e-4`` numbers, ``[1, 2]``
    lists; anything else stays a string.
    """
    text = text.strip()
    if text.lower() == 'none':
        return None
    try:
        value = yaml.load(text, Loader=OrderedSafeLoader)
    except yaml.YAMLError:
        return text
    if isinstance(value, (dict, collections.OrderedDict)):
        return text
    return value


def apply_force_yml(opt, entries):
    """Apply ``--force_yml`` entries such as ``train:ema_decay=0.999`` to ``opt`` in place.

    Every key on the path but the last must already exist, as in BasicSR.

    Raises:
        OptionError: When an entry has no ``=`` or names a path that does not exist.
    """
    for entry in entries or []:
        if '=' not in entry:
            raise OptionError(f'--force_yml {entry!r}: expected key:subkey=value, for example train:ema_decay=0.999')
        keys, value = entry.split('=', 1)
        keys = [k.strip() for k in keys.strip().split(':')]
        node = opt
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node, dict) or key not in node:
                known = ', '.join(map(str, node)) if isinstance(node, dict) else type(node).__name__
                raise OptionError(f'--force_yml {entry!r}: no key {":".join(keys[:depth + 1])!r} in the options '
                                  f'(the keys there are: {known}).')
            node = node[key]
        if not isinstance(node, dict):
            raise OptionError(f'--force_yml {entry!r}: {":".join(keys[:-1])!r} is not a mapping.')
        node[keys[-1]] = parse_force_yml_value(value)


def build_arg_parser(is_train=True):
    """BasicSR's command-line flags, unchanged."""
    parser = argparse.ArgumentParser(
        prog='basicsr train' if is_train else 'basicsr test',
        description=('Run BasicSR\'s own training pipeline with the skd_basicsr plugin registered.'
                     if is_train else 'Run BasicSR\'s own test pipeline with the skd_basicsr plugin registered.'))
    parser.add_argument('-opt', type=str, required=True, help='Path to option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true', help='resume from the latest training state, if any')
    parser.add_argument('--debug', action='store_true', help='debug mode: prefix the name with debug_, log often')
    parser.add_argument('--local_rank', type=int, default=0, help='set by older torch.distributed launchers')
    parser.add_argument(
        '--force_yml', nargs='+', default=None, help='Force to update yml options. Examples: train:ema_decay=0.999')
    return parser


def parse_options(root_path, is_train=True, argv=None):
    """Drop-in replacement of ``basicsr.utils.options.parse_options`` (same flags, same result), made safe.

    Args:
        root_path (str): Folder under which experiments/ (train) or results/ (test) are created.
        is_train (bool): Training or testing. Default: True.
        argv (list[str] | None): Arguments; ``sys.argv[1:]`` when None. Default: None.

    Returns:
        tuple: (opt, args) as BasicSR returns them.
    """
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info

    args = build_arg_parser(is_train).parse_args(argv)
    if not osp.isfile(args.opt):
        raise OptionError(f'-opt {args.opt}: no such option file.')
    with open(args.opt, mode='r') as f:
        opt = yaml_load(f, source=args.opt)
    if not isinstance(opt, dict):
        raise OptionError(f'{args.opt}: expected a mapping of options at the top level, got {type(opt).__name__}.')

    for key in ('name', 'datasets', 'path'):
        if key not in opt:
            raise OptionError(f'{args.opt}: the option `{key}` is required (see options/ for complete examples).')

    if args.launcher == 'none':
        opt['dist'] = False
        print('Disable distributed.', flush=True)
    else:
        opt['dist'] = True
        # as in BasicSR, dist_params (the port) only matter to slurm; the backend follows the hardware
        port = (opt.get('dist_params') or {}).get('port') if args.launcher == 'slurm' else None
        init_dist(args.launcher, port=port)
    opt['rank'], opt['world_size'] = get_dist_info()

    seed = opt.get('manual_seed')
    if seed is None:
        seed = random.randint(1, 10000)
        opt['manual_seed'] = seed
    set_random_seed(seed + opt['rank'])

    apply_force_yml(opt, args.force_yml)

    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train

    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']

    if opt.get('num_gpu', 'auto') == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()

    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = osp.expanduser(dataset[key])

    for key, val in opt['path'].items():
        if val is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(val)

    if is_train:
        experiments_root = osp.join(root_path, 'experiments', opt['name'])
        opt['path']['experiments_root'] = experiments_root
        opt['path']['models'] = osp.join(experiments_root, 'models')
        opt['path']['training_states'] = osp.join(experiments_root, 'training_states')
        opt['path']['log'] = experiments_root
        opt['path']['visualization'] = osp.join(experiments_root, 'visualization')
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        results_root = osp.join(root_path, 'results', opt['name'])
        opt['path']['results_root'] = results_root
        opt['path']['log'] = results_root
        opt['path']['visualization'] = osp.join(results_root, 'visualization')

    return opt, args


# --------------------------------------------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------------------------------------------
def default_backend():
    """NCCL where a GPU is available, gloo otherwise."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def init_dist(launcher, backend=None, port=None):
    """``basicsr.utils.dist_util.init_dist`` that also runs on CPU.

    Args:
        launcher (str): 'pytorch' (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR...) or 'slurm'.
        backend (str | None): torch.distributed backend; NCCL with GPUs, gloo without. Default: None.
        port (int | None): Master port for slurm (``dist_params.port`` in the options). Default: None.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if dist.is_initialized():
        return
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    backend = backend or default_backend()
    if launcher == 'pytorch':
        rank = int(os.environ['RANK'])
    elif launcher == 'slurm':
        import subprocess
        rank = int(os.environ['SLURM_PROCID'])
        node_list = os.environ['SLURM_NODELIST']
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = str(rank)
        os.environ['LOCAL_RANK'] = str(rank % max(torch.cuda.device_count(), 1))
    else:
        raise ValueError(f'Invalid launcher type: {launcher}. Use none, pytorch or slurm.')
    if backend == 'nccl':
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend)


def model_to_device(self, net):
    """``BaseModel.model_to_device`` that wraps in DDP without ``device_ids`` on CPU."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    net = net.to(self.device)
    if self.opt['dist']:
        find_unused = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


# --------------------------------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------------------------------
def safe_torch_load(path, map_location='cpu'):
    """``torch.load(weights_only=True)`` with BasicSR's training-state types allowed, and a clear refusal otherwise.

    Raises:
        OptionError: When the file does not exist or needs more than plain tensors and containers to load.
    """
    if not osp.isfile(path):
        raise OptionError(f'{path}: no such file.')
    try:
        with torch.serialization.safe_globals([collections.Counter, collections.OrderedDict]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise OptionError(f'{path} cannot be loaded as weights only (plain tensors and containers): '
                          f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}. Files that need '
                          'code to be unpickled are refused; re-save it as a state_dict.') from None


def latest_training_state(opt):
    """Path of the newest ``<iter>.state`` under the experiment's training_states folder, or None."""
    state_dir = opt['path'].get('training_states') or osp.join('experiments', opt['name'], 'training_states')
    if not osp.isdir(state_dir):
        return None
    iters = [int(f[:-len('.state')]) for f in os.listdir(state_dir) if f.endswith('.state') and f[:-6].isdigit()]
    return osp.join(state_dir, f'{max(iters)}.state') if iters else None


def load_resume_state(opt):
    """``basicsr.train.load_resume_state`` that works without CUDA and keeps frozen networks on their own weights.

    BasicSR's ``check_resume`` points ``pretrain_network_<x>`` of every ``network_<x>`` at the checkpoint saved
    at the resumed iteration. Networks that are never trained (listed in ``opt['frozen_networks']``, by default
    the distillation teacher ``network_t``) are not saved, so they keep their configured weights and param key.
    """
    from basicsr.utils.misc import check_resume

    if opt['auto_resume']:
        path = latest_training_state(opt)
        if path is not None:
            opt['path']['resume_state'] = path
    path = opt['path'].get('resume_state')
    if not path:
        return None

    device = torch.device('cuda', torch.cuda.current_device()) if (torch.cuda.is_available()
                                                                   and opt.get('num_gpu', 0) != 0) else 'cpu'
    resume_state = safe_torch_load(path, map_location=device)

    frozen = [n for n in opt.get('frozen_networks', ['network_t']) if n in opt]
    kept = {k: opt['path'][k] for n in frozen for k in (f'pretrain_{n}', f'param_key_{n[len("network_"):]}')
            if k in opt['path']}
    ignore = list(opt['path'].get('ignore_resume_networks') or [])
    opt['path']['ignore_resume_networks'] = ignore + [n for n in frozen if n not in ignore]
    check_resume(opt, resume_state['iter'])
    opt['path'].update(kept)
    return resume_state


# --------------------------------------------------------------------------------------------------------------
# lmdb
# --------------------------------------------------------------------------------------------------------------
_LMDB_ENVIRONMENTS = {}


def _lmdb_backend_init(self, db_paths, client_keys='default', readonly=True, lock=False, readahead=False, **kwargs):
    """``LmdbBackend.__init__`` that shares one environment per LMDB path and process.

    lmdb 3 refuses to open one path twice in a process ('already open'), so a validation set reading the training
    LMDB, or two datasets on one LMDB, failed. Environments are keyed by process id too: DataLoader workers are
    forked and must open their own.
    """
    import lmdb

    db_paths = [db_paths] if isinstance(db_paths, str) else list(db_paths)
    client_keys = [client_keys] if isinstance(client_keys, str) else list(client_keys)
    if len(db_paths) != len(client_keys):
        raise ValueError(f'lmdb backend: {len(db_paths)} db_paths but {len(client_keys)} client_keys.')
    self.db_paths = [str(p) for p in db_paths]
    self._client = {}
    for key, path in zip(client_keys, self.db_paths):
        cache_key = (os.getpid(), osp.realpath(path))
        if cache_key not in _LMDB_ENVIRONMENTS:
            _LMDB_ENVIRONMENTS[cache_key] = lmdb.open(path, readonly=readonly, lock=lock, readahead=readahead,
                                                      **kwargs)
        self._client[key] = _LMDB_ENVIRONMENTS[cache_key]


# --------------------------------------------------------------------------------------------------------------
def apply():
    """Install every workaround. Safe to call more than once."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_functional_tensor()

    with warnings.catch_warnings():
        # basicsr.metrics.niqe imports from scipy.ndimage.filters, deprecated namespace, still working
        warnings.filterwarnings('ignore', message='Please import `convolve`', category=DeprecationWarning)
        import basicsr.archs.vgg_arch as vgg_arch
        import basicsr.models.base_model as base_model
        import basicsr.test as bsr_test
        import basicsr.train as bsr_train
        import basicsr.utils.dist_util as dist_util
        import basicsr.utils.file_client as file_client
        import basicsr.utils.options as options

    vgg_arch.vgg = _VGGFactory(vgg_arch.vgg)
    options.ordered_yaml = _ordered_yaml
    options.parse_options = bsr_train.parse_options = bsr_test.parse_options = parse_options
    dist_util.init_dist = options.init_dist = init_dist
    bsr_train.load_resume_state = load_resume_state
    base_model.BaseModel.model_to_device = model_to_device
    file_client.LmdbBackend.__init__ = _lmdb_backend_init
    _APPLIED = True
