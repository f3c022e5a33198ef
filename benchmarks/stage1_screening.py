"""Stage 1 of d-TL, learnt: EfficientNet-Lite0 (ImageNet) fine-tuned on screening640 whole mammograms (cancer vs no cancer),
validated on patients it never saw, then tested externally on mini-MIAS whole images.

What it runs, all through mcal's library (`stage1`, `member_probs`, `metrics`):
  1. screening640 (2,708 images, 778 patients): one patient-grouped, stratified 5-fold split; fold 0 is the validation set
     (about 20 %), so no patient is on both sides. Inverted (white-air) images are re-inverted by `build_patches`.
  2. fastai's learning-rate finder on the same DataLoaders (unfrozen, balanced loss): plot + suggestions saved.
  3. `stage1(...)` with the arguments given (default: mcal's stage-1 defaults) -> a model folder with its card in config.json.
  4. Validation AUC with DeLong and patient-bootstrap 95 % CIs, N, patients, epochs, resolution, wall time.
  5. External test on mini-MIAS (322 digitised film images, another scanner, country and decade): the whole image
     scored by the stage-1 model; abnormal (any lesion) vs normal, and malignant (any malignant lesion) vs rest.

    python benchmarks/stage1_screening.py                     # 320 px, mcal's stage-1 defaults (about 45 min on 2 cores)
    python benchmarks/stage1_screening.py --size 160 --tag ablation-old --lr-mult 100 --frozen 1 --epochs 3 --no-balanced
    python benchmarks/stage1_screening.py --quick             # CI: 300 images at 64 px, one epoch, under 2 minutes
Appends one row per run to benchmarks/results/stage1_screening.csv (stage1_screening_quick.csv in quick mode);
the model folder goes to <work>/stage1/<tag>.
"""
import argparse, json, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
for category in (FutureWarning, DeprecationWarning): warnings.filterwarnings('ignore', category=category)
from mcal.datasets import load_folder_classes, load_mias, flag_off_breast, usable, shared_data_dir
from mcal.data import build_patches, grouped_cv, patch_dataloaders
from mcal.weights import get_backbone
from mcal.learner import roi_learner, stage1
from mcal.ensemble import member_probs
from mcal.metrics import auc_ci, patient_bootstrap, auc

HERE = Path(__file__).parent
RESULTS = HERE / 'results'
SCREENING = 'screening640 (Kaggle breast-cancer-detection, DbCL): whole images, cancer vs no cancer, patient-grouped fold 0 of 5 held out'


def screening_split(data:Path, quick=False):
    "The screening640 table and the positions of its validation rows (patient-grouped, stratified fold 0 of 5)."
    scr = usable(load_folder_classes(data / 'screening640', label_map={'benign': 'no cancer', 'malignant': 'cancer'}))
    if quick: scr = scr.groupby('label').sample(150, random_state=0).reset_index(drop=True)
    _, _, _, va = grouped_cv(scr, n_splits=5, seed=0)[0]
    return scr, va


def mias_images(data:Path) -> pd.DataFrame:
    "mini-MIAS as one row per image: `abnormal` (any lesion row) and `malignant` (any malignant row)."
    m = load_mias(data / 'mias')
    per = m.groupby('image_path').agg(patient_id=('patient_id', 'first'), abnormal=('mias_class', lambda s: (s != 'NORM').any()),
                                      malignant=('label', lambda s: (s == 'malignant').any())).reset_index()
    return per.assign(roi_id=[Path(p).stem + '-whole' for p in per.image_path], roi_shape='image',
                      label=np.where(per.abnormal, 'cancer', 'no cancer'))


def ci_row(name, y, p, patients):
    "AUC with DeLong and patient-bootstrap CIs."
    a, lo, hi = auc_ci(y, p)
    boot = patient_bootstrap(auc, y, p, patient_ids=patients, n_boot=1000, seed=0).iloc[0]
    return dict(task=name, n=len(y), n_positive=int(np.sum(y)), n_patients=int(pd.Series(patients).nunique()), auc=round(a, 3),
                ci_low=round(lo, 3), ci_high=round(hi, 3), boot_low=round(boot['low'], 3), boot_high=round(boot['high'], 3))


def lr_find_run(dls, backbone, out_png, num_it):
    "fastai's LR finder, unfrozen with the balanced loss as stage 1 trains: suggestions and the saved plot."
    learn = roi_learner(dls, backbone, 'imagenet', seed=0, balanced=True, bf16='auto')
    learn.unfreeze()
    with learn.no_bar():
        from fastai.callback.schedule import minimum, steep, valley
        sug = learn.lr_find(num_it=num_it, show_plot=True, suggest_funcs=(minimum, steep, valley))
    import matplotlib.pyplot as plt
    plt.gcf().suptitle(f'lr_find: {backbone}, unfrozen, {dls.train_ds[0][0].shape[-1]} px, bs {dls.bs}, {num_it} iterations')
    plt.savefig(out_png, dpi=90, bbox_inches='tight'); plt.close('all')
    return {k: float(v) for k, v in sug._asdict().items()}


def main(a):
    t_start = time.time()
    data = shared_data_dir()
    if data is None: raise SystemExit('shared/data not found: set MCAL_DATA')
    work = Path(a.work); cache = work / 'cache'
    bb = get_backbone(a.backbone)
    scr, va = screening_split(data, a.quick)
    patches = build_patches(scr, cache, size=a.size, progress=False).table
    if len(patches) != len(scr): raise SystemExit(f'{len(scr) - len(patches)} screening640 images could not be read')
    dls = patch_dataloaders(patches, va, bs=a.bs, vocab=['no cancer', 'cancer'], stats=bb.stats, seed=0)
    print(f'screening640: {len(patches) - len(va)} train / {len(va)} valid images, {patches.iloc[va].patient_id.nunique()} valid patients, '
          f'{a.size} px ({time.time() - t_start:.0f} s)', flush=True)
    suffix = '_quick' if a.quick else ''
    RESULTS.mkdir(parents=True, exist_ok=True)
    sug = {}
    if a.lr_find:
        t0 = time.time()
        sug = lr_find_run(patch_dataloaders(patches, va, bs=16, vocab=['no cancer', 'cancer'], stats=bb.stats, seed=0), bb.name,
                          RESULTS / f'stage1_lr_find{suffix}.png', a.lr_find_it)
        print(f'lr_find ({time.time() - t0:.0f} s): {sug}', flush=True)
    t0 = time.time()
    folder = stage1(dls, work / 'stage1' / a.tag, bb.name, 'imagenet', epochs=a.epochs, lr=a.lr, frozen_epochs=a.frozen,
                    lr_mult=a.lr_mult, balanced=a.balanced, seed=0, quiet=a.quick, data=SCREENING, on_mismatch='retrain', bf16='auto')
    train_s = time.time() - t0
    val = patches.iloc[va]
    p = member_probs(folder, val.patch_path, tta=False)
    y = (val.label == 'cancer').values.astype(int)
    rows = [ci_row('screening640 validation: cancer vs no cancer', y, p, val.patient_id.values)]
    cfg_path = folder / 'config.json'
    cfg = json.loads(cfg_path.read_text())
    cfg['card'].update(valid_auc_ci=[rows[0]['ci_low'], rows[0]['ci_high']], valid_auc_ci_method='DeLong 95 %')
    cfg_path.write_text(json.dumps(cfg, indent=2))
    if not a.quick:                               # external test: mini-MIAS whole images
        mias = mias_images(data)
        mp = build_patches(mias, cache, size=a.size, progress=False, pixel_spacing_mm=0.2).table
        pm = member_probs(folder, mp.patch_path, tta=False)
        rows.append(ci_row('mini-MIAS external: abnormal vs normal', mp.abnormal.values.astype(int), pm, mp.patient_id.values))
        rows.append(ci_row('mini-MIAS external: malignant vs rest', mp.malignant.values.astype(int), pm, mp.patient_id.values))
    for r in rows:
        r.update(tag=a.tag, backbone=bb.name, size_px=a.size, epochs=a.epochs, frozen_epochs=a.frozen, lr=a.lr, lr_mult=a.lr_mult,
                 balanced=a.balanced, bs=a.bs, n_train=len(patches) - len(va), train_wall_s=round(train_s, 1),
                 lr_find=json.dumps({k: round(v, 6) for k, v in sug.items()}) if sug else '', model=str(folder.relative_to(work)),
                 quick=a.quick, cpu=__import__('torch').backends.cpu.get_cpu_capability(), command=' '.join(a.argv))
    out = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f'stage1_screening{suffix}.csv'
    if path.exists() and not a.quick: out = pd.concat([pd.read_csv(path).query('tag != @a.tag'), out], ignore_index=True)
    out.to_csv(path, index=False)
    print(out[['tag', 'task', 'n', 'n_patients', 'auc', 'ci_low', 'ci_high', 'boot_low', 'boot_high', 'size_px', 'epochs', 'train_wall_s']].to_string(index=False))
    print(f'total {time.time() - t_start:.0f} s; written {path}')


if __name__ == '__main__':
    import sys
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='CI: 300 images at 64 px, one epoch, no external test')
    ap.add_argument('--work', default=str(HERE / 'work'))
    ap.add_argument('--results', default=str(RESULTS), help='where the CSV and the lr_find plot go')
    ap.add_argument('--tag', default='lite0-320-defaults')
    ap.add_argument('--backbone', default='tf_efficientnet_lite0')
    ap.add_argument('--size', type=int, default=320)
    ap.add_argument('--epochs', type=int, default=4)
    ap.add_argument('--frozen', type=int, default=0)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--lr-mult', type=float, default=1)
    ap.add_argument('--no-balanced', dest='balanced', action='store_false')
    ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--no-lr-find', dest='lr_find', action='store_false')
    ap.add_argument('--lr-find-it', type=int, default=40)
    a = ap.parse_args()
    if a.quick: a.size, a.epochs, a.lr_find_it, a.tag = 64, 1, 10, 'quick'
    a.argv = ['python', 'benchmarks/stage1_screening.py'] + sys.argv[1:]
    RESULTS = Path(a.results)
    main(a)
