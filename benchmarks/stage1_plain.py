"""Stage 1 against a plain PyTorch loop: the same screening640 patients, cached patches, network and epoch budget.

The plain loop is the anchor mcal's `stage1()` must meet (issue 20): about 40 lines of PyTorch, no fastai.
  AdamW (weight decay 0.01), one-cycle to 3e-4, batch 32, BCE with pos_weight = negatives / positives,
  timm's own classifier initialised to zero, horizontal flip + a small affine (±10°, ±6 % shift, 0.9-1.1 scale),
  channels_last, seed 0; the last epoch's model is scored.
Both arms train on the training patients of `stage1_screening.screening_split` (fold 0 of 5 held out: 542 images,
156 patients) and are scored on those validation patients, with DeLong and patient-bootstrap 95 % CIs. Each epoch
(training and the validation pass) is timed in the same process, one arm after the other.

    python benchmarks/stage1_plain.py                   # plain loop and stage1() at 224 px, 3 epochs (about 20 min on 2 cores)
    python benchmarks/stage1_plain.py --factors         # stage1() with one factor changed at a time (about 70 min)
    python benchmarks/stage1_plain.py --quick           # CI: 300 images at 64 px, one epoch each arm
Each epoch's time is split into its phases, timed in the loop itself (a callback for stage1()): loading and batch transforms,
forward/backward/optimiser step, and the validation pass. Not like for like in one respect: the plain loop reads all patches
into memory once before its first epoch (not timed), while stage1()'s loaders read the cached .npz files in every epoch.
Writes benchmarks/results/stage1_plain.csv (rows replaced per arm).
"""
import argparse, shutil, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
from torch import nn
for category in (FutureWarning, DeprecationWarning, UserWarning): warnings.filterwarnings('ignore', category=category)
from fastai.callback.core import Callback
from mcal.data import load_patch, patch_dataloaders, mammo_augment, grouped_cv
from mcal.datasets import shared_data_dir
from mcal.weights import get_backbone, imagenet_network
from mcal.learner import stage1
from mcal.ensemble import member_probs
from mcal.core import atomic_write
from mcal.metrics import auc, delong_paired
from stage1_screening import screening_split, cut_patches, ci_row, SCREENING

HERE = Path(__file__).parent
RESULTS = HERE / 'results'
BACKBONE = 'tf_efficientnet_lite0'


def plain_loop(train:pd.DataFrame, valid:pd.DataFrame, epochs=3, lr=3e-4, bs=32, wd=0.01, seed=0, on_epoch=None):
    "The plain recipe: validation probabilities of the last epoch, seconds per epoch (training + validation) and their phases."
    from torchvision.transforms import v2
    torch.manual_seed(seed)
    bb = get_backbone(BACKBONE)
    net = imagenet_network(bb); net.reset_classifier(1)
    nn.init.zeros_(net.get_classifier().weight); nn.init.zeros_(net.get_classifier().bias)
    net = net.to(memory_format=torch.channels_last)
    load = lambda rows: torch.from_numpy(np.stack([load_patch(p)[0] for p in rows.patch_path]))[:, None]   # N, 1, H, W in [0, 1]
    x, xv = load(train), load(valid)
    y = torch.tensor((train.label == 'cancer').values, dtype=torch.float32)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in bb.stats)
    norm = lambda b: ((b.expand(-1, 3, -1, -1) - mean) / std).contiguous(memory_format=torch.channels_last)
    aug = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomAffine(10, translate=(0.06, 0.06), scale=(0.9, 1.1))])
    steps = len(x) // bs
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    loss_func = nn.BCEWithLogitsLoss(pos_weight=(1 - y).sum() / y.sum())
    seconds, phases = [], []
    for epoch in range(epochs):
        t0 = time.time()
        net.train()
        order = torch.randperm(len(x))
        phase = dict(load_s=0., step_s=0., valid_s=0.)
        for i in range(steps):
            t = time.time()
            idx = order[i * bs:(i + 1) * bs]
            xb = norm(torch.stack([aug(im) for im in x[idx]]))
            phase['load_s'] += time.time() - t
            t = time.time()
            loss = loss_func(net(xb).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            phase['step_s'] += time.time() - t
        t = time.time()
        net.eval()
        with torch.no_grad(): p = torch.cat([net(norm(xv[i:i + 64])).squeeze(1).sigmoid() for i in range(0, len(xv), 64)]).numpy()
        phase['valid_s'] = time.time() - t
        seconds.append(time.time() - t0)
        phases.append(phase)
        if on_epoch: on_epoch(epoch, seconds[-1], p)
    return p, seconds, phases


class EpochTimes(Callback):
    "Seconds per training epoch and where they went: loading + batch transforms, forward/backward/step, validation."
    order = 100
    def __init__(self): self.seconds, self.phases = [], []
    def before_epoch(self): self.t0, self.trained = time.time(), False
    def before_train(self):
        self.trained, self.last = True, time.time()
        self.phases.append(dict(load_s=0., step_s=0., valid_s=0.))
    def before_batch(self):
        if self.training: self.phases[-1]['load_s'] += time.time() - self.last
        self.start = time.time()
    def after_batch(self):
        if self.training: self.phases[-1]['step_s'] += time.time() - self.start
        self.last = time.time()
    def before_validate(self): self.valid_start = time.time()
    def after_validate(self):
        if self.trained: self.phases[-1]['valid_s'] += time.time() - self.valid_start
    def after_epoch(self):
        if self.trained: self.seconds.append(time.time() - self.t0)
        self.trained = False                            # the model card's `get_preds` afterwards is not an epoch's validation


def mcal_stage1(patches:pd.DataFrame, va, folder:Path, epochs=3, augment=True, train_fraction=1.0, seed=0, **kwargs):
    "mcal's `stage1()` on the same rows (its defaults unless `kwargs` say otherwise): validation probabilities, epoch seconds and phases."
    bb = get_backbone(BACKBONE)
    if train_fraction < 1:                               # fewer training patients (whole patients), the validation rows unchanged
        tr = patches.drop(index=patches.index[va])
        keep = tr.iloc[grouped_cv(tr, n_splits=round(1 / (1 - train_fraction)), seed=0)[0][2]]
        patches = pd.concat([keep, patches.iloc[va]]).reset_index(drop=True); va = np.arange(len(keep), len(patches))
    dls = patch_dataloaders(patches, va, bs=32, vocab=['no cancer', 'cancer'], stats=bb.stats, seed=seed, device='cpu', augment=augment)
    if folder.exists(): shutil.rmtree(folder)            # this script's own model folder: always trained afresh, so timed
    timer = EpochTimes()
    stage1(dls, folder, bb.name, 'imagenet', epochs=epochs, seed=seed, quiet=True, data=SCREENING, bf16='auto', cbs=[timer], **kwargs)
    return member_probs(folder, patches.iloc[va].patch_path, tta=False), timer.seconds, timer.phases


WHOLE = mammo_augment(whole_mammogram=True)
OLD = 'fastai head (the old default)'
FACTORS = {   # name: (what changes, keyword arguments of `mcal_stage1`, the arm it is compared with)
    OLD: ("fastai's head (concat pool, two linear layers), stage1()'s default until issue 20", dict(head='fastai'), 'stage1() defaults'),
    'lr 6e-4, fastai head': ('peak 3e-4 (lr/2) as the plain loop, not 5e-4', dict(lr=6e-4, head='fastai'), OLD),
    'whole-mammogram augmentation, fastai head': ('mirror, rotation, zoom 0.9-1.1 with shift; no vertical flip, turns or lighting',
                                                  dict(augment=WHOLE, head='fastai'), OLD),
    'seed 1': ('nothing but the seed: how far one training run lands from another', dict(seed=1), 'stage1() defaults'),
    'unweighted loss': ('no class weights in the loss', dict(balanced=False), 'stage1() defaults'),
    '4 epochs': ('4 epochs, not 3', dict(epochs=4), 'stage1() defaults'),
    'the plain recipe in stage1()': ('lr 6e-4 and whole-mammogram augmentation as well', dict(lr=6e-4, augment=WHOLE), 'stage1() defaults'),
    'weight decay 0.1': ('AdamW weight decay 0.1, not 0.01', dict(wd=0.1), 'stage1() defaults'),
    '80 % of the training patients': ('a fifth of the training patients left out (what more images buy)', dict(train_fraction=0.8),
                                      'stage1() defaults'),
}


def result_row(arm, what, y, p, patients, seconds, phases, ref=None, **extra):
    "One results row: AUC with its CIs, epoch times and their phases, and the paired DeLong difference from the `ref` arm's."
    row = dict(arm=arm, changed=what, **ci_row('screening640 validation: cancer vs no cancer', y, p, patients))
    row.update(epochs=len(seconds), epoch_s=round(float(np.mean(seconds)), 1), first_epoch_s=round(seconds[0], 1))
    for k in ('load_s', 'step_s', 'valid_s'): row[f'epoch_{k}'] = round(float(np.mean([ph[k] for ph in phases])), 1)
    row['epoch_other_s'] = round(row['epoch_s'] - sum(row[f'epoch_{k}'] for k in ('load_s', 'step_s', 'valid_s')), 1)
    row.update(**extra)
    if ref is not None:
        d = delong_paired(y, p, ref)
        row.update(auc_difference=round(d['difference'], 3), diff_ci_low=round(d['ci_low'], 3), diff_ci_high=round(d['ci_high'], 3),
                   p_value=round(d['p'], 3))
    return row


def save_rows(rows, path:Path):
    "Replace this run's arms in `path`, keep the others."
    out = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path); out = pd.concat([old[~old.arm.isin(out.arm)], out], ignore_index=True)
    atomic_write(path, out.to_csv(index=False))
    return out


def main(a):
    data = shared_data_dir()
    if data is None: raise SystemExit('shared/data not found: set MCAL_DATA')
    work = Path(a.work)
    scr, va = screening_split(data, a.quick)
    patches = cut_patches(scr, work / 'cache', a.size, a.workers)
    val = patches.iloc[va]; train = patches.drop(index=patches.index[va])
    y, pat = (val.label == 'cancer').values.astype(int), val.patient_id.values
    cpu = torch.backends.cpu.get_cpu_capability()
    extra = dict(size_px=a.size, n_train=len(train), cpu=f'CPU {cpu}, {torch.get_num_threads()} threads', command=' '.join(a.argv))
    print(f'screening640: {len(train)} train / {len(val)} valid images, {a.size} px, CPU {cpu}', flush=True)
    suffix = '_quick' if a.quick else ''
    path = RESULTS / f'stage1_plain{suffix}.csv'
    arms = (a.arms.split(';') if a.arms else list(FACTORS)) if a.factors else ['stage1() defaults', 'plain loop']
    probs = lambda arm: work / f'probs_{arm.replace(" ", "_")}{suffix}.csv'
    for arm in arms:
        t0 = time.time()
        log = lambda e, s, p: print(f'  {arm} epoch {e}: {s:.0f} s, valid AUC {auc(y, p):.3f}', flush=True)
        ref = FACTORS[arm][2] if arm in FACTORS else 'stage1() defaults' if arm == 'plain loop' else None
        if ref is not None and not probs(ref).exists(): raise SystemExit(f'{arm} is compared with {ref}: run that arm first')
        if arm == 'plain loop':
            (p, sec, phases), what, ref = plain_loop(train, val, epochs=a.epochs, on_epoch=log), 'the plain PyTorch recipe', 'stage1() defaults'
        elif arm == 'stage1() defaults':
            (p, sec, phases), what, ref = mcal_stage1(patches, va, work / 'stage1_plain' / 'defaults', epochs=a.epochs), 'nothing', None
        else:
            what, kw, ref = FACTORS[arm]
            p, sec, phases = mcal_stage1(patches, va, work / 'stage1_plain' / arm.replace(' ', '_'), **{'epochs': a.epochs, **kw})
        row = result_row(arm, what, y, p, pat, sec, phases, None if ref is None else pd.read_csv(probs(ref)).p.values, **extra)
        row['compared_with'] = ref
        out = save_rows([row], path)
        pd.DataFrame(dict(arm=arm, roi=val.roi_id.values, patient_id=pat, y=y, p=p)).to_csv(probs(arm), index=False)
        print(f'{arm}: AUC {row["auc"]} [{row["ci_low"]}, {row["ci_high"]}], {row["epoch_s"]} s an epoch ({time.time() - t0:.0f} s in all)', flush=True)
    print(out.to_string(index=False))


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='CI: 300 images at 64 px, one epoch each arm')
    ap.add_argument('--factors', action='store_true', help="stage1() with one factor changed at a time, against its defaults")
    ap.add_argument('--arms', default=None, help='with --factors: the factors to run, names of FACTORS separated by ; (default all)')
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--work', default=str(HERE / 'work'))
    ap.add_argument('--results', default=str(RESULTS), help='where the CSVs go')
    ap.add_argument('--workers', type=int, default=2, help='processes that cut the patches')
    a = ap.parse_args()
    if a.quick: a.size, a.epochs = 64, 1
    a.argv = ['python', 'benchmarks/stage1_plain.py'] + sys.argv[1:]
    RESULTS = Path(a.results)
    main(a)
