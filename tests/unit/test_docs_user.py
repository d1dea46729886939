"""docs/install.md and docs/troubleshooting.md stay true to what they describe: every alert's
runbook_url lands on a heading, every link inside docs/ lands on a heading, every condition
reason is explained, every top-level chart value is mentioned, and the CRD upgrade command
is the one the chart names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from driftwarden.api.conditions import Reason
from driftwarden.promql import PrometheusReason

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
INSTALL = DOCS / "install.md"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
CHART = ROOT / "charts/driftwarden"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6} (.+)", line)):
            found.add(github_anchor(match.group(1)))
    return found


def test_anchor_rule() -> None:
    assert github_anchor("Serving latency from Prometheus") == "serving-latency-from-prometheus"
    assert github_anchor("Conditions and their reasons") == "conditions-and-their-reasons"
    assert (
        github_anchor("Which namespaces: `watchNamespaces`") == "which-namespaces-watchnamespaces"
    )


def test_every_alert_runbook_lands_on_a_heading() -> None:
    groups = yaml.safe_load((CHART / "files/alerts.yaml").read_text())["groups"]
    urls = {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    }
    headings = anchors(TROUBLESHOOTING)
    for alert, url in urls.items():
        page, _, fragment = url.partition("#")
        assert page == "docs/troubleshooting.md", alert
        assert fragment in headings, f"{alert}: no heading #{fragment}"
        assert fragment == alert.lower()


@pytest.mark.parametrize("doc", [INSTALL, TROUBLESHOOTING], ids=lambda p: p.name)
def test_links_inside_docs_resolve(doc: Path) -> None:
    for target, fragment in re.findall(r"\]\(([\w./-]*\.md)?#([\w-]+)\)", doc.read_text()):
        page = (doc.parent / target) if target else doc
        assert page.is_file(), f"{doc.name}: link to missing {target}"
        assert fragment in anchors(page), f"{doc.name}: {target}#{fragment} has no heading"
    for target in re.findall(r"\]\(([\w./-]+\.md)\)", doc.read_text()):
        assert (doc.parent / target).is_file(), f"{doc.name}: link to missing {target}"


def test_every_reason_is_explained() -> None:
    text = TROUBLESHOOTING.read_text()
    missing = [r.value for r in [*Reason, *PrometheusReason] if f"`{r.value}`" not in text]
    assert missing == []


def test_every_top_level_value_is_in_the_install_guide() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = INSTALL.read_text()
    missing = [key for key in values if f"`{key}" not in text]
    assert missing == []


def test_crd_upgrade_command_is_the_charts() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    command = chart["annotations"]["driftwarden.io/crd-upgrade"]
    assert command == "kubectl apply --server-side -f crds/"
    documented = command.replace("crds/", "charts/driftwarden/crds/")
    assert INSTALL.read_text().count(documented) >= 2  # install and upgrade
    assert (ROOT / "charts/driftwarden/crds").is_dir()
