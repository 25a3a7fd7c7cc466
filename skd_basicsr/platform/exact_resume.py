"""Exact resume: a run killed and resumed goes on with the batches, crops and noise the uninterrupted run had.

BasicSR saves no random state and restarts the interrupted epoch from its first batch, so a resumed run sees other
data than the run it continues. Three additions make it the same run, for every BasicSR model:

* **Where the loader was.** The training prefetcher counts the batches it has handed out in the current epoch
  (:func:`counting_next`). A training state is written between two iterations, after the step and before the next
  batch is fetched, so that count is the number of batches the epoch has used.
* **The random states.** Python's, NumPy's and torch's generators (CUDA's too where it is in use), of every rank, go
  into the training state (:func:`training_state_position`), and under ``train.amp: fp16`` the loss scale with it
  (:func:`skd_basicsr.platform.checkpoint.get_training_state`).
* **Resuming there.** On resume, the first time the training sampler is iterated (the epoch's first batch is about
  to be fetched), its indices start after the batches already used and every generator is set back to its saved
  state (:func:`skipping_iter`); the next batch is then the one the uninterrupted run fetched.

Validation runs with its own copy of the random states (:func:`keeping_random_state`), so that validating (which a
resumed run does at other iterations) never changes the training's randomness. Loader workers seed Python's and
NumPy's generators from the seed torch gives each worker (:func:`worker_init_fn`), which follows the epoch and the
rank: BasicSR's seeds them from the worker and rank alone, so every epoch repeated the same crops, flips and noise.

What is exact: on the CPU, in one process, with ``num_worker_per_gpu: 0`` and the CPU prefetcher, a resumed run
computes what the uninterrupted one computes (tested bit for bit, and by ``benchmarks/soak.py``). Under DDP every rank
saves and restores its own states and position by the same mechanism; that is not yet tested bit for bit. With
loader workers, each worker seeds its generators from the loader's base seed, the epoch and the rank; a resumed
epoch's workers start from a new base seed, so the batches are the same images in the same order but their random
crops and noise differ. The CUDA
prefetcher fetches one batch ahead, so its position is one batch off; CUDA kernels are exact only with
``torch.use_deterministic_algorithms``.
"""
import contextlib
import functools
import random

import numpy as np
import torch


class _Position:
    """The training loader's place in its epoch, and what a resume still has to apply."""
    batches_in_epoch = 0
    pending = None  # (random states of this rank, batches to skip, samples to skip), until the sampler next starts


POSITION = _Position()


def random_states():
    """This process's generator states, as plain tensors and containers (training states load weights-only)."""
    state = {'python': random.getstate(), 'torch': torch.get_rng_state()}
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state['numpy'] = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_states(state):
    """Set the generators back to :func:`random_states`' ``state``."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state['torch'])
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if state.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def training_state_position(opt):
    """``{'batches_in_epoch', 'random'}`` for the training state: the random states of every rank, gathered (every
    rank calls this; rank 0 writes the file)."""
    states = random_states()
    if opt.get('dist', False):
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, states)
        states = gathered
    else:
        states = [states]
    return {'batches_in_epoch': POSITION.batches_in_epoch, 'random': states}


def resume_position(opt, resume_state):
    """After a resume, make the sampler's next epoch skip the batches used and set the generators back (a state
    without a position, from before exact resume, resumes as BasicSR does)."""
    position = (resume_state or {}).get('position')
    if not position:
        POSITION.pending = None
        return
    rank = opt.get('rank', 0)
    states = position['random']
    if len(states) != opt.get('world_size', 1):
        POSITION.pending = None  # another number of processes: the same images, other random draws
        return
    train = opt['datasets']['train']
    from skd_basicsr.platform.accumulation import accum_iter

    per_batch = train['batch_size_per_gpu'] * accum_iter(opt.get('train'))
    batches = position['batches_in_epoch']
    POSITION.pending = (states[rank], batches, batches * per_batch)


def counting_next(next_batch):
    """``CPUPrefetcher.next`` that counts the batches it hands out."""

    @functools.wraps(next_batch)
    def next_(self):
        batch = next_batch(self)
        if batch is not None:
            POSITION.batches_in_epoch += 1
        return batch

    return next_


def counting_reset(reset):
    """``CPUPrefetcher.reset`` (a new epoch) that starts the count again."""

    @functools.wraps(reset)
    def reset_(self):
        POSITION.batches_in_epoch = 0
        return reset(self)

    return reset_


def skipping_iter(iterate):
    """``EnlargedSampler.__iter__`` that, once after a resume, starts after the samples already used and sets the
    generators back to their saved states."""

    @functools.wraps(iterate)
    def iter_(self):
        indices = iterate(self)
        if POSITION.pending is None:
            return indices
        states, batches, samples = POSITION.pending
        POSITION.pending = None
        POSITION.batches_in_epoch = batches  # the batch about to be handed out is counted on top of them
        indices = list(indices)[samples:]
        set_random_states(states)
        return iter(indices)

    return iter_


@contextlib.contextmanager
def kept_random_state():
    """Run the block with a copy of the generators' states: what it draws leaves the training stream alone."""
    state = random_states()
    try:
        yield
    finally:
        set_random_states(state)


def keeping_random_state(validation):
    """``BaseModel.validation`` run under :func:`kept_random_state`."""

    @functools.wraps(validation)
    def validation_(self, *args, **kwargs):
        with kept_random_state():
            return validation(self, *args, **kwargs)

    return validation_


def worker_init_fn(worker_id, num_workers, rank, seed):
    """BasicSR's ``worker_init_fn`` (same arguments) with a seed that changes every epoch.

    torch gives each worker ``base_seed + worker_id``, ``base_seed`` drawn from the main process's generator (seeded
    with ``manual_seed`` + rank) when the epoch's iterator is made; Python's and NumPy's generators in the worker are
    seeded from it, so they are reproducible from the run's seed and differ between epochs, workers and ranks.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def resuming_position(resume_training):
    """``BaseModel.resume_training`` that also resumes the loader's position, the random states and the fp16 loss
    scale (:mod:`skd_basicsr.platform.precision`)."""

    @functools.wraps(resume_training)
    def resume_training_(self, resume_state):
        resume_training(self, resume_state)
        resume_position(self.opt, resume_state)
        precision = getattr(self, 'precision', None)
        if precision is not None:
            precision.load_state_dict(resume_state.get('precision'))

    return resume_training_
