"""Teaching the tiny family to see, at a micro scale: data from real digits, the parent's and a child's vision
steps, frozen copied ViT, checkpoints transformers loads, greedy accuracy, exact resume."""

import copy
import json

import numpy as np
import pytest
import torch
import transformers

import minimistral
from minimistral.arch.config import TINY_CONFIGS
from minimistral.arch.hub import from_pretrained, save_pretrained
from minimistral.arch.model import Ministral3
from minimistral.data.corpus import build_corpus, windows
from minimistral.data.tokenizer import load_tokenizer
from minimistral.distill import ResponseDistillLoss, response_loss
from minimistral.train import TrainConfig, Trainer
from minimistral.vision.config import TINY_VISION
from minimistral.vision.data import (
    CELLS,
    QUESTIONS,
    TEST_PER_CLASS,
    ImageQuestions,
    SceneCells,
    WithText,
    answer,
    load_mnist,
    make_scenes,
    render,
    split_sources,
)
from minimistral.vision.train import (
    answer_accuracy,
    vision_child,
    vision_parent,
    with_new_vision,
)

STEPS = dict(batch_size=4, lr=3e-3, warmup_steps=1, eval_every=10, ckpt_every=1)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "tokenizer.json").write_bytes(build_corpus().tokenizer_path.read_bytes())
    return d


@pytest.fixture(scope="module")
def data(mnist, tok_dir):
    images, labels = mnist
    src = split_sources(labels)
    tok = load_tokenizer(tok_dir)
    train, test = make_scenes(src["train"], 12, 0), make_scenes(src["test"], 4, 1)
    questions = ImageQuestions(train, images, labels, tok, TINY_VISION)
    return {
        "cells": SceneCells(train, images, labels, tok, TINY_VISION),
        "train": questions,
        "test": ImageQuestions(test, images, labels, tok, TINY_VISION),
        "with_text": WithText(questions, windows(build_corpus().train[:2000], 32), rows=2),
        "tok": tok,
    }


def _save(cfg_name, path, tok_dir, **changes):
    torch.manual_seed(0)
    save_pretrained(Ministral3(TINY_CONFIGS[cfg_name].replace(**changes)), path)
    (path / "tokenizer.json").write_bytes((tok_dir / "tokenizer.json").read_bytes())
    return path


@pytest.fixture(scope="module")
def family(tmp_path_factory, tok_dir, data):
    root = tmp_path_factory.mktemp("family")
    parent = _save("tiny-24b", root / "parent", tok_dir, num_hidden_layers=2)
    child = _save("tiny-3b", root / "child", tok_dir, num_hidden_layers=1)
    align, tune = TrainConfig(steps=3, **STEPS), TrainConfig(steps=2, **STEPS)
    seeing = vision_parent(parent, data["cells"], data["train"], root / "vp", align, tune, 0.1, data["test"], "cpu")
    child_cfg = TrainConfig(steps=2, **STEPS)
    child_vision = vision_child(child, seeing, data["with_text"], root / "cv", child_cfg, device="cpu")
    return {"root": root, "parent": parent, "child": child, "seeing": seeing, "child_vision": child_vision}


# ----------------------------------------------------------------------------- data
def test_mnist_split_holds_out_whole_source_images(mnist):
    images, labels = mnist
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and np.bincount(labels).tolist() == [500] * 10
    src = split_sources(labels)
    assert len(src["test"]) == 10 * TEST_PER_CLASS and not set(src["train"]) & set(src["test"])
    scenes = make_scenes(src["test"], 50, 1)
    used = {i for s in scenes for i in s.cells if i >= 0}
    assert used <= set(src["test"].tolist())
    assert {sum(i >= 0 for i in s.cells) for s in scenes} == set(range(1, CELLS + 1))


def test_examples_train_on_the_answer_only(data):
    qa, tok = data["train"], data["tok"]
    batch = qa.batch(torch.arange(len(QUESTIONS) * 2))
    for r in range(len(QUESTIONS) * 2):
        scene = qa.scenes[r // len(QUESTIONS)]
        kind = qa.kinds[r % len(QUESTIONS)]
        digits = scene.digits(qa.labels)
        answered = batch["targets"][r][batch["mask"][r]].tolist()
        assert answered[-1] == tok.eos_id and tok.decode(answered[:-1]).strip() == answer(kind, digits)
        assert (batch["input_ids"][r] == 10).sum() == 12  # 28x84 pixels -> 2 x 6 image tokens
    assert answer("read", [3, 0, 7]) == "3 0 7" and answer("sum", [3, 0, 7]) == "10" and answer("max", [2]) == "2"


def test_cell_tokens_name_the_digit_under_each_image_token(data, mnist):
    cells, tok = data["cells"], data["tok"]
    scene = data["train"].scenes[0]
    row = [tok.decode([t]) for t in cells.cell_tokens[0].tolist()[:6]]  # the first row of 6 tokens
    want = [str(mnist[1][i]) if i >= 0 else " " for i in scene.cells for _ in range(2)]
    assert row == want
    assert np.asarray(render(scene, mnist[0])).shape == (28, 84)


def test_batches_with_text_add_the_same_objective_on_text_windows(data, family):
    batch = data["with_text"].batch(torch.tensor([5, 1, 30, 2]))
    assert batch["text"].shape == (2, 33) and torch.equal(batch["text"], data["with_text"].windows[[5, 1]])
    model = from_pretrained(family["child_vision"])
    with torch.no_grad():
        both, answers = (
            response_loss(model, batch),
            response_loss(model, data["train"].batch(torch.tensor([5, 1, 30, 2]))),
        )
        logits = model(batch["text"][:, :-1])
        text = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["text"][:, 1:].flatten())
        assert torch.allclose(both["loss"], answers["loss"] + text) and torch.allclose(both["text"], text)
        assert both["tokens"] == answers["tokens"]  # the answers weigh the validation mean
        self_kd = ResponseDistillLoss(copy.deepcopy(model))(model, batch)  # its own teacher: KL 0 on both parts
    assert abs(self_kd["loss"].item()) < 1e-5 and abs(self_kd["text"].item()) < 1e-5
    with pytest.raises(ValueError, match="text rows"):
        WithText(data["train"], torch.empty(0, 33), rows=1)


# ----------------------------------------------------------------------------- the steps
def test_parent_and_child_are_mistral3_checkpoints_transformers_loads(family, data):
    batch = data["test"].batch(torch.arange(4))
    for ckpt in (family["seeing"], family["child_vision"]):
        ours = from_pretrained(ckpt)
        hf = transformers.Mistral3ForConditionalGeneration.from_pretrained(ckpt).eval()
        with torch.no_grad():
            want = hf(
                input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"]
            )
            got = ours(batch["input_ids"], pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"])
        assert (got - want.logits).abs().max() < 1e-4
        assert (ckpt / "tokenizer.json").is_file()


def test_child_copies_the_parent_vit_bitwise_and_trains_its_own_projector(family):
    parent, child = from_pretrained(family["seeing"]), from_pretrained(family["child_vision"])
    theirs = child.vision_tower.state_dict()
    for name, p in parent.vision_tower.state_dict().items():
        assert torch.equal(p, theirs[name]), name
    assert child.config.hidden_size == TINY_CONFIGS["tiny-3b"].hidden_size
    fresh = with_new_vision(from_pretrained(family["child"]), seed=0)
    assert not torch.equal(fresh.multi_modal_projector.linear_2.weight, child.multi_modal_projector.linear_2.weight)
    text_before = from_pretrained(family["child"]).model.layers[0].mlp.up_proj.weight
    assert not torch.equal(text_before, child.model.layers[0].mlp.up_proj.weight)  # the language model trains too


def test_accuracy_is_greedy_exact_match(family, data):
    model, qa = from_pretrained(family["seeing"]), data["test"]
    acc = answer_accuracy(model, qa, batch_size=3)
    hits = []
    for i in range(len(qa)):
        ids, prompt = qa.example(i)
        scene = qa.batch(torch.tensor([i]))
        out = minimistral.generate(
            model, torch.tensor([ids[:prompt]]), len(ids) - prompt, pixel_values=scene["pixel_values"],
            image_sizes=scene["image_sizes"],
        )  # fmt: skip
        hits.append(out[0, prompt:].tolist() == ids[prompt:])
    per_kind = {k: float(np.mean(hits[j :: len(qa.kinds)])) for j, k in enumerate(qa.kinds)}
    assert acc == pytest.approx(per_kind)


def test_vision_runs_resume_bitwise(family, data, tmp_path):
    def run(out, interrupt_after=None):
        model = from_pretrained(family["seeing"])
        calls = {"n": 0}

        def loss(m, batch):
            calls["n"] += m.training
            if interrupt_after is not None and calls["n"] > interrupt_after:
                raise KeyboardInterrupt
            return response_loss(m, batch)

        trainer = Trainer(model, TrainConfig(steps=4, **STEPS), data["train"], out, loss_fn=loss, device="cpu")
        trainer.fit()
        return trainer.model

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", interrupt_after=2)
    assert json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    resumed = run(tmp_path / "b")
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
