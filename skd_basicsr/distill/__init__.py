"""Distillation infrastructure that works for any BasicSR network: feature taps by module name, adapters."""
from skd_basicsr.distill.adapters import FeatureAdapters
from skd_basicsr.distill.taps import FeatureTaps

__all__ = ['FeatureAdapters', 'FeatureTaps']
