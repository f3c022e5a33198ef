"""The course as a lecturer meets it on GitHub, in nbviewer or printed: no JavaScript runs, so every figure of the committed
16_walkthrough and 17_virtual_trial must be an image in its own output (plotly and widgets draw nothing there).
Each figure cell is rendered to HTML by nbconvert, as a static viewer does, and must show an <img>."""
import json
from pathlib import Path
import nbformat
import pytest
from nbconvert import HTMLExporter

NBS = Path(__file__).resolve().parents[1] / 'nbs'
FIGURE_CALLS = ('show_patches(', 'show_batch(', 'lr_find(', 'plot.bar(', 'plot_loss(', 'cam_figure(', 'roc_plot(', 'roc_figure(',
                'pointing_plot(', 'RocExplorer(', 'CamBrowser(', 'Image(filename', 'NotebookFigure(')


def _figure_cells(nb):
    "The code cells that draw a figure, by what they call."
    return [c for c in nb.cells if c.cell_type == 'code' and any(f in c.source for f in FIGURE_CALLS) and not c.source.lstrip().startswith('def ')]


def _static_html(nb, cell) -> str:
    "One cell rendered alone by nbconvert's HTML exporter, without its input, as a page with no JavaScript shows it."
    one = nbformat.v4.new_notebook(cells=[cell], metadata=nb.metadata)
    html, _ = HTMLExporter(exclude_input=True).from_notebook_node(one)
    return html.split('<body', 1)[-1]


@pytest.mark.parametrize('name', ['16_walkthrough.ipynb', '17_virtual_trial.ipynb'])
def test_every_figure_renders_without_javascript(name):
    nb = nbformat.read(NBS / name, as_version=4)
    cells = _figure_cells(nb)
    assert len(cells) >= (9 if name.startswith('16') else 5), [c.source[:60] for c in cells]
    blank = [c.source.splitlines()[0][:80] for c in cells if '<img' not in _static_html(nb, c)]
    assert not blank, f'{name}: figure cells with no image in a static render (blank on GitHub): {blank}'


def test_the_check_fails_on_a_plotly_only_figure():
    "The check can fail: a cell whose only figure is plotly's JSON renders no image."
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('roc_figure(y, p)', outputs=[nbformat.v4.new_output(
        'display_data', data={'application/vnd.plotly.v1+json': {'data': [], 'layout': {}}, 'text/html': '<div id="plot"></div>'})])
    assert '<img' not in _static_html(nb, cell)
