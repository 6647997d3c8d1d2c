"""`wvl calibrate board`: board.png carries its DPI, so it prints at the board's physical size (issue 21)."""

from __future__ import annotations

import pytest
from PIL import Image

from calibration.board import BoardConfig
from learning.cli import main as wvl


@pytest.mark.parametrize("dpi", [300, 150])
def test_board_png_prints_at_the_board_size(tmp_path, dpi, capsys):
    assert wvl(["calibrate", "board", f"dir={tmp_path}", f"print.dpi={dpi}", "print.margin_m=0.01"]) == 0
    assert f"({dpi} dpi)" in capsys.readouterr().out
    with Image.open(tmp_path / "board.png") as im:
        im.load()
        got_dpi, size_px = im.info.get("dpi"), im.size
    assert got_dpi is not None, "board.png has no resolution (pHYs): it prints at the viewer's default size"
    assert round(got_dpi[0]) == round(got_dpi[1]) == dpi  # PNG stores whole pixels per metre: 150 dpi reads 150.012
    w_m, h_m = BoardConfig().size_m
    want_mm = ((w_m + 0.02) * 1000, (h_m + 0.02) * 1000)  # the board plus its 10 mm margin on each side
    for px, mm in zip(size_px, want_mm):
        assert px / dpi * 25.4 == pytest.approx(mm, abs=25.4 / dpi)  # within one pixel
