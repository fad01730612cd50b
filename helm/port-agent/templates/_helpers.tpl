{{/*
Expand the name of the chart.
*/}}
{{- define "port-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters (DNS label). A release
name that already contains the chart name is used as is.
*/}}
{{- define "port-agent.fullname" -}}
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

{{- define "port-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels: those of Port's chart (helm.sh/chart, the selector labels,
app.kubernetes.io/version and managed-by, then extraLabels). Built as a map
so that a key given twice renders once; the selector labels always win.
*/}}
{{- define "port-agent.labels" -}}
{{- $labels := dict }}
{{- range $key, $value := .Values.extraLabels }}
{{- $_ := set $labels $key ($value | toString) }}
{{- end }}
{{- $_ := set $labels "helm.sh/chart" (include "port-agent.chart" .) }}
{{- if .Chart.AppVersion }}
{{- $_ := set $labels "app.kubernetes.io/version" (.Chart.AppVersion | toString) }}
{{- end }}
{{- $_ := set $labels "app.kubernetes.io/managed-by" .Release.Service }}
{{- $labels = mergeOverwrite $labels (include "port-agent.selectorLabels" . | fromYaml) }}
{{- toYaml $labels }}
{{- end }}

{{/*
Pod labels: podLabels, then the common labels (as Port's chart puts them on
the pod template, extraLabels included, for NetworkPolicies and admission
rules that key on them). The selector labels always win.
*/}}
{{- define "port-agent.podLabels" -}}
{{- $labels := dict }}
{{- range $key, $value := .Values.podLabels }}
{{- $_ := set $labels $key ($value | toString) }}
{{- end }}
{{- $labels = mergeOverwrite $labels (include "port-agent.labels" . | fromYaml) }}
{{- toYaml $labels }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "port-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "port-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the Secret holding env.secret (Port's chart: secret.name or the full name).
*/}}
{{- define "port-agent.secretName" -}}
{{- default (include "port-agent.fullname" .) .Values.secret.name }}
{{- end }}

{{/*
Name of the ConfigMap holding the mapping file, and its key: Port's chart
names it after the release's full name, key controlThePayloadConfig.
*/}}
{{- define "port-agent.mappingConfigMapName" -}}
{{- include "port-agent.fullname" . }}
{{- end }}

{{- define "port-agent.mappingConfigMapKey" -}}
controlThePayloadConfig
{{- end }}

{{/*
Volume names of the chart's own volumes. The mapping and certificate volumes
are named as in Port's chart (the full name, with dots made dashes so that it
is a valid volume name, and "certificates"), so extraVolumeMounts written
against Port's chart still find them; the scratch volume has a name no user
picks.
*/}}
{{- define "port-agent.mappingVolumeName" -}}
{{- include "port-agent.fullname" . | replace "." "-" }}
{{- end }}

{{- define "port-agent.certificateVolumeName" -}}
certificates
{{- end }}

{{- define "port-agent.tmpVolumeName" -}}
port-agent-scratch-tmp
{{- end }}

{{/*
extraVolumes and extraVolumeMounts run through tpl, as in Port's chart, so
"{{ .Release.Name }}" works in them. Each renders a YAML list ("[]" when
unset).
*/}}
{{- define "port-agent.extraVolumes" -}}
{{- if .Values.extraVolumes }}
{{- tpl (toYaml .Values.extraVolumes) . }}
{{- else }}
{{- "[]" }}
{{- end }}
{{- end }}

{{- define "port-agent.extraVolumeMounts" -}}
{{- if .Values.extraVolumeMounts }}
{{- tpl (toYaml .Values.extraVolumeMounts) . }}
{{- else }}
{{- "[]" }}
{{- end }}
{{- end }}

{{/*
Whether the user mounts something at /tmp: then the chart adds no /tmp of its
own ("true" or "").
*/}}
{{- define "port-agent.userMountsTmp" -}}
{{- range (include "port-agent.extraVolumeMounts" . | fromYamlArray) }}
{{- if eq (trimSuffix "/" (toString .mountPath)) "/tmp" }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Refuse extra volumes and mounts that collide with the chart's own: the API
server rejects duplicate volume names and mount paths, and offline validation
does not see them.
*/}}
{{- define "port-agent.checkExtraVolumes" -}}
{{- $own := list }}
{{- if not (include "port-agent.userMountsTmp" .) }}
{{- $own = append $own (include "port-agent.tmpVolumeName" .) }}
{{- end }}
{{- if .Values.controlThePayloadConfig }}
{{- $own = append $own (include "port-agent.mappingVolumeName" .) }}
{{- end }}
{{- if .Values.selfSignedCertificate.enabled }}
{{- $own = append $own (include "port-agent.certificateVolumeName" .) }}
{{- end }}
{{- range (include "port-agent.extraVolumes" . | fromYamlArray) }}
{{- if has (toString .name) $own }}
{{- fail (printf "extraVolumes: the volume name %q is the chart's own; choose another name" (toString .name)) }}
{{- end }}
{{- end }}
{{- $ownPaths := list }}
{{- if .Values.controlThePayloadConfig }}
{{- $ownPaths = append $ownPaths (include "port-agent.mappingPath" .) }}
{{- end }}
{{- if .Values.selfSignedCertificate.enabled }}
{{- $ownPaths = append $ownPaths (include "port-agent.selfSignedCertPath" .) }}
{{- end }}
{{- range (include "port-agent.extraVolumeMounts" . | fromYamlArray) }}
{{- if has (toString .mountPath) $ownPaths }}
{{- fail (printf "extraVolumeMounts: %s is where the chart mounts %s; mount elsewhere or drop the chart's copy" (toString .mountPath) (ternary "the mapping (controlThePayloadConfig)" "the self-signed certificate" (eq (toString .mountPath) (include "port-agent.mappingPath" $)))) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the self-signed CA certificate.
*/}}
{{- define "port-agent.selfSignedCertName" -}}
{{- if .Values.selfSignedCertificate.secret.useExistingSecret }}
{{- required "selfSignedCertificate.secret.name is required when selfSignedCertificate.secret.useExistingSecret is true" .Values.selfSignedCertificate.secret.name }}
{{- else }}
{{- printf "%s-cert" (include "port-agent.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/*
Key of the certificate in that Secret.
*/}}
{{- define "port-agent.selfSignedCertKey" -}}
{{- if .Values.selfSignedCertificate.secret.useExistingSecret }}
{{- default "crt" .Values.selfSignedCertificate.secret.key }}
{{- else }}
{{- "crt" }}
{{- end }}
{{- end }}

{{/*
Where the self-signed CA certificate is mounted (the path Port's chart uses).
*/}}
{{- define "port-agent.selfSignedCertPath" -}}
/usr/local/share/ca-certificates/cert.crt
{{- end }}

{{/*
The absolute path the agent reads the mapping from: CONTROL_THE_PAYLOAD_CONFIG_PATH
as set in env.normal (a relative path is taken from the working directory
/app, as the agent does), else the image's default.
*/}}
{{- define "port-agent.mappingPath" -}}
{{- $path := .Values.env.normal.CONTROL_THE_PAYLOAD_CONFIG_PATH | default "" | toString }}
{{- if not $path }}
{{- "/app/control_the_payload_config.json" }}
{{- else if hasPrefix "/" $path }}
{{- $path }}
{{- else }}
{{- printf "/app/%s" (trimPrefix "./" $path) }}
{{- end }}
{{- end }}

{{/*
The agent's HTTP port: env.normal.AGENT_HTTP_PORT when set, else http.port.
*/}}
{{- define "port-agent.httpPort" -}}
{{- $port := .Values.http.port }}
{{- if hasKey .Values.env.normal "AGENT_HTTP_PORT" }}
{{- if not (kindIs "invalid" .Values.env.normal.AGENT_HTTP_PORT) }}
{{- $port = .Values.env.normal.AGENT_HTTP_PORT }}
{{- end }}
{{- end }}
{{- $port = int $port }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail "the agent's HTTP port (AGENT_HTTP_PORT / http.port) must be between 1 and 65535: this chart probes /healthz and /readyz" }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
The mapping JSON, checked: it must be a JSON array of mapping objects, so
that a mistake fails the install instead of the pods.
*/}}
{{- define "port-agent.mappingJson" -}}
{{- $text := .Values.controlThePayloadConfig | toString | trim }}
{{- $wrapped := fromJson (printf "{\"mapping\": %s\n}" $text) }}
{{- if hasKey $wrapped "Error" }}
{{- fail (printf "controlThePayloadConfig is not valid JSON: %s" (get $wrapped "Error")) }}
{{- end }}
{{- $mapping := get $wrapped "mapping" }}
{{- if not (kindIs "slice" $mapping) }}
{{- fail "controlThePayloadConfig must be a JSON array of mappings, e.g. [{\"enabled\": true}]" }}
{{- end }}
{{- range $i, $m := $mapping }}
{{- if not (kindIs "map" $m) }}
{{- fail (printf "controlThePayloadConfig must be a JSON array of mapping objects; item %d is %s" $i (toJson $m)) }}
{{- end }}
{{- end }}
{{- $text }}
{{- end }}

{{/*
Environment variables: env.secret (secretKeyRef), env.normal, then what the
chart itself sets unless env.normal already does.
*/}}
{{/*
"true" when the agent reloads the mapping itself: mappingReload is on, the
chart mounts a mapping, and CONTROL_THE_PAYLOAD_CONFIG_PATH is the chart's
(a path of the user's is a subPath mount, which never sees updates).
*/}}
{{- define "port-agent.reloadsMapping" -}}
{{- $normal := .Values.env.normal | default dict }}
{{- if and .Values.mappingReload .Values.controlThePayloadConfig (not (hasKey $normal "CONTROL_THE_PAYLOAD_CONFIG_PATH")) }}true{{- end }}
{{- end }}

{{/* The directory the reloadable mapping is mounted at. */}}
{{- define "port-agent.mappingReloadDir" -}}/app/mapping{{- end }}

{{- define "port-agent.env" -}}
{{- $normal := .Values.env.normal | default dict }}
{{- if not .Values.secret.useExistingSecret }}
{{- range $key, $val := .Values.env.secret }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "port-agent.secretName" $ }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- range $key, $val := $normal }}
{{- if not (kindIs "invalid" $val) }}
- name: {{ $key }}
  value: {{ $val | toString | quote }}
{{- end }}
{{- end }}
{{- if include "port-agent.reloadsMapping" . }}
- name: CONTROL_THE_PAYLOAD_CONFIG_PATH
  value: {{ printf "%s/control_the_payload_config.json" (include "port-agent.mappingReloadDir" .) | quote }}
{{- else if not (hasKey $normal "CONTROL_THE_PAYLOAD_CONFIG_PATH") }}
- name: CONTROL_THE_PAYLOAD_CONFIG_PATH
  value: {{ include "port-agent.mappingPath" . | quote }}
{{- end }}
{{- if not (hasKey $normal "AGENT_MAPPING_RELOAD") }}
- name: AGENT_MAPPING_RELOAD
  value: {{ .Values.mappingReload | toString | quote }}
{{- end }}
{{- if not (hasKey $normal "AGENT_HTTP_PORT") }}
- name: AGENT_HTTP_PORT
  value: {{ include "port-agent.httpPort" . | quote }}
{{- end }}
{{- if .Values.selfSignedCertificate.enabled }}
{{- if not (hasKey $normal "SSL_CERT_FILE") }}
- name: SSL_CERT_FILE
  value: {{ include "port-agent.selfSignedCertPath" . | quote }}
{{- end }}
{{- if not (hasKey $normal "REQUESTS_CA_BUNDLE") }}
- name: REQUESTS_CA_BUNDLE
  value: {{ include "port-agent.selfSignedCertPath" . | quote }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
