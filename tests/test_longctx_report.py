"""Reading the long-context study's tables back: curves, passkey grids and the passkey targets (notebook 05)."""

import math

from minimistral.longctx.report import (
    AS_TRAINED,
    CHILD_AFTER,
    bucket_curve,
    passkey_grid,
    passkey_targets,
    window_means,
)


def _passkey(parent=1.0, before=0.0, after=0.9, lengths=(128, 256, 1024), depths=(0.0, 1.0)):
    rows = []
    models = [("tiny-24b", AS_TRAINED, "parent", parent)]
    for child in ("tiny-14b", "tiny-8b", "tiny-3b"):
        models += [(child, AS_TRAINED, "before", before), (child, CHILD_AFTER, "after", after)]
    for child, variant, stage, value in models:
        for n in lengths:
            for d in depths:
                v = value if (stage != "before" or n <= 256) else 0.0
                rows.append(
                    {
                        "child": child,
                        "variant": variant,
                        "stage": stage,
                        "length": str(n),
                        "depth": str(d),
                        "exact": str(v),
                    }
                )
    return rows


def test_bucket_curve_and_window_means():
    rows = [
        {"child": "c", "variant": "v", "stage": "s", "start": str(s), "loss": str(x)}
        for s, x in ((256, 5.0), (0, 4.0), (128, 4.2), (384, 5.2))
    ]
    assert bucket_curve(rows, "c", "v", "s") == ([0, 128, 256, 384], [4.0, 4.2, 5.0, 5.2])
    assert window_means(rows, "c", "v", "s", window=256) == {"inside": 4.1, "past": 5.1}


def test_passkey_grid_is_lengths_by_depths():
    rows = _passkey()
    lengths, depths, grid = passkey_grid(rows, "tiny-14b", AS_TRAINED, "before")
    assert lengths == [128, 256, 1024] and depths == [0.0, 1.0]
    assert grid == [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    rows = [r for r in rows if not (r["child"] == "tiny-8b" and r["length"] == "1024")]
    assert all(math.isnan(v) for v in passkey_grid(rows, "tiny-8b", CHILD_AFTER, "after")[2][2])


def test_passkey_targets_met_or_not_from_the_worst_cell():
    out = {(r["model"], r["stage"]): r for r in passkey_targets(_passkey())}
    assert out[("tiny-24b", "parent")]["n"] == 4 and out[("tiny-24b", "parent")]["met"] is True
    assert out[("tiny-3b", "after")]["cells"] == "length 1,024" and out[("tiny-3b", "after")]["met"] is True
    assert out[("tiny-3b", "before")]["target"] is None and out[("tiny-3b", "before")]["met"] is None
    missed = {(r["model"], r["stage"]): r for r in passkey_targets(_passkey(parent=0.85, after=0.5))}
    assert missed[("tiny-24b", "parent")]["met"] is False and missed[("tiny-8b", "after")]["worst"] == 0.5
    assert missed[("tiny-8b", "after")]["met"] is False
    none_long = passkey_targets(_passkey(), long=2048)
    assert none_long[2]["n"] == 0 and none_long[2]["met"] is False
