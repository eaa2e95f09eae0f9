#!/usr/bin/env node
// Validates the cbt-agent chart's rendered manifests.
//
//   node validate.mjs --out DIR --namespace NS --chart CHART_DIR
//
// DIR holds, per values set NAME, NAME.yaml (`helm template` output) and NAME.notes.txt (the
// NOTES of `helm install --dry-run=client`). For every case:
//   1. every object is parsed (YAML 1.1, as Kubernetes reads it; duplicate keys are errors) and
//      validated against the Kubernetes schema with its kubernetes-models class
//      (ServiceMonitor: @kubernetes-models/prometheus-operator, the CRD's own schema);
//   2. invariants of every render are asserted (privileged agent, gRPC probes on the health
//      listener, host /dev and /sys, hostPath socket/state dirs, one-node-at-a-time updates,
//      Services and ServiceMonitor selecting what exists, only known daemon flags, the
//      authorization files mounted read-only with modes the agent accepts, a TCP listener
//      only with something a caller can be granted by, diff storage visible in the pod, ...);
//   3. the assertions of that case (CASES below) are run.
// Prints one line per check group and a summary; exits 1 on any failure.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join, basename } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { parseAllDocuments, parse as parseYaml } from "yaml";

// ------------------------------------------------------------------------------------------
// Arguments

const argv = process.argv.slice(2);
function opt(name) {
  const i = argv.indexOf(name);
  if (i < 0 || i + 1 >= argv.length) {
    console.error(`validate.mjs: missing ${name}`);
    process.exit(2);
  }
  return argv[i + 1];
}
const outDir = opt("--out");
const namespace = opt("--namespace");
const chartDir = opt("--chart");
const chart = parseYaml(readFileSync(join(chartDir, "Chart.yaml"), "utf8"));

// ------------------------------------------------------------------------------------------
// Results

let failures = 0;
let checks = 0;
let objectsValidated = 0;
const failedCases = new Set();
let current = "";

function check(cond, what) {
  checks++;
  if (!cond) {
    failures++;
    failedCases.add(current);
    console.log(`    FAIL [${current}] ${what}`);
  }
  return !!cond;
}
function eq(actual, expected, what) {
  return check(
    isDeepStrictEqual(actual, expected),
    `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`,
  );
}

// ------------------------------------------------------------------------------------------
// Schema validation with kubernetes-models

// apiVersion group -> package holding its models (core and built-in groups: kubernetes-models).
const MODEL_PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

async function modelClass(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  const pkg = MODEL_PACKAGES[group] ?? "kubernetes-models";
  const spec = group ? `${pkg}/${group}/${version}/${kind}` : `${pkg}/${version}/${kind}`;
  try {
    const mod = await import(spec);
    return { cls: mod[kind], spec };
  } catch (e) {
    if (e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED" || e.code === "ERR_MODULE_NOT_FOUND") {
      return { cls: null, spec };
    }
    throw e;
  }
}

async function validateObject(obj, where) {
  if (!check(obj && typeof obj === "object" && obj.apiVersion && obj.kind, `${where}: has apiVersion and kind`)) {
    return;
  }
  const { cls, spec } = await modelClass(obj.apiVersion, obj.kind);
  if (!check(cls, `${where}: no kubernetes-models class for ${obj.apiVersion} ${obj.kind} (${spec})`)) return;
  try {
    new cls(obj).validate();
    objectsValidated++;
    checks++;
  } catch (e) {
    check(false, `${where}: ${obj.kind}/${obj.metadata?.name} fails schema validation: ${e.message}`);
  }
}

// ------------------------------------------------------------------------------------------
// Helpers over rendered objects

const DAEMON_FLAGS = new Set([
  "--listen", "--socket_mode", "--socket_group", "--state_dir", "--backend", "--blksnap_flavour",
  "--tls_cert", "--tls_key", "--tls_client_ca", "--allow_insecure_tcp", "--metrics_listen",
  "--health_listen", "--version", "--authz_policy", "--auth_tokens_file", "--device_allow",
  "--diff_storage_allow", "--max_receive_message_bytes", "--max_concurrent_streams",
  "--max_stream_duration",
]);
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const ofKind = (objs, kind) => objs.filter((o) => o.kind === kind);
const flagValues = (args, flag) =>
  args.filter((a) => a.startsWith(`${flag}=`)).map((a) => a.slice(flag.length + 1));
const portOf = (hostPort) => Number(hostPort.slice(hostPort.lastIndexOf(":") + 1));
const subset = (small, big) => Object.entries(small ?? {}).every(([k, v]) => big?.[k] === v);

function agentOf(ds) {
  return ds.spec.template.spec.containers.find((c) => c.name === "agent");
}
function volume(ds, name) {
  return (ds.spec.template.spec.volumes ?? []).find((v) => v.name === name);
}
function mount(ds, path) {
  return (agentOf(ds).volumeMounts ?? []).find((m) => m.mountPath === path);
}
function hostPathMountedAt(ds, hostPath, mountPath) {
  const m = mount(ds, mountPath);
  if (!m) return false;
  const v = volume(ds, m.name);
  return !!(v && v.hostPath && v.hostPath.path === hostPath);
}
// The volume (and mount) a file given to the agent comes from: the mount whose path is the
// file's directory, and the ConfigMap or Secret item projected at the file's name.
function fileSource(ds, path) {
  const dir = path.slice(0, path.lastIndexOf("/"));
  const file = path.slice(path.lastIndexOf("/") + 1);
  const m = mount(ds, dir);
  const v = volume(ds, m?.name);
  const src = v?.secret ?? v?.configMap;
  const item = (src?.items ?? []).find((i) => i.path === file);
  return { m, v, src, item, mode: item?.mode ?? src?.defaultMode };
}
// Whether `path` is `dir` or lies below it, component-wise.
const under = (path, dir) => path === dir.replace(/\/$/, "") || path.startsWith(dir.replace(/\/$/, "") + "/");
function secretMountedAt(ds, secretName, mountPath) {
  const m = mount(ds, mountPath);
  if (!m) return false;
  const v = volume(ds, m.name);
  return !!(v && v.secret && v.secret.secretName === secretName && m.readOnly === true);
}

// ------------------------------------------------------------------------------------------
// Invariants of every render

function commonChecks(objs, notes) {
  for (const o of objs) {
    const id = `${o.kind}/${o.metadata?.name}`;
    check(DNS1123_LABEL.test(o.metadata?.name ?? "") && o.metadata.name.length <= 63, `${id}: name is a DNS-1123 label`);
    eq(o.metadata?.namespace, namespace, `${id}: namespace`);
    const l = o.metadata?.labels ?? {};
    check(l["app.kubernetes.io/name"] && l["app.kubernetes.io/instance"] && l["helm.sh/chart"] &&
      l["app.kubernetes.io/managed-by"] === "Helm", `${id}: standard labels`);
  }
  const kinds = new Set(objs.map((o) => o.kind));
  for (const k of kinds) {
    check(["DaemonSet", "ServiceAccount", "Service", "ServiceMonitor", "ConfigMap"].includes(k), `unexpected kind ${k}`);
  }

  const dss = ofKind(objs, "DaemonSet");
  if (!eq(dss.length, 1, "number of DaemonSets")) return;
  const ds = dss[0];
  const pod = ds.spec.template.spec;
  const c = agentOf(ds);
  if (!check(c, "DaemonSet has a container named agent")) return;
  const args = c.args ?? [];

  // Selector and labels.
  check(subset(ds.spec.selector.matchLabels, ds.spec.template.metadata.labels), "DaemonSet selector matches its pod labels");
  // The daemon and its flags.
  eq(c.command, ["/usr/bin/cbt-agent"], "container command");
  for (const a of args) {
    const flag = a.includes("=") ? a.slice(0, a.indexOf("=")) : a;
    check(DAEMON_FLAGS.has(flag), `arg ${a} is a known daemon flag`);
  }
  for (const single of ["--state_dir", "--backend", "--blksnap_flavour", "--health_listen",
    "--max_receive_message_bytes", "--max_concurrent_streams", "--max_stream_duration"]) {
    eq(flagValues(args, single).length, 1, `${single} given once`);
  }
  check(["auto", "blksnap", "ublk"].includes(flagValues(args, "--backend")[0]), "--backend value");
  check(["auto", "lk6.15", "v7", "val7"].includes(flagValues(args, "--blksnap_flavour")[0]), "--blksnap_flavour value");
  check(flagValues(args, "--listen").length >= 1, "at least one --listen");
  // Privileged, host namespaces.
  eq(c.securityContext?.privileged, true, "agent container privileged");
  eq(c.securityContext?.seccompProfile?.type, "Unconfined", "seccomp unconfined (io_uring)");
  eq(pod.hostPID, false, "hostPID");
  check(pod.hostNetwork !== true, "no hostNetwork");
  check(!!pod.priorityClassName, "priorityClassName set");
  eq(pod.automountServiceAccountToken, false, "no service account token in the pod");
  // Updates: one node at a time, never two agents on a node.
  eq(ds.spec.updateStrategy?.type, "RollingUpdate", "updateStrategy.type");
  eq(ds.spec.updateStrategy?.rollingUpdate?.maxUnavailable, 1, "rollingUpdate.maxUnavailable");
  eq(ds.spec.updateStrategy?.rollingUpdate?.maxSurge, 0, "rollingUpdate.maxSurge");
  // gRPC probes on the health listener.
  const healthPort = portOf(flagValues(args, "--health_listen")[0] ?? ":0");
  const healthCp = (c.ports ?? []).find((p) => p.name === "health");
  eq(healthCp?.containerPort, healthPort, "containerPort 'health' = --health_listen port");
  for (const [probe, service] of [["livenessProbe", ""], ["readinessProbe", "cbtagent.v1.CbtAgent"], ["startupProbe", ""]]) {
    const p = c[probe];
    check(p && p.grpc && !p.httpGet && !p.exec && !p.tcpSocket, `${probe} is a grpc probe`);
    eq(p?.grpc?.port, healthPort, `${probe}.grpc.port = health port`);
    eq(p?.grpc?.service, service, `${probe}.grpc.service`);
  }
  // Host paths.
  check(hostPathMountedAt(ds, "/dev", "/dev"), "host /dev mounted at /dev");
  check(hostPathMountedAt(ds, "/sys", "/sys"), "host /sys mounted at /sys");
  const stateDir = flagValues(args, "--state_dir")[0];
  check(hostPathMountedAt(ds, stateDir, stateDir), `state dir ${stateDir} is a hostPath mounted at the same path`);
  for (const l of flagValues(args, "--listen").filter((x) => x.startsWith("unix:"))) {
    const sock = l.slice(5);
    const dir = sock.slice(0, sock.lastIndexOf("/"));
    check(hostPathMountedAt(ds, dir, dir), `socket dir ${dir} is a hostPath mounted at the same path`);
  }
  // Volumes and ports are consistent.
  const volNames = (pod.volumes ?? []).map((v) => v.name);
  eq(new Set(volNames).size, volNames.length, "volume names unique");
  for (const m of c.volumeMounts ?? []) check(volNames.includes(m.name), `volumeMount ${m.name} has a volume`);
  const portNames = (c.ports ?? []).map((p) => p.name);
  eq(new Set(portNames).size, portNames.length, "container port names unique");
  const tls = flagValues(args, "--tls_cert").length > 0;
  if (tls) {
    for (const f of ["--tls_cert", "--tls_key", "--tls_client_ca"]) {
      for (const path of flagValues(args, f)) {
        const dir = path.slice(0, path.lastIndexOf("/"));
        const m = mount(ds, dir);
        check(m && volume(ds, m.name)?.secret, `${f} file ${path} comes from a mounted Secret`);
        eq(volume(ds, m?.name)?.secret?.items?.some((i) => dir + "/" + i.path === path), true, `${f} file is projected`);
      }
    }
  }
  check(!(tls && args.includes("--allow_insecure_tcp")), "TLS and --allow_insecure_tcp are exclusive");
  // Authorization files: read-only mounts of a ConfigMap or Secret, with modes the agent accepts
  // (config_file.cc: the policy not writable by group or others; the tokens in addition not
  // readable by others: the chart uses 0400).
  for (const single of ["--authz_policy", "--auth_tokens_file"]) {
    check(flagValues(args, single).length <= 1, `${single} given at most once`);
  }
  for (const path of flagValues(args, "--authz_policy")) {
    const { m, src, item, mode } = fileSource(ds, path);
    check(src && item, `--authz_policy file ${path} is projected from a ConfigMap or Secret`);
    eq(m?.readOnly, true, "--authz_policy mount is read-only");
    check(typeof mode === "number" && (mode & 0o022) === 0, `--authz_policy file mode ${mode?.toString(8)} not writable by group or others`);
    const cm = src?.name && ofKind(objs, "ConfigMap").find((o) => o.metadata.name === src.name);
    if (cm) {
      check(typeof cm.data?.[item?.key] === "string" && cm.data[item.key].length > 0, `ConfigMap ${cm.metadata.name} holds the policy under ${item?.key}`);
      const sum = createHash("sha256").update(cm.data?.[item?.key] ?? "").digest("hex");
      eq(ds.spec.template.metadata.annotations?.["checksum/authz-policy"], sum, "pod annotation checksum/authz-policy = sha256 of the inline policy (changes roll the pods)");
    }
  }
  for (const path of flagValues(args, "--auth_tokens_file")) {
    const { m, v, item, mode } = fileSource(ds, path);
    check(v?.secret && item, `--auth_tokens_file ${path} is projected from a Secret`);
    eq(m?.readOnly, true, "--auth_tokens_file mount is read-only");
    eq(mode, 0o400, "--auth_tokens_file mode 0400");
  }
  for (const cm of ofKind(objs, "ConfigMap")) {
    check((pod.volumes ?? []).some((v) => v.configMap?.name === cm.metadata.name), `ConfigMap ${cm.metadata.name} is mounted`);
  }
  // Something a TCP caller can be granted by: the agent refuses every TCP call nothing grants.
  const tcpListeners = flagValues(args, "--listen").filter((x) => !x.startsWith("unix:"));
  if (tcpListeners.length) {
    check(flagValues(args, "--authz_policy").length + flagValues(args, "--auth_tokens_file").length > 0,
      "TCP listener with an --authz_policy or an --auth_tokens_file");
    if (flagValues(args, "--tls_client_ca").length === 0) {
      check(flagValues(args, "--auth_tokens_file").length === 1, "TCP without client certificates has bearer tokens");
    }
  }
  // Path allowlists and limits.
  check(flagValues(args, "--device_allow").length >= 1, "at least one --device_allow");
  for (const g of flagValues(args, "--device_allow")) check(/^\/[^,\s]*$/.test(g), `--device_allow ${g} is absolute, without commas`);
  const mountPaths = (c.volumeMounts ?? []).map((m) => m.mountPath);
  for (const d of flagValues(args, "--diff_storage_allow")) {
    check(/^\/[^,\s]*$/.test(d) && !/(^|\/)\.\.(\/|$)/.test(d), `--diff_storage_allow ${d} is absolute, without commas or ..`);
    check(mountPaths.some((mp) => under(d, mp)), `--diff_storage_allow ${d} lies under a volume mount (visible in the pod)`);
  }
  const recv = Number(flagValues(args, "--max_receive_message_bytes")[0]);
  check(Number.isInteger(recv) && recv >= 65536 && recv <= 1073741824, "--max_receive_message_bytes in the agent's range");
  check(Number(flagValues(args, "--max_concurrent_streams")[0]) >= 1, "--max_concurrent_streams >= 1");
  check(/^(inf|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|ms|s|m|h))+)$/.test(flagValues(args, "--max_stream_duration")[0] ?? ""),
    "--max_stream_duration is a duration");
  // ServiceAccount.
  const sas = ofKind(objs, "ServiceAccount");
  if (sas.length) eq(pod.serviceAccountName, sas[0].metadata.name, "pod uses the rendered ServiceAccount");
  // Services select the agent pods and target existing container ports.
  const tcpListen = flagValues(args, "--listen").filter((x) => !x.startsWith("unix:"));
  for (const svc of ofKind(objs, "Service")) {
    check(svc.spec?.selector && subset(svc.spec.selector, ds.spec.template.metadata.labels), `Service ${svc.metadata.name} selects the agent pods`);
    for (const p of svc.spec?.ports ?? []) {
      check(portNames.includes(p.targetPort), `Service ${svc.metadata.name} targetPort ${p.targetPort} is a container port`);
    }
  }
  const apiSvc = ofKind(objs, "Service").filter((s) => (s.spec?.ports ?? []).some((p) => p.targetPort === "grpc"));
  eq(apiSvc.length, tcpListen.length > 0 ? 1 : 0, "API Service rendered exactly when a TCP listener is");
  if (tcpListen.length) {
    const grpcCp = (c.ports ?? []).find((p) => p.name === "grpc");
    eq(grpcCp?.containerPort, portOf(tcpListen[0]), "containerPort 'grpc' = TCP --listen port");
  }
  // ServiceMonitor selects a Service with its endpoint port; metrics are on.
  for (const sm of ofKind(objs, "ServiceMonitor")) {
    const target = ofKind(objs, "Service").filter((s) => subset(sm.spec?.selector?.matchLabels, s.metadata.labels));
    eq(target.length, 1, `ServiceMonitor ${sm.metadata.name} selects exactly one Service`);
    for (const ep of sm.spec?.endpoints ?? []) {
      check((target[0]?.spec?.ports ?? []).some((p) => p.name === ep.port), `ServiceMonitor endpoint port ${ep.port} exists on that Service`);
    }
    check((sm.spec.namespaceSelector?.matchNames ?? []).includes(namespace), "ServiceMonitor namespaceSelector has the release namespace");
    const metricsPort = flagValues(args, "--metrics_listen").map(portOf);
    check(metricsPort.includes((c.ports ?? []).find((p) => p.name === "metrics")?.containerPort), "metrics containerPort = --metrics_listen port");
  }
  // NOTES.
  check(notes.includes("WHY THE POD IS PRIVILEGED"), "NOTES explain the privileged pod");
  for (const l of flagValues(args, "--listen").filter((x) => x.startsWith("unix:"))) {
    check(notes.includes(`grpcurl -plaintext -unix ${l.slice(5)} list`), "NOTES show grpcurl on the socket");
    check(notes.includes("cbtctl"), "NOTES show cbtctl");
  }
  check(notes.includes("AUTHORIZATION"), "NOTES have the authorization section");
  if (flagValues(args, "--auth_tokens_file").length && tcpListeners.length) {
    check(notes.includes("authorization: Bearer"), "NOTES show a call with a bearer token");
  }
  if (flagValues(args, "--tls_client_ca").length) {
    check(notes.includes("-cert client.crt -key client.key"), "NOTES show an mTLS grpcurl call");
    check(notes.includes("--tls_cert client.crt --tls_key client.key"), "NOTES show an mTLS cbtctl call");
  }
  return { ds, pod, c, args };
}

// ------------------------------------------------------------------------------------------
// Per values set (file name in deploy/helm/values without .yaml; "default" = chart defaults)

const appVersion = String(chart.appVersion);
const CASES = {
  default({ objs, pod, c, args, notes }) {
    eq(objs.map((o) => o.kind).sort(), ["DaemonSet", "ServiceAccount"], "kinds rendered");
    eq(ofKind(objs, "Service").length, 0, "no Service by default");
    eq(flagValues(args, "--listen"), ["unix:/run/cbt-agent/agent.sock"], "--listen");
    eq(flagValues(args, "--health_listen"), ["0.0.0.0:9810"], "--health_listen");
    eq(flagValues(args, "--socket_mode"), ["0660"], "--socket_mode");
    eq(flagValues(args, "--socket_group"), [], "no --socket_group");
    eq(flagValues(args, "--backend"), ["auto"], "--backend");
    eq(flagValues(args, "--state_dir"), ["/var/lib/cbt-agent"], "--state_dir");
    eq(flagValues(args, "--metrics_listen"), [], "metrics off by default");
    check(!args.some((a) => a.startsWith("--tls_") || a === "--allow_insecure_tcp"), "no TLS / insecure flags");
    eq(flagValues(args, "--authz_policy"), [], "no --authz_policy by default");
    eq(flagValues(args, "--auth_tokens_file"), [], "no --auth_tokens_file by default");
    eq(ofKind(objs, "ConfigMap").length, 0, "no ConfigMap by default");
    eq(flagValues(args, "--device_allow"), ["/dev/*"], "--device_allow default");
    eq(flagValues(args, "--diff_storage_allow"), [], "no --diff_storage_allow (agent default <stateDir>/diff)");
    eq(flagValues(args, "--max_receive_message_bytes"), ["4194304"], "--max_receive_message_bytes default");
    eq(flagValues(args, "--max_concurrent_streams"), ["128"], "--max_concurrent_streams default");
    eq(flagValues(args, "--max_stream_duration"), ["10m"], "--max_stream_duration default");
    check(notes.includes("Diff storage allowed under: /var/lib/cbt-agent/diff (the default)"), "NOTES name the default diff-storage dir");
    eq(c.image, `cbt-agent:${appVersion}`, "image tag defaults to appVersion");
    eq(c.imagePullPolicy, "IfNotPresent", "imagePullPolicy");
    eq(pod.priorityClassName, "system-node-critical", "priorityClassName");
    eq(pod.tolerations, [{ operator: "Exists" }], "tolerations");
    eq(pod.nodeSelector, { "kubernetes.io/os": "linux" }, "nodeSelector");
    check(c.resources?.limits?.cpu === undefined, "no CPU limit by default");
    eq(volumeOf(pod, "socket-dir")?.hostPath, { path: "/run/cbt-agent", type: "DirectoryOrCreate" }, "socket dir hostPath");
  },
  "tcp-mtls-metrics"({ objs, ds, c, args, notes }) {
    eq(objs.map((o) => o.kind).sort(), ["ConfigMap", "DaemonSet", "Service", "Service", "ServiceAccount", "ServiceMonitor"], "kinds rendered");
    eq(flagValues(args, "--listen"), ["unix:/run/cbt-agent/agent.sock", "0.0.0.0:50051"], "--listen (socket and TCP)");
    eq(flagValues(args, "--socket_group"), ["2000"], "numeric --socket_group");
    eq(flagValues(args, "--tls_cert"), ["/etc/cbt-agent/tls/tls.crt"], "--tls_cert");
    eq(flagValues(args, "--tls_key"), ["/etc/cbt-agent/tls/tls.key"], "--tls_key");
    eq(flagValues(args, "--tls_client_ca"), ["/etc/cbt-agent/client-ca/ca.crt"], "--tls_client_ca (mTLS)");
    check(!args.includes("--allow_insecure_tcp"), "no --allow_insecure_tcp");
    eq(flagValues(args, "--metrics_listen"), ["0.0.0.0:9811"], "--metrics_listen");
    check(secretMountedAt(ds, "cbt-agent-server-tls", "/etc/cbt-agent/tls"), "server TLS Secret mounted read-only");
    check(secretMountedAt(ds, "cbt-agent-client-ca", "/etc/cbt-agent/client-ca"), "client CA Secret mounted read-only");
    eq(volume(ds, mount(ds, "/etc/cbt-agent/tls")?.name)?.secret?.defaultMode, 0o400, "TLS key file mode 0400");
    const svc = ofKind(objs, "Service").find((s) => s.spec.ports.some((p) => p.name === "grpc"));
    eq(svc?.spec.clusterIP, "None", "API Service is headless");
    eq(svc?.spec.ports, [{ name: "grpc", port: 50051, targetPort: "grpc", protocol: "TCP" }], "API Service ports");
    const sm = ofKind(objs, "ServiceMonitor")[0];
    eq(sm?.metadata.labels?.release, "kube-prometheus-stack", "ServiceMonitor extra label");
    eq(sm?.spec.endpoints?.[0]?.interval, "15s", "ServiceMonitor interval");
    eq(sm?.spec.endpoints?.[0]?.metricRelabelings?.[0]?.action, "drop", "ServiceMonitor metricRelabelings");
    check((c.ports ?? []).some((p) => p.name === "metrics" && p.containerPort === 9811), "metrics container port");
    // Authorization: inline policy in a ConfigMap, tokens from a Secret.
    eq(flagValues(args, "--authz_policy"), ["/etc/cbt-agent/authz/policy"], "--authz_policy");
    eq(flagValues(args, "--auth_tokens_file"), ["/etc/cbt-agent/tokens/tokens"], "--auth_tokens_file");
    const cm = ofKind(objs, "ConfigMap")[0];
    eq(cm?.metadata.name, "cbt-agent-authz", "policy ConfigMap name");
    eq(cm?.data?.policy?.split("\n")[0], "grant write cert-cn:backup-controller", "policy ConfigMap holds the inline policy");
    eq(volume(ds, "authz-policy")?.configMap, { name: "cbt-agent-authz", defaultMode: 0o444, items: [{ key: "policy", path: "policy" }] },
       "policy volume: the ConfigMap, mode 0444");
    check(secretMountedAt(ds, "cbt-agent-tokens", "/etc/cbt-agent/tokens"), "tokens Secret mounted read-only");
    eq(volume(ds, "auth-tokens")?.secret, { secretName: "cbt-agent-tokens", defaultMode: 0o400, items: [{ key: "tokens", path: "tokens" }] },
       "tokens volume: the Secret, mode 0400");
    check(/^[0-9a-f]{64}$/.test(ds.spec.template.metadata.annotations?.["checksum/authz-policy"] ?? ""), "policy checksum annotation");
    check(notes.includes("Policy: ConfigMap cbt-agent-authz"), "NOTES name the policy ConfigMap");
    check(notes.includes("--token_file client.token"), "NOTES show cbtctl with a token");
  },
  ublk({ objs, ds, c, args }) {
    eq(ofKind(objs, "Service").length, 0, "no Service");
    eq(flagValues(args, "--backend"), ["ublk"], "--backend");
    eq(flagValues(args, "--state_dir"), ["/var/lib/cbt-agent-ublk"], "--state_dir");
    eq(flagValues(args, "--socket_group"), ["backup"], "named --socket_group");
    eq(flagValues(args, "--socket_mode"), ["0600"], "--socket_mode");
    eq(args[args.length - 1], "--metrics_listen=127.0.0.1:9900", "extraArgs appended last");
    eq(flagValues(args, "--diff_storage_allow"), ["/var/lib/cbt-agent-diff"],
       "the diff-storage hostPath is allowed (security.diffStorageAllow)");
    check(args.indexOf("--diff_storage_allow=/var/lib/cbt-agent-diff") < args.indexOf("--health_listen=0.0.0.0:9810"),
       "--diff_storage_allow rendered by the chart, not through extraArgs");
    check(hostPathMountedAt(ds, "/var/lib/cbt-agent-diff", "/var/lib/cbt-agent-diff"), "extra diff-storage hostPath mounted");
    eq(c.env, [{ name: "TZ", value: "UTC" }], "extraEnv");
  },
  "restricted-pool"({ objs, pod, c, args }) {
    eq(objs.map((o) => o.kind).sort(), ["DaemonSet"], "kinds rendered (no ServiceAccount created)");
    eq(pod.serviceAccountName, "backup-agents", "existing ServiceAccount used");
    eq(c.image, "registry.example.com/storage/cbt-agent:0.1.0-rc1", "image");
    eq(c.imagePullPolicy, "Always", "imagePullPolicy");
    eq(pod.imagePullSecrets, [{ name: "regcred" }], "imagePullSecrets");
    eq(flagValues(args, "--backend"), ["blksnap"], "--backend");
    eq(flagValues(args, "--blksnap_flavour"), ["lk6.15"], "--blksnap_flavour");
    eq(pod.priorityClassName, "backup-node-critical", "priorityClassName");
    eq(pod.nodeSelector, { "kubernetes.io/os": "linux", "node.example.com/pool": "storage" }, "nodeSelector");
    eq(pod.tolerations, [{ key: "node.example.com/dedicated", operator: "Equal", value: "storage", effect: "NoSchedule" }], "tolerations");
    eq(pod.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms?.[0]?.matchExpressions?.length, 2, "node affinity");
    eq(c.resources, { requests: { cpu: "250m", memory: "256Mi" }, limits: { cpu: "2", memory: "2Gi" } }, "resources");
    eq(pod.terminationGracePeriodSeconds, 60, "terminationGracePeriodSeconds");
  },
  "tcp-only-insecure"({ objs, ds, c, args, notes }) {
    eq(flagValues(args, "--listen"), ["0.0.0.0:7443"], "--listen (TCP only)");
    check(args.includes("--allow_insecure_tcp"), "--allow_insecure_tcp");
    check(!args.some((a) => a.startsWith("--tls_") || a.startsWith("--socket_")), "no TLS or socket flags");
    check(!volume(ds, "socket-dir"), "no socket hostPath without the socket listener");
    check(!volume(ds, "tls"), "no TLS Secret volume");
    const svc = ofKind(objs, "Service")[0];
    check(svc && svc.spec.clusterIP === undefined, "API Service is not headless");
    eq(svc?.spec.internalTrafficPolicy, "Local", "internalTrafficPolicy");
    eq(svc?.spec.ports, [{ name: "grpc", port: 443, targetPort: "grpc", protocol: "TCP" }], "API Service ports");
    eq((c.ports ?? []).find((p) => p.name === "grpc"), { name: "grpc", containerPort: 7443, hostPort: 7443, protocol: "TCP" }, "grpc container port with hostPort");
    // Plaintext: only bearer tokens can be granted; no policy.
    eq(flagValues(args, "--authz_policy"), [], "no --authz_policy");
    eq(flagValues(args, "--auth_tokens_file"), ["/etc/cbt-agent/tokens/tokens"], "--auth_tokens_file");
    eq(volume(ds, "auth-tokens")?.secret, { secretName: "cbt-agent-test-tokens", defaultMode: 0o400, items: [{ key: "tokens.txt", path: "tokens" }] },
       "tokens volume: the Secret's tokens.txt, mode 0400");
    check(!volume(ds, "authz-policy") && ofKind(objs, "ConfigMap").length === 0, "no policy volume or ConfigMap");
    check(notes.includes("travel in clear text"), "NOTES warn about tokens on plaintext TCP");
  },
  "tcp-tls-policy-secret"({ objs, ds, pod, c, args, notes }) {
    eq(objs.map((o) => o.kind).sort(), ["DaemonSet", "Service", "ServiceAccount"], "kinds rendered (no ConfigMap)");
    eq(flagValues(args, "--listen"), ["[::]:50051"], "--listen (TCP only, IPv6)");
    eq(flagValues(args, "--health_listen"), ["[::]:9810"], "--health_listen (IPv6)");
    eq(flagValues(args, "--tls_client_ca"), [], "no client CA");
    eq(flagValues(args, "--authz_policy"), ["/etc/cbt-agent/authz/policy"], "--authz_policy");
    eq(flagValues(args, "--auth_tokens_file"), ["/etc/cbt-agent/tokens/tokens"], "--auth_tokens_file");
    check(secretMountedAt(ds, "cbt-agent-authz", "/etc/cbt-agent/authz"), "policy Secret mounted read-only");
    eq(volume(ds, "authz-policy")?.secret, { secretName: "cbt-agent-authz", defaultMode: 0o400, items: [{ key: "authz.policy", path: "policy" }] },
       "policy volume: the Secret's authz.policy, mode 0400");
    eq(volume(ds, "auth-tokens")?.secret?.defaultMode, 0o400, "tokens mode 0400 (0440 with the fsGroup, which the agent accepts)");
    eq(pod.securityContext, { fsGroup: 3000 }, "podSecurityContext");
    check(ds.spec.template.metadata.annotations?.["checksum/authz-policy"] === undefined, "no checksum annotation for a policy Secret");
    eq(flagValues(args, "--device_allow"), ["/dev/nvme*n*", "/dev/sd*", "/dev/dm-*"], "--device_allow, one flag per glob");
    eq(flagValues(args, "--diff_storage_allow"), ["/dev/nvme9n1"], "--diff_storage_allow (a block device)");
    eq(flagValues(args, "--max_receive_message_bytes"), ["16777216"], "--max_receive_message_bytes");
    eq(flagValues(args, "--max_concurrent_streams"), ["32"], "--max_concurrent_streams");
    eq(flagValues(args, "--max_stream_duration"), ["1h30m"], "--max_stream_duration");
    check(notes.includes("Policy: Secret cbt-agent-authz (key authz.policy)"), "NOTES name the policy Secret");
    check(notes.includes("rollout restart daemonset/cbt-agent"), "NOTES say to restart after changing a Secret");
  },
};
function volumeOf(pod, name) {
  return (pod.volumes ?? []).find((v) => v.name === name);
}

// ------------------------------------------------------------------------------------------
// Main

const names = readdirSync(outDir).filter((f) => f.endsWith(".yaml")).map((f) => basename(f, ".yaml")).sort();
if (names.length === 0) {
  console.error(`validate.mjs: no rendered manifests in ${outDir}`);
  process.exit(2);
}
for (const name of names) {
  current = name;
  const before = { failures, checks, objectsValidated };
  const text = readFileSync(join(outDir, `${name}.yaml`), "utf8");
  const notesFile = join(outDir, `${name}.notes.txt`);
  const notes = existsSync(notesFile) ? readFileSync(notesFile, "utf8") : "";
  check(notes.length > 0, "NOTES rendered");
  const objs = [];
  for (const doc of parseAllDocuments(text, { version: "1.1", uniqueKeys: true })) {
    for (const err of [...doc.errors, ...doc.warnings]) check(false, `YAML: ${err.message}`);
    const o = doc.toJS();
    if (o !== null && o !== undefined) objs.push(o);
  }
  for (const [i, o] of objs.entries()) await validateObject(o, `document ${i + 1}`);
  const fn = CASES[name];
  try {
    const ctx = commonChecks(objs, notes);
    if (ctx && fn) fn({ objs, notes, ...ctx });
  } catch (e) {
    // A render so broken that an assertion could not even look at it.
    check(false, `assertions aborted: ${e.stack}`);
  }
  if (!fn) console.log(`    note [${name}] no case-specific assertions in validate.mjs; common checks only`);
  const kinds = objs.map((o) => o.kind).join(", ");
  const status = failures === before.failures ? "ok  " : "FAIL";
  console.log(`  ${status} ${name}: ${objs.length} objects (${kinds}); ` +
    `${objectsValidated - before.objectsValidated} schema-valid; ${checks - before.checks} checks, ` +
    `${failures - before.failures} failed`);
}
for (const name of Object.keys(CASES)) {
  current = name;
  check(names.includes(name), `values set ${name} was not rendered`);
}
console.log(`validate.mjs: ${names.length} values sets, ${objectsValidated} objects schema-valid, ` +
  `${checks} checks, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
