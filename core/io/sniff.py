"""Which reader a file needs, from its first bytes (never from its name alone)."""

from __future__ import annotations

_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00", b"MM\x00*",  # TIFF
    b"II+\x00", b"MM\x00+",  # BigTIFF
    b"BM",  # BMP
    b"GIF87a", b"GIF89a",
)


def looks_like_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: the 128-byte preamble followed by ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def looks_like_image(data: bytes) -> bool:
    """A PNG, JPEG, TIFF, BMP or GIF file, by its magic number."""
    return data.startswith(_IMAGE_MAGIC)


def named_dicom(name: str | None) -> bool:
    """A name ending in .dcm or .dicom: worth a try as DICOM written without its preamble."""
    return (name or "").lower().endswith((".dcm", ".dicom"))
