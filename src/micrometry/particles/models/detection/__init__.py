"""Instance detection models in plain PyTorch (no torchvision): Mask R-CNN and its parts.

One idea per module: box geometry and coding (:mod:`.boxes`), non-maximum
suppression (:mod:`.nms`), RoIAlign (:mod:`.roi_align`), anchors, the FPN
backbone, the region proposal network, the box and mask heads, their losses,
the model itself (:mod:`.maskrcnn`) and mask pasting (:mod:`.paste`).
Boxes are ``(x1, y1, x2, y2)`` in pixel-edge coordinates: pixel ``(r, c)``
covers ``[c, c + 1) x [r, r + 1)``.
"""
