"""Read NIfTI files defensively: header checked before any large allocation, gzip bounded."""

from __future__ import annotations

import hashlib
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes

from ..errors import InvalidCaseError, shortened

try:  # zlib-ng inflates BraTS files 2-5x faster than the standard zlib (docs/benchmarks.md)
    from zlib_ng import zlib_ng as _inflate
except ImportError:  # pragma: no cover - optional speed-up
    _inflate = zlib  # type: ignore[assignment]

_HEADER_BYTES = 352  # NIfTI-1 header (348) + extension flag (4)
_GZIP_MAGIC = b"\x1f\x8b"
_PROBE_BYTES = 64 * 1024  # enough compressed bytes for any header
_SLACK_BYTES = 1 << 20  # trailing bytes a file may carry beyond its voxels


@dataclass(frozen=True)
class NiftiLimits:
    """Sanity bounds on header dimensions, checked before the voxels are decompressed."""

    max_dim: int = 1024
    max_voxels: int = 128 * 1024 * 1024


@dataclass
class NiftiSource:
    """One file's raw bytes, parsed header and content hash; voxels are decoded on demand."""

    path: Path
    raw: bytes
    sha256: str
    header: nib.Nifti1Header
    shape: tuple[int, ...]
    affine: np.ndarray
    gzipped: bool
    offset: int  # where the voxels start in the (decompressed) file
    scaling: tuple[float, float] | None  # (slope, intercept) when the header scales its voxels

    @property
    def expected_bytes(self) -> int:
        """Size of the (decompressed) file the header describes: its offset plus the voxels."""
        return self.offset + int(np.prod(self.shape)) * self.header.get_data_dtype().itemsize

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel sizes in mm of the affine the geometry uses (not pixdim, which a header may contradict)."""
        return tuple(float(v) for v in voxel_sizes(self.affine))  # type: ignore[return-value]

    def load(self) -> np.ndarray:
        """Decompress (bounded by the header's size) and decode the voxel array."""
        expected = self.expected_bytes
        data = _decompress_exactly(self, expected) if self.gzipped else self.raw
        if len(data) < expected:
            raise InvalidCaseError(self.path, f"truncated: header promises {expected} bytes, file holds {len(data)}")
        count = int(np.prod(self.shape))
        arr = np.frombuffer(data, dtype=self.header.get_data_dtype(), count=count, offset=self.offset)
        arr = arr.reshape(self.shape, order="F")
        if not arr.dtype.isnative:  # big-endian files: every later step reads native codes
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if self.scaling is not None:
            slope, inter = self.scaling
            arr = arr * np.float32(slope) + np.float32(inter)
        return arr


def _decompress_exactly(src: NiftiSource, expected: int) -> bytes:
    """Inflate every gzip member (a multi-member file is valid gzip) up to `expected` bytes, then
    require the data to end there with valid checksums. More data is told apart from damage by
    inflating the rest (only on that failure path): a corrupt stream fails its checksum."""
    parts, total, data = [], 0, src.raw
    while True:
        d = _inflate.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = d.decompress(data, expected + 1 - total)
        except _inflate.error as exc:
            raise InvalidCaseError(src.path, f"corrupt gzip data ({exc})") from None
        parts.append(part)
        total += len(part)
        if total > expected:
            raise InvalidCaseError(src.path, _extra_data_problem(d, expected))
        if not d.eof:
            raise InvalidCaseError(src.path, "truncated gzip file (stream ends before its checksum)" if total >= expected
                                   else f"truncated: header promises {expected} bytes, gzip stream holds {total}")
        data = d.unused_data.lstrip(b"\0")  # some writers pad members with zeros
        if not data:
            break
        if data[:2] != _GZIP_MAGIC:
            raise InvalidCaseError(src.path, f"{len(data)} bytes after the gzip stream are not gzip data")
    if total < expected:
        raise InvalidCaseError(src.path, f"truncated: header promises {expected} bytes, gzip stream holds {total}")
    return b"".join(parts)


def _extra_data_problem(d: Any, expected: int) -> str:
    """Why a gzip member inflates past the header's size: damage (a checksum fails) or extra data."""
    extra, limit = 1, 4 * expected + (1 << 20)
    try:
        while not d.eof and extra < limit:
            more = d.decompress(d.unconsumed_tail, 1 << 20) if d.unconsumed_tail else d.flush()
            if not more and not d.unconsumed_tail:
                break
            extra += len(more)
    except _inflate.error as exc:
        return f"corrupt gzip data ({exc})"
    if not d.eof:
        return "corrupt or truncated gzip data (the stream does not end where the NIfTI header says)"
    return f"gzip stream holds {extra} more bytes than the NIfTI header describes"


def _header_bytes(path: Path, head: bytes) -> tuple[bytes, bool]:
    if head[:2] == _GZIP_MAGIC:
        try:
            return _inflate.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(head, _HEADER_BYTES), True
        except _inflate.error as exc:
            raise InvalidCaseError(path, f"corrupt gzip data ({exc})") from None
    if path.name.lower().endswith(".gz"):
        raise InvalidCaseError(path, "not a gzip file although named .gz")
    return head[:_HEADER_BYTES], False


def _scaling(path: Path, hdr: nib.Nifti1Header) -> tuple[float, float] | None:
    """The header's voxel scaling; a slope of 0 or NaN means none (the NIfTI rule)."""
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if slope == 0 or np.isnan(slope):
        return None
    if not np.isfinite(slope) or not np.isfinite(inter):
        raise InvalidCaseError(path, f"header scaling is not finite (scl_slope {slope:g}, scl_inter {inter:g})")
    return None if (slope, inter) == (1.0, 0.0) else (slope, inter)


def _offset(path: Path, hdr: nib.Nifti1Header) -> int:
    value = float(hdr["vox_offset"])
    if not np.isfinite(value) or value < 0 or value != int(value):
        raise InvalidCaseError(path, f"header vox_offset {value:g} is not a whole number of bytes")
    return max(int(value), _HEADER_BYTES)


def open_nifti(path: str | Path, limits: NiftiLimits = NiftiLimits()) -> NiftiSource:
    """Read a file whose header and size make sense, and validate the header; voxels are not decoded yet.

    Only regular files are opened (a FIFO would block, a device never end), and the header is
    read and checked before the rest, so a file far larger than its header describes is refused
    before it is read. Rejects empty, non-gzip `.gz`, non-NIfTI, non-3-D and absurdly sized files
    with an `InvalidCaseError` naming the file.
    """
    path = Path(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidCaseError(path, "not a regular file (a FIFO, device or socket): only files are read")
        if info.st_size == 0:
            raise InvalidCaseError(path, "empty file (0 bytes)")
        with open(path, "rb") as f:
            head = f.read(_PROBE_BYTES)
            hdr, shape, header_gzipped = _parse_header(path, head)
            source = NiftiSource(path=path, raw=b"", sha256="", header=hdr, shape=shape, affine=hdr.get_best_affine(),
                                 gzipped=header_gzipped, offset=_offset(path, hdr), scaling=_scaling(path, hdr))
            _check_affine(source)
            _check_size(source, info.st_size, limits)
            raw = head + f.read()
    except OSError as exc:
        raise InvalidCaseError(path, f"cannot read file ({exc.strerror or exc})") from None
    source.raw, source.sha256 = raw, hashlib.sha256(raw).hexdigest()
    return source


def _parse_header(path: Path, head: bytes) -> tuple[nib.Nifti1Header, tuple[int, ...], bool]:
    block, gzipped = _header_bytes(path, head)
    if len(block) < 348:
        raise InvalidCaseError(path, f"too short for a NIfTI header ({len(block)} bytes)")
    try:
        hdr = nib.Nifti1Header(binaryblock=block[:348], check=True)  # extensions are not needed
        shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = hdr.get_data_dtype()
    except Exception as exc:  # nibabel raises several types for a bad header
        raise InvalidCaseError(path, f"not a NIfTI-1 file ({shortened(str(exc), 100)})") from None
    if len(shape) != 3:
        dims = "x".join(str(s) for s in shape) or "0"
        raise InvalidCaseError(path, f"image is {len(shape)}-D ({dims}); BraTS images must be 3-D")
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise InvalidCaseError(path, f"unsupported voxel type {dtype}")
    return hdr, shape, gzipped


def _check_size(source: NiftiSource, file_bytes: int, limits: NiftiLimits) -> None:
    shape, path = source.shape, source.path
    if min(shape) < 1 or max(shape) > limits.max_dim or int(np.prod(shape)) > limits.max_voxels:
        raise InvalidCaseError(
            path, f"header claims an implausible size {'x'.join(map(str, shape))} (limit {limits.max_dim} per axis, "
                  f"{limits.max_voxels} voxels)")
    expected = source.expected_bytes
    if not source.gzipped and file_bytes < expected:
        raise InvalidCaseError(path, f"truncated: header promises {expected} bytes, file holds {file_bytes}")
    if file_bytes > expected + expected // 100 + _SLACK_BYTES:  # gzip never grows data by more than ~0.03%
        raise InvalidCaseError(path, f"file is {file_bytes} bytes, far more than the {expected} its header describes "
                                     "(not read)")


def _check_affine(source: NiftiSource) -> None:
    affine = source.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InvalidCaseError(source.path, "header affine is not finite or not invertible")
