"""Write a plain HDF5 file (one dataset, no netCDF dimensions) with the HDF5 library that netCDF4 ships.

h5py is not a dependency; netCDF4's wheels bundle libhdf5, which ctypes can call directly. None when that
library cannot be found (e.g. netCDF4 built against a system HDF5): the test that needs it skips.
"""

from __future__ import annotations

import ctypes
import glob
import os
from pathlib import Path

import numpy as np


def _libhdf5() -> ctypes.CDLL | None:
    import netCDF4

    site = os.path.dirname(os.path.dirname(netCDF4.__file__))
    found = sorted(glob.glob(os.path.join(site, "netCDF4.libs", "libhdf5-*.so*")) +
                   glob.glob(os.path.join(site, "netcdf4.libs", "libhdf5-*.so*")))
    return ctypes.CDLL(found[0]) if found else None


def write_plain_hdf5(path: Path, values: np.ndarray) -> Path | None:
    lib = _libhdf5()
    if lib is None:
        return None
    hid = ctypes.c_int64
    for fn in ("H5Fcreate", "H5Screate_simple", "H5Dcreate2"):
        getattr(lib, fn).restype = hid
    lib.H5open()
    values = np.ascontiguousarray(values, dtype="float64")
    h5_default, truncate = hid(0), 2  # H5P_DEFAULT, H5F_ACC_TRUNC
    f = lib.H5Fcreate(str(path).encode(), truncate, h5_default, h5_default)
    space = lib.H5Screate_simple(values.ndim, (ctypes.c_uint64 * values.ndim)(*values.shape), None)
    double = hid.in_dll(lib, "H5T_NATIVE_DOUBLE_g")
    dset = lib.H5Dcreate2(hid(f), b"temperature", double, hid(space), h5_default, h5_default, h5_default)
    lib.H5Dwrite(hid(dset), double, hid(0), hid(0), h5_default, values.ctypes.data_as(ctypes.c_void_p))
    lib.H5Dclose(hid(dset))
    lib.H5Sclose(hid(space))
    lib.H5Fclose(hid(f))
    return path
