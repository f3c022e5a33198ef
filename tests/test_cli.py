"The `mcal` console command, run as a user runs it."
import subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from mcal.synth import make_study


def _mcal(*args, cwd=None):
    return subprocess.run([sys.executable, '-c', 'import sys; from mcal.cli import main; sys.exit(main())', *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_demo_writes_report(tmp_path):
    make_study(tmp_path / 'study', n_patients=4, shape=(256, 256))
    r = _mcal('demo', '--data', str(tmp_path / 'study'), '--out', str(tmp_path / 'rep'), '--size', '64', '--no-train')
    assert r.returncode == 0, r.stderr
    assert {'contact_sheet.png', 'report.md', 'rois.csv', 'skipped.csv'} <= {p.name for p in (tmp_path / 'rep').iterdir()}
    rois = pd.read_csv(tmp_path / 'rep' / 'rois.csv')
    assert len(rois) == 8 and rois.patch_path.notna().all()
    assert 'SYNTHETIC' in (tmp_path / 'rep' / 'report.md').read_text()


def test_demo_trains_on_data_samples_and_predict_reuses_it(tmp_path):
    "The README's main job: both stages on data_samples/, AUC and ROC in the report; then `mcal predict` on its models."
    repo = Path(__file__).resolve().parent.parent
    r = _mcal('demo', '--out', str(tmp_path / 'rep'), '--size', '64', '--epochs', '2', cwd=repo)
    assert r.returncode == 0, r.stderr
    assert 'data_samples' in r.stdout and 'patches cut: 32' in r.stdout
    rep = tmp_path / 'rep'
    assert {'predictions.csv', 'results.csv', 'roc.png', 'roc.html', 'gradcam', 'models', 'report.md'} <= {p.name for p in rep.iterdir()}
    text = (rep / 'report.md').read_text()
    assert 'cross-validated AUC' in text and '## Double transfer learning' in text
    preds = pd.read_csv(rep / 'predictions.csv')
    assert len(preds) == 32 and preds.prob.between(0, 1).all()
    assert preds.groupby('patient_id').set.nunique().max() == 1          # no patient both in cv and test
    results = pd.read_csv(rep / 'results.csv')
    assert list(results.who) == ['model', 'reader (BI-RADS ≥ 4)'] and results['AUC [95% CI]'].str.contains(r'\[').all()
    # mcal predict on the same study with the saved ensemble, one row broken on purpose
    study = tmp_path / 'study.csv'
    rows = pd.read_csv(repo / 'data_samples' / 'labels.csv')
    rows['image_path'] = [str(repo / 'data_samples' / p) for p in rows.image_path]
    rows.loc[0, 'image_path'] = str(tmp_path / 'missing.dcm')
    rows.to_csv(study, index=False)
    r = _mcal('predict', str(rep), str(study), '--out', str(tmp_path / 'pred'), '--no-tta')
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'pred'
    pred = pd.read_csv(out / 'predictions.csv')
    assert len(pred) == 31 and pred.prob.between(0, 1).all()
    assert list(pd.read_csv(out / 'skipped.csv').item) == [rows.roi_id[0]]
    assert len(list((out / 'gradcam').glob('*.png'))) == 31
    html = (out / 'report.html').read_text()
    assert 'AUC' in html and 'plotly' in html and rows.roi_id[0] in html
    assert not (tmp_path / 'pred.partial').exists()


def test_predict_without_labels_and_bad_model(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    r = _mcal('predict', str(tmp_path), str(repo / 'data_samples'), '--out', str(tmp_path / 'p'))
    assert r.returncode == 2 and 'no saved mcal ROI model' in r.stderr and not (tmp_path / 'p').exists()


def test_demo_missing_study_is_a_clear_error(tmp_path):
    r = _mcal('demo', '--data', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'rep'))
    assert r.returncode == 2 and 'nowhere: no such file or folder' in r.stderr and 'Traceback' not in r.stderr


def test_synth_command(tmp_path):
    r = _mcal('synth', str(tmp_path / 's'), '--patients', '2', '--demo')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 's' / 'synth.json').exists() and len(pd.read_csv(tmp_path / 's' / 'labels.csv')) == 4
    r = _mcal('synth', str(tmp_path / 't'), '--rois', '12', '--patients', '5', '--seed', '2')
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / 't' / 'labels.csv')
    assert len(t) == 12 and t.patient_id.nunique() == 5 and (tmp_path / 't' / 'trial.json').exists()
    r = _mcal('synth', str(tmp_path / 'u'), '--rois', '3', '--patients', '5')
    assert r.returncode == 2 and 'patients <= ROIs' in r.stderr


def test_data_samples_are_what_the_generator_writes(tmp_path):
    "data_samples/ is mcal's own output: regenerating it with its recorded seed gives the same table."
    import json
    repo = Path(__file__).resolve().parent.parent
    cfg = json.loads((repo / 'data_samples' / 'synth.json').read_text())
    t = make_study(tmp_path / 'again', n_patients=cfg['n_patients'], clusters_per_image=cfg['clusters_per_image'],
                   shape=tuple(cfg['shape']), pixel_spacing_mm=cfg['pixel_spacing_mm'], seed=cfg['seed'])
    pd.testing.assert_frame_equal(t, pd.read_csv(repo / 'data_samples' / 'labels.csv'), check_dtype=False)


def _study_csv(tmp_path, drop=(), name='study.csv'):
    "data_samples/labels.csv with absolute image paths, without the columns in `drop`."
    repo = Path(__file__).resolve().parent.parent
    rows = pd.read_csv(repo / 'data_samples' / 'labels.csv').drop(columns=list(drop))
    rows['image_path'] = [str(repo / 'data_samples' / p) for p in rows.image_path]
    rows.to_csv(tmp_path / name, index=False)
    return tmp_path / name


QUICK = ('--size', '64', '--epochs', '1', '--folds', '2', '--quiet')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A small ensemble trained by `mcal demo` (resnet18, random start), for the predict tests."
    out = tmp_path_factory.mktemp('trained')
    r = _mcal('demo', '--data', str(_study_csv(out)), '--out', str(out / 'rep'), '--backbone', 'resnet18', '--weights', 'none', *QUICK)
    assert r.returncode == 0, r.stderr
    return out / 'rep'


def test_demo_twice_into_one_folder_with_two_backbones(tmp_path):
    "A model is reused only for its own request: the second run retrains, and its report and members say resnet18."
    import json
    study = _study_csv(tmp_path)
    r1 = _mcal('demo', '--data', str(study), '--out', str(tmp_path / 'rep'), *QUICK)
    assert r1.returncode == 0, r1.stderr
    first = {p.name: json.loads((p / 'config.json').read_text())['backbone'] for p in (tmp_path / 'rep' / 'models' / 'members').iterdir()}
    assert set(first.values()) == {'tf_efficientnet_lite0'}
    r2 = _mcal('demo', '--data', str(study), '--out', str(tmp_path / 'rep'), '--backbone', 'resnet18', '--weights', 'none', *QUICK)
    assert r2.returncode == 0, r2.stderr
    members = sorted((tmp_path / 'rep' / 'models' / 'members').glob('*/config.json'))
    assert len(members) == 2 and {json.loads(p.read_text())['backbone'] for p in members} == {'resnet18'}
    assert json.loads((tmp_path / 'rep' / 'models' / 'stage1' / 'config.json').read_text())['backbone'] == 'resnet18'
    assert 'backbone resnet18' in (tmp_path / 'rep' / 'report.md').read_text()


@pytest.mark.parametrize('drop', [(), ('birads',), ('view',), ('laterality',), ('pixel_spacing_mm',),
                                  ('birads', 'view', 'laterality', 'pixel_spacing_mm')])
def test_demo_ingests_with_and_without_optional_columns(tmp_path, drop):
    r = _mcal('demo', '--data', str(_study_csv(tmp_path, drop)), '--out', str(tmp_path / 'rep'), '--size', '64', '--no-train', '--quiet')
    assert r.returncode == 0, r.stderr
    cut, skipped = pd.read_csv(tmp_path / 'rep' / 'rois.csv'), pd.read_csv(tmp_path / 'rep' / 'skipped.csv')
    if 'pixel_spacing_mm' in drop:      # the PNG images carry no spacing of their own: their rows are skipped, saying why
        png = cut.image_path.str.endswith('.png')
        assert png.any() and cut[~png].patch_path.notna().all() and set(skipped.item) == set(cut[png].roi_id)
        assert skipped.reason.str.contains('spacing').all()
    else: assert cut.patch_path.notna().sum() == 32 and len(skipped) == 0


def test_demo_trains_without_a_reader_column(tmp_path):
    "The common case of a user's CSV: labels but no reader BI-RADS; the report has the model's row alone."
    r = _mcal('demo', '--data', str(_study_csv(tmp_path, ['birads'])), '--out', str(tmp_path / 'rep'), '--backbone', 'resnet18',
              '--weights', 'none', *QUICK)
    assert r.returncode == 0, r.stderr
    assert list(pd.read_csv(tmp_path / 'rep' / 'results.csv').who) == ['model']
    assert (tmp_path / 'rep' / 'roc.png').stat().st_size > 5_000


@pytest.mark.parametrize('drop', [(), ('birads',), ('view',), ('laterality',), ('pixel_spacing_mm',), ('label',),
                                  ('label', 'birads', 'view', 'laterality', 'pixel_spacing_mm')])
def test_predict_with_and_without_optional_columns(trained, tmp_path, drop):
    "`mcal predict` on a CSV with or without labels, reader, view, laterality and spacing: a report, never a traceback."
    r = _mcal('predict', str(trained), str(_study_csv(tmp_path, drop)), '--out', str(tmp_path / 'pred'), '--no-cams', '--no-tta')
    assert r.returncode == 0, r.stderr
    assert 'Traceback' not in r.stderr
    pred, skipped = pd.read_csv(tmp_path / 'pred' / 'predictions.csv'), pd.read_csv(tmp_path / 'pred' / 'skipped.csv')
    assert len(pred) + len(skipped) == 32 and pred.prob.between(0, 1).all()
    assert len(skipped) == (6 if 'pixel_spacing_mm' in drop else 0)     # PNG rows need the spacing column; DICOMs carry theirs
    html = (tmp_path / 'pred' / 'report.html').read_text()
    assert ('AUC' in html) == ('label' not in drop)
    assert ('no reader BI-RADS column' in html) == ('birads' in drop and 'label' not in drop)
    assert 'fitted when the ensemble was trained' in html


def test_predict_reports_a_bad_row_and_goes_on(trained, tmp_path):
    study = _study_csv(tmp_path)
    rows = pd.read_csv(study, dtype=str); rows.loc[3, 'label'] = 'unknwon'; rows.loc[5, 'x'] = 'left'; rows.to_csv(study, index=False)
    r = _mcal('predict', str(trained), str(study), '--out', str(tmp_path / 'pred'), '--no-cams', '--no-tta')
    assert r.returncode == 0, r.stderr
    skipped = pd.read_csv(tmp_path / 'pred' / 'skipped.csv')
    assert set(skipped.item) == {rows.roi_id[3], rows.roi_id[5]}
    assert len(pd.read_csv(tmp_path / 'pred' / 'predictions.csv')) == 30
