"""StudySKDModel: SKDModel with the study's candidates (issue 10) that the product does not take.

* L_CL's restored negatives (``contrast_opt.type: StudySKDContrastiveLoss``, ``negatives``): ``lagged``, the output
  of a lagging average of the student, kept here with decay ``contrast_opt.lag_decay`` and saved in the training
  states (a resumed run goes on with it); ``batch``, the teacher's output for another image of the batch.
"""
from copy import deepcopy

import torch
from basicsr.utils.registry import MODEL_REGISTRY

from skd_basicsr.distill.skd_model import SKDModel
from skd_basicsr.platform.errors import OptionError


@MODEL_REGISTRY.register()
class StudySKDModel(SKDModel):
    """:class:`SKDModel` with the ``lagged`` and ``batch`` negatives of L_CL."""

    def init_training_settings(self):
        super().init_training_settings()
        self.check_batch_negative()
        self.net_lag = self.build_lagged_student()

    def check_batch_negative(self):
        """L_CL's ``batch`` negative takes another image of the batch: refuse a batch of one before training, the
        progressive stages' mini-batches included (a stage of one would stop the run when it begins, days in)."""
        if 'batch' not in self.negative_names():
            return
        batch = self.opt.get('datasets', {}).get('train', {}).get('batch_size_per_gpu')
        if batch is not None and batch < 2:
            raise OptionError('train.contrast_opt.negatives: batch takes another image of the batch, but '
                              f'datasets.train.batch_size_per_gpu is {batch}; use 2 or more, or drop batch.')
        minis = list((self.opt['train'].get('progressive') or {}).get('mini_batch_sizes') or [])
        small = [(stage + 1, size) for stage, size in enumerate(minis) if size < 2]
        if small:
            stage, size = small[0]
            raise OptionError('train.contrast_opt.negatives: batch takes another image of the batch, but '
                              f'train.progressive.mini_batch_sizes gives stage {stage} a mini-batch of {size}; use '
                              'mini-batches of 2 or more, or drop batch.')

    def negative_names(self):
        return self.cri_contrast.negatives if self.cri_contrast else ()

    def build_lagged_student(self):
        """The lagging average of the student that makes L_CL's ``lagged`` negative, or None when it is not used.

        A frozen copy of the student as it starts (after ``init_from_teacher`` or the resumed weights), moved
        towards the student after every step (:meth:`after_step`).
        """
        if 'lagged' not in self.negative_names():
            return None
        net_lag = deepcopy(self.get_bare_model(self.net_g))
        net_lag.eval()
        net_lag.requires_grad_(False)
        return net_lag

    @torch.no_grad()
    def after_step(self):
        """Move the lagging student towards the student (once per step)."""
        if self.net_lag is None:
            return
        decay = self.cri_contrast.lag_decay
        net_g = self.get_bare_model(self.net_g)
        for lagged, current in zip(self.net_lag.parameters(), net_g.parameters()):
            lagged.lerp_(current.detach(), 1 - decay)
        for lagged, current in zip(self.net_lag.buffers(), net_g.buffers()):
            lagged.copy_(current)

    def contrast_negatives(self, feats_t):
        """The negatives of ``contrast_opt.negatives``, in that order.

        * ``input``: the product's (:meth:`SKDModel.contrast_negatives`);
        * ``lagged``: the lagging student average's output on the input (one more student forward, no gradient),
          after iteration ``contrast_opt.lag_warmup_iter``: before it the average has barely left the student, the
          distance to it is about 0 and the ratio about ``d_pos / eps`` (2.3e5 at the first step of the tests' tiny
          run), finite, so no guard fires, and Adam's second moments stay inflated for thousands of steps;
        * ``batch``: the teacher's output for the next image of the batch (rolled by one), a restored image of other
          content.
        """
        negatives, feats = [], []
        for name in self.negative_names():
            if name == 'input':
                images, recorded = super().contrast_negatives(feats_t)
                negatives += images
                feats += recorded
                continue
            if name == 'lagged' and getattr(self, 'current_iter', 0) <= self.cri_contrast.lag_warmup_iter:
                continue
            with torch.no_grad():
                if name == 'lagged':
                    negatives.append(self.net_lag(self.lq))
                else:
                    if self.output_t.shape[0] < 2:
                        raise ValueError('train.contrast_opt.negatives: batch needs at least 2 images per batch.')
                    negatives.append(self.output_t.roll(1, dims=0))
            feats.append(None)
        return negatives, feats

    def get_training_state(self, epoch, current_iter):
        """SKDModel's training state plus the lagging student, when there is one."""
        state = super().get_training_state(epoch, current_iter)
        if self.net_lag is not None:
            state['lagged_student'] = self.net_lag.state_dict()
        return state

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.net_lag is not None and 'lagged_student' in resume_state:
            self.net_lag.load_state_dict(resume_state['lagged_student'])
