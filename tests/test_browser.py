"""The widget notebook in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Runs a copy of nbs/14_widgets.ipynb in JupyterLab (autosave off), moves the ROC's threshold slider, and checks that the
sensitivity and specificity shown are the ones `mcal.metrics.binary_metrics` gives at the shown
threshold. Saves a screenshot to tests/artifacts/browser_roc.png.
Needs Debian's chromium (`apt-get install chromium`) and the playwright package; skips, saying so,
only where no browser can be found.
"""
import os, secrets, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
import pytest

from conftest import HANG_GUARD_S

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / 'tests' / 'artifacts'
CHROMIUM = next((p for p in (os.environ.get('MCAL_CHROMIUM'), shutil.which('chromium'), shutil.which('chromium-browser'),
                             shutil.which('google-chrome')) if p), None)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def lab():
    if CHROMIUM is None: pytest.skip('no Chromium on this machine: apt-get install chromium (CI installs it)')
    pytest.importorskip('playwright.sync_api', reason='pip install playwright (in the [dev] extra)')
    port, token = _free_port(), secrets.token_hex(16)
    settings = Path(tempfile.mkdtemp())
    news = settings / '@jupyterlab' / 'apputils-extension'; news.mkdir(parents=True)
    (news / 'notification.jupyterlab-settings').write_text('{"fetchNews": "false", "checkForUpdates": false}')
    docs = settings / '@jupyterlab' / 'docmanager-extension'; docs.mkdir(parents=True)
    (docs / 'plugin.jupyterlab-settings').write_text('{"autosave": false}')
    nbset = settings / '@jupyterlab' / 'notebook-extension'; nbset.mkdir(parents=True)
    (nbset / 'tracker.jupyterlab-settings').write_text('{"windowingMode": "none"}')   # every cell in the page, so an error anywhere is seen
    root = settings / 'root'; (root / 'nbs').mkdir(parents=True)                 # a copy: the source notebook is never touched
    for nb in ('14_widgets.ipynb', '16_walkthrough.ipynb'): shutil.copy(REPO / 'nbs' / nb, root / 'nbs' / nb)
    (root / 'data_samples').symlink_to(REPO / 'data_samples')                   # the notebook reads ../data_samples
    (root / 'benchmarks').symlink_to(REPO / 'benchmarks')                       # the walkthrough's evidence: ../benchmarks/results
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTER_RUNTIME_DIR=str(settings / 'runtime'),
               JUPYTERLAB_WORKSPACES_DIR=str(settings / 'workspaces'))   # a workspace saved by an earlier run would reopen its tabs
    env.pop('MCAL_REAL_DATA', None)                                              # a teacher's default: the slow section stays off
    log = open(settings / 'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
                             f'--ServerApp.token={token}', f'--ServerApp.root_dir={root}', '--allow-root'],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    for _ in range(120):
        try:
            urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2); break
        except Exception: time.sleep(0.5)
    else:
        proc.kill(); pytest.fail('JupyterLab did not start: ' + (settings / 'lab.log').read_text()[-2000:])
    yield url, token
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill()


def test_roc_slider_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright
    import pandas as pd
    from mcal.metrics import binary_metrics
    import tempfile
    from mcal.pipeline import run_study
    url, token = lab
    # the table the notebook's kernel shows: the same call as in nbs/14_widgets.ipynb (models reused for the same request)
    preds = run_study(REPO / 'data_samples', Path(tempfile.gettempdir()) / 'mcal_widgets_demo', size=64, epochs=4,
                      cams=False, progress=False).predictions
    preds = preds.dropna(subset=['label', 'prob'])
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                                          '--disable-background-networking', '--disable-component-update', '--disable-sync'])
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        page.goto(f'{url}/lab/tree/nbs/14_widgets.ipynb?token={token}')
        page.wait_for_selector('.jp-Notebook', timeout=HANG_GUARD_S * 1000)
        select = page.locator('.jp-Dialog').get_by_role('button', name='Select')
        try: select.click(timeout=10_000)             # JupyterLab asks which kernel when the notebook names none it knows
        except Exception: pass
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=HANG_GUARD_S * 1000, state='attached')
        _run_all(page)
        panel = page.locator('.widget-html .mcal-metrics').first
        try: panel.wait_for(timeout=int(os.environ.get('MCAL_BROWSER_TIMEOUT_MS', HANG_GUARD_S * 1000)))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / 'browser_failure.png'), full_page=True)
            (ARTIFACTS / 'browser_failure.txt').write_text(page.locator('.jp-Notebook').inner_text())
            pytest.fail('the ROC explorer did not appear (the page text is in tests/artifacts/browser_failure.txt): ' + _first_traceback(page))
        try: page.locator('.widget-image').first.wait_for(timeout=HANG_GUARD_S * 1000, state='attached')   # the last cell (Grad-CAM browser) ran
        except Exception:
            page.screenshot(path=str(ARTIFACTS / 'browser_failure.png'), full_page=True); raise
        page.wait_for_function("() => ![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))",
                               timeout=HANG_GUARD_S * 1000)                      # no cell still running
        shown = lambda k: float(page.locator(f'.widget-html .mcal-{k}').first.get_attribute('data-value'))
        t0 = shown('threshold')                           # whatever the notebook left it at (its last set_threshold)
        before = binary_metrics(preds.label, preds.prob, t0)
        assert (shown('sensitivity'), shown('specificity')) == pytest.approx((before['sensitivity'], before['specificity']))
        # move the slider with the keyboard: focus its handle, press ArrowRight until the operating point changes
        handle = page.locator('.widget-slider .noUi-handle').first
        handle.scroll_into_view_if_needed(); handle.click()
        for _ in range(60):
            handle.press('ArrowRight'); page.wait_for_timeout(150)
            if (shown('sensitivity'), shown('specificity')) != pytest.approx((before['sensitivity'], before['specificity'])): break
        page.wait_for_timeout(500)
        threshold = shown('threshold')
        expect = binary_metrics(preds.label, preds.prob, threshold)
        assert threshold > t0
        assert (shown('sensitivity'), shown('specificity')) != pytest.approx((before['sensitivity'], before['specificity']))
        assert shown('sensitivity') == pytest.approx(expect['sensitivity'])
        assert shown('specificity') == pytest.approx(expect['specificity'])
        assert shown('tp') == expect['tp'] and shown('fp') == expect['fp']
        readout = page.locator('.widget-slider .widget-readout').first.inner_text()
        assert float(readout) == pytest.approx(threshold, abs=1e-6)
        page.locator('.jp-OutputArea-output .js-plotly-plot').first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / 'browser_roc.png'))
        browser.close()
    assert (ARTIFACTS / 'browser_roc.png').stat().st_size > 10_000


FIGURE_CALLS = ('show_patches(', 'show_batch(', 'lr_find(', 'plot.bar(', 'plot_loss(', 'cam_figure(', 'roc_figure(', 'roc_plot(', 'pointing_plot(',
                'RocExplorer(', 'CamBrowser(')


def _run_all(page, tries=3):
    "Run > Run All Cells, again if no cell's prompt changed within 20 s (a click made while the kernel still connects is dropped)."
    prompts = "[...document.querySelectorAll('.jp-InputPrompt')].map(e => e.textContent).join('|')"
    before = page.evaluate(f"() => {prompts}")
    started = f"(before) => {prompts} !== before"
    for _ in range(tries):
        page.get_by_role('menuitem', name='Run', exact=True).click()
        page.get_by_text('Run All Cells', exact=True).click()
        try: page.wait_for_function(started, arg=before, timeout=20_000); return
        except Exception: pass
    pytest.fail(f'Run All Cells started no cell in {tries} tries')


def _first_traceback(page) -> str:
    "The first traceback a cell shows in the page, or a note that none is shown."
    errors = page.locator('.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]:has-text("Traceback")')
    return errors.first.inner_text()[:2000] if errors.count() else 'no cell shows a traceback'


def _figure_cells(nb_path):
    "Positions (among code cells) of the walkthrough's cells that draw a figure, outside the switched-off real-data section."
    import json
    cells = [c for c in json.loads(Path(nb_path).read_text())['cells'] if c['cell_type'] == 'code']
    src = [''.join(c['source']) for c in cells]
    return [i for i, s in enumerate(src) if any(f in s for f in FIGURE_CALLS) and '#| slow' not in s and not s.lstrip().startswith('def ')]


def _open(p, url, token, name):
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                args=['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                                      '--disable-background-networking', '--disable-component-update', '--disable-sync'])
    page = browser.new_page(viewport={'width': 1400, 'height': 1000})
    page.goto(f'{url}/lab/workspaces/{Path(name).stem}/tree/nbs/{name}?reset&token={token}')   # a fresh workspace: this notebook alone
    page.wait_for_selector('.jp-Notebook', timeout=HANG_GUARD_S * 1000)
    try: page.locator('.jp-Dialog').get_by_role('button', name='Select').click(timeout=10_000)
    except Exception: pass
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=HANG_GUARD_S * 1000, state='attached')
    return browser, page


def test_walkthrough_renders_every_figure_in_jupyterlab(lab):
    "A teacher's Run All of the walkthrough: every figure cell shows an image, plot or widget image; screenshots are kept."
    from playwright.sync_api import sync_playwright
    url, token = lab
    figure_cells = _figure_cells(REPO / 'nbs' / '16_walkthrough.ipynb')
    assert len(figure_cells) >= 9, figure_cells
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = _open(p, url, token, '16_walkthrough.ipynb')
        _run_all(page)
        page.wait_for_timeout(3000)
        try:
            page.wait_for_function("() => ![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))",
                                   timeout=int(os.environ.get('MCAL_BROWSER_TIMEOUT_MS', HANG_GUARD_S * 1000)))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / 'walkthrough_failure.png'), full_page=True); raise
        code = page.locator('.jp-Notebook .jp-CodeCell')
        errors = page.locator('.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]:has-text("Traceback")')
        assert errors.count() == 0, _first_traceback(page)
        missing = []
        for i in figure_cells:
            cell = code.nth(i)
            cell.scroll_into_view_if_needed(); page.wait_for_timeout(300)
            drawn = cell.locator('.jp-OutputArea-output img, .jp-OutputArea-output .js-plotly-plot, .jp-OutputArea-output .widget-image img, .jp-OutputArea-output svg.main-svg')
            if drawn.count() == 0: missing.append(i)
            cell.screenshot(path=str(ARTIFACTS / f'walkthrough_cell{i:02d}.png'))
        page.screenshot(path=str(ARTIFACTS / 'walkthrough_end.png'))
        browser.close()
    assert not missing, f'code cells {missing} of the walkthrough drew no figure in JupyterLab (see tests/artifacts/walkthrough_cell*.png)'
