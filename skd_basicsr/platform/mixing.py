"""Restormer's mixing augmentation (``train.mixing_augs``), for every model.

The official recipe writes ``mixing_augs: {mixup: true, mixup_beta: 1.2, use_identity: true}``. Each training
batch is then mixed with a random permutation of itself, ``x <- lam * x + (1 - lam) * x[perm]`` with one
``lam ~ Beta(mixup_beta, mixup_beta)`` per batch, applied alike to ``lq`` and ``gt`` so every pair stays
consistent. Mixup is the recipe's only augmentation; with ``use_identity`` the identity joins it as an equally
likely choice, so a batch is left as it is with probability 1/2 (without it, every batch is mixed). ``mixup: false``
turns the augmentation off. It runs on training batches only, after progressive cropping
(:mod:`skd_basicsr.platform.training_batch`).
"""
import random

import torch

from skd_basicsr.platform.errors import OptionError

MIXING_KEYS = ('mixup', 'mixup_beta', 'use_identity')


class MixingAugment:
    """Mixup of a training batch with a permutation of itself (see the module doc).

    Args:
        mixup_beta (float): Both parameters of the Beta distribution of the mixing weight. Default: 1.2.
        use_identity (bool): Leave half the batches unmixed. Default: False.
    """

    def __init__(self, mixup_beta=1.2, use_identity=False):
        self.beta = torch.distributions.Beta(torch.tensor(float(mixup_beta)), torch.tensor(float(mixup_beta)))
        self.use_identity = use_identity

    @classmethod
    def from_options(cls, opt):
        """The augmentation of ``opt['train']['mixing_augs']``; None when unset or ``mixup`` is false.

        Raises:
            OptionError: Unknown keys, or values of the wrong type.
        """
        mixing = (opt.get('train') or {}).get('mixing_augs')
        if mixing is None:
            return None
        if not isinstance(mixing, dict):
            raise OptionError(f'train.mixing_augs must be a mapping with {", ".join(MIXING_KEYS)}.')
        unknown = [k for k in mixing if k not in MIXING_KEYS]
        if unknown:
            raise OptionError(f'train.mixing_augs: unknown option(s) {unknown}; the options are {list(MIXING_KEYS)}.')
        for key in ('mixup', 'use_identity'):
            if not isinstance(mixing.get(key, False), bool):
                raise OptionError(f'train.mixing_augs.{key} must be true or false, got {mixing[key]!r}.')
        beta = mixing.get('mixup_beta', 1.2)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
            raise OptionError(f'train.mixing_augs.mixup_beta must be a positive number, got {beta!r}.')
        if not mixing.get('mixup', False):
            return None
        return cls(beta, mixing.get('use_identity', False))

    def __call__(self, lq, gt, current_iter=None):
        """Mix ``lq`` and ``gt`` (the same weight and permutation for both), or leave them (identity)."""
        if self.use_identity and random.randint(0, 1) == 1:
            return lq, gt
        lam = self.beta.sample().item()
        perm = torch.randperm(lq.shape[0], device=lq.device)
        lq = lam * lq + (1 - lam) * lq[perm]
        if gt is not None:
            gt = lam * gt + (1 - lam) * gt[perm]
        return lq, gt
