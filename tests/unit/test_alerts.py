"""The alert rules and the Grafana dashboard: promtool tests, and every metric they query
is one the operator exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftwarden.metrics import OperatorMetrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "charts/driftwarden/files/alerts.yaml"
DASHBOARD = ROOT / "charts/driftwarden/files/dashboard.json"
PROMTOOL_TESTS = ROOT / "tests/fixtures/promtool/alerts_test.yaml"
REFERENCE = ROOT / "docs/metrics.md"

# Series Prometheus itself provides (not the operator) that the assets may query.
PROMETHEUS_SERIES = {"up"}
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "atan2",
}  # fmt: skip
EXPECTED_ALERTS = {
    "DriftWardenDriftDetected",
    "DriftWardenLatencySLOBreached",
    "DriftWardenOptimizationFailed",
    "DriftWardenTemporaryFixActiveTooLong",
    "DriftWardenEvaluationStale",
    "DriftWardenOperatorDown",
    "DriftWardenNoActiveReplica",
}
# Grafana's variables, replaced by values so that promtool can parse the queries.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$__interval": "1m",
    "$namespace": "prod",
    "$name": "fraud",
}


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if found:
        return found
    reason = "promtool not found (Debian package `prometheus`)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must install it")
    pytest.skip(reason + "; install it with: apt-get install -y prometheus")


def exported() -> tuple[set[str], set[str]]:
    """Every sample name and label name the operator exports, one sample of each metric."""
    metrics = OperatorMetrics()
    metrics.set_slo("prod", "fraud", 50.0)
    metrics.set_evaluation_interval("prod", "fraud", 300.0)
    metrics.record_evaluation(
        "prod",
        "fraud",
        drift_score=0.3,
        drifted_features=2,
        drift_detected=True,
        latency_ms={"p50": 10.0, "p95": 20.0, "p99": 30.0},
        accuracy=0.9,
        timestamp=1_700_000_000.0,
    )
    metrics.record_run("prod", "fraud", "Failed", 60.0)
    metrics.set_temporary_fix("prod", "fraud", True, expires_at=1_700_003_600.0)
    metrics.observe_reconcile(0.01)
    text = generate_latest(metrics.registry).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return {s.name for s in samples}, {label for s in samples for label in s.labels}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (a small lexer, no full parser)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists of grouping and matching clauses
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in PROMQL_KEYWORDS or word in {"Inf", "NaN", "inf", "nan"}:
            continue
        names.add(word)
    return names


def label_names(expr: str) -> set[str]:
    """Label names in matchers and in grouping/matching clauses."""
    names = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        names |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        names |= {n.strip() for n in clause.split(",") if n.strip()}
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_the_extractor_sees_names_and_ignores_the_rest() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(driftwarden_x_bucket{name=~"a"}[5m])))'
        ' > on (namespace, name) group_left driftwarden_slo and time() - up{job="b"}'
    )
    assert metric_names(expr) == {"driftwarden_x_bucket", "driftwarden_slo", "up"}
    assert label_names(expr) == {"name", "namespace", "le", "job"}
    assert metric_names('label_values(driftwarden_y{namespace=~"$namespace"}, name)') == {
        "driftwarden_y",
        "name",
    }


def test_rules_and_dashboard_query_only_exported_metrics() -> None:
    samples, labels = exported()
    known = samples | PROMETHEUS_SERIES
    rule_exprs = [rule["expr"] for rule in alert_rules()]
    # label_values(metric, label): its second argument is a label, not a series.
    variable_exprs = [re.sub(r",\s*\w+\)$", ")", e) for e in dashboard_exprs()]
    queried: set[str] = set()
    for expr in rule_exprs + variable_exprs:
        names = metric_names(expr)
        unknown = names - known
        assert not unknown, f"{expr!r} queries {sorted(unknown)}, which nothing exports"
        queried |= names
        unknown_labels = label_names(expr) - labels - {"job", "instance"}
        assert not unknown_labels, f"{expr!r} uses labels {sorted(unknown_labels)}"
    # And the assets really use the metrics (a regex that found nothing would pass above).
    for core in (
        "driftwarden_drift_score",
        "driftwarden_drifted_features",
        "driftwarden_model_latency_seconds",
        "driftwarden_latency_slo_seconds",
        "driftwarden_model_accuracy",
        "driftwarden_optimization_runs_total",
        "driftwarden_temporary_fix_active",
        "driftwarden_last_evaluation_timestamp_seconds",
    ):
        assert core in queried


def test_dashboard_filters_every_resource_query_by_its_variables() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "name"} <= variables
    operator_wide = {"driftwarden_reconcile_duration_seconds_bucket"}
    operator_wide |= {"driftwarden_reconcile_duration_seconds_count", "up"}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for selector in re.findall(r"(driftwarden_\w+)(\{[^}]*\})?", expr):
                if selector[0] in operator_wide:
                    continue
                assert 'namespace=~"$namespace"' in selector[1], (panel["title"], expr)
                assert 'name=~"$name"' in selector[1], (panel["title"], expr)


def test_every_alert_is_complete() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"]
        anchor = rule["alert"].lower()
        assert annotations["runbook_url"] == f"docs/troubleshooting.md#{anchor}"


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(PROMTOOL_TESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    # The same tests against a rule with a wrong threshold must fail: they test something.
    broken = ALERTS.read_text().replace(
        "(driftwarden_drift_detected == 1)", "(driftwarden_drift_detected == 2)"
    )
    assert broken != ALERTS.read_text()
    (tmp_path / "alerts.yaml").write_text(broken)
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text())
    tests["rule_files"] = [str(tmp_path / "alerts.yaml")]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "test.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DriftWardenDriftDetected" in result.stdout + result.stderr


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    # promtool parses PromQL when it checks recording rules: one rule per panel query.
    rules = []
    for index, expr in enumerate(
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])
    ):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard_query_{index}", "expr": expr})
    assert len(rules) >= 10
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", "--lint=none", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_reference_doc_names_every_metric_and_alert() -> None:
    doc = REFERENCE.read_text()
    families = list(OperatorMetrics().registry.collect())
    assert len(families) >= 14
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in doc, f"docs/metrics.md does not describe {name}"
    for alert in EXPECTED_ALERTS:
        assert f"`{alert}`" in doc, f"docs/metrics.md does not describe {alert}"


ON_CALL_QUESTIONS = {
    "Is it drifting?": {"driftwarden_drift_detected", "driftwarden_drift_score"},
    "Is it slow? (p95 / SLO)": {
        "driftwarden_model_latency_seconds",
        "driftwarden_latency_slo_seconds",
    },
    "Is a fix active, and until when?": {
        "driftwarden_temporary_fix_active",
        "driftwarden_temporary_fix_expiry_timestamp_seconds",
    },
    "What did the last run do?": {"driftwarden_optimization_runs_total"},
}


def test_the_on_call_row_answers_each_question_from_exported_metrics() -> None:
    """Issue 18: a panel per question an on-call person asks, at the top of the board, each
    from series the operator exports; the drift, latency and run panels link to the reports
    (under the `reports` variable: where spec.artifacts.uri is browsable)."""
    board = json.loads(DASHBOARD.read_text())
    samples, labels = exported()
    top = [p for p in board["panels"] if p["gridPos"]["y"] <= 1 and p["type"] != "row"]
    assert {p["title"] for p in top} == set(ON_CALL_QUESTIONS)
    for panel in top:
        names = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
        assert names == ON_CALL_QUESTIONS[panel["title"]], panel["title"]
        assert names <= samples
        for target in panel["targets"]:
            assert label_names(target["expr"]) <= labels, target["expr"]
    links = {
        p["title"]: [link["url"] for link in p["fieldConfig"]["defaults"].get("links", [])]
        for p in top
    }
    assert links["What did the last run do?"] == ["${reports}/${__field.labels.name}/"]
    for question in ("Is it drifting?", "Is it slow? (p95 / SLO)"):
        assert links[question] == ["${reports}/${__field.labels.name}/evaluations/"]
    assert "reports" in {v["name"] for v in board["templating"]["list"]}
    # Panels do not overlap: each row of the grid is used once.
    cells = [
        (x, y)
        for p in board["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))
