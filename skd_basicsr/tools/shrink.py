"""``basicsr shrink``: a student checkpoint selected from a teacher's weights, for ``pretrain_network_g``.

Builds network_g of the option file, selects its weights from the teacher checkpoint
(:func:`skd_basicsr.distill.weight_selection.select_weights`: evenly spaced blocks, leading channels of each head,
gate half and concatenated part) and writes ``{'params': state}``, which loads with ``strict_load_g: true``.
"""
import argparse
import copy
import sys
from os import path as osp


def load_teacher_state(path, param_key):
    """The teacher's state dict from ``path`` (weights only), ``module.`` prefixes dropped.

    Args:
        path (str): Checkpoint file.
        param_key (str): Key of the state dict in the file ('params', 'params_ema'); '' when the file is the state
            dict itself.
    """
    from skd_basicsr.errors import OptionError
    from skd_basicsr.models.checkpoint import safe_torch_load

    state = safe_torch_load(path)
    if param_key:
        if not isinstance(state, dict) or param_key not in state:
            keys = list(state)[:10] if isinstance(state, dict) else type(state).__name__
            raise OptionError(f'--teacher {path}: no param key {param_key!r}; the file has {keys}.')
        state = state[param_key]
    if not isinstance(state, dict) or not all(hasattr(v, 'shape') for v in state.values()):
        raise OptionError(f'--teacher {path} (param key {param_key!r}) is not a state dict of tensors.')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def build_student(opt_path):
    """network_g of the option file, built by BasicSR's registry."""
    from basicsr.archs import build_network

    from skd_basicsr.errors import OptionError
    from skd_basicsr.options import yaml_load

    if not osp.isfile(opt_path):
        raise OptionError(f'-opt {opt_path}: no such option file.')
    with open(opt_path) as f:
        opt = yaml_load(f, source=opt_path)
    if not isinstance(opt, dict) or 'network_g' not in opt:
        raise OptionError(f'-opt {opt_path} has no network_g.')
    try:
        return build_network(copy.deepcopy(opt['network_g']))
    except (KeyError, TypeError) as err:  # the registry's unknown type, or constructor arguments it does not take
        raise OptionError(f'-opt {opt_path}: network_g cannot be built: {err}') from None


def build_parser():
    parser = argparse.ArgumentParser(prog='basicsr shrink', description=__doc__.split('\n')[0])
    parser.add_argument('-opt', required=True, help='option file whose network_g is the student')
    parser.add_argument('--teacher', required=True, help='teacher checkpoint (.pth), of the same family')
    parser.add_argument('--param_key',
                        default='params',
                        help="key of the teacher's state dict in the file; '' "
                        'for a file that is the state dict itself')
    parser.add_argument('--strict',
                        action='store_true',
                        help='refuse teacher tensors the student has no place for '
                        '(outside dropped blocks) instead of listing them')
    parser.add_argument('--out', required=True, help='student checkpoint to write; must not exist')
    return parser


def main(argv=None):
    import skd_basicsr  # noqa: F401  (registries)
    from skd_basicsr.distill.weight_selection import select_weights
    from skd_basicsr.errors import OptionError
    from skd_basicsr.models.checkpoint import atomic_torch_save

    args = build_parser().parse_args(argv)
    try:
        if osp.exists(args.out):
            raise OptionError(f'--out {args.out} exists; remove it or choose another name.')
        student = build_student(args.opt)
        state, report = select_weights(load_teacher_state(args.teacher, args.param_key), student, strict=args.strict)
    except OptionError as err:
        print(f'basicsr shrink: error: {err}', file=sys.stderr)
        return 2
    student.load_state_dict(state, strict=True)  # what pretrain_network_g with strict_load_g will do
    atomic_torch_save({'params': state}, args.out)
    print('\n'.join(report.lines()))
    print(f"Wrote {args.out} (param key 'params'); load it with path.pretrain_network_g and strict_load_g: true.")
    return 0


if __name__ == '__main__':
    sys.exit(main())
