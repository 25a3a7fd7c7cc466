"""The frozen teacher: built from ``network_t``, loaded from ``path.pretrain_network_t``, and scored once.

The teacher stays in eval mode with ``requires_grad`` off; it is never in an optimizer, never wrapped in DDP and
never saved (resuming keeps its configured weights, see :func:`skd_basicsr.platform.checkpoint.freeze_on_resume`).
"""
from copy import deepcopy

import torch
from basicsr.archs import build_network
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img

from skd_basicsr.platform import checkpoint
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.network_spec import NetworkSpec, forward_padded
from skd_basicsr.platform.precision import validation_autocast

checkpoint.freeze_on_resume('network_t')


def build_frozen_teacher(opt, device):
    """Build ``network_t``, load ``path.pretrain_network_t`` (``param_key_t``, ``strict_load_t``) and freeze it.

    Raises:
        OptionError: No ``network_t``, no weights, or weights that do not fit it.
    """
    if 'network_t' not in opt:
        raise OptionError('SKDModel needs `network_t` (the teacher architecture) in the options.')
    path = opt['path'].get('pretrain_network_t')
    if not path:
        raise OptionError('SKDModel needs `path: pretrain_network_t:` (the trained teacher weights); distilling '
                          'from an untrained teacher teaches nothing.')
    net_t = build_network(deepcopy(opt['network_t'])).to(device)
    strict = opt['path'].get('strict_load_t', True)
    state = checkpoint.read_weights(path, opt['path'].get('param_key_t', 'params'), key_option='param_key_t')
    checkpoint.check_fit(net_t, state, strict, f'path.pretrain_network_t {path} does not fit network_t',
                         'strict_load_t')
    net_t.load_state_dict(state, strict=strict)
    net_t.eval()
    net_t.requires_grad_(False)
    return net_t


def teacher_metrics(net_t, dataloader, opt, device):
    """The teacher's mean of every ``val.metrics`` entry over ``dataloader``.

    Each input is padded to the multiple ``network_t`` needs, as validation pads it for ``network_g``
    (:mod:`skd_basicsr.platform.padded_test`), and the output cropped back; under ``val.amp`` the teacher runs under
    the autocast the student's validation runs under, its output back in float32 before the metrics.

    Returns:
        dict[str, float]: metric name -> mean value.
    """
    sums = {metric: 0.0 for metric in opt['val']['metrics']}
    count = 0
    multiple = NetworkSpec.from_options(opt['network_t'], 'network_t').size_multiple
    for data in dataloader:
        with torch.inference_mode(), validation_autocast(opt, device):
            output = forward_padded(net_t, data['lq'].to(device), multiple)
        metric_data = {'img': tensor2img([output.float().cpu()])}
        if 'gt' in data:
            metric_data['img2'] = tensor2img([data['gt']])
        for metric, metric_opt in opt['val']['metrics'].items():
            sums[metric] += calculate_metric(metric_data, metric_opt)
        count += 1
    return {metric: value / max(count, 1) for metric, value in sums.items()}
