"""The dense model family: a U-Net predicting per-pixel maps that decode into instances.

``center-offset`` and ``unet-watershed`` (:mod:`.dense_models`): one
:class:`~.unet.UNet`, a head saying what its maps mean (:mod:`.heads`, with
:mod:`.target_maps` and :mod:`.decode`), one training task (:mod:`.dense_task`)
and one segmenter (:mod:`.dense_segmenter`).
"""
