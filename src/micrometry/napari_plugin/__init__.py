"""micrometry in napari: a reader, two writers, a segmentation widget and sample data.

Declared in ``micrometry/napari.yaml`` (npe2; entry point ``napari.manifest``);
installed with ``pip install 'micrometry[napari]'`` and a Qt binding. The reader,
writers and samples are plain functions on numpy arrays and layer-data tuples
``(data, metadata, layer_type)``: they import neither napari nor Qt. Only
:mod:`~micrometry.napari_plugin.widget` does, and nothing else in micrometry
imports this package.

Layer names tie an image to its particles: image ``NAME``, labels ``NAME labels``
(:data:`LABELS_SUFFIX`); the reader, the writers and the widget all follow it.
"""

#: A labels layer's name is its image layer's name plus this.
LABELS_SUFFIX = " labels"


def labels_name(image_name: str) -> str:
    """The labels layer name that belongs to an image layer."""
    return f"{image_name}{LABELS_SUFFIX}"


def image_name(labels_name: str) -> str:
    """The image layer name a labels layer belongs to (its own name without the suffix)."""
    return labels_name[: -len(LABELS_SUFFIX)] if labels_name.endswith(LABELS_SUFFIX) else labels_name
