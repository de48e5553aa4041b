"""The correction page: edits (merge, split), training data saved from it, and the whole flow in a browser."""

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from helpers import serving
from micrometry.errors import InputError
from micrometry.particles.training_data import detect_layout, load_training_set
from micrometry.web.corrections import Corrections, annotation_stem, fill, merge, split

httpx = pytest.importorskip("httpx")


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_merge_joins_touching_and_nearby_outlines():
    shape = (40, 60)
    touching = merge([_square(5, 5, 15, 15), _square(15, 5, 25, 15)], shape)
    assert (fill([touching], shape) > 0).sum() == 200
    apart = merge([_square(5, 5, 15, 15), _square(18, 5, 28, 15)], shape)  # a 3-px gap is bridged
    filled = fill([apart], shape) > 0
    assert filled[7:13, 5:28].all() and filled.sum() >= 220  # the gap is bridged
    far = merge([_square(2, 2, 6, 6), _square(50, 30, 56, 36)], shape)  # far apart: the convex hull
    assert (fill([far], shape) > 0)[18, 28]
    with pytest.raises(InputError):
        merge([_square(2, 2, 6, 6)], shape)


def test_split_cuts_along_the_line_and_keeps_every_pixel():
    shape = (40, 60)
    obj = _square(10, 10, 40, 20)
    pieces = split(obj, [[25, 0], [25, 39]], shape)
    labels = fill(pieces, shape)
    assert len(pieces) == 2 and sorted([(labels == 1).sum(), (labels == 2).sum()]) == [150, 150]
    assert len(split(obj, [[0, 2], [59, 2]], shape)) == 1  # a line that misses it leaves it whole
    with pytest.raises(InputError):
        split(obj, [[3, 3], [3, 3]], shape)


def test_annotation_files_pair_with_their_images():
    for name in ("a_RoiSet.zip", "a.zip", "a.roi", "a.png", "a_masks.tif", "a_cp_masks.png", "a_label.png"):
        assert annotation_stem(name) == "a", name


def test_saved_corrections_are_training_data(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64), dtype=np.uint8)
    labels = np.zeros((48, 64), np.int32)
    labels[5:15, 5:15], labels[20:30, 30:50] = 1, 2

    def segmenter():
        class Fixed:
            def segment(self, _):
                class Found:
                    pass

                found = Found()
                found.labels = labels
                return found

        return Fixed()

    corrections = Corrections(tmp_path / "ws", segmenter)
    opened = corrections.open([("a.png", _png(image))])
    objects = opened["images"][0]["objects"]
    assert len(objects) == 2
    saved = corrections.save([{"name": "a.png", "objects": objects + [_square(50, 2, 60, 12)]}])
    assert saved["particles"] == 3 and saved["training_images"] == 1
    training = tmp_path / "ws" / "training"
    assert detect_layout(training) == "masks"
    ds = load_training_set(training)
    got = ds.labels(1)
    assert ds.n_annotations == 3 and (got[5:15, 5:15] > 0).all() and (got[2:12, 50:60] > 0).all()
    with pytest.raises(InputError, match="not among the opened images"):
        corrections.save([{"name": "b.png", "objects": []}])
    with pytest.raises(InputError, match="already|0.1-120"):
        corrections.start_finetune(0.01)
    # outlines given with the image (a prediction's label image) are used instead of the model
    given = np.zeros((48, 64), np.uint16)
    given[30:40, 5:12] = 7
    opened = corrections.open([("a.png", _png(image))], [("a.png", _png(given))])
    assert len(opened["images"][0]["objects"]) == 1 and opened["images"][0]["source"] == "from a.png"
    # predicting again loads the fine-tuned run (a folder that is not one is a clear error)
    corrections.model = tmp_path / "not-a-run"
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(InputError):
        corrections.predict_again()


# -- the whole flow in a browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def correct_server(tmp_path_factory):
    from micrometry.web.app import create_app

    root = tmp_path_factory.mktemp("correct")
    with serving(create_app(particle_model="watershed", workspace=root / "ws"), attempts=200) as url:
        yield url, root


def _objects(browser):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "#objects polygon.obj")


def _click_at(browser, x, y):
    """Click the editor at image pixel (x, y), as a user's mouse does (scrolled into view first)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    svg = browser.find_element(By.ID, "canvas")
    # image -> viewport pixels through the SVG's own transform, with the point scrolled to mid-window
    cx, cy = browser.execute_script(
        "const s = arguments[0], x = arguments[1], y = arguments[2];"
        "let m = s.getScreenCTM(); window.scrollBy(0, m.d * y + m.f - window.innerHeight / 2);"
        "m = s.getScreenCTM(); return [m.a * x + m.e, m.d * y + m.f];",
        svg,
        float(x),
        float(y),
    )
    actions = ActionChains(browser)
    actions.w3c_actions.pointer_action.move_to_location(int(round(cx)), int(round(cy))).click()
    actions.perform()


def _centre(polygon_element):
    """A point well inside an outline (the pixel farthest from its edge): clicks there hit it, whatever its shape."""
    from scipy import ndimage

    xy = np.array([p.split(",") for p in polygon_element.get_attribute("points").split()], float)
    x0, y0 = np.floor(xy.min(axis=0)).astype(int) - 1
    shape = tuple(np.ceil(xy.max(axis=0) - [x0, y0]).astype(int)[::-1] + 2)
    mask = fill([xy - [x0, y0]], shape) > 0
    row, col = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)
    return np.array([col + 0.5 + x0, row + 0.5 + y0])


@pytest.mark.slow
def test_browser_correct_save_finetune_predict_again(correct_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from micrometry.synth.particle_scene import SuspensionParams, render_image
    from test_web import _chromium, _screenshot

    url, root = correct_server
    rendered = render_image(SuspensionParams(height=192, width=240), np.random.default_rng(5))
    image_path = tmp_path / "particles.png"
    image_path.write_bytes(_png(rendered.image))
    browser = _chromium()
    try:
        browser.set_window_size(1400, 1100)
        browser.get(url + "/")
        assert browser.find_element(By.ID, "correct-link").get_attribute("href").endswith("/correct")
        browser.get(url + "/correct")
        _screenshot(browser, "correct_empty")
        browser.find_element(By.ID, "open-run").click()
        WebDriverWait(browser, 30).until(
            lambda b: "Choose one or more images" in b.find_element(By.ID, "error").text
        )
        browser.find_element(By.ID, "open-files").send_keys(str(image_path))
        browser.find_element(By.ID, "open-run").click()
        WebDriverWait(browser, 120).until(
            lambda b: (
                b.find_element(By.ID, "workspace").is_displayed()
                or b.find_element(By.ID, "error").is_displayed()
            )
        )
        assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(
            By.ID, "error"
        ).text
        n = len(_objects(browser))
        assert n >= 4
        assert browser.find_element(By.ID, "count").text.startswith(f"{n} outlines in particles.png")
        _screenshot(browser, "correct_opened")

        # delete: click inside the first outline
        x, y = _centre(_objects(browser)[0])
        first_points = _objects(browser)[0].get_attribute("points")
        colours = [p.get_attribute("stroke") for p in _objects(browser)]
        _click_at(browser, x, y)
        assert len(_objects(browser)) == n - 1
        assert [p.get_attribute("stroke") for p in _objects(browser)] == colours[1:]  # each keeps its colour
        assert first_points not in [p.get_attribute("points") for p in _objects(browser)]
        _screenshot(browser, "correct_deleted")

        # add: a square in a free corner, closed by clicking its first corner
        browser.find_element(By.ID, "mode-add").click()
        for px, py in ((200, 10), (230, 10), (230, 40), (200, 40)):
            _click_at(browser, px, py)
        _screenshot(browser, "correct_drawing")
        _click_at(browser, 200, 10)
        assert len(_objects(browser)) == n
        added = _objects(browser)[-1]
        assert np.allclose(_centre(added), (215, 25), atol=1.5)
        _screenshot(browser, "correct_added")

        # merge the two outlines nearest each other
        browser.find_element(By.ID, "mode-merge").click()
        centres = [_centre(p) for p in _objects(browser)[:-1]]
        d = np.hypot(*[np.subtract.outer(c, c) for c in np.array(centres).T])
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        _click_at(browser, *centres[i])
        assert len(browser.find_elements(By.CSS_SELECTOR, "#objects polygon.selected")) == 1
        _click_at(browser, *centres[j])
        WebDriverWait(browser, 30).until(lambda b: len(_objects(b)) == n - 1)
        _screenshot(browser, "correct_merged")

        # split the added square down the middle
        browser.find_element(By.ID, "mode-split").click()
        _click_at(browser, 215, 5)
        _click_at(browser, 215, 45)
        WebDriverWait(browser, 30).until(lambda b: len(_objects(b)) == n)
        _screenshot(browser, "correct_split")

        # undo the split, then redo it by hand
        browser.find_element(By.ID, "undo").click()
        assert len(_objects(browser)) == n - 1
        _click_at(browser, 215, 5)
        _click_at(browser, 215, 45)
        WebDriverWait(browser, 30).until(lambda b: len(_objects(b)) == n)

        # save: images/ + masks/ training data with exactly the outlines on the page
        browser.find_element(By.ID, "save").click()
        WebDriverWait(browser, 30).until(
            lambda b: "Saved 1 image with" in b.find_element(By.ID, "save-result").text
        )
        ds = load_training_set(root / "ws" / "training")
        assert ds.n_annotations == n
        _screenshot(browser, "correct_saved")

        # fine-tune for 0.2 min with a progress bar, then predict again with the new model
        minutes = browser.find_element(By.ID, "ft-minutes")
        minutes.clear()
        minutes.send_keys("0.2")
        browser.find_element(By.ID, "finetune").click()
        WebDriverWait(browser, 30).until(
            lambda b: b.find_element(By.ID, "ft-status").get_attribute("data-state") == "running"
        )
        time.sleep(3)
        progress = float(browser.find_element(By.ID, "ft-progress").get_attribute("value"))
        assert 0 < progress < 1
        _screenshot(browser, "correct_finetuning")
        WebDriverWait(browser, 400).until(
            lambda b: b.find_element(By.ID, "ft-status").get_attribute("data-state") in ("done", "failed")
        )
        status = browser.find_element(By.ID, "ft-status").text
        assert browser.find_element(By.ID, "ft-status").get_attribute("data-state") == "done", status
        assert float(browser.find_element(By.ID, "ft-progress").get_attribute("value")) == 1.0
        run = next((root / "ws" / "runs").glob("finetune-*"))
        assert json.loads((run / "config.json").read_text())["settings"]["init"] == "shipped"
        _screenshot(browser, "correct_finetuned")
        browser.find_element(By.ID, "predict-again").click()
        WebDriverWait(browser, 120).until(lambda b: "fine-tuned" in b.find_element(By.ID, "count").text)
        assert "fine-tuned (finetune-1)" in browser.find_element(By.ID, "model").text
        assert browser.find_element(By.ID, "undo").get_attribute("disabled")
        _screenshot(browser, "correct_predicted_again")
    finally:
        browser.quit()
