"""Does Grad-CAM point at the calcifications? Localisation measured on mini-MIAS, against a centre-bias baseline.

Takes the best deep arm on the calcification target from benchmarks/results/dtl_mias.csv (run
benchmarks/dtl_mias.py first: its members are in benchmarks/work/), explains every calcification
ROI with the repeat-0 member that held it out, and scores each map against the annotated lesion
(the MIAS circle): pointing game and fraction of map energy inside, for the map and for a centred
Gaussian, split by correctly / wrongly classified (threshold 0.5 on that member's probability).
Writes benchmarks/results/gradcam_mias.csv (summary) and gradcam_mias_rois.csv (per ROI). No image
derived from the data is written.

    python benchmarks/gradcam_mias.py [--methods gradcam gradcam++ eigencam]
"""
import argparse, time, warnings
from pathlib import Path
import pandas as pd
for category in (FutureWarning, DeprecationWarning): warnings.filterwarnings('ignore', category=category)   # libraries' deprecation notices; mcal's own warnings stay visible
from mcal.datasets import mias_tables, shared_data_dir
from mcal.data import build_patches
from mcal.inference import load_model, predict
from mcal.ensemble import positive_index
from mcal.gradcam import explain_rows, localisation, localisation_summary

HERE = Path(__file__).parent
RESULTS = HERE / 'results'


def best_arm(results):
    deep = results[(results.target == 'calc') & results.arm.str.contains('/') & ~results.arm.str.contains('ablation')]
    return deep.sort_values('auc', ascending=False).iloc[0]


def main(methods, work=HERE / 'work', size=128):
    t0 = time.time()
    results = pd.read_csv(RESULTS / 'dtl_mias.csv')
    arm = best_arm(results)
    folder = Path(work) / 'members' / 'calc' / arm.arm.replace('/', '_').replace(' ', '_')
    members = sorted(folder.glob('r0f*s0'))
    if not members: raise SystemExit(f'{folder}: no members; run python benchmarks/dtl_mias.py first')
    data = shared_data_dir()
    if data is None: raise SystemExit('shared/data not found: set MCAL_DATA')
    calc = mias_tables(data / 'mias').calc
    table = build_patches(calc, Path(work) / 'cache', field_of_view_mm=25.6, size=size, progress=False).table
    rows = []
    for m in members:
        model, cfg = load_model(m)
        held = table[table.roi_id.astype(str).isin(cfg['valid_roi_ids'])].reset_index(drop=True)
        prob = predict(model, list(held.patch_path), cfg['stats'], tta=True)[:, positive_index(cfg['classes'])]
        for method in methods:
            _, masks, cams = explain_rows(held, model, cfg['stats'], method)
            s = localisation(cams, masks)
            rows.append(pd.concat([held[['roi_id', 'patient_id', 'label', 'radius']], s], axis=1)
                        .assign(method=method, member=m.name, prob=prob, correct=(prob >= 0.5) == (held.label == 'malignant').values))
    per_roi = pd.concat(rows, ignore_index=True)
    summary = pd.concat([localisation_summary(g, correct=g.correct.values).assign(method=method)
                         for method, g in per_roi.groupby('method', sort=False)], ignore_index=True)
    summary.insert(0, 'model', f'{arm.arm} (calc AUC {arm.auc:.3f} [{arm.ci_low:.3f}, {arm.ci_high:.3f}])')
    summary['n_rois'] = per_roi.roi_id.nunique(); summary['wall_s'] = round(time.time() - t0, 1)
    summary.round(3).to_csv(RESULTS / 'gradcam_mias.csv', index=False)
    per_roi.round(4).to_csv(RESULTS / 'gradcam_mias_rois.csv', index=False)
    print(summary.round(3).to_string(index=False))
    print(f'written {RESULTS / "gradcam_mias.csv"} in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--methods', nargs='+', default=['gradcam', 'gradcam++', 'eigencam'])
    a = ap.parse_args()
    main(a.methods)
