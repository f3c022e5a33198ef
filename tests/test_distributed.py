"""Data-parallel training through fastai's DistributedTrainer (Accelerate's DDP): two CPU processes on the gloo backend.

`torchrun --nproc_per_node 2 --no-python mcal train ...` against the same `mcal train` in one process with the same global
batch (2 x 8 against 16). What must hold: both finish; the two processes write one set of files, the same set the single
process writes, with no temporary file or checkpoint left; the ensemble's test probabilities agree within 0.2. They are
not bitwise equal: each process normalises its own half-batch (no SyncBatchNorm on the CPU) and takes its own half of
every epoch's order, so the models see the same images in other groupings. Measured on this tiny study (resnet18 from
a random start, 32 px, 1 + 2 epochs): at most 0.12 apart.

Two spawned gloo processes also check the parts directly: `DataParallel` must leave both processes with the same weights
after a fit although each started from its own (the same fit without it leaves them apart, so the check can fail); and
in `main_first`, rank 0 writes a file that rank 1 then reads, and a failure in rank 0 must stop rank 1 with rank 0's
error rather than leave it at a barrier.
"""
import os, queue, shutil, socket, sys, traceback
from pathlib import Path
import pandas as pd, pytest, torch

from conftest import run_guarded, HANG_GUARD_S

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
AFTER_RESULT_S = 60   # a process that gave its result (or was declared hung) gets this long to exit before it is killed

ROOT = Path(__file__).resolve().parents[1]
ARGS = ['train', '--data', str(ROOT / 'data_samples'), '--size', '32', '--backbone', 'resnet18', '--weights', 'none', '--stage1-epochs', '1',
        '--epochs', '2', '--frozen-epochs', '1', '--folds', '2', '--no-cams', '--quiet', '--device', 'cpu']


def _files(out:Path) -> set:
    return {str(p.relative_to(out)) for p in out.rglob('*') if p.is_file() and 'cache' not in p.relative_to(out).parts}


def _run(cmd, env=None):
    r = run_guarded(cmd, env={**os.environ, **(env or {})})
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


def _join(rank, port):
    "Make this spawned process rank `rank` of two on the gloo backend."
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2', LOCAL_WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    from mcal.distributed import init_distributed
    init_distributed('cpu')


def _guarded(worker, rank, *args):
    "`worker`, whose error, if any, is its result: the test shows it at once instead of waiting for a result."
    try: worker(rank, *args)
    except Exception: args[-1].put((rank, traceback.format_exc()))


def _spawn_two(worker, *args) -> dict:
    "Run `worker(rank, port, *args, results)` in two spawned processes; what each put in `results`, by rank."
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    ctx = torch.multiprocessing.get_context('spawn')
    results = ctx.Queue()
    procs = [ctx.Process(target=_guarded, args=(worker, r, port, *args, results)) for r in (0, 1)]
    for p in procs: p.start()
    try: return dict(results.get(timeout=HANG_GUARD_S) for _ in procs)   # a rank left waiting at a barrier gives no result: a hang, a failure
    except queue.Empty: pytest.fail(f'hung: {worker.__name__} gave no result from both processes in {HANG_GUARD_S} s')
    finally:
        for p in procs: p.join(AFTER_RESULT_S); p.kill()


def _fit_worker(rank, port, results):
    _join(rank, port)
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from mcal.distributed import DataParallel
    g = torch.Generator().manual_seed(0)                 # the same data in both processes; each takes its half of every batch
    x = torch.randn(64, 4, generator=g); ds = list(zip(x, (x[:, 0] > 0).long()))
    weights = {}
    for name, cbs in (('data-parallel', DataParallel('cpu')), ('alone', None)):
        torch.manual_seed(rank)                          # each process starts from other weights
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        learn = Learner(DataLoaders.from_dsets(ds, ds, bs=8, device='cpu', num_workers=0), model, loss_func=CrossEntropyLossFlat(), cbs=cbs)
        with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
        weights[name] = [p.detach().numpy().copy() for p in learn.model.parameters()]
        assert learn.model is model                      # the DDP wrapper is gone after the fit
    results.put((rank, weights))


def test_data_parallel_keeps_processes_in_step():
    import numpy as np
    got = _spawn_two(_fit_worker)
    same = lambda name: all(np.array_equal(a, b) for a, b in zip(got[0][name], got[1][name]))
    assert same('data-parallel')                         # DDP broadcast rank 0's start and averaged every gradient
    assert not same('alone')                             # without it the two drift apart: the check above can fail


def _main_first_worker(rank, port, folder, results):
    _join(rank, port)
    from mcal.distributed import main_first
    def cut():                                           # rank 0 writes; the others find what it wrote
        if rank == 0: (Path(folder) / 'patches.txt').write_text('cut by rank 0')
        return (Path(folder) / 'patches.txt').read_text()
    def fail():
        if rank == 0: raise ValueError('a bad study')
        return 'rank 1 went on'
    out = [main_first(cut)]
    try: out.append(main_first(fail))
    except Exception as e: out.append(f'{type(e).__name__}: {e}')
    results.put((rank, out))


def test_main_first_orders_processes_and_stops_all_on_failure(tmp_path):
    got = _spawn_two(_main_first_worker, str(tmp_path))
    assert got[0] == ['cut by rank 0', 'ValueError: a bad study']
    assert got[1] == ['cut by rank 0', 'MCalError: process 1 stops: the main process failed (ValueError: a bad study)']
