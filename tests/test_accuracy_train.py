"""The model and the training loop: learning beats chance, best-checkpoint selection, NaN guard."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from accuracy_fixtures import write_bytes_folder
from harness.accuracy import model as model_lib
from harness.accuracy import tasks
from harness.accuracy import training_presets as presets
from harness.accuracy.training_presets import ModelConfig, TrainConfig
from harness.accuracy.training_run import TrainingRunSettings, run_one
from harness.accuracy.tasks.common import Limits
from harness.accuracy.train import ProgressLike, fit, learning_rate
from harness.contract.registry import REGISTRY, Capabilities, Implementation

SEQ_LEN = 64


@pytest.fixture(scope="module")
def easy_data(tmp_path_factory):
    root = write_bytes_folder(tmp_path_factory.mktemp("bytes"), per_class=50, size=120)
    return tasks.load("bytes", root, Limits(seq_len=SEQ_LEN), seed=0)


def easy_preset(epochs: int = 3) -> presets.TaskPreset:
    return presets.get("smoke", "bytes").with_overrides(epochs=epochs, seq_len=SEQ_LEN,
                                                        batch_size=16)


@pytest.mark.parametrize("impl", ["softmax_torch", "hrr_torch"])
def test_smoke_training_beats_chance(easy_data, impl):
    settings = TrainingRunSettings("smoke", easy_preset(), seed=0, device="cpu")
    record = run_one(REGISTRY.get(impl), easy_data, settings)
    assert record.status == "ok", record.message
    assert record.data_source == "user folder" and record.task == "bytes"
    # two balanced classes: chance is 0.5
    assert record.best_val_accuracy >= 0.8
    assert record.test_accuracy >= 0.8
    assert record.selection == "test accuracy at the best validation checkpoint"
    assert len(record.curve) == 3
    best = max(record.curve, key=lambda row: row["val_accuracy"])
    assert best["val_accuracy"] == record.best_val_accuracy
    assert record.epochs_to_best == min(row["epoch"] for row in record.curve
                                        if row["val_accuracy"] == record.best_val_accuracy)
    assert record.params == sum(p.numel() for p in model_lib.build(
        settings.preset.model, vocab_size=257, seq_len=easy_data.seq_len, num_classes=2,
        core=REGISTRY.get(impl).fn, pad_id=0, pair=False).parameters())
    assert record.train_time_s > 0 and record.examples_per_s > 0
    assert record.config["seq_len"] == easy_data.seq_len
    assert record.to_json()["point_id"]


class Sabotage(ProgressLike):
    """Zeroes every weight after each step from epoch 4 on: later epochs are at chance."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.epoch = model, 0

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch

    def advance(self, *, loss: float, accuracy: float) -> None:
        if self.epoch >= 4:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.zero_()


def test_test_score_is_taken_at_the_best_validation_epoch(easy_data):
    torch.manual_seed(0)
    preset = easy_preset(epochs=5)
    model = model_lib.build(preset.model, vocab_size=257, seq_len=easy_data.seq_len,
                            num_classes=2, core=REGISTRY.get("softmax_torch").fn, pad_id=0,
                            pair=False)
    result = fit(model, easy_data, preset.train, device=torch.device("cpu"), seed=0,
                 progress=Sabotage(model))
    vals = [row["val_accuracy"] for row in result.curve]
    assert max(vals[:3]) >= 0.8 and max(vals[3:]) <= 0.6   # epochs 4 and 5 were ruined
    assert result.epochs_to_best <= 3
    assert all(p.abs().sum() > 0 for p in model.parameters() if p.dim() > 1)  # best reloaded
    assert result.test_accuracy >= 0.8                   # so the test used the best weights


def test_nan_guard_stops_with_a_message(easy_data):
    def nan_core(q, k, v, *, causal=False, key_padding_mask=None):
        return v * float("nan")

    impl = Implementation("nan_attention", "torch", "exact", Capabilities(key_padding_mask=True),
                          nan_core)
    impl._probe_cache[("cpu", "float32")] = type(REGISTRY.get("softmax_torch").supports())(True)
    preset = easy_preset(epochs=2)
    preset = replace(preset, train=replace(preset.train, max_bad_steps=3))
    record = run_one(impl, easy_data, TrainingRunSettings("smoke", preset))
    assert record.status == "error"
    assert "diverged" in record.message and record.bad_steps == 4
    assert record.test_accuracy is None


def test_an_epoch_whose_every_step_was_skipped_is_not_recorded_as_loss_zero(easy_data):
    """Every step non-finite, and more bad steps allowed than an epoch has: the epoch is not a
    training loss of 0.0 but a diverged run."""
    def nan_core(q, k, v, *, causal=False, key_padding_mask=None):
        return v * float("nan")

    impl = Implementation("nan_every_step", "torch", "exact",
                          Capabilities(key_padding_mask=True), nan_core)
    impl._probe_cache[("cpu", "float32")] = type(REGISTRY.get("softmax_torch").supports())(True)
    preset = easy_preset(epochs=2)
    preset = replace(preset, train=replace(preset.train, max_bad_steps=10 ** 6))
    record = run_one(impl, easy_data, TrainingRunSettings("smoke", preset))
    assert record.status == "error" and "every step of epoch 1" in record.message
    assert not record.curve and record.test_accuracy is None


def test_a_finite_but_huge_loss_is_a_diverged_run(easy_data):
    """Logits of +-1e9: every loss is finite (about 1e9 on half the examples) and the model
    learns nothing; fit records a diverged run, not ok."""
    class Loud(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor([1e9, -1e9]))

        def forward(self, tokens, *rest):
            return self.logits.expand(tokens.shape[0], 2) + 0 * tokens.float().mean()

    config = replace(easy_preset(epochs=2).train, lr=1e-6)
    result = fit(Loud(), easy_data, config, device=torch.device("cpu"), seed=0)
    assert result.status == "error", (result.status, result.curve)
    assert "mean training loss" in result.message and "ln 2" in result.message
    assert result.test_accuracy is None


def test_untrainable_implementations_are_reported(easy_data):
    settings = TrainingRunSettings("smoke", easy_preset(epochs=1))
    jax_record = run_one(REGISTRY.get("softmax_jax"), easy_data, settings)
    assert jax_record.status == "unsupported" and "jax" in jax_record.message
    frozen = Implementation("no_backward", "torch", "exact",
                            Capabilities(key_padding_mask=True, backward=False),
                            REGISTRY.get("softmax_torch").fn)
    record = run_one(frozen, easy_data, settings)
    assert record.status == "unsupported" and "no backward" in record.message
    unmasked = Implementation("no_mask", "torch", "exact", Capabilities(key_padding_mask=False),
                              REGISTRY.get("softmax_torch").fn)
    assert "mask" in run_one(unmasked, easy_data, settings).message


@pytest.mark.parametrize("impl", ["softmax_torch", "hrr_torch"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_does_not_change_the_output(impl, pooling):
    torch.manual_seed(0)
    config = ModelConfig(d_model=16, heads=2, layers=2, ffn_dim=32, pooling=pooling)
    net = model_lib.build(config, vocab_size=20, seq_len=12, num_classes=3,
                          core=REGISTRY.get(impl).fn, pad_id=0, pair=False).eval()
    tokens = torch.randint(1, 20, (1, 7))
    padded = torch.cat([tokens, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short = net(tokens, torch.tensor([7]))
        long = net(padded, torch.tensor([7]))
    torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-5)


def test_two_tower_pair_features():
    x1, x2 = torch.randn(3, 4), torch.randn(3, 4)
    features = model_lib.pair_features(x1, x2)
    assert torch.equal(features, torch.cat([x1, x2, x1 * x2, x1 - x2], -1))
    net = model_lib.build(ModelConfig(d_model=8, heads=2, ffn_dim=16), vocab_size=10,
                          seq_len=6, num_classes=2, core=REGISTRY.get("softmax_torch").fn,
                          pad_id=0, pair=True).eval()
    a, b = torch.randint(1, 10, (2, 6)), torch.randint(1, 10, (2, 6))
    lengths = torch.tensor([6, 4])
    logits = net(a, lengths, b, lengths)
    assert logits.shape == (2, 2)
    # one shared encoder (tied towers): swapping the documents changes only the x1-x2 part
    assert model_lib.count_parameters(net) == model_lib.count_parameters(net.encoder) + \
        model_lib.count_parameters(net.head)


def test_learning_rate_schedules():
    cosine = TrainConfig(lr=1.0, schedule="cosine", warmup_steps=4)
    ramp = [learning_rate(cosine, step=s, epoch=0, total_steps=100) for s in range(4)]
    assert ramp == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(cosine, step=4, epoch=0, total_steps=100) == pytest.approx(1.0)
    assert learning_rate(cosine, step=100, epoch=9, total_steps=100) == pytest.approx(0.0)
    exponential = TrainConfig(lr=1e-3, schedule="exponential", decay_rate=0.5)
    assert learning_rate(exponential, step=50, epoch=2, total_steps=100) == pytest.approx(2.5e-4)
    assert learning_rate(TrainConfig(lr=0.1, schedule="constant"), step=9, epoch=3,
                         total_steps=10) == 0.1


def test_presets_follow_reference_and_overrides():
    paper = presets.get("paper", "listops")
    assert (paper.seq_len, paper.model.d_model, paper.model.heads, paper.model.layers,
            paper.model.ffn_dim, paper.train.batch_size) == (2000, 512, 8, 6, 256, 2)
    assert paper.train.optimizer == "adam" and paper.train.lr == 1e-3
    assert paper.train.label_smoothing == 0.1 and paper.model.dropout == 0.1
    assert paper.train.epochs == 20 and paper.train.schedule == "exponential"
    assert presets.get("paper", "pathx").seq_len == 16384
    assert presets.get("paper", "bytes").model.pooling == "cls"
    assert presets.bytes_batch_size(2**14) == 4 and presets.bytes_batch_size(2**19) == 1
    changed = paper.with_overrides(layers=1, epochs=2)
    assert changed.model.layers == 1 and changed.train.epochs == 2
    with pytest.raises(Exception, match="unknown preset"):
        presets.get("huge", "listops")
