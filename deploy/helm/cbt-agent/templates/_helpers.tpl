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
{{- $args = append $args (printf "--health_listen=%s" (include "cbt-agent.hostPort" (list . .Values.health.port))) }}
{{- if .Values.metrics.enabled }}
{{- $args = append $args (printf "--metrics_listen=%s" (include "cbt-agent.hostPort" (list . .Values.metrics.port))) }}
{{- end }}
{{- range .Values.agent.extraArgs }}
{{- $args = append $args (toString .) }}
{{- end }}
{{- toYaml $args }}
{{- end }}
