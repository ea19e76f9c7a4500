{{/* Chart name. */}}
{{- define "txn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-wide prefix of every object name. */}}
{{- define "txn.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "txn.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "txn.labels" -}}
helm.sh/chart: {{ include "txn.chart" . }}
app.kubernetes.io/name: {{ include "txn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: transactions-api
{{- end -}}

{{/* Selector of every pod of the release. */}}
{{- define "txn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "txn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Per-service helpers take a dict: {root: $, name: "auth", svc: <values of the service>}. */}}
{{- define "txn.svc.fullname" -}}
{{- printf "%s-%s" (include "txn.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "txn.svc.selectorLabels" -}}
{{ include "txn.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "txn.svc.labels" -}}
{{ include "txn.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* <registry>/<prefix>/<name>:<tag>; a service may override with image.repository / image.tag. */}}
{{- define "txn.image" -}}
{{- $img := .root.Values.image -}}
{{- $own := default dict .svc.image -}}
{{- $repo := default (printf "%s/%s" $img.repositoryPrefix .name) $own.repository -}}
{{- $tag := default (default .root.Chart.AppVersion $img.tag) $own.tag -}}
{{- if $img.registry -}}
{{- printf "%s/%s:%s" $img.registry $repo (toString $tag) -}}
{{- else -}}
{{- printf "%s:%s" $repo (toString $tag) -}}
{{- end -}}
{{- end -}}

{{- define "txn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "txn.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret the chart creates for values given inline. */}}
{{- define "txn.secretName" -}}
{{- printf "%s-secrets" (include "txn.fullname" .) -}}
{{- end -}}

{{/* Whether a secret part (database, databaseRead, redis, token, smtp, gateway) is configured at all. */}}
{{- define "txn.secret.configured" -}}
{{- $s := index .root.Values.secrets .part -}}
{{- if $s.existingSecret -}}true
{{- else if eq .part "database" -}}{{ if $s.url }}true{{ end }}
{{- else if eq .part "databaseRead" -}}{{ if $s.url }}true{{ end }}
{{- else if eq .part "gateway" -}}{{ if $s.secret }}true{{ end }}
{{- else if eq .part "redis" -}}{{ if $s.url }}true{{ end }}
{{- else if eq .part "token" -}}{{ if or $s.publicKey $s.privateKey }}true{{ end }}
{{- else if eq .part "smtp" -}}{{ if or $s.username $s.password }}true{{ end }}
{{- end -}}
{{- end -}}

{{/* The Secret that holds a part: the existing one, or the chart's. */}}
{{- define "txn.secret.name" -}}
{{- $s := index .root.Values.secrets .part -}}
{{- default (include "txn.secretName" .root) $s.existingSecret -}}
{{- end -}}

{{/* Key inside the chart's own Secret for a part's item. */}}
{{- define "txn.secret.key" -}}
{{- $s := index .root.Values.secrets .part -}}
{{- if $s.existingSecret -}}
{{- index $s .keyField -}}
{{- else -}}
{{- printf "%s-%s" .part (index $s .keyField) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context, probes etc. shared by Deployments and the migration Job. */}}
{{- define "txn.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}
{{- define "txn.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end -}}

{{/* TLS to the database: the env vars and the CA bundle mount shared by the services that use the
database and the migration Job. `cm` is the ConfigMap's name (the Job has a hook copy of its own). */}}
{{- define "txn.dbTLS.configMap" -}}
{{- $ca := .Values.databaseTLS.caBundle -}}
{{- if $ca.existingConfigMap -}}{{ $ca.existingConfigMap }}{{- else if $ca.pem -}}{{ include "txn.fullname" . }}-ca-bundle{{- end -}}
{{- end }}
{{- define "txn.dbTLS.env" -}}
{{- with .Values.databaseTLS.sslMode }}
- name: TXN_DATABASE__SSL_MODE
  value: {{ . | quote }}
{{- end }}
{{- if include "txn.dbTLS.configMap" . }}
- name: TXN_DATABASE__SSL_ROOT_CERT
  value: /etc/txn/ca/ca.pem
{{- end }}
{{- end }}
{{- define "txn.dbTLS.volume" -}}
- name: database-ca
  configMap:
    name: {{ .cm }}
    items:
      - key: {{ if .root.Values.databaseTLS.caBundle.existingConfigMap }}{{ .root.Values.databaseTLS.caBundle.key }}{{ else }}ca.pem{{ end }}
        path: ca.pem
{{- end }}
