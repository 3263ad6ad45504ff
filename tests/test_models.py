"""Models: the offline efficientnet_lite0 weights are ImageNet's; layer groups, freezing, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from kit import models
from kit.errors import KitError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def imagenet_input(photo: np.ndarray) -> torch.Tensor:
    """A photo as the 1 x 3 x 224 x 224 float input: shorter side to 224, centre crop, ImageNet normalised."""
    image = Image.fromarray(photo)
    scale = 224 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224))) / 255.0
    normalised = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    return torch.tensor(normalised, dtype=torch.float32).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def imagenet_model():
    return models.imagenet_efficientnet_lite0().eval()


def test_offline_lite0_weights_recognise_imagenet_photos(imagenet_model):
    """Tensors mapped in the wrong order would still load (shapes match) but predict nonsense."""
    batch = torch.cat([imagenet_input(skimage_data.chelsea()), imagenet_input(skimage_data.coffee())])
    with torch.inference_mode():
        probabilities = imagenet_model(batch).softmax(1)
    assert probabilities.shape == (2, 1000)
    cat_class, coffee_class = probabilities.argmax(1).tolist()
    assert 281 <= cat_class <= 285  # tabby .. Egyptian cat; 285 (Egyptian cat) expected
    assert coffee_class == 967  # espresso
    assert probabilities[1, 967] > 0.5


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_the_ladders_offline_weights_recognise_imagenet_photos(name):
    """lite1 and lite2 load by name offline, like lite0: their packages' tensors mapped in order."""
    imagenet = models.imagenet_offline(name).eval()
    fine_tuned = models.create_model(name, 4, pretrained=True)  # the same body, a new head
    assert torch.equal(fine_tuned.conv_stem.weight, imagenet.conv_stem.weight)
    batch = torch.cat([imagenet_input(skimage_data.chelsea()), imagenet_input(skimage_data.coffee())])
    with torch.inference_mode():
        probabilities = imagenet(batch).softmax(1)
    cat_class, coffee_class = probabilities.argmax(1).tolist()
    assert 281 <= cat_class <= 285  # tabby .. Egyptian cat
    assert coffee_class == 967  # espresso


def test_create_model_keeps_the_imagenet_body_with_a_new_head(imagenet_model):
    model = models.create_model("efficientnet_lite0", 7, pretrained=True)
    assert model.get_classifier().out_features == 7
    imagenet_state = imagenet_model.state_dict()
    for name, tensor in model.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(tensor, imagenet_state[name]), name


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(KitError, match="unknown timm model 'no_such_net'"):
        models.create_model("no_such_net", 3, pretrained=False)


def test_model_names_with_a_weights_tag_are_accepted():
    model = models.create_model("test_resnet.r160_in1k", 3, pretrained=False)
    assert model.get_classifier().out_features == 3


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet"])
def test_layer_groups_cover_every_parameter_once(name):
    model = models.create_model(name, 4, pretrained=False)
    groups = models.layer_groups(model)
    assert len(groups) == 3 and all(groups)
    grouped_ids = [id(parameter) for group in groups for parameter in group]
    assert len(grouped_ids) == len(set(grouped_ids))
    assert set(grouped_ids) == {id(parameter) for parameter in model.parameters()}
    assert {id(p) for p in groups[2]} == {id(p) for p in model.get_classifier().parameters()}


def trainable(model) -> list[bool]:
    return [any(p.requires_grad for p in group) for group in models.layer_groups(model)]


def test_freeze_to():
    model = models.create_model("test_efficientnet", 4, pretrained=False)
    models.freeze_to(model, -1)
    head = {id(p) for p in model.get_classifier().parameters()}
    assert all(p.requires_grad == (id(p) in head) for p in model.parameters())
    models.freeze_to(model, 1)
    assert trainable(model) == [False, True, True]
    models.freeze_to(model, 0)
    assert all(p.requires_grad for p in model.parameters())


def batch_norm_statistics(model) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items() if "running_" in name}


def test_train_mode_keeps_frozen_batch_norm_statistics():
    torch.manual_seed(0)
    model = models.create_model("test_efficientnet", 4, pretrained=False)
    images = torch.randn(4, 3, 32, 32) * 3 + 1  # far from the initial running mean 0, variance 1
    models.freeze_to(model, -1)
    models.train_mode(model)
    assert model.training
    before = batch_norm_statistics(model)
    assert before
    model(images)
    after = batch_norm_statistics(model)
    assert all(torch.equal(before[name], after[name]) for name in before)

    models.freeze_to(model, 0)  # unfrozen: the statistics do move, so the check above can fail
    models.train_mode(model)
    model(images)
    moved = batch_norm_statistics(model)
    assert any(not torch.equal(before[name], moved[name]) for name in before)


META = {"model": "test_efficientnet", "classes": ["cat", "dog", "fox"]}


def test_save_and_load_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = models.create_model("test_efficientnet", 3, pretrained=False).eval()
    path = tmp_path / "fold-0" / "best.pt"
    models.save_weights(model, path, META)
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    torch.manual_seed(1)
    fresh = models.create_model("test_efficientnet", 3, pretrained=False).eval()
    images = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(model(images), fresh(images))
    models.load_weights(fresh, path, META)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    assert torch.equal(model(images), fresh(images))


@pytest.mark.parametrize(
    "expected, wrong",
    [
        ({**META, "model": "test_resnet"}, "model"),
        ({**META, "classes": ["cat", "dog", "wolf"]}, "classes"),
    ],
)
def test_load_weights_refuses_another_model_or_class_list(tmp_path, expected, wrong):
    model = models.create_model("test_efficientnet", 3, pretrained=False)
    path = tmp_path / "best.pt"
    models.save_weights(model, path, META)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(KitError) as raised:
        models.load_weights(model, path, expected)
    message = raised.value.message
    assert str(path) in message and wrong in message and repr(expected[wrong]) in message
    assert "\n" not in message
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
