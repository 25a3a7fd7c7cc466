"""Progressive patch training (``train.progressive``: ``iters``, ``gt_sizes``, ``mini_batch_sizes``), for every model.

The loader delivers the largest patch and batch; each training iteration is then cropped to the current stage's
patch at one random location shared by ``lq`` and ``gt`` (on the lq grid, times the scale, for SR) and cut to its
first ``mini_batch`` samples (:class:`ProgressivePatches`).

It runs as a training-batch transform (:mod:`skd_basicsr.platform.training_batch`), before Restormer's mixing
augmentation as in the official training loop. The options are checked when the model is built, before any
network.
"""
import bisect
import itertools
import random

from basicsr.utils import get_root_logger

from skd_basicsr.platform.errors import OptionError

PROGRESSIVE_KEYS = ('iters', 'gt_sizes', 'mini_batch_sizes')


class ProgressivePatches:
    """Progressive patch training: the patch and batch size of each training iteration, and the crop itself.

    Stage i lasts ``iters[i]`` iterations; iteration n (1-based, as BasicSR counts) belongs to the first stage
    whose cumulative end is >= n, and iterations past the last end stay in the last stage.

    Args:
        iters (list[int]): Length of each stage, in iterations.
        gt_sizes (list[int]): GT patch size of each stage (the lq patch is gt_size / scale).
        mini_batch_sizes (list[int]): Samples kept (the first ones of the batch) in each stage.
    """

    def __init__(self, iters, gt_sizes, mini_batch_sizes):
        self.iters = list(iters)
        self.gt_sizes = list(gt_sizes)
        self.mini_batch_sizes = list(mini_batch_sizes)
        self.ends = list(itertools.accumulate(self.iters))
        self.current_stage = None  # the stage last logged
        self.pending_iter = None  # set by update_learning_rate, consumed by the next feed_data

    @classmethod
    def from_options(cls, opt):
        """The schedule of ``opt['train']['progressive']``, checked against the training dataset; None if unset.

        Args:
            opt (dict): Full options (``train``, ``datasets.train``, ``scale``).

        Returns:
            ProgressivePatches | None: The schedule.

        Raises:
            OptionError: When an option is missing, malformed, or asks for more than the loader delivers.
        """
        dataset_opt = (opt.get('datasets') or {}).get('train') or {}
        misplaced = [k for k in PROGRESSIVE_KEYS if k in dataset_opt]
        prog = (opt.get('train') or {}).get('progressive')
        if prog is None:
            if misplaced:
                raise OptionError(f'datasets.train has {", ".join(misplaced)} (where Restormer keeps them), which '
                                  'nothing reads here: move iters, gt_sizes and mini_batch_sizes to '
                                  'train.progressive.')
            return None
        if not isinstance(prog, dict):
            raise OptionError(f'train.progressive must be a mapping with {", ".join(PROGRESSIVE_KEYS)}.')
        unknown = [k for k in prog if k not in PROGRESSIVE_KEYS]
        missing = [k for k in PROGRESSIVE_KEYS if k not in prog]
        if unknown or missing:
            raise OptionError(f'train.progressive takes exactly {", ".join(PROGRESSIVE_KEYS)}; '
                              f'unknown: {", ".join(map(str, unknown)) or "none"}; '
                              f'missing: {", ".join(missing) or "none"}.')
        for key in PROGRESSIVE_KEYS:
            values = prog[key]
            if (not isinstance(values, (list, tuple)) or not values
                    or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values)):
                raise OptionError(f'train.progressive.{key} must be a non-empty list of positive integers, '
                                  f'got {values!r}.')
        lengths = {key: len(prog[key]) for key in PROGRESSIVE_KEYS}
        if len(set(lengths.values())) != 1:
            raise OptionError('train.progressive: iters, gt_sizes and mini_batch_sizes need one entry per stage; '
                              f'got {lengths["iters"]}, {lengths["gt_sizes"]} and {lengths["mini_batch_sizes"]}.')
        if misplaced:
            raise OptionError(f'datasets.train has {", ".join(misplaced)} besides train.progressive; keep them '
                              'only in train.progressive.')

        gt_size = dataset_opt.get('gt_size')
        too_big = [s for s in prog['gt_sizes'] if gt_size is not None and s > gt_size]
        if too_big:
            raise OptionError(f'train.progressive.gt_sizes {too_big} exceed datasets.train.gt_size ({gt_size}): the '
                              'loader must deliver the largest patch, which each stage crops.')
        batch = dataset_opt.get('batch_size_per_gpu')
        too_many = [b for b in prog['mini_batch_sizes'] if batch is not None and b > batch]
        if too_many:
            raise OptionError(f'train.progressive.mini_batch_sizes {too_many} exceed datasets.train.'
                              f'batch_size_per_gpu ({batch}): the loader must deliver the largest batch.')
        scale = opt.get('scale', 1)
        odd = [s for s in prog['gt_sizes'] if s % scale]
        if odd:
            raise OptionError(f'train.progressive.gt_sizes {odd} are not multiples of scale ({scale}).')
        return cls(prog['iters'], prog['gt_sizes'], prog['mini_batch_sizes'])

    def stage(self, current_iter):
        """Index of the stage that iteration ``current_iter`` (1-based) belongs to."""
        return min(bisect.bisect_left(self.ends, current_iter), len(self.ends) - 1)

    def crop(self, lq, gt, current_iter):
        """Crop a training batch to the patch and mini-batch of ``current_iter``'s stage.

        Args:
            lq (Tensor): Input batch, (b, ..., h, w).
            gt (Tensor | None): Target batch, (b, ..., h * scale, w * scale).
            current_iter (int): Training iteration, 1-based.

        Returns:
            tuple[Tensor, Tensor | None]: lq and gt cut to the first mini_batch samples, cropped at one random
            location (the same for every sample and for lq and gt).
        """
        stage = self.stage(current_iter)
        gt_size, mini_batch = self.gt_sizes[stage], self.mini_batch_sizes[stage]
        if stage != self.current_stage:
            get_root_logger().info(f'Progressive training, iter {current_iter}: stage {stage + 1}/{len(self.ends)}, '
                                   f'patch size {gt_size}, mini-batch {mini_batch}.')
            self.current_stage = stage
        h, w = lq.shape[-2:]
        scale = 1
        if gt is not None:
            scale = gt.shape[-1] // w
            if scale < 1 or tuple(gt.shape[-2:]) != (h * scale, w * scale):
                raise ValueError(f'Progressive training: gt {tuple(gt.shape[-2:])} is not an integer multiple of '
                                 f'lq {tuple(lq.shape[-2:])}.')
        if gt_size % scale:
            raise ValueError(f'Progressive training: patch size {gt_size} is not a multiple of the scale {scale}.')
        size = gt_size // scale
        if size > h or size > w:
            raise ValueError(f'Progressive training: patch size {gt_size} (stage {stage + 1}, train.progressive.'
                             f'gt_sizes) is larger than the training batch ({h * scale} x {w * scale}).')
        top, left = random.randint(0, h - size), random.randint(0, w - size)
        lq = lq[:mini_batch, ..., top:top + size, left:left + size]
        if gt is not None:
            gt = gt[:mini_batch, ..., top * scale:(top + size) * scale, left * scale:(left + size) * scale]
        return lq, gt

    def __call__(self, lq, gt, current_iter):
        """The training-batch transform: :meth:`crop`."""
        return self.crop(lq, gt, current_iter)
