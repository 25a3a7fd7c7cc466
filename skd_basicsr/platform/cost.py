"""What a network costs: parameters, MACs (thop, plus Restormer's attention matmuls) and CPU latency.

MACs come from thop, which counts convolutions, norms and activations but not ``torch.matmul``. Restormer's
attention products (q k^T and attn v, both C/heads x C/heads x H*W per head) are matmuls, so
:func:`attention_matmul_macs` counts them with a forward hook on each attention module. thop leaves counters in the
profiled model's state_dict, so a copy is profiled. Latencies of networks compared with each other are timed in turn
(:func:`alternating_latency_ms`), so that a change of machine load falls on all of them alike.
"""
import copy
import statistics
import time
import warnings

import torch


def count_params(net):
    """Parameters of ``net``, trainable or not."""
    return sum(p.numel() for p in net.parameters())


def attention_matmul_macs(net, x):
    """MACs of the matmuls inside Restormer attention modules for input ``x`` (0 for networks without them)."""
    from skd_basicsr.platform.archs.restormer_arch import Attention

    total = [0]

    def hook(module, inputs, output):
        b, c, h, w = inputs[0].shape
        total[0] += 2 * b * module.num_heads * (c // module.num_heads)**2 * h * w  # q k^T and attn v

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, Attention)]
    try:
        with torch.inference_mode():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def thop_macs(net, x):
    """thop's MAC count of ``net(x)``, on a copy of the network."""
    with warnings.catch_warnings():
        # thop checks torch's version with distutils at import and warns about modules it has no rule for
        warnings.simplefilter('ignore')
        from thop import profile
        macs, _ = profile(copy.deepcopy(net), inputs=(x, ), verbose=False)
    return int(macs)


def median_latency_ms(net, x, repeats=5):
    """Median milliseconds of ``net(x)`` over ``repeats`` forwards after one warm-up, under inference mode."""
    with torch.inference_mode():
        net(x)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def alternating_latency_ms(nets, x, repeats=5):
    """Median latency of each network, timed in turn (one forward of each per round, after one warm-up of each), so
    that a change of machine load falls on all of them alike; their ratios are what a shared machine can measure."""
    times = [[] for _ in nets]
    with torch.inference_mode():
        for net in nets:
            net(x)  # warm-up
        for _ in range(repeats):
            for net, net_times in zip(nets, times):
                start = time.perf_counter()
                net(x)
                net_times.append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]
