"""benchmarks.peers: diffusers' EntropyBoundScheduler, an eager JAX loop and mdm's loop give the
same answers and step counts on the same model (skipped without the peers extra)."""

import json

import numpy as np
import pytest

pytest.importorskip("torch", reason='the peers extra is not installed (pip install -e ".[peers]")')
pytest.importorskip("diffusers", reason='the peers extra is not installed (pip install -e ".[peers]")')

from benchmarks import peers  # noqa: E402
from benchmarks.run import save  # noqa: E402
from configs import sudoku as sudoku_config  # noqa: E402
from mdm import data, sampling, train  # noqa: E402


def test_diffusers_eager_and_mdm_agree_on_a_tiny_random_model(data_dir, tmp_path):
    split = data.load("sudoku", "test", data_dir, 500, 500, 500).take(np.arange(4))
    graphdef, params = train.init_model(train.model_config(sudoku_config.get_config("tiny"), split.task), 0)
    model_fn = sampling.model_fn_from(graphdef, params)
    # An untrained model's entropies sit near log 9 = 2.2 nats: gamma 4.5 unmasks up to 3 a step.
    result = peers.compare(model_fn, split, gamma=4.5, batch=2, repeats=1)
    answers = int(split.answer_mask[0].sum())
    assert result["mean_nfe"] < answers, "no step unmasked several positions: the comparison would be trivial"
    for peer, a in result["agreement"].items():
        assert a["differ_unexplained"] == 0, (peer, a)
        assert a["same"] + a["differ_tie"] + a["differ_float_order"] == 4, (peer, a)
    assert set(result["wall_s"]) == set(peers.IMPLEMENTATIONS) and min(result["wall_s"].values()) > 0
    assert result["row_calls_per_example"]["plain"] == result["iterations"]["plain"] * 2 / 4
    assert "diffusers/mdm" in peers.format_table([result])
    saved = json.loads(save("peers", {"rows": [result]}, str(tmp_path / "peers.json")).read_text())
    assert saved["rows"][0]["agreement"] == result["agreement"]

    # The check can fail: a peer whose answer differs in one token, with the same ranking, is unexplained.
    mine = peers.run_mdm(model_fn, split, 4.5, 2, refill=False)
    theirs = {k: np.array(v, copy=True) for k, v in mine.items() if k in ("tokens", "nfe", "fill_step")}
    position = int(np.argmax(split.answer_mask[0]))
    theirs["tokens"][0, position] = (theirs["tokens"][0, position] + 1) % split.task.vocab_size
    prompts = np.where(split.answer_mask, split.task.vocab_size, split.tokens)
    a = peers.agreement(model_fn, mine, theirs, prompts, split.answer_mask, split.task.vocab_size, 4.5)
    assert (a["same"], a["differ_unexplained"]) == (3, 1), a


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batches", "8,x"], "comma-separated whole numbers"),
        (["--batches", "8,16", "--examples", "1,2,3"], "gives 3 numbers for 2 batch sizes"),
        (["--repeats", "0"], "--repeats must be positive"),
        (["--gamma", "-1"], "--gamma must be >= 0"),
    ],
)
def test_bad_flags_exit_with_one_sentence(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        peers.parse_args(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
