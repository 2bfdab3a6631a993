"""The browser harness itself: viser's page in headless Chromium shows what the server sends."""


import numpy as np
import pytest


@pytest.mark.browser
def test_viser_background_image_reaches_the_page(browser):
    import viser

    port = browser.free_port()
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    try:
        img = np.zeros((120, 160, 3), np.uint8)
        img[30:90, 20:100] = [200, 60, 40]
        img[50:70, 100:150] = [40, 200, 90]
        server.scene.set_background_image(img, format="png")
        browser.page.goto(f"http://127.0.0.1:{port}")
        verdict = browser.wait_for_scene("viewer/harness.png", timeout_s=60)
        assert "differ" in verdict
    finally:
        server.stop()


def test_uniform_screenshot_is_not_a_scene(scene_visible_check):
    from PIL import Image

    ok, _ = scene_visible_check(Image.new("RGB", (200, 100), (12, 12, 12)))
    assert not ok
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8))
    ok, _ = scene_visible_check(noisy)
    assert ok
