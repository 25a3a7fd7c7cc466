"""``basicsr shrink``: a student checkpoint selected from a teacher's weights, for ``pretrain_network_g``.

Builds network_g of the option file, selects its weights from the teacher checkpoint
(:func:`skd_basicsr.distill.weight_selection.select_weights`: evenly spaced blocks, leading channels of each head,
gate half and concatenated part) and writes ``{'params': state}``, which loads with ``strict_load_g: true``. A
network without rules of its own is refused unless ``--generic`` asks for the plain leading slice.
"""
import sys
from os import path as osp

from skd_basicsr.tools import command_parser, run_command


def build_parser():
    parser = command_parser('basicsr shrink', __doc__)
    parser.add_argument('-opt', required=True, help='option file whose network_g is the student')
    parser.add_argument('--teacher', required=True, help='teacher checkpoint (.pth), of the same family')
    parser.add_argument('--param_key', default='params',
                        help="key of the teacher's state dict in the file; '' for a file that is the state dict itself")
    parser.add_argument('--strict', action='store_true',
                        help='refuse teacher tensors the student has no place for (outside dropped blocks) instead of '
                        'listing them')
    parser.add_argument('--generic', action='store_true',
                        help='for a network without weight-selection rules of its own, take the plain leading slice '
                        'of every teacher tensor instead of refusing; it scrambles attention heads and gated layers '
                        '(a family with rules keeps them)')
    parser.add_argument('--out', required=True, help='student checkpoint to write; must not exist')
    return parser


def main(argv=None):
    return run_command(build_parser(), run, argv)


def run(args):
    """Select the student of ``args.opt`` from ``args.teacher`` and write it to ``args.out``."""
    import skd_basicsr  # noqa: F401  (registries)
    from skd_basicsr.distill.weight_selection import select_weights
    from skd_basicsr.platform.errors import OptionError
    from skd_basicsr.platform.checkpoint import atomic_torch_save, read_weights
    from skd_basicsr.deploy.network_io import build_network_from_options, network_from_file

    if osp.exists(args.out):
        raise OptionError(f'--out {args.out} exists; remove it or choose another name.')
    student = build_network_from_options(network_from_file(args.opt)[0])
    teacher = read_weights(args.teacher, args.param_key or None, key_option='--param_key')
    state, report = select_weights(teacher, student, strict=args.strict, generic=args.generic)
    student.load_state_dict(state, strict=True)  # what pretrain_network_g with strict_load_g will do
    atomic_torch_save({'params': state}, args.out)
    print('\n'.join(report.lines()))
    print(f"Wrote {args.out} (param key 'params'); load it with path.pretrain_network_g and strict_load_g: true.")


if __name__ == '__main__':
    sys.exit(main())
