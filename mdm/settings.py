"""The sampler's settings and the names the flags take, with numpy and nothing else: sample.py
checks its flags with these before JAX starts, so a bad flag exits in a second.

mdm.sampling runs the settings (and re-exports these names); mdm.diffusion implements the
schedules named here.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

SCHEDULES = ("linear", "cosine", "polynomial")  # masking schedules alpha(t) (mdm.diffusion)

# Each rule and the one SamplerConfig field that sets how much it unmasks per step.
RULE_PARAMS = {"eb": "gamma", "topk": "k", "threshold": "tau", "random": "steps", "ancestral": "steps"}
RULES = tuple(RULE_PARAMS)
PROXIES = ("confidence", "margin", "entropy")


def ranking(rule: str, proxy: str) -> str:
    """How a rule orders positions: its proxy, or random for the random and ancestral rules."""
    return "random" if rule in ("random", "ancestral") else proxy


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    rule: str = "eb"
    proxy: str = "confidence"  # how masked positions are ranked (lowest expected error first)
    gamma: float = 0.1  # eb: budget on sum(H) - max(H) of the set unmasked in one step
    k: int = 1  # topk: positions per step
    tau: float = 0.9  # threshold: unmask every position with confidence >= tau (at least one)
    # random: a fixed count per step in random order (MaskGIT-like); ancestral: MDLM/MD4
    # ancestral sampling, each masked position unmasks with probability
    # (alpha_s - alpha_t) / (1 - alpha_t). Both take `steps` steps (per block with block_size).
    steps: int = 16
    schedule: str = "linear"  # ancestral: the masking schedule alpha(t) (the model's)
    temperature: float = 0.0  # 0: argmax (the paper's setting)
    top_p: float = 1.0
    block_size: int = 0  # > 0: semi-autoregressive blocks of answer positions (LLaDA)

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"unknown sampler rule {self.rule!r}; expected one of {', '.join(RULES)}")
        if self.proxy not in PROXIES:
            raise ValueError(f"unknown proxy {self.proxy!r}; expected one of {', '.join(PROXIES)}")
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, not {self.gamma}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, not {self.k}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau must be in (0, 1], not {self.tau}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, not {self.steps}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.block_size < 0:
            raise ValueError(f"block_size must be >= 0, not {self.block_size}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")

    @property
    def param(self) -> float:
        """The value of the rule's own parameter (RULE_PARAMS)."""
        return getattr(self, RULE_PARAMS[self.rule])

    def describe(self) -> str:
        return f"{self.rule} {RULE_PARAMS[self.rule]}={self.param:g} ({self.ranking})"

    @property
    def ranking(self) -> str:
        """How positions are ordered: the proxy, or random for the random and ancestral rules."""
        return ranking(self.rule, self.proxy)

    def structure(self) -> Structure:
        """What the compiled loop's code depends on; the numbers (knobs) are traced, so one
        compile serves every gamma, k, tau, steps, temperature and top_p of a rule and proxy."""
        return Structure(
            self.rule, self.proxy, self.schedule, self.block_size, greedy=self.temperature == 0, nucleus=self.top_p < 1
        )

    def knobs(self) -> dict[str, np.ndarray]:
        return {
            "gamma": np.float32(self.gamma),
            "k": np.int32(self.k),
            "tau": np.float32(self.tau),
            "steps": np.int32(self.steps),
            "temperature": np.float32(self.temperature or 1.0),
            "top_p": np.float32(self.top_p),
        }


class Structure(NamedTuple):
    """A SamplerConfig's static part (hashable): the rule, ranking and code paths."""

    rule: str
    proxy: str
    schedule: str
    block_size: int
    greedy: bool  # temperature 0: argmax
    nucleus: bool  # top_p < 1

    @property
    def ranking(self) -> str:
        return ranking(self.rule, self.proxy)
