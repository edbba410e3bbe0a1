"""A plain numpy reference of the sampler rules: one example, unjitted, from PAPER.md.

It shares nothing with mdm/sampling.py but the model function it calls.
"""

import numpy as np


def stats(logits_LxV):
    z = logits_LxV.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    top = np.sort(p, -1)[:, ::-1]
    return {"entropy": np.maximum(entropy, 0), "confidence": top[:, 0], "margin": top[:, 0] - top[:, 1]}


def ranking(s, eligible, proxy):
    """Eligible positions, lowest expected error first (ties: lower position first)."""
    positions = [int(i) for i in np.flatnonzero(eligible)]
    key = {
        "confidence": lambda i: -s["confidence"][i],
        "margin": lambda i: -s["margin"][i],
        "entropy": lambda i: s["entropy"][i],
    }[proxy]
    return sorted(positions, key=lambda i: (key(i), i))


def choose(s, eligible, rule, proxy="confidence", gamma=0.1, k=1, tau=0.9):
    """The set of positions one step unmasks."""
    ranked = ranking(s, eligible, proxy)
    if rule == "topk":
        return ranked[:k]
    if rule == "threshold":
        return sorted(set([ranked[0]] + [i for i in ranked if s["confidence"][i] >= tau]))
    if rule == "eb":  # walk the ranking; keep the largest prefix with sum(H) - max(H) <= gamma
        chosen = [ranked[0]]
        for i in ranked[1:]:
            h = [s["entropy"][j] for j in chosen + [i]]
            if sum(h) - max(h) <= gamma:
                chosen.append(i)
            else:
                break
        return chosen
    raise ValueError(rule)


def sample(model, tokens_L, answer_L, mask_id, rule, **kw):
    """Greedy (temperature 0) decoding of one example; returns (tokens, nfe, chosen sets)."""
    tokens = np.where(answer_L, mask_id, tokens_L).astype(np.int64)
    masked = answer_L.copy()
    nfe, history = 0, []
    while masked.any():
        logits = np.asarray(model(tokens[None]))[0]
        nfe += 1
        chosen = choose(stats(logits), masked, rule, **kw)
        tokens[chosen] = logits[chosen].argmax(-1)
        masked[chosen] = False
        history.append(chosen)
    return tokens, nfe, history
