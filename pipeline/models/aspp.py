"""The ASPP branch shared by the DeepLab-ASPP segmenters (VGG-16 and EfficientNet-Lite0)."""
from __future__ import annotations

from torch import nn

__all__ = ["ASPPBranch"]


class ASPPBranch(nn.Module):
    """One ASPP-L branch of DeepLab v2 (Chen et al., TPAMI 2017; docs/ALGORITHMS.md §4): fc6 a 3×3 convolution
    dilated by ``rate``, fc7 a 1×1 convolution (both ReLU + dropout), fc8 the 1×1 classifier;
    the branches' outputs are summed by the caller."""

    def __init__(self, cin: int, fc: int, num_classes: int, rate: int, dropout: float):
        super().__init__()
        self.fc6 = nn.Conv2d(cin, fc, 3, padding=rate, dilation=rate)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.fc8 = nn.Conv2d(fc, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)  # Caffe Dropout: element-wise

    def forward(self, x):
        x = self.drop(self.relu(self.fc6(x)))
        x = self.drop(self.relu(self.fc7(x)))
        return self.fc8(x)
