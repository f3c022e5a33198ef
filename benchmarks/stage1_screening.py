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
    python benchmarks/stage1_screening.py --device cuda --size 512 --epochs 30 --budget-s 240 --workers 16 --tag lite0-512-gpu
                                                              # on a GPU: as many epochs (at most 30) as a timed probe says fit 240 s
    python benchmarks/stage1_screening.py --evaluate-only --size 512 --tag lite0-512-gpu
                                                              # score a model folder trained elsewhere on this machine's files
    python benchmarks/stage1_screening.py --from-checkpoint benchmarks/work/gpu/lite0-512-gpu-e25 --size 512 --tag lite0-512-gpu-e25
                                                              # a run stopped by its time limit: its last epoch checkpoint as the model
Appends one row per run to benchmarks/results/stage1_screening.csv (stage1_screening_quick.csv in quick mode);
the model folder goes to <work>/stage1/<tag>. Rows are replaced per (tag, images).
"""
import argparse, json, time, warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from functools import partial
from pathlib import Path
import numpy as np, pandas as pd
for category in (FutureWarning, DeprecationWarning): warnings.filterwarnings('ignore', category=category)
from mcal.datasets import load_folder_classes, load_mias, flag_off_breast, usable, shared_data_dir
from mcal.data import build_patches, grouped_cv, patch_dataloaders
from mcal.weights import get_backbone
from mcal.learner import roi_learner, stage1, model_card
from mcal.callbacks import load_checkpoint
from mcal.inference import save_model
from mcal.core import atomic_write
from mcal.core import resolve_device
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


def _cut(rows, **kwargs):
    return len(build_patches(rows, progress=False, **kwargs).table)

def cut_patches(table:pd.DataFrame, cache:Path, size:int, workers=1, **kwargs) -> pd.DataFrame:
    "`build_patches` for every row, the cache filled by `workers` processes first (the cache's writes are atomic)."
    if workers > 1 and len(table) > workers:
        with ProcessPoolExecutor(workers, mp_context=get_context('spawn')) as ex:   # fork after torch has run can hang in OpenMP
            chunks = [table.iloc[i] for i in np.array_split(np.arange(len(table)), workers)]
            list(ex.map(partial(_cut, cache_dir=cache, size=size, **kwargs), chunks))
    return build_patches(table, cache, size=size, progress=False, **kwargs).table


def device_name(device) -> str:
    "The GPU's name, or the CPU's vector capability."
    import torch
    return torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU {torch.backends.cpu.get_cpu_capability()}'


def epochs_for_budget(dls, backbone, budget_s:float, max_epochs:int) -> tuple[int, float]:
    "Epochs that fit `budget_s`: a tenth and three tenths of an epoch timed through the same learner; their difference is the work, the rest start-up."
    from fastai.callback.training import ShortEpochCallback
    learn = roi_learner(dls, backbone, 'imagenet', seed=0, balanced=True, bf16='auto')
    learn.unfreeze()
    def part(pct):
        t0 = time.time(); learn.fit(1, 1e-5, cbs=ShortEpochCallback(pct=pct, short_valid=True)); return time.time() - t0
    with learn.no_bar(), learn.no_logging():
        part(0.05)                # warm-up: kernel selection and first batches (on an H200 a cold fifth took 11x a warm one)
        t1, t3 = part(0.1), part(0.3)
    work = max(t3 - t1, 0) / 0.2                              # one epoch's batches, training and validation
    epoch_s = work + max(t1 - 0.1 * work, 0)                  # plus one start-up of the loaders per epoch
    return int(np.clip(budget_s // epoch_s, 1, max_epochs)), epoch_s


def epoch_table(log:Path) -> pd.DataFrame:
    "fastai's epoch table (epoch, train_loss, valid_loss, auc, accuracy) from a run's log, progress bars and all."
    import re
    text = log.read_text(errors='replace').replace('\r', '\n')
    rows = re.findall(r'^(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\d\d:\d\d', text, flags=re.M)
    return pd.DataFrame([[int(r[0])] + [float(v) for v in r[1:]] for r in rows], columns=['epoch', 'train_loss', 'valid_loss', 'auc', 'accuracy'])


def from_checkpoint(dls, checkpoint:Path, folder:Path, backbone:str, trained_on:str) -> Path:
    "A stage-1 run stopped before its end (say by a GPU lease's time limit): its last epoch checkpoint saved as a model folder with its card."
    progress = json.loads((checkpoint / 'progress.json').read_text()); req = progress['request']
    learn = roi_learner(dls, backbone, 'imagenet', seed=0, balanced=req['balanced'], bf16=False)
    load_checkpoint(learn, checkpoint, optimiser=False)
    learn.config['history'].append(dict(epochs=req['epochs'], frozen_epochs=req['frozen_epochs'], lr=req['lr'], lr_mult=req['lr_mult'],
                                        n_train=len(dls.train_ds), classes=learn.config['classes']))
    log = epoch_table(checkpoint / 'run.log') if (checkpoint / 'run.log').exists() else None
    card = model_card(learn, SCREENING + ' (validated here on the files given)')
    card.update(epochs_done=progress['epochs_done'], stopped=f"stopped after {progress['epochs_done']} of {req['epochs']} {progress['phase']} epochs",
                trained_on=trained_on, valid_auc_by_epoch=None if log is None else log.auc.round(4).tolist(),
                valid_auc_by_epoch_note='on the GPU run\'s own copy of the images' if log is not None else None)
    learn.config.update(stage='intermediate', request=req, card=card)
    return save_model(learn, folder=folder)


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
    data = Path(a.data) if a.data else shared_data_dir()
    if data is None: raise SystemExit('shared/data not found: set MCAL_DATA or pass --data')
    work = Path(a.work); cache = work / 'cache'
    bb = get_backbone(a.backbone)
    device = resolve_device(a.device)
    scr, va = screening_split(data, a.quick)
    patches = cut_patches(scr, cache, a.size, a.workers)
    if len(patches) != len(scr): raise SystemExit(f'{len(scr) - len(patches)} screening640 images could not be read')
    loaders = lambda bs: patch_dataloaders(patches, va, bs=bs, vocab=['no cancer', 'cancer'], stats=bb.stats, seed=0, device=device)
    dls = loaders(a.bs)
    print(f'screening640: {len(patches) - len(va)} train / {len(va)} valid images, {patches.iloc[va].patient_id.nunique()} valid patients, '
          f'{a.size} px, {device_name(device)} ({time.time() - t_start:.0f} s)', flush=True)
    suffix = '_quick' if a.quick else ''
    RESULTS.mkdir(parents=True, exist_ok=True)
    folder, sug, epochs, epoch_s = work / 'stage1' / a.tag, {}, a.epochs, None
    if a.from_checkpoint:
        from_checkpoint(dls, Path(a.from_checkpoint), folder, bb.name, a.trained_on)
    if a.evaluate_only or a.from_checkpoint:
        if not (folder / 'config.json').exists(): raise SystemExit(f'{folder}: no model folder to evaluate')
        cfg = json.loads((folder / 'config.json').read_text()); card = cfg['card']
        if cfg['patch_size'] != a.size: raise SystemExit(f"{folder} was trained at {cfg['patch_size']} px: pass --size {cfg['patch_size']}")
        epochs, train_s = card.get('epochs_done') or card['schedule']['epochs'], card['wall_s'] or float('nan')
    else:
        if a.lr_find:
            t0 = time.time()
            sug = lr_find_run(loaders(16), bb.name, RESULTS / f'stage1_lr_find_{a.tag}.png', a.lr_find_it)
            print(f'lr_find ({time.time() - t0:.0f} s): {sug}', flush=True)
        if a.budget_s:
            epochs, epoch_s = epochs_for_budget(dls, bb.name, a.budget_s, a.epochs)
            print(f'probe: about {epoch_s:.1f} s an epoch, so {epochs} epochs fit {a.budget_s:.0f} s (at most {a.epochs})', flush=True)
        t0 = time.time()
        folder = stage1(dls, folder, bb.name, 'imagenet', epochs=epochs, lr=a.lr, frozen_epochs=a.frozen,
                        lr_mult=a.lr_mult, balanced=a.balanced, seed=0, quiet=a.quick, data=SCREENING, on_mismatch='retrain', bf16='auto')
        train_s = time.time() - t0
    val = patches.iloc[va]
    p = member_probs(folder, val.patch_path, tta=False)
    y = (val.label == 'cancer').values.astype(int)
    rows = [ci_row('screening640 validation: cancer vs no cancer', y, p, val.patient_id.values)]
    cfg_path = folder / 'config.json'                 # the card carries the validation AUC with its CI, for each copy of the images
    cfg = json.loads(cfg_path.read_text())
    if not a.evaluate_only:
        cfg['card'].update(valid_auc=rows[0]['auc'], valid_auc_ci=[rows[0]['ci_low'], rows[0]['ci_high']], valid_auc_ci_method='DeLong 95 %')
        cfg['card'].setdefault('trained_on', device_name(device))
    cfg['card'].setdefault('valid_auc_by_images', {})[a.images] = [rows[0]['auc'], rows[0]['ci_low'], rows[0]['ci_high']]
    atomic_write(cfg_path, json.dumps(cfg, indent=2))            # never a half-written card
    if a.external and not a.quick:                # external test: mini-MIAS whole images
        mias = mias_images(data)
        mp = cut_patches(mias, cache, a.size, a.workers, pixel_spacing_mm=0.2)
        pm = member_probs(folder, mp.patch_path, tta=False)
        rows.append(ci_row('mini-MIAS external: abnormal vs normal', mp.abnormal.values.astype(int), pm, mp.patient_id.values))
        rows.append(ci_row('mini-MIAS external: malignant vs rest', mp.malignant.values.astype(int), pm, mp.patient_id.values))
    for r in rows:
        r.update(tag=a.tag, images=a.images, backbone=bb.name, size_px=a.size, epochs=epochs, frozen_epochs=a.frozen, lr=a.lr, lr_mult=a.lr_mult,
                 balanced=a.balanced, bs=a.bs, n_train=len(patches) - len(va), train_wall_s=round(train_s, 1),
                 lr_find=json.dumps({k: round(v, 6) for k, v in sug.items()}) if sug else '', model=str(folder.relative_to(work)),
                 quick=a.quick, cpu=__import__('torch').backends.cpu.get_cpu_capability(),
                 device=cfg['card'].get('trained_on') or device_name(device), scored_on=f"{device_name(device)}, float32 predict",
                 probe_epoch_s=None if epoch_s is None else round(epoch_s, 1), budget_s=a.budget_s, command=' '.join(a.argv))
    out = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f'stage1_screening{suffix}.csv'
    if path.exists() and not a.quick:
        old = pd.read_csv(path)
        if 'images' not in old: old['images'] = 'original files'
        out = pd.concat([old[(old.tag != a.tag) | (old.images != a.images)], out], ignore_index=True)
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
    ap.add_argument('--data', default=None, help='the data folder (default: shared/data beside the checkout, or $MCAL_DATA)')
    ap.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    ap.add_argument('--workers', type=int, default=1, help='processes that cut the patches')
    ap.add_argument('--budget-s', type=float, default=None, help='train as many epochs (at most --epochs) as a timed probe says fit')
    ap.add_argument('--no-external', dest='external', action='store_false', help='skip the mini-MIAS external test')
    ap.add_argument('--evaluate-only', action='store_true', help='score the existing model folder <work>/stage1/<tag>, no training')
    ap.add_argument('--from-checkpoint', default=None, help='a stopped run\'s checkpoint folder (last.pth, progress.json, run.log) to save and score')
    ap.add_argument('--trained-on', default='unknown', help='where the checkpoint was trained (e.g. NVIDIA H200), for its card')
    ap.add_argument('--images', default='original files', help='what the images were, for the results (e.g. a re-encoded copy)')
    a = ap.parse_args()
    if a.quick: a.size, a.epochs, a.lr_find_it, a.tag = 64, 1, 10, 'quick'
    a.argv = ['python', 'benchmarks/stage1_screening.py'] + sys.argv[1:]
    RESULTS = Path(a.results)
    main(a)
