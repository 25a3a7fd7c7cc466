"""``basicsr infer``: restore an image, a folder or a glob with any BasicSR network (PyTorch or ONNX), tile by tile.

The network is ``network_g`` of an option file (test or training), or an entry of the demo's results.json, with
weights loaded weights-only and strictly; or an ONNX file written by ``basicsr export``, run by onnxruntime. Large
images are cut into overlapping tiles blended without seams (:mod:`skd_basicsr.deploy.tiling`). Outputs keep the input's
name, format and bit depth. A file that does not decode is named and skipped, and the command then exits 1; an
existing output is kept unless ``--overwrite``.

``--amp bf16|fp16`` runs the PyTorch network's forward under autocast (weights stay float32; the output is float32
again before it is blended and written). On a CPU with bfloat16 instructions (AVX512-BF16, AMX) bf16 is the fast one;
fp16 there runs without float16 arithmetic and is slower than float32. ``--half`` is the old spelling of
``--amp fp16``, kept as an alias; it used to cast the weights to float16 and ran on CUDA only.
"""
import resource
import sys
import time
from os import path as osp

from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.precision import AMP_DTYPES, check_amp_device
from skd_basicsr.tools import command_parser, run_command


def build_parser():
    parser = command_parser('basicsr infer', __doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('-opt', help='option file with network_g (test or training), or the demo\'s results.json')
    source.add_argument('--onnx', help='an ONNX file written by `basicsr export`, run with onnxruntime')
    parser.add_argument('--entry', help='with results.json: which network (teacher, scratch, output_kd, skd)')
    parser.add_argument('--weights', help='weights file; default: path.pretrain_network_g, or results.json\'s')
    parser.add_argument('--param_key', help='key of the weights in the file; default: path.param_key_g or params '
                        '(params_ema falls back to params)')
    parser.add_argument('--input', required=True, help='an image, a folder of images, or a glob pattern (quoted)')
    parser.add_argument('--output', required=True, help='folder for the restored images (same names)')
    parser.add_argument('--tile', type=int, help='tile side in pixels, a multiple of the network\'s (8 for '
                        'Restormer); default: the whole image at once')
    parser.add_argument('--tile_overlap', type=int, default=32, help='pixels shared by neighbouring tiles')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--amp', choices=tuple(AMP_DTYPES), help='the forward under autocast in bfloat16 or float16 '
                        '(PyTorch only; output back to float32); default: float32')
    parser.add_argument('--half', action='store_true', help='deprecated alias of --amp fp16')
    parser.add_argument('--overwrite', action='store_true', help='replace outputs that exist (default: keep them)')
    return parser


def check_args(args):
    """Refuse combinations that cannot run, before anything is loaded; ``--half`` becomes ``--amp fp16``."""
    import torch

    if args.device == 'cuda' and not torch.cuda.is_available():
        raise OptionError('--device cuda: no CUDA device is available.')
    if args.half:
        if args.amp not in (None, 'fp16'):
            raise OptionError(f'--half is the old spelling of --amp fp16 and contradicts --amp {args.amp}; give one.')
        print('basicsr infer: --half is deprecated, use --amp fp16 (autocast; the weights stay float32).',
              file=sys.stderr)
        args.amp = 'fp16'
    if args.amp and args.onnx:
        raise OptionError(f'--amp {args.amp} runs the PyTorch network under autocast; an ONNX file\'s precision is '
                          'set when it is written (basicsr export --fp16).')
    if args.amp:
        check_amp_device(args.amp, torch.device(args.device), '--amp')
    if args.onnx and (args.weights or args.param_key or args.entry):
        raise OptionError('--onnx carries its own weights; --weights, --param_key and --entry go with -opt.')
    if args.tile is not None and args.tile <= 0:
        raise OptionError(f'--tile {args.tile} must be positive.')
    if args.tile is not None and not 0 <= args.tile_overlap < args.tile:
        raise OptionError(f'--tile_overlap {args.tile_overlap} must be at least 0 and less than --tile {args.tile}.')


def output_paths(inputs, folder):
    """Output path of each input: its name in ``folder``; two inputs of one name (from a recursive glob) are refused."""
    outputs = [osp.join(folder, osp.basename(p)) for p in inputs]
    seen = {}
    for src, dst in zip(inputs, outputs):
        if dst in seen:
            raise OptionError(f'{seen[dst]} and {src} would both be written to {dst}; restore them separately.')
        seen[dst] = src
    return outputs


def load_runner(args):
    """The callable network, the multiple its input sizes need, its input channels, and what it is (for the log)."""
    from skd_basicsr.deploy.network_io import load_restorer, network_from_file
    from skd_basicsr.platform.network_spec import NetworkSpec

    if args.onnx:
        from skd_basicsr.deploy.onnx_util import OnnxRunner

        runner = OnnxRunner(args.onnx, args.device)
        return runner, runner.multiple, runner.in_channels, f'{args.onnx} (onnxruntime, {runner.precision})'
    net_opt, weights, param_key = network_from_file(args.opt, args.entry)
    weights = args.weights or weights
    net = load_restorer(net_opt, weights, args.param_key or param_key).to(args.device)
    spec = NetworkSpec.from_options(net_opt)
    run = autocast_forward(net, args.device, AMP_DTYPES[args.amp]) if args.amp else net
    precision = f'autocast {args.amp}' if args.amp else 'float32'
    label = f'{net_opt["type"]} from {weights} ({args.device}, {precision})'
    return run, spec.size_multiple, spec.in_channels, label


def autocast_forward(net, device, dtype):
    """``net``'s forward under autocast in ``dtype`` (torch.bfloat16 or torch.float16) on ``device`` ('cpu',
    'cuda'), its output float32."""
    import torch

    def run(x):
        with torch.autocast(device, dtype=dtype):
            out = net(x)
        return out.float()

    return run


def peak_memory(device):
    """Peak memory of this process in MiB, and what it measures."""
    import torch

    if device == 'cuda':
        return torch.cuda.max_memory_allocated() / 2**20, 'CUDA memory allocated'
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'resident set size'  # Linux: KiB


def restore(args, runner, multiple, channels, inputs, outputs):
    """Restore every input whose output may be written; return the counts and the files skipped with why."""
    import torch
    from tqdm import tqdm

    from skd_basicsr.deploy.image_io import ImageReadError, image_to_tensor, read_image, tensor_to_image, write_image
    from skd_basicsr.deploy.tiling import tiled_forward

    written, kept, skipped = 0, [], []
    seconds = megapixels = 0.0
    for src, dst in zip(tqdm(inputs, unit='image', desc='basicsr infer'), outputs):
        if osp.exists(dst) and not args.overwrite:
            kept.append(dst)
            continue
        try:
            img, depth = read_image(src, channels)
        except ImageReadError as err:
            skipped.append(str(err))
            tqdm.write(f'basicsr infer: skipped {err}', file=sys.stderr)
            continue
        x = image_to_tensor(img).to(args.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = tiled_forward(runner, x, args.tile, args.tile_overlap, multiple)
        if args.device == 'cuda':
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        megapixels += x.shape[-2] * x.shape[-1] / 1e6
        try:
            write_image(tensor_to_image(out, depth), dst)
        except (IOError, ValueError) as err:
            skipped.append(f'{src}: cannot be written to {dst}: {err}')
            tqdm.write(f'basicsr infer: skipped {skipped[-1]}', file=sys.stderr)
            continue
        written += 1
    return written, kept, skipped, seconds, megapixels


def main(argv=None):
    return run_command(build_parser(), run, argv)


def run(args):
    """Check the arguments, load the network and restore every input; 1 when some input was skipped."""
    from skd_basicsr.deploy.image_io import list_images

    check_args(args)
    try:
        inputs = list_images(args.input)
    except FileNotFoundError as err:
        raise OptionError(f'--input {err}') from None
    outputs = output_paths(inputs, args.output)
    runner, multiple, channels, label = load_runner(args)
    if args.tile is not None and args.tile % multiple:
        raise OptionError(f'--tile {args.tile} must be a multiple of {multiple} for this network.')

    print(f'basicsr infer: {len(inputs)} image(s) with {label}, '
          f'{f"tiles {args.tile} overlapping {args.tile_overlap}" if args.tile else "untiled"}', file=sys.stderr)
    written, kept, skipped, seconds, megapixels = restore(args, runner, multiple, channels, inputs, outputs)
    memory, what = peak_memory(args.device)
    speed = f'{seconds / megapixels:.2f} s per megapixel' if megapixels else 'no image run'
    print(f'Wrote {written} image(s) to {args.output}: {speed}, peak {what} {memory:.0f} MiB.')
    if kept:
        print(f'Kept {len(kept)} existing output(s) (--overwrite replaces them), e.g. {kept[:3]}.')
    if skipped:
        print(f'Skipped {len(skipped)} file(s):', file=sys.stderr)
        for reason in skipped:
            print(f'  {reason}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
