"""The default virtual trial (`mcal synth OUT`: 396 ROIs on 194 patients), generated once: its statistics pinned.
What it must not do is as important as what it does: the annotated radius must not separate the classes, and the
virtual reader must read like a radiologist on biopsied calcifications (AUC near 0.65, most cases 4A-4C), not like
the label itself."""
import json, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from mcal.trial import make_trial, TRIAL_SPACING_MM
from mcal.dicom import read_mammogram
from mcal.metrics import auc_ci, binary_metrics
from mcal.clinical import birads_score


@pytest.fixture(scope='module')
def trial(tmp_path_factory):
    out = tmp_path_factory.mktemp('trial')
    t0 = time.time()
    table = make_trial(out, progress=False)
    return out, table, time.time() - t0


def test_counts_balance_and_files(trial):
    out, t, seconds = trial
    assert (len(t), t.patient_id.nunique()) == (396, 194)
    assert (t.label == 'malignant').sum() == 198
    print(f'default trial written in {seconds:.0f} s')      # reported, never a limit: a slow machine is not a failure
    size = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
    assert size < 1e9, f'{size / 1e6:.0f} MB on disk'
    assert json.loads((out / 'trial.json').read_text())['n_rois'] == 396


def test_spacing_and_masks(trial):
    out, t, _ = trial
    for r in t.sample(8, random_state=0).itertuples():
        m = read_mammogram(out / r.image_path)
        assert abs(m.pixel_spacing_mm - TRIAL_SPACING_MM) < 1e-9 and m.image.shape == (480, 480)
        calc = np.array(Image.open(out / r.calc_mask_path)) > 0
        ys, xs = np.nonzero(calc)
        assert len(xs) and (np.hypot(xs - r.x, ys - r.y) <= r.radius + 1e-6).all()       # truth inside the annotation
        from scipy import ndimage
        around = ndimage.binary_dilation(calc, iterations=6) & ~calc
        assert m.image[calc].mean() > m.image[around].mean()                               # brighter than the tissue around them


def test_no_size_shortcut_and_a_realistic_reader(trial):
    _, t, _ = trial
    y = (t.label == 'malignant').astype(int).values
    radius_auc, _, hi = auc_ci(y, t.radius.values)
    assert 0.35 < radius_auc < 0.65, f'annotated radius alone separates the classes: AUC {radius_auc:.2f}'
    reader_auc, lo, hi = auc_ci(y, birads_score(t.birads.values))
    assert 0.55 < reader_auc < 0.75, f'virtual reader AUC {reader_auc:.2f}'
    m = binary_metrics(y, birads_score(t.birads.values), 4.0)
    assert m['sensitivity'] > 0.8 and m['specificity'] < 0.45
    assert t.birads.isin(['4A', '4B', '4C']).mean() > 0.5


def test_reproducible_by_seed(trial, tmp_path):
    _, t, _ = trial
    again = make_trial(tmp_path / 'a', n_rois=20, n_patients=10, seed=0, progress=False)
    assert again.equals(make_trial(tmp_path / 'b', n_rois=20, n_patients=10, seed=0, progress=False))
    assert not again.equals(make_trial(tmp_path / 'c', n_rois=20, n_patients=10, seed=1, progress=False))
