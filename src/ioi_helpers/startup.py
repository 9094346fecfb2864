"""Deferred imports for the pipeline's warm kernels (``pipeline.WARM_UP``).

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
import sys
import types

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
