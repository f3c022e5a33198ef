"""Does Grad-CAM find the lesion? Measured on mini-MIAS so that a map which ignores the image cannot pass.

ROI level (the target models of benchmarks/dtl_mias.py; run it first):
  every mini-MIAS calcification ROI (and every lesion, target `lesions`) is cut again with its patch centre
  displaced from the lesion at random (seeded, up to a quarter of the 25.6 mm field of view on each axis), and
  explained by the repeat-0 member that never saw it, for each CAM method x target level (0 = last level,
  1 and 2 = 2x and 4x finer grids). Pointing game, relevance mass and rank accuracy (Quantus) against the
  annotated circle, beside three maps that ignore the model: a centred Gaussian, a uniform random point
  (expectation) and the brightest spot after a white top-hat. Split by correct / wrong at the Youden threshold
  of the arm's out-of-fold probabilities (the report's rule), applied to the member's probability on the displaced
  patch that the map explains. Faithfulness: pytorch-grad-cam's ROAD for each
  map and the baselines; sanity: Quantus's model-parameter randomisation test (Spearman of the map before and
  after every weight is randomised), for Grad-CAM at level 0 and LayerCAM at level 2 on the calcification ROIs.
Whole-image level (weakly supervised, as GMIC measures it):
  the learnt screening640 stage-1 model (benchmarks/stage1_screening.py) explains every mini-MIAS image that
  holds an annotated lesion with an on-breast centre (all lesion types); pointing game against the annotated
  circle, beside a random point in the breast (expected hit rate = lesion area in the breast / breast area,
  per image), the breast's centroid and the brightest region (Gaussian-smoothed, 3 mm); Grad-CAM and LayerCAM.
Writes benchmarks/results/gradcam_mias.csv (ROI-level summary), gradcam_mias_rois.csv (per ROI and map),
gradcam_whole_image.csv (whole-image summary). No image derived from the data is written.

    python benchmarks/gradcam_mias.py           # about 10 min on 2 cores
    python benchmarks/gradcam_mias.py --quick   # CI: a few ROIs, one method and level, under 2 minutes
"""
import argparse, json, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
from scipy import ndimage
for category in (FutureWarning, DeprecationWarning): warnings.filterwarnings('ignore', category=category)
from mcal.datasets import mias_tables, shared_data_dir
from mcal.data import build_patches, displaced, load_patch
from mcal.inference import load_model, predict
from mcal.ensemble import positive_index
from mcal.metrics import OperatingPoint, wilson_ci
from mcal.gradcam import explain_rows, cam_grid, member_cams
from mcal.localisation import (localisation, localisation_summary, road_scores, randomisation_check,
                               centre_gaussian, tophat_map, quantus_localisation)

HERE = Path(__file__).parent
RESULTS = HERE / 'results'
ARM = 'tf_efficientnet_lite0/dtl-screening640'      # the paper's method: ImageNet -> screening640 -> target
FOV, SIZE = 25.6, 128
WHOLE_IMAGE_METHODS = ('gradcam', 'layercam')         # 320-px maps of ~110 images cost ~0.5 s each per method and level here
FAITHFULNESS = [('gradcam', 0), ('layercam', 2)]      # ROAD and MPRT cost seconds per patch on 2 cores: the last and finest levels, calc ROIs


def roi_level(data, work, methods, levels, targets, quick, dtl_oof=None):
    "Per-ROI localisation scores, ROAD and MPRT on displaced patches, for each target, method and level."
    tasks = mias_tables(data / 'mias')
    oof = pd.read_csv(dtl_oof or RESULTS / f"dtl_mias_oof{'_quick' if quick else ''}.csv")   # dtl_mias.py's out-of-fold table
    per_roi, faith = [], []
    for target in targets:
        table = getattr(tasks, target)
        if quick: table = table.iloc[:6]
        moved = build_patches(displaced(table, FOV, 0.25, seed=0), Path(work) / 'cache', field_of_view_mm=FOV, size=SIZE, progress=False).table
        arm_oof = oof[(oof.target == target) & (oof.arm == ARM)].set_index('roi_id')
        cut = OperatingPoint.fit(arm_oof.label, arm_oof.prob)
        folder = Path(work) / 'members' / target / ARM.replace('/', '_')
        members = sorted(folder.glob('r0f*s0'))
        if not members: raise SystemExit(f'{folder}: no members; run python benchmarks/dtl_mias.py first')
        for m in members:
            model, cfg = load_model(m)
            held = moved[moved.roi_id.astype(str).isin(cfg['valid_roi_ids'])].reset_index(drop=True)
            if not len(held): continue
            oof_p = arm_oof.loc[held.roi_id, 'prob'].values
            shown_p = predict(model, list(held.patch_path), cfg['stats'], tta=False)[:, positive_index(cfg['classes'])]
            correct = (shown_p >= cut.threshold) == (held.label == 'malignant').values     # the call on the patch the map explains
            base = held[['roi_id', 'patient_id', 'label', 'radius', 'offset_x_mm', 'offset_y_mm']].assign(
                target=target, member=m.name, oof_prob=oof_p, correct=correct, displaced_prob=shown_p)
            grid = cam_grid(model, SIZE, FOV).set_index('level')
            for method in methods:
                for level in levels:
                    patches, masks, cams = explain_rows(held, model, cfg['stats'], method, level=level)
                    s = localisation(cams, masks, patches, FOV / SIZE)
                    s = s.join(base, on='roi').assign(method=method, level=level, cell_mm=grid.loc[level, 'cell_mm'])
                    per_roi.append(s)
                    if target != 'calc' or (method, level) not in FAITHFULNESS or (quick and m != members[0]): continue
                    f = base.assign(method=method, level=level, road_cam=road_scores(model, cfg['stats'], patches, cams),
                                    mprt_spearman=randomisation_check(model, cfg['stats'], patches, method, level))
                    if (method, level) == FAITHFULNESS[0]:               # the baselines' ROAD, once per patch
                        rng = np.random.default_rng(0)
                        f = f.assign(road_centred_gaussian=road_scores(model, cfg['stats'], patches, np.broadcast_to(centre_gaussian(patches.shape[-2:]), patches.shape).copy()),
                                     road_tophat=road_scores(model, cfg['stats'], patches, np.stack([tophat_map(p, FOV / SIZE) for p in patches])),
                                     road_random=road_scores(model, cfg['stats'], patches, rng.random(patches.shape).astype(np.float32)))
                    faith.append(f)
            print(f'{target} {m.name}: {len(held)} ROIs explained', flush=True)
    per_roi = pd.concat(per_roi, ignore_index=True)
    summaries = []
    for (target, method, level), g in per_roi.groupby(['target', 'method', 'level'], sort=False):
        g = g.assign(roi=pd.factorize(g.member + ':' + g.roi.astype(str))[0])      # one ROI id across members
        correct = g.drop_duplicates('roi').sort_values('roi').correct.values
        summaries.append(localisation_summary(g, correct).assign(target=target, method=method, level=level, cell_mm=g.cell_mm.iloc[0]))
    return per_roi, pd.concat(summaries, ignore_index=True), pd.concat(faith, ignore_index=True)


def breast_mask(image:np.ndarray) -> np.ndarray:
    "The largest bright connected region of a whole mammogram (the breast), holes filled."
    smooth = ndimage.gaussian_filter(image, 2)
    lab, n = ndimage.label(smooth > max(0.1, np.percentile(smooth, 5) + 0.05))
    if n == 0: return np.ones_like(image, bool)
    sizes = ndimage.sum(np.ones_like(lab), lab, index=range(1, n + 1))
    return ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


def whole_image_level(data, work, stage1, methods, levels, quick):
    "Pointing game of the stage-1 model's maps on mini-MIAS images with on-breast lesions, and of three baselines."
    model, cfg = load_model(stage1)
    size = cfg['patch_size']
    lesions = mias_tables(data / 'mias').lesions
    if quick: lesions = lesions.iloc[:4]
    images = lesions.groupby('image_path').agg(patient_id=('patient_id', 'first')).reset_index()
    images = images.assign(roi_id=[Path(p).stem + '-whole' for p in images.image_path], roi_shape='image', label='cancer')
    patches = build_patches(images, Path(work) / 'cache', size=size, progress=False, pixel_spacing_mm=0.2).table
    grey = np.stack([load_patch(p)[0] for p in patches.patch_path])
    scale = size / 1024                                        # mini-MIAS images are 1024 x 1024: padding is none, scaling is uniform
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for i, r in patches.iterrows():
        les = lesions[lesions.image_path == r.image_path]
        lesion = np.zeros((size, size), bool)
        for l in les.itertuples(): lesion |= (xx - l.x * scale) ** 2 + (yy - l.y * scale) ** 2 <= max(l.radius * scale, 1.5) ** 2
        breast = breast_mask(grey[i])
        cy, cx = ndimage.center_of_mass(breast)
        bright = ndimage.gaussian_filter(grey[i], 3 / (0.2 / scale)) * breast      # 3 mm smoothing, inside the breast
        by, bx = np.unravel_index(np.argmax(bright), bright.shape)
        rows.append(dict(image=Path(r.image_path).stem, n_lesions=len(les), labels='/'.join(sorted(set(les.label))), types='/'.join(sorted(set(les.lesion_type))),
                         lesion_fraction_of_breast=float((lesion & breast).sum() / breast.sum()),
                         **{'random point in breast': float((lesion & breast).sum() / breast.sum()),
                            'breast centroid': float(lesion[int(round(cy)), int(round(cx))]),
                            'brightest region (3 mm)': float(lesion[by, bx])}, _lesion=lesion))
    per = pd.DataFrame(rows)
    masks = np.stack(per.pop('_lesion').values)
    grid = cam_grid(model, size, size * 0.2 / scale).set_index('level')
    for method in methods:
        for level in levels:
            _, _, cams = explain_rows(patches, model, cfg['stats'], method, level=level)
            per[f'{method} level {level} ({grid.loc[level, "grid"]})'] = quantus_localisation(cams, masks).pointing.values
    summary = []
    for col in per.columns[per.columns.get_loc('random point in breast'):]:
        for group, sel in (('all', np.ones(len(per), bool)), ('malignant lesion', per.labels.str.contains('malignant').values),
                           ('benign only', ~per.labels.str.contains('malignant').values)):
            k, n = per.loc[sel, col].sum(), int(sel.sum())
            lo, hi = wilson_ci(int(round(k)), n)
            summary.append(dict(map=col, group=group, n_images=n, pointing=round(k / n, 3), ci_low=round(lo, 3), ci_high=round(hi, 3),
                                expected=col == 'random point in breast', stage1=str(stage1), stage1_valid_auc=cfg.get('card', {}).get('valid_auc')))
    return per, pd.DataFrame(summary)


def main(a):
    t0 = time.time()
    data = shared_data_dir()
    if data is None: raise SystemExit('shared/data not found: set MCAL_DATA')
    methods = ['gradcam'] if a.quick else a.methods
    levels = [0, 2] if a.quick else a.levels
    if a.quick: FAITHFULNESS[:] = [('gradcam', 0)]
    suffix = '_quick' if a.quick else ''
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not a.skip_roi:
        per_roi, summary, faith = roi_level(data, a.work, methods, levels, ['calc'] if a.quick else a.targets, a.quick, a.dtl_oof)
        per_roi.round(4).to_csv(RESULTS / f'gradcam_mias_rois{suffix}.csv', index=False)
        faith.round(4).to_csv(RESULTS / f'gradcam_mias_faithfulness{suffix}.csv', index=False)
        summary.assign(arm=ARM, displaced='up to 0.25 x 25.6 mm per axis, seed 0', wall_s=round(time.time() - t0, 1)).round(3) \
               .to_csv(RESULTS / f'gradcam_mias{suffix}.csv', index=False)
        print(summary[summary.group == 'all'][['target', 'method', 'level', 'cell_mm', 'map', 'n', 'pointing', 'pointing_low', 'pointing_high', 'mass', 'rank']].round(3).to_string(index=False))
    if Path(a.stage1).exists():
        per, whole = whole_image_level(data, a.work, a.stage1, [m for m in methods if m in WHOLE_IMAGE_METHODS], levels, a.quick)
        per.round(4).to_csv(RESULTS / f'gradcam_whole_image_images{suffix}.csv', index=False)
        whole.to_csv(RESULTS / f'gradcam_whole_image{suffix}.csv', index=False)
        print(whole[whole.group == 'all'].to_string(index=False))
    else: print(f'{a.stage1}: no stage-1 model; run python benchmarks/stage1_screening.py for the whole-image part')
    print(f'done in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--work', default=str(HERE / 'work'))
    ap.add_argument('--results', default=str(RESULTS))
    ap.add_argument('--methods', nargs='+', default=['gradcam', 'gradcam++', 'eigencam', 'layercam'])
    ap.add_argument('--levels', nargs='+', type=int, default=[0, 1, 2])
    ap.add_argument('--targets', nargs='+', default=['calc', 'lesions'])
    ap.add_argument('--stage1', default=str(HERE / 'work' / 'stage1' / 'lite0-320-defaults'))
    ap.add_argument('--skip-roi', action='store_true', help='only the whole-image part')
    ap.add_argument('--dtl-oof', default=None, help="dtl_mias.py's out-of-fold CSV (default: in --results)")
    a = ap.parse_args()
    RESULTS = Path(a.results)
    main(a)
