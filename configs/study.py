"""Grids of the study (python sample.py --workdir runs/x --study --study_config configs/study.py:quick).

  full:  every grid, 2,000 test examples (settings chosen on 500 validation examples), wall
         speed-ups as medians of 3 alternating runs (a GPU/TPU, or patience).
  quick: the same grids on 300 test and 300 validation examples.
  truth: quick with gamma=3 added (on text, EB between 11.9 and 18.9 NFE, so that a setting
         meets top-2's 16): the study against a known truth (text, Latin squares; mdm/exact.py).
  tiny:  a few settings on a handful of examples (tests).
Any field: --study_config.examples=500, --study_config.gammas="(0, 0.1, 1)".
"""

import ml_collections


def get_config(preset: str = "full"):
    c = ml_collections.ConfigDict()
    c.examples = 2000
    c.batch_size = 256
    c.proxies = ("confidence", "entropy", "margin")
    c.gammas = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
    c.ks = (1, 2, 4, 8, 16)
    c.taus = (0.99, 0.95, 0.9, 0.7, 0.5)
    c.steps = (4, 8, 16, 32, 64)  # schedule steps of the random-order and ancestral rules
    c.keep_fraction = 0.99  # "keeps top-1's accuracy": solve rate >= this fraction of top-1's
    c.validation_examples = 500  # where each rule's setting is chosen (the test examples report it)
    c.dependence_failures = 300  # the dependence test asks about the first this many failures per setting
    c.tightness_examples = 100  # examples whose 2- and 3-position steps get a chain-rule joint
    c.tightness_gamma = 1.0  # the EB setting examined for tightness (large enough for sets of 2-3)
    c.seed = 0
    c.timing_repeats = 3  # wall speed-ups: medians of this many alternating runs of a setting and top-1
    if preset in ("quick", "truth"):
        c.examples = 300
        c.validation_examples = 300
        c.batch_size = 64  # few slots: on a CPU, rows idle at the tail of a run cost as much as busy ones
        c.tightness_examples = 40
        c.timing_repeats = 1  # a CPU's sweep is long enough
    if preset == "truth":
        c.gammas = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
    elif preset == "tiny":
        c.examples = 6
        c.validation_examples = 6
        c.batch_size = 4
        c.proxies = ("confidence",)
        c.gammas = (0.0, 1.0)
        c.ks = (1, 4)
        c.taus = (0.9,)
        c.steps = (4,)
        c.tightness_examples = 3
        c.tightness_gamma = 4.0  # an untrained model is unsure: sets of two need a large budget
        c.timing_repeats = 2
    elif preset not in ("full", "quick"):
        raise ValueError(f"unknown preset {preset!r} for configs/study.py; expected full, quick, truth or tiny")
    return c
