"""Deferred imports of the pipeline's warm kernels (ioi_helpers.startup)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("rfc3987_syntax")

PROBE = """
import json, sys
if sys.argv[1] == "deferred":
    from ioi_helpers import startup
    assert startup.defer_iri_grammar()
import altair, jsonschema
built_by_import = "rfc3987_syntax.syntax_helpers" in sys.modules
checker = jsonschema.FormatChecker()
values = ["http://example.com/\\u00fc", "not an iri", "urn:isbn:0451450523", "http://[::1", "//host/ref",
          "https://a.b/c?d=e#f", "mailto:x@y.z", "", "http://exa mple.com"]
checks = [[checker.conforms(v, fmt) for v in values] for fmt in ("iri", "iri-reference")]
print(json.dumps({"built_by_import": built_by_import, "checks": checks,
                  "built_after": "rfc3987_syntax.syntax_helpers" in sys.modules}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_iri_grammar_is_built_on_first_use_and_checks_the_same():
    eager, deferred = probe("eager"), probe("deferred")
    assert eager["built_by_import"] and not deferred["built_by_import"]
    assert deferred["built_after"]
    assert deferred["checks"] == eager["checks"]
    assert True in eager["checks"][0] and False in eager["checks"][0]  # the values tell formats apart


def test_the_stand_in_is_not_installed_once_jsonschema_is_imported():
    import jsonschema  # noqa: F401 - imported by this test process already, as in any kernel that used altair

    from ioi_helpers import startup

    assert startup.defer_iri_grammar() is False
