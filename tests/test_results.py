"""minimistral.evaluate.paper_tables and show.results: the paper's Tables 2-5 read as records (notebook 08)."""

from __future__ import annotations

import pytest

from minimistral.evaluate.paper_tables import (
    differences,
    fraction_of_teacher,
    lower_is_better,
    mean_fraction,
    paper_model,
    paper_scores,
    read_offs,
    read_paper_table,
)


@pytest.mark.parametrize(
    ("name", "family", "params", "exact"),
    [
        ("Ministral 3 3B", "Ministral 3", 3_429_006_336, True),  # docs/paper.md §1
        ("Ministral 3 8B", "Ministral 3", 8_489_553_920, True),
        ("Ministral 3 14B", "Ministral 3", 13_506_073_600, True),
        ("Mistral Small 3.1 24B", "Mistral Small 3.1", 23_572_403_200, True),
        ("Qwen 3 14B", "Qwen 3", 14_000_000_000, False),
        ("Qwen3 14B (Non-Thinking)", "Qwen 3", 14_000_000_000, False),
        ("Qwen3-VL-8B-Instruct", "Qwen3-VL", 8_000_000_000, False),
        ("Qwen3-VL 4B", "Qwen3-VL", 4_000_000_000, False),
        ("Gemma3-12B-Instruct", "Gemma 3", 12_000_000_000, False),
        ("Gemma 3 4B", "Gemma 3", 4_000_000_000, False),
    ],
)
def test_paper_model(name, family, params, exact):
    m = paper_model(name)
    assert (m.family, m.params, m.exact) == (family, params, exact)


def test_paper_model_unknown():
    with pytest.raises(ValueError, match="no known family"):
        paper_model("Llama 3 8B")


def test_exact_counts_match_table1():
    row = next(r for r in read_csv_table1() if r["field"] == "lm_params")
    for col, name in [("Ministral3-3B", "Ministral 3 3B"), ("MistralSmall3.1-24B", "Mistral Small 3.1 24B")]:
        assert paper_model(name).params == int(row[col])


def read_csv_table1():
    from minimistral.files import read_csv
    from minimistral.paths import paper_dir

    return read_csv(paper_dir() / "table1_architecture.csv")


def test_paper_scores_both_layouts():
    t2, t3 = paper_scores("table2"), paper_scores("table3")  # a row per model; a row per benchmark
    assert len(t2) == 8 * 5 and len(t3) == 15 * 4
    score = {(r["benchmark"], r["model"]): r["score"] for r in t2 + t3}
    assert score["MATH (CoT 2-shot)", "Ministral 3 14B"] == 67.6  # in both tables
    assert score["TriviaQA (5-shot)", "Gemma 3 12B"] == 78.8
    assert score["MathVista", "Mistral Small 3.1 24B"] == 51.3


def test_paper_scores_skip_blank_cells():
    t4 = paper_scores("table4")
    assert len(t4) == 9 * 4 - 1  # Qwen3 14B (text only) has no MM MTBench entry
    assert not any(r["model"].startswith("Qwen3 14B") and r["benchmark"] == "MM MTBench" for r in t4)
    assert {r["family"] for r in paper_scores("table5")} == {"Qwen 3", "Qwen3-VL", "Ministral 3"}


def test_read_paper_table_unknown():
    with pytest.raises(ValueError, match="unknown table"):
        read_paper_table("table9")


def test_read_offs():
    fig5 = read_offs("fig5_gpqa_vs_tokens")
    assert [(r["series"], r["x"], r["y"]) for r in fig5][:2] == [
        ("Ministral 3 14B Instruct", 1000.0, 55.5),
        ("Ministral 3 8B Instruct", 1200.0, 50.5),
    ]
    assert read_offs("fig3_teacher_choice")[0]["x"] == "MMLU-Redux"  # a benchmark name stays a string
    with pytest.raises(ValueError, match="no read-offs"):
        read_offs("fig99")


def test_fraction_of_teacher_orientation():
    rows = [
        {"evaluation": "accuracy (%)", "teacher": "50", "a": "40", "b": "60"},
        {"evaluation": "bits per byte (lower is better)", "teacher": "2.0", "a": "2.5", "b": "2.0"},
        {"evaluation": "log-prob per token (nats)", "teacher": "-1.0", "a": "-2.0", "b": "-1.0"},
        {"evaluation": "exact match (%)", "teacher": "0.0", "a": "0.0", "b": "0.0"},  # no ratio: left out
    ]
    frac = {(r["evaluation"], r["model"]): r["fraction"] for r in fraction_of_teacher(rows, "teacher")}
    assert frac == {
        ("accuracy (%)", "a"): 0.8,
        ("accuracy (%)", "b"): 1.2,
        ("bits per byte (lower is better)", "a"): 0.8,
        ("bits per byte (lower is better)", "b"): 1.0,
        ("log-prob per token (nats)", "a"): 0.5,  # worse than the teacher: below 1
        ("log-prob per token (nats)", "b"): 1.0,
    }
    assert mean_fraction(fraction_of_teacher(rows, "teacher")) == pytest.approx({"a": 0.7, "b": 16 / 15})
    assert lower_is_better("Bits per byte, math (lower is better)", 1.0)
    assert not lower_is_better("Cloze 4-way, milton (%)", 50.0)


def test_paper_table3_fractions():
    frac = fraction_of_teacher(read_paper_table("table3"), "Mistral Small 3.1 24B")
    math = {r["model"]: r["fraction"] for r in frac if r["evaluation"] == "MATH (CoT 2-shot)"}
    assert math["Ministral 3 14B"] == pytest.approx(67.6 / 55.8)
    means = mean_fraction(frac)
    assert list(means) == ["Ministral 3 14B", "Ministral 3 8B", "Ministral 3 3B"]
    assert means["Ministral 3 14B"] > means["Ministral 3 8B"] > means["Ministral 3 3B"]


def test_differences():
    d = differences(paper_scores("table5"), "Ministral 3 14B", "Qwen 3 14B")
    assert d["AIME 2025 (pass@16)"] == pytest.approx(85.0 - 73.7)
    assert all(v > 0 for v in d.values())  # docs/paper.md §6: the 14B Reasoning model wins every benchmark
    assert "MM MTBench" not in differences(paper_scores("table4"), "Ministral 3 14B", "Qwen3 14B (Non-Thinking)")


def test_figures_build():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minimistral.show import results

    stages = [
        {"model": m, "stage": s, "params": p, "shakespeare_bpb": b, "overall_bpb": b}
        for m, s, p, b in [("tiny-24b", "parent", "20", "2.0"), ("tiny-3b-long", "long", "3", "2.4")]
    ]
    ours = [{"evaluation": "e", "tiny-24b": "2", "tiny-14b": "1", "tiny-8b": "1", "tiny-3b": "1"}]
    figs = [
        results.plot_peers(paper_scores("table2"), "Table 2"),
        results.plot_peers(paper_scores("table4"), "Table 4", ncols=4),
        results.plot_fraction_of_teacher(
            fraction_of_teacher(read_paper_table("table3"), "Mistral Small 3.1 24B"),
            fraction_of_teacher(ours, "tiny-24b"),
        ),
        results.plot_score_vs_params(stages),
        results.plot_teacher_choice(read_offs("fig3_teacher_choice"), read_offs("fig4_base_vs_instruct_teacher")),
        results.plot_tokens(read_offs("fig5_gpqa_vs_tokens")),
    ]
    assert all(len(f.axes) >= 1 for f in figs)
    plt.close("all")


def test_size_steps_and_table():
    from minimistral.evaluate.paper_tables import size_steps, size_table

    stages = [
        {"model": "tiny-24b", "stage": "parent", "params": "20", "overall_bpb": "1.8"},
        {"model": "tiny-14b-short", "stage": "short", "params": "12", "overall_bpb": "1.7"},  # not a Base: skipped
        {"model": "tiny-14b-long", "stage": "long", "params": "12", "overall_bpb": "1.85"},
        {"model": "tiny-8b-long", "stage": "long", "params": "8", "overall_bpb": "1.9"},
        {"model": "tiny-3b-long", "stage": "long", "params": "3", "overall_bpb": "2.1"},
    ]
    assert size_steps(stages) == [
        ("tiny-24b", "tiny-14b", 0.05),
        ("tiny-14b", "tiny-8b", 0.05),
        ("tiny-8b", "tiny-3b", 0.2),
    ]
    text = size_table(stages)
    assert "ministral-3-3b" in text and "0.145" in text  # 3,429,006,336 / 23,572,403,200 of the real parent
    assert "+0.3000" in text


def test_table_text():
    from minimistral.evaluate.paper_tables import table_text

    text = table_text(read_offs("fig5_gpqa_vs_tokens"), columns=("series", "x", "y"))
    assert text.splitlines()[0].split() == ["series", "x", "y"]
    assert text.splitlines()[2].split()[-2:] == ["1000", "55.5"]  # 1000.0 written back short
    assert table_text(read_paper_table("table2")).splitlines()[2].startswith("Qwen 3 14B")


def test_falls_with_size():
    from minimistral.evaluate.paper_tables import falls_with_size

    rows = [{"task": "a", "14b": "3", "8b": "2", "3b": "2"}, {"task": "b", "14b": "1", "8b": "2", "3b": "0"}]
    assert falls_with_size(rows) == 1
