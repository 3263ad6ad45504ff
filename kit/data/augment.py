"""Training augmentation with albumentations: named presets plus a competition's own transforms.

Transforms work on cached uint8 HxWx3 arrays (whole photos, a little larger than the training size);
the photo presets crop them to the training size, and whatever size a batch leaves with is resized and
normalised later, on the device, for the whole batch.
"""

from __future__ import annotations

import inspect

import albumentations
import cv2
import numpy as np

from kit.config import Config
from kit.data.images import cache_side
from kit.errors import ConfigError

PADDING_MODES = {
    "reflect": cv2.BORDER_REFLECT_101,
    "constant": cv2.BORDER_CONSTANT,
    "edge": cv2.BORDER_REPLICATE,
}


SMALLEST_CROP = 0.35  # of the photo's area, when the cache is large enough to crop that small


def crop_scale(image_size: int, source_side: int) -> tuple[float, float]:
    """RandomResizedCrop's area range on a source_side square: never a region smaller than the output,
    so no crop is upsampled (a region of area a * source_side^2 is sqrt(a) * source_side wide)."""
    return max(SMALLEST_CROP, min(1.0, (image_size / source_side) ** 2)), 1.0


def _side_on(image_size: int, border: int, source_side: int) -> list:
    """Photos of animals and objects: the world is upright, left and right are alike."""
    return [
        albumentations.RandomResizedCrop(
            size=(image_size, image_size), scale=crop_scale(image_size, source_side), ratio=(0.75, 1.33)
        ),
        albumentations.HorizontalFlip(),
        albumentations.Affine(rotate=(-10, 10), border_mode=border, p=0.5),
        albumentations.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
    ]


def _top_down(image_size: int, border: int, source_side: int) -> list:
    """Satellite and microscope images: no up or down, so every flip and quarter turn is fair."""
    return [
        *_side_on(image_size, border, source_side),
        albumentations.VerticalFlip(),
        albumentations.RandomRotate90(),
    ]


PRESETS = {"side_on": _side_on, "top_down": _top_down, "none": lambda image_size, border, source_side: []}


def _custom(spec: dict, border: int, where: str):
    """One transform from the TOML, e.g. {name = "Affine", scale = [0.9, 1.1], p = 0.5}."""
    arguments = dict(spec)
    name = arguments.pop("name", None)
    transform_class = getattr(albumentations, str(name), None)
    if not isinstance(transform_class, type) or not issubclass(
        transform_class, albumentations.BasicTransform
    ):
        raise ConfigError(f"{where}: unknown albumentations transform {name!r}; see albumentations.ai/docs")
    # albumentations only warns about an unknown argument and drops it: refuse it, as for config keys.
    parameters = inspect.signature(transform_class.__init__).parameters
    takes_any = any(item.kind is inspect.Parameter.VAR_KEYWORD for item in parameters.values())
    unknown = [key for key in arguments if key not in parameters or key == "self"]
    if unknown and not takes_any:
        allowed = [key for key in parameters if key != "self"]
        raise ConfigError(
            f"{where}: {name} has no argument {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )
    if "border_mode" in parameters and "border_mode" not in arguments:
        arguments["border_mode"] = border
    arguments = {key: tuple(value) if isinstance(value, list) else value for key, value in arguments.items()}
    try:
        return transform_class(**arguments)
    except Exception as error:  # albumentations validates arguments with pydantic and raises its errors
        # pydantic's message is "N validation errors for InitSchema", then the field, then what is wrong.
        lines = [line.strip() for line in str(error).splitlines()[:3]] or [type(error).__name__]
        raise ConfigError(f"{where}: bad arguments for {name}: {' '.join(lines)}") from None


# Steps the kit takes itself after augmentation, so a user's copy would apply them twice (in training only).
DONE_BY_THE_KIT = {
    "Normalize": "the kit normalises each batch on the device with the model's own mean and std",
    "ToFloat": "the kit makes floats on the device, after augmentation",
    "FromFloat": "images arrive as uint8 and stay uint8 until the device",
    "ToTensorV2": "the kit makes tensors itself",
    "ToTensor3D": "the kit makes tensors itself",
}
ALLOWED_KINDS = (
    "allowed: pixel-level transforms (e.g. Blur, GaussNoise, HueSaturationValue, CLAHE, CoarseDropout) and "
    "spatial ones that keep the size (e.g. Affine, Perspective, GridDistortion, RandomResizedCrop to the "
    "stage's size); set sizes with train.image_size / stages.N.image_size"
)


def _check_contract(spec: dict, border: int, where: str, image_sizes: list[int]) -> None:
    """Refuse a transform that breaks what follows augmentation: uint8 HxWx3 in, the same out.

    The transform is tried once at each stage's size with p = 1 on a random image, so a rare one is
    caught too; what the kit does itself (normalising, tensors) is refused by name.
    """
    name = spec.get("name")
    if name in DONE_BY_THE_KIT:
        raise ConfigError(f"{where}: {name} is not allowed: {DONE_BY_THE_KIT[name]}; {ALLOWED_KINDS}")
    transform = _custom({**spec, "p": 1.0}, border, where)
    random = np.random.default_rng(0)
    for size in image_sizes:
        image = random.integers(0, 256, (size, size, 3), dtype=np.uint8)
        try:
            result = transform(image=image)["image"]
        except Exception as error:  # albumentations raises many types for inputs a transform cannot take
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConfigError(
                f"{where}: {name} fails on a {size}x{size} RGB uint8 image ({reason}); {ALLOWED_KINDS}"
            ) from None
        shape, kind = getattr(result, "shape", None), getattr(result, "dtype", type(result).__name__)
        if not isinstance(result, np.ndarray) or result.dtype != np.uint8 or result.shape != image.shape:
            shown = "x".join(map(str, shape)) if shape is not None else "?"
            raise ConfigError(
                f"{where}: {name} turns a {size}x{size}x3 uint8 image into {shown} {kind}; transforms "
                f"must keep the size, 3 channels and uint8; {ALLOWED_KINDS}"
            )


def train_transform(
    config: Config, image_size: int, source_side: int | None = None
) -> albumentations.Compose | None:
    """The training transform to this size from cached squares of `source_side` (default: the cache's
    side for this size), or None when there is nothing to do."""
    border = PADDING_MODES[config.augment.padding_mode]
    steps = PRESETS[config.augment.preset](image_size, border, source_side or cache_side(image_size))
    steps += [
        _custom(spec, border, f"{config.path}: augment.transforms") for spec in config.augment.transforms
    ]
    return albumentations.Compose(steps) if steps else None


def check_transforms(config: Config) -> None:
    """Fail before training starts, not mid-training, on an unknown transform or argument.

    The preset and padding mode are checked when the config loads (kit.config's Literal types); the
    transforms need albumentations, which commands that train import and others need not.
    """
    train_transform(config, config.train.image_size)
    border, where = PADDING_MODES[config.augment.padding_mode], f"{config.path}: augment.transforms"
    sizes = sorted({config.stage_image_size(stage) for stage in config.stages if stage.augment})
    for spec in config.augment.transforms:
        _check_contract(spec, border, where, sizes)
