"""JUnit XML for packetdrill runs: one <testcase> per script and mode; failures carry the mismatch,
unsupported scripts are <skipped> with the construct (counted, never silently passed).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from chimney.packetdrill.report import SuiteResult


def junit_xml(suite: SuiteResult, name: str = "packetdrill") -> str:
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root, "testsuite", name=name, tests=str(len(suite.results)), failures=str(suite.count("fail")),
        errors="0", skipped=str(suite.count("unsupported")),
        time=f"{sum(r.elapsed_s for r in suite.results):.3f}",
    )
    for r in suite.results:
        p = Path(r.path)
        tc = ET.SubElement(ts, "testcase", classname=f"packetdrill.{r.mode}.{p.parent.name or 'scripts'}",
                           name=p.name, file=str(r.path), time=f"{r.elapsed_s:.3f}")
        if r.line is not None:
            tc.set("line", str(r.line))
        if r.status == "fail":
            f = ET.SubElement(tc, "failure", message=r.message.split("\n")[0], type="mismatch")
            f.text = r.message
        elif r.status == "unsupported":
            ET.SubElement(tc, "skipped", message=r.message)
        if r.notes:
            ET.SubElement(tc, "system-out").text = "\n".join(r.notes)
    diffs = suite.mode_diffs
    if diffs:
        ET.SubElement(ts, "system-out").text = "\n".join(
            f"{path}: " + "; ".join(d) for path, d in diffs.items())
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(suite: SuiteResult, path: str | Path) -> None:
    Path(path).write_text(junit_xml(suite), encoding="utf-8")


__all__ = ["junit_xml", "write_junit"]
