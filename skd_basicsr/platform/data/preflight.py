"""Dataset checks that run before training starts, for every BasicSR dataset type.

BasicSR finds a wrong ``dataroot`` or a damaged LMDB only when a worker first reads from it, often as an
``AssertionError`` or ``'NoneType' object has no attribute`` deep in a data-loader worker. :func:`checked` wraps
the ``build_dataset`` that BasicSR's train and test pipelines call: the dataset's folders must exist, an LMDB must
have its meta_info.txt and its first key must open and decode; :func:`naming_files` makes an image that fails to
decode name its file. :mod:`skd_basicsr.platform.patches` installs both.
"""
import functools
from os import path as osp

import cv2
import numpy as np

from skd_basicsr.platform.errors import OptionError

DATAROOT_KEYS = ('dataroot_gt', 'dataroot_lq')


def check_dataset_options(opt):
    """Raise :class:`OptionError` naming the dataset, the key and the fix for an unusable dataroot."""
    name = opt.get('name', opt.get('type'))
    lmdb = (opt.get('io_backend') or {}).get('type') == 'lmdb'
    for key in DATAROOT_KEYS:
        root = opt.get(key)
        if root is None:
            continue
        if not osp.exists(root):
            raise OptionError(f'datasets {name}: {key} {root} does not exist.')
        if lmdb:
            check_lmdb(root, f'datasets {name}: {key}')


def check_lmdb(root, where):
    """An LMDB that BasicSR can read: ``*.lmdb`` with data.mdb and meta_info.txt, whose first key decodes."""
    from skd_basicsr.platform.compat import shared_lmdb_environment

    if not root.endswith('.lmdb'):
        raise OptionError(f'{where} {root}: io_backend is lmdb but the path does not end with .lmdb.')
    meta = osp.join(root, 'meta_info.txt')
    if not osp.isfile(meta) or not osp.isfile(osp.join(root, 'data.mdb')):
        raise OptionError(f'{where} {root} is not a BasicSR LMDB (no meta_info.txt or data.mdb). Make one with '
                          '`basicsr lmdb --input FOLDER --output NAME.lmdb`.')
    with open(meta) as f:
        first = f.readline().split('.')[0]
    if not first:
        raise OptionError(f'{where}: {meta} is empty.')
    env = shared_lmdb_environment(root, readonly=True, lock=False, readahead=False)
    with env.begin() as txn:
        value = txn.get(first.encode('ascii'))
    if value is None:
        raise OptionError(f'{where}: key {first!r} of meta_info.txt is not in {root}; the LMDB and its '
                          'meta_info.txt do not belong together. Re-pack it with `basicsr lmdb`.')
    if cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED) is None:
        raise OptionError(f'{where}: the image under key {first!r} in {root} does not decode.')


def naming_files(getitem):
    """A dataset's ``__getitem__`` that names the file(s) of sample i when reading it fails (BasicSR's paired
    datasets)."""

    @functools.wraps(getitem)
    def named(self, index):
        try:
            return getitem(self, index)
        except (AttributeError, TypeError, cv2.error) as err:
            paths = self.paths[index] if hasattr(self, 'paths') else index
            raise ValueError(f'{type(self).__name__}: cannot read sample {index} {paths}: {err}') from err

    return named


def checked(build_dataset):
    """``build_dataset`` that checks the options first."""

    @functools.wraps(build_dataset)
    def build(dataset_opt):
        check_dataset_options(dataset_opt)
        return build_dataset(dataset_opt)

    return build


def refusing_empty_loader(create_train_val_dataloader):
    """BasicSR's ``create_train_val_dataloader`` that refuses a training loader without one full batch.

    BasicSR's training loader drops the last incomplete batch, so a set smaller than one batch (per GPU, times
    ``train.accum_iter``) yields nothing, and BasicSR's loop then ends at iteration 0 as if it had trained.
    """

    @functools.wraps(create_train_val_dataloader)
    def create(opt, logger):
        result = create_train_val_dataloader(opt, logger)
        train_loader = result[0]
        if train_loader is not None and len(train_loader) == 0:
            dataset_opt = opt['datasets']['train']
            samples = len(train_loader.sampler)
            raise OptionError(
                f'datasets {dataset_opt.get("name", "train")}: {samples} training sample(s) per GPU '
                f'({len(train_loader.dataset)} image(s) x dataset_enlarge_ratio '
                f'{dataset_opt.get("dataset_enlarge_ratio", 1)}, over {opt.get("world_size", 1)} GPU(s)) make no '
                f'full batch of {train_loader.batch_size}, and incomplete batches are dropped: training would do '
                'nothing. Raise dataset_enlarge_ratio, or lower batch_size_per_gpu or train.accum_iter.')
        return result

    return create
