"""The search page in a real headless browser (Debian's chromium and chromium-driver, through selenium): the key
asked once, a text query showing an image grid, an uploaded image showing look-alikes and label chips. Each
step saves a screenshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_api import KEY, RunningApi, photo_index  # noqa: F401 - the fixture


def chromedriver() -> str | None:
    return shutil.which("chromedriver") or next((p for p in ("/usr/bin/chromedriver",) if Path(p).exists()), None)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = chromedriver()
    assert driver_path, "chromium-driver is missing (make installs Debian's chromium and chromium-driver)"
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_api(server, photo_index, gallery):
    from mmserve.api import ApiSettings

    settings = ApiSettings(server=server.grpc_url, indexes={"photos": photo_index}, api_keys=(KEY,),
                           image_roots=(gallery[0].parent,))
    with RunningApi(settings) as running:
        yield running


def test_search_page_finds_by_text_and_by_image(browser, page_api, gallery, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(page_api.url + "/")
    wait.until(ready.alert_is_present()).send_keys(KEY)  # the key, asked once for the session
    browser.switch_to.alert.accept()
    wait.until(lambda b: b.find_element(By.ID, "index").get_attribute("value") == "photos")

    box = browser.find_element(By.ID, "query")
    box.send_keys("a large red circle on the left")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results .tile img")) >= 10)
    scores = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "#results .tile .score")]
    assert scores == sorted(scores, reverse=True) and len(scores) >= 12
    assert "results from photos" in browser.find_element(By.ID, "status").text
    browser.save_screenshot(str(tmp_path / "text-search.png"))

    browser.find_element(By.ID, "labels").send_keys("red, blue, green")
    browser.find_element(By.ID, "file").send_keys(str(gallery[5]))
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#chips .chip")) == 3)
    first = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#results .tile .caption"))
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#results .tile .caption").text == gallery[5].stem)
    assert first is not None
    browser.save_screenshot(str(tmp_path / "image-search.png"))
    assert browser.execute_script("return sessionStorage.getItem('mmserve-api-key')") == KEY
    assert (tmp_path / "text-search.png").stat().st_size > 10_000
