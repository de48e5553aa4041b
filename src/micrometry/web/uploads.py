"""Uploaded files as (name, bytes) images, with zip archives unpacked under a hard byte cap.

A zip's declared sizes are the sender's word: a 1 MB archive can declare 1 kB
members that inflate to gigabytes. Members are therefore read in small chunks
and counted as they inflate; the first byte over the budget stops the request.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from micrometry.errors import InputError
from micrometry.io.image import IMAGE_SUFFIXES

CHUNK = 1 << 20  # inflate at most 1 MiB per read: memory never follows a member's declared size


@dataclass
class Limits:
    """What one request may send and cost."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_sem_images: int = 2000
    max_particle_images: int = 8
    max_particle_pixels: int = 2**23  # 8.4 Mpx per particle image (a 3264x2448 photo)
    max_sem_pixels: int = 2**20  # SEM images are 72x48; larger ones only need a header for the message
    # Wall-clock seconds one request may compute: a few-kB image of tiny dots asks the particle model
    # for its largest scale (16x the pixels), minutes of CPU; beyond this it is stopped with a message.
    max_request_seconds: float = 120.0

    @property
    def max_unpacked_bytes(self) -> int:
        """Most bytes all zip members of one request may inflate to."""
        return 4 * self.max_upload_bytes


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, name: str, limit: int) -> bytes:
    """One member's bytes, refused as soon as more than ``budget`` bytes have actually inflated.

    ``limit`` is the request's whole unpacking allowance, for the message.

    Raises
    ------
    InputError
        Over the budget, or a corrupt, encrypted or unsupported member.
    """
    parts, size = [], 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(CHUNK):
                size += len(chunk)
                if size > budget:
                    raise InputError(f"zip archive unpacks to more than the limit of {_mb(limit)}", name)
                parts.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise InputError(f"corrupt or unsupported zip member {info.filename!r} ({exc})", name) from None
    return b"".join(parts)


def expand_uploads(
    files: list[tuple[str, bytes]], limits: Limits, max_images: int | None = None
) -> list[tuple[str, bytes]]:
    """Image files as (name, bytes), with zip archives unpacked (hidden files and non-images skipped).

    Raises
    ------
    InputError
        Nothing chosen, an unsupported file type, a bad or oversized zip, more than
        ``max_images`` images, or two images of the same name (their outputs would collide).
    """
    files = [(name, data) for name, data in files if name or data]  # a form's empty file field
    if not files:
        raise InputError("choose a file first")
    max_images = max_images or limits.max_sem_images
    budget = limits.max_unpacked_bytes
    out: list[tuple[str, bytes]] = []
    for name, data in files:
        if name.lower().endswith(".zip"):
            try:
                archive = zipfile.ZipFile(io.BytesIO(data))
            except (zipfile.BadZipFile, ValueError, EOFError):
                raise InputError("not a valid zip archive", name) from None
            members = [
                m
                for m in archive.infolist()
                if not m.is_dir()
                and Path(m.filename).suffix.lower() in IMAGE_SUFFIXES
                and not Path(m.filename).name.startswith(".")
            ]
            if len(out) + len(members) > max_images:
                raise InputError(f"too many images; the limit is {max_images}", name)
            for member in members:
                content = read_member(archive, member, budget, name, limits.max_unpacked_bytes)
                budget -= len(content)
                out.append((Path(member.filename).name, content))
        elif Path(name).suffix.lower() in IMAGE_SUFFIXES:
            out.append((name, data))
        else:
            raise InputError(f"unsupported file type (expected {', '.join(IMAGE_SUFFIXES)} or .zip)", name)
    if not out:
        raise InputError("no images in the upload")
    if len(out) > max_images:
        raise InputError(f"too many images ({len(out)}); the limit is {max_images}")
    seen: set[str] = set()
    for name, _ in out:
        if Path(name).stem in seen:
            raise InputError(
                "two images have this name; rename one (their results would overwrite each other)", name
            )
        seen.add(Path(name).stem)
    return out


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MB"
