"""The README.md of an exported model folder (a Hugging Face model card): what was trained (loss
head, encoder, data, epochs, lr, the recipe and overrides of the run), the run's evaluation
numbers with the split each was measured on, how to load the weights, the head's paper and a
licence field. Everything comes from the checkpoint and the files of its run dir
(``.hydra/overrides.yaml``, ``summary.json``, ``eval/*.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sslkit.training.lr_scaling import scale

# the paper of each loss head class: authors, title, venue, arXiv id (docs/losses.md)
CACR_PAPER = ("H. Zheng, X. Chen, J. Yao, H. Yang, C. Li, Y. Zhang, H. Zhang, I. Tsang, J. Zhou, M. Zhou",
              "Contrastive Attraction and Contrastive Repulsion for Representation Learning",
              "TMLR 2023", "2105.03746")
GCA_PAPER = ("Z. Chen, C.-H. Lin, R. Liu, J. Xiao, E. Dyer",
             "Your contrastive learning problem is secretly a distribution alignment problem",
             "NeurIPS 2024", "2502.20141")
PAPERS = {
    "AlignUniform": ("T. Wang, P. Isola", "Understanding Contrastive Representation Learning "
                     "through Alignment and Uniformity on the Hypersphere", "ICML 2020", "2005.10242"),
    "BarlowTwins": ("J. Zbontar, L. Jing, I. Misra, Y. LeCun, S. Deny", "Barlow Twins: "
                    "Self-Supervised Learning via Redundancy Reduction", "ICML 2021", "2103.03230"),
    "BYOL": ("J.-B. Grill et al.", "Bootstrap Your Own Latent: A New Approach to Self-Supervised "
             "Learning", "NeurIPS 2020", "2006.07733"),
    "CACR": CACR_PAPER, "CACRMoCo": CACR_PAPER, "CACRMoCoV3": CACR_PAPER,
    "DebiasedContrastive": ("C.-Y. Chuang, J. Robinson, L. Yen-Chen, A. Torralba, S. Jegelka",
                            "Debiased Contrastive Learning", "NeurIPS 2020", "2007.00224"),
    "DecoupledContrastive": ("C.-H. Yeh, C.-Y. Hong, Y.-C. Hsu, T.-L. Liu, Y. Chen, Y. LeCun",
                             "Decoupled Contrastive Learning", "ECCV 2022", "2110.06848"),
    "DINO": ("M. Caron et al.", "Emerging Properties in Self-Supervised Vision Transformers",
             "ICCV 2021", "2104.14294"),
    "DecoupledUniformity": ("B. Dufumier, C. A. Barbano, R. Louiset, E. Duchesnay, P. Gori",
                            "Integrating Prior Knowledge in Contrastive Learning with Kernel",
                            "ICML 2023", "2206.01646"),
    "HSINCE": GCA_PAPER, "GCAINCE": GCA_PAPER, "HSRINCE": GCA_PAPER, "GCARINCE": GCA_PAPER,
    "GCAUOT": GCA_PAPER,
    "HardNegativeContrastive": ("J. Robinson, C.-Y. Chuang, S. Sra, S. Jegelka", "Contrastive "
                                "Learning with Hard Negative Samples", "ICLR 2021", "2010.04592"),
    "InfoNCE": ("T. Chen, S. Kornblith, M. Norouzi, G. Hinton", "A Simple Framework for "
                "Contrastive Learning of Visual Representations", "ICML 2020", "2002.05709"),
    "MoCo": ("X. Chen, H. Fan, R. Girshick, K. He", "Improved Baselines with Momentum "
             "Contrastive Learning", "arXiv 2020", "2003.04297"),
    "MoCoV3": ("X. Chen, S. Xie, K. He", "An Empirical Study of Training Self-Supervised Vision "
               "Transformers", "ICCV 2021", "2104.02057"),
    "NNCLR": ("D. Dwibedi, Y. Aytar, J. Tompson, P. Sermanet, A. Zisserman", "With a Little Help "
              "from My Friends: Nearest-Neighbor Contrastive Learning of Visual Representations",
              "ICCV 2021", "2104.14548"),
    "RobustInfoNCE": ("C.-Y. Chuang, R. D. Hjelm, X. Wang, V. Vineet, N. Joshi, A. Torralba, "
                      "S. Jegelka, Y. Song", "Robust Contrastive Learning against Noisy Views",
                      "CVPR 2022", "2201.04309"),
    "SimSiam": ("X. Chen, K. He", "Exploring Simple Siamese Representation Learning", "CVPR 2021",
                "2011.10566"),
    "SupCon": ("P. Khosla et al.", "Supervised Contrastive Learning", "NeurIPS 2020", "2004.11362"),
    "SwAV": ("M. Caron et al.", "Unsupervised Learning of Visual Features by Contrasting Cluster "
             "Assignments", "NeurIPS 2020", "2006.09882"),
    "VICReg": ("A. Bardes, J. Ponce, Y. LeCun", "VICReg: Variance-Invariance-Covariance "
               "Regularization for Self-Supervised Learning", "ICLR 2022", "2105.04906"),
}

# summary.json's counts and bookkeeping under val/ or test/ that are not evaluation numbers
NOT_SCORES = ("val/images",)


def citation(loss_target: str | None) -> str:
    """The head's paper as one reference line with its arXiv link (or why there is none)."""
    name = (loss_target or "").rsplit(".", 1)[-1]
    if name not in PAPERS:
        return f"No paper on record for `{loss_target}`."
    authors, title, venue, arxiv = PAPERS[name]
    return f"{authors}. *{title}*. {venue}. [arXiv:{arxiv}](https://arxiv.org/abs/{arxiv})"


def run_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides the run was started with (``.hydra/overrides.yaml``)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def evaluation_rows(run_dir: Path) -> list[tuple[str, str, float, str]]:
    """(metric, split, value, file) of the run's evaluation numbers: summary.json's ``val/...``
    and ``test/...`` entries, then the accuracies of each ``eval/NAME.json`` (the test split,
    except the validation split's own file and keys that name it)."""
    rows = []
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        for key, value in summary.items():
            split = "validation" if key.startswith("val/") else "test" if key.startswith("test/") else None
            if split and key not in NOT_SCORES and _number(value):
                rows.append((key, split, float(value), "summary.json"))
    for path in sorted((run_dir / "eval").glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key, value in result.items() if isinstance(result, dict) else ():
            if not _number(value) or not any(w in key for w in ("top1", "top5", "acc")):
                continue
            if key.startswith("train"):
                continue
            split = "validation" if path.stem == "validation" or key.startswith("val") else "test"
            rows.append((f"eval/{path.stem}/{key}", split, float(value), f"eval/{path.name}"))
    return rows


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def model_card(recipe: dict, config: dict, run_dir: Path | None, load_code: str,
               licence: str = "other") -> str:
    """The README.md text of a model folder."""
    build, trained, inputs = recipe["build"], recipe["trained"], recipe["input"]
    loss = config.get("loss") or {}
    data = config.get("data") or {}
    optim = config.get("optim") or {}
    head = str(loss.get("_target_", "unknown"))
    head_name = head.rsplit(".", 1)[-1]
    data_name = str(data.get("_target_", "unknown")).rsplit(".", 1)[-1]
    architecture = build["kwargs"].get("model_name") or build["call"].rsplit(".", 1)[-1]
    library = "timm" if build["library"] == "timm" else "sslkit"
    tags = ["sslkit", "self-supervised-learning", "image-feature-extraction", head_name]
    lines = ["---", f"license: {licence}", f"library_name: {library}",
             "pipeline_tag: image-feature-extraction", "tags:", *[f"- {t}" for t in tags], "---", "",
             f"# {architecture} encoder pretrained with {head_name} on {data_name}", "",
             f"A self-supervised image encoder trained with sslkit: the `{head_name}` loss head on "
             f"`{data_name}` images. It outputs {recipe['num_features']}-d features (no "
             "classifier).", "", "## Training", "", "| | |", "|---|---|",
             f"| loss head | `{head}` |",
             f"| encoder | `{build['call']}` ({build['library']}), {recipe['num_features']} features |",
             f"| data | `{data.get('_target_')}`, {inputs['in_chans']} channel(s), "
             f"{inputs['image_size']} px, root `{data.get('root')}` |"]
    epoch, step = trained.get("epoch"), trained.get("global_step")
    max_epochs = (config.get("trainer") or {}).get("max_epochs")
    if epoch is not None:
        lines.append(f"| epochs | checkpoint written in epoch {int(epoch) + 1} of {max_epochs}, "
                     f"after {step} optimiser steps |")
    opt = optim.get("optimizer") or {}
    if data.get("batch_size") is not None and opt.get("lr") is not None:
        rule, base = optim.get("lr_scaling") or "none", int(optim.get("base_batch_size") or 256)
        batch = int(data["batch_size"]) * int((config.get("trainer") or {}).get("accumulate_grad_batches") or 1)
        lr = scale(float(opt["lr"]), rule, batch, base)
        how = "as given" if rule == "none" else f"{opt['lr']} scaled {rule} from batch {base}"
        lines.append(f"| batch, optimiser | global batch {data['batch_size']}, "
                     f"`{str(opt.get('_target_', '?')).rsplit('.', 1)[-1]}` peak lr {lr:.6g} "
                     f"(`optim.lr_scaling={rule}`: {how}) |")
    overrides = run_overrides(run_dir) if run_dir is not None else None
    if overrides is not None:
        shown = " ".join(overrides) if overrides else "(none: the defaults of configs/train.yaml)"
        lines.append(f"| recipe and overrides | `python train.py {shown}` |")
    lines.append(f"| checkpoint | `{trained.get('checkpoint')}` |")
    lines += ["", "## Evaluation", ""]
    rows = evaluation_rows(run_dir) if run_dir is not None else []
    if rows:
        lines += ["Numbers of the run that trained this checkpoint (its run dir's `summary.json` and "
                  "`eval/*.json`). The validation split is held out of the training images "
                  "(`data.val_size`) and is what selection reads; the test split selected nothing.",
                  "", "| metric | split | value | from |", "|---|---|---|---|"]
        lines += [f"| `{m}` | {split} | {v:.4f} | `{src}` |" for m, split, v, src in rows]
    else:
        lines.append("No evaluation numbers were found beside the checkpoint (no summary.json or "
                     "eval/*.json in its run dir).")
    mean, std = inputs.get("mean"), inputs.get("std")
    lines += ["", "## Use", "", f"Inputs: {inputs['in_chans']} channel(s), {inputs['image_size']} px; "
              f"pixels / 255, then normalised with mean {mean} and std {std} per channel.", "",
              "```python", load_code.strip(), "```", "",
              "`config.json` says how to build the network (its `sslkit` entry; for timm also "
              "timm's own fields), `model.safetensors` holds the weights under the building "
              "library's parameter names.", "",
              "## Citation", "", f"Loss head: {citation(head)}", "", "## Licence", "",
              f"`{licence}` (set when exporting with `license=...`). The weights were learnt from "
              f"`{data_name}`; the terms of that data apply to them.", ""]
    return "\n".join(lines)
