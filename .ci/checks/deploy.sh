#!/usr/bin/env bash
# Deployment checks (issues 9 and 16): the Dockerfile, the compose file, the Helm chart (default,
# production, inline-secrets and Gateway API renderings), the platform bootstrap files, the
# Terraform (statically) and the GitHub workflows, with the tools .ci/tools.d/deploy.sh installs.
# Runs every check, prints one line per check, and fails if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

TOOLS_DIR="${TXN_TOOLS_DIR:-$HOME/.cache/txn-tools}"
VENV_BIN="$TOOLS_DIR/venv/bin"
export PATH="$TOOLS_DIR/bin:$VENV_BIN:$PATH"
for tool in helm yamllint hadolint docker-compose kubernetes-validate actionlint zizmor checkov; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "deploy checks: $tool is missing; run bash .ci/tools.d/deploy.sh" >&2
    exit 1
  fi
done

CHART=helm/transactions-api
# Kubernetes versions the rendered manifests must be valid for: every minor EKS supports on
# 2026-12-01 (standard 14 months, then extended 12: 1.32 and 1.33 in extended support, 1.34–1.36 in
# standard; 1.31's extended support ended 2026-11-26). Bump with EKS's calendar
# (docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html).
KUBE_VERSIONS=(1.32.0 1.33.0 1.34.0 1.35.0 1.36.0)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()

# run NAME CMD...: runs CMD quietly; on failure prints its output and remembers NAME.
run() {
  local name="$1"
  shift
  if "$@" >"$work/out" 2>&1; then
    echo "ok   $name"
  else
    echo "FAIL $name"
    sed 's/^/     /' "$work/out"
    failed+=("$name")
  fi
}

# --- YAML -----------------------------------------------------------------------------------
run "yamllint" yamllint --strict -c deploy/yamllint.yaml \
  docker-compose.yml deploy/compose deploy/yamllint.yaml .github deploy/platform deploy/ingress-nginx \
  "$CHART/Chart.yaml" "$CHART/values.yaml" "$CHART/values-production.yaml"

# --- images ---------------------------------------------------------------------------------
run "hadolint Dockerfile" hadolint deploy/docker/Dockerfile
run "keygen.sh parses" sh -n deploy/docker/keygen.sh
run "keygen makes a matching Ed25519 pair, once" bash deploy/tests/check_keygen.sh

# --- compose (validated without a Docker engine) ----------------------------------------------
run "docker-compose config" docker-compose -f docker-compose.yml config --quiet
run "docker-compose config (observability profile)" \
  docker-compose -f docker-compose.yml --profile observability config --quiet
run "compose and image test" sh -c "docker-compose -f docker-compose.yml --profile observability config --format json \
  > '$work/compose.json' && '$VENV_BIN/python' deploy/tests/check_compose.py '$work/compose.json'"

# --- Helm chart -------------------------------------------------------------------------------
run "helm lint (default values)" helm lint --strict "$CHART"
run "values schema rejects a misspelt service" \
  sh -c "! helm template txn '$CHART' --set services.transfer.enabled=true >/dev/null 2>&1"
run "helm lint (production values)" helm lint --strict "$CHART" -f "$CHART/values-production.yaml"
mkdir -p "$work/default" "$work/production"
run "helm template (default values)" \
  sh -c "helm template txn '$CHART' --namespace transactions > '$work/default/manifests.yaml'"
# the deploy workflow passes the RDS CA bundle with --set-file; a CA made here stands in for it
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=test-ca \
  -keyout "$work/ca.key" -out "$work/ca.pem" >/dev/null 2>&1
run "helm template (production values)" \
  sh -c "helm template txn '$CHART' --namespace transactions -f '$CHART/values-production.yaml' \
    --set-file databaseTLS.caBundle.pem='$work/ca.pem' \
    --set image.tag=0123456789abcdef0123456789abcdef01234567 > '$work/production/manifests.yaml'"
# Gateway API instead of the Ingresses (HTTPRoute + GRPCRoute to a platform Gateway)
mkdir -p "$work/gatewayapi"
run "helm template (Gateway API routes)" \
  sh -c "helm template txn '$CHART' --namespace transactions -f '$CHART/values-production.yaml' \
    --set-file databaseTLS.caBundle.pem='$work/ca.pem' --set ingress.enabled=false \
    --set gatewayAPI.enabled=true --set 'gatewayAPI.parentRefs[0].name=public' \
    --set 'gatewayAPI.parentRefs[0].namespace=gateway-system' \
    --set image.tag=0123456789abcdef0123456789abcdef01234567 > '$work/gatewayapi/manifests.yaml'"
run "the chart's dashboard is deploy/grafana's" \
  cmp deploy/grafana/transactions-api.json "$CHART/dashboards/transactions-api.json"
run "platform bootstrap and ingress-nginx values" \
  "$VENV_BIN/python" deploy/tests/check_platform.py
# A test cluster's install: secrets given inline, so the chart makes its own Secret (dummy values);
# every optional one too (a read replica, the gateway secret), so the chart test sees them wired.
mkdir -p "$work/inline"
run "helm template (inline secrets)" \
  sh -c "helm template txn '$CHART' --namespace transactions \
    --set secrets.database.url=postgres://txn@db.example:5432/transactions \
    --set secrets.redis.url=redis://redis.example:6379 \
    --set secrets.token.publicKey=cHVibGlj --set secrets.token.privateKey=cHJpdmF0ZQ== \
    --set secrets.smtp.username=mailer --set secrets.smtp.password=dummy \
    --set secrets.databaseRead.url=postgres://txn@replica.example:5432/transactions \
    --set secrets.gateway.secret=dummy > '$work/inline/manifests.yaml'"
for values in default production inline gatewayapi; do
  for kv in "${KUBE_VERSIONS[@]}"; do
    # --strict rejects unknown fields; the only kind without a bundled schema is cert-manager's
    # ClusterIssuer (a CRD), which check_chart.py looks at instead.
    run "kubernetes-validate $values (k8s $kv)" \
      kubernetes-validate --strict --quiet -k "$kv" "$work/$values/manifests.yaml"
  done
done
run "chart test (default values)" "$VENV_BIN/python" deploy/tests/check_chart.py "$work/default/manifests.yaml"
run "chart test (production values)" \
  "$VENV_BIN/python" deploy/tests/check_chart.py --production "$work/production/manifests.yaml"
run "chart test (inline secrets)" "$VENV_BIN/python" deploy/tests/check_chart.py --all-secrets "$work/inline/manifests.yaml"
run "chart test (Gateway API routes)" "$VENV_BIN/python" deploy/tests/check_chart.py "$work/gatewayapi/manifests.yaml"

# --- infrastructure as code (deploy/terraform) -------------------------------------------------
# Providers cannot be downloaded here, so no `init`, `validate` or `plan`: parse and structure
# (check_terraform.py), security (checkov, below) and formatting. The formatter is Terraform's own
# `fmt`, which needs no provider; it runs when a terraform or tofu binary is on PATH and says so
# when none is (no registry here ships one).
run "terraform: parse and structure" "$VENV_BIN/python" deploy/tests/check_terraform.py
if command -v tofu >/dev/null 2>&1; then
  run "tofu fmt -check" tofu fmt -check -recursive deploy/terraform
elif command -v terraform >/dev/null 2>&1; then
  run "terraform fmt -check" terraform fmt -check -recursive deploy/terraform
else
  echo "skip terraform fmt -check: neither tofu nor terraform is installed"
fi

# --- workflows --------------------------------------------------------------------------------
run "actionlint" actionlint
run "zizmor" zizmor --offline --no-progress --config .github/zizmor.yml .github/workflows

# --- checkov ----------------------------------------------------------------------------------
checkov_common=(--compact --quiet --skip-download)
# Dockerfile: its two skips are justified inline (checkov:skip comments in the Dockerfile).
run "checkov Dockerfile" checkov "${checkov_common[@]}" --framework dockerfile -f deploy/docker/Dockerfile
# Chart skips, each on purpose:
#   CKV_K8S_43 image digests: images are tagged with the commit SHA in ECR repositories with
#              immutable tags, so a tag names exactly one image; the deploy sets that tag.
#   CKV_K8S_15 imagePullPolicy Always: with immutable per-commit tags IfNotPresent pulls every new
#              version and avoids a registry round trip (and a registry outage) on every restart.
#   CKV_K8S_35 secrets as files: the services read the database URLs (primary and replica), the
#              Redis URL, the gateway secret (and the SMTP user name) from environment variables
#              (their config has no *_file variant for them); the values come from Secrets by
#              secretKeyRef, never inline. The token keys
#              and the SMTP password are mounted as files.
#   CKV_K8S_21 default namespace (helm framework only): checkov renders the chart itself without a
#              namespace; every object carries the release namespace, and the production
#              rendering below is checked with CKV_K8S_21 on.
chart_skips="CKV_K8S_43,CKV_K8S_15,CKV_K8S_35"
run "checkov Helm chart (default values)" checkov "${checkov_common[@]}" --framework helm \
  -d "$CHART" --skip-check "$chart_skips,CKV_K8S_21"
run "checkov rendered manifests (production values)" checkov "${checkov_common[@]}" \
  --framework kubernetes -d "$work/production" --skip-check "$chart_skips"
# Terraform: every check on; the two skips are inline in deploy/terraform, each with its reason.
run "checkov Terraform" checkov "${checkov_common[@]}" --framework terraform -d deploy/terraform
run "checkov workflows" checkov "${checkov_common[@]}" --framework github_actions -d .github/workflows
run "checkov secrets (nothing committed)" checkov "${checkov_common[@]}" --framework secrets \
  -d deploy -d helm -d .github -f docker-compose.yml

if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy checks: ${#failed[@]} failed: ${failed[*]}"
  exit 1
fi
echo "deploy checks: all passed"
