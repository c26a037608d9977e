{{/*
voxmesh.grpcService: everything one gRPC service needs, from its values:
ServiceAccount, Service, Deployment (native gRPC probes on grpc.health.v1), HPA or fixed
replicas, PodDisruptionBudget and a NetworkPolicy that admits only its callers.

Call with (dict "root" $ "component" "stt" "values" $.Values.services.stt "port" 50051
"callers" (list "worker") "env" <yaml list> "egress" <yaml list> "volumes" <yaml>
"mounts" <yaml>).
*/}}
{{- define "voxmesh.grpcService" -}}
{{- $root := .root -}}
{{- $values := .values -}}
{{- $name := include "voxmesh.name" . -}}
{{- $prefix := printf "VOXMESH_%s" (upper .component) -}}
{{- $ctx := dict "root" $root "component" .component -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  labels:
    {{- include "voxmesh.labels" $ctx | nindent 4 }}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "voxmesh.labels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "voxmesh.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .port }}
      targetPort: grpc
      appProtocol: grpc
    - name: metrics
      port: {{ $root.Values.observability.metricsPort }}
      targetPort: metrics
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "voxmesh.labels" $ctx | nindent 4 }}
spec:
  {{- if not $values.autoscaling.enabled }}
  replicas: {{ $values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels:
      {{- include "voxmesh.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "voxmesh.labels" $ctx | nindent 8 }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: false
      securityContext:
        {{- include "voxmesh.podSecurityContext" $root | nindent 8 }}
      # In-flight streams get drainGraceSeconds after SIGTERM; the margin covers shutdown.
      terminationGracePeriodSeconds: {{ add $values.drainGraceSeconds 10 }}
      {{- with $root.Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "voxmesh.scheduling" $values | nindent 6 }}
      containers:
        - name: {{ .component }}
          image: {{ include "voxmesh.image" $ctx }}
          imagePullPolicy: {{ $root.Values.global.image.pullPolicy }}
          ports:
            - {name: grpc, containerPort: {{ .port }}, protocol: TCP}
            - {name: metrics, containerPort: {{ $root.Values.observability.metricsPort }}, protocol: TCP}
          env:
            {{- include "voxmesh.commonEnv" $ctx | nindent 12 }}
            - name: {{ $prefix }}_HOST
              value: 0.0.0.0
            - name: {{ $prefix }}_PORT
              value: {{ .port | quote }}
            - name: {{ $prefix }}_DRAIN_GRACE_S
              value: {{ $values.drainGraceSeconds | quote }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
          # Ready: models loaded and dependencies connected (the overall health status).
          readinessProbe:
            grpc: {port: {{ .port }}}
            periodSeconds: 5
            failureThreshold: 2
          # Alive: the process serves gRPC. Set before models load or NATS connects, so a slow
          # model or a NATS outage never restarts the pod.
          livenessProbe:
            grpc: {port: {{ .port }}, service: voxmesh.liveness}
            periodSeconds: 10
            failureThreshold: 6
          resources:
            {{- include "voxmesh.resources" $values | nindent 12 }}
          securityContext:
            {{- include "voxmesh.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 256Mi}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
{{- if $values.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  labels:
    {{- include "voxmesh.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $values.autoscaling.minReplicas }}
  maxReplicas: {{ $values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "voxmesh.labels" $ctx | nindent 4 }}
spec:
  maxUnavailable: {{ $values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "voxmesh.selectorLabels" $ctx | nindent 6 }}
{{- if $root.Values.networkPolicy.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}
  labels:
    {{- include "voxmesh.labels" $ctx | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "voxmesh.selectorLabels" $ctx | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- include "voxmesh.ingressFrom" (dict "root" $root "components" .callers "port" .port) | nindent 4 }}
    {{- include "voxmesh.metricsIngress" $ctx | nindent 4 }}
  egress:
    {{- include "voxmesh.baseEgress" $ctx | nindent 4 }}
    {{- with .egress }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end -}}

{{/*
voxmesh.providerChain: the component's providers in order, primary first, comma-joined
("deepgram,whisper-local"). A provider named twice fails the render.
*/}}
{{- define "voxmesh.providerChain" -}}
{{- $provider := .values.provider -}}
{{- $seen := dict -}}
{{- range $name := prepend (default list $provider.fallback) $provider.name }}
{{- if and (hasKey $seen $name) (eq $name $provider.name) }}
{{- fail (printf "services.%s.provider.fallback: %s is already services.%s.provider.name; a fallback must be another provider" $.component $name $.component) }}
{{- else if hasKey $seen $name }}
{{- fail (printf "services.%s.provider.fallback: %s is listed twice; name each provider once" $.component $name) }}
{{- end }}
{{- $_ := set $seen $name true }}
{{- end }}
{{- prepend (default list $provider.fallback) $provider.name | join "," -}}
{{- end -}}

{{/*
voxmesh.cloudProviders: the chain's cloud providers (neither *-local nor latency-model),
comma-joined; empty when every provider runs in the pod.
*/}}
{{- define "voxmesh.cloudProviders" -}}
{{- $cloud := list -}}
{{- range $name := splitList "," (include "voxmesh.providerChain" .) }}
{{- if not (or (hasSuffix "-local" $name) (eq $name "latency-model")) }}
{{- $cloud = append $cloud $name }}
{{- end }}
{{- end }}
{{- join "," $cloud -}}
{{- end -}}

{{/*
voxmesh.providerEnv: VOXMESH_<C>_PROVIDER (the ordered chain), its settings and its API key
(from an existing Secret). A chain with a cloud provider and no key fails the render with the
key to set.
*/}}
{{- define "voxmesh.providerEnv" -}}
{{- $prefix := printf "VOXMESH_%s" (upper .component) -}}
{{- $provider := .values.provider -}}
{{- $cloud := include "voxmesh.cloudProviders" . -}}
- name: {{ $prefix }}_PROVIDER
  value: {{ include "voxmesh.providerChain" . | quote }}
{{- range $key, $value := $provider.settings }}
- name: {{ printf "%s_%s" $prefix (upper $key) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- if $cloud }}
- name: {{ $prefix }}_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "services.%s.apiKey.existingSecret: provider %s needs an API key from an existing Secret" .component (splitList "," $cloud | join ", ")) .values.apiKey.existingSecret }}
      key: {{ .values.apiKey.key }}
{{- end }}
{{- end -}}

{{/* Egress to the internet on 443 when any provider of a component's chain is a cloud service. */}}
{{- define "voxmesh.cloudEgress" -}}
{{- if include "voxmesh.cloudProviders" . }}
{{- include "voxmesh.externalEgress" . }}
{{- end }}
{{- end -}}
