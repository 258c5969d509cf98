{{/* Names and labels. */}}
{{- define "spillway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spillway.fullname" -}}
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

{{- define "spillway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spillway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spillway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "spillway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "spillway.secretName" -}}
{{- default (include "spillway.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* A value for a SPILLWAY_* variable: lists as inline arrays. */}}
{{- define "spillway.envValue" -}}
{{- if kindIs "slice" . }}{{ toJson . }}{{ else }}{{ toString . }}{{ end }}
{{- end }}

{{/* auth.tokens as figment's inline syntax: [{name="ci",token="...",scopes=["write"]}] */}}
{{- define "spillway.tokens" -}}
[{{- range $i, $t := . }}{{ if $i }},{{ end }}{name={{ required "auth.tokens[].name is required" $t.name | toString | quote }},token={{ required "auth.tokens[].token is required" $t.token | toString | quote }},scopes={{ required "auth.tokens[].scopes is required" $t.scopes | toJson }}}{{- end }}]
{{- end }}

{{/* The Secret the chart makes for the S3 credentials and the PostgreSQL URL. */}}
{{- define "spillway.backendsSecretName" -}}
{{- printf "%s-backends" (include "spillway.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* True (non-empty) when the chart keeps S3 credentials in its backends Secret. */}}
{{- define "spillway.s3InlineCredentials" -}}
{{- if and (eq .Values.storage "s3") (not .Values.s3.existingSecret) .Values.s3.accessKeyId }}true{{ end }}
{{- end }}

{{/* True (non-empty) when the chart keeps the PostgreSQL URL in its backends Secret. */}}
{{- define "spillway.postgresInlineUrl" -}}
{{- if and (eq .Values.index "postgres") (not .Values.postgres.existingSecret) }}true{{ end }}
{{- end }}

{{/* The data volume's size: persistence.data.size, else by storage. */}}
{{- define "spillway.dataSize" -}}
{{- .Values.persistence.data.size | default (ternary "20Gi" "100Gi" (eq .Values.storage "s3")) }}
{{- end }}

{{/* Fails the render, with a message, on values that cannot work. */}}
{{- define "spillway.validate" -}}
{{- if not (has .Values.storage (list "fs" "s3")) }}
{{- fail (printf "storage must be fs or s3, not %v" .Values.storage) }}
{{- end }}
{{- if not (has .Values.index (list "sqlite" "postgres")) }}
{{- fail (printf "index must be sqlite or postgres, not %v" .Values.index) }}
{{- end }}
{{- if lt (int .Values.replicaCount) 0 }}
{{- fail (printf "replicaCount must be 0 or more, not %v" .Values.replicaCount) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not (and (eq .Values.storage "s3") (eq .Values.index "postgres"))) }}
{{- fail (printf "replicaCount: %v needs storage: s3 and index: postgres (they are %s and %s): pods on the file system store or SQLite would each be a separate store" (toString .Values.replicaCount) .Values.storage .Values.index) }}
{{- end }}
{{- if eq .Values.storage "s3" }}
{{- if not .Values.s3.bucket }}
{{- fail "storage: s3 needs s3.bucket" }}
{{- end }}
{{- if not (has .Values.s3.downloads (list "proxy" "redirect")) }}
{{- fail (printf "s3.downloads must be proxy or redirect, not %v" .Values.s3.downloads) }}
{{- end }}
{{- if and (not .Values.s3.existingSecret) (ne (not .Values.s3.accessKeyId) (not .Values.s3.secretAccessKey)) }}
{{- fail "s3.accessKeyId and s3.secretAccessKey go together (or use s3.existingSecret)" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.index "postgres") (not .Values.postgres.url) (not .Values.postgres.existingSecret) }}
{{- fail "index: postgres needs postgres.url or postgres.existingSecret" }}
{{- end }}
{{- end }}
