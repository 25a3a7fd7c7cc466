"""ONNX export of a restoration network, checked against PyTorch, and a runner that calls it like the network.

The graph has dynamic height and width and expects them padded to the network's multiple; the multiple is written in
the file's metadata and the runner's callers pad through :func:`skd_basicsr.deploy.tiling.tiled_forward` (which pads
every input anyway), so the same tiling and image I/O serve PyTorch and onnxruntime. Export uses the TorchScript
exporter (``dynamo=False``): in torch 2.14 it exports Restormer with dynamic sizes and needs no onnxscript.

A float16 file (``fp16=True``) holds the network in float16 behind a float32 input and output (a cast at each end),
so the runner, the tiling and the image I/O are the same for both files. onnxruntime's CPU provider (1.32, x86) has
no float16 kernel for most of Restormer's operators (Conv, MatMul, Softmax, Add, Mul, ...): it inserts casts and
computes them in float32, so on the CPU a float16 file is checked for its float16 weights and its graph, not for
float16 arithmetic (:func:`float32_fallback_ops` says which operators), and runs no faster than the float32 one.

onnx and onnxruntime are the package's ``deploy`` extra and are imported only here.
"""
import collections
import copy
import importlib
import json
import os
import tempfile
import warnings

import torch

from skd_basicsr.platform.errors import OptionError

METADATA_MULTIPLE = 'skd_basicsr.size_multiple'
METADATA_NETWORK = 'skd_basicsr.network'
METADATA_PRECISION = 'skd_basicsr.precision'
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


class Float16Body(torch.nn.Module):
    """A copy of ``net`` in float16 between a float32 input and a float32 output: what ``--fp16`` exports."""

    def __init__(self, net):
        super().__init__()
        self.net = copy.deepcopy(net).half()

    def forward(self, x):
        return self.net(x.half()).float()


def export_onnx(net, path, in_channels, multiple, net_opt=None, opset=DEFAULT_OPSET, fp16=False):
    """Write ``net`` (on the CPU, in eval mode) as ONNX with dynamic height and width, then validate the file.

    Args:
        net (nn.Module): The network.
        path (str): The ONNX file to write.
        in_channels (int): Input channels.
        multiple (int): The multiple of height and width the network needs; stored in the metadata.
        net_opt (dict | None): Network options, stored in the metadata for the record. Default: None.
        opset (int): ONNX opset. Default: 17.
        fp16 (bool): Weights and arithmetic in float16, input and output in float32 (:class:`Float16Body`).
            Default: False.
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
        torch.onnx.export(Float16Body(net) if fp16 else net, sample, path, input_names=['input'],
                          output_names=['output'], opset_version=opset, dynamic_axes={'input': axes, 'output': axes},
                          do_constant_folding=True, dynamo=False)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    metadata = {METADATA_MULTIPLE: str(multiple), METADATA_PRECISION: 'float16' if fp16 else 'float32'}
    if net_opt is not None:
        metadata[METADATA_NETWORK] = json.dumps(net_opt)
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, path)


def float32_fallback_ops(path):
    """Operator types of the ONNX file that onnxruntime's CPU provider runs in float32 behind casts it inserts (it
    does so for a float16 tensor where it has no float16 kernel), with their counts; empty when it inserts none.

    The session is built without graph optimisations, so that the nodes are the file's and every node fed by a node
    the file does not have is fed by an inserted cast.
    """
    ort = import_deploy('onnxruntime')
    onnx = import_deploy('onnx')
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # serialising the session's graph warns about nothing that matters here
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = os.path.join(folder, 'session.onnx')
        ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        session = onnx.load(options.optimized_model_filepath)
    own = {node.name for node in onnx.load(path).graph.node}
    inserted = {out for node in session.graph.node if node.name not in own for out in node.output}
    return collections.Counter(node.op_type for node in session.graph.node
                               if node.name in own and any(i in inserted for i in node.input))


class OnnxRunner:
    """An ONNX restoration network under onnxruntime, called like the PyTorch one (NCHW tensor in and out).

    Args:
        path (str): The ONNX file.
        device (str): 'cpu', or 'cuda' for onnxruntime's CUDA provider where it has one. Default: 'cpu'.

    Attributes:
        multiple (int): The multiple of height and width the graph needs (1 when the file does not say).
        in_channels (int): Input channels.
        precision (str): 'float32', or 'float16' for a file written by ``basicsr export --fp16``.
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
        self.precision = metadata.get(METADATA_PRECISION, 'float32')
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.in_channels = first.shape[1]

    def __call__(self, x):
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def max_abs_diff(net, runner, size, seed=0, in_channels=None):
    """Largest absolute difference between ``net`` and ``runner`` on one random input of ``size`` (H, W), with
    ``in_channels`` channels (default: the runner's)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, in_channels or runner.in_channels, *size, generator=generator)
    with torch.no_grad():
        expected = net(x)
        return (expected - runner(x)).abs().max().item()
