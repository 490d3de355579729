"""test_report.html opens in a real browser: headless Chromium (Debian's `chromium` package)
renders the page from disk, offline, and the screenshot shows its embedded pictures."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from seglight.cli import main

from seglight_testing import QUICKSTART, TINY

CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                None)  # fmt: skip


@pytest.mark.slow  # a browser start: `make test-all`
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt install chromium")
def test_chromium_renders_the_report_with_its_pictures(in_tmp):
    main(["test", "--config", QUICKSTART, *TINY, "--data.test_size=5"])
    page = next(in_tmp.glob("outputs/quickstart/logs/version_*/test_report.html"))
    shot = in_tmp / "shot.png"
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={in_tmp / 'profile'}",
         "--window-size=1100,3000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file(), out.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # The IoU bars' blue (#3274a1) and the worst images' error red are drawn: the PNG data URIs
    # decoded; a page whose pictures failed shows only text on white.
    bars = (np.abs(pixels - [0x32, 0x74, 0xA1]).sum(-1) < 30).sum()
    red = (np.abs(pixels - [230, 25, 25]).sum(-1) < 30).sum()
    assert bars > 500 and red > 100, (bars, red)
