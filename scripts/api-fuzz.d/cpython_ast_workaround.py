"""Loaded by scripts/api-fuzz through SCHEMATHESIS_HOOKS.

CPython 3.11.0 to 3.11.7 can raise "SystemError: AST constructor recursion depth mismatch" from
ast.parse deep in a call stack (CPython gh-106905, fixed in 3.11.8). Hypothesis parses the
source of lambdas only to describe its strategies, and schemathesis' generator reaches that
deep enough to hit the bug, which fails a run for reasons that have nothing to do with the API.
On those Pythons, a lambda whose source trips the bug is described as unknown instead;
generation is unchanged.
"""

import sys

if sys.version_info[:2] == (3, 11) and sys.version_info[2] < 8:
    from hypothesis.internal import lambda_sources

    _describe = lambda_sources.lambda_description

    def _lambda_description(f):
        try:
            return _describe(f)
        except SystemError:
            return "lambda: <unknown>"

    lambda_sources.lambda_description = _lambda_description
