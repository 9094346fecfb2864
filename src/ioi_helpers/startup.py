"""What a chapter kernel does before its chapter: the warm-up (:data:`WARM_UP`, :data:`WARM_MODEL`),
run by the pipeline's warm kernels and its fork server, and the deferred imports it uses.

``import altair`` imports ``jsonschema``, whose format checkers import ``rfc3987_syntax`` when
it is installed (it is: ``jsonschema[format-nongpl]``, through Jupyter). That module compiles
an Earley parser for RFC 3987's grammar when it is imported: 2.3 s of CPU, a third of a
chapter kernel's imports, for a checker (the ``iri`` and ``iri-reference`` formats) that only
runs when a schema is validated with a format checker, which altair does not do.

:func:`defer_iri_grammar` puts a stand-in for ``rfc3987_syntax`` in ``sys.modules`` before
``jsonschema`` is imported: the same names, and the real module (and its parser) is imported
on the first call or attribute read. What ``jsonschema`` checks does not change, only when
the parser is built.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

IRI_MODULE = "rfc3987_syntax"


def defer_iri_grammar() -> bool:
    """Defer ``rfc3987_syntax``'s import until it is used. True if the stand-in was installed;
    False when it cannot matter (not installed, already imported, or ``jsonschema`` already
    imported)."""
    if IRI_MODULE in sys.modules or "jsonschema" in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec(IRI_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return False
    stand_in = types.ModuleType(IRI_MODULE, "Imports the real rfc3987_syntax when first used.")
    stand_in.__spec__ = None  # importlib.reload and friends must not mistake it for the real one

    def real() -> types.ModuleType:
        module = sys.modules.get(IRI_MODULE)
        if module is stand_in or module is None:
            sys.modules.pop(IRI_MODULE, None)
            try:
                module = importlib.import_module(IRI_MODULE)
            except BaseException:
                sys.modules[IRI_MODULE] = stand_in
                raise
        return module

    def is_valid_syntax(term: str, value: str) -> bool:
        return real().is_valid_syntax(term, value)

    def parse(term: str, value: str):
        return real().parse(term, value)

    stand_in.is_valid_syntax = is_valid_syntax
    stand_in.parse = parse
    def other(name: str):  # every other public name (PEP 562); the import system's probes of
        if name.startswith("__"):  # __path__, __file__, ... must not build the parser
            raise AttributeError(name)
        return getattr(real(), name)

    stand_in.__getattr__ = other
    sys.modules[IRI_MODULE] = stand_in
    return True


# What a chapter's set-up cell spends its time on: imports, the tokenizer and the model. A warm
# kernel has done these before its chapter starts: WARM_UP always, WARM_MODEL when the
# chapter loads its model with `models.load_model(model_name)` (the model is parked in
# models' one-shot hand-over slot, taken by that call: see models.prepare_handover).
WARM_UP = """\
from ioi_helpers import startup as _w0
_w0.defer_iri_grammar()  # altair's jsonschema would build an IRI parser it never uses: 2.3 s
import altair as _w1, pandas as _w2, torch as _w3, transformers as _w4
from transformer_lens.model_bridge import TransformerBridge as _w5
from ioi_helpers import dataset as _w6, metrics as _w7, models as _w8, plots as _w9, results as _w10
_w8.get_tokenizer()
del _w0, _w1, _w2, _w3, _w4, _w5, _w6, _w7, _w8, _w9, _w10
"""
WARM_MODEL = """\
from ioi_helpers import models as _w8
_w8.prepare_handover({model_name!r})
del _w8
"""
LOADS_MODEL = re.compile(r"^[^#\n]*\bmodels\.load_model\(model_name\)", re.MULTILINE)


def loads_model(path: Path | None, params: dict[str, Any] | None) -> bool:
    """Whether the chapter at ``path`` calls ``models.load_model(model_name)`` with a
    ``model_name`` that ``params`` (its injected parameters) hold: then its model can be built
    before it runs."""
    return path is not None and "model_name" in (params or {}) and bool(LOADS_MODEL.search(Path(path).read_text()))


def warm_up_code(path: Path | None = None, params: dict[str, Any] | None = None) -> str:
    """The warm-up for a chapter: WARM_UP, plus WARM_MODEL when it :func:`loads_model`
    (``model_name=None`` means ``$IOI_MODEL``, resolved in the kernel as the chapter would)."""
    code = WARM_UP
    if loads_model(path, params):
        code += WARM_MODEL.format(model_name=params["model_name"])
    return code
