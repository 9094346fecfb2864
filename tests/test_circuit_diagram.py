"""``plots.circuit_diagram``: one box per class listing its heads, arrows only between drawn classes."""

from __future__ import annotations

from ioi_helpers import paper, plots


def _data(chart, mark):
    spec = chart.to_dict()
    datasets = spec["datasets"]
    for layer in spec["layer"]:
        m = layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
        if m == mark:
            return datasets[layer.get("data", spec.get("data"))["name"]]
    raise AssertionError(mark)


def test_boxes_list_every_head_of_the_paper():
    boxes = _data(plots.circuit_diagram(paper.CIRCUIT), "rect")
    by_class = {b["class"]: b["heads"].split() for b in boxes}
    for name, heads in paper.CIRCUIT.items():
        assert sorted(by_class[name]) == sorted(f"{l}.{h}" for l, h in heads)
    assert len(_data(plots.circuit_diagram(paper.CIRCUIT), "rule")) == len(plots.CIRCUIT_EDGES)


def test_arrows_skip_missing_classes_and_empty_classes_say_none():
    chart = plots.circuit_diagram({"Name Mover": [(3, 1)], "S-Inhibition": []})
    boxes = {b["class"]: b["heads"] for b in _data(chart, "rect")}
    assert boxes == {"S-Inhibition": "none", "Name Mover": "3.1", "logits": "logit(IO) - logit(S)"}
    edges = _data(chart, "rule")
    assert len(edges) == 2  # S-Inhibition -> Name Mover, Name Mover -> logits
