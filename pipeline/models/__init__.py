"""Networks: VGG-16 classifier with pluggable pooling, DeepLab v2 (VGG-16, ASPP)."""
