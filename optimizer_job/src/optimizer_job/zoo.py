"""A small model zoo: plain ``nn.Module`` factories that model.json can name.

A model directory records ``"factory": "optimizer_job.zoo:mlp"`` and the keyword
arguments, so any importable function returning an ``nn.Module`` works the same way
(user factories included). Every model here keeps its ``nn.Dropout`` modules even at
p=0 so a retrain stage can turn dropout on without changing the architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

MLP_FACTORY = "optimizer_job.zoo:mlp"
SMALL_CNN_FACTORY = "optimizer_job.zoo:small_cnn"
TABULAR_RESNET_FACTORY = "optimizer_job.zoo:tabular_resnet"


def mlp(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = (128, 64),
    dropout: float = 0.0,
) -> nn.Module:
    """Linear-ReLU-Dropout blocks and a linear head."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Three conv-BatchNorm-ReLU blocks, global average pooling and an MLP head.

    Plain sequential structure on purpose: structured pruning can drop channels of any
    conv with its BatchNorm and the next layer's inputs, and the result loads back by
    shape alone. Default widths at 1x32x32 cost about 114 MMACs per image.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        channels: Sequence[int] = (64, 128, 128),
        hidden: int = 128,
        dropout: float = 0.0,
        pool_after: Sequence[int] = (1,),
    ) -> None:
        super().__init__()
        self.image_size = image_size
        blocks: list[nn.Module] = []
        width = in_channels
        for index, size in enumerate(channels):
            blocks += [
                nn.Conv2d(width, size, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(size),
                nn.ReLU(),
            ]
            if index in pool_after:
                blocks.append(nn.MaxPool2d(2))
            width = size
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.pool(self.features(x)))
        return out


def small_cnn(
    in_channels: int,
    num_classes: int,
    image_size: int,
    channels: Sequence[int] = (64, 128, 128),
    hidden: int = 128,
    dropout: float = 0.0,
    pool_after: Sequence[int] = (1,),
) -> nn.Module:
    return SmallCNN(in_channels, num_classes, image_size, channels, hidden, dropout, pool_after)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.body = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.body(self.norm(x))
        return out


def tabular_resnet(
    in_features: int,
    num_classes: int,
    width: int = 128,
    hidden: int = 256,
    blocks: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """A pre-norm residual MLP for tabular data (Gorishniy et al., 2021, simplified)."""
    return nn.Sequential(
        nn.Linear(in_features, width),
        *[_ResidualBlock(width, hidden, dropout) for _ in range(blocks)],
        nn.LayerNorm(width),
        nn.ReLU(),
        nn.Linear(width, num_classes),
    )


def set_dropout(model: nn.Module, probability: float) -> int:
    """Set p of every Dropout module; returns how many there are (0: the model has none)."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = probability
            count += 1
    return count
