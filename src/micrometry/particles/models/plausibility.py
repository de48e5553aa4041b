"""Results a model should not be trusted on: said on the console and stored with the results.

A segmentation is implausible when it finds no particles, when "particles"
cover most of the image (typically the background segmented as objects, e.g.
a model that assumes the other polarity), or when the particles found meet the
network at a size far from the one it was trained for.
"""

from __future__ import annotations

import numpy as np

from micrometry.particles.models.sizing import NET_DIAMETER, median_diameter

#: Particles covering more than this fraction of the image look like segmented background.
MAX_COVERAGE = 0.6
#: Network diameters outside [1 / SIZE_FACTOR, SIZE_FACTOR] x the trained diameter are out of distribution.
SIZE_FACTOR = 2.5


def plausibility_warnings(
    labels: np.ndarray, diameter_px: float | None, net_diameter: float | None, scale: float | None
) -> list[str]:
    """Warnings (plain sentences) about one image's segmentation; empty when it looks plausible.

    Parameters
    ----------
    labels : ndarray
        The instances found, at the image's resolution.
    diameter_px : float or None
        The particle diameter used (given or estimated), in image pixels.
    net_diameter : float or None
        The diameter the model was trained for (None: a fixed-scale model; the
        package's default is assumed).
    scale : float or None
        The network scale used.
    """
    out = []
    count = int(labels.max(initial=0))
    if count == 0:
        out.append("no particles found")
        return out
    coverage = float((labels > 0).mean())
    if coverage > MAX_COVERAGE:
        out.append(
            f"particles cover {100 * coverage:.0f} % of the image: the background may have been "
            "segmented as particles"
        )
    found = median_diameter(labels)
    if found is not None and scale:
        trained = net_diameter or NET_DIAMETER
        at_net = found * scale
        if not trained / SIZE_FACTOR <= at_net <= trained * SIZE_FACTOR:
            out.append(
                f"median particle diameter {found:.1f} px meets the network at {at_net:.1f} px, far from "
                f"the {trained:g} px it was trained for: pass --diameter PX (or --scale) to correct"
            )
    if diameter_px is not None and found is not None and not 0.5 <= found / diameter_px <= 2.0:
        out.append(
            f"median particle diameter found ({found:.1f} px) is far from the size used "
            f"({diameter_px:.1f} px)"
        )
    return out
