"""Loss heads: ``head(z, **extras) -> LossOutput(loss, logs)`` (see each class for its paper)."""

from sslkit.losses.au import AlignUniform
from sslkit.losses.barlow_twins import BarlowTwins
from sslkit.losses.base import LossOutput
from sslkit.losses.byol import BYOL
from sslkit.losses.cacr import CACR
from sslkit.losses.cacr_moco import CACRMoCo
from sslkit.losses.cacr_mocov3 import CACRMoCoV3
from sslkit.losses.dcl import DebiasedContrastive, DecoupledContrastive
from sslkit.losses.dino import DINO
from sslkit.losses.dunif import DecoupledUniformity
from sslkit.losses.gca import GCAINCE, GCARINCE, GCAUOT, HSINCE, HSRINCE
from sslkit.losses.hcl import HardNegativeContrastive
from sslkit.losses.infonce import InfoNCE
from sslkit.losses.moco import MoCo
from sslkit.losses.mocov3 import MoCoV3
from sslkit.losses.nnclr import NNCLR
from sslkit.losses.rince import RobustInfoNCE
from sslkit.losses.simsiam import SimSiam
from sslkit.losses.supcon import SupCon
from sslkit.losses.swav import SwAV
from sslkit.losses.vicreg import VICReg

__all__ = [
    "AlignUniform", "BYOL", "BarlowTwins", "CACR", "CACRMoCo", "CACRMoCoV3", "DINO",
    "DebiasedContrastive", "DecoupledContrastive", "DecoupledUniformity", "GCAINCE", "GCARINCE",
    "GCAUOT", "HSINCE", "HSRINCE", "HardNegativeContrastive", "InfoNCE", "LossOutput", "MoCo",
    "MoCoV3", "NNCLR", "RobustInfoNCE", "SimSiam", "SupCon", "SwAV", "VICReg",
]
