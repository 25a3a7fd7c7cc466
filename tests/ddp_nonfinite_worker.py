"""Run under torchrun by tests/test_reliability.py: SKD on 2 CPU processes (gloo) with a fault on one rank only.

* ``skip`` / ``stop``: a NaN loss on rank 1 at iteration 2;
* ``grad-skip`` / ``grad-stop``: a NaN gradient behind a finite loss on rank 1 at iteration 2;
* ``save``: NaN weights on rank 0 after iteration 1, then a save.

``*skip`` (train.skip_nonfinite) must skip that step on every rank and keep the replicas identical; ``*stop`` and
``save`` must stop every rank with the error. Each rank writes what it saw to OUT.<rank>."""
import gc
import signal
import sys

import torch
import torch.distributed as dist

import skd_basicsr  # noqa: F401
from basicsr.models import build_model
from skd_basicsr.platform.compat import init_dist

sys.path.insert(0, sys.argv[1])  # tests/
from test_skd_model import batch, make_opt  # noqa: E402


def main(tmp_path, out_file, mode):
    signal.alarm(120)  # a hung rank ends itself: torchrun puts workers in their own process groups
    init_dist('pytorch')
    rank, world = dist.get_rank(), dist.get_world_size()
    # each rank writes its own copy of the (seeded, identical) data and teacher: ranks writing one file at once
    # let a rank read it half-written
    opt = make_opt(tmp_path / f'rank{rank}')
    opt.update(dist=True, rank=rank, world_size=world)
    opt['train']['skip_nonfinite'] = mode.endswith('skip')
    model = build_model(opt)
    seen = []
    for it in (1, 2, 3):
        data = batch(seed=10 * it + rank)
        hook = None
        if it == 2 and rank == 1 and mode in ('skip', 'stop'):
            data['gt'][0, 0, 0, 0] = float('nan')
        if it == 2 and rank == 1 and mode.startswith('grad'):
            param = next(model.get_bare_model(model.net_g).parameters())
            hook = param.register_hook(lambda grad: torch.full_like(grad, float('nan')))
        model.feed_data(data)
        before = [p.detach().clone() for p in model.net_g.parameters()]
        try:
            model.optimize_parameters(it)
        except FloatingPointError as err:
            seen.append(f'stopped at {it}: {err}')
            break
        finally:
            if hook is not None:
                hook.remove()
        stepped = any(not torch.equal(b, p) for b, p in zip(before, model.net_g.parameters()))
        seen.append(f'iter {it} {"stepped" if stepped else "skipped"}')
        if mode == 'save':
            if rank == 0:
                with torch.no_grad():
                    next(model.get_bare_model(model.net_g).parameters()).view(-1)[0] = float('nan')
            try:
                model.save(0, it)
            except FloatingPointError as err:
                seen.append(f'save refused: {err}')
            break
    if mode == 'grad-skip':  # a save on every rank: the random states of both ranks are gathered into rank 0's file
        model.save(0, 3)
        dist.barrier()
        state = torch.load(tmp_path / 'rank0' / 'experiments' / opt['name'] / 'training_states' / '3.state',
                           weights_only=True)
        seen.append(f"state holds the random states of {len(state['position']['random'])} ranks")
    flat = torch.cat([p.detach().flatten() for p in model.net_g.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    seen.append('replicas identical' if all(torch.equal(gathered[0], g) for g in gathered) else 'replicas differ')
    with open(f'{out_file}.{rank}', 'w') as f:
        f.write('\n'.join(seen) + '\n')
    del model, before  # release the DDP wrappers before the group goes (see ddp_skd_worker.py)
    gc.collect()
    dist.barrier()  # both ranks done before either tears gloo down: a rank that left early aborted the other
    dist.destroy_process_group()


if __name__ == '__main__':
    import pathlib
    main(pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4])
