"""Attacks made of other attacks, for ``eval.robust.attacks`` (configs/eval/robust.yaml).

``sequence`` runs its attacks one after the other, each on the images every earlier one failed
to fool, and an image counts as robust only if every attack fails on it: AutoAttack's way of
combining attacks (Croce & Hein 2020), through torchattacks' own ``MultiAttack``. The
``apgd_ce_t`` entry is AutoAttack's first two attacks, APGD-CE then APGD-T (9 target classes on
10-class data), without FAB-T and Square.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from sslkit.errors import ConfigError


def sequence(model: nn.Module, attacks: Mapping, n_classes: int = 10, seed: int = 0):
    """torchattacks' ``MultiAttack`` of ``attacks`` (name -> attack factory, as the entries of
    ``eval.robust.attacks``) built on ``model`` in their config order; each gets the number of
    classes and the seed where it takes them (APGD's random start, APGD-T's targets); an entry
    set to null is left out. The result
    maps images to the first adversarial example that fools the model, the clean image where
    none does."""
    from torchattacks import MultiAttack

    from sslkit.eval.robust import build_attack

    chosen = {name: factory for name, factory in attacks.items() if factory is not None}
    if len(chosen) < 2:
        raise ConfigError(f"eval.robust: a sequence of attacks needs at least two, got {list(chosen)}; "
                          "run a single attack as an entry of its own")
    return MultiAttack([build_attack(factory, model, n_classes, seed) for factory in chosen.values()])
