"""Networks of the baseline trainers (training/baselines), keyed by the trainer name that the
checkpoints and results folders carry, so that prediction can rebuild them without the trainers."""
from __future__ import annotations

from diffoseg_auto.network.baselines.base import BaselineNetwork
from diffoseg_auto.network.baselines.consensus_unet import ConsensusUNet, STAPLEConsensusUNet
from diffoseg_auto.network.baselines.multihead_unet import MultiHeadUNet
from diffoseg_auto.network.baselines.prob_unet import ProbabilisticUNet

BASELINE_NETWORKS: dict[str, type[BaselineNetwork]] = {
    "ConsensusUNetTrainer": ConsensusUNet,
    "ConsensusUNetSTAPLETrainer": STAPLEConsensusUNet,
    "MultiHeadUNetTrainer": MultiHeadUNet,
    "ProbUNetTrainer": ProbabilisticUNet,
}


def baseline_network_class(trainer: str) -> type[BaselineNetwork] | None:
    """The network a baseline trainer trains, or None for DiffOSeg (and any other trainer)."""
    return BASELINE_NETWORKS.get(trainer)
