{{/*
Names: <release>-strongroom unless the release name already contains it
(vault-helm's rule), cut to 63 characters.
*/}}
{{- define "strongroom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strongroom.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "strongroom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The mode: ha, standalone, or external (server disabled). */}}
{{- define "strongroom.mode" -}}
{{- if or (not .Values.global.enabled) (not .Values.server.enabled) -}}
external
{{- else if .Values.server.ha.enabled -}}
ha
{{- else if or (eq (.Values.server.standalone.enabled | toString) "-") (eq (.Values.server.standalone.enabled | toString) "true") -}}
standalone
{{- else -}}
external
{{- end -}}
{{- end -}}

{{- define "strongroom.replicas" -}}
{{- if eq (include "strongroom.mode" .) "ha" -}}
{{- $n := .Values.server.ha.replicas -}}
{{- if kindIs "float64" $n -}}{{ int $n }}{{- else if kindIs "int64" $n -}}{{ $n }}{{- else if kindIs "int" $n -}}{{ $n }}{{- else -}}3{{- end -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{- define "strongroom.scheme" -}}
{{- if .Values.global.tlsDisable -}}http{{- else -}}https{{- end -}}
{{- end -}}

{{- define "strongroom.serviceAccountName" -}}
{{- if .Values.server.serviceAccount.create -}}
{{- default (include "strongroom.fullname" .) .Values.server.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.server.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "strongroom.labels" -}}
helm.sh/chart: {{ include "strongroom.chart" . }}
app.kubernetes.io/name: {{ include "strongroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The server pods' selector (StatefulSet, PDB, Services, anti-affinity). */}}
{{- define "strongroom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strongroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
component: server
{{- end -}}

{{/*
The server config: server.ha.config or server.standalone.config through
tpl, with `disable_mlock = true` appended unless set (containers run
without swap; vault-helm does the same).
*/}}
{{- define "strongroom.config" -}}
{{- $mode := include "strongroom.mode" . -}}
{{- $config := "" -}}
{{- if eq $mode "ha" -}}
{{- $config = .Values.server.ha.config -}}
{{- else -}}
{{- $config = .Values.server.standalone.config -}}
{{- end -}}
{{- if not (kindIs "string" $config) -}}
{{- fail "server config must be an HCL string (server.ha.config / server.standalone.config)" -}}
{{- end -}}
{{- $rendered := tpl $config . | trimSuffix "\n" -}}
{{- if not (regexMatch "(?m)^\\s*disable_mlock\\s*=" $rendered) -}}
{{- $rendered = printf "%s\n\ndisable_mlock = true" $rendered -}}
{{- end -}}
{{- $rendered -}}
{{- end -}}

{{/* PDB maxUnavailable: explicit, else floor((replicas - 1) / 2). */}}
{{- define "strongroom.pdb.maxUnavailable" -}}
{{- if not (kindIs "invalid" .Values.server.ha.disruptionBudget.maxUnavailable) -}}
{{- .Values.server.ha.disruptionBudget.maxUnavailable -}}
{{- else -}}
{{- div (sub (include "strongroom.replicas" . | int) 1) 2 -}}
{{- end -}}
{{- end -}}

{{/*
The Prometheus label selector the alert rules use: the series scraped
through this release's ServiceMonitor.
*/}}
{{- define "strongroom.metricSelector" -}}
namespace="{{ .Release.Namespace }}",service="{{ include "strongroom.fullname" . }}{{ if .Values.serverTelemetry.serviceMonitor.activeOnly }}-active{{ else }}-internal{{ end }}"
{{- end -}}

{{/* A probe from server.readinessProbe / server.livenessProbe. */}}
{{- define "strongroom.probe" -}}
{{- $probe := .probe -}}
{{- if $probe.execCommand }}
exec:
  command:
    {{- toYaml $probe.execCommand | nindent 4 }}
{{- else if $probe.path }}
httpGet:
  path: {{ $probe.path | quote }}
  port: {{ $probe.port }}
  scheme: {{ include "strongroom.scheme" .root | upper }}
{{- else }}
exec:
  command: ["/usr/local/bin/strongroom", "status", "-tls-skip-verify"]
{{- end }}
failureThreshold: {{ $probe.failureThreshold }}
initialDelaySeconds: {{ $probe.initialDelaySeconds }}
periodSeconds: {{ $probe.periodSeconds }}
successThreshold: {{ $probe.successThreshold }}
timeoutSeconds: {{ $probe.timeoutSeconds }}
{{- end -}}
