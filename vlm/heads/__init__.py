"""Task heads on the LVM encoder (seed 000, section 3): classification and image-to-image decoding.

from vlm.heads import ClassificationHead, ImageDecoderHead
feats = lvm.encode(images)
logits = ClassificationHead(sum(lvm.feature_dims), n_classes=4)(feats.stage_means)
restored = ImageDecoderHead(lvm.feature_dims, lvm.config.patch_size)(feats.stages, images)
"""

from vlm.heads.classification import ClassificationHead
from vlm.heads.image_decoder import ImageDecoderHead

__all__ = ["ClassificationHead", "ImageDecoderHead"]
