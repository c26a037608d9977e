{{/*
Names, labels, images and the hardened security settings every workload shares.
*/}}

{{- define "voxmesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* voxmesh.name: "<fullname>-<component>". Call with (dict "root" $ "component" "stt"). */}}
{{- define "voxmesh.name" -}}
{{- printf "%s-%s" (include "voxmesh.fullname" .root) .component -}}
{{- end -}}

{{- define "voxmesh.selectorLabels" -}}
app.kubernetes.io/name: voxmesh
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "voxmesh.labels" -}}
{{ include "voxmesh.selectorLabels" . }}
app.kubernetes.io/part-of: voxmesh
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- with .root.Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image of a Voxmesh component: <registry>/<component>:<tag>. */}}
{{- define "voxmesh.image" -}}
{{- $image := .root.Values.global.image -}}
{{- printf "%s/%s:%s" $image.registry .component (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{- define "voxmesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "voxmesh.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "voxmesh.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s:4222" (include "voxmesh.name" (dict "root" . "component" "nats")) -}}
{{- else -}}
{{- required "nats.externalUrl is required when nats.enabled is false" .Values.nats.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* Environment every Voxmesh process gets: NATS, logs, metrics and traces. */}}
{{- define "voxmesh.commonEnv" -}}
- name: VOXMESH_NATS_URL
  value: {{ include "voxmesh.natsUrl" .root | quote }}
- name: VOXMESH_LOG_FORMAT
  value: json
- name: VOXMESH_LOG_LEVEL
  value: {{ .root.Values.global.logLevel | quote }}
- name: VOXMESH_METRICS_PORT
  value: {{ .root.Values.observability.metricsPort | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "voxmesh-%s" .component | quote }}
{{- if .root.Values.observability.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ printf "http://%s:4317" (include "voxmesh.name" (dict "root" .root "component" "otel-collector")) | quote }}
{{- else }}
- name: OTEL_SDK_DISABLED
  value: "true"
{{- end }}
{{- end -}}

{{/* Scheduling: node selector, tolerations, affinity of a component's values. */}}
{{- define "voxmesh.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container resources, with the GPU request and limit when the component asks for one. */}}
{{- define "voxmesh.resources" -}}
{{- $resources := deepCopy (default dict .resources) -}}
{{- if and .gpu .gpu.enabled -}}
{{- $limits := default dict $resources.limits -}}
{{- $_ := set $limits .gpu.resourceName (.gpu.count | toString) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{/* A DNS egress rule, for NetworkPolicies. */}}
{{- define "voxmesh.dnsEgress" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/* Egress to a component of this release: (dict "root" $ "component" "nats" "port" 4222). */}}
{{- define "voxmesh.egressTo" -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "voxmesh.selectorLabels" . | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end -}}

{{/* Ingress from components of this release: (dict "root" $ "components" (list ...) "port" N). */}}
{{- define "voxmesh.ingressFrom" -}}
- from:
    {{- range .components }}
    - podSelector:
        matchLabels:
          {{- include "voxmesh.selectorLabels" (dict "root" $.root "component" .) | nindent 10 }}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end -}}

{{/*
Ingress to the metrics port (and any further "ports", e.g. a health port) from the scrapers in
networkPolicy.metricsFrom.
*/}}
{{- define "voxmesh.metricsIngress" -}}
{{- with .root.Values.networkPolicy.metricsFrom }}
- from:
    {{- toYaml . | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ $.root.Values.observability.metricsPort }}}
    {{- range $.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- end -}}

{{/* Egress every Voxmesh process needs: DNS, NATS and the collector. */}}
{{- define "voxmesh.baseEgress" -}}
{{ include "voxmesh.dnsEgress" . }}
{{- if .root.Values.nats.enabled }}
{{ include "voxmesh.egressTo" (dict "root" .root "component" "nats" "port" 4222) }}
{{- else }}
- ports:
    - {protocol: TCP, port: {{ regexFind ":[0-9]+$" .root.Values.nats.externalUrl | trimPrefix ":" | default "4222" }}}
{{- end }}
{{- if .root.Values.observability.enabled }}
{{ include "voxmesh.egressTo" (dict "root" .root "component" "otel-collector" "port" 4317) }}
{{- end }}
{{- end -}}

{{/*
Egress to networkPolicy.externalEgressCidrs on TCP "ports" (default 443), for cloud services.
*/}}
{{- define "voxmesh.externalEgress" -}}
- to:
    {{- range .root.Values.networkPolicy.externalEgressCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range (.ports | default (list 443)) }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}
