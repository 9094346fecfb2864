"""Explorers for readers who run the chapters: ipywidgets controls over the package's functions.

* :class:`PromptExplorer`: type any IOI-style prompt (or pick one of the dataset), choose IO and
  S, see the logit difference, the top predictions at END and the attention pattern of any head
  (layer and head pickers), with the class each head was given by ``discovery``.
* :class:`PatchingExplorer`: pick a receiver (the logits, or the q/k/v of a class at a
  position), a sender class and a dataset size; see the path-patching heatmap recomputed
  (``patching.path_patch``, the function the chapters use; the logits receiver goes through
  ``discovery.direct_effects`` and its disk cache).
* :class:`AblationExplorer`: tick classes in or out of the circuit and see F(C) against F(M)
  (mean ablation over p_ABC, ``ablation``).

Nothing is computed twice: each explorer calls the package functions and draws with
``plots``. An explorer's whole view is one Altair chart, shown in the widget's ``Output``.

Static pages: an explorer displays as *one* output holding two representations, the live
widget (``application/vnd.jupyter.widget-view+json``) and its current chart (Altair's HTML and
the Vega-Lite spec). A live Jupyter front end shows the widget; the book, which has no kernel
and excludes the widget mimetype (``_config.yml``), shows the chart of the default view, which
the book's pipeline draws offline like any other chart. The plain-text fallback says how to get
the live version.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import altair as alt
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from . import ablation, dataset, discovery, metrics, paper, patching, plots
from .hooks import Head, cache_activations, hook_name, run

LIVE_ONLY = ("Interactive explorer: it needs a running Python kernel. Open this page as a "
             "notebook (the launch buttons at the top: Colab, Binder, or download) and run it "
             "to use the controls; the figure shows its default view.")
PROMPT_CHOICES = 20  # dataset prompts offered by the prompt explorer
# checkboxes of the static ablation chart: one per class of the paper (2^7 = 128 circuit runs);
# a found class beyond it has no box and stays in the circuit in every view
MAX_ABLATION_CLASSES = len(paper.CIRCUIT)
# Where a receiver class is patched by default in the patching explorer: its queries where
# the class is kept (paper.KEPT_AT), its keys/values where its queries attend in the paper (Name Movers END->IO, S-Inhibition END->S2, Induction
# S2->S1+1, Duplicate Token S2->S1, Previous Token S1+1->S1).
KV_POSITION = {"Name Mover": "IO", "Negative Name Mover": "IO", "Backup Name Mover": "IO",
               "S-Inhibition": "S2", "Induction": "S1+1", "Duplicate Token": "S1",
               "Previous Token": "S1"}


# ----------------------------------------------------------------------------- helpers


def class_heads(classes: Mapping[str, Any] | None) -> dict[str, list[Head]]:
    """Class name -> heads, from ``discovery.HeadClass`` objects or plain head lists."""
    out = {}
    for name, c in (classes or {}).items():
        heads = c.heads if isinstance(c, discovery.HeadClass) else c
        out[name] = [(int(l), int(h)) for l, h in heads]
    return out


def _formatter():
    from IPython import get_ipython
    from IPython.core.formatters import DisplayFormatter

    shell = get_ipython()
    return shell.display_formatter if shell is not None else DisplayFormatter()


def _display_data(obj: Any) -> dict:
    """An output for the live ``Output`` widget. A chart keeps Altair's HTML only: the
    Vega-Lite entry is for the static book, and the widget's state is saved in the notebook."""
    data, metadata = _formatter().format(obj)
    data = {k: v for k, v in data.items() if not k.startswith("application/vnd.vegalite")}
    return {"output_type": "display_data", "data": data, "metadata": metadata}


def _sum_heads(heads: Sequence[Head]) -> str:
    return ", ".join(f"{l}.{h}" for l, h in heads) or "none"


# ----------------------------------------------------------------------------- base


class Explorer:
    """Controls plus an ``Output`` showing one chart, recomputed when a control changes.

    ``widget`` is the ipywidgets box; ``chart`` the current view; ``error`` the last
    failure's message (shown in the widget instead of a chart), or ``None``.
    """

    title = "explorer"

    def __init__(self) -> None:
        import ipywidgets as w

        self.output = w.Output()
        self.status = w.HTML()
        self.chart: alt.TopLevelMixin | None = None
        self.error: str | None = None
        self._quiet = False

    def controls(self) -> list:
        raise NotImplementedError

    def view(self) -> alt.TopLevelMixin:
        """The chart for the current control values."""
        raise NotImplementedError

    def _build(self) -> None:
        import ipywidgets as w

        for c in self.controls():
            c.observe(self._changed, names="value")
        self.widget = w.VBox([w.HBox(self.controls(), layout=w.Layout(flex_flow="row wrap")),
                              self.status, self.output])
        self.refresh()

    def _changed(self, _change=None) -> None:
        if not self._quiet:
            self.refresh()

    def refresh(self) -> None:
        """Recompute the view and put it in the output (errors are shown, not raised)."""
        self.status.value = "<i>computing...</i>"
        try:
            chart = self.view()
        except (ValueError, KeyError) as err:  # a bad prompt or name: say so in the widget
            self.error = str(err)
            self.status.value = f"<b>Cannot compute this view:</b> {_escape(self.error)}"
            self.output.outputs = ()
            return
        self.error = None
        self.chart = chart
        self.output.outputs = (_display_data(chart),)
        self.status.value = ""

    def _repr_mimebundle_(self, include=None, exclude=None):
        """The live widget for front ends that render widgets, else the chart (see module doc)."""
        data: dict = {}
        metadata: dict = {}
        if self.chart is not None:
            fmt = _formatter().format(self.chart)
            data, metadata = dict(fmt[0]), dict(fmt[1])
        data.update(self.widget._repr_mimebundle_() or {})
        data["text/plain"] = LIVE_ONLY
        return data, metadata


def _escape(text: str) -> str:
    import html

    return html.escape(text)


# ----------------------------------------------------------------------------- prompts


@dataclass
class PromptAnalysis:
    """One prompt through the model: tokens, END logits, logit diff, attention patterns."""

    ds: dataset.IOIDataset  # the prompt as a one-prompt dataset (positions IO, S1, S2, END)
    tokens: list[str]
    end_logits: Float[Tensor, "vocab"]
    logit_diff: float
    patterns: Float[Tensor, "layer head query key"]

    def top(self, tokenizer, k: int = 10) -> pd.DataFrame:
        """The ``k`` most probable next tokens at END."""
        probs = self.end_logits.double().softmax(-1)
        p, idx = probs.topk(k)
        return pd.DataFrame({"token": [repr(tokenizer.decode([int(i)])) for i in idx],
                             "probability": p.float().numpy(),
                             "logit": self.end_logits[idx].float().numpy()})


def prompt_dataset(tokenizer, text: str, io: str, s: str, prepend_bos: bool = False,
                   ) -> dataset.IOIDataset:
    """Any IOI-style prompt as a one-prompt dataset, so the package's metrics apply to it.

    ``io`` and ``s`` are names without the leading space; each must be one GPT-2 token with
    its space, and occur in ``text`` (S1/S2 are the first/last occurrence of ``s``). The
    answer compared at END is `` io`` against `` s``.
    """
    text = text.rstrip()
    if not text:
        raise ValueError("the prompt is empty")
    for role, name in (("IO", io), ("S", s)):
        name = name.strip()
        if not name or len(tokenizer.encode(" " + name, add_special_tokens=False)) != 1:
            raise ValueError(f"{role} name {name!r} is not a single GPT-2 token with its leading space")
    io, s = io.strip(), s.strip()
    if io == s:
        raise ValueError("IO and S must be different names")
    template = dataset.Template("BABA", -1, text)  # a stand-in: only .group is ever read
    prompt = dataset.IOIPrompt(text, template, io, s, "", "", (io, s, s))
    try:
        return dataset._tokenize(tokenizer, [prompt], prepend_bos, 0, "custom", [io], [s], {})
    except ValueError as err:
        raise ValueError(f"both names must occur in the prompt as words with a leading space "
                         f"({err})") from None


def analyse_prompt(model, text: str, io: str, s: str, prepend_bos: bool = False) -> PromptAnalysis:
    """Run one prompt: logit diff (``metrics.logit_diff``) and every head's attention pattern."""
    from .models import get_tokenizer

    tok = get_tokenizer()
    ds = prompt_dataset(tok, text, io, s, prepend_bos)
    names = [hook_name("pattern", l) for l in range(model.cfg.n_layers)]
    end_logits, store = run(model, ds.tokens, ds.pos["END"], cache=names)
    end_logits = end_logits.float().cpu()
    patterns = torch.stack([store[n][0].float().cpu() for n in names])  # [layer, head, q, k]
    row = ds.tokens[0].tolist()
    return PromptAnalysis(ds=ds, tokens=[tok.decode([t]) for t in row], end_logits=end_logits[0],
                          logit_diff=metrics.logit_diff(end_logits, ds)[0].item(), patterns=patterns)


def attention_data(model, ds: dataset.IOIDataset, indices: Sequence[int],
                   ) -> tuple[Float[Tensor, "prompt layer head query key"], list[list[str]]]:
    """Every head's attention pattern on a few prompts of ``ds`` (for
    ``plots.attention_explorer_chart``), and each prompt's tokens up to its END."""
    from .models import get_tokenizer

    tok = get_tokenizer()
    part = ds[list(indices)]
    names = [hook_name("pattern", l) for l in range(model.cfg.n_layers)]
    store = cache_activations(model, part.tokens, names)
    patterns = torch.stack([store[n].float().cpu() for n in names], dim=1)  # [p, layer, head, q, k]
    tokens = [[tok.decode([t]) for t in part.tokens[i, :int(part.lengths[i])].tolist()]
              for i in range(len(part))]
    return patterns, tokens


class PromptExplorer(Explorer):
    """Type or pick a prompt, choose IO and S, pick a head: logit diff, top predictions and
    the head's attention pattern, with its discovered class."""

    title = "prompt explorer"

    def __init__(self, model, classes: Mapping[str, Any] | None = None,
                 ds: dataset.IOIDataset | None = None, head: Head | None = None,
                 top_k: int = 8, prepend_bos: bool | None = None) -> None:
        import ipywidgets as w

        super().__init__()
        from .models import get_tokenizer

        self.model, self.tokenizer, self.top_k = model, get_tokenizer(), top_k
        self.classes = class_heads(classes)
        self.class_of = plots.head_classes(self.classes)
        self.ds = ds if ds is not None else dataset.make_ioi_dataset(self.tokenizer, PROMPT_CHOICES)
        self.prepend_bos = self.ds.prepend_bos if prepend_bos is None else prepend_bos
        first = next((hs[0] for hs in self.classes.values() if hs), None)
        layer, index = head or first or (model.cfg.n_layers - 1, 0)
        n = min(PROMPT_CHOICES, len(self.ds))
        p0 = self.ds.prompts[0]
        self.pick = w.Dropdown(options=[(p.text[:70], i) for i, p in enumerate(self.ds.prompts[:n])]
                               + [("(custom prompt: type it below)", -1)], value=0,
                               description="prompt", layout=w.Layout(width="560px"))
        self.text = w.Text(value=p0.text, description="text", layout=w.Layout(width="560px"))
        self.io = w.Text(value=p0.io, description="IO", layout=w.Layout(width="180px"))
        self.s = w.Text(value=p0.s, description="S", layout=w.Layout(width="180px"))
        self.layer = w.Dropdown(options=list(range(model.cfg.n_layers)), value=layer,
                                description="layer", layout=w.Layout(width="150px"))
        self.head = w.Dropdown(options=list(range(model.cfg.n_heads)), value=index,
                               description="head", layout=w.Layout(width="150px"))
        self.pick.observe(self._picked, names="value")
        self._analysis: tuple[tuple, PromptAnalysis] | None = None
        self._build()

    def controls(self) -> list:
        return [self.text, self.io, self.s, self.layer, self.head]

    def _build(self) -> None:
        super()._build()
        self.widget.children = (self.pick,) + tuple(self.widget.children)

    def _picked(self, change) -> None:
        if change["new"] == -1:
            return
        p = self.ds.prompts[change["new"]]
        self._quiet = True
        try:
            self.text.value, self.io.value, self.s.value = p.text, p.io, p.s
        finally:
            self._quiet = False
        self.refresh()

    def analysis(self) -> PromptAnalysis:
        """The current prompt's analysis (recomputed only when the prompt or names change)."""
        key = (self.text.value, self.io.value.strip(), self.s.value.strip(), self.prepend_bos)
        if self._analysis is None or self._analysis[0] != key:
            self._analysis = (key, analyse_prompt(self.model, *key))
        return self._analysis[1]

    def view(self) -> alt.TopLevelMixin:
        a = self.analysis()
        layer, index = self.layer.value, self.head.value
        cls = self.class_of.get((layer, index), "no class")
        model_name = getattr(self.model, "ioi_model_name", "model")
        pattern = plots.attention_pattern(a.patterns[layer, index], a.tokens,
                                          title=f"attention of head {layer}.{index} ({cls})")
        top = plots.bar_chart(a.top(self.tokenizer, self.top_k), x="token", y="probability",
                              title=f"top {self.top_k} predictions at END", horizontal=True)
        return alt.vconcat(pattern, top.properties(width=300)).properties(title=alt.TitleParams(
            f"logit diff ' {self.io.value.strip()}' - ' {self.s.value.strip()}' = {a.logit_diff:.3f} "
            f"({model_name})", subtitle=[a.ds.prompts[0].text]))


# ----------------------------------------------------------------------------- path patching


class PatchingExplorer(Explorer):
    """Path patching from every head to a receiver, for a chosen dataset size.

    Receivers: the logits (at END), or the q, k or v of a discovered class at a named
    position. A sender class outlines its heads and adds the effect of patching them together.
    The score is the paper's: (patched - clean) / |clean| logit diff.
    """

    title = "path-patching explorer"

    def __init__(self, setup: discovery.Setup, classes: Mapping[str, Any] | None = None,
                 sizes: Sequence[int] = (25, 50, 100, 200)) -> None:
        import ipywidgets as w

        super().__init__()
        self.base = setup
        self.classes = {k: v for k, v in class_heads(classes).items() if v}
        self._setups = {setup.n_prompts: setup}
        self._results: dict[tuple, patching.PathPatchingResult] = {}
        options = [("logits (direct effect at END)", "logits")]
        options += [(f"{c} of {name}", f"{c}|{name}") for name in self.classes for c in "qkv"]
        self.receiver = w.Dropdown(options=options, value="logits", description="receiver",
                                   layout=w.Layout(width="330px"))
        self.position = w.Dropdown(options=list(dataset.POSITIONS), value="END",
                                   description="at", disabled=True, layout=w.Layout(width="150px"))
        self.sender = w.Dropdown(options=["(none)"] + list(self.classes), value="(none)",
                                 description="sender class", layout=w.Layout(width="300px"))
        sizes = sorted(set(sizes) | {setup.n_prompts})
        self.size = w.Dropdown(options=sizes, value=setup.n_prompts, description="N prompts",
                               layout=w.Layout(width="170px"))
        self.receiver.observe(self._receiver_changed, names="value")
        self._build()

    def controls(self) -> list:
        return [self.receiver, self.position, self.sender, self.size]

    def _receiver_changed(self, change) -> None:
        """A new receiver: set the position the chapters use for it (before recomputing)."""
        self._quiet = True
        try:
            if change["new"] == "logits":
                self.position.value, self.position.disabled = "END", True
            else:
                c, name = change["new"].split("|", 1)
                self.position.disabled = False
                self.position.value = (paper.KEPT_AT.get(name, "END") if c == "q"
                                       else KV_POSITION.get(name, "END"))
        finally:
            self._quiet = False

    def setup(self) -> discovery.Setup:
        n = self.size.value
        if n not in self._setups:
            b = self.base
            self._setups[n] = discovery.Setup(b.model, n, b.seed, b.prepend_bos, b.template_set)
        return self._setups[n]

    def result(self) -> patching.PathPatchingResult:
        """Path patching for the current receiver, position and size (memoised)."""
        setup, receiver, position = self.setup(), self.receiver.value, self.position.value
        key = (setup.n_prompts, receiver, position)
        if key not in self._results:
            if receiver == "logits":
                self._results[key] = discovery.direct_effects(setup)
            else:
                c, name = receiver.split("|", 1)
                self._results[key] = patching.path_patch(
                    setup.model, setup.ioi, setup.abc, receivers=self.classes[name],
                    receiver_input=c, position=position, caches=setup.caches)
        return self._results[key]

    def sender_effect(self) -> float | None:
        """The score of patching the sender class's heads together (None: no class)."""
        name = self.sender.value
        if name == "(none)":
            return None
        setup, receiver, position = self.setup(), self.receiver.value, self.position.value
        key = (setup.n_prompts, receiver, position, "sender", name)
        if key not in self._results:
            group = [tuple(self.classes[name])]
            if receiver == "logits":
                r = patching.path_patch(setup.model, setup.ioi, setup.abc, senders=group,
                                        caches=setup.caches)
            else:
                c, rec = receiver.split("|", 1)
                r = patching.path_patch(setup.model, setup.ioi, setup.abc,
                                        receivers=self.classes[rec], receiver_input=c,
                                        position=position, senders=group, caches=setup.caches)
            self._results[key] = r
        return float(self._results[key].relative[0])

    def view(self) -> alt.TopLevelMixin:
        r = self.result()
        sender = self.sender.value
        highlight = self.classes.get(sender, [])
        subtitle = [f"{getattr(self.base.model, 'ioi_model_name', 'model')}, N = {self.size.value}, "
                    f"clean logit diff {r.clean:.3f}, on p_ABC {r.corrupted:.3f}; "
                    f"score = (patched - clean) / |clean|"]
        if sender != "(none)":
            subtitle.append(f"{sender} heads ({_sum_heads(highlight)}, outlined) patched together: "
                            f"{self.sender_effect():+.3f}")
        chart = plots.head_heatmap(r.relative, title=f"path patching: each head -> {r.receivers}",
                                   value_label="relative effect", highlight=highlight)
        return chart.properties(title=alt.TitleParams(f"path patching: each head -> {r.receivers}",
                                                      subtitle=subtitle))


# ----------------------------------------------------------------------------- ablation


class AblationExplorer(Explorer):
    """Tick classes in or out of the circuit and see F(C) against F(M) (mean ablation).

    The circuit keeps each head of a ticked class at its class's position
    (``discovery.circuit``); every other head is mean-ablated over p_ABC, per template
    group (``ablation.ablation_values``).
    """

    title = "ablation explorer"

    def __init__(self, setup: discovery.Setup, classes: Mapping[str, discovery.HeadClass],
                 values: ablation.Values | None = None) -> None:
        import ipywidgets as w

        super().__init__()
        self.setup = setup
        self.classes = dict(classes)
        self._values = values
        self._model_ld: Tensor | None = None
        self._memo: dict[frozenset, ablation.Faithfulness] = {}
        self.boxes = {name: w.Checkbox(value=bool(c.heads), disabled=not c.heads, indent=False,
                                       description=f"{name} ({_sum_heads(c.heads)})",
                                       layout=w.Layout(width="auto"))
                      for name, c in self.classes.items()}
        self._build()

    def controls(self) -> list:
        return list(self.boxes.values())

    @property
    def values(self) -> ablation.Values:
        if self._values is None:
            s = self.setup
            self._values = ablation.ablation_values(s.model, s.ioi, s.abc)
        return self._values

    def selected(self) -> list[str]:
        return [n for n, b in self.boxes.items() if b.value and self.classes[n].heads]

    def faithfulness(self, names: Iterable[str] | None = None) -> ablation.Faithfulness:
        """F(M) and F(C) for the circuit of the classes ``names`` (default: the ticked ones).

        The same numbers as ``ablation.faithfulness``; the model's run is computed once and
        shared by every subset."""
        names = frozenset(self.selected() if names is None else names)
        if names not in self._memo:
            s = self.setup
            if self._model_ld is None:
                self._model_ld = ablation.ablated_logit_diff(
                    s.model, s.ioi, ablation.knockout_mask(s.model, s.ioi, []), self.values)
            circuit = discovery.circuit([c for n, c in self.classes.items() if n in names])
            self._memo[names] = ablation.Faithfulness(
                self._model_ld, ablation.circuit_logit_diff(s.model, s.ioi, self.values, circuit))
        return self._memo[names]

    def _boxed(self, limit: int) -> list[str]:
        """The (at most ``limit`` largest) non-empty classes, in the classes' own order."""
        found = sorted((n for n, c in self.classes.items() if c.heads),
                       key=lambda n: -len(self.classes[n].heads))[:limit]
        return [n for n in self.classes if n in found]

    def always_kept(self, limit: int = MAX_ABLATION_CLASSES) -> list[str]:
        """The non-empty classes beyond ``limit``: no checkbox in the static chart, and in the
        circuit of every one of its rows."""
        boxed = self._boxed(limit)
        return [n for n, c in self.classes.items() if c.heads and n not in boxed]

    def subsets(self, limit: int = MAX_ABLATION_CLASSES) -> tuple[list[str], list[dict]]:
        """F(C) and F(M) for every subset of the (at most ``limit`` largest) non-empty classes:
        the rows of ``plots.ablation_explorer_chart``. The classes of :meth:`always_kept` are in
        every row's circuit (its ``"classes"`` lists the ticked ones only), so the row with every
        box ticked is the full circuit."""
        found, fixed = self._boxed(limit), self.always_kept(limit)
        rows = []
        for k in range(len(found) + 1):
            for kept in itertools.combinations(found, k):
                f = self.faithfulness([*fixed, *kept])
                rows.append({"classes": list(kept), "F(C)": f.F_C, "F(M)": f.F_M})
        return found, rows

    def view(self) -> alt.TopLevelMixin:
        f = self.faithfulness()
        kept = self.selected()
        model_name = getattr(self.setup.model, "ioi_model_name", "model")
        df = pd.DataFrame({"run": ["F(M): model", "F(C): circuit"], "logit diff": [f.F_M, f.F_C]})
        chart = plots.bar_chart(df, x="run", y="logit diff", horizontal=True)
        return chart.properties(width=360, title=alt.TitleParams(
            f"F(C)/F(M) = {f.ratio:.3f} ({model_name}, N = {self.setup.n_prompts}, mean ablation)",
            subtitle=[f"circuit: {', '.join(kept) or 'no class (every head ablated)'}; "
                      f"paper, GPT-2 small, full circuit: {paper.NUMBERS['circuit.faithfulness']['value']}"]))
