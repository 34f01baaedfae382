"""The model a training recipe trains, and the metadata its checkpoints carry."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..checkpoint import ModelInfo, error_summary
from ..cnn_cam import CNNCAM, create_cnn_cam
from ..errors import CheckpointError
from ..model import TSCAM, create_tscam
from ..recipes import TrainConfig
from ..scm import create_scm
from ..transforms import Preprocess


def build_training_model(config: TrainConfig, num_classes: int) -> TSCAM | CNNCAM:
    """TS-CAM (with ``model_family="cnn_cam"`` CNN CAM, with ``"scm"`` SCM) on ``config.arch`` with the
    recipe's drop path, starting from ImageNet weights from a local file, the hub, or none.

    ``tscam_core.build_model`` rebuilds a trained model from its checkpoint's ``ModelInfo`` instead. SCM
    needs nothing of the step: its model gives the calibrated logits in training mode.
    """
    settings = config.scm_settings()
    create = {"cnn_cam": create_cnn_cam, "scm": partial(create_scm, settings=settings)}.get(
        config.model_family, create_tscam)
    kwargs = dict(config.timm_kwargs(), drop_path_rate=config.drop_path)
    if config.pretrained_file:
        path = Path(config.pretrained_file)
        if not path.is_file():
            raise CheckpointError(f"{path}: --pretrained-file does not exist")
        try:
            return create(config.arch, num_classes, pretrained_file=str(path), **kwargs)
        except (OSError, RuntimeError) as error:
            raise CheckpointError(
                f"{path}: --pretrained-file cannot be loaded as the weights of --arch {config.arch} with these "
                f"options ({type(error).__name__}: {error_summary(error)})") from error
    try:
        return create(config.arch, num_classes, pretrained=config.pretrained, **kwargs)
    except (OSError, RuntimeError) as error:
        if not config.pretrained:
            raise
        raise CheckpointError(
            f"could not fetch the ImageNet weights of {config.arch} ({type(error).__name__}: {error}). "
            f"Offline, download them elsewhere and pass --pretrained-file PATH, or train from scratch with "
            f"--no-pretrained") from error


class ClassTokenClassifier(nn.Module):
    """A TS-CAM model's backbone read as a plain ViT classifier: a linear head on the class token.

    The paper starts from a DeiT trained on ImageNet by its class token, whose attention to the
    patches (A*) that classification shaped; TS-CAM's own head, the mean of S_c, never trains that
    row of the last block. A first stage through this head is this benchmark's ImageNet; the
    localization stage then drops it and trains TS-CAM's head on the same backbone.
    """

    def __init__(self, model: TSCAM, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.head = nn.Linear(model.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # timm's ViT head initialisation
        nn.init.zeros_(self.head.bias)

    def forward(self, images: Tensor) -> Tensor:
        tokens, _ = self.model.tokens(images)
        return self.head(tokens[:, 0])


def stage_network(config: TrainConfig, model: TSCAM | CNNCAM, num_classes: int) -> ClassTokenClassifier | None:
    """The module the first stage trains around ``model`` (None: the model itself), by ``--pretrain-head``."""
    if config.pretrain_head == "conv" or not config.pretrain_epochs:
        return None
    if not isinstance(model, TSCAM):
        raise ValueError("--pretrain-head token needs a ViT with a class token (--model-family tscam)")
    return ClassTokenClassifier(model, num_classes).to(next(model.parameters()).device)


def training_model_info(config: TrainConfig, class_names: list[str], preprocess: Preprocess, epochs_done: int,
                        steps_done: int, evaluation: dict[str, Any] | None = None) -> ModelInfo:
    """A training checkpoint's metadata: enough to rebuild the model, plus the recipe and how far it got."""
    return ModelInfo(
        arch=config.arch, num_classes=len(class_names), timm_kwargs=config.timm_kwargs(),
        class_names=class_names, preprocess=preprocess.to_config(),
        recipe={**config.to_dict(), "epochs_done": epochs_done, "steps_done": steps_done},
        evaluation=evaluation or {}, family=config.model_family,
        scm=config.scm_settings().to_dict() if config.model_family == "scm" else {},
    )
