"""The explorer in a real browser: voila serves the explorer notebook of a finished run on localhost, headless
Chromium (Debian's `chromium` and `chromium-driver`, driven by selenium) picks a class in the widget, and the page
must then show that class's mode panel, pixel for pixel the one `mgd3.explore.panel_png` draws in this process.

Slow (a browser, a voila server and a kernel): run it with MGD3_RUN_SLOW=1 after installing the browser:
    apt-get install -y chromium chromium-driver && pip install -e ".[dev]"
Run it with the Python voila is installed in: a `--system-site-packages` virtual environment does not see the base
install's `share/jupyter`, where voila's templates are, and voila then stops with "No template sub-directory with name
'lab'". MGD3_EXPLORER_RUN=<run folder> shows that run instead of a tiny one; MGD3_SCREENSHOT=<file.png> keeps the
browser's screenshot there (docs/explorer.png was made so, over a quick run with the embedded backbone)."""
import base64, io, os, shutil, socket, subprocess, time, urllib.request
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
import mgd3
from mgd3.explore import RunView, explorer_notebook, panel_png, serve_explorer

pytestmark = pytest.mark.slow
BROWSER, DRIVER = shutil.which('chromium'), shutil.which('chromedriver')

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def _pixels(png:bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im: return np.asarray(im.convert('RGB'))

def _data_url_png(src:str) -> bytes:
    assert src.startswith('data:image/png;base64,'), src[:40]
    return base64.b64decode(src.split(',', 1)[1])

@pytest.fixture(scope='module')
def run_dir(tiny_mnist_pipeline, tmp_path_factory):
    if os.environ.get('MGD3_EXPLORER_RUN'): return Path(os.environ['MGD3_EXPLORER_RUN'])
    out = tmp_path_factory.mktemp('browser-run') / 'run'
    mgd3.distill(backbone=str(tiny_mnist_pipeline), out_dir=str(out), ipc=3, seeds=[0], num_inference_steps=4,
                 stop_t=2, epochs=1, quick=True, methods=['unguided', 'mgd3'])
    return out

@pytest.fixture
def page(run_dir, tmp_path):
    "The explorer served by voila on a free localhost port; yields its URL, stops the server afterwards."
    port, log = _free_port(), open(tmp_path / 'voila.log', 'w')
    proc = serve_explorer(explorer_notebook(run_dir, tmp_path / 'explorer.ipynb'), port=port, stdout=log,
                          stderr=subprocess.STDOUT)
    url, deadline = f'http://127.0.0.1:{port}/', time.monotonic() + 300
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # localhost only, never a proxy
    while True:
        try:
            direct.open(url, timeout=10).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"voila did not serve {url}:\n{(tmp_path / 'voila.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(60)
    log.close()

@pytest.fixture
def browser():
    if not (BROWSER and DRIVER):
        pytest.fail("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = BROWSER
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-proxy-server',
                '--window-size=900,640', '--hide-scrollbars'):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()

def test_picking_a_class_shows_its_panel(page, browser, run_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    panels = lambda: [e.get_attribute('src') for e in browser.find_elements(By.CSS_SELECTOR, 'img[src^="data:"]')]
    browser.get(page)
    wait = WebDriverWait(browser, 300, poll_frequency=1)
    wait.until(lambda d: panels() and len(d.find_elements(By.TAG_NAME, 'select')) == 2)
    view = RunView(run_dir)
    first = panels()[0]
    np.testing.assert_array_equal(_pixels(_data_url_png(first)), _pixels(panel_png(view, 0)))

    picker = Select(browser.find_elements(By.TAG_NAME, 'select')[0])   # the class picker (the other: the seed)
    assert len(picker.options) == view.spec.num_classes
    picker.select_by_index(7)
    wait.until(lambda d: panels() and panels()[0] != first)
    shown = _pixels(_data_url_png(panels()[0]))
    np.testing.assert_array_equal(shown, _pixels(panel_png(view, 7)))   # class 7's panel, as drawn here
    assert not np.array_equal(shown, _pixels(panel_png(view, 0)))
    assert picker.first_selected_option.text.startswith('7: ')

    shot = tmp_path / 'explorer.png'
    browser.save_screenshot(str(shot))
    assert _pixels(shot.read_bytes()).std() > 0   # the page drew something
    if os.environ.get('MGD3_SCREENSHOT'):   # keep it small: a 64-colour palette
        with Image.open(shot) as im: im.convert('RGB').quantize(64).save(os.environ['MGD3_SCREENSHOT'], optimize=True)
