"""Shims that let the unmodified PyPI ``basicsr`` 1.4.2 run on today's torch, torchvision, lmdb and SciPy.

Each one replaces a piece of BasicSR that breaks on the installed libraries, and nothing else;
:mod:`skd_basicsr.platform.patches` installs them (with every other change made to BasicSR) and says why for each.

* :func:`alias_functional_tensor`: ``torchvision.transforms.functional_tensor`` was removed from torchvision;
  ``basicsr.data.degradations`` imports ``rgb_to_grayscale`` from it, so ``import basicsr`` fails.
* :func:`import_basicsr_quietly`: ``basicsr.metrics.niqe`` imports from SciPy's deprecated ``scipy.ndimage.filters``
  namespace; the warning is silenced at import so that test suites running with ``-W error`` can import basicsr.
* :class:`VGGFactory`: torchvision warns on the ``pretrained=`` argument BasicSR's VGG feature extractor passes,
  and would download weights when asked for pretrained ones; nothing can be downloaded at run time.
* :func:`init_dist`, :func:`model_to_device`: ``--launcher pytorch|slurm`` hard-codes NCCL and
  ``torch.cuda.set_device``, and DDP is given ``device_ids=[torch.cuda.current_device()]``; on CPU, gloo and no
  device ids.
* :func:`lmdb_backend_init`: lmdb 3 refuses to open one path twice in a process, so training and validation on one
  LMDB failed in BasicSR's ``LmdbBackend``; environments are shared per path and process.
"""
import importlib
import importlib.util
import os
import sys
import types
import warnings
from os import path as osp

import torch

_LMDB_ENVIRONMENTS = {}


def alias_functional_tensor():
    """Register ``torchvision.transforms.functional_tensor`` as an alias of its private successor, if missing."""
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
    alias.__doc__ = 'Alias of torchvision.transforms._functional_tensor installed by skd_basicsr.platform.compat.'
    sys.modules[name] = alias


def import_basicsr_quietly(*names):
    """Import BasicSR modules by dotted name with SciPy's ``scipy.ndimage.filters`` deprecation silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Please import `convolve`', category=DeprecationWarning)
        return [importlib.import_module(name) for name in names]


class VGGFactory:
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


def default_backend():
    """NCCL where a GPU is available, gloo otherwise."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def init_dist(launcher, backend=None, port=None):
    """``basicsr.utils.dist_util.init_dist`` that also runs on CPU.

    Args:
        launcher (str): 'pytorch' (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR...) or 'slurm'.
        backend (str | None): torch.distributed backend with GPUs (``dist_params.backend``); gloo is used without
            them whatever it says. Default: None (NCCL with GPUs).
        port (int | None): Master port for slurm (``dist_params.port`` in the options). Default: None.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if dist.is_initialized():
        return
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    backend = (backend or default_backend()) if torch.cuda.is_available() else default_backend()
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


def resume_device(opt):
    """Where a training state is loaded: the current GPU when training on GPUs, the CPU otherwise (BasicSR asks
    ``torch.cuda.current_device()`` unconditionally)."""
    if torch.cuda.is_available() and opt.get('num_gpu', 0) != 0:
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def lmdb_backend_init(self, db_paths, client_keys='default', readonly=True, lock=False, readahead=False, **kwargs):
    """``LmdbBackend.__init__`` that shares one environment per LMDB path and process.

    lmdb 3 refuses to open one path twice in a process ('already open'), so a validation set reading the training
    LMDB, or two datasets on one LMDB, failed. Environments are keyed by process id too: DataLoader workers are
    forked and must open their own.
    """
    db_paths = [db_paths] if isinstance(db_paths, str) else list(db_paths)
    client_keys = [client_keys] if isinstance(client_keys, str) else list(client_keys)
    if len(db_paths) != len(client_keys):
        raise ValueError(f'lmdb backend: {len(db_paths)} db_paths but {len(client_keys)} client_keys.')
    self.db_paths = [str(p) for p in db_paths]
    self._client = {
        key: shared_lmdb_environment(path, readonly=readonly, lock=lock, readahead=readahead, **kwargs)
        for key, path in zip(client_keys, self.db_paths)
    }


def shared_lmdb_environment(path, **kwargs):
    """The environment of the LMDB at ``path`` for this process, opened on first use (see :func:`lmdb_backend_init`).

    Everything in this package that reads an LMDB goes through here (the dataset checks too), so that a second
    reader in the same process (validation on the training LMDB, a second training run) never meets lmdb 3's
    'already open'. The environments stay open for the life of the process.
    """
    import lmdb

    cache_key = (os.getpid(), osp.realpath(path))
    if cache_key not in _LMDB_ENVIRONMENTS:
        _LMDB_ENVIRONMENTS[cache_key] = lmdb.open(path, **kwargs)
    return _LMDB_ENVIRONMENTS[cache_key]
