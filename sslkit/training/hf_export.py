"""A model folder others can load, in the Hugging Face Hub's layout: ``config.json`` (how to build
the encoder), ``model.safetensors`` (its weights under the building library's own names) and a
``README.md`` model card (sslkit/training/model_card.py).

* ``sslkit.from_pretrained(FOLDER)`` builds the encoder from ``config.json`` and loads the weights
  strictly, in eval mode.
* ``encoder=timm``: the folder is timm's own (written by ``timm.models.save_for_hf``, with sslkit's
  recipe as an extra ``sslkit`` entry), so ``timm.create_model(NAME, pretrained=True,
  pretrained_cfg_overlay=dict(file=FOLDER/model.safetensors), num_classes=0)`` and
  ``timm.create_model("local-dir:FOLDER")`` load it, and after a push ``hf-hub:OWNER/NAME``.
* torchvision ResNets: the keys of ``torchvision.models.resnetNN`` with the stem and ``fc``
  replacements the recipe lists (sslkit/training/export.py), loaded with ``strict=True``.

``push_folder`` uploads a folder with huggingface_hub when it is installed and a token is set.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from sslkit.errors import CheckpointError, ConfigError
from sslkit.training.checkpoint import load_checkpoint, run_dir_of
from sslkit.training.export import build_encoder, count_features, encoder_state_and_recipe
from sslkit.training.model_card import model_card

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"


def export_model_folder(checkpoint: str | Path, out: str | Path | None = None,
                        licence: str = "other", repo_id: str | None = None) -> dict[str, Path]:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` for the encoder of
    ``checkpoint`` to ``out`` (default: ``hf/`` in the checkpoint's run dir); ``licence`` is the
    card's licence field, ``repo_id`` the Hub repository its loading example names."""
    from safetensors.torch import save_file

    path = Path(checkpoint).expanduser()
    ckpt = load_checkpoint(path)
    state, recipe = encoder_state_and_recipe(ckpt, str(path))
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    model = build_encoder(recipe)
    model.load_state_dict(state, strict=True)  # the keys are the building library's own
    recipe["num_features"] = count_features(model, recipe)
    folder = Path(out).expanduser() if out else run_dir_of(path) / "hf"
    folder.mkdir(parents=True, exist_ok=True)
    if recipe["build"]["library"] == "timm":
        from timm.models import save_for_hf

        # timm's own folder format: its config.json fields (architecture, model_args,
        # pretrained_cfg with this run's input size and normalisation) plus the recipe
        # (tag and licence are this export's, not those of timm's ImageNet weights for the name)
        save_for_hf(model, str(folder), safe_serialization=True, data_config=_timm_data_config(recipe),
                    model_config={"sslkit": recipe, "pretrained_cfg": {
                        "tag": "sslkit", "license": licence, "origin_url": None}})
    else:
        save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
        config = {"architecture": recipe["build"]["call"].rsplit(".", 1)[-1],
                  "library": recipe["build"]["library"], "num_features": recipe["num_features"],
                  "sslkit": recipe}
        (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    config = ckpt["sslkit"].get("config") or {}
    run_dir = run_dir_of(path)
    card = model_card(recipe, config, run_dir, load_code(recipe, folder, repo_id), licence)
    (folder / CARD).write_text(card, encoding="utf-8")
    return {"config": folder / CONFIG, "weights": folder / WEIGHTS, "card": folder / CARD}


def _timm_data_config(recipe: dict) -> dict:
    """timm's preprocessing fields for the images this encoder was trained on."""
    inputs = recipe["input"]
    size = int(inputs["image_size"] or 224)
    config = {"input_size": (int(inputs["in_chans"]), size, size), "interpolation": "bilinear",
              "crop_pct": 1.0}
    if inputs.get("mean") and inputs.get("std"):
        config.update(mean=tuple(inputs["mean"]), std=tuple(inputs["std"]))
    return config


def load_code(recipe: dict, folder: Path, repo_id: str | None = None) -> str:
    """The model card's loading example for this encoder."""
    where = (f'folder = huggingface_hub.snapshot_download("{repo_id}")' if repo_id
             else f'folder = "{folder}"  # or huggingface_hub.snapshot_download("OWNER/NAME")')
    lines = ["import huggingface_hub" if repo_id else "", where, "", "import sslkit",
             "encoder = sslkit.from_pretrained(folder)  # in eval mode"]
    build = recipe["build"]
    if build["library"] == "timm":
        kwargs = {k: v for k, v in build["kwargs"].items()
                  if k not in ("model_name", "pretrained", "num_classes")}
        extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        lines += ["", "import timm",
                  f'model = timm.create_model("{build["kwargs"]["model_name"]}", pretrained=True,',
                  f'                          pretrained_cfg_overlay=dict(file=f"{{folder}}/{WEIGHTS}"),',
                  f"                          num_classes=0{extra})",
                  f'# or: timm.create_model(f"local-dir:{{folder}}")']
    elif build["library"] == "torchvision":
        lines += ["", "import torch, torchvision", "from safetensors.torch import load_file",
                  f'model = {build["call"]}(weights=None)']
        for attr, spec in build.get("replace", {}).items():
            args = ", ".join([*map(repr, spec.get("args", [])),
                              *(f"{k}={v!r}" for k, v in spec.get("kwargs", {}).items())])
            lines.append(f"model.{attr} = torch.nn.{spec['module']}({args})")
        lines.append(f'model.load_state_dict(load_file(f"{{folder}}/{WEIGHTS}"), strict=True)')
    return "\n".join(line for line in lines if line is not None).lstrip("\n")


def from_pretrained(folder: str | Path) -> nn.Module:
    """The encoder of a model folder written by ``scripts/export.py format=hf``, its weights
    loaded strictly, in eval mode (features, no classifier)."""
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{folder} is not a model folder (no {CONFIG}); write one with "
                              "`python scripts/export.py checkpoint=PATH format=hf out=DIR`")
    try:
        recipe = json.loads(config_path.read_text()).get("sslkit")
    except ValueError as err:
        raise CheckpointError(f"{config_path} is not JSON ({err})") from None
    if not isinstance(recipe, dict) or "build" not in recipe:
        raise CheckpointError(f"{config_path} has no 'sslkit' recipe: not a folder written by "
                              "scripts/export.py format=hf")
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS}")
    model = build_encoder(recipe)
    model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    return model.eval()


def check_push(repo_id: str | None) -> None:
    """Refuse a push in one line, before anything is written: no huggingface_hub, no
    ``repo_id``, a malformed one, or no token (``hf auth login`` or ``HF_TOKEN``)."""
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError("push=true needs the huggingface_hub package: pip install "
                          "'sslkit[hub]'") from None
    if not repo_id:
        raise ConfigError("push=true needs repo_id=OWNER/NAME, the Hub repository to upload to")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"repo_id={repo_id!r} is not a Hub repository name "
                          f"({str(err).splitlines()[0]})") from None
    if huggingface_hub.get_token() is None:
        raise ConfigError("push=true needs a Hugging Face token: run `hf auth login` or set "
                          "HF_TOKEN, then export again")


def push_folder(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload ``folder`` to the Hub repository ``repo_id`` (created if missing); its URL."""
    check_push(repo_id)
    from huggingface_hub import HfApi

    api = HfApi(library_name="sslkit")
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder),
                      commit_message="Upload an sslkit encoder (scripts/export.py format=hf)")
    return str(repo)

