"""Data-parallel training through fastai's DistributedTrainer (Accelerate's DDP): two CPU processes on the gloo backend.

`torchrun --nproc_per_node 2 --no-python mcal train ...` against the same `mcal train` in one process with the same global
batch (2 x 8 against 16). What must hold: both finish; the two processes write one set of files, the same set the single
process writes, with no temporary file or checkpoint left; the ensemble's test probabilities agree within 0.2. They are
not bitwise equal: each process normalises its own half-batch (no SyncBatchNorm on the CPU) and takes its own half of
every epoch's order, so the models see the same images in other groupings. Measured on this tiny study (resnet18 from
a random start, 32 px, 1 + 2 epochs): at most 0.12 apart.
"""
import os, shutil, subprocess, sys
from pathlib import Path
import pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ['train', '--data', str(ROOT / 'data_samples'), '--size', '32', '--backbone', 'resnet18', '--weights', 'none', '--stage1-epochs', '1',
        '--epochs', '2', '--frozen-epochs', '1', '--folds', '2', '--no-cams', '--quiet', '--device', 'cpu']


def _files(out:Path) -> set:
    return {str(p.relative_to(out)) for p in out.rglob('*') if p.is_file() and 'cache' not in p.relative_to(out).parts}


def _run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    assert r.returncode == 0, f'{cmd[:4]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    return r


@pytest.mark.skipif(shutil.which('mcal') is None, reason='the mcal console command is not installed')
def test_two_cpu_processes_train_like_one(tmp_path):
    mcal = shutil.which('mcal')
    _run([mcal, *ARGS, '--bs', '16', '--out', str(tmp_path / 'one')])
    _run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--no-python', mcal, *ARGS, '--bs', '8', '--out', str(tmp_path / 'two')],
         env=dict(OMP_NUM_THREADS='1'))
    one, two = _files(tmp_path / 'one'), _files(tmp_path / 'two')
    assert two == one, f'files differ: {sorted(one ^ two)}'                           # rank 0 wrote, once; rank 1 wrote nothing else
    assert not [f for f in two if '.tmp' in Path(f).suffixes or 'checkpoints' in Path(f).parts]   # nothing half-written, no checkpoint left
    assert sum(f.endswith('model.safetensors') for f in two) == 3                     # stage 1 and two members
    p1, p2 = (pd.read_csv(tmp_path / d / 'predictions.csv') for d in ('one', 'two'))
    m = p1.merge(p2, on='roi_id', suffixes=('_1', '_2'))
    assert len(m) == len(p1) == len(p2)
    test = m[m.set_1 == 'test']
    assert (test.prob_1 - test.prob_2).abs().max() <= 0.2
    # again into the same folder with another stage-2 schedule: stage 1 is reused, the members are deleted (by rank 0,
    # after every process has read them) and retrained
    _run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--no-python', mcal, *ARGS, '--bs', '8', '--epochs', '1',
          '--out', str(tmp_path / 'two')], env=dict(OMP_NUM_THREADS='1'))
    assert _files(tmp_path / 'two') == one
    import json
    cfg = json.loads((tmp_path / 'two' / 'models' / 'members' / 'r0f0s0' / 'config.json').read_text())
    assert cfg['request']['epochs'] == 1
