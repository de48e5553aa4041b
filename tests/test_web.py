"""The web app: uploads, clear errors, the size limit, concurrent users, and a real browser."""

import io
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")

from helpers import serving  # noqa: E402
from micrometry.synth.particle_scene import SuspensionParams, render_image  # noqa: E402
from micrometry.web.app import create_app  # noqa: E402
from micrometry.web.services import Limits  # noqa: E402


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def particle_png(tmp_path_factory):
    rendered = render_image(SuspensionParams(height=192, width=240), np.random.default_rng(5))
    path = tmp_path_factory.mktemp("web") / "particles.png"
    path.write_bytes(_png(rendered.image))
    return path


@pytest.fixture(scope="module")
def sem_data(tmp_path_factory):
    """A tiny SEM dataset and a depth model trained on it for one epoch through the CLI."""
    from micrometry.cli import run

    root = tmp_path_factory.mktemp("websem")
    assert (
        run(
            [
                "synth",
                "sem",
                root / "data",
                "--truth",
                root / "truth",
                "--n-structures",
                "8",
                "--n-sites",
                "4",
                "--images-per-site",
                "2",
                "--n-test",
                "6",
            ]
        )
        == 0
    )
    assert (
        run(["depth", "train", root / "data", "--method", "ae", "--out", root / "run", "--epochs", "1"]) == 0
    )
    return root


@pytest.fixture(scope="module")
def server(sem_data):
    """The app served by uvicorn on a free loopback port, in a background thread."""
    app = create_app(
        depth_model=sem_data / "run",
        particle_model="watershed",
        limits=Limits(max_upload_bytes=2 * 1024 * 1024),
    )
    with serving(app) as url:
        yield url


@pytest.mark.slow
def test_page_has_both_tabs(server):
    page = httpx.get(server + "/").text
    assert 'id="sem-form"' in page and 'id="particles-form"' in page
    # the CLI's defaults, from the one definition in web/options.py
    assert 'name="nm_per_px" value="2"' in page and 'name="pixel_size" value="1"' in page
    assert 'name="unit" value="px"' in page and "__" not in page.split("<script>")[0]


@pytest.mark.slow
def test_particles_upload_gives_overlay_table_and_csv(server, particle_png):
    r = httpx.post(
        server + "/api/particles",
        files={"file": ("p.png", particle_png.read_bytes(), "image/png")},
        data={"pixel_size": "0.5", "unit": "um"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] > 3 and len(body["table"]["rows"]) == body["count"]
    # one overlay per image, with a marker (id, position) for each measured particle
    overlay = body["images"][0]
    assert "Area" in body["table"]["columns"] and overlay["overlay"].startswith("data:image/png;base64,")
    label = body["table"]["columns"].index("Label")
    assert sorted(m["id"] for m in overlay["particles"]) == sorted(r[label] for r in body["table"]["rows"])
    assert all(
        0 <= m["x"] <= overlay["width"] and 0 <= m["y"] <= overlay["height"] for m in overlay["particles"]
    )
    assert body["psd"]["unit"] == "um" and body["psd"]["values"]["D50"]["value"] > 0
    csv = io.BytesIO(__import__("base64").b64decode(body["csv"].split(",", 1)[1])).read().decode()
    assert csv.splitlines()[0].startswith(",".join(body["table"]["columns"][:2]))


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("notes.txt", b"hello", "unsupported file type"),
        ("broken.png", b"\x89PNG\r\n\x1a\nthis is not really a png", "not an image"),
        ("empty.png", b"", "empty"),
    ],
)
@pytest.mark.slow
def test_bad_particle_uploads_get_a_message(server, name, content, expected):
    r = httpx.post(server + "/api/particles", files={"file": (name, content)}, timeout=30)
    assert r.status_code == 400 and expected in r.json()["error"] and "Traceback" not in r.text


@pytest.mark.slow
def test_sem_upload_gives_depth_maps_metrology_and_zip(server, sem_data):
    tests = sorted((sem_data / "data/test/SEM").glob("*.png"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in tests[2:]:
            archive.write(path, path.name)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in tests[:2]]
    files.append(("files", ("more.zip", buffer.getvalue(), "application/zip")))
    r = httpx.post(server + "/api/sem", files=files, data={"nm_per_px": "2"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(tests) and len(body["table"]["rows"]) == len(tests)
    # units in the column names, as in depth measure's table
    assert {"file", "status", "depth_nm", "top_cd_x_nm", "sidewall_angle_deg"} <= set(
        body["table"]["columns"]
    )
    import base64

    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(body["zip"].split(",", 1)[1])))
    assert sorted(archive.namelist()) == sorted(p.name for p in tests)
    depth = np.array(Image.open(io.BytesIO(archive.read(tests[0].name))))
    assert depth.shape == (72, 48) and depth.dtype == np.uint8
    # the page draws the 3-D view of whichever map is selected from its heights (nm), on the shared scale
    assert body["scale"]["unit"] == "nm" and body["scale"]["lo"] < body["scale"]["hi"]
    heights = np.array(body["samples"][0]["heights"])
    assert heights.shape == (72, 48) and np.abs(np.clip(np.rint(heights), 0, 255) - depth).max() <= 1


@pytest.mark.slow
def test_bad_sem_uploads_get_a_message(server):
    r = httpx.post(server + "/api/sem", files={"files": ("big.png", _png(np.zeros((100, 100), np.uint8)))})
    assert r.status_code == 400 and "expected 72x48" in r.json()["error"]
    r = httpx.post(server + "/api/sem", files={"files": ("a.zip", b"PK not a zip")})
    assert r.status_code == 400 and "not a valid zip" in r.json()["error"]
    r = httpx.post(server + "/api/particles", files={"file": ("p.png", b"x")}, data={"pixel_size": "-1"})
    assert r.status_code == 400 and "must be positive" in r.json()["error"]


@pytest.mark.slow
def test_upload_limit_is_enforced(server):
    big = b"\0" * (3 * 1024 * 1024)
    r = httpx.post(server + "/api/particles", files={"file": ("big.png", big)})
    assert r.status_code == 413 and "too large" in r.json()["error"]


@pytest.mark.slow
def test_concurrent_users_are_all_served(server, particle_png):
    data = particle_png.read_bytes()

    def one(_):
        return httpx.post(server + "/api/particles", files={"file": ("p.png", data)}, timeout=120).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(one, range(6)))
    assert codes == [200] * 6


def test_web_tiles_are_capped_under_test_time_augmentation_too():
    from micrometry.particles.models import load_particle_model
    from micrometry.web.services import WEB_TILE, bounded_tiles

    for tta in (False, True):
        segmenter = bounded_tiles(load_particle_model("shipped", tta=tta))
        tiled = segmenter.base if tta else segmenter
        assert tiled.tile == WEB_TILE and tiled.overlap <= WEB_TILE // 2


def test_zip_uploads_are_unpacked():
    from micrometry.web.services import expand_uploads

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/one.png", _png(np.zeros((72, 48), np.uint8)))
        archive.writestr("two.png", _png(np.ones((72, 48), np.uint8)))
        archive.writestr("readme.txt", "ignored")
    names = [name for name, _ in expand_uploads([("set.zip", buffer.getvalue())], Limits())]
    assert names == ["one.png", "two.png"]


def _chromium():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian chromium and chromium-driver are not installed (make test installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _screenshot(browser, name: str) -> None:
    """Keep a full-page screenshot when MICROMETRY_SCREENSHOTS names a folder (to look at what the tests saw)."""
    import os

    folder = os.environ.get("MICROMETRY_SCREENSHOTS")
    if folder:
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1400, max(900, min(int(height) + 40, 6000)))
        browser.save_screenshot(str(__import__("pathlib").Path(folder) / f"{name}.png"))


def _wait(browser, element_id: str, seconds: float = 90):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds).until(ec.visibility_of_element_located((By.ID, element_id)))


def _click(browser, element) -> None:
    """Click through the DOM (works for SVG text and for rows scrolled out of view alike)."""
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", element)


@pytest.mark.slow
def test_browser_sem_tab(server, sem_data):
    from selenium.webdriver.common.by import By

    images = sorted((sem_data / "data/test/SEM").glob("*.png"))[:3]
    browser = _chromium()
    try:
        browser.set_window_size(1400, 1000)
        browser.get(server + "/")
        assert "How to use" in browser.find_element(By.ID, "sem").text
        # Run with no file: ask for one (not "unsupported file type")
        browser.find_element(By.ID, "sem-run").click()
        assert "Choose a file" in _wait(browser, "sem-error", 10).text
        browser.find_element(By.ID, "sem-files").send_keys("\n".join(str(p) for p in images))
        browser.find_element(By.ID, "sem-run").click()
        count = _wait(browser, "sem-count")
        assert count.text.startswith("3 depth maps (2 nm per pixel)")  # the CLI's default pixel size
        assert "nm" in browser.find_element(By.ID, "sem-colourbar").text
        surface = browser.find_element(By.ID, "sem-surface")
        assert surface.get_attribute("src").startswith("data:image/png")
        assert browser.find_element(By.ID, "sem-surface-name").text == images[0].name
        first_view = surface.get_attribute("src")
        # the 3-D view follows the selected map, from a thumbnail or from a table row
        _click(browser, browser.find_elements(By.CSS_SELECTOR, "#sem-grid figure")[1])
        assert browser.find_element(By.ID, "sem-surface-name").text == images[1].name
        assert surface.get_attribute("src") != first_view
        assert "selected" in browser.find_elements(By.CSS_SELECTOR, "#sem-grid figure")[1].get_attribute(
            "class"
        )
        _click(browser, browser.find_element(By.CSS_SELECTOR, '#sem-table tr[data-index="2"]'))
        assert browser.find_element(By.ID, "sem-surface-name").text == images[2].name
        assert "selected" in browser.find_element(
            By.CSS_SELECTOR, '#sem-table tr[data-index="2"]'
        ).get_attribute("class")
        headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#sem-table th")]
        assert "depth_nm" in headers and "sidewall_angle_deg" in headers
        _screenshot(browser, "sem_upload")
    finally:
        browser.quit()


@pytest.mark.slow
def test_browser_sample_data(server):
    from selenium.webdriver.common.by import By

    browser = _chromium()
    try:
        browser.set_window_size(1400, 1000)
        browser.get(server + "/")
        _screenshot(browser, "empty_sem_tab")
        browser.find_element(By.ID, "sem-sample").click()
        assert _wait(browser, "sem-count").text.startswith("8 depth maps")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#sem-grid figure")) == 8
        _screenshot(browser, "sem_sample")
        browser.find_element(By.ID, "tab-particles").click()
        browser.find_element(By.ID, "particles-sample").click()
        count = _wait(browser, "particles-count")
        assert " particles in 2 images" in count.text and int(count.text.split()[0]) > 10
        _screenshot(browser, "particles_sample")
    finally:
        browser.quit()


@pytest.mark.slow
def test_browser_particles_tab(server, particle_png):
    from selenium.webdriver.common.by import By

    second = particle_png.with_name("particles_b.png")
    second.write_bytes(_png(np.ascontiguousarray(np.array(Image.open(particle_png))[::-1])))
    browser = _chromium()
    try:
        browser.set_window_size(1400, 1000)
        browser.get(server + "/")
        browser.find_element(By.ID, "tab-particles").click()
        _screenshot(browser, "empty_particles_tab")
        browser.find_element(By.ID, "particles-run").click()
        assert "Choose a file" in _wait(browser, "particles-error", 10).text
        browser.find_element(By.ID, "particles-file").send_keys(f"{particle_png}\n{second}")
        size = browser.find_element(By.ID, "particles-pixel-size")
        size.clear()
        size.send_keys("0.5")
        unit = browser.find_element(By.ID, "particles-unit")
        unit.clear()
        unit.send_keys("um")
        browser.find_element(By.ID, "particles-exclude-edges").click()
        browser.find_element(By.ID, "particles-run").click()
        count = _wait(browser, "particles-count")
        assert (
            int(count.text.split()[0]) > 3
            and "in 2 images" in count.text
            and "touching the border left out" in count.text
        )
        psd = browser.find_element(By.ID, "particles-psd").text
        assert all(d in psd for d in ("D10", "D50", "D90")) and " um" in psd
        assert (
            browser.find_element(By.ID, "particles-overlay").get_attribute("src").startswith("data:image/png")
        )
        headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#particles-table th")]
        assert "Area (um²)" in headers and "Feret (um)" in headers
        # every measured particle of the shown image has its id on the overlay, and only those
        rows = browser.find_elements(By.CSS_SELECTOR, '#particles-table tr[data-image="0"]')
        ids = [
            g.get_attribute("data-id") for g in browser.find_elements(By.CSS_SELECTOR, "#particles-ids .pid")
        ]
        assert sorted(ids, key=int) == sorted((r.get_attribute("data-id") for r in rows), key=int) and ids
        texts = [
            t.get_attribute("textContent")
            for t in browser.find_elements(By.CSS_SELECTOR, "#particles-ids text")
        ]
        assert texts == ids
        # a table row highlights its particle; a particle's id highlights its row
        _click(browser, rows[2])
        selected = browser.find_elements(By.CSS_SELECTOR, "#particles-ids .pid.selected")
        assert [g.get_attribute("data-id") for g in selected] == [rows[2].get_attribute("data-id")]
        target = browser.find_elements(By.CSS_SELECTOR, "#particles-ids text")[0]
        _click(browser, target)
        chosen = browser.find_elements(By.CSS_SELECTOR, "#particles-table tr.selected")
        assert [r.get_attribute("data-id") for r in chosen] == [ids[0]]
        _screenshot(browser, "particles_upload")
        # a row of the second image switches the overlay to that image
        first_overlay = browser.find_element(By.ID, "particles-overlay").get_attribute("src")
        other = browser.find_elements(By.CSS_SELECTOR, '#particles-table tr[data-image="1"]')[0]
        _click(browser, other)
        assert browser.find_element(By.ID, "particles-overlay").get_attribute("src") != first_overlay
        assert browser.find_elements(By.CSS_SELECTOR, "#particles-ids .pid.selected")[0].get_attribute(
            "data-id"
        ) == other.get_attribute("data-id")
        # a bad upload shows its message in the page
        bad = particle_png.with_name("notes.txt")
        bad.write_text("not an image")
        browser.find_element(By.ID, "particles-file").clear()
        browser.find_element(By.ID, "particles-file").send_keys(str(bad))
        browser.find_element(By.ID, "particles-run").click()
        error = _wait(browser, "particles-error", 30)
        assert "unsupported file type" in error.text
    finally:
        browser.quit()


@pytest.mark.slow
def test_browser_particles_scale_bar_and_iso_panel(server, tmp_path):
    """pixel size 'auto': the calibration line from the data bar, six discs and no particle in the bar, the
    count-adequacy warning and tables, the flags."""
    from selenium.webdriver.common.by import By

    from micrometry.io.scalebar import font_paths
    from micrometry.synth.databar import DataBarStyle, draw_databar, sem_discs

    image, _ = sem_discs()
    full, _ = draw_databar(image, 4.0, "nm", DataBarStyle(font=font_paths()[0]))
    path = tmp_path / "sem.png"
    path.write_bytes(_png(full))
    browser = _chromium()
    try:
        browser.set_window_size(1400, 1000)
        browser.get(server + "/")
        browser.find_element(By.ID, "tab-particles").click()
        browser.find_element(By.ID, "particles-file").send_keys(str(path))
        size = browser.find_element(By.ID, "particles-pixel-size")
        size.clear()
        size.send_keys("auto")
        browser.find_element(By.ID, "particles-run").click()
        assert _wait(browser, "particles-count").text.startswith("6 particles in 1 image")
        calibration = browser.find_element(By.ID, "particles-calibration").text
        assert "4 nm/px from the scale bar '500 nm' over 125 px" in calibration
        assert "too few" in browser.find_element(By.ID, "particles-adequacy-warning").text
        iso = browser.find_element(By.ID, "particles-iso").text
        assert "D90 (volume)" in iso and "Solidity" in iso and "sphere" in iso
        assert "0 probable agglomerates" in browser.find_element(By.ID, "particles-flags").text
        headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#particles-table th")]
        assert "EqDiam (nm)" in headers and "Agglomerate" in headers
        _screenshot(browser, "particles_scale_bar")
    finally:
        browser.quit()
