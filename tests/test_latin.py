"""Latin squares: the enumeration, the exact denoiser, the checker and the truth's joints."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.tasks import latin
from mdm.tasks.base import PuzzleError
from mdm.tasks.latin import LatinTask


def test_the_counter_finds_every_square():
    assert len(latin.all_squares(4)) == 576
    assert len(latin.all_squares(5)) == 161_280
    squares = latin.all_squares(4)
    assert latin.is_latin(squares, 4).all()
    assert len({tuple(s) for s in squares}) == 576
    with pytest.raises(ValueError, match="not supported"):
        latin.all_squares(7)


def test_is_latin_rejects_a_repeat():
    square = latin.all_squares(4)[0].copy()
    assert latin.is_latin(square, 4).all()
    square[0], square[1] = square[1], square[0]  # still a permutation per row, columns now clash
    assert not latin.is_latin(square, 4).any()


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_generated_prompts_and_the_exact_denoiser(seed):
    task = LatinTask(4)
    out = task.generate(5, np.random.default_rng(seed))
    assert (out["completions"] >= 2).all()
    assert task.check(out["tokens"], out["tokens"], out["answer_mask"])["solved"].all()
    np.testing.assert_array_equal(task.completions(out["tokens"], out["answer_mask"]), out["completions"])
    model_fn = task.exact_model()
    masked = np.where(out["answer_mask"], task.vocab_size, out["tokens"])
    probs = np.exp(np.asarray(model_fn.apply(model_fn.params, jnp.asarray(masked))))
    squares = latin.all_squares(4)
    for i in range(5):
        fits = squares[latin.consistent(4, out["tokens"][i], ~out["answer_mask"][i])]
        brute = np.stack([[np.mean(fits[:, cell] == v) for v in range(4)] for cell in range(16)])
        np.testing.assert_allclose(probs[i], brute, atol=1e-5)
    log_p = task.log_prob(out["tokens"], out["answer_mask"])
    np.testing.assert_allclose(log_p, -np.log(out["completions"]))


def test_an_invalid_completion_has_no_probability():
    task = LatinTask(4)
    out = task.generate(1, np.random.default_rng(0))
    tokens = out["tokens"].copy()
    cells = np.flatnonzero(out["answer_mask"][0])
    tokens[0, cells[0]] = (tokens[0, cells[0]] + 1) % 4
    assert task.log_prob(tokens, out["answer_mask"])[0] == -np.inf
    assert not task.solved(tokens, out["tokens"], out["answer_mask"])[0]


def test_two_blanks_of_one_row_depend_and_the_product_can_break_the_rule():
    task = LatinTask(4)
    tokens = np.zeros((1, 16), np.int32)
    visible = np.zeros((1, 16), bool)  # nothing given: every cell uniform
    chosen = np.zeros((1, 16), bool)
    chosen[0, [0, 1]] = True  # one row
    out = task.set_dependence(tokens, visible, chosen)
    # the truth: two different symbols, 12 pairs equally likely; TC = 2 log 4 - log 12
    assert out["tc"][0] == pytest.approx(2 * np.log(4) - np.log(12))
    assert out["kl_product"][0] == np.inf  # the product draws one symbol twice a quarter of the time
    assert out["sum_h"][0] - out["max_h"][0] == pytest.approx(np.log(4))
    far = np.zeros((1, 16), bool)
    far[0, [0, 5]] = True  # another row and column: dependent only through the rest of the square
    assert task.set_dependence(tokens, visible, far)["tc"][0] < out["tc"][0]


def test_same_step_conflicts_counts_clashing_pairs():
    task = LatinTask(4)
    tokens = np.array([0, 0, 1, 2] + [0] * 12)
    assert task.same_step_conflicts(tokens, np.array([0, 1, 2])) == 1
    assert task.same_step_conflicts(tokens, np.array([0, 4])) == 1  # one column, both 0
    assert task.same_step_conflicts(tokens, np.array([2, 3])) == 0


def test_parse_a_typed_square():
    task = LatinTask(4)
    tokens, blank = task.parse("12.. 21.. .... ....")
    assert blank.sum() == 12 and list(tokens[:2]) == [0, 1]
    with pytest.raises(PuzzleError, match="16 cells"):
        task.parse("123")
    with pytest.raises(PuzzleError, match="takes 1-4"):
        task.parse("5" + "." * 15)
    with pytest.raises(PuzzleError, match="no Latin square"):
        task.parse("11" + "." * 14)


def test_all_squares_of_size_four_by_brute_force():
    rows = list(itertools.permutations(range(4)))
    count = sum(
        1
        for a, b, c, d in itertools.product(rows, repeat=4)
        if all(len({a[j], b[j], c[j], d[j]}) == 4 for j in range(4))
    )
    assert count == 576
