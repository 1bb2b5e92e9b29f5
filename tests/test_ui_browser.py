"""The web page in real headless Chromium: upload the sample X-ray, read the rendered
findings, click one and see its heatmap."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from model_agnostic import load_model
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from tests.conftest import XRAY

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("waitress")
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install chromium "
                "chromium-driver; .ci/run installs them)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_upload_the_xray_and_read_the_findings(browser: Any, chexnet_onnx_config: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    expected = load_model(chexnet_onnx_config).predict(XRAY)
    with BackgroundServer(build_dataplane(chexnet_onnx_config), ServerOptions(port=0)) as server:
        browser.get(server.url + "/ui")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda driver: Select(driver.find_element(By.ID, "model")).options)
        assert Select(browser.find_element(By.ID, "model")).first_selected_option.text == \
            "chexnet (version 1)"
        browser.find_element(By.ID, "file").send_keys(str(XRAY))
        browser.find_element(By.ID, "run").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result .finding")))
        rows = browser.find_elements(By.CSS_SELECTOR, "#result .finding")
        shown = [(row.find_element(By.CLASS_NAME, "label").text,
                  float(row.find_element(By.CLASS_NAME, "value").text)) for row in rows]
        status = browser.find_element(By.ID, "status").text
        parity = browser.find_element(By.ID, "parity").text
        # click the second finding: the server draws its heatmap, the page shows it
        rows[1].click()
        wait.until(lambda driver: driver.execute_script(
            "const img = document.getElementById('heatmap');"
            "return img.complete && img.naturalWidth > 0 && img.style.display === 'block';"))
        heatmap = browser.find_element(By.ID, "heatmap")
        explained = browser.find_element(By.ID, "status").text
        width = browser.execute_script("return arguments[0].naturalWidth;", heatmap)
        assert "chosen" in rows[1].get_attribute("class")
    assert f"Heatmap of {shown[1][0]}" in explained and width == 512
    assert heatmap.get_attribute("src").startswith("data:image/png;base64,")
    assert parity.startswith("Parity UNVERIFIED: NOT a pass")  # a config, never verified
    assert "not an exported artifact" in parity
    assert [name for name, _ in shown] == [f["finding"] for f in expected]
    assert [score for _, score in shown] == pytest.approx(
        [f["probability"] for f in expected], abs=6e-5)  # shown with 4 decimals
    assert "chexnet version 1" in status and "ms" in status


def test_the_page_shows_the_parity_verdict_of_a_served_artifact(
    browser: Any, write_config: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from model_agnostic.export.pipeline import export_model

    config = write_config('[model]\nclass = "@TESTS@/tiny_models.py:TinyImage"\n'
                          f'[export]\nexample = "{XRAY.as_posix()}"\n[verify]\ngenerated = 0\n')
    artifact = export_model(config, tmp_path / "tiny").artifact
    with BackgroundServer(build_dataplane(artifact), ServerOptions(port=0)) as server:
        browser.get(server.url + "/ui")
        WebDriverWait(browser, 60).until(
            lambda driver: driver.find_element(By.ID, "parity").text)
        parity = browser.find_element(By.ID, "parity")
        assert parity.text == "Parity PASSED" and parity.get_attribute("class") == "passed"


@pytest.mark.parametrize("page", ["/ml/ui", "/ml/ui/", "/ml/"])
def test_the_page_works_mounted_under_a_prefix_in_flask(
    browser: Any, chexnet_onnx_config: Path, page: str
) -> None:
    """The README's own mount: a Flask blueprint at url_prefix="/ml"; every call the page
    makes must stay under the prefix (the host's /v2 does not exist)."""
    import threading

    flask = pytest.importorskip("flask")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait
    from werkzeug.serving import make_server

    from model_agnostic.adapters.flask_app import create_blueprint

    app = flask.Flask("host")
    app.register_blueprint(create_blueprint(build_dataplane(chexnet_onnx_config)), url_prefix="/ml")
    seen: list[str] = []
    app.before_request(lambda: seen.append(flask.request.path) and None)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}{page}")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda driver: Select(driver.find_element(By.ID, "model")).options)
        wait.until(lambda driver: driver.find_element(By.ID, "parity").text)
        browser.find_element(By.ID, "file").send_keys(str(XRAY))
        browser.find_element(By.ID, "run").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result .finding")))
    finally:
        server.shutdown()
        thread.join(10)
    calls = [path for path in seen if path != page]
    assert {"/ml/v2/repository/index", "/ml/v2/models/chexnet/versions/1",
            "/ml/v2/models/chexnet/versions/1/predict"} <= set(calls)
    assert all(path.startswith("/ml/") for path in calls), calls
