"""Inference speed: ROIs per second through mcal's `predict` with PyTorch (eager, channels-last, inference mode) and with
ONNX Runtime (CPU provider) on the model folder's model.onnx, without CAMs, with flip TTA (4 views), and with a Grad-CAM
map per ROI (PyTorch in both rows: CAMs need gradients), side by side in one run on the same patches.

Weights are random (speed does not depend on them); each member is saved with `save_model`, which writes the ONNX file,
and loaded back with `load_model(engine=...)`, exactly as `mcal predict` does. Each timing is the best of `rounds`.
The two engines' probabilities are compared on every patch (max |difference| is reported).

    python benchmarks/inference.py            # EfficientNet-Lite0 and ResNeXt50 at 224 px, 256 patches, batch 64
    python benchmarks/inference.py --quick    # CI: Lite0 at 64 px, 16 patches
    python benchmarks/inference.py --device cuda --n 1024 --bs 128   # PyTorch rows on a GPU (ONNX Runtime stays on the CPU)
Writes benchmarks/results/inference.csv (inference_quick.csv in quick mode).
"""
import argparse, tempfile, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
for category in (FutureWarning, DeprecationWarning, UserWarning): warnings.filterwarnings('ignore', category=category)
from mcal.weights import roi_model, get_backbone
from mcal.inference import save_model, load_model, predict
from mcal.gradcam import CamExplainer

RESULTS = Path(__file__).parent / 'results'


def best_rate(fn, n, rounds):
    "ROIs per second of `fn()` over `n` ROIs, best of `rounds` after one warm-up call."
    fn(); best = 0.0
    for _ in range(rounds):
        t = time.perf_counter(); fn(); best = max(best, n / (time.perf_counter() - t))
    return best


def main(a):
    rng = np.random.default_rng(0)
    patches = rng.random((a.n, a.size, a.size), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in a.backbones:
            bb = get_backbone(name)
            cfg = dict(backbone=bb.name, classes=['benign', 'malignant'], stats=[list(bb.stats[0]), list(bb.stats[1])],
                       field_of_view_mm=25.6, patch_size=a.size)
            folder = save_model(roi_model(name, 2, None), cfg, Path(d) / name)
            torch_model, _ = load_model(folder, 'torch')
            torch_model.to(a.device)                       # `predict` and the CAMs follow the model's device
            onnx_model, _ = load_model(folder, 'onnx')
            diff = float(np.abs(predict(torch_model, patches, cfg['stats'], bs=a.bs) - predict(onnx_model, patches, cfg['stats'], bs=a.bs)).max())
            for mode in ('plain', 'tta', 'cams'):
                rates = {}
                for engine, model in (('pytorch', torch_model), ('onnxruntime', onnx_model)):
                    def run():
                        predict(model, patches, cfg['stats'], tta=mode == 'tta', bs=a.bs)
                        if mode == 'cams':
                            with CamExplainer(torch_model, cfg['stats'], 'gradcam', batch_size=a.bs) as ex: ex(patches)
                    rates[engine] = best_rate(run, a.n, a.rounds)
                rows.append(dict(backbone=name, size=a.size, mode=mode, n=a.n, bs=a.bs, pytorch_rois_s=round(rates['pytorch'], 1),
                                 onnxruntime_rois_s=round(rates['onnxruntime'], 1), speedup=round(rates['onnxruntime'] / rates['pytorch'], 2),
                                 max_abs_prob_diff=diff, threads=torch.get_num_threads(), cpu=torch.backends.cpu.get_cpu_capability(),
                                 pytorch_device=torch.cuda.get_device_name(a.device) if a.device.type == 'cuda' else 'cpu',
                                 torch=torch.__version__, onnxruntime=__import__('onnxruntime').__version__))
                print(rows[-1], flush=True)
    out = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.to_csv(RESULTS / f"inference{'_quick' if a.quick else '_gpu' if a.device.type == 'cuda' else ''}.csv", index=False)
    print(out[['backbone', 'mode', 'pytorch_rois_s', 'onnxruntime_rois_s', 'speedup', 'max_abs_prob_diff']].to_string(index=False))


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--results', default=str(RESULTS))
    ap.add_argument('--backbones', nargs='+', default=['tf_efficientnet_lite0', 'resnext50_32x4d'])
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--n', type=int, default=256)
    ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--device', default='cpu', help="where the PyTorch rows run: 'cpu', 'cuda', 'cuda:N' or 'auto'")
    a = ap.parse_args()
    from mcal.core import resolve_device
    a.device = resolve_device(a.device)
    if a.quick: a.backbones, a.size, a.n, a.bs, a.rounds = ['tf_efficientnet_lite0'], 64, 16, 16, 1
    RESULTS = Path(a.results)
    main(a)
