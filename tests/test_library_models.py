"""Real model code, one model of each family of torchvision and timm, small inputs: explained with
finite relevance of the input's shape, the self-check passed, the model bitwise unchanged.

The whole table (torchvision's 80 constructors, the 100 timm models of spray.models.library) is
``benchmarks/bench_models.py``; this is its representative subset for CI (ViT/Swin/MaxViT built
for small inputs, torchvision's maxvit_t only takes 224 px: the benchmark covers it).
"""
import pytest
import torch

from spray.testing import informative_random_init, lrp_check, torchvision_available

pytestmark = pytest.mark.skipif(not torchvision_available(), reason="torchvision and timm are test extras")

# (library, name, input size, builder keyword arguments that shrink the model's fixed resolution)
MODELS = [
    ("torchvision", "alexnet", 64, {}),
    ("torchvision", "convnext_tiny", 32, {}),
    ("torchvision", "densenet121", 32, {}),
    ("torchvision", "efficientnet_b0", 32, {}),
    ("torchvision", "googlenet", 32, {}),
    ("torchvision", "inception_v3", 80, {}),
    ("torchvision", "mnasnet0_5", 32, {}),
    ("torchvision", "mobilenet_v2", 32, {}),
    ("torchvision", "mobilenet_v3_small", 32, {}),
    ("torchvision", "regnet_y_400mf", 32, {}),
    ("torchvision", "resnet18", 32, {}),
    ("torchvision", "shufflenet_v2_x0_5", 32, {}),
    ("torchvision", "squeezenet1_1", 32, {}),
    ("torchvision", "swin_v2_t", 32, {}),
    ("torchvision", "vgg11_bn", 32, {}),
    ("torchvision", "vit_b_16", 32, {"image_size": 32}),
    ("timm", "resnet18", 32, {}),
    ("timm", "resnetv2_50x1_bit", 32, {}),
    ("timm", "res2net50_26w_4s", 32, {}),
    ("timm", "efficientnet_b0", 32, {}),
    ("timm", "mobilenetv4_conv_small", 32, {}),
    ("timm", "ghostnet_100", 32, {}),
    ("timm", "dla34", 32, {}),
    ("timm", "nf_resnet26", 32, {}),
    ("timm", "skresnet18", 32, {}),
    ("timm", "convnext_atto", 32, {}),
    ("timm", "mobilevit_xxs", 64, {}),
    ("timm", "fastvit_t8", 64, {}),
    ("timm", "vit_tiny_patch16_224", 32, {"img_size": 32}),
    ("timm", "swin_tiny_patch4_window7_224", 32, {"img_size": 32, "window_size": 2}),
    ("timm", "levit_128s", 224, {}),
    ("timm", "maxvit_tiny_tf_224", 64, {"img_size": 64}),
]


def build(library, name, kwargs):
    from spray.testing import import_timm, import_torchvision
    if library == "torchvision":
        return import_torchvision().models.get_model(name, weights=None, num_classes=10, **kwargs)
    return import_timm().create_model(name, pretrained=False, num_classes=10, **kwargs)


@pytest.mark.parametrize("library, name, size, kwargs", MODELS, ids=[f"{m[0]}-{m[1]}" for m in MODELS])
def test_library_model_is_explained(library, name, size, kwargs):
    torch.manual_seed(0)
    model = build(library, name, kwargs).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, size, size)
    informative_random_init(model, x)
    row = lrp_check(model, x, "epsilon_plus_flat")
    assert row["ok"], row["error"]
    assert abs(row["conservation"]) < 10


def test_the_committed_timm_list_has_100_existing_models():
    from spray.models.library import TIMM_MODELS
    from spray.testing import import_timm
    assert len(set(TIMM_MODELS)) == len(TIMM_MODELS) == 100
    assert not set(TIMM_MODELS) - set(import_timm().list_models())
