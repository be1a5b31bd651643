"""Model architectures in plain torch (torchvision-like layouts) and model loading."""
from .zoo import VGG, BasicBlock, Bottleneck, ResNet, small_resnet, vgg11_bn, vgg16, resnet18, resnet50

__all__ = ["VGG", "ResNet", "BasicBlock", "Bottleneck", "vgg16", "vgg11_bn", "resnet18", "resnet50",
           "small_resnet"]
