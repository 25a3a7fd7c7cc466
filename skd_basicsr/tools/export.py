"""``basicsr export``: write a BasicSR network as ONNX (dynamic height and width), checked against PyTorch.

The network and its weights are read as ``basicsr infer`` reads them. The file is written beside its destination,
run with onnxruntime at two sizes (one square, one not) next to PyTorch, and moved into place only when the largest
absolute difference at both is within the tolerance. The multiple of height and width the network needs (8 for
Restormer) is stored in the file's metadata; ``basicsr infer --onnx`` pads to it.

``--fp16`` writes the network's weights and arithmetic in float16 behind a float32 input and output, half the file,
for providers with float16 kernels (CUDA). It is compared with the float32 PyTorch network within
:data:`TOLERANCE_FP16`. onnxruntime's CPU provider runs most of such a graph in float32 behind casts it inserts (the
command names those operators), so it checks the float16 weights and the graph but not float16 arithmetic; the same
network run by PyTorch in float16 arithmetic is checked beside it, which finds values that overflow float16.
"""
import math
import os
import sys
from os import path as osp

from skd_basicsr.platform.errors import OptionError
from skd_basicsr.tools import command_parser, run_command

TOLERANCE = 1e-4
# Half an 8-bit level (1 / 255 = 3.9e-3): a float16 file within it writes 8-bit images at most one level from the
# float32 network's. Measured on the demo's teacher (coffee, 256 x 256, sigma 25; a random 64 x 96 input alike):
# onnxruntime's CPU provider on the float16 file 5.2e-4 at most, PyTorch in float16 arithmetic 8.8e-4
TOLERANCE_FP16 = 2e-3


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
    parser.add_argument('--fp16', action='store_true', help='float16 weights and arithmetic, float32 input and '
                        f'output; checked against float32 PyTorch within {TOLERANCE_FP16:.0e}')
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
    tolerance = TOLERANCE_FP16 if args.fp16 else TOLERANCE
    tmp = f'{args.onnx}.tmp{os.getpid()}'
    try:
        onnx_util.export_onnx(net, tmp, spec.in_channels, multiple, net_opt, args.opset, fp16=args.fp16)
        checks = {'onnxruntime': onnx_util.OnnxRunner(tmp)}
        if args.fp16:
            fallback = onnx_util.float32_fallback_ops(tmp)
            if fallback:
                print(f'onnxruntime\'s CPU provider has no float16 kernel for {", ".join(sorted(fallback))} and runs '
                      f'{sum(fallback.values())} of the graph\'s nodes in float32 behind casts; PyTorch in float16 '
                      'arithmetic is checked beside it.')
            checks['PyTorch in float16'] = onnx_util.Float16Body(net)
        diffs = {}
        for name, other in checks.items():
            for h, w in onnx_util.check_sizes(multiple):
                diffs[name, h, w] = onnx_util.max_abs_diff(net, other, (h, w), in_channels=spec.in_channels)
                print(f'{name} vs PyTorch (float32) at {h}x{w}: max abs diff {diffs[name, h, w]:.2e} '
                      f'(tolerance {tolerance:.0e})')
        non_finite = sorted({name for (name, *_), diff in diffs.items() if not math.isfinite(diff)})
        beyond = sorted({name for (name, *_), diff in diffs.items() if diff > tolerance})  # NaN is never > x
        if non_finite or beyond:
            why = ': float16 overflows above 65504, export this network in float32' if args.fp16 else ''
            error = (f'{" and ".join(non_finite)} gives non-finite values{why}' if non_finite else
                     f'{" and ".join(beyond)} differs from PyTorch (float32) by more than {tolerance:.0e}')
            print(f'basicsr export: error: {error}; {args.onnx} not written.', file=sys.stderr)
            return 1
        os.replace(tmp, args.onnx)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    precision = 'float16 inside, float32 input and output' if args.fp16 else 'float32'
    print(f'Wrote {args.onnx}: {net_opt["type"]}, opset {args.opset}, {precision}, dynamic height and width (padded '
          f'by the runner to a multiple of {multiple}).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
