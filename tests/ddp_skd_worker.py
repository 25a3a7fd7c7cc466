"""Run under torchrun by tests/test_reliability.py: SKD on 2 CPU processes (gloo), then compare the replicas."""
import gc
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import skd_basicsr  # noqa: F401
from basicsr.models import build_model
from skd_basicsr.compat import init_dist

sys.path.insert(0, sys.argv[1])  # tests/
from test_skd_model import batch, make_opt  # noqa: E402


def main(tmp_path, out_file):
    init_dist('pytorch')
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    # each rank writes its own copy of the (seeded, identical) data and teacher: ranks writing one file at once
    # let a rank read it half-written
    opt = make_opt(tmp_path / f'rank{rank}')
    opt.update(dist=True, rank=rank, world_size=world)
    model = build_model(opt)
    assert isinstance(model.net_g, DistributedDataParallel)
    assert isinstance(model.adapters, DistributedDataParallel)
    assert not isinstance(model.net_t, DistributedDataParallel)
    for it in (1, 2, 3):
        model.feed_data(batch(seed=10 * it + rank))  # each rank sees other data
        model.optimize_parameters(it)
    for net in (model.net_g, model.adapters):
        flat = torch.cat([p.detach().flatten() for p in net.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        assert all(torch.equal(gathered[0], g) for g in gathered), 'replicas differ'
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
