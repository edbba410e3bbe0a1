"""Text from a known chain (mdm/tasks/text.py): presets quick and cpu (2-core CPU), tiny (tests).

64 characters drawn from an order-2 character chain fitted on Shakespeare (entropy rate 2.743
bits per character); the prompt gives 32 of them (a prefix, a suffix or scattered characters),
the model fills in the other 32. Learned positions, full attention, Muon. Training's eval
reports the ELBO in bits per answer character (the chain's own conditional entropy is the floor);
sampling is judged by KL(q || p) against the chain (python sample.py ... --temperature 1), not
by a solve rate, so eval.sample_examples is 0.

  python train.py --config configs/text.py:quick --workdir runs/text_quick
      0.8M parameters, 2,000 steps x 64 = 128,000 examples; not timed yet (at the 2.7 steps/s
      that 150 steps logged on an idle machine, about 12 minutes).
  python train.py --config configs/text.py:cpu --workdir runs/text_cpu
      0.8M parameters, 8,000 steps x 64 = 512,000 examples: 1 h 29 min at a mean logged 1.58
      steps/s (1.0-2.9), measured while other jobs shared the 2 cores (at 2.7 steps/s about 49
      minutes); ELBO 2.63 bits per answer character on 512 validation examples. Shipped as
      pretrained/text_cpu. Results: docs/results.md ("Text with a known truth").
"""

from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "text"
    apply_preset(c, preset, "configs/text.py")
    c.eval.sample_examples = 0  # every string is a right answer: KL against the chain, in sample.py
    if preset in ("quick", "cpu"):
        c.train.optimizer = "muon"
    if preset == "quick":
        c.train.update(steps=2000, lr=2e-3)
        c.eval.every = 1000
        c.checkpoint.every = 500
    elif preset == "cpu":
        c.train.update(steps=8000, lr=2e-3)
        c.eval.every = 2000
        c.checkpoint.every = 1000
    elif preset == "tiny":
        c.data.update(train_size=500, test_size=500, validation_size=500)
    return c
