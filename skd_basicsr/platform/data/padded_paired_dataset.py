"""BasicSR's PairedImageDataset with Restormer's treatment of training images smaller than the crop."""
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import bgr2ycbcr, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torchvision.transforms.functional import normalize

from skd_basicsr.platform.data.decoded_images import DecodingDataset
from skd_basicsr.platform.data.transforms import pad_pair_to_crop, to_float


@DATASET_REGISTRY.register()
class PaddedPairedImageDataset(DecodingDataset, PairedImageDataset):
    """:class:`basicsr.data.PairedImageDataset` whose training pairs smaller than the crop are padded, not refused.

    BasicSR's dataset raises ``LQ (321, 481) is smaller than patch size (384, 384)`` on such a pair; Restormer's
    own paired dataset reflect-pads both images at the bottom and right to the crop first, and so does this one
    (:func:`skd_basicsr.platform.data.transforms.pad_pair_to_crop`), then crops, flips and rotates as BasicSR does.
    Validation and test samples are whole and unpadded, as BasicSR's. The options are BasicSR's (``dataroot_gt``,
    ``dataroot_lq``, ``io_backend``, ``filename_tmpl``, ``meta_info_file``, ``gt_size``, ``use_hflip``, ``use_rot``,
    ``color``, ``mean``, ``std``), so a file switches by its ``type`` alone, plus ``cache_data`` (bool, default
    false): decode every image once, when the dataset is built, and hold it in memory
    (:mod:`skd_basicsr.platform.data.decoded_images`); the samples are the same.

    An image that does not decode, or decodes to nothing, raises a ValueError that names its file.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.setup_decoding(opt)

    def image_items(self):
        return [(pair[key], client) for pair in self.paths for key, client in (('gt_path', 'gt'), ('lq_path', 'lq'))]

    def __getitem__(self, index):
        scale = self.opt['scale']
        gt_path, lq_path = self.paths[index]['gt_path'], self.paths[index]['lq_path']
        img_gt, img_lq = self.decoded(gt_path, 'gt'), self.decoded(lq_path, 'lq')

        if self.opt['phase'] == 'train':
            gt_size = self.opt['gt_size']
            img_gt, img_lq = pad_pair_to_crop(img_gt, img_lq, gt_size, scale)
            img_gt, img_lq = paired_random_crop(img_gt, img_lq, gt_size, scale, gt_path)
            img_gt, img_lq = augment([to_float(img_gt), to_float(img_lq)], self.opt['use_hflip'], self.opt['use_rot'])
        else:
            img_gt, img_lq = to_float(img_gt), to_float(img_lq)
        if self.opt.get('color') == 'y':
            img_gt, img_lq = (bgr2ycbcr(img, y_only=True)[..., None] for img in (img_gt, img_lq))
        if self.opt['phase'] != 'train':  # as BasicSR: a gt larger than scale x lq (SR benchmarks) is cropped to it
            img_gt = img_gt[:img_lq.shape[0] * scale, :img_lq.shape[1] * scale]
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            for img in (img_lq, img_gt):
                normalize(img, self.mean, self.std, inplace=True)
        return {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}
