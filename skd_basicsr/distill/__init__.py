"""The product: Soft Knowledge Distillation (Zhang & Yan, ICASSP 2025) for any BasicSR network.

Importing this package registers SKD's losses and SKDModel in BasicSR's registries. What lives where:

* the paper's concepts, MCA (channel, spatial and its cheap forms) and the Gaussian-kernel distance: :mod:`.mca`,
  on the attention numerics of :mod:`.attention`;
* L_GK and L_CL as BasicSR losses: :mod:`.skd_loss`, :mod:`.contrastive_loss` (with its feature spaces,
  :mod:`.feature_space`);
* what connects two networks: feature taps by module name (:mod:`.taps`), 1x1 adapters (:mod:`.adapters`), the
  student's start from the teacher's weights (:mod:`.weight_selection`);
* the model that runs one SKD iteration: :mod:`.skd_model`.
"""
from skd_basicsr.distill.adapters import FeatureAdapters
from skd_basicsr.distill.taps import FeatureTaps
from skd_basicsr.distill.mca import gaussian_kernel_distance, mca_channel, mca_spatial
from skd_basicsr.distill.skd_loss import SKDFeatureLoss
from skd_basicsr.distill.contrastive_loss import SKDContrastiveLoss
from skd_basicsr.distill import skd_model  # noqa: F401  (registers SKDModel)

__all__ = ['FeatureAdapters', 'FeatureTaps', 'SKDContrastiveLoss', 'SKDFeatureLoss', 'gaussian_kernel_distance',
           'mca_channel', 'mca_spatial']
