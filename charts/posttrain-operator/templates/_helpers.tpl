{{/*
Names, labels and shared rule lists of the posttrain operator chart.
*/}}

{{- define "posttrain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Cluster-scoped objects (ClusterRoles, bindings) carry it, so two releases in
different namespaces need different names (fullnameOverride or release names).
*/}}
{{- define "posttrain.fullname" -}}
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

{{- define "posttrain.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "posttrain.selectorLabels" -}}
app.kubernetes.io/name: {{ include "posttrain.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "posttrain.labels" -}}
helm.sh/chart: {{ include "posttrain.chart" . }}
{{ include "posttrain.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: posttrain
{{- end }}

{{- define "posttrain.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "posttrain.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "posttrain.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The plurals of the posttrain kinds, one per generated CRD file (files/crds/<plural>.yaml), so the roles
follow the CRDs without a second list to keep in step.
*/}}
{{- define "posttrain.plurals" -}}
{{- range $path, $_ := .Files.Glob "files/crds/*.yaml" }}
- {{ base $path | trimSuffix ".yaml" }}
{{- end }}
{{- end }}

{{/*
The plurals of the kinds a Curriculum creates (every kind but the curricula themselves).
*/}}
{{- define "posttrain.childPlurals" -}}
{{- range $plural := include "posttrain.plurals" . | fromYamlArray }}
{{- if ne $plural "curricula" }}
- {{ $plural }}
{{- end }}
{{- end }}
{{- end }}

{{- define "posttrain.subresources" -}}
{{- $suffix := .suffix }}
{{- range $plural := include "posttrain.plurals" .root | fromYamlArray }}
- {{ $plural }}/{{ $suffix }}
{{- end }}
{{- end }}

{{/*
What the operator does in a namespace it watches. Derived from the code, nothing more:
- reads every kind (kopf's watch streams and indexes) and writes their status subresource;
- creates, patches (server-side apply) and deletes the five kinds a Curriculum owns: the chain it
  expands to (users' own resources are never written: the operator only touches objects it labelled
  as a curriculum's);
- `update` on <plural>/finalizers: children carry ownerReferences with blockOwnerDeletion, which the
  OwnerReferencesPermissionEnforcement admission plugin checks against this permission;
- creates and deletes workload Jobs, teacher Deployments, their Services and the workload ConfigMaps,
  and watches Jobs, Deployments and Pods (label posttrain.dev/kind) to follow them;
- posts core/v1 Events (kopf.event).
No Secrets: workload pods reference them with secretKeyRef, which the kubelet resolves.
*/}}
{{- define "posttrain.operatorRules" -}}
- apiGroups: ["posttrain.dev"]
  resources:
    {{- include "posttrain.plurals" . | trim | nindent 4 }}
  verbs: ["get", "list", "watch"]
- apiGroups: ["posttrain.dev"]
  resources:
    {{- include "posttrain.childPlurals" . | trim | nindent 4 }}
  verbs: ["create", "patch", "delete"]
- apiGroups: ["posttrain.dev"]
  resources:
    {{- include "posttrain.subresources" (dict "root" . "suffix" "status") | trim | nindent 4 }}
  verbs: ["get", "patch"]
- apiGroups: ["posttrain.dev"]
  resources:
    {{- include "posttrain.subresources" (dict "root" . "suffix" "finalizers") | trim | nindent 4 }}
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Cluster-scoped reads of the framework: kopf watches CRDs to notice new or changed resource
definitions, and (watching listed namespaces only) lists namespaces to notice them come and go.
*/}}
{{- define "posttrain.observerRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if .Values.operator.watchNamespaces }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}
