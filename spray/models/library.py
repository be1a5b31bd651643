"""Classifiers from torchvision and timm, as the coverage benchmark and tests build them.

``TIMM_MODELS`` is spray's committed list of 100 widely used timm 1.0.31 architectures (every
major family: ResNets and their variants, EfficientNets and MobileNets, RegNets, DenseNet/DLA/DPN,
Inception, NFNets, ConvNeXt, hybrid and mobile transformers, ViT/DeiT/BEiT/EVA, Swin, MaxViT,
MLP-mixers); ``torchvision_models()`` are torchvision's classification constructors. Random
initialisation only: nothing downloads.
"""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

TIMM_MODELS: Tuple[str, ...] = tuple("""
resnet18 resnet26d resnet34 resnet50 resnet50d resnetv2_50 resnetv2_50x1_bit resnext50_32x4d seresnext50_32x4d
wide_resnet50_2 resnest14d resnest50d res2net50_26w_4s regnetx_002 regnety_002 regnety_008 regnetz_b16
efficientnet_b0 tf_efficientnet_b0 efficientnet_lite0 efficientnetv2_rw_t tf_efficientnetv2_b0 mobilenetv2_100
mobilenetv3_large_100 mobilenetv3_small_100 mobilenetv4_conv_small mobilenetv4_hybrid_medium mnasnet_100 fbnetc_100
ghostnet_100 rexnet_100 lcnet_050 semnasnet_100 densenet121 dla34 dpn68 hrnet_w18_small inception_v3 inception_v4
xception41 vgg11_bn cspresnet50 cspdarknet53 darknet53 dm_nfnet_f0 nf_resnet26 skresnet18 selecsls42b repvgg_a0
ecaresnet50d convnext_atto convnext_tiny convnextv2_atto efficientformer_l1 efficientformerv2_s0 edgenext_xx_small
mobilevit_xxs mobilevitv2_050 mobileone_s0 fastvit_t8 repvit_m1 vit_tiny_patch16_224 vit_small_patch16_224
vit_base_patch16_224 vit_base_patch32_224 deit_tiny_patch16_224 deit3_small_patch16_224 beit_base_patch16_224
eva02_tiny_patch14_224 swin_tiny_patch4_window7_224 swinv2_tiny_window8_256 cait_xxs24_224 crossvit_tiny_240
levit_128s pit_ti_224 coat_lite_tiny twins_svt_small pvt_v2_b0 poolformer_s12 poolformerv2_s12 convmixer_768_32
convit_tiny mixer_b16_224 resmlp_12_224 gmlp_ti16_224 maxvit_tiny_tf_224 coatnet_0_rw_224 tresnet_m hgnet_tiny
hgnetv2_b0 efficientvit_b0 efficientvit_m0 inception_next_tiny davit_tiny focalnet_tiny_srf gcvit_xxtiny
tiny_vit_5m_224 ese_vovnet19b_dw seresnet50 resnet101
""".split())

#: torchvision constructors that only take their training resolution
TORCHVISION_FIXED_SIZE = {"maxvit_t": 224, "vit_b_16": 224, "vit_b_32": 224, "vit_l_16": 224, "vit_l_32": 224,
                          "vit_h_14": 224}


def torchvision_models() -> List[str]:
    """torchvision's classification constructors (80 in torchvision 0.28)."""
    from ..testing import import_torchvision
    tv = import_torchvision()
    return sorted(tv.models.list_models(module=tv.models))


def build(library: str, name: str, num_classes: int = 1000) -> nn.Module:
    """A randomly initialised classifier: ``library`` is ``torchvision`` or ``timm``."""
    from ..testing import import_timm, import_torchvision
    if library == "torchvision":
        tv = import_torchvision()
        return tv.models.get_model(name, weights=None, num_classes=num_classes).eval()
    if library == "timm":
        return import_timm().create_model(name, pretrained=False, num_classes=num_classes).eval()
    raise ValueError(f"unknown model library {library!r}; choose torchvision or timm")


def input_size(library: str, name: str, model: nn.Module, small: int) -> int:
    """``small`` where the model takes any resolution, else its own (fixed-size transformers)."""
    if library == "torchvision":
        return TORCHVISION_FIXED_SIZE.get(name, small)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("fixed_input_size") or not _takes_any_size(model):
        return int(cfg.get("input_size", (3, 224, 224))[-1])
    return small


def _takes_any_size(model: nn.Module) -> bool:
    names = {type(m).__name__ for m in model.modules()}
    # window/patch layouts with learned position tables sized for the training resolution
    return not (names & {"PatchEmbed", "WindowAttention", "SwinTransformerBlock", "MaxxVitBlock", "Attention"})


def family(library: str, name: str, model: nn.Module) -> str:
    """The source module that defines the architecture (timm) or the name's stem (torchvision)."""
    if library == "timm":
        return type(model).__module__.rsplit(".", 1)[-1]
    stem = name.split("_")[0].rstrip("0123456789")
    return {"wide": "resnet", "resnext": "resnet", "inception": "inception"}.get(stem, stem)
