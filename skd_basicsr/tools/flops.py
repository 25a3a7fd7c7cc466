"""``basicsr flops``: parameters, MACs and CPU latency of network_g (student) and network_t (teacher).

The counts are those of :mod:`skd_basicsr.platform.cost`: ``macs`` follows the convention of the 141 G usually
quoted for Restormer at 256 x 256 (thop, matmuls left out); ``macs_with_attention`` adds Restormer's attention
matmuls, counted by hooks.
"""
import copy
import json
import sys

import torch

from skd_basicsr.platform.cost import (alternating_latency_ms, attention_matmul_macs, count_params,  # noqa: F401
                                       median_latency_ms, thop_macs)
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.tools import command_parser, run_command

COUNTER = 'thop.profile (convolutions, norms, activations; matmuls not counted) + attention matmuls counted by hooks'


def _build(network_opt, size):
    from basicsr.archs import build_network

    from skd_basicsr.platform.network_spec import NetworkSpec

    net = build_network(copy.deepcopy(network_opt)).eval()
    return net, torch.rand(1, NetworkSpec.from_options(network_opt).in_channels, *size)


def _counts(net, x):
    macs = thop_macs(net, x)
    return {'params': count_params(net), 'macs': macs, 'macs_with_attention': macs + attention_matmul_macs(net, x)}


def measure(network_opt, size, repeats):
    """{'params', 'macs', 'macs_with_attention', 'latency_ms'} of a network built from BasicSR options."""
    net, x = _build(network_opt, size)
    return dict(_counts(net, x), latency_ms=round(median_latency_ms(net, x, repeats), 2))


def measure_alternately(network_opts, size, repeats):
    """:func:`measure` of several networks of one input size, their latencies timed in turn (one input for all)."""
    built = [_build(opt, size) for opt in network_opts]
    latency = alternating_latency_ms([net for net, _ in built], built[0][1], repeats)
    return [dict(_counts(net, x), latency_ms=round(ms, 2)) for (net, x), ms in zip(built, latency)]


def measure_pair(student_opt, teacher_opt, size, repeats):
    """:func:`measure` of a student and its teacher, their latencies timed alternately."""
    return measure_alternately([student_opt, teacher_opt], size, repeats)


def report(opt, size, repeats):
    """The measurements of the option file's networks, with student / teacher ratios when there is a teacher (the
    two timed alternately)."""
    if 'network_g' not in opt:
        raise OptionError('the option file has no network_g.')
    if 'network_t' in opt:
        student, teacher = measure_pair(opt['network_g'], opt['network_t'], size, repeats)
        result = {'student': student, 'teacher': teacher}
        result['ratio'] = {k: round(result['student'][k] / result['teacher'][k], 4) for k in result['student']}
    else:
        result = {'student': measure(opt['network_g'], size, repeats)}
    result['size'] = list(size)
    result['counter'] = COUNTER
    return result


def format_table(result):
    rows = [('', 'params', 'MACs (G)', 'MACs + attn (G)', 'latency (ms)')]
    for name in ('student', 'teacher'):
        if name in result:
            r = result[name]
            rows.append((name, f'{r["params"] / 1e6:.3f} M', f'{r["macs"] / 1e9:.2f}',
                         f'{r["macs_with_attention"] / 1e9:.2f}', f'{r["latency_ms"]:.1f}'))
    if 'ratio' in result:
        r = result['ratio']
        rows.append(('ratio', f'{r["params"]:.3f}', f'{r["macs"]:.3f}', f'{r["macs_with_attention"]:.3f}',
                     f'{r["latency_ms"]:.3f}'))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    h, w = result['size']
    lines.append(f'input 1 x C x {h} x {w}, CPU latency median (student and teacher timed alternately), '
                 f'{torch.get_num_threads()} threads. MACs: {COUNTER}.')
    return '\n'.join(lines)


def build_parser():
    parser = command_parser('basicsr flops', __doc__)
    parser.add_argument('-opt', required=True, help='option file with network_g (and network_t)')
    parser.add_argument('--size', nargs=2, type=int, default=[256, 256], metavar=('H', 'W'))
    parser.add_argument('--repeats', type=int, default=5, help='timed forwards; the median is reported')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    return parser


def main(argv=None):
    # a network that cannot be built from its options raises ValueError
    return run_command(build_parser(), run, argv, usage_errors=(ValueError, ))


def run(args):
    """Print the report of the option file ``args.opt``, as a table or as JSON."""
    import skd_basicsr  # noqa: F401  (registries)
    from skd_basicsr.platform.options import read_option_file

    result = report(read_option_file(args.opt, required=()), tuple(args.size), max(args.repeats, 1))
    print(json.dumps(result) if args.json else format_table(result))


if __name__ == '__main__':
    sys.exit(main())
