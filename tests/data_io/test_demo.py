import numpy as np
import xarray as xr

from data_io import DataConfig, prepare
from data_io.demo import main, make_demo


def test_demo_is_deterministic_per_seed():
    a, b, c = make_demo(1, days=20, resolution=5.0), make_demo(1, days=20, resolution=5.0), make_demo(2, 20, 5.0)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a["precipitation"].values, c["precipitation"].values)


def test_demo_cli_writes_the_reference_schema(tmp_path, capsys):
    path = tmp_path / "sub" / "demo.nc"
    main(["--output", str(path), "--seed", "3", "--days", "40", "--resolution", "5"])
    assert f"wrote {path}" in capsys.readouterr().out
    with xr.open_dataset(path) as ds:
        assert set(ds.data_vars) == {"precipitation", "DPT", "GPH", "TEM", "U", "V"}
        assert ds["TEM"].dims == ("time", "level", "lat", "lon")
        assert ds["precipitation"].dims == ("time", "lat", "lon")
        assert ds.sizes["time"] == 80 and float(ds["precipitation"].min()) >= 0
    d = prepare(DataConfig(data=str(path), include_upstream=True))
    assert d.target_channels == ["precipitation"] and d.upstream is not None
