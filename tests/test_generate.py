"""KV-cache decoding equals the full forward; greedy generation equals transformers token for token."""

import pytest
import torch
from conftest import hf_model
from test_parity import ours_from

import minimistral
from minimistral.arch.generate import sample_next


@pytest.mark.parametrize("kind,kw", [("ministral3", {}), ("mistral", dict(yarn=False, sliding_window=20))])
def test_cached_decoding_equals_full_forward_at_every_step(kind, kw):
    ours = ours_from(hf_model(kind, **kw))
    ids = torch.randint(0, 256, (2, 70))
    with torch.no_grad():
        full = ours(ids)
        cache = ours.new_cache(2, capacity=8)  # small: forces the cache to grow several times
        steps = [ours(ids[:, :5], cache), ours(ids[:, 5:21], cache)]  # prefill, then a chunk
        steps += [ours(ids[:, t : t + 1], cache) for t in range(21, 70)]  # one token at a time
    assert cache.length == 70
    assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-4


def test_greedy_generation_equals_transformers():
    hf = hf_model("ministral3")
    ours = ours_from(hf)
    prompt = torch.randint(0, 256, (2, 9))
    want = hf.generate(prompt, max_new_tokens=60, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = minimistral.generate(ours, prompt, max_new_tokens=60)
    assert got.shape == (2, 69)
    assert torch.equal(got, want)  # positions 9..68 cross the original window (16) four times


@pytest.mark.parametrize("kind,kw", [("ministral3", {}), ("mistral", dict(yarn=False, sliding_window=20))])
def test_left_padded_prompts_continue_as_alone_and_as_transformers(kind, kw):
    """Prompts of 9, 4 and 7 tokens in one left-padded batch: each row continues as it does alone (positions,
    hence RoPE and the query temperature, count from its first token; no query reads padding), and the batch
    equals transformers' ``generate`` with the same attention mask, across the temperature's original window
    (16 positions) and the sliding window (20)."""
    hf = hf_model(kind, **kw)
    ours = ours_from(hf)
    lengths = [9, 4, 7]
    prompts = [torch.randint(1, 256, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, 9 - len(p) :], mask[row, 9 - len(p) :] = p, 1
    got = minimistral.generate(ours, ids, 40, attention_mask=mask)
    for row, p in enumerate(prompts):
        alone = minimistral.generate(ours, p[None], 40)
        assert torch.equal(got[row, 9:], alone[0, len(p) :]), row
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(got, want)
    with torch.no_grad():  # the logits too, step by step, within 1e-4 of the row alone
        cache = ours.new_cache(3, 9 + 3, left_pad=torch.tensor([0, 5, 2]))
        batch = torch.cat([ours(got[:, :9], cache)[:, -1:], ours(got[:, 9:11], cache)], 1)  # [3, 3, vocab]
        for row, p in enumerate(prompts):
            alone = ours(torch.cat([p, got[row, 9:11]])[None])[0, len(p) - 1 :]
            assert (batch[row] - alone).abs().max() < 1e-4


def test_a_prompt_read_once_continues_as_its_copies():
    """``num_return_sequences``: each prompt's prefill computed once and its cache copied gives the rows of the
    prompts repeated (left-padded, sampled with one seed per row)."""
    from minimistral.arch.generate import pad_left

    ours = ours_from(hf_model("ministral3"))
    g = torch.Generator().manual_seed(2)
    ids, mask = pad_left([torch.randint(1, 256, (n,), generator=g).tolist() for n in (9, 4)], pad_id=0)
    seeds = [11, 12, 13, 21, 22, 23]
    once = minimistral.generate(ours, ids, 20, 1.0, seed=seeds, attention_mask=mask, num_return_sequences=3)
    copies = minimistral.generate(
        ours, ids.repeat_interleave(3, 0), 20, 1.0, seed=seeds, attention_mask=mask.repeat_interleave(3, 0)
    )
    assert once.shape == (6, 29) and torch.equal(once, copies)
    with pytest.raises(ValueError, match="num_return_sequences"):
        minimistral.generate(ours, ids, 2, num_return_sequences=0)
    with pytest.raises(ValueError, match="one per row"):
        minimistral.generate(ours, ids, 2, 1.0, seed=[1, 2], attention_mask=mask, num_return_sequences=3)


def test_an_attention_mask_must_pad_on_the_left():
    ours = ours_from(hf_model("ministral3"))
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="left padding"):
        minimistral.generate(ours, ids, 2, attention_mask=torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1]]))
    with pytest.raises(ValueError, match="no token"):
        minimistral.generate(ours, ids, 2, attention_mask=torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        minimistral.generate(ours, ids, 2, attention_mask=torch.ones(2, 3))
    unpadded = minimistral.generate(ours, ids, 5, attention_mask=torch.ones(2, 4))
    assert torch.equal(unpadded, minimistral.generate(ours, ids, 5))


def test_generation_stops_at_eos_and_pads_like_transformers():
    hf = hf_model("ministral3")
    ours = ours_from(hf)
    prompt = torch.randint(0, 256, (1, 5))
    greedy = minimistral.generate(ours, prompt, 12)
    eos = int(greedy[0, 9])  # the 5th generated token plays the end-of-sequence token
    got = minimistral.generate(ours, prompt, 12, eos_token_id=eos)
    want = hf.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    assert torch.equal(got, want)
    assert got.shape[1] <= 10


def test_sampling_is_reproducible_with_a_seed():
    ours = ours_from(hf_model("ministral3"))
    prompt = torch.randint(0, 256, (1, 4))
    a = minimistral.generate(ours, prompt, 20, temperature=1.0, top_p=0.9, seed=3)
    b = minimistral.generate(ours, prompt, 20, temperature=1.0, top_p=0.9, seed=3)
    c = minimistral.generate(ours, prompt, 20, temperature=1.0, top_p=0.9, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, 1.0, 0.75, g) for _ in range(400)])
    assert set(draws.unique().tolist()) == {0, 1}  # 0.5 + 0.3 reach 0.75; 2 and 3 never drawn
    assert sample_next(logits, 1.0, 1e-6, g).item() == 0  # a tiny nucleus is greedy


def test_sampling_draws_each_token_with_its_probability():
    """Inverting the cumulative distribution samples p: frequencies of 20,000 draws within 4 standard errors."""
    p = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03, 0.0])
    logits = torch.log(p).expand(20_000, -1)  # one row per draw
    for generator in (torch.Generator().manual_seed(0), [torch.Generator().manual_seed(i) for i in range(20_000)]):
        freq = torch.bincount(sample_next(logits, 1.0, 1.0, generator), minlength=6) / 20_000
        assert freq[5] == 0  # a token of probability 0 is never drawn
        assert ((freq - p).abs() <= 4 * (p * (1 - p) / 20_000).sqrt() + 1e-9).all(), freq


def test_a_row_seeded_draw_does_not_depend_on_the_other_rows():
    """With one seed per row, a row's continuation is the same alone, beside other prompts, or in another order."""
    ours = ours_from(hf_model("ministral3"))
    prompts = torch.randint(0, 256, (3, 4), generator=torch.Generator().manual_seed(1))
    batch = minimistral.generate(ours, prompts, 12, temperature=1.0, seed=[7, 8, 9])
    assert torch.equal(minimistral.generate(ours, prompts[1:2], 12, temperature=1.0, seed=[8]), batch[1:2])
    swapped = minimistral.generate(ours, prompts[[2, 0]], 12, temperature=1.0, seed=[9, 7])
    assert torch.equal(swapped, batch[[2, 0]])
    assert not torch.equal(batch[0, 4:], minimistral.generate(ours, prompts[:1], 12, temperature=1.0, seed=[8])[0, 4:])
    with pytest.raises(ValueError, match="one per row"):
        minimistral.generate(ours, prompts, 2, temperature=1.0, seed=[1, 2])


def test_bad_sampling_arguments():
    ours = ours_from(hf_model("ministral3"))
    with pytest.raises(ValueError, match="top_p"):
        minimistral.generate(ours, torch.zeros(1, 3, dtype=torch.long), 2, top_p=0.0)
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        minimistral.generate(ours, torch.zeros(3, dtype=torch.long), 2)
