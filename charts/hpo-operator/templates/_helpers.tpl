{{/* The chart's name, truncated to 63 characters (a DNS label). */}}
{{- define "hpo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: the release name, prefixed to the chart's name
unless it already contains it ("hpo-operator" for a release named hpo-operator).
*/}}
{{- define "hpo-operator.fullname" -}}
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

{{/* The dev MinIO's objects: Deployment, Service, PVC and Secret. */}}
{{- define "hpo-operator.minioName" -}}
{{- printf "%s-minio" (include "hpo-operator.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* helm.sh/chart: name-version. */}}
{{- define "hpo-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "hpo-operator.labels" -}}
helm.sh/chart: {{ include "hpo-operator.chart" . }}
app.kubernetes.io/name: {{ include "hpo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hpo-operator
{{- end }}

{{/* Selector of the operator's pod (the component keeps it apart from MinIO's pod). */}}
{{- define "hpo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hpo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector of the dev MinIO's pod. */}}
{{- define "hpo-operator.minioSelectorLabels" -}}
app.kubernetes.io/name: {{ include "hpo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: minio
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "hpo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hpo-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image: the tag defaults to the chart's appVersion. */}}
{{- define "hpo-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Cross-field checks the schema cannot word clearly. Included by every template that depends
on them, so a bad combination fails the render with this message.
*/}}
{{- define "hpo-operator.validate" -}}
{{- if and (not .Values.rbac.clusterWide) (empty .Values.watchNamespaces) }}
{{- fail "rbac.clusterWide is false: list the namespaces to watch in watchNamespaces (a Role and RoleBinding are made in each)" }}
{{- end }}
{{- if eq (int .Values.metrics.port) 8080 }}
{{- fail "metrics.port 8080 is the liveness endpoint's port: choose another" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled: the ServiceMonitor scrapes the metrics Service" }}
{{- end }}
{{- if .Values.dashboard.enabled }}
{{- if not .Values.dashboard.bucket }}
{{- fail "dashboard.enabled: set dashboard.bucket to the studies' s3://BUCKET/PREFIX" }}
{{- end }}
{{- if not (hasPrefix "s3://" .Values.dashboard.bucket) }}
{{- fail "dashboard.bucket: give s3://BUCKET/PREFIX" }}
{{- end }}
{{- if and (not .Values.dashboard.endpoint) (not .Values.minio.enabled) }}
{{- fail "dashboard.enabled: set dashboard.endpoint (host:port of the S3 store), or enable minio" }}
{{- end }}
{{- if not .Values.dashboard.credentialsSecret.name }}
{{- fail "dashboard.enabled: set dashboard.credentialsSecret.name to a Secret with read-only keys of the bucket (the dashboard never writes; the chart does not hand it the studies' or MinIO's read-write keys)" }}
{{- end }}
{{- if and .Values.minio.enabled (eq .Values.dashboard.credentialsSecret.name (include "hpo-operator.minioName" .)) }}
{{- fail "dashboard.credentialsSecret.name: that is the dev MinIO's root keys; give a Secret with a read-only user's keys (README, section The dashboard)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
What the operator uses, and nothing more (tests/test_operator.py checks them against the
calls it makes): the ClusterRole in cluster-wide mode, each watched namespace's Role otherwise.
*/}}
{{- define "hpo-operator.rules" -}}
# Studies: watched by kopf, finalizer and handled-state annotations, and status.
- apiGroups: ["hpo-operator.dev"]
  resources: ["hpostudies"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["hpo-operator.dev"]
  resources: ["hpostudies/status"]
  verbs: ["patch"]
# Trainer pods: created, watched, annotated once recorded, deleted.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The object store's credentials, named by spec.storage.credentialsSecret.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events on studies (stage changes, failures, completion); the kubelet's FailedMount
# events on trainer pods are listed (a missing ConfigMap/Secret volume is said only there).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "create"]
{{- end }}

{{/*
Cluster-scoped, so never in a Role: kopf watches CRDs to notice resources appearing.
*/}}
{{- define "hpo-operator.discoveryRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

{{/* The dashboard's objects: Deployment and Service. */}}
{{- define "hpo-operator.dashboardName" -}}
{{- printf "%s-dashboard" (include "hpo-operator.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{/* Selector of the dashboard's pod. */}}
{{- define "hpo-operator.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ include "hpo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dashboard
{{- end }}
