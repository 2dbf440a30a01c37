{{/*
Expand the name of the chart.
*/}}
{{- define "geo-stream-processor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "geo-stream-processor.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "geo-stream-processor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "geo-stream-processor.labels" -}}
helm.sh/chart: {{ include "geo-stream-processor.chart" . }}
{{ include "geo-stream-processor.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "geo-stream-processor.name" . }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "geo-stream-processor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "geo-stream-processor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "geo-stream-processor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "geo-stream-processor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the headless Service that governs the StatefulSet.
*/}}
{{- define "geo-stream-processor.headlessServiceName" -}}
{{- printf "%s-headless" (include "geo-stream-processor.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
Container image reference.
*/}}
{{- define "geo-stream-processor.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
True ("true") when an autoscaler (HPA or KEDA) owns the replica count.
*/}}
{{- define "geo-stream-processor.autoscaled" -}}
{{- if or .Values.autoscaling.enabled .Values.keda.enabled }}true{{ end }}
{{- end }}

{{/*
True ("true") when the spill directory is a PVC from volumeClaimTemplates.
*/}}
{{- define "geo-stream-processor.spillOnPVC" -}}
{{- if and (eq .Values.workload.kind "StatefulSet") .Values.spill.persistence.enabled }}true{{ end }}
{{- end }}

{{/*
The window state's directory (PROCESSOR_STATE_DIR): "state" on the spill volume, made by the
processor itself (values.yaml, windows, says why not a subPath mount).
*/}}
{{- define "geo-stream-processor.stateDir" -}}
{{- printf "%s/state" (trimSuffix "/" .Values.spill.mountPath) }}
{{- end }}

{{/*
True ("true") when KEDA needs a TriggerAuthentication for the broker's SASL/TLS settings.
*/}}
{{- define "geo-stream-processor.kedaNeedsAuth" -}}
{{- $tls := .Values.kafka.tls }}
{{- if or .Values.kafka.sasl.enabled (and $tls.enabled (or $tls.caSecret $tls.clientCertSecret)) }}true{{ end }}
{{- end }}

{{/*
Name of the TriggerAuthentication the ScaledObject uses (empty for none).
*/}}
{{- define "geo-stream-processor.kedaAuthName" -}}
{{- if .Values.keda.authenticationRef }}
{{- .Values.keda.authenticationRef }}
{{- else if include "geo-stream-processor.kedaNeedsAuth" . }}
{{- printf "%s-kafka" (include "geo-stream-processor.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/*
Kafka security protocol derived from kafka.sasl.enabled and kafka.tls.enabled.
*/}}
{{- define "geo-stream-processor.securityProtocol" -}}
{{- if and .Values.kafka.sasl.enabled .Values.kafka.tls.enabled }}SASL_SSL
{{- else if .Values.kafka.sasl.enabled }}SASL_PLAINTEXT
{{- else if .Values.kafka.tls.enabled }}SSL
{{- else }}PLAINTEXT
{{- end }}
{{- end }}

{{/*
A Kubernetes memory quantity (512Mi, 1Gi, 1G, 1.5Gi, 1073741824) in whole MiB, rounded
down. Fails with a readable message on anything else (e.g. exponents, milli-bytes).
Usage: include "geo-stream-processor.quantityToMiB" (dict "value" $q "name" "resources.limits.memory")
*/}}
{{- define "geo-stream-processor.quantityToMiB" -}}
{{- $q := .value }}
{{- $bytes := 0.0 }}
{{- if kindIs "string" $q }}
{{- $s := trim $q }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$" $s) }}
{{- fail (printf "%s: cannot read %q as a memory quantity (use e.g. 512Mi, 1Gi, 2G or bytes)" .name $s) }}
{{- end }}
{{- $number := regexReplaceAll "^([0-9.]+).*$" $s "${1}" | float64 }}
{{- $unit := regexReplaceAll "^[0-9.]+" $s "" }}
{{- $factors := dict "" 1.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 }}
{{- $bytes = mulf $number (get $factors $unit) }}
{{- else }}
{{- $bytes = float64 $q }}
{{- end }}
{{- divf $bytes 1048576.0 | floor | int64 }}
{{- end }}

{{/*
The processor's memory budget in MiB (PROCESSOR_MEMORY_LIMIT_MB): processor.memoryLimitMb
if set (checked against the container limit), else the container's memory limit. Empty
when neither is set (the processor then reads its cgroup limit itself).
*/}}
{{- define "geo-stream-processor.memoryLimitMb" -}}
{{- $limit := "" }}
{{- with .Values.resources }}{{ with .limits }}{{ with .memory }}
{{- $limit = include "geo-stream-processor.quantityToMiB" (dict "value" . "name" "resources.limits.memory") }}
{{- end }}{{ end }}{{ end }}
{{- $explicit := .Values.processor.memoryLimitMb }}
{{- if $explicit }}
{{- if and $limit (gt (int64 $explicit) (int64 $limit)) }}
{{- fail (printf "processor.memoryLimitMb (%d) exceeds resources.limits.memory (%s MiB): the container would be OOM-killed before the processor pauses" (int64 $explicit) $limit) }}
{{- end }}
{{- int64 $explicit }}
{{- else }}
{{- $limit }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the processor's drain deadline plus a margin, so the
kubelet never SIGKILLs a pod that is still draining.
*/}}
{{- define "geo-stream-processor.terminationGracePeriodSeconds" -}}
{{- add (int64 .Values.processor.shutdownTimeoutSeconds) (int64 .Values.terminationGracePeriodExtraSeconds) }}
{{- end }}

{{/*
Checks across values that the JSON schema cannot express.
*/}}
{{- define "geo-stream-processor.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are exclusive: KEDA creates its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if .Values.kafka.sasl.enabled }}
{{- if not .Values.kafka.sasl.existingSecret }}
{{- fail "kafka.sasl.existingSecret: name the Secret that holds the SASL password" }}
{{- end }}
{{- if not (or .Values.kafka.sasl.username .Values.kafka.sasl.usernameKey) }}
{{- fail "kafka.sasl.username (or kafka.sasl.usernameKey): required with kafka.sasl.enabled" }}
{{- end }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set either minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int64 .Values.autoscaling.minReplicas) (int64 .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas exceeds autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int64 .Values.keda.minReplicaCount) (int64 .Values.keda.maxReplicaCount)) }}
{{- fail "keda.minReplicaCount exceeds keda.maxReplicaCount" }}
{{- end }}
{{- if and .Values.windows.enabled (eq (toString .Values.kafka.acks) "0") }}
{{- fail "windows.enabled needs kafka.acks all or \"1\": the window state is saved once the broker acknowledged its outputs" }}
{{- end }}
{{- end }}

{{/*
Environment of the processor container.
*/}}
{{- define "geo-stream-processor.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: PROCESSOR_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: PROCESSOR_INPUT_TOPIC
  value: {{ .Values.kafka.topics.input | quote }}
- name: PROCESSOR_OUTPUT_TOPIC
  value: {{ .Values.kafka.topics.output | quote }}
- name: PROCESSOR_DLQ_TOPIC
  value: {{ .Values.kafka.topics.dlq | quote }}
- name: PROCESSOR_GROUP_ID
  value: {{ .Values.kafka.groupId | quote }}
- name: PROCESSOR_CLIENT_ID
  value: "$(POD_NAME)"
- name: PROCESSOR_AUTO_OFFSET_RESET
  value: {{ .Values.kafka.autoOffsetReset | quote }}
- name: PROCESSOR_ENABLE_IDEMPOTENCE
  value: {{ .Values.kafka.enableIdempotence | toString | quote }}
- name: PROCESSOR_ACKS
  value: {{ .Values.kafka.acks | toString | quote }}
- name: PROCESSOR_SECURITY_PROTOCOL
  value: {{ include "geo-stream-processor.securityProtocol" . | quote }}
{{- with .Values.kafka.sasl }}
{{- if .enabled }}
- name: PROCESSOR_SASL_MECHANISM
  value: {{ .mechanism | quote }}
- name: PROCESSOR_SASL_USERNAME
{{- if .usernameKey }}
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret | quote }}
      key: {{ .usernameKey | quote }}
{{- else }}
  value: {{ .username | quote }}
{{- end }}
- name: PROCESSOR_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret | quote }}
      key: {{ .passwordKey | quote }}
{{- end }}
{{- end }}
{{- with .Values.kafka.tls }}
{{- if and .enabled .caSecret }}
- name: PROCESSOR_SSL_CAFILE
  value: {{ printf "/etc/geo-stream-processor/kafka-ca/%s" .caKey | quote }}
{{- end }}
{{- if and .enabled .clientCertSecret }}
- name: PROCESSOR_SSL_CERTFILE
  value: /etc/geo-stream-processor/kafka-client/tls.crt
- name: PROCESSOR_SSL_KEYFILE
  value: /etc/geo-stream-processor/kafka-client/tls.key
{{- end }}
{{- end }}
- name: PROCESSOR_TARGET_CRS
  value: {{ .Values.processor.targetCrs | quote }}
- name: PROCESSOR_BUFFER_MAX_RECORDS
  value: {{ .Values.processor.bufferMaxRecords | int64 | quote }}
{{- with include "geo-stream-processor.memoryLimitMb" . }}
- name: PROCESSOR_MEMORY_LIMIT_MB
  value: {{ . | quote }}
{{- end }}
- name: PROCESSOR_SPILL_DIR
  value: {{ .Values.spill.mountPath | quote }}
- name: PROCESSOR_SPILL_MAX_BYTES
  value: {{ .Values.spill.maxBytes | int64 | quote }}
- name: PROCESSOR_SPILL_MIN_FREE_MB
  value: {{ .Values.spill.minFreeMb | int64 | quote }}
{{- with .Values.windows }}
{{- if .enabled }}
- name: PROCESSOR_WINDOW
  value: {{ .length | quote }}
{{- with .aggregateFields }}
- name: PROCESSOR_AGGREGATE_FIELDS
  value: {{ join "," . | quote }}
{{- end }}
- name: PROCESSOR_ALLOWED_LATENESS
  value: {{ .allowedLateness | quote }}
- name: PROCESSOR_AGGREGATES_TOPIC
  value: {{ .aggregatesTopic | quote }}
- name: PROCESSOR_DEDUP
  value: {{ .dedup | toString | quote }}
{{- end }}
{{- end }}
- name: PROCESSOR_QC_ENABLED
  value: {{ .Values.qc.enabled | toString | quote }}
{{- with .Values.qc.tests }}
- name: PROCESSOR_QC
  value: {{ toJson . | quote }}
{{- end }}
- name: PROCESSOR_STATE_DIR
  value: {{ include "geo-stream-processor.stateDir" $ | quote }}
- name: PROCESSOR_SHUTDOWN_TIMEOUT_S
  value: {{ .Values.processor.shutdownTimeoutSeconds | int64 | quote }}
- name: PROCESSOR_HTTP_PORT
  value: {{ .Values.processor.httpPort | int64 | quote }}
- name: PROCESSOR_LOG_LEVEL
  value: {{ .Values.processor.logLevel | quote }}
- name: PROCESSOR_LOG_FORMAT
  value: {{ .Values.processor.logFormat | quote }}
{{- with .Values.otel }}
{{- if .enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | default (include "geo-stream-processor.fullname" $) | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .protocol | quote }}
- name: OTEL_TRACES_EXPORTER
  value: {{ .tracesExporter | quote }}
- name: OTEL_METRICS_EXPORTER
  value: {{ .metricsExporter | quote }}
- name: OTEL_LOGS_EXPORTER
  value: {{ .logsExporter | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .samplerArg | toString | quote }}
{{- $attributes := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(NODE_NAME)" "service.instance.id=$(POD_NAME)" }}
{{- range $key, $value := .resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%v" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- else }}
- name: OTEL_TRACES_EXPORTER
  value: none
- name: OTEL_METRICS_EXPORTER
  value: none
- name: OTEL_LOGS_EXPORTER
  value: none
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod template shared by the StatefulSet and the Deployment.
*/}}
{{- define "geo-stream-processor.podTemplate" -}}
{{- include "geo-stream-processor.validate" . -}}
metadata:
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  labels:
    {{- include "geo-stream-processor.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  serviceAccountName: {{ include "geo-stream-processor.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automount }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # Longer than the processor's drain deadline (PROCESSOR_SHUTDOWN_TIMEOUT_S).
  terminationGracePeriodSeconds: {{ include "geo-stream-processor.terminationGracePeriodSeconds" . }}
  containers:
    - name: {{ .Chart.Name }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      image: {{ include "geo-stream-processor.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        {{- with .Values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.processor.httpPort }}
          protocol: TCP
      env:
        {{- include "geo-stream-processor.env" . | nindent 8 }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: spill
          mountPath: {{ .Values.spill.mountPath }}
        - name: tmp
          mountPath: /tmp
        {{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
        - name: kafka-ca
          mountPath: /etc/geo-stream-processor/kafka-ca
          readOnly: true
        {{- end }}
        {{- if and .Values.kafka.tls.enabled .Values.kafka.tls.clientCertSecret }}
        - name: kafka-client
          mountPath: /etc/geo-stream-processor/kafka-client
          readOnly: true
        {{- end }}
        {{- with .Values.volumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- if not (include "geo-stream-processor.spillOnPVC" .) }}
    - name: spill
      emptyDir:
        {{- with .Values.spill.emptyDir.sizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
    {{- end }}
    # readOnlyRootFilesystem: a small writable /tmp for libraries that need one.
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
    - name: kafka-ca
      secret:
        secretName: {{ .Values.kafka.tls.caSecret }}
        defaultMode: 0440
        items:
          - key: {{ .Values.kafka.tls.caKey }}
            path: {{ .Values.kafka.tls.caKey }}
    {{- end }}
    {{- if and .Values.kafka.tls.enabled .Values.kafka.tls.clientCertSecret }}
    - name: kafka-client
      secret:
        secretName: {{ .Values.kafka.tls.clientCertSecret }}
        defaultMode: 0440
    {{- end }}
    {{- with .Values.volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
