{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "cbt-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: fullnameOverride, else "<release>-<chart>" (or the release name when it
already contains the chart name), truncated to 63 characters.
*/}}
{{- define "cbt-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "cbt-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "cbt-agent.labels" -}}
helm.sh/chart: {{ include "cbt-agent.chart" . }}
{{ include "cbt-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: node-agent
{{- end }}

{{/*
Selector labels (immutable once the DaemonSet exists: keep them minimal).
*/}}
{{- define "cbt-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cbt-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "cbt-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cbt-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "cbt-agent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
Absolute path of the API's Unix socket.
*/}}
{{- define "cbt-agent.socketPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.listen.socket.dir) .Values.listen.socket.name }}
{{- end }}

{{/*
"host:port" for a listener bound to .Values.bindAddress (IPv6 literals get brackets).
Usage: include "cbt-agent.hostPort" (list $ port)
*/}}
{{- define "cbt-agent.hostPort" -}}
{{- $root := index . 0 }}
{{- $port := index . 1 | int }}
{{- $addr := $root.Values.bindAddress | toString }}
{{- if contains ":" $addr }}
{{- printf "[%s]:%d" $addr $port }}
{{- else }}
{{- printf "%s:%d" $addr $port }}
{{- end }}
{{- end }}

{{/*
Whether the API is served over TLS on TCP ("true" or "").
*/}}
{{- define "cbt-agent.tcpTLS" -}}
{{- if and .Values.listen.tcp.enabled .Values.listen.tcp.tls.secretName }}true{{- end }}
{{- end }}

{{/*
Whether client certificates are required on TCP (mTLS) ("true" or "").
*/}}
{{- define "cbt-agent.tcpMTLS" -}}
{{- if and (include "cbt-agent.tcpTLS" .) .Values.listen.tcp.tls.clientCA.enabled }}true{{- end }}
{{- end }}

{{/*
Secret holding the client CA bundle.
*/}}
{{- define "cbt-agent.clientCASecret" -}}
{{- default .Values.listen.tcp.tls.secretName .Values.listen.tcp.tls.clientCA.secretName }}
{{- end }}

{{/*
Name of the ConfigMap holding the inline authorization policy (authz.policy).
*/}}
{{- define "cbt-agent.authzConfigMapName" -}}
{{- printf "%s-authz" (include "cbt-agent.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
Whether an authorization policy file is mounted ("true" or "").
*/}}
{{- define "cbt-agent.hasPolicy" -}}
{{- if or .Values.authz.policy .Values.authz.policySecret }}true{{- end }}
{{- end }}

{{/*
Parses the inline policy (authz.policy) as the agent does (agent/server/authz_policy.cc): one
directive per line, '#' at the start of a line or after a blank starts a comment, fields split on
blanks. Fails rendering on a line the agent would refuse; otherwise returns JSON
{"certGrants": N, "tokenNames": [...], "grants": N}.
*/}}
{{- define "cbt-agent.policySummary" -}}
{{- $certGrants := 0 }}
{{- $grants := 0 }}
{{- $tokenNames := list }}
{{- $unixSeen := false }}
{{- range $i, $raw := splitList "\n" (toString .Values.authz.policy) }}
{{- $line := regexReplaceAll "(^|[ \t])#.*$" $raw "" | trim }}
{{- if $line }}
{{- $f := regexSplit "[ \t\r]+" $line -1 }}
{{- $where := printf "cbt-agent: authz.policy line %d (%q)" (add1 $i) $line }}
{{- if eq (index $f 0) "unix" }}
{{- if or (ne (len $f) 2) (not (has (index $f 1) (list "write" "read" "none"))) }}
{{- fail (printf "%s: expected 'unix write|read|none'" $where) }}
{{- end }}
{{- if $unixSeen }}
{{- fail (printf "%s: a second 'unix' line" $where) }}
{{- end }}
{{- $unixSeen = true }}
{{- else if and (eq (index $f 0) "grant") (eq (len $f) 3) (has (index $f 1) (list "read" "write")) (regexMatch "^(cert-cn|cert-san|token):.+$" (index $f 2)) }}
{{- $grants = add1 $grants }}
{{- if hasPrefix "token:" (index $f 2) }}
{{- $tokenNames = append $tokenNames (trimPrefix "token:" (index $f 2)) }}
{{- else }}
{{- $certGrants = add1 $certGrants }}
{{- end }}
{{- else }}
{{- fail (printf "%s: expected 'grant read|write cert-cn:NAME|cert-san:NAME|token:NAME' or 'unix write|read|none'" $where) }}
{{- end }}
{{- end }}
{{- end }}
{{- dict "certGrants" $certGrants "grants" $grants "tokenNames" ($tokenNames | uniq) | toJson }}
{{- end }}

{{/*
Whether `path` is `dir` or lies below it, component-wise. Usage: include "cbt-agent.under" (list path dir)
*/}}
{{- define "cbt-agent.under" -}}
{{- $path := index . 0 | toString }}
{{- $dir := index . 1 | toString | trimSuffix "/" }}
{{- if or (eq $path $dir) (hasPrefix (printf "%s/" $dir) $path) }}true{{- end }}
{{- end }}

{{/*
Cross-field checks the JSON schema cannot express clearly; each fails rendering with a message.
*/}}
{{- define "cbt-agent.validate" -}}
{{- $tcp := .Values.listen.tcp }}
{{- if not (or .Values.listen.socket.enabled $tcp.enabled) }}
{{- fail "cbt-agent: no API listener: enable listen.socket and/or listen.tcp" }}
{{- end }}
{{- if and $tcp.enabled (not $tcp.tls.secretName) (not $tcp.allowInsecure) }}
{{- fail "cbt-agent: listen.tcp.enabled needs listen.tcp.tls.secretName (a Secret with the server certificate and key), or listen.tcp.allowInsecure=true for plaintext test setups" }}
{{- end }}
{{- if and $tcp.enabled $tcp.tls.secretName $tcp.allowInsecure }}
{{- fail "cbt-agent: listen.tcp.allowInsecure and listen.tcp.tls.secretName are mutually exclusive" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "cbt-agent: metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- $ports := list (int .Values.health.port) }}
{{- if .Values.metrics.enabled }}
{{- if has (int .Values.metrics.port) $ports }}
{{- fail "cbt-agent: metrics.port must differ from health.port" }}
{{- end }}
{{- $ports = append $ports (int .Values.metrics.port) }}
{{- end }}
{{- if and $tcp.enabled (has (int $tcp.port) $ports) }}
{{- fail "cbt-agent: listen.tcp.port must differ from health.port and metrics.port" }}
{{- end }}
{{- /* Authorization: a TCP listener nobody can be granted on refuses every call (useless). */}}
{{- $authz := .Values.authz }}
{{- if and $authz.policy $authz.policySecret }}
{{- fail "cbt-agent: authz.policy and authz.policySecret are mutually exclusive (inline policy, or one from an existing Secret)" }}
{{- end }}
{{- $summary := include "cbt-agent.policySummary" . | fromJson }}
{{- if and $summary.tokenNames (not $authz.tokensSecret) }}
{{- fail (printf "cbt-agent: authz.policy grants to token:%s, but authz.tokensSecret is empty: the agent refuses to start when the policy names a token its --auth_tokens_file does not hold" (first $summary.tokenNames)) }}
{{- end }}
{{- if $tcp.enabled }}
{{- if and $tcp.allowInsecure (not $authz.tokensSecret) }}
{{- fail "cbt-agent: listen.tcp.allowInsecure needs authz.tokensSecret: on plaintext TCP no client presents a certificate, so only bearer tokens can be granted, and without them the agent refuses every TCP call" }}
{{- end }}
{{- if not (or $authz.policy $authz.policySecret $authz.tokensSecret) }}
{{- fail "cbt-agent: listen.tcp.enabled needs authz.policy (or authz.policySecret) and/or authz.tokensSecret: the agent refuses every TCP call nothing grants (e.g. authz.policy: \"grant write cert-cn:<controller's certificate CN>\"; see docs/deploy.md, \"Who may call what\")" }}
{{- end }}
{{- if and (not (include "cbt-agent.tcpMTLS" .)) (not $authz.tokensSecret) }}
{{- fail "cbt-agent: listen.tcp.tls.clientCA.enabled is false and authz.tokensSecret is empty: no TCP caller can present a client certificate or a bearer token, so the agent would refuse every TCP call (enable the client CA, or set authz.tokensSecret)" }}
{{- end }}
{{- if and $authz.policy (not $authz.tokensSecret) (eq (int $summary.certGrants) 0) }}
{{- fail "cbt-agent: listen.tcp.enabled, but authz.policy grants nothing a TCP caller can present (no 'grant read|write cert-cn:NAME|cert-san:NAME' line) and authz.tokensSecret is empty: the agent would refuse every TCP call" }}
{{- end }}
{{- end }}
{{- /* Diff storage must be visible in the pod when the agent starts (it resolves every entry then). */}}
{{- range .Values.security.diffStorageAllow }}
{{- $entry := . }}
{{- $visible := or (include "cbt-agent.under" (list $entry "/dev")) (include "cbt-agent.under" (list $entry $.Values.agent.stateDir)) }}
{{- range $.Values.extraVolumeMounts }}
{{- if include "cbt-agent.under" (list $entry .mountPath) }}
{{- $visible = true }}
{{- end }}
{{- end }}
{{- if not $visible }}
{{- fail (printf "cbt-agent: security.diffStorageAllow entry %s is not visible in the pod: it must lie under /dev, agent.stateDir (%s) or an extraVolumeMounts mountPath (mount the host directory there, e.g. a hostPath with type DirectoryOrCreate), else the agent cannot start" $entry $.Values.agent.stateDir) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Numeric-or-string value as text: YAML numbers arrive as float64, printed without exponent.
*/}}
{{- define "cbt-agent.text" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- int64 . | toString }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/*
The agent's command-line flags as a YAML list (every item quoted).
*/}}
{{- define "cbt-agent.args" -}}
{{- $tcp := .Values.listen.tcp }}
{{- $args := list }}
{{- if .Values.listen.socket.enabled }}
{{- $args = append $args (printf "--listen=unix:%s" (include "cbt-agent.socketPath" .)) }}
{{- $args = append $args (printf "--socket_mode=%s" .Values.listen.socket.mode) }}
{{- $group := include "cbt-agent.text" .Values.listen.socket.group }}
{{- if $group }}
{{- $args = append $args (printf "--socket_group=%s" $group) }}
{{- end }}
{{- end }}
{{- if $tcp.enabled }}
{{- $args = append $args (printf "--listen=%s" (include "cbt-agent.hostPort" (list . $tcp.port))) }}
{{- if $tcp.allowInsecure }}
{{- $args = append $args "--allow_insecure_tcp" }}
{{- else }}
{{- $args = append $args (printf "--tls_cert=/etc/cbt-agent/tls/%s" $tcp.tls.certKey) }}
{{- $args = append $args (printf "--tls_key=/etc/cbt-agent/tls/%s" $tcp.tls.keyKey) }}
{{- if include "cbt-agent.tcpMTLS" . }}
{{- $args = append $args (printf "--tls_client_ca=/etc/cbt-agent/client-ca/%s" $tcp.tls.clientCA.key) }}
{{- end }}
{{- end }}
{{- end }}
{{- $args = append $args (printf "--state_dir=%s" .Values.agent.stateDir) }}
{{- $args = append $args (printf "--backend=%s" .Values.agent.backend) }}
{{- $args = append $args (printf "--blksnap_flavour=%s" .Values.agent.blksnapFlavour) }}
{{- if include "cbt-agent.hasPolicy" . }}
{{- $args = append $args "--authz_policy=/etc/cbt-agent/authz/policy" }}
{{- end }}
{{- if .Values.authz.tokensSecret }}
{{- $args = append $args "--auth_tokens_file=/etc/cbt-agent/tokens/tokens" }}
{{- end }}
{{- range .Values.security.deviceAllow }}
{{- $args = append $args (printf "--device_allow=%s" .) }}
{{- end }}
{{- range .Values.security.diffStorageAllow }}
{{- $args = append $args (printf "--diff_storage_allow=%s" .) }}
{{- end }}
{{- $limits := .Values.security.limits }}
{{- $args = append $args (printf "--max_receive_message_bytes=%d" (int64 $limits.maxReceiveMessageBytes)) }}
{{- $args = append $args (printf "--max_concurrent_streams=%d" (int64 $limits.maxConcurrentStreams)) }}
{{- $args = append $args (printf "--max_stream_duration=%s" $limits.maxStreamDuration) }}
{{- $args = append $args (printf "--health_listen=%s" (include "cbt-agent.hostPort" (list . .Values.health.port))) }}
{{- if .Values.metrics.enabled }}
{{- $args = append $args (printf "--metrics_listen=%s" (include "cbt-agent.hostPort" (list . .Values.metrics.port))) }}
{{- end }}
{{- range .Values.agent.extraArgs }}
{{- $args = append $args (toString .) }}
{{- end }}
{{- toYaml $args }}
{{- end }}
