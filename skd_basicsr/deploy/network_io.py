"""The network a deploy command runs: its options from a file, its weights, and the input size it needs.

The options come from ``network_g`` of a BasicSR option file (test or training), or from the ``network`` entry of
the demo's ``results.json`` (which also says where the weights are). Weights are read the way training reads them
(:func:`skd_basicsr.platform.checkpoint.read_weights`: weights only, ``params_ema`` falling back to ``params``, DDP's
``module.`` dropped) and must fit the network strictly.
"""
import json
from copy import deepcopy
from os import path as osp

from skd_basicsr.platform.errors import OptionError


def network_from_file(path, entry=None):
    """Network options, default weights and default param key from an option file or the demo's results.json.

    Args:
        path (str): A YAML option file with ``network_g``, or the demo's ``results.json``.
        entry (str | None): Which network of results.json (teacher, scratch, output_kd, skd); ignored for YAML.
            Default: None.

    Returns:
        tuple[dict, str | None, str]: network options, the weights the file names (None when it names none) and
            the param key it names ('params' when it names none).

    Raises:
        OptionError: When the file is missing, unreadable, or has no network where one is expected.
    """
    if not osp.isfile(path):
        raise OptionError(f'-opt {path}: no such file.')
    if path.endswith('.json'):
        with open(path, encoding='utf-8') as f:
            try:
                results = json.load(f)
            except json.JSONDecodeError as err:
                raise OptionError(f'-opt {path} is not valid JSON: {err}') from None
        networks = [k for k, v in results.items() if isinstance(v, dict) and 'network' in v]
        if entry not in networks:
            raise OptionError(f'-opt {path}: choose the network with --entry, one of {networks}.')
        weights = results[entry].get('weights')
        return deepcopy(results[entry]['network']), weights and osp.join(osp.dirname(path), weights), 'params'

    from skd_basicsr.platform.options import yaml_load

    with open(path, encoding='utf-8') as f:
        opt = yaml_load(f, source=path)
    if not isinstance(opt, dict) or not isinstance(opt.get('network_g'), dict):
        raise OptionError(f'-opt {path}: no network_g mapping; the network to run is read from network_g.')
    paths = opt.get('path') or {}
    return deepcopy(opt['network_g']), paths.get('pretrain_network_g'), paths.get('param_key_g') or 'params'


def build_network_from_options(net_opt):
    """``basicsr.archs.build_network`` with one-line errors for an unknown type or wrong arguments."""
    from basicsr.archs import build_network

    try:
        return build_network(deepcopy(net_opt))
    except (KeyError, TypeError) as err:
        raise OptionError(f'network {net_opt.get("type")!r} cannot be built from {net_opt}: {err}') from None


def load_restorer(net_opt, weights, param_key='params'):
    """Build the network, load its weights strictly, and return it in eval mode without gradients.

    Raises:
        OptionError: Unknown type or arguments, no weights given, a missing or unreadable file, no ``param_key`` in
            it, or weights that do not fit the network.
    """
    from skd_basicsr.platform.checkpoint import check_fit, read_weights

    net = build_network_from_options(net_opt)
    if not weights:
        raise OptionError('no weights: give --weights (the option file has no path.pretrain_network_g).')
    state = read_weights(weights, param_key, fallback_key='params', key_option='--param_key')
    check_fit(net, state, strict=True, where=f'--weights {weights} does not fit network {net_opt.get("type")}')
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)
