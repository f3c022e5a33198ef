"""Stage 1 against a plain PyTorch loop: the same screening640 patients, cached patches, network and epoch budget.

The plain loop is the anchor mcal's `stage1()` must meet (issue 20): about 40 lines of PyTorch, no fastai.
  AdamW (weight decay 0.01), one-cycle to 3e-4, batch 32, BCE with pos_weight = negatives / positives,
  timm's own classifier initialised to zero, horizontal flip + a small affine (±10°, ±6 % shift, 0.9-1.1 scale),
  channels_last, seed 0; the last epoch's model is scored.
Both arms train on the training patients of `stage1_screening.screening_split` (fold 0 of 5 held out: 542 images,
156 patients) and are scored on those validation patients, with DeLong and patient-bootstrap 95 % CIs. Each epoch
(training and the validation pass) is timed in the same process, the arms taking turns: after each of stage1()'s epochs
one of the plain loop's (a callback runs it, on a random stream of its own), so a slow spell of a shared machine falls
on both arms alike.

    python benchmarks/stage1_plain.py                   # plain loop and stage1() at 224 px, 3 epochs (about 20 min on 2 cores)
    python benchmarks/stage1_plain.py --factors         # stage1() with one factor changed at a time (about 70 min)
    python benchmarks/stage1_plain.py --quick           # CI: 300 images at 64 px, one epoch each arm, and a small loop check
    python benchmarks/stage1_plain.py --loop-check      # the step time of fastai's fit against a bare loop (about 2 min)
    python benchmarks/stage1_plain.py --recompare       # the paired differences against the reference arms' latest runs
Each epoch's time is split into its phases, timed in the loop itself (a callback for stage1()): loading, batch transforms
(augmentation and normalisation), forward/backward/optimiser step, and the validation pass. Not like for like in one respect: the plain loop reads all patches
into memory once before its first epoch (not timed), while stage1()'s loaders read the cached .npz files in every epoch.
--loop-check times one thing only: one model and optimiser stepped by fastai's `fit` and by a bare loop over the same
256 images in batches of 32, taking turns (benchmarks/results/stage1_loop_check.csv). --recompare redoes each row's
paired difference against its reference arm's latest probabilities (after the reference arm was run again).
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


def plain_epochs(train:pd.DataFrame, valid:pd.DataFrame, epochs=3, lr=3e-4, bs=32, wd=0.01, seed=0):
    "The plain recipe, one epoch per `next`: (seconds, phases, validation probabilities), on a random stream of its own."
    from torchvision.transforms import v2
    with torch.random.fork_rng(devices=[]):              # whatever runs between its epochs leaves its random numbers alone
        torch.manual_seed(seed)
        bb = get_backbone(BACKBONE)
        net = imagenet_network(bb); net.reset_classifier(1)
        nn.init.zeros_(net.get_classifier().weight); nn.init.zeros_(net.get_classifier().bias)
        net = net.to(memory_format=torch.channels_last)
        rng = torch.get_rng_state()
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
    for epoch in range(epochs):
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(rng)
            t0 = time.time()
            net.train()
            order = torch.randperm(len(x))
            phase = dict(load_s=0., transforms_s=0., step_s=0., valid_s=0.)
            for i in range(steps):
                t = time.time()
                idx = order[i * bs:(i + 1) * bs]
                images = x[idx]
                phase['load_s'] += time.time() - t
                t = time.time()
                xb = norm(torch.stack([aug(im) for im in images]))
                phase['transforms_s'] += time.time() - t
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
            rng = torch.get_rng_state()
        yield time.time() - t0, phase, p


class Interleave(Callback):
    "After each epoch `stage1()` trains, one epoch of another loop: both arms meet the machine's slow and quiet spells alike."
    order = 101                                           # after `EpochTimes` has closed the epoch's clock
    def __init__(self, other_loop): self.other_loop, self.results = other_loop, []
    def after_epoch(self):
        step = next(self.other_loop, None)
        if step is not None: self.results.append(step)


class Timed:
    "A batch-transform pipeline that adds the seconds it spends to `seconds` (every other attribute is the pipeline's)."
    def __init__(self, pipeline): self.pipeline, self.seconds = pipeline, 0.
    def __call__(self, b):
        t = time.time(); out = self.pipeline(b); self.seconds += time.time() - t
        return out
    def __getattr__(self, name):
        if name == 'pipeline': raise AttributeError(name)   # not yet set (a copy being built): no endless lookup
        return getattr(self.pipeline, name)


class EpochTimes(Callback):
    "Seconds per training epoch and where they went: loading, batch transforms, forward/backward/step, validation."
    order = 100
    def __init__(self, transforms:Timed=None): self.seconds, self.phases, self.transforms = [], [], transforms
    def before_epoch(self): self.t0, self.trained = time.time(), False
    def before_train(self):
        self.trained, self.last = True, time.time()
        self.phases.append(dict(load_s=0., transforms_s=0., step_s=0., valid_s=0.))
        if self.transforms: self.transforms.seconds = 0.
    def before_batch(self):
        if self.training: self.phases[-1]['load_s'] += time.time() - self.last
        self.start = time.time()
    def after_batch(self):
        if self.training: self.phases[-1]['step_s'] += time.time() - self.start
        self.last = time.time()
    def before_validate(self):
        self.valid_start = time.time()
        if self.trained and self.transforms:          # the training batches' transforms, out of the time between batches
            self.phases[-1]['transforms_s'] = self.transforms.seconds
            self.phases[-1]['load_s'] -= self.transforms.seconds
    def after_validate(self):
        if self.trained: self.phases[-1]['valid_s'] += time.time() - self.valid_start
    def after_epoch(self):
        if self.trained: self.seconds.append(time.time() - self.t0)
        self.trained = False                            # the model card's `get_preds` afterwards is not an epoch's validation


def mcal_stage1(patches:pd.DataFrame, va, folder:Path, epochs=3, augment=True, train_fraction=1.0, seed=0, cbs=(), **kwargs):
    "mcal's `stage1()` on the same rows (its defaults unless `kwargs` say otherwise): validation probabilities, epoch seconds and phases."
    bb = get_backbone(BACKBONE)
    if train_fraction < 1:                               # fewer training patients (whole patients), the validation rows unchanged
        tr = patches.drop(index=patches.index[va])
        keep = tr.iloc[grouped_cv(tr, n_splits=round(1 / (1 - train_fraction)), seed=0)[0][2]]
        patches = pd.concat([keep, patches.iloc[va]]).reset_index(drop=True); va = np.arange(len(keep), len(patches))
    dls = patch_dataloaders(patches, va, bs=32, vocab=['no cancer', 'cancer'], stats=bb.stats, seed=seed, device='cpu', augment=augment)
    if folder.exists(): shutil.rmtree(folder)            # this script's own model folder: always trained afresh, so timed
    dls.train.after_batch = Timed(dls.train.after_batch)
    timer = EpochTimes(dls.train.after_batch)
    stage1(dls, folder, bb.name, 'imagenet', epochs=epochs, seed=seed, quiet=True, data=SCREENING, bf16='auto', cbs=[timer, *cbs], **kwargs)
    return member_probs(folder, patches.iloc[va].patch_path, tta=False), timer.seconds, timer.phases


def loop_check(patches:pd.DataFrame, va, n_batches=8, rounds=2, lr=1e-5) -> pd.DataFrame:
    "Seconds per training step of one model and optimiser in fastai's `fit` and in a bare loop, taking turns (round 0 warms up)."
    from mcal.learner import roi_learner
    bb = get_backbone(BACKBONE)
    tr = patches.drop(index=patches.index[va]).sample(n_batches * 32, random_state=0)
    sub = pd.concat([tr, patches.iloc[va[:64]]]).reset_index(drop=True)
    dls = patch_dataloaders(sub, np.arange(len(tr), len(sub)), bs=32, vocab=['no cancer', 'cancer'], stats=bb.stats, seed=0, device='cpu')
    learn = roi_learner(dls, bb.name, 'imagenet', seed=0, balanced=True, head='linear', bf16=False)
    learn.unfreeze(); learn.create_opt(); learn.model.to(memory_format=torch.channels_last)
    batches = [tuple(t.as_subclass(torch.Tensor) for t in b) for b in dls.train]     # the bare loop's: drawn and augmented once
    # fastai's `fit` draws and augments its own batches of the same images: same shapes, so the same work a step
    def bare():
        learn.model.train(); seconds = []
        for xb, yb in batches:
            t = time.time()
            loss = learn.loss_func(learn.model(xb), yb); loss.backward(); learn.opt.step(); learn.opt.zero_grad()
            seconds.append(time.time() - t)
        return seconds
    def fastai():
        timer = StepTimes()
        with learn.no_bar(), learn.no_logging(): learn.fit(1, lr, cbs=[timer])
        return timer.seconds
    rows = []
    for r in range(rounds):
        for loop, run in (('bare loop', bare), ("fastai's fit", fastai)):
            s = run()
            rows.append(dict(round=r, loop=loop, batches=len(s), median_step_s=round(float(np.median(s)), 3),
                             mean_step_s=round(float(np.mean(s)), 3), warm=r > 0))
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


class StepTimes(Callback):
    "Seconds of each training step (forward, loss, backward, optimiser), from fastai's own batch events."
    order = 100
    def before_fit(self): self.seconds = []
    def before_batch(self): self.t = time.time()
    def after_batch(self):
        if self.training: self.seconds.append(time.time() - self.t)


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


PHASES = ('load_s', 'transforms_s', 'step_s', 'valid_s')

def result_row(arm, what, y, p, patients, seconds, phases, ref=None, **extra):
    "One results row: AUC with its CIs, epoch times and their phases, and the paired DeLong difference from the `ref` arm's."
    row = dict(arm=arm, changed=what, **ci_row('screening640 validation: cancer vs no cancer', y, p, patients))
    row.update(epochs=len(seconds), epoch_s=round(float(np.mean(seconds)), 1), first_epoch_s=round(seconds[0], 1))
    for k in PHASES: row[f'epoch_{k}'] = round(float(np.mean([ph[k] for ph in phases])), 1)
    row['epoch_other_s'] = round(row['epoch_s'] - sum(row[f'epoch_{k}'] for k in PHASES), 1)
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


def cpu_model() -> str:
    "The CPU's model name (Linux), so rows timed on different machines stay apart."
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return 'CPU'


def main(a):
    data = shared_data_dir()
    if data is None: raise SystemExit('shared/data not found: set MCAL_DATA')
    work = Path(a.work)
    scr, va = screening_split(data, a.quick)
    patches = cut_patches(scr, work / 'cache', a.size, a.workers)
    val = patches.iloc[va]; train = patches.drop(index=patches.index[va])
    y, pat = (val.label == 'cancer').values.astype(int), val.patient_id.values
    cpu = torch.backends.cpu.get_cpu_capability()
    extra = dict(size_px=a.size, n_train=len(train), cpu=f'{cpu_model()} ({cpu}), {torch.get_num_threads()} threads', command=' '.join(a.argv))
    print(f'screening640: {len(train)} train / {len(val)} valid images, {a.size} px, CPU {cpu}', flush=True)
    suffix = '_quick' if a.quick else ''
    if a.loop_check or a.quick:                          # --quick checks both parts
        out = loop_check(patches, va, n_batches=2 if a.quick else 8).assign(size_px=a.size, cpu=extra['cpu'], command=extra['command'])
        atomic_write(RESULTS / f'stage1_loop_check{suffix}.csv', out.to_csv(index=False))
        if a.loop_check: return
    path = RESULTS / f'stage1_plain{suffix}.csv'
    probs = lambda arm: work / f'probs_{arm.replace(" ", "_")}{suffix}.csv'
    def record(arm, what, ref, p, sec, phases, **more):
        row = result_row(arm, what, y, p, pat, sec, phases, None if ref is None else pd.read_csv(probs(ref)).p.values, **extra, **more)
        row['compared_with'] = ref
        out = save_rows([row], path)
        pd.DataFrame(dict(arm=arm, roi=val.roi_id.values, patient_id=pat, y=y, p=p)).to_csv(probs(arm), index=False)
        print(f'{arm}: AUC {row["auc"]} [{row["ci_low"]}, {row["ci_high"]}], {row["epoch_s"]} s an epoch', flush=True)
        return out
    if a.recompare:                                      # each row against its reference arm's latest probabilities
        out = pd.read_csv(path)
        for i, row in out[out.compared_with.notna()].iterrows():
            mine, ref = probs(row.arm), probs(row.compared_with)
            if not (mine.exists() and ref.exists()): print(f'{row.arm}: probabilities missing, left as it is'); continue
            d = delong_paired(y, pd.read_csv(mine).p.values, pd.read_csv(ref).p.values)
            out.loc[i, ['auc_difference', 'diff_ci_low', 'diff_ci_high', 'p_value']] = [round(d[k], 3) for k in ('difference', 'ci_low', 'ci_high', 'p')]
        atomic_write(path, out.to_csv(index=False))
        print(out[['arm', 'compared_with', 'auc', 'auc_difference', 'diff_ci_low', 'diff_ci_high', 'p_value']].to_string(index=False))
        return
    if not a.factors:                                    # the anchor: the plain loop's epochs run between stage1()'s
        plain = Interleave(plain_epochs(train, val, epochs=a.epochs))
        p, sec, phases = mcal_stage1(patches, va, work / 'stage1_plain' / 'defaults', epochs=a.epochs, cbs=[plain])
        timing = "interleaved in one run: each of stage1()'s epochs, then one of the plain loop's"
        record('stage1() defaults', 'nothing', None, p, sec, phases, timing=timing)
        if len(plain.results) != a.epochs: raise SystemExit(f'the plain loop ran {len(plain.results)} of {a.epochs} epochs beside stage1()')
        sec_p, phases_p, p_p = zip(*plain.results)
        out = record('plain loop', 'the plain PyTorch recipe', 'stage1() defaults', p_p[-1], list(sec_p), list(phases_p), timing=timing)
        print(out.to_string(index=False))
        return
    for arm in (a.arms.split(';') if a.arms else list(FACTORS)):
        what, kw, ref = FACTORS[arm]
        if not probs(ref).exists(): raise SystemExit(f'{arm} is compared with {ref}: run that arm first')
        p, sec, phases = mcal_stage1(patches, va, work / 'stage1_plain' / arm.replace(' ', '_'), **{'epochs': a.epochs, **kw})
        out = record(arm, what, ref, p, sec, phases)
    print(out.to_string(index=False))


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='CI: 300 images at 64 px, one epoch each arm, and a small loop check')
    ap.add_argument('--factors', action='store_true', help="stage1() with one factor changed at a time, against its defaults")
    ap.add_argument('--arms', default=None, help='with --factors: the factors to run, names of FACTORS separated by ; (default all)')
    ap.add_argument('--recompare', action='store_true', help="only: each row's paired difference against its reference arm's latest run")
    ap.add_argument('--loop-check', action='store_true', help="only: the same batches' step time in fastai's fit and in a bare loop")
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
