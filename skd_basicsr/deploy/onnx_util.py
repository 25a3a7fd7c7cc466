"""ONNX export of a restoration network, checked against PyTorch, and a runner that calls it like the network.

The graph has dynamic height and width and expects them padded to the network's multiple; the multiple is written in
the file's metadata and the runner's callers pad through :func:`skd_basicsr.deploy.tiling.tiled_forward` (which pads
every input anyway), so the same tiling and image I/O serve PyTorch and onnxruntime. Export uses the TorchScript
exporter (``dynamo=False``): in torch 2.14 it exports Restormer with dynamic sizes and needs no onnxscript.

onnx and onnxruntime are the package's ``deploy`` extra and are imported only here.
"""
import importlib
import json
import warnings

import torch

from skd_basicsr.platform.errors import OptionError

METADATA_MULTIPLE = 'skd_basicsr.size_multiple'
METADATA_NETWORK = 'skd_basicsr.network'
DEFAULT_OPSET = 17


def import_deploy(name):
    """Import ``onnx`` or ``onnxruntime``, or say how to install them."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise OptionError(f'{name} is not installed; it is in the deploy extra: pip install -e .[deploy]') from None


def sample_side(multiple):
    """Side of the square the graph is traced at: 32 pixels or the multiple, whichever is larger, as a multiple."""
    return multiple * max(1, -(-32 // multiple))


def check_sizes(multiple):
    """Two sizes, neither the traced one, one square and one not, both multiples of ``multiple``."""
    side = sample_side(multiple)
    return (2 * side, 2 * side), (side + multiple, 3 * side)


def export_onnx(net, path, in_channels, multiple, net_opt=None, opset=DEFAULT_OPSET):
    """Write ``net`` (on the CPU, in eval mode) as ONNX with dynamic height and width, then validate the file.

    Args:
        net (nn.Module): The network.
        path (str): The ONNX file to write.
        in_channels (int): Input channels.
        multiple (int): The multiple of height and width the network needs; stored in the metadata.
        net_opt (dict | None): Network options, stored in the metadata for the record. Default: None.
        opset (int): ONNX opset. Default: 17.
    """
    onnx = import_deploy('onnx')
    side = sample_side(multiple)
    sample = torch.rand(1, in_channels, side, side)
    axes = {2: 'height', 3: 'width'}
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated, and the tracer warns on size-dependent Python branches (padding
        # that is a no-op on padded inputs); the comparison with PyTorch at two other sizes is what proves the graph
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(net, sample, path, input_names=['input'], output_names=['output'], opset_version=opset,
                          dynamic_axes={'input': axes, 'output': axes}, do_constant_folding=True, dynamo=False)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    metadata = {METADATA_MULTIPLE: str(multiple)}
    if net_opt is not None:
        metadata[METADATA_NETWORK] = json.dumps(net_opt)
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, path)


class OnnxRunner:
    """An ONNX restoration network under onnxruntime, called like the PyTorch one (NCHW tensor in and out).

    Args:
        path (str): The ONNX file.
        device (str): 'cpu', or 'cuda' for onnxruntime's CUDA provider where it has one. Default: 'cpu'.

    Attributes:
        multiple (int): The multiple of height and width the graph needs (1 when the file does not say).
        in_channels (int): Input channels.
    """

    def __init__(self, path, device='cpu'):
        ort = import_deploy('onnxruntime')
        options = ort.SessionOptions()
        # the same thread count as PyTorch, so that the two runtimes are compared and share cores alike
        options.intra_op_num_threads = torch.get_num_threads()
        providers = ['CPUExecutionProvider']
        if device == 'cuda':
            providers.insert(0, 'CUDAExecutionProvider')
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable or invalid files
            raise OptionError(f'--onnx {path}: onnxruntime cannot load it: {str(err).splitlines()[0]}') from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.multiple = int(metadata.get(METADATA_MULTIPLE, 1))
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.in_channels = first.shape[1]

    def __call__(self, x):
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def max_abs_diff(net, runner, size, seed=0):
    """Largest absolute difference between ``net`` and ``runner`` on one random input of ``size`` (H, W)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, runner.in_channels, *size, generator=generator)
    with torch.no_grad():
        expected = net(x)
    return (expected - runner(x)).abs().max().item()
