"The `mcal` console command, run as a user runs it."
import subprocess, sys
from pathlib import Path
import pandas as pd
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
    assert r.returncode == 2 and 'no saved mcal model' in r.stderr and not (tmp_path / 'p').exists()


def test_demo_missing_study_is_a_clear_error(tmp_path):
    r = _mcal('demo', '--data', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'rep'))
    assert r.returncode == 2 and 'labels.csv: file not found' in r.stderr


def test_synth_command(tmp_path):
    r = _mcal('synth', str(tmp_path / 's'), '--patients', '2')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 's' / 'synth.json').exists() and len(pd.read_csv(tmp_path / 's' / 'labels.csv')) == 4


def test_data_samples_are_what_the_generator_writes(tmp_path):
    "data_samples/ is mcal's own output: regenerating it with its recorded seed gives the same table."
    import json
    repo = Path(__file__).resolve().parent.parent
    cfg = json.loads((repo / 'data_samples' / 'synth.json').read_text())
    t = make_study(tmp_path / 'again', n_patients=cfg['n_patients'], clusters_per_image=cfg['clusters_per_image'],
                   shape=tuple(cfg['shape']), pixel_spacing_mm=cfg['pixel_spacing_mm'], seed=cfg['seed'])
    pd.testing.assert_frame_equal(t, pd.read_csv(repo / 'data_samples' / 'labels.csv'), check_dtype=False)
