"""BasicSR's PairedImageDataset with Restormer's treatment of training images smaller than the crop."""
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, bgr2ycbcr, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torchvision.transforms.functional import normalize

from skd_basicsr.platform.data.transforms import pad_pair_to_crop, read_image


@DATASET_REGISTRY.register()
class PaddedPairedImageDataset(PairedImageDataset):
    """:class:`basicsr.data.PairedImageDataset` whose training pairs smaller than the crop are padded, not refused.

    BasicSR's dataset raises ``LQ (321, 481) is smaller than patch size (384, 384)`` on such a pair; Restormer's
    own paired dataset reflect-pads both images at the bottom and right to the crop first, and so does this one
    (:func:`skd_basicsr.platform.data.transforms.pad_pair_to_crop`), then crops, flips and rotates as BasicSR does.
    Validation and test samples are BasicSR's, whole and unpadded. The options are BasicSR's (``dataroot_gt``,
    ``dataroot_lq``, ``io_backend``, ``filename_tmpl``, ``meta_info_file``, ``gt_size``, ``use_hflip``, ``use_rot``,
    ``color``, ``mean``, ``std``), so a file switches by its ``type`` alone.

    An image that does not decode, or decodes to nothing, raises a ValueError that names its file.
    """

    def __getitem__(self, index):
        if self.opt['phase'] != 'train':
            return super().__getitem__(index)
        if self.file_client is None:
            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        scale, gt_size = self.opt['scale'], self.opt['gt_size']
        gt_path, lq_path = self.paths[index]['gt_path'], self.paths[index]['lq_path']
        name = type(self).__name__
        img_gt = read_image(self.file_client, gt_path, 'gt', name)
        img_lq = read_image(self.file_client, lq_path, 'lq', name)

        img_gt, img_lq = pad_pair_to_crop(img_gt, img_lq, gt_size, scale)
        img_gt, img_lq = paired_random_crop(img_gt, img_lq, gt_size, scale, gt_path)
        img_gt, img_lq = augment([img_gt, img_lq], self.opt['use_hflip'], self.opt['use_rot'])
        if self.opt.get('color') == 'y':
            img_gt, img_lq = (bgr2ycbcr(img, y_only=True)[..., None] for img in (img_gt, img_lq))
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            for img in (img_lq, img_gt):
                normalize(img, self.mean, self.std, inplace=True)
        return {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}
