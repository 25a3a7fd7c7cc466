"""``basicsr export``: write a BasicSR network as ONNX (dynamic height and width), checked against PyTorch.

The network and its weights are read as ``basicsr infer`` reads them. The file is written beside its destination,
run with onnxruntime at two sizes (one square, one not) next to PyTorch, and moved into place only when the largest
absolute difference at both is within the tolerance. The multiple of height and width the network needs (8 for
Restormer) is stored in the file's metadata; ``basicsr infer --onnx`` pads to it.
"""
import os
import sys
from os import path as osp

from skd_basicsr.platform.errors import OptionError
from skd_basicsr.tools import command_parser, run_command

TOLERANCE = 1e-4


def build_parser():
    parser = command_parser('basicsr export', __doc__)
    parser.add_argument('-opt', required=True, help='option file with network_g (test or training), or the demo\'s '
                        'results.json')
    parser.add_argument('--entry', help='with results.json: which network (teacher, scratch, output_kd, skd)')
    parser.add_argument('--weights', help='weights file; default: path.pretrain_network_g, or results.json\'s')
    parser.add_argument('--param_key', help='key of the weights in the file; default: path.param_key_g or params '
                        '(params_ema falls back to params)')
    parser.add_argument('--onnx', required=True, help='the ONNX file to write')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset')
    parser.add_argument('--overwrite', action='store_true', help='replace --onnx if it exists')
    return parser


def main(argv=None):
    return run_command(build_parser(), run, argv)


def run(args):
    """Load the network, write it as ONNX beside ``args.onnx``, compare, and move it into place when it matches."""
    from skd_basicsr.deploy import onnx_util
    from skd_basicsr.deploy.network_io import load_restorer, network_from_file
    from skd_basicsr.platform.network_spec import NetworkSpec

    if osp.exists(args.onnx) and not args.overwrite:
        raise OptionError(f'--onnx {args.onnx} exists; add --overwrite to replace it.')
    onnx_util.import_deploy('onnx')
    onnx_util.import_deploy('onnxruntime')
    net_opt, weights, param_key = network_from_file(args.opt, args.entry)
    net = load_restorer(net_opt, args.weights or weights, args.param_key or param_key)
    spec = NetworkSpec.from_options(net_opt)
    multiple = spec.size_multiple

    os.makedirs(osp.dirname(osp.abspath(args.onnx)), exist_ok=True)
    tmp = f'{args.onnx}.tmp{os.getpid()}'
    try:
        onnx_util.export_onnx(net, tmp, spec.in_channels, multiple, net_opt, args.opset)
        runner = onnx_util.OnnxRunner(tmp)
        diffs = {size: onnx_util.max_abs_diff(net, runner, size) for size in onnx_util.check_sizes(multiple)}
        for (h, w), diff in diffs.items():
            print(f'onnxruntime vs PyTorch at {h}x{w}: max abs diff {diff:.2e} (tolerance {TOLERANCE:.0e})')
        if max(diffs.values()) > TOLERANCE:
            print(f'basicsr export: error: onnxruntime differs from PyTorch by more than {TOLERANCE:.0e}; '
                  f'{args.onnx} not written.', file=sys.stderr)
            return 1
        os.replace(tmp, args.onnx)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    print(f'Wrote {args.onnx}: {net_opt["type"]}, opset {args.opset}, dynamic height and width (padded by the runner '
          f'to a multiple of {multiple}).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
