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
