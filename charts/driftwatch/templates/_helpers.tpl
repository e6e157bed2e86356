{{/* Chart name, or nameOverride. */}}
{{- define "driftwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name of the chart's objects, at most 63 characters. */}}
{{- define "driftwatch.fullname" -}}
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

{{- define "driftwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selects the agent's pods (Deployment, Service, PDB). */}}
{{- define "driftwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "driftwatch.labels" -}}
helm.sh/chart: {{ include "driftwatch.chart" . }}
{{ include "driftwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "driftwatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Checks values that would render a broken agent; included by the Deployment.
*/}}
{{- define "driftwatch.validate" -}}
{{- if and .Values.upstream.enabled (not .Values.clusterName) }}
{{- fail "upstream.enabled=true needs clusterName (--cluster-name names the agent's heartbeat Lease in the source cluster): set clusterName=<this cluster's name>" }}
{{- end }}
{{- if and .Values.upstream.enabled (not .Values.upstream.secretName) }}
{{- fail "upstream.enabled=true needs upstream.secretName: the Secret that holds the source kubeconfig" }}
{{- end }}
{{- if not (has .Values.rbac.scope (list "cluster" "tenant")) }}
{{- fail (printf "rbac.scope must be \"cluster\" or \"tenant\", not %q" (toString .Values.rbac.scope)) }}
{{- end }}
{{- end }}
