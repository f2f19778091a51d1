"""Baseline trainers of the same pipeline as DiffOSeg, chosen with ``-tr``:

- ``ConsensusUNetTrainer``: a deterministic U-Net on the raters' majority vote (Dice + CE);
- ``ConsensusUNetSTAPLETrainer``: the same U-Net on the raters' STAPLE consensus (evaluation/staple.py);
- ``MultiHeadUNetTrainer``: one shared U-Net, one output head per rater;
- ``ProbUNetTrainer``: the Probabilistic U-Net of Kohl et al. (NeurIPS 2018).

Their networks live in network/baselines, their prediction in inference/case_predictors.py (BaselineCasePredictor).
They share the plans, preprocessing, data loader, augmentation, splits, optimiser, EMA, time
budget (--max_minutes), checkpoint layout (Stage I's folder of results_layout, its final checkpoint
copied to the fold's final model) and the output folders of ``diffoseg_predict``.
"""
