"""Transforms of the training batch (``self.lq``, ``self.gt``) that any BasicSR model gets from options alone:
progressive patches (:mod:`skd_basicsr.models.progressive`) and Restormer's mixing augmentation
(:mod:`skd_basicsr.models.mixing`).

How they hook in, and why this way. BasicSR's loop calls ``model.update_learning_rate(iter)`` right before
``model.feed_data(train_data)``; validation calls ``feed_data`` on its own. So when a transform is configured (and
only then), the model *instance* gets two thin wrappers when ``BaseModel.__init__`` runs: ``update_learning_rate``
records the iteration, and ``feed_data`` runs the model's own ``feed_data`` (whatever subclass defines it) and
transforms ``self.lq``/``self.gt`` only if an iteration was recorded since the previous ``feed_data``. The record
is consumed by that one call, so validation batches, test runs and any later ``feed_data`` go through untouched,
whatever their size. Instance attributes rather than a patched ``SRModel.feed_data``, because a class-level patch
is shadowed by every subclass that overrides ``feed_data`` and would act in the middle of one that extends it (and
makes ``lq`` from ``gt`` afterwards); an instance attribute wraps the model's complete ``feed_data`` for any
``BaseModel`` subclass. Models without such options are not touched at all.
"""
import functools


def attach(model, transforms):
    """Wrap ``model.update_learning_rate`` and ``model.feed_data`` of this one instance (see the module doc).

    Args:
        model (BaseModel): The model, in training.
        transforms (list[callable]): ``(lq, gt, current_iter) -> (lq, gt)``, applied in order to each training
            batch; ``gt`` may be None.
    """
    cls = type(model)
    pending = []  # the iteration recorded by update_learning_rate, consumed by the next feed_data

    @functools.wraps(cls.update_learning_rate)
    def update_learning_rate(current_iter, *args, **kwargs):
        cls.update_learning_rate(model, current_iter, *args, **kwargs)
        pending[:] = [current_iter]

    @functools.wraps(cls.feed_data)
    def feed_data(data, *args, **kwargs):
        cls.feed_data(model, data, *args, **kwargs)
        if not pending:
            return
        current_iter = pending.pop()
        if getattr(model, 'lq', None) is None:
            raise AttributeError(f'Training-batch transforms (train.progressive, train.mixing_augs) change self.lq '
                                 f'(and self.gt) after feed_data, but {cls.__name__}.feed_data did not set self.lq.')
        lq, gt = model.lq, getattr(model, 'gt', None)
        for transform in transforms:
            lq, gt = transform(lq, gt, current_iter)
        model.lq = lq
        if gt is not None:
            model.gt = gt

    model.update_learning_rate = update_learning_rate
    model.feed_data = feed_data
