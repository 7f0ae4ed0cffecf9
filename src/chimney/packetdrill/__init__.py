"""packetdrill for tcp-chimney: parse packetdrill scripts and run them against our stack in simulated time.

`run_suite(paths, mode=, seed=, tolerance_usecs=, profile=)` -> `SuiteResult`; `chimney packetdrill` CLI.
"""

from chimney.packetdrill.interp import DEFAULT_TOLERANCE_USECS, Mismatch, Runner, ScriptResult, Unsupported
from chimney.packetdrill.junit import junit_xml, write_junit
from chimney.packetdrill.parser import ParseError, parse_file, parse_script
from chimney.packetdrill.report import SuiteResult, format_suite, run_file, run_suite

__all__ = [
    "DEFAULT_TOLERANCE_USECS",
    "Mismatch",
    "ParseError",
    "Runner",
    "ScriptResult",
    "SuiteResult",
    "Unsupported",
    "format_suite",
    "junit_xml",
    "parse_file",
    "parse_script",
    "run_file",
    "run_suite",
    "write_junit",
]
