"""Precomputed activations: the frozen body's pooled output for every cached image, computed once and
kept under data/interim, so a frozen-body stage trains only the head on these rows (the lesson's
`precompute=True`).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kit.device import batched_inference
from kit.files import save_array


def body_features(model: nn.Module, images: np.ndarray, batch_size: int, image_size: int) -> np.ndarray:
    """Pooled body activations (N x features, float32) of the images resized to `image_size`: the head's
    input, one forward pass per image."""
    model.eval()

    def pooled(batch: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(batch), pre_logits=True)

    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    features = batched_inference(
        pooled, images, batch_size, mean, std, progress="precompute features", image_size=image_size
    )
    return features.cpu().numpy()


def body_features_cached(
    model: nn.Module, images: np.ndarray, label: str, cache_dir: Path, batch_size: int, image_size: int
) -> np.ndarray:
    """body_features, saved under data/interim and keyed by the body's weights and the image cache file.

    Any change to the weights (another backbone, a fine-tuned body) or to the images gives a new key.
    """
    head = {id(p) for p in model.get_classifier().parameters()}
    digest = hashlib.sha1(f"{getattr(images, 'filename', len(images))}\0{image_size}".encode())
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in head:
            digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    path = cache_dir / f"features-{label}-{digest.hexdigest()[:16]}.npy"
    if path.exists():
        try:
            cached = np.load(path)
            reason = "" if cached.ndim == 2 and len(cached) == len(images) else f"shape {cached.shape}"
        except (ValueError, OSError, EOFError) as error:  # truncated, empty, not an array
            reason = f"{type(error).__name__}: {error}".replace("\n", " ")[:200]
        if not reason:
            return cached
        tqdm.write(f"{path}: damaged cache ({reason}); rebuilding it", file=sys.stderr)
    features = body_features(model, images, batch_size, image_size)
    save_array(path, features)
    return features
