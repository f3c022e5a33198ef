"The `mcal` console command, run as a user runs it."
import sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from conftest import run_guarded
from mcal.synth import make_study


def _mcal(*args, cwd=None):
    return run_guarded([sys.executable, '-c', 'import sys; from mcal.cli import main; sys.exit(main())', *args], cwd=cwd)


def test_demo_writes_report(tmp_path):
    make_study(tmp_path / 'study', n_patients=4, shape=(256, 256))
    r = _mcal('demo', '--data', str(tmp_path / 'study'), '--out', str(tmp_path / 'rep'), '--size', '64', '--no-train')
    assert r.returncode == 0, r.stderr
    assert {'contact_sheet.png', 'report.md', 'rois.csv', 'skipped.csv'} <= {p.name for p in (tmp_path / 'rep').iterdir()}
    rois = pd.read_csv(tmp_path / 'rep' / 'rois.csv')
    assert len(rois) == 8 and rois.patch_path.notna().all()
    assert 'SYNTHETIC' in (tmp_path / 'rep' / 'report.md').read_text()


@pytest.mark.slow
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
    baseline = pd.read_csv(rep / 'baseline.csv')                          # the model-free top-hat forest on the same test ROIs
    assert set(baseline.roi_id) == set(preds[preds.set == 'test'].roi_id) and baseline.tophat_forest.between(0, 1).all()
    assert 'model-free baseline on the same ROIs' in text and 'paired DeLong p =' in text
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---- Never lose a user's file, never print a silently wrong number (each test named after what it pins) ----
# Most run `mcal` in this process (`main`, the console command's entry point) to spare an interpreter start-up per call;
# where another process matters (the lock, a warning printed at import), they start one.

def _here(capsys, *args):
    "`mcal ARGS` run in this process: its exit status and what it printed, as `subprocess.run` reports them."
    from types import SimpleNamespace
    from mcal.cli import main
    capsys.readouterr()
    status = main([str(a) for a in args])
    printed = capsys.readouterr()
    return SimpleNamespace(returncode=status, stdout=printed.out, stderr=printed.err)


def _snapshot(folder:Path) -> dict:
    "Every file under `folder` with its bytes: what 'survives byte for byte' compares."
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _users_folder(path:Path, *names) -> Path:
    "A user's folder holding `names` (files, some in sub-folders) with their own content."
    for n in names: (path / n).parent.mkdir(parents=True, exist_ok=True); (path / n).write_text(f'the user wrote {n}')
    return path


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    err = r.stderr.strip()
    assert err.startswith('mcal: error: ') and '\n' not in err and 'Traceback' not in err, err
    for w in words: assert w in err, (w, err)
    return err


def test_train_and_demo_refuse_a_users_folder_and_leave_it_byte_for_byte(tmp_path, capsys):
    mine = _users_folder(tmp_path / 'my_run', 'gradcam/mine.png', 'models/members/old/notes.txt', 'report.md', 'results.csv')
    before = _snapshot(mine)
    for cmd in (['train', '--data', str(_study_csv(tmp_path))], ['demo', '--data', str(_study_csv(tmp_path))]):
        r = _here(capsys, *cmd, '--out', str(mine), '--backbone', 'resnet18', '--weights', 'none', *QUICK)
        _one_line_error(r, str(mine.resolve()), 'holds files mcal did not write', 'gradcam/')
    assert _snapshot(mine) == before


def test_train_refuses_the_study_folder_as_its_output(tmp_path, capsys):
    (tmp_path / 'study').mkdir(); _study_csv(tmp_path / 'study', name='labels.csv')
    before = _snapshot(tmp_path / 'study')
    r = _here(capsys, 'train', '--data', str(tmp_path / 'study'), '--out', str(tmp_path / 'study'), '--quiet')
    _one_line_error(r, 'lie inside the input')
    r = _here(capsys, 'train', '--data', str(tmp_path / 'study'), '--out', str(tmp_path / 'study' / 'run'), '--quiet')   # inside the input folder: refused too
    _one_line_error(r, 'lie inside the input')
    assert _snapshot(tmp_path / 'study') == before


def test_predict_refuses_a_users_folder_with_predictions_and_report_and_its_partial_sibling_survives(trained, tmp_path, capsys):
    mine = _users_folder(tmp_path / 'preds', 'predictions.csv', 'report.html', 'notes.txt', 'sub/more.txt')
    partial = _users_folder(tmp_path / 'preds.partial', 'keep.txt')
    before, before_partial = _snapshot(mine), _snapshot(partial)
    r = _here(capsys, 'predict', str(trained), str(_study_csv(tmp_path)), '--out', str(mine), '--no-cams', '--no-tta')
    _one_line_error(r, 'holds files mcal did not write')
    assert _snapshot(mine) == before and _snapshot(partial) == before_partial


def test_evaluate_refuses_a_users_folder_and_a_predictions_folder(trained, tmp_path, capsys):
    mine = _users_folder(tmp_path / 'mine', 'report.md', 'results.csv', 'roc.png', 'skipped.csv')
    before = _snapshot(mine)
    _one_line_error(_here(capsys, 'evaluate', str(trained / 'predictions.csv'), '--out', str(mine), '--quiet'), 'holds files mcal did not write')
    assert _snapshot(mine) == before
    r = _here(capsys, 'predict', str(trained), str(_study_csv(tmp_path)), '--out', str(tmp_path / 'pred'), '--no-cams', '--no-tta', '--quiet')
    assert r.returncode == 0, r.stderr
    kept = _snapshot(tmp_path / 'pred')
    _one_line_error(_here(capsys, 'evaluate', str(tmp_path / 'pred' / 'predictions.csv'), '--out', str(tmp_path / 'pred'), '--quiet'), 'input')
    assert _snapshot(tmp_path / 'pred') == kept                           # predict's skipped.csv is not replaced


def test_a_rerun_replaces_only_what_mcal_wrote_and_leaves_nothing_stale(trained, tmp_path, capsys):
    out = tmp_path / 'ev'
    assert _here(capsys, 'evaluate', str(trained / 'predictions.csv'), '--out', str(out), '--n-boot', '20', '--quiet').returncode == 0
    assert (out / 'calibration.png').exists() and (out / 'decision_curve.csv').exists()
    (out / 'my_notes.txt').write_text('mine'); (out / 'gradcam').mkdir(); (out / 'gradcam' / 'mine.png').write_text('mine')
    scores = pd.read_csv(trained / 'predictions.csv').query('set == "test"').drop(columns=['birads', 'threshold'])
    scores.assign(score=scores.prob * 10 - 5).drop(columns='prob').to_csv(tmp_path / 'scores.csv', index=False)
    r = _here(capsys, 'evaluate', str(tmp_path / 'scores.csv'), '--out', str(out), '--n-boot', '20', '--quiet')
    assert r.returncode == 0, r.stderr
    names = {p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file() and not p.name.startswith('.')}
    assert names == {'my_notes.txt', 'gradcam/mine.png', 'report.md', 'results.csv', 'roc.png', 'roc.html', 'skipped.csv'}
    assert (out / 'my_notes.txt').read_text() == 'mine'


def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_process(trained, tmp_path):
    import os
    from mcal.core import OutputFolder
    with OutputFolder(tmp_path / 'ev', 'evaluate'):                          # a run in progress (this process)
        r = _mcal('evaluate', str(trained / 'predictions.csv'), '--out', str(tmp_path / 'ev'), '--quiet')
    _one_line_error(r, 'another mcal evaluate is writing here', f'process {os.getpid()}')
    assert not [p for p in (tmp_path / 'ev').iterdir() if not p.name.startswith('.mcal')]


@pytest.mark.parametrize('geometry', ['blank radius', 'no ROI columns'])
def test_a_missing_roi_is_a_skipped_row_never_the_whole_image(trained, tmp_path, geometry, capsys):
    rows = pd.read_csv(_study_csv(tmp_path)).head(6)
    rows = rows.assign(radius=np.nan) if geometry == 'blank radius' else rows.drop(columns=['x', 'y', 'radius'])
    rows.to_csv(tmp_path / 'rois.csv', index=False)
    r = _here(capsys, 'predict', str(trained), str(tmp_path / 'rois.csv'), '--out', str(tmp_path / 'pred'), '--no-cams', '--no-tta')
    assert r.returncode == 0, r.stderr
    assert '0 ROIs predicted, 6 skipped' in r.stdout
    assert pd.read_csv(tmp_path / 'pred' / 'skipped.csv').reason.str.contains('ROI').all()


def test_evaluate_scores_the_model_on_every_row_and_the_reader_on_its_own(trained, tmp_path, capsys):
    p = pd.read_csv(trained / 'predictions.csv')
    p.loc[::2, 'birads'] = np.nan
    p.drop(columns='set').to_csv(tmp_path / 'p.csv', index=False)
    r = _here(capsys, 'evaluate', str(tmp_path / 'p.csv'), '--out', str(tmp_path / 'ev'), '--n-boot', '20', '--quiet')
    assert r.returncode == 0, r.stderr
    res = pd.read_csv(tmp_path / 'ev' / 'results.csv', index_col='who')
    n = lambda who: sum(map(int, res.loc[who, 'N benign / malignant'].split(' / ')))
    assert n('model') == len(p) and n('reader (BI-RADS ≥ 4)') == p.birads.notna().sum()
    assert f'on the {p.birads.notna().sum()} ROIs with a usable BI-RADS' in (tmp_path / 'ev' / 'report.md').read_text()


def test_evaluate_applies_the_threshold_training_fitted(trained, tmp_path, capsys):
    fitted = __import__('json').loads((trained / 'models' / 'threshold.json').read_text())['threshold']
    assert (pd.read_csv(trained / 'predictions.csv').threshold == fitted).all()      # the threshold travels with the predictions
    r = _here(capsys, 'evaluate', str(trained / 'predictions.csv'), '--out', str(tmp_path / 'ev'), '--n-boot', '20', '--quiet')
    assert r.returncode == 0, r.stderr
    train, ev = (pd.read_csv(f, index_col='who') for f in (trained / 'results.csv', tmp_path / 'ev' / 'results.csv'))
    for col in ('sensitivity', 'specificity'): assert ev.loc['model', col].split()[-1] == train.loc['model', col].split()[-1]
    assert f'Model threshold: {fitted:.3f}, from the table\'s threshold column' in (tmp_path / 'ev' / 'report.md').read_text()
    r = _here(capsys, 'predict', str(trained), str(_study_csv(tmp_path)), '--out', str(tmp_path / 'pred'), '--no-cams', '--no-tta', '--quiet')
    assert (pd.read_csv(tmp_path / 'pred' / 'predictions.csv').threshold == fitted).all()
    import shutil                                                     # a member alone, with no fitted threshold beside it:
    shutil.copytree(sorted((trained / 'models' / 'members').iterdir())[0], tmp_path / 'lone')
    assert _here(capsys, 'predict', str(tmp_path / 'lone'), str(_study_csv(tmp_path)), '--out', str(tmp_path / 'p2'), '--no-cams', '--quiet').returncode == 0
    assert 'threshold' not in pd.read_csv(tmp_path / 'p2' / 'predictions.csv')   # no column claims a fitted threshold
    assert _here(capsys, 'evaluate', str(tmp_path / 'p2' / 'predictions.csv'), '--out', str(tmp_path / 'e2'), '--n-boot', '20', '--quiet').returncode == 0
    assert 'Model threshold: default 0.5' in (tmp_path / 'e2' / 'report.md').read_text()


@pytest.mark.parametrize('value,why', [('1.7', 'outside [0, 1]'), ('-0.2', 'outside [0, 1]'), ('73', 'a percentage?')])
def test_probabilities_outside_0_1_are_rejected_rows(trained, tmp_path, value, why, capsys):
    p = pd.read_csv(trained / 'predictions.csv', dtype=str).query('set == "test"')
    p.iloc[0, p.columns.get_loc('prob')] = value
    p.to_csv(tmp_path / 'p.csv', index=False)
    assert _here(capsys, 'evaluate', str(tmp_path / 'p.csv'), '--out', str(tmp_path / 'ev'), '--n-boot', '20', '--quiet').returncode == 0
    skipped = pd.read_csv(tmp_path / 'ev' / 'skipped.csv')
    assert len(skipped) == 1 and why in skipped.reason[0] and p.roi_id.iloc[0] in skipped.item[0]


def test_predict_refuses_a_stage1_model_folder(trained, tmp_path, capsys):
    r = _here(capsys, 'predict', str(trained / 'models' / 'stage1'), str(_study_csv(tmp_path)), '--out', str(tmp_path / 'pred'))
    _one_line_error(r, 'stage-1 (intermediate) model', 'not an ROI classifier')
    assert not (tmp_path / 'pred').exists()


@pytest.mark.parametrize('option,value', [('--field-of-view-mm', '-5'), ('--epochs', '-1'), ('--size', '0'), ('--bs', '0'), ('--folds', '1')])
def test_train_options_out_of_range_are_refused_before_any_work(tmp_path, option, value, capsys):
    r = _here(capsys, 'train', '--data', str(_study_csv(tmp_path)), '--out', str(tmp_path / 'run'), option, value, '--quiet')
    _one_line_error(r, f'{option} {value}: expected')
    assert not (tmp_path / 'run').exists()


def test_evaluate_threshold_outside_0_1_is_refused(trained, tmp_path, capsys):
    _one_line_error(_here(capsys, 'evaluate', str(trained / 'predictions.csv'), '--out', str(tmp_path / 'ev'), '--threshold', '2'), '--threshold 2')
    assert not (tmp_path / 'ev').exists()


def test_train_with_no_usable_roi_is_an_error_not_an_empty_report(tmp_path, capsys):
    rows = pd.read_csv(_study_csv(tmp_path)).assign(image_path=str(tmp_path / 'missing.dcm'))
    rows.to_csv(tmp_path / 'none.csv', index=False)
    r = _here(capsys, 'train', '--data', str(tmp_path / 'none.csv'), '--out', str(tmp_path / 'run'), '--backbone', 'resnet18', '--weights', 'none', *QUICK)
    _one_line_error(r, 'no usable ROI to train on', '32 of 32 rows skipped')
    assert not (tmp_path / 'run' / 'report.md').exists()


def test_bad_paths_give_one_line_not_a_traceback(trained, tmp_path, capsys):
    (tmp_path / 'empty.csv').write_text('')
    _one_line_error(_here(capsys, 'evaluate', str(tmp_path / 'empty.csv'), '--out', str(tmp_path / 'e1')), 'empty.csv: the file is empty')
    _one_line_error(_here(capsys, 'train', '--config', str(tmp_path)), 'a folder, not a config file')
    p = tmp_path / 'p.csv'; p.write_bytes((trained / 'predictions.csv').read_bytes())
    _one_line_error(_here(capsys, 'evaluate', str(p), '--out', str(p)), 'the output folder would be')
    assert p.read_bytes() == (trained / 'predictions.csv').read_bytes()
    _one_line_error(_here(capsys, 'train', '--data', str(_study_csv(tmp_path)), '--out', str(p), '--quiet'), 'is a file, not a folder')
    (tmp_path / 'folder').mkdir()
    _one_line_error(_here(capsys, 'evaluate', str(tmp_path / 'folder'), '--out', str(tmp_path / 'e2')), str(tmp_path / 'folder'), 'no CBIS-DDSM case CSV')
    pd.read_csv(trained / 'predictions.csv').to_csv(tmp_path / 'semi.csv', sep=';', index=False)
    _one_line_error(_here(capsys, 'evaluate', str(tmp_path / 'semi.csv'), '--out', str(tmp_path / 'e3')), 'semicolon-separated')


def test_small_things_a_user_reads(trained, tmp_path, capsys):
    "No FutureWarning on stderr; the report says why the reader row is missing (a negative 'biopsies avoided': 13c_evaluate)."
    r = _mcal('synth', str(tmp_path / 's'), '--patients', '2', '--demo')
    assert r.returncode == 0 and 'Warning' not in r.stderr, r.stderr
    p = pd.read_csv(trained / 'predictions.csv').drop(columns='birads')
    p.to_csv(tmp_path / 'noreader.csv', index=False)
    assert _here(capsys, 'evaluate', str(tmp_path / 'noreader.csv'), '--out', str(tmp_path / 'e'), '--n-boot', '20', '--quiet').returncode == 0
    assert 'No reader row: the table has no `birads` column.' in (tmp_path / 'e' / 'report.md').read_text()
