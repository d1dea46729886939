{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "driftwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "driftwarden.fullname" -}}
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

{{/* Labels of every object, without app.kubernetes.io/component. */}}
{{- define "driftwarden.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "driftwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: driftwarden
{{- end }}

{{- define "driftwarden.labels" -}}
{{ include "driftwarden.baseLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "driftwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "driftwarden.serviceAccountName" -}}
{{- default (include "driftwarden.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "driftwarden.jobServiceAccountName" -}}
{{- default (printf "%s-job" (include "driftwarden.fullname" .)) .Values.jobs.serviceAccount.name }}
{{- end }}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "driftwarden.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (default .appVersion .tag) }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator works in: the release namespace is not added on its own,
an empty list means all namespaces. Sorted and de-duplicated so renders are stable.
*/}}
{{- define "driftwarden.watchNamespaces" -}}
{{- .Values.watchNamespaces | uniq | sortAlpha | toJson }}
{{- end }}

{{/* Where the Jobs' ServiceAccount is created: the watched namespaces plus any extra ones. */}}
{{- define "driftwarden.jobNamespaces" -}}
{{- concat .Values.watchNamespaces .Values.jobs.serviceAccount.extraNamespaces | uniq | sortAlpha | toJson }}
{{- end }}

{{/* The Prometheus URL prefixes specs may name: policy.prometheusUrls, else prometheus.url. */}}
{{- define "driftwarden.prometheusUrls" -}}
{{- if .Values.policy.prometheusUrls }}
{{- .Values.policy.prometheusUrls | uniq | toJson }}
{{- else if .Values.prometheus.url }}
{{- list .Values.prometheus.url | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{/* The job image spec.job.image may always name: the chart's (jobs.image). */}}
{{- define "driftwarden.jobImage" -}}
{{- include "driftwarden.image" (merge (dict "appVersion" .Chart.AppVersion) .Values.jobs.image) }}
{{- end }}
