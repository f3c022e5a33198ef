"""Training throughput on this CPU: mcal's fastai loop vs a raw PyTorch loop, and bf16 autocast vs float32.

Same model, input size, batch size, optimiser (AdamW) and loss in every arm, measured side by side in
one run. The raw loop reads the same patches, already in memory as one tensor; mcal's loop reads them
through `patch_dataloaders` (augmentation off, so both do the same arithmetic).
Each pair is run `rounds` times, alternating, and the best rate of each is kept.
Writes benchmarks/results/throughput.csv and prints a table.

    python benchmarks/throughput.py [--backbones resnext50_32x4d resnet18] [--sizes 224 128] [--steps 8]
"""
import argparse, platform, tempfile, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastai.vision.all import Callback
from mcal.synth import default_study
from mcal.datasets import load_csv, usable
from mcal.data import build_patches, patch_dataloaders, load_patch
from mcal.weights import get_backbone, roi_model
from mcal.callbacks import cpu_supports_bf16
from mcal.learner import roi_learner

for category in (FutureWarning, DeprecationWarning): warnings.filterwarnings('ignore', category=category)   # libraries' deprecation notices; mcal's own warnings stay visible
OUT = Path(__file__).parent / 'results' / 'throughput.csv'


class Clock(Callback):
    "Time training batches after `warmup` of them."
    order = 99
    def __init__(self, warmup): self.warmup, self.t0, self.n = warmup, None, 0
    def before_batch(self):
        if self.training and self.iter == self.warmup: self.t0 = time.perf_counter()
    def after_batch(self):
        if self.training and self.iter >= self.warmup: self.n += self.learn.xb[0].shape[0]; self.t1 = time.perf_counter()
    @property
    def rate(self): return self.n / (self.t1 - self.t0)


def tables(size, steps, bs, cache):
    good = usable(load_csv(default_study() / 'labels.csv'))
    t = build_patches(good, cache, size=size, progress=False).table
    reps = int(np.ceil((steps + 2) * bs / len(t)))
    train = pd.concat([t.assign(patient_id=t.patient_id + f'_{i}') for i in range(reps)], ignore_index=True).iloc[:(steps + 2) * bs]
    valid = t.iloc[:bs].assign(patient_id=lambda d: 'v' + d.patient_id)
    return pd.concat([train, valid], ignore_index=True), list(range(len(train), len(train) + len(valid)))


def mcal_rate(table, valid_idx, backbone, bf16, bs, warmup):
    dls = patch_dataloaders(table, valid_idx, bs=bs, augment=False, stats=get_backbone(backbone).stats, seed=0)
    clock = Clock(warmup)
    learn = roi_learner(dls, backbone, weights=None, bf16=bf16, cbs=[clock], seed=0)
    learn.unfreeze(); learn.recorder.silent = True
    with learn.no_bar(): learn.fit(1, 1e-4)
    return clock.rate


def raw_rate(table, valid_idx, backbone, bf16, bs, warmup):
    n_train = valid_idx[0]
    mean, std = (torch.tensor(s)[None, :, None, None] for s in get_backbone(backbone).stats)
    x_all = torch.from_numpy(np.stack([load_patch(p)[0] for p in table.patch_path[:n_train]]))[:, None].expand(-1, 3, -1, -1)
    y_all = torch.tensor((table.label[:n_train] == 'malignant').values.astype(np.int64))
    torch.manual_seed(0)
    model = roi_model(backbone, 2, weights=None).train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    n, t0 = 0, None
    for i in range(n_train // bs):
        if i == warmup: t0 = time.perf_counter()
        x = ((x_all[i * bs:(i + 1) * bs] - mean) / std).contiguous(memory_format=torch.channels_last); y = y_all[i * bs:(i + 1) * bs]
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): pred = model(x)
        loss = loss_fn(pred.float(), y); loss.backward(); opt.step(); opt.zero_grad()
        if i >= warmup: n += bs
    return n / (time.perf_counter() - t0)


def main(backbones, sizes, steps, bs=32, warmup=2, rounds=2):
    bf16_options = [False, True] if cpu_supports_bf16() else [False]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for size in sizes:
            table, valid_idx = tables(size, steps, bs, cache)
            for backbone in backbones:
                for bf16 in bf16_options:
                    for rnd in range(rounds):     # alternate the loops, best of `rounds`: noise only ever slows a run down
                        for loop, fn in (('raw', raw_rate), ('mcal', mcal_rate)):
                            rate = fn(table, valid_idx, backbone, bf16, bs, warmup)
                            rows.append(dict(backbone=backbone, size=size, batch=bs, precision='bf16' if bf16 else 'fp32', loop=loop,
                                             round=rnd, images_per_s=round(rate, 2), timed_batches=steps))
                            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    wide = df.pivot_table(index=['backbone', 'size', 'precision'], columns='loop', values='images_per_s', aggfunc='max').reset_index()
    wide['mcal_vs_raw'] = (wide['mcal'] / wide['raw']).round(3)
    if 'bf16' in set(df.precision):
        fp = wide[wide.precision == 'fp32'].set_index(['backbone', 'size'])['mcal']
        bf = wide[wide.precision == 'bf16'].set_index(['backbone', 'size'])['mcal']
        wide = wide.merge((bf / fp).round(3).rename('mcal_bf16_vs_fp32').reset_index(), on=['backbone', 'size'])
    wide['cpu'] = platform.processor() or platform.machine()
    wide['threads'] = torch.get_num_threads(); wide['bf16_native'] = cpu_supports_bf16(); wide['torch'] = torch.__version__
    OUT.parent.mkdir(exist_ok=True); wide.to_csv(OUT, index=False)
    print(wide.to_string(index=False)); print(f'written: {OUT}')


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--backbones', nargs='+', default=['resnext50_32x4d', 'tf_efficientnet_lite0'])
    ap.add_argument('--sizes', nargs='+', type=int, default=[128, 224])
    ap.add_argument('--steps', type=int, default=8)
    a = ap.parse_args()
    main(a.backbones, a.sizes, a.steps)
