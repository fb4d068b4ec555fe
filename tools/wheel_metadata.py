"""A remote wheel's METADATA, read from its zip directory with a few HTTP Range requests.

Only for indexes that serve no PEP 658 `.metadata` file: the zip's central directory sits at the end of
the file, so a few blocks of a multi-gigabyte wheel are enough.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Mapping
from email.parser import HeaderParser
from typing import Any

from builder.errors import MirrorError

Fetch = Callable[[str, Mapping[str, str]], bytes]
"""GET a URL with extra headers; raises MirrorError (HTTP 404: tools.pypi.NotFoundError)."""

RANGE_BLOCK = 1 << 18


class RangeReader(io.RawIOBase):
    """A remote file read with HTTP Range requests, in cached blocks (for zipfile)."""

    def __init__(self, fetch: Fetch, url: str, size: int) -> None:
        self.fetch, self.url, self.size = fetch, url, size
        self.position = 0
        self.blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _block(self, number: int) -> bytes:
        if number not in self.blocks:
            first = number * RANGE_BLOCK
            last = min(self.size, first + RANGE_BLOCK) - 1
            self.blocks[number] = self.fetch(self.url, {"Range": f"bytes={first}-{last}"})
        return self.blocks[number]

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self.position)
        chunks, position = [], self.position
        while position < self.position + want:
            block = self._block(position // RANGE_BLOCK)
            offset = position % RANGE_BLOCK
            piece = block[offset : offset + self.position + want - position]
            if not piece:
                break
            chunks.append(piece)
            position += len(piece)
        data = b"".join(chunks)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def wheel_metadata(fetch: Fetch, url: str, size: int) -> str:
    """The METADATA of a remote wheel of `size` bytes."""
    with zipfile.ZipFile(io.BufferedReader(RangeReader(fetch, url, size), RANGE_BLOCK)) as wheel:
        names = [n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if not names:
            raise MirrorError(f"{url}: no *.dist-info/METADATA in the wheel")
        return wheel.read(names[0]).decode("utf-8", "replace")


def requires_dist_from_metadata(text: str) -> tuple[str, ...]:
    """`Requires-Dist:` lines of a wheel's METADATA file."""
    return tuple(HeaderParser().parsestr(text).get_all("Requires-Dist") or ())
