{{/*
Names, labels and the checks that values.schema.json cannot express on its own.
Every template includes "turnstile-operator.validate" first, so a bad combination fails the
render with one readable message before any object is produced.
*/}}

{{- define "turnstile-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turnstile-operator.fullname" -}}
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

{{- define "turnstile-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turnstile-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "turnstile-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "turnstile-operator.labels" -}}
helm.sh/chart: {{ include "turnstile-operator.chart" . }}
{{ include "turnstile-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: turnstile
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The metadata.annotations block (indented for metadata, starting with a newline), or nothing.
Usage, right after the labels: {{- include "turnstile-operator.annotations" (list $ .extra) }}
*/}}
{{- define "turnstile-operator.annotations" -}}
{{- $root := index . 0 -}}
{{- $all := merge (dict) (index . 1 | default dict) $root.Values.commonAnnotations -}}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "turnstile-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "turnstile-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: set it to an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "turnstile-operator.peeringName" -}}
{{- default (include "turnstile-operator.fullname" .) .Values.peering.name -}}
{{- end -}}

{{- define "turnstile-operator.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/*
The namespaces the operator watches in namespaced mode, as a list (JSON-encoded, since templates
can only return strings): watchNamespaces, or the release namespace when that list is empty.
*/}}
{{- define "turnstile-operator.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- .Values.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{/* Fail early on combinations that would render a broken or unsafe operator. */}}
{{- define "turnstile-operator.validate" -}}
{{- $replicas := int .Values.replicaCount -}}
{{- if and (gt $replicas 1) (not .Values.peering.enabled) -}}
{{- fail (printf "replicaCount: %d replicas need peering.enabled=true (without kopf peering every replica would reconcile the same stores); set peering.enabled=true or replicaCount=1" $replicas) -}}
{{- end -}}
{{- if and .Values.clusterWide .Values.watchNamespaces -}}
{{- fail (printf "watchNamespaces: must be empty when clusterWide=true (got %s); either list namespaces or watch the whole cluster, not both" (toJson .Values.watchNamespaces)) -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled: a ServiceMonitor needs metrics.enabled=true (there is no metrics endpoint to scrape otherwise)" -}}
{{- end -}}
{{- if and .Values.metrics.dashboard.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.dashboard.enabled: the Grafana dashboard needs metrics.enabled=true (it would chart series nobody exports)" -}}
{{- end -}}
{{- if and .Values.metrics.botPodMonitor.enabled (not .Values.metrics.botPodMonitor.selector) -}}
{{- fail "metrics.botPodMonitor.selector: set the labels of the bot pods to scrape (e.g. app: rasa); an empty selector would scrape every pod in the namespaces" -}}
{{- end -}}
{{- if and .Values.admission.enabled (not (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version)) -}}
{{- fail (printf "admission.enabled: Kubernetes %s has no ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA in 1.30); upgrade the cluster, or set admission.enabled=false and rely on RBAC and the Secret label alone (docs/operator.md, \"Who may do what\")" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.livenessPort)) -}}
{{- fail (printf "metrics.port: %d is also livenessPort; the metrics and liveness endpoints need different ports" (int .Values.metrics.port)) -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects are shared by all releases: qualify them with the release namespace. */}}
{{- define "turnstile-operator.clusterRoleName" -}}
{{- printf "%s-%s" .Release.Namespace (include "turnstile-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
RBAC rules the operator needs wherever it handles stores: in each watched namespace (Role) or
everywhere (ClusterRole). Keep in step with docs/operator.md ("RBAC the operator needs") and
docs/rollout.md; tests/k8s/test_helm_rbac.py runs the operator with exactly these.
*/}}
{{- define "turnstile-operator.rules.stores" -}}
# Turnstile: the stores it reconciles, and their status.
- apiGroups: [turnstile.dev]
  resources: [lockstores, timerstores]
  verbs: [get, list, watch, patch]
- apiGroups: [turnstile.dev]
  resources: [lockstores/status, timerstores/status]
  verbs: [get, patch]
# Turnstile: the ConfigMaps with the rendered endpoints.yml sections (read, then create or
# replace with resourceVersion; garbage collection deletes them through ownerReferences).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update]
# Turnstile: Redis passwords and TLS material the stores reference (read-only).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
# Turnstile: rolling out the bots that mount the ConfigMap (list/watch to find them; patch for
# the checksum annotation and injected env, and nothing else: the operator-patches
# ValidatingAdmissionPolicy refuses a patch that changes any other field).
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list, watch, patch]
# kopf: events about handler progress and errors (core and events.k8s.io).
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/*
Cluster-scoped rules kopf needs in either mode: watching CRDs so it notices when the stores' CRDs
are (re)installed without a restart. Discovery (/api, /apis) is open to every authenticated user.
Namespaces: in cluster-wide mode kopf never lists them. In namespaced mode it lists and watches
them to follow namespaces coming and going; refused, it retries for ~40 s at every start and then
falls back to the names it was given. rbac.namespaceDiscovery (default on) trades that delay for
read access to namespace names, and nothing else.
*/}}
{{- define "turnstile-operator.rules.discovery" -}}
# kopf: runtime observation of CRDs (added/removed served resources).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if and (not .Values.clusterWide) .Values.reportUnwatchedStores }}
# Turnstile: stores in namespaces no release watches get a NamespaceNotWatched condition
# (a periodic list, and a status patch of those stores only).
- apiGroups: [turnstile.dev]
  resources: [lockstores, timerstores]
  verbs: [list]
- apiGroups: [turnstile.dev]
  resources: [lockstores/status, timerstores/status]
  verbs: [patch]
{{- end }}
{{- if and (not .Values.clusterWide) .Values.rbac.namespaceDiscovery }}
# kopf: the watched namespaces appearing/disappearing (names only).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end -}}
