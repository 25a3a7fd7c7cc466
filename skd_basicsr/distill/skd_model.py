"""SKDModel: BasicSR's SRModel with a frozen teacher, feature taps, adapters and the SKD losses.

One SKD iteration, every forward pass listed where it happens (:meth:`SKDModel.optimize_parameters`):

1. the student on the input, its distilled levels recorded with gradient;
2. the teacher on the input, without gradient: its output, its distilled levels and, in the teacher feature space,
   L_CL's features of the input (the negative);
3. L_CL's feature space (the teacher, or VGG19) on the student's output, with gradient to the student;
4. the same space on the positive(s), without gradient;
5. the same space on a negative that pass 2 did not see (super-resolution: the upsampled input).

Then the adapters map the student's levels to the teacher's channels, L_GK and L_CL are computed, and one backward
and one optimizer step update the student and the adapters. Under ``train.amp`` the five passes and the losses run
under autocast, the teacher's included, and the backward is the training precision's (the fp16 loss scale:
:mod:`skd_basicsr.platform.precision`); the parts of the losses whose precision was measured to matter compute in
float32 (the Gaussian kernel and the channel softmax of :mod:`skd_basicsr.distill.mca`, L_CL's distances).
"""
from collections import OrderedDict
from copy import deepcopy

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn import functional as F

from skd_basicsr.distill.adapters import adapters_for_pairs
from skd_basicsr.distill.distill_options import parse_distill_options
from skd_basicsr.distill.feature_space import teacher_feature_space
from skd_basicsr.distill.distill_schedule import DistillSchedule
from skd_basicsr.distill.student_init import LAST_CONV_SCALE, kaiming_start, same_on_every_rank
from skd_basicsr.distill.taps import FeatureTaps
from skd_basicsr.distill.teacher import build_frozen_teacher, teacher_metrics
from skd_basicsr.distill.weight_selection import select_weights
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.loss_builder import build_loss_checked
from skd_basicsr.platform.network_spec import NetworkSpec
from skd_basicsr.platform.nonfinite import finite_on_every_rank, nonfinite_terms, skip_or_stop
from skd_basicsr.platform.precision import precision_aware, sr_loss_terms

# options of the distillation study that the product does not take (benchmarks/study)
STUDY_OPTIONS = {name: f'{name} is an option of the distillation study (benchmarks/study, {cls}), not of the product.'
                 for cls, names in (('StudySKDFeatureLoss', ('channel_affinity', )),
                                    ('StudySKDContrastiveLoss', ('negatives', 'bound', 'lag_decay')))
                 for name in names}


@MODEL_REGISTRY.register()
class SKDModel(SRModel):
    """Soft Knowledge Distillation of ``network_g`` (student) from ``network_t`` (teacher).

    Total loss ``L_REC + alpha2 L_GK + alpha3 L_CL`` with L_REC from ``train.pixel_opt`` (logged ``l_pix``), L_GK
    from ``train.feature_opt`` (``l_gk`` and its parts) and L_CL from ``train.contrast_opt`` (``l_cl``); the alphas
    are the ``loss_weight`` of the last two. ``train.output_opt`` (any BasicSR pixel loss between the student's and
    the teacher's outputs, logged ``l_kd``) gives the usual output-distillation baseline. A non-finite total loss
    stops the run before the step (naming the term and the last good checkpoint), or skips the step when
    ``train.skip_nonfinite: true`` (:mod:`skd_basicsr.platform.nonfinite`, which guards the gradient of every
    model too). Everything else (EMA, validation, checkpoints) is SRModel's.

    The teacher (:mod:`skd_basicsr.distill.teacher`) is built from ``network_t`` and loaded from
    ``path.pretrain_network_t`` (``param_key_t``, ``strict_load_t``); it stays frozen in eval mode, runs under
    ``torch.no_grad()``, is never in the optimizer, never wrapped in DDP and never saved. Features are tapped by
    module name (``distill.features``); 1x1 adapters map student channels to the teacher's where they differ and are
    trained, saved in the training states and resumed with the student, but never written to ``net_g_*.pth``. A pair
    may choose the cheap spatial MCA form of its level (``{student: encoder_level1, teacher: encoder_level1,
    spatial_window: 8}``, or ``spatial_tokens: M``); pairs without one keep the exact global form. With
    ``contrast_opt.feature_space: teacher`` (the default here) the model builds the teacher feature space of L_CL
    (:func:`skd_basicsr.distill.feature_space.teacher_feature_space`) and gives it to the loss; the teacher's
    forward on the input records the negative's features with the distilled ones (for super-resolution the negative
    is the input upsampled to the output's size, see :meth:`contrast_negatives`).

    Resuming (``--auto_resume`` or ``path.resume_state``) points every ``network_<x>`` at the checkpoint saved at
    the resumed iteration, as BasicSR does, except the networks listed in ``frozen_networks`` (top-level option,
    by default ``[network_t]``): they are never trained, so never saved, and keep their configured weights and
    ``param_key`` (see :func:`skd_basicsr.platform.checkpoint.load_resume_state`).

    ``distill.init_from_teacher: true`` initialises the student from the teacher's weights by weight selection
    (:func:`skd_basicsr.distill.weight_selection.select_weights`) before the first iteration, on a fresh start only:
    a resumed run continues from its own checkpoint, and it cannot be combined with ``path.pretrain_network_g``.
    ``generic`` asks for the plain leading slice of every tensor, for an architecture without a selection rule.
    ``distill.student_init: kaiming`` is the random start for a student that weight selection cannot reach
    (:mod:`skd_basicsr.distill.student_init`), under the same rules, with rank 0's draw given to every rank.

    ``train.distill_schedule`` (:mod:`skd_basicsr.distill.distill_schedule`) scales alpha2 and alpha3 over the
    iterations (a warm-up, a decay to 0), logged as ``distill_scale``; without it they are constant, as in the paper.

    Subclasses (the study's, in benchmarks/study) change the iteration through :meth:`distill_scale`,
    :meth:`contrast_negatives` and :meth:`after_step`.
    """

    once_per_step = ('after_step', )  # under train.accum_iter, after the step only (platform/accumulation.py)

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.distill_schedule = DistillSchedule.from_options(train_opt.get('distill_schedule'))
        if not self.distill_schedule.constant and not (train_opt.get('feature_opt') or train_opt.get('contrast_opt')):
            raise OptionError('train.distill_schedule scales feature_opt and contrast_opt, but neither is set; remove '
                              'the schedule or add a distillation term.')
        self.distill_opt = parse_distill_options(self.opt.get('distill'), train_opt.get('feature_opt'))
        self.net_t = build_frozen_teacher(self.opt, self.device)
        self.print_network(self.net_t)
        if self.distill_opt['init_from_teacher']:
            self.init_student_from_teacher()
        elif self.distill_opt['student_init'] != 'default':
            self.init_student_at_random()
        self.pairs = self.distill_opt['features']
        if self.pairs and not train_opt.get('feature_opt'):
            # the pairs are L_GK's alone: without it they are neither tapped nor adapted (the shipped files keep
            # them for the commented feature_opt block)
            get_root_logger().info(f'distill.features: {len(self.pairs)} pair(s) unused, train.feature_opt (L_GK) '
                                   'is not set.')
            self.pairs = []
        self.taps_s = FeatureTaps(self.get_bare_model(self.net_g), [p['student'] for p in self.pairs], 'network_g')

        self.cri_feat = build_loss_checked(train_opt, 'feature_opt', self.device, STUDY_OPTIONS,
                                           **self.distill_opt['spatial_forms'])
        self.cri_output = build_loss_checked(train_opt, 'output_opt', self.device)
        teacher_space = teacher_feature_space(train_opt.get('contrast_opt'), self.net_t,
                                              lambda img, layers: self.taps_t.capture(self.net_t, img, layers))
        given = {'feature_space': teacher_space} if teacher_space else {}
        self.cri_contrast = build_loss_checked(train_opt, 'contrast_opt', self.device, STUDY_OPTIONS, **given)
        self.contrast_space = self.cri_contrast.space if self.cri_contrast else None
        teacher_layers = [p['teacher'] for p in self.pairs]
        self.taps_t = FeatureTaps(self.net_t, teacher_layers + (teacher_space.layers if teacher_space else []),
                                  'network_t')

        self.adapters = self.model_to_device_if_trainable(self.build_adapters())
        super().init_training_settings()

    # ----------------------------------------------------------------------------------------------------------
    # set-up
    # ----------------------------------------------------------------------------------------------------------
    def init_student_from_teacher(self):
        """Weight selection of the student from the loaded teacher (``distill.init_from_teacher``); fresh starts
        only."""
        logger = get_root_logger()
        if not self.fresh_start('distill.init_from_teacher'):
            return
        net_g = self.get_bare_model(self.net_g)
        generic = self.distill_opt['init_from_teacher'] == 'generic'
        try:
            state, report = select_weights(self.net_t.state_dict(), net_g, teacher_net=self.net_t, generic=generic)
        except OptionError as err:
            raise OptionError(f'distill.init_from_teacher: {err}') from None
        net_g.load_state_dict(state, strict=True)
        logger.info('distill.init_from_teacher: network_g initialised from network_t by weight selection.')
        for line in report.lines():
            logger.info(line)

    def fresh_start(self, option):
        """Whether an option that sets the student's initial weights acts: on a fresh start only, never beside
        ``path.pretrain_network_g``."""
        if self.opt['path'].get('resume_state'):
            get_root_logger().info(f'{option}: resuming, so the student continues from its own checkpoint.')
            return False
        if self.opt['path'].get('pretrain_network_g'):
            raise OptionError(f'{option} and path.pretrain_network_g both set the student\'s initial weights; keep '
                              'one of them.')
        return True

    def init_student_at_random(self):
        """``distill.student_init: kaiming`` (:mod:`skd_basicsr.distill.student_init`); fresh starts only."""
        if not self.fresh_start('distill.student_init'):
            return
        net_g = self.get_bare_model(self.net_g)
        kaiming_start(net_g)
        same_on_every_rank(net_g)
        get_root_logger().info('distill.student_init: kaiming: network_g\'s convolutions re-initialised (Kaiming '
                               f'normal, the last one x{LAST_CONV_SCALE}).')

    def build_adapters(self):
        """Discover feature shapes with one dummy forward of both nets, check them, and build the adapters.

        The same forward finds the taps whose output a later in-place op changes (:meth:`FeatureTaps.find_inplace`).
        The student runs it in eval mode, so that a network with BatchNorm keeps its running statistics.
        """
        net_g = self.get_bare_model(self.net_g)
        spec_t = NetworkSpec.from_options(self.opt['network_t'], 'network_t')
        probe = NetworkSpec.from_options(self.opt['network_g']).probe(self.device, spec_t)
        was_training = net_g.training
        net_g.eval()
        try:
            with torch.no_grad():
                out_s, feats_s = self.taps_s.find_inplace(net_g, probe)
                out_t, feats_t = self.taps_t.find_inplace(self.net_t, probe)
        finally:
            net_g.train(was_training)
        if out_s.shape != out_t.shape:
            raise OptionError(f'network_g outputs {tuple(out_s.shape)} but network_t outputs {tuple(out_t.shape)} '
                              f'for an input of {tuple(probe.shape)}; student and teacher must restore to the same '
                              'shape.')
        if self.cri_contrast and probe.shape[1] != out_t.shape[1]:
            raise OptionError(f'train.contrast_opt: L_CL takes the input as its negative, but the input has '
                              f'{probe.shape[1]} channels and the output {out_t.shape[1]}; remove contrast_opt for '
                              'this network.')
        adapters = adapters_for_pairs(self.pairs, feats_s, feats_t, self.distill_opt['adapter'], probe.shape[-1])
        return adapters.to(self.device)

    def model_to_device_if_trainable(self, net):
        # DDP refuses modules without trainable parameters (all levels may be identities)
        if any(p.requires_grad for p in net.parameters()):
            return self.model_to_device(net)
        return net.to(self.device)

    def setup_optimizers(self):
        """One optimizer over the student and the adapters, as SRModel builds it for the student alone."""
        train_opt = self.opt['train']
        params = [v for v in self.net_g.parameters() if v.requires_grad]
        params += [v for v in self.adapters.parameters() if v.requires_grad]
        optim_opt = deepcopy(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    # ----------------------------------------------------------------------------------------------------------
    # training
    # ----------------------------------------------------------------------------------------------------------
    @precision_aware
    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        scale = self.distill_scale(current_iter)
        with self.precision.autocast():
            # pass 1: the student on the input
            with self.taps_s.recording() as feats_s:
                self.output = self.net_g(self.lq)
            # pass 2: the teacher on the input. no_grad, not inference_mode: inference tensors cannot be saved for
            # backward, so a loss whose backward keeps its target (MSELoss, and any user loss) would fail on the
            # teacher's output and features; inference_mode would only also skip version-counter bookkeeping.
            with torch.no_grad(), self.taps_t.recording() as feats_t:
                self.output_t = self.net_t(self.lq)
            contrast = None
            # L_CL's negatives (a subclass may have none yet: then L_CL is not computed)
            images, recorded = self.contrast_negatives(feats_t) if self.cri_contrast and scale > 0 else ([], [])
            if images:
                # pass 3: L_CL's feature space on the student's output, with gradient to the student
                anchor = self.contrast_space(self.output)
                with torch.no_grad():
                    # pass 4: ... on the positive(s)
                    positives = [self.contrast_space(img)
                                 for img in self.cri_contrast.positives(self.output_t, self.gt)]
                    # pass 5: ... on the negatives whose features pass 2 did not record
                    negatives = [self.contrast_space(img) if feats is None else feats
                                 for img, feats in zip(images, recorded)]
                contrast = (anchor, positives, negatives)
            terms = self.loss_terms(feats_s, feats_t, contrast, scale)
        l_total = sum(value for _, value, summed in terms if summed)
        loss_dict = OrderedDict((name, value) for name, value, _ in terms)
        if not finite_on_every_rank(l_total, self.opt.get('dist', False)):
            self.log_dict = self.reduce_loss_dict(loss_dict)
            self.handle_nonfinite(current_iter, loss_dict)
            return
        self.precision.backward(l_total)
        self.optimizer_g.step()
        self.after_step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def loss_terms(self, feats_s, feats_t, contrast=None, scale=1.0):
        """Every logged loss value in log order, as (name, value, summed into the total).

        SRModel's pixel and perceptual terms, then L_GK (summed) and its parts (logged only), output KD and L_CL.
        ``contrast`` holds L_CL's features (anchor, positives, negatives) of passes 3-5. ``scale``
        (:meth:`distill_scale`) multiplies L_GK and L_CL; at 0 they are not computed and are logged as 0.
        """
        zero = self.output.new_zeros(())
        terms = [(name, value, True) for name, value in sr_loss_terms(self)]
        if self.cri_feat and scale > 0:
            student = self.adapters([feats_s[p['student']] for p in self.pairs])
            l_gk, parts = self.cri_feat(student, [feats_t[p['teacher']] for p in self.pairs])
            terms += [('l_gk', scale * l_gk, True)] + [(name, scale * value, False) for name, value in parts.items()]
        elif self.cri_feat:
            # the adapters do not run at all (not even under DDP, whose reducer waits only for modules that ran)
            terms.append(('l_gk', zero, True))
        if self.cri_output:
            terms.append(('l_kd', self.cri_output(self.output, self.output_t), True))
        if self.cri_contrast and contrast is not None:
            terms.append(('l_cl', scale * self.cri_contrast.from_features(*contrast), True))
        elif self.cri_contrast:
            terms.append(('l_cl', zero, True))
        if not self.distill_schedule.constant:
            terms.append(('distill_scale', self.output.new_tensor(float(scale)), False))
        return terms

    def distill_scale(self, current_iter):
        """The factor on alpha2 L_GK and alpha3 L_CL at ``current_iter``: ``train.distill_schedule``'s
        (:mod:`skd_basicsr.distill.distill_schedule`; 1 at every iteration without one, as in the paper)."""
        return self.distill_schedule(current_iter)

    def contrast_negatives(self, feats_t):
        """L_CL's negatives and their features where pass 2 already recorded them.

        The degraded input. For restoration at scale 1 it is the negative as it is, and in the teacher feature space
        its features are the teacher's taps from its forward on the input. For super-resolution the input is smaller
        than the output: the negative is its bicubic upsampling (what a network that adds no detail would return),
        and its features need a pass of their own, at the output's size, as the anchor's do.

        Returns:
            tuple[list[Tensor], list[dict | None]]: The negatives and their features (None where not known).
        """
        if self.lq.shape[-2:] == self.output.shape[-2:]:
            return [self.lq], [self.cri_contrast.space.recorded(feats_t)]  # None in a space other than the teacher's
        with torch.no_grad():
            upsampled = F.interpolate(self.lq, size=self.output.shape[-2:], mode='bicubic', align_corners=False)
        return [upsampled.clamp(0, 1)], [None]

    def after_step(self):
        """Called after every optimizer step (once per step under ``train.accum_iter``); nothing here."""

    def handle_nonfinite(self, current_iter, loss_dict):
        """Skip the step (``train.skip_nonfinite: true``) or stop, naming the term and the last good checkpoint.

        Every rank comes here together (:func:`skd_basicsr.platform.nonfinite.finite_on_every_rank`).
        """
        where = nonfinite_terms(loss_dict)
        self.optimizer_g.zero_grad()
        self.current_iter = current_iter
        skip_or_stop(self, f'the loss term(s) {where}', f'non-finite loss term(s) {where}')

    # ----------------------------------------------------------------------------------------------------------
    # validation
    # ----------------------------------------------------------------------------------------------------------
    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.is_train and self.opt['val'].get('metrics'):
            self.report_teacher_once(dataloader, current_iter, tb_logger)
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def report_teacher_once(self, dataloader, current_iter=0, tb_logger=None):
        """Log the teacher's metrics on a validation set the first time it is seen: a wrong teacher shows at once.

        The metrics (:func:`skd_basicsr.distill.teacher.teacher_metrics`) go to the text log and, as
        ``teacher/metrics/<dataset>/<metric>`` beside BasicSR's own ``metrics/<dataset>/<metric>``, to TensorBoard (and
        through it to wandb, which BasicSR syncs from TensorBoard).
        """
        name = dataloader.dataset.opt['name']
        self.teacher_metrics = getattr(self, 'teacher_metrics', {})
        if name in self.teacher_metrics:
            return
        self.teacher_metrics[name] = teacher_metrics(self.net_t, dataloader, self.opt, self.device)
        text = '\t'.join(f'# {metric}: {value:.4f}' for metric, value in self.teacher_metrics[name].items())
        get_root_logger().info(f'Teacher (network_t) on {name}:\t{text}')
        if tb_logger:
            for metric, value in self.teacher_metrics[name].items():
                tb_logger.add_scalar(f'teacher/metrics/{name}/{metric}', value, current_iter)

    # ----------------------------------------------------------------------------------------------------------
    # checkpoints
    # ----------------------------------------------------------------------------------------------------------
    def get_training_state(self, epoch, current_iter):
        """BasicSR's training state plus the adapters."""
        state = super().get_training_state(epoch, current_iter)
        state['adapters'] = self.get_bare_model(self.adapters).state_dict()
        return state

    def resume_training(self, resume_state):
        # checked first: the optimizer's state of a non-SKD run lacks the adapters' parameters, and its load would
        # fail with a message about parameter groups instead
        if 'adapters' not in resume_state:
            raise OptionError('The training state has no adapters: it was not written by SKDModel.')
        super().resume_training(resume_state)
        self.get_bare_model(self.adapters).load_state_dict(resume_state['adapters'])
