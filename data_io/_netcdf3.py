"""The size a classic netCDF file (CDF1/2/5) must have, read from its header.

netCDF-C reads a truncated classic file without complaint: the missing bytes come back as zeros or fill values
(a truncated time axis shows up as "duplicate time stamps", truncated data as plausible numbers). The header
records where every variable starts, so the size the file must have is known before any value is read.
"""

from __future__ import annotations

import struct

# nc_type -> bytes per value (classic types 1-6, CDF5 adds 7-11)
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
_NC_DIMENSION, _NC_VARIABLE, _NC_ATTRIBUTE = 10, 11, 12


class _Header:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.pos = raw, 4
        version = raw[3]
        self.count_fmt = ">Q" if version == 5 else ">I"  # nelems, dim lengths, dim ids, vsize
        self.offset_fmt = ">I" if version == 1 else ">Q"  # a variable's begin

    def read(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.raw, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def count(self) -> int:
        return self.read(self.count_fmt)

    def skip_padded(self, nbytes: int) -> None:
        self.pos += -(-nbytes // 4) * 4

    def list_header(self, tag: int) -> int:
        found = self.read(">I")
        n = self.count()
        if found not in (0, tag):
            raise ValueError(f"bad list tag {found}")
        return n

    def skip_attributes(self) -> None:
        for _ in range(self.list_header(_NC_ATTRIBUTE)):
            self.skip_padded(self.count())  # name
            nc_type = self.read(">I")
            self.skip_padded(self.count() * _TYPE_SIZE[nc_type])


def expected_size(path: str) -> int | None:
    """Bytes the classic netCDF file at path must hold; None when it is not a classic file or the header is cut."""
    with open(path, "rb") as f:
        raw = f.read(1 << 20)  # headers of files with thousands of attributes still fit
    if raw[:3] != b"CDF" or raw[3:4] not in (b"\x01", b"\x02", b"\x05"):
        return None
    h = _Header(raw)
    try:
        numrecs = h.read(">Q" if raw[3] == 5 else ">I")
        dims = []
        for _ in range(h.list_header(_NC_DIMENSION)):
            h.skip_padded(h.count())
            dims.append(h.count())
        h.skip_attributes()
        variables = []  # (begin, bytes in one record or in all, is a record variable)
        for _ in range(h.list_header(_NC_VARIABLE)):
            h.skip_padded(h.count())
            dim_ids = [h.count() for _ in range(h.count())]
            h.skip_attributes()
            size = _TYPE_SIZE[h.read(">I")]
            h.count()  # vsize: may overflow for large variables; recomputed from the dims below
            begin = h.read(h.offset_fmt)
            is_record = bool(dim_ids) and dims[dim_ids[0]] == 0
            for i in dim_ids[1:] if is_record else dim_ids:
                size *= dims[i]
            variables.append((begin, size, is_record))
    except struct.error:  # the header itself is cut short (unless it is longer than what was read)
        return len(raw) + 1 if len(raw) < (1 << 20) else None
    except (KeyError, IndexError, ValueError):  # not a header we understand: let netCDF-C judge the file
        return None
    record_vars = [v for v in variables if v[2]]
    # One record holds every record variable, each padded to 4 bytes unless it is the only one.
    record_size = record_vars[0][1] if len(record_vars) == 1 else sum(-(-s // 4) * 4 for _, s, _ in record_vars)
    if numrecs == (1 << (64 if raw[3] == 5 else 32)) - 1:  # STREAMING: the count was never written
        numrecs = 0
    ends = [begin + (record_size * (numrecs - 1) + size if rec else size) for begin, size, rec in variables
            if not rec or numrecs > 0]
    return max(ends, default=h.pos)
