"""Validation and testing on images of any size, for every model whose ``test`` is SRModel's.

A windowed transformer (BasicSR's SwinIR, HAT) needs inputs whose height and width are multiples of its window;
Set5's low-resolution images (head 69 x 69, woman 57 x 84) are not. BasicSR pads them in ``SwinIRModel.test`` only,
so an ``SRModel`` file with a SwinIR network, and SKDModel (an SRModel), crash at their first validation.
:func:`padding_to_multiple` wraps ``SRModel.test``: the input is reflect-padded at the bottom and right to the
multiple ``network_g`` needs (:class:`skd_basicsr.platform.network_spec.NetworkSpec`: the window, 8 for Restormer, 1
for a plain CNN), the model's own test runs on it, and the output is cropped back to the input's size times the scale.
Networks that need no multiple are not touched.
"""
import functools

from skd_basicsr.platform.network_spec import NetworkSpec, crop_output, pad_to_multiple


def padding_to_multiple(test):
    """``SRModel.test`` on ``self.lq`` padded to the multiple of ``network_g``, with ``self.output`` cropped back.

    ``self.lq`` is the unpadded input again afterwards, so the saved and scored images are those of the dataset.
    """

    @functools.wraps(test)
    def padded_test(self):
        multiple = NetworkSpec.from_options(self.opt['network_g']).size_multiple
        if multiple == 1:
            return test(self)
        lq = self.lq
        self.lq, size = pad_to_multiple(lq, multiple)
        try:
            test(self)
            self.output = crop_output(self.output, size, self.lq.shape[-1])
        finally:
            self.lq = lq

    return padded_test
