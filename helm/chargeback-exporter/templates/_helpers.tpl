{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names and label values.
*/}}
{{- define "chargeback-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: `<release>-<chart>`, or the release name alone when it already contains the chart name.
*/}}
{{- define "chargeback-exporter.fullname" -}}
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

{{- define "chargeback-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (selectors are immutable), never helm.sh/chart.
*/}}
{{- define "chargeback-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chargeback-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector of the long-running worker. The component label keeps backfill Job pods out of the
Deployment's and the Service's selection.
*/}}
{{- define "chargeback-exporter.workerSelectorLabels" -}}
{{ include "chargeback-exporter.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Common labels of every resource.
*/}}
{{- define "chargeback-exporter.labels" -}}
helm.sh/chart: {{ include "chargeback-exporter.chart" . }}
{{ include "chargeback-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ include "chargeback-exporter.imageTag" . | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chargeback-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "chargeback-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chargeback-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "chargeback-exporter.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "chargeback-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "chargeback-exporter.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the credentials: the existing one, or the chart's. */}}
{{- define "chargeback-exporter.secretName" -}}
{{- default (include "chargeback-exporter.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/*
Credentials available to the pod, as a YAML list: those listed in `secret.existingSecretItems`
when an existing Secret is used, otherwise those with a non-empty value.
*/}}
{{- define "chargeback-exporter.secretItems" -}}
{{- $items := list }}
{{- if .Values.secret.existingSecret }}
{{- $items = .Values.secret.existingSecretItems | default list | uniq }}
{{- else }}
{{- range $item := list "sysdigToken" "kafkaSaslPassword" "kafkaSslKeyPassword" "schemaRegistryUserInfo" }}
{{- if index $.Values.secret $item }}
{{- $items = append $items $item }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $items }}
{{- end }}

{{/* Where the projected config volume is mounted; `--config.file` is config.yaml inside it. */}}
{{- define "chargeback-exporter.configDir" -}}
/etc/chargeback-exporter
{{- end }}

{{/*
The application's config.yaml: `.Values.config` plus what the chart wires itself (listen
address, secret files, Kafka TLS files). Fails with one clear line on values the app would
reject at start or that would leak a secret into the ConfigMap.
*/}}
{{- define "chargeback-exporter.config" -}}
{{- $dir := include "chargeback-exporter.configDir" . }}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $items := include "chargeback-exporter.secretItems" . | fromYamlArray }}
{{- range $section := list "sysdig" "kafka" "web" }}
{{- if not (hasKey $cfg $section) }}
{{- $_ := set $cfg $section dict }}
{{- end }}
{{- end }}
{{- $sysdig := $cfg.sysdig }}
{{- $kafka := $cfg.kafka }}
{{- $web := $cfg.web }}
{{- range $key := list "token" }}
{{- if hasKey $sysdig $key }}
{{- fail (printf "config.sysdig.%s: put the Sysdig token in secret.sysdigToken or secret.existingSecret, not in the ConfigMap" $key) }}
{{- end }}
{{- end }}
{{- range $key := list "sasl_password" "ssl_key_password" }}
{{- if hasKey $kafka $key }}
{{- fail (printf "config.kafka.%s: put Kafka secrets in secret.* or secret.existingSecret, not in the ConfigMap" $key) }}
{{- end }}
{{- end }}
{{- if and (kindIs "map" $kafka.schema_registry) (hasKey ($kafka.schema_registry | default dict) "basic_auth_user_info") }}
{{- fail "config.kafka.schema_registry.basic_auth_user_info: put it in secret.schemaRegistryUserInfo or secret.existingSecret, not in the ConfigMap" }}
{{- end }}
{{- if not $kafka.bootstrap_servers }}
{{- fail "config.kafka.bootstrap_servers is required (host:port of your Kafka brokers)" }}
{{- end }}
{{- if and (hasKey $web "enabled") (not $web.enabled) }}
{{- fail "config.web.enabled must stay true: the probes and /metrics need the HTTP server" }}
{{- end }}
{{- $_ := set $web "listen_address" (printf "0.0.0.0:%d" (int .Values.containerPort)) }}
{{- if has "sysdigToken" $items }}
{{- $_ := set $sysdig "token_file" (printf "%s/secrets/%s" $dir .Values.secret.keys.sysdigToken) }}
{{- else if not $sysdig.token_file }}
{{- fail "no Sysdig token: set secret.sysdigToken, or secret.existingSecret with sysdigToken in secret.existingSecretItems, or config.sysdig.token_file" }}
{{- end }}
{{- if has "kafkaSaslPassword" $items }}
{{- $_ := set $kafka "sasl_password_file" (printf "%s/secrets/%s" $dir .Values.secret.keys.kafkaSaslPassword) }}
{{- end }}
{{- $registry := $kafka.schema_registry }}
{{- if has "schemaRegistryUserInfo" $items }}
{{- if not (and (kindIs "map" $registry) $registry.url) }}
{{- fail "secret.schemaRegistryUserInfo needs config.kafka.schema_registry.url" }}
{{- end }}
{{- $_ := set $registry "basic_auth_user_info_file" (printf "%s/secrets/%s" $dir .Values.secret.keys.schemaRegistryUserInfo) }}
{{- end }}
{{- with .Values.kafkaTls }}
{{- if .secretName }}
{{- if .caKey }}
{{- $_ := set $kafka "ssl_ca_location" (printf "%s/kafka-tls/%s" $dir .caKey) }}
{{- end }}
{{- if .certificateKey }}
{{- $_ := set $kafka "ssl_certificate_location" (printf "%s/kafka-tls/%s" $dir .certificateKey) }}
{{- end }}
{{- if .keyKey }}
{{- $_ := set $kafka "ssl_key_location" (printf "%s/kafka-tls/%s" $dir .keyKey) }}
{{- end }}
{{- if .useForSchemaRegistry }}
{{- if not (and (kindIs "map" $registry) $registry.url .caKey) }}
{{- fail "kafkaTls.useForSchemaRegistry needs kafkaTls.caKey and config.kafka.schema_registry.url" }}
{{- end }}
{{- $_ := set $registry "ca_location" (printf "%s/kafka-tls/%s" $dir .caKey) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Volumes shared by the worker and the backfill Job: one projected volume with config.yaml, the
extra files, the credentials and the Kafka TLS material (one mount, so nothing is nested inside
a read-only volume), and an emptyDir for /tmp because the root filesystem is read-only.
*/}}
{{- define "chargeback-exporter.volumes" -}}
- name: config
  projected:
    defaultMode: 0440
    sources:
      - configMap:
          name: {{ include "chargeback-exporter.fullname" . }}
          items:
            - key: config.yaml
              path: config.yaml
            {{- range $name, $_ := .Values.files }}
            - key: {{ $name }}
              path: files/{{ $name }}
            {{- end }}
      {{- $items := include "chargeback-exporter.secretItems" . | fromYamlArray }}
      {{- $fileItems := without $items "kafkaSslKeyPassword" }}
      {{- if $fileItems }}
      - secret:
          name: {{ include "chargeback-exporter.secretName" . }}
          items:
            {{- range $item := $fileItems }}
            {{- $key := index $.Values.secret.keys $item }}
            - key: {{ $key }}
              path: secrets/{{ $key }}
            {{- end }}
      {{- end }}
      {{- with .Values.kafkaTls }}
      {{- if .secretName }}
      - secret:
          name: {{ .secretName }}
          items:
            {{- range $key := list .caKey .certificateKey .keyKey | compact }}
            - key: {{ $key }}
              path: kafka-tls/{{ $key }}
            {{- end }}
      {{- end }}
      {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "chargeback-exporter.volumeMounts" -}}
- name: config
  mountPath: {{ include "chargeback-exporter.configDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Environment shared by the worker and the backfill Job. The Kafka key password has no `*_file`
key in the application, so it arrives as its `CHARGEBACK_` override from the Secret.
*/}}
{{- define "chargeback-exporter.env" -}}
{{- $items := include "chargeback-exporter.secretItems" . | fromYamlArray }}
{{- if has "kafkaSslKeyPassword" $items }}
- name: CHARGEBACK_KAFKA__SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "chargeback-exporter.secretName" . }}
      key: {{ .Values.secret.keys.kafkaSslKeyPassword }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod settings shared by the worker and the backfill Job. Service links are off: Kubernetes would
otherwise inject variables such as CHARGEBACK_EXPORTER_PORT, which the application reads as
an unknown `CHARGEBACK_*` config override and rejects.
*/}}
{{- define "chargeback-exporter.podSpecCommon" -}}
serviceAccountName: {{ include "chargeback-exporter.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "chargeback-exporter.volumes" . | nindent 2 }}
{{- end }}

{{/* Pod template annotations: checksums roll the pod whenever config or chart-made secrets change. */}}
{{- define "chargeback-exporter.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secret.existingSecret }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Pod template of the backfill Job. A Job's template is immutable, so its hash names the Job: any
change (range, arguments, image, config checksum) makes a new Job instead of a failed upgrade.
*/}}
{{- define "chargeback-exporter.backfillPodTemplate" -}}
metadata:
  annotations:
    {{- include "chargeback-exporter.checksums" . | nindent 4 }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  labels:
    {{- include "chargeback-exporter.labels" . | nindent 4 }}
    app.kubernetes.io/component: backfill
    {{- with .Shard }}
    chargeback-exporter/shard: {{ .name | quote }}
    {{- end }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "chargeback-exporter.podSpecCommon" . | nindent 2 }}
  restartPolicy: Never
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: backfill
      image: {{ include "chargeback-exporter.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - backfill
        - --config.file
        - {{ include "chargeback-exporter.configDir" . }}/config.yaml
        - --from
        - {{ .Values.backfill.from | quote }}
        - --to
        - {{ .Values.backfill.to | quote }}
        {{- range .Values.backfill.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        # A transactional.id of its own: sharing the worker's would fence the live exporter.
        # kafka.transactional_id stays the worker's, so the Job finds the live checkpoint.
        - name: CHARGEBACK_BACKFILL__TRANSACTIONAL_ID
          value: {{ include "chargeback-exporter.backfillTransactionalId" . | quote }}
        {{- with printf "%s\n%s" (include "chargeback-exporter.shardEnv" .) (include "chargeback-exporter.env" .) | trim }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.backfill.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "chargeback-exporter.volumeMounts" . | nindent 8 }}
{{- end }}

{{- define "chargeback-exporter.backfillTransactionalId" -}}
{{- $live := dig "kafka" "transactional_id" "chargeback-exporter" .Values.config }}
{{- if .Shard }}
{{- printf "%s-shard-%s-backfill" $live .Shard.name }}
{{- else }}
{{- .Values.backfill.transactionalId | default (printf "%s-backfill" $live) }}
{{- end }}
{{- end }}

{{/*
Label matchers of the exporter's own series in alert expressions: `prometheusRule.selector`, or
the job and namespace the chart's ServiceMonitor gives them (its jobLabel is the Service's
app.kubernetes.io/name).
*/}}
{{- define "chargeback-exporter.alertSelector" -}}
{{- .Values.prometheusRule.selector | default (printf "job=%q,namespace=%q" (include "chargeback-exporter.name" .) .Release.Namespace) }}
{{- end }}

{{/* An alert's labels: its own (`labels`, with the severity) over `additionalAlertLabels`. */}}
{{- define "chargeback-exporter.alertLabels" -}}
{{- $pr := index . 0 }}
{{- $alert := index . 1 }}
{{- toYaml (merge (deepCopy ($alert.labels | default dict)) ($pr.additionalAlertLabels | default dict)) }}
{{- end }}

{{/*
Where an alert's runbook is: its section of docs/operations.md (headings are the alert names),
as `runbook_url` under `prometheusRule.runbookBaseUrl` when that is set.
*/}}
{{- define "chargeback-exporter.runbook" -}}
{{- $pr := index . 0 }}
{{- $section := index . 1 | lower }}
{{- if $pr.runbookBaseUrl }}
runbook_url: {{ printf "%s#%s" $pr.runbookBaseUrl $section | quote }}
{{- else }}
runbook: {{ printf "docs/operations.md#%s" $section | quote }}
{{- end }}
{{- end }}

{{/*
The shards of `.Values.shards`, checked, as a YAML list (empty: one unsharded worker). A hash
shard gets `count`, the number of shards. Fails with one line on a shard the application
would refuse, on shards that overlap, and on a mix of cluster lists and hash indexes (a listed
cluster would also hash to some shard: two shards would bill it).
*/}}
{{- define "chargeback-exporter.shards" -}}
{{- $shards := .Values.shards | default list }}
{{- $names := list }}
{{- $owners := dict }}
{{- $indexes := list }}
{{- $listed := 0 }}
{{- range $shard := $shards }}
{{- if has $shard.name $names }}
{{- fail (printf "shards: name %s is used twice (each shard has its own transactional id and checkpoint)" $shard.name) }}
{{- end }}
{{- $names = append $names $shard.name }}
{{- if and $shard.clusters (hasKey $shard "index") }}
{{- fail (printf "shards: shard %s has both clusters and index; give one" $shard.name) }}
{{- end }}
{{- if $shard.clusters }}
{{- $listed = add1 $listed }}
{{- range $cluster := $shard.clusters }}
{{- if hasKey $owners $cluster }}
{{- fail (printf "shards: cluster %s is in shards %s and %s (it would be billed twice)" $cluster (get $owners $cluster) $shard.name) }}
{{- end }}
{{- $_ := set $owners $cluster $shard.name }}
{{- end }}
{{- else if hasKey $shard "index" }}
{{- $indexes = append $indexes (int $shard.index) }}
{{- else }}
{{- fail (printf "shards: shard %s needs clusters or index" $shard.name) }}
{{- end }}
{{- end }}
{{- if and $listed $indexes }}
{{- fail "shards: either every shard lists its clusters or every shard has a hash index, not a mix" }}
{{- end }}
{{- range $i, $_ := $indexes }}
{{- if not (has $i $indexes) }}
{{- fail (printf "shards: hash indexes must be 0 to %d, each once (index %d is missing)" (sub (len $indexes) 1) $i) }}
{{- end }}
{{- end }}
{{- if and $shards .Values.backfill.transactionalId }}
{{- fail "backfill.transactionalId: not with shards (each shard's Job uses <transactional id>-shard-<name>-backfill)" }}
{{- end }}
{{- $out := list }}
{{- range $shard := $shards }}
{{- if hasKey $shard "index" }}
{{- $out = append $out (dict "name" $shard.name "index" (int $shard.index) "count" (len $indexes)) }}
{{- else }}
{{- $out = append $out (dict "name" $shard.name "clusters" $shard.clusters) }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The contexts the worker and the backfill Job are rendered once each with: the root context
with `Shard`, one per shard, or one with an empty `Shard` when unsharded.
*/}}
{{- define "chargeback-exporter.shardContexts" -}}
{{- $shards := include "chargeback-exporter.shards" . | fromYamlArray }}
{{- toYaml ($shards | default (list dict)) }}
{{- end }}

{{/* The worker Deployment's name: the full name, with `-<shard>` for a shard. */}}
{{- define "chargeback-exporter.workerName" -}}
{{- $full := include "chargeback-exporter.fullname" . }}
{{- if .Shard }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .Shard.name))) | trimSuffix "-") .Shard.name }}
{{- else }}
{{- $full }}
{{- end }}
{{- end }}

{{/*
The shard's configuration (`CHARGEBACK_SHARD__*`), as environment entries; nothing unsharded.
Every shard shares the one ConfigMap.
*/}}
{{- define "chargeback-exporter.shardEnv" -}}
{{- with .Shard }}
- name: CHARGEBACK_SHARD__NAME
  value: {{ .name | quote }}
{{- if .clusters }}
- name: CHARGEBACK_SHARD__CLUSTERS
  value: {{ toJson .clusters | quote }}
{{- else }}
- name: CHARGEBACK_SHARD__INDEX
  value: {{ .index | quote }}
- name: CHARGEBACK_SHARD__COUNT
  value: {{ .count | quote }}
{{- end }}
{{- end }}
{{- end }}
