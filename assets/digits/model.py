"""The digits pipeline's own torch module (``training.factory`` in defs.yaml).

A small convolutional network for the 8x8 images: the 64 pixel columns are reshaped
into one grey channel inside the module, so the exported graph takes the rows as they
arrive. It returns raw class scores; the trainer adds the softmax and the
cross-entropy loss of the multiclass task, and trains on a GPU (mixed precision)
when the step runs on one.
"""

from __future__ import annotations

from typing import Any


def small_cnn(n_features: int, n_outputs: int, channels: int = 16) -> Any:
    import torch

    if n_features != 64:
        raise ValueError(f"small_cnn takes 8x8 images (64 pixel columns), got {n_features}")

    class SmallCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(1, channels, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.Conv2d(channels, 2 * channels, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            )
            self.head = torch.nn.Sequential(
                torch.nn.Flatten(),
                torch.nn.Dropout(0.2),
                torch.nn.Linear(2 * channels * 16, n_outputs),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            images = (x / 16.0).reshape(-1, 1, 8, 8)  # intensities 0..16 -> 0..1
            return self.head(self.features(images))  # type: ignore[no-any-return]

    return SmallCNN()
