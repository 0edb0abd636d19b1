"""A decoder for plain WebDataset pipelines that keeps hoigen's 16-bit and label images intact.

``wds.WebDataset(url).decode("rgb")`` sends every PNG through PIL's 8-bit modes: 16-bit depth comes out as
3-channel floats saturated at 1.0 and NOCS cut to 8 bits. Put :func:`wds_decoder` first::

    import webdataset as wds
    import hoigen.datasets

    ds = wds.WebDataset("out/shards/hoigen-{000000..000003}.tar").decode(hoigen.datasets.wds_decoder, "rgb")
    sample = next(iter(ds))
    sample["f000.depth.png"]  # (H, W) uint16, x depth_scale = mm, as hoigen's reader gives it
    sample["f000.nocs.png"]  # (H, W, 3) uint16, (x_nocs + 0.5) * 65535
    sample["f000.mask.png"]  # (H, W) uint8 instance ids
    sample["f000.rgb.png"]  # left to "rgb": (H, W, 3) float32 in [0, 1]

It decodes the members whose values are not 8-bit colour — ``fNNN.depth.png`` and ``fNNN.nocs.png`` (uint16) and
``fNNN.mask.png`` (uint8 instance ids) — exactly as :mod:`hoigen.datasets.reader` does, and returns None for
everything else, so WebDataset passes the other members on to the next handler (``"rgb"``, ``"torchrgb"``...).
"""

from __future__ import annotations

EXACT_IMAGES = ("depth", "nocs", "mask")
"""Frame images :func:`wds_decoder` decodes itself (their values are measurements or ids, not colours)."""


def wds_decoder(key: str, data: bytes):
    """WebDataset decoder handler: ``key`` is the member's extension with a leading dot (``.f000.depth.png``).

    Returns the decoded array for depth / NOCS / mask PNGs, None (not handled) for any other member.
    """
    parts = key.lower().lstrip(".").split(".")
    if len(parts) < 2 or parts[-1] != "png" or parts[-2] not in EXACT_IMAGES:
        return None
    from hoigen.render.png import decode_png

    return decode_png(data)


__all__ = ["EXACT_IMAGES", "wds_decoder"]
