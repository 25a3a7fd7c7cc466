"""Option files and the train/test command line: BasicSR's ``parse_options``, reading the file safely.

BasicSR 1.4.2 reads option files with PyYAML's full loader (a ``!!python/...`` tag runs code) and applies
``--force_yml`` through ``exec``. Here the file is read with a safe, ordered loader (:func:`yaml_load`), checked,
and updated by ``--force_yml`` with a key-path setter (:func:`apply_force_yml`); BasicSR's own ``parse_options``
then does everything else (distributed set-up, seed, debug mode, dataset phases, experiment paths) on the result.
"""
import argparse
import collections
import contextlib
import sys
import tempfile
from os import path as osp

import yaml

from skd_basicsr.platform.errors import OptionError

REQUIRED_KEYS = ('name', 'datasets', 'path')

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


def ordered_yaml():
    """``basicsr.utils.options.ordered_yaml``: the same (Loader, Dumper) pair, with a safe loader."""
    try:
        from yaml import CDumper as Dumper
    except ImportError:
        from yaml import Dumper

    Dumper.add_representer(collections.OrderedDict, lambda dumper, data: dumper.represent_dict(data.items()))
    return OrderedSafeLoader, Dumper


def read_option_file(path, required=REQUIRED_KEYS):
    """The options of a YAML file, read safely and checked for the keys BasicSR cannot do without.

    Args:
        path (str): The option file.
        required (tuple[str]): Top-level keys that must be present. Default: ('name', 'datasets', 'path').

    Returns:
        OrderedDict: The options.

    Raises:
        OptionError: When the file is missing, unsafe or malformed, or lacks a required key.
    """
    if not osp.isfile(path):
        raise OptionError(f'-opt {path}: no such option file.')
    with open(path, mode='r') as f:
        opt = yaml_load(f, source=path)
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: expected a mapping of options at the top level, got {type(opt).__name__}.')
    for key in required:
        if key not in opt:
            raise OptionError(f'{path}: the option `{key}` is required (see options/ for complete examples).')
    return opt


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
    """BasicSR's command-line flags, unchanged, with help texts and the ``basicsr`` command's name."""
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


@contextlib.contextmanager
def argv_for_basicsr(argv):
    """``sys.argv`` set to ``argv`` while the block runs, as BasicSR's pipelines and parser read it; restored after."""
    saved, sys.argv = sys.argv, list(argv)
    try:
        yield
    finally:
        sys.argv = saved


def parse_options(root_path, is_train=True, argv=None):
    """``basicsr.utils.options.parse_options`` (same flags, same result) on options read and forced safely.

    The file is read with :func:`read_option_file` and updated with :func:`apply_force_yml`; BasicSR's function
    then gets the result as its option file, without ``--force_yml``. ``num_gpu`` defaults to 'auto'.

    Args:
        root_path (str): Folder under which experiments/ (train) or results/ (test) are created.
        is_train (bool): Training or testing. Default: True.
        argv (list[str] | None): Arguments; ``sys.argv[1:]`` when None. Default: None.

    Returns:
        tuple: (opt, args) as BasicSR returns them; ``args.opt`` is the file given.
    """
    from basicsr.utils import options as basicsr_options

    args = build_arg_parser(is_train).parse_args(argv)
    opt = read_option_file(args.opt)
    apply_force_yml(opt, args.force_yml)
    opt.setdefault('num_gpu', 'auto')
    flags = ['--launcher', args.launcher, '--local_rank', str(args.local_rank)]
    flags += ['--auto_resume'] * args.auto_resume + ['--debug'] * args.debug
    with tempfile.TemporaryDirectory() as folder:
        forced = osp.join(folder, osp.basename(args.opt))
        with open(forced, 'w') as f:
            yaml.dump(opt, f, Dumper=ordered_yaml()[1], sort_keys=False)
        with argv_for_basicsr([sys.argv[0], '-opt', forced] + flags):
            opt, _ = basicsr_options.parse_options(root_path, is_train)
    return opt, args
