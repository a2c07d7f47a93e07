"""The SRE's stack in k8s/observability: the alert rules pass `promtool check rules` and their unit
tests (every alert shown firing and not firing), the Kubernetes wrappers match their sources,
every PromQL expression of the dashboard parses, and the dashboard and the alerts name only
metrics that trackd exports (the contract below)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OBS = ROOT / "k8s" / "observability"
ALERTS = OBS / "alerts.yaml"
ALERTS_TEST = OBS / "alerts_test.yaml"
DASHBOARD = OBS / "grafana-dashboard.json"
RUNBOOK = ROOT / "docs" / "runbook.md"

# The metric contract: what trackd exports, by type. It mirrors the service's promise to the SRE's
# stack on purpose instead of importing app.metrics, so renaming a metric in the code without
# changing the dashboards and alerts is caught here rather than in production.
COUNTERS = (
    "trackd_interactions",
    "trackd_hot_path_errors",
    "trackd_api_http_requests",
    "trackd_events_written",
    "trackd_events_duplicate",
    "trackd_events_replayed",
    "trackd_events_dead_lettered",
    "trackd_events_dropped",
    "trackd_write_errors",
    "trackd_write_retries",
    "trackd_journal_damaged",
    "trackd_verdicts_examined",
    "trackd_verdicts_revised",
    "trackd_verdict_errors",
)
HISTOGRAMS = (
    "trackd_request_duration_seconds",
    "trackd_api_http_request_duration_seconds",
    "trackd_ingest_lag_seconds",
    "trackd_batch_rows",
    "trackd_flush_seconds",
)
GAUGES = (
    "trackd_backlog_rows",
    "trackd_backlog_bytes",
    "trackd_backlog_oldest_age_seconds",
    "trackd_journal_bytes",
    "trackd_writer_up",
    "trackd_ready",
    "trackd_build_info",
    "trackd_events_partitions",
    "trackd_events_bytes",
    "trackd_events_oldest_partition_timestamp_seconds",
    "trackd_events_newest_partition_timestamp_seconds",
    "trackd_verdicts_lag_seconds",
    "up",  # Prometheus's own, per scrape target
)
KNOWN_METRICS = frozenset(
    [f"{c}_total" for c in COUNTERS]
    + [f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")]
    + list(GAUGES)
)

# What item 6 of issue #5 asks the dashboard to show, by the metric each panel needs.
DASHBOARD_MUST_USE = frozenset(
    {
        "trackd_interactions_total",
        "trackd_request_duration_seconds_bucket",
        "trackd_ingest_lag_seconds_bucket",
        "trackd_backlog_rows",
        "trackd_backlog_bytes",
        "trackd_backlog_oldest_age_seconds",
        "trackd_events_dropped_total",
        "trackd_hot_path_errors_total",
        "trackd_api_http_requests_total",
        "up",
        "trackd_ready",
        "trackd_writer_up",
        "trackd_write_errors_total",
        "trackd_write_retries_total",
        "trackd_journal_damaged_total",
    }
)

# Grafana's interval variables are not PromQL; any duration stands in for them when parsing.
GRAFANA_DURATIONS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


# --- helpers ---------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# Not after a digit or dot, so unit letters of durations and exponents (5m, 1e3) are no names.
_IDENT = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers left once strings, label matchers,
    ranges and grouping clauses are removed, that are neither calls nor keywords."""
    text = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", _STRING.sub('""', expr))))
    names = set()
    for match in _IDENT.finditer(text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def query_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data; rows are layout only and hold no queries."""
    for panel in dash["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])  # a collapsed row carries its panels inside
        else:
            yield panel


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and the selectors inside the
    variables' label_values() queries, with Grafana's interval variables replaced."""
    exprs = [target["expr"] for panel in query_panels(dash) for target in panel["targets"]]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert match, f"variable {var['name']}: not label_values(selector, label)"
            exprs.append(match.group(1))
    for variable, duration in GRAFANA_DURATIONS.items():
        exprs = [expr.replace(variable, duration) for expr in exprs]
    return exprs


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    message = "promtool is missing: install the Debian package `prometheus` (apt-get install prometheus)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)  # CI must test the rules, never skip them
    pytest.skip(message)


def run_promtool(promtool: str, *args: str | Path) -> str:
    done = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


# --- the helper's own check: a name extractor that finds nothing would pass everything -------


def test_metric_names_finds_selected_metrics_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (pod, le) (rate(a_bucket{job="x", le=~"1e3|sum(b)"}[5m] offset 1m)))'
        ' > 1e-3 and on (pod) max by (pod) (c) > bool 5 unless absent(up{job="trackd"} == 1)'
    )
    assert metric_names(expr) == {"a_bucket", "c", "up"}


# --- alert rules ---------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", ALERTS)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    assert "SUCCESS" in run_promtool(promtool, "test", "rules", ALERTS_TEST)


# Alerts judged over a namespace's pods together, not per pod (TrackdBadTokensHigh: a per-pod
# volume floor would grow with the fleet).
FLEET_WIDE = {"TrackdBadTokensHigh"}


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    fires: set[str] = set()
    stays_quiet: set[str] = set()
    for case in load_yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            assert check["alertname"] in names, f"{case['name']}: no alert {check['alertname']}"
            expected = check.get("exp_alerts") or []
            (fires if expected else stays_quiet).add(check["alertname"])
            for alert in expected:  # which pod, or for fleet-wide alerts which namespace
                if check["alertname"] == "TrackdNoPodUp":  # absent(): no label at all
                    continue
                where = "namespace" if check["alertname"] in FLEET_WIDE else "pod"
                assert where in alert["exp_labels"], alert
    assert names - fires == set(), "never shown firing"
    assert names - stays_quiet == set(), "never shown not firing"


def test_every_alert_has_severity_annotations_and_a_runbook_section() -> None:
    headings = re.findall(r"^#{2,3} (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(heading) for heading in headings}
    for rule in alert_rules():
        name, annotations = rule["alert"], rule["annotations"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert annotations["summary"] and annotations["description"], name
        texts = annotations["summary"] + annotations["description"]
        assert "$labels.pod" in texts or "$value" in texts, name
        assert annotations["runbook_url"] == f"docs/runbook.md#{github_anchor(name)}", name
        assert github_anchor(name) in anchors, f"docs/runbook.md has no section {name}"


def test_alerts_and_their_tests_name_only_exported_metrics() -> None:
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= KNOWN_METRICS, rule["alert"]
    for case in load_yaml(ALERTS_TEST)["tests"]:
        for series in case["input_series"]:
            assert metric_names(series["series"]) <= KNOWN_METRICS, series["series"]


# --- generated wrappers --------------------------------------------------------------------


def test_generated_wrappers_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, OBS / "build.py", "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_prometheus_rule_holds_the_same_groups_as_alerts_yaml() -> None:
    resource = load_yaml(OBS / "prometheus-rule.yaml")
    assert (resource["apiVersion"], resource["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert resource["spec"] == load_yaml(ALERTS)


def test_dashboard_configmap_holds_the_dashboard_for_the_sidecar() -> None:
    resource = load_yaml(OBS / "grafana-dashboard-configmap.yaml")
    assert (resource["apiVersion"], resource["kind"]) == ("v1", "ConfigMap")
    assert resource["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = resource["data"].values()
    assert json.loads(text) == dashboard()


def test_kustomization_lists_both_wrappers() -> None:
    resources = load_yaml(OBS / "kustomization.yaml")["resources"]
    assert sorted(resources) == ["grafana-dashboard-configmap.yaml", "prometheus-rule.yaml"]


# --- dashboard -----------------------------------------------------------------------------


def test_dashboard_has_its_variables_and_every_panel_a_query() -> None:
    dash = dashboard()
    assert dash["schemaVersion"] >= 39
    variables = {var["name"]: var for var in dash["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("namespace", "pod"):
        assert variables[name]["type"] == "query"
        assert variables[name]["query"]["query"].startswith("label_values(")
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    panels = list(query_panels(dash))
    assert len({panel["id"] for panel in dash["panels"]}) == len(dash["panels"]), "panel ids repeat"
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            # Every query follows the namespace and pod pickers.
            assert 'namespace="$namespace"' in target["expr"] and 'pod=~"$pod"' in target["expr"], panel["title"]


def test_dashboard_promql_parses(promtool: str, tmp_path: Path) -> None:
    # promtool has no bare PromQL checker, but `check rules` parses every recording rule's expr.
    exprs = dashboard_exprs(dashboard())
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in run_promtool(promtool, "check", "rules", path)


def test_dashboard_names_only_exported_metrics_and_shows_what_the_issue_asks() -> None:
    used: set[str] = set()
    for expr in dashboard_exprs(dashboard()):
        names = metric_names(expr)
        assert names, f"no metric in {expr}"
        assert names <= KNOWN_METRICS, f"unknown metric in {expr}"
        used |= names
    assert DASHBOARD_MUST_USE - used == set()
