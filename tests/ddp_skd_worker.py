"""Run under torchrun by tests/test_reliability.py: SKD on 2 CPU processes (gloo) with gradient accumulation over 2
micro-batches, then compare the replicas and count the gradient all-reduces: one per step, not one per micro-batch.
The student is re-initialised after its DDP wrap (distill.student_init: kaiming), so the replicas also show that
rank 0's start reaches every rank."""
import gc
import sys

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

import skd_basicsr  # noqa: F401
from basicsr.models import build_model
from skd_basicsr.platform.compat import init_dist

sys.path.insert(0, sys.argv[1])  # tests/
from test_skd_model import batch, make_opt  # noqa: E402


def counting_allreduce(counts):
    def hook(name, bucket):
        counts[name] += 1
        return allreduce_hook(None, bucket)

    return hook


def assert_same_on_every_rank(net, world, message):
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(gathered[0], g) for g in gathered), message


def main(tmp_path, out_file):
    init_dist('pytorch')
    rank, world = dist.get_rank(), dist.get_world_size()
    # each rank writes its own copy of the (seeded, identical) data and teacher: ranks writing one file at once
    # let a rank read it half-written
    opt = make_opt(tmp_path / f'rank{rank}')
    torch.manual_seed(rank)  # different initial weights per rank (after make_opt, which seeds the teacher it saves)
    opt.update(dist=True, rank=rank, world_size=world)
    opt['train']['accum_iter'] = 2
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    opt['distill']['student_init'] = 'kaiming'  # random draws after the wrap, from each rank's own seed
    model = build_model(opt)
    assert_same_on_every_rank(model.net_g, world, 'the initial students differ')
    assert isinstance(model.net_g, DistributedDataParallel)
    assert isinstance(model.adapters, DistributedDataParallel)
    assert not isinstance(model.net_t, DistributedDataParallel)
    reduces = {'net_g': 0, 'adapters': 0}
    for name in reduces:
        getattr(model, name).register_comm_hook(name, counting_allreduce(reduces))
    for it in (1, 2, 3):
        model.update_learning_rate(it)  # as BasicSR's loop: marks the next feed as a training batch
        model.feed_data(batch(seed=10 * it + rank))  # each rank sees other data; 2 micro-batches of 1
        model.optimize_parameters(it)
    assert reduces == {'net_g': 3, 'adapters': 3}, reduces  # tiny nets: one bucket each, once per step
    for net in (model.net_g, model.adapters):
        assert_same_on_every_rank(net, world, 'replicas differ')
    if rank == 0:
        with open(out_file, 'w') as f:
            f.write(f'ok {world}\n')
    # the DDP wrappers hold the process group and its threads: release them before the group goes, or gloo's
    # teardown at exit can abort the process (SIGABRT after the work is done)
    del model
    gc.collect()
    dist.barrier()  # both ranks done before either tears gloo down: a rank that left early aborted the other
    dist.destroy_process_group()


if __name__ == '__main__':
    import pathlib
    main(pathlib.Path(sys.argv[2]), sys.argv[3])
