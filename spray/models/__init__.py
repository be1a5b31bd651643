"""Model architectures in plain torch (torchvision-like layouts) and model loading."""
from .loading import check_model, load_model, load_weights, model_fingerprint
from .zoo import VGG, BasicBlock, Bottleneck, ResNet, resnet18, resnet50, small_resnet, vgg11_bn, vgg16

__all__ = ["VGG", "ResNet", "BasicBlock", "Bottleneck", "vgg16", "vgg11_bn", "resnet18", "resnet50",
           "small_resnet", "check_model", "load_model", "load_weights", "model_fingerprint"]
