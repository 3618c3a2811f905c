{{/* The release's name for everything it creates (at most 63 characters). */}}
{{- define "baton.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "baton.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include "baton.selector" (list . "controller") */}}
{{- define "baton.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "baton.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "baton.serviceAccount" -}}
{{ include "baton.fullname" . }}
{{- end -}}

{{/* etcd's client endpoints as --store takes them. */}}
{{- define "baton.storeURL" -}}
{{- if .Values.etcd.enabled -}}
{{- $name := include "baton.fullname" . -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $hosts = append $hosts (printf "%s-etcd-%d.%s-etcd-headless.%s.svc:2379" $name $i $name $.Release.Namespace) -}}
{{- end -}}
etcd://{{ join "," $hosts }}
{{- else -}}
{{- if not .Values.etcd.external.endpoints -}}
{{- fail "etcd.enabled is false: give etcd.external.endpoints (host:port of each member)" -}}
{{- end -}}
etcd://{{ join "," .Values.etcd.external.endpoints }}
{{- end -}}
{{- end -}}

{{/* The store flags every Baton command takes, one per line of a YAML list. */}}
{{- define "baton.storeArgs" -}}
- --store={{ include "baton.storeURL" . }}
- --prefix={{ .Values.store.prefix }}
{{- if eq (include "baton.etcdTLS" .) "true" }}
- --store-ca-file=/etc/baton/etcd/ca.crt
{{- if or .Values.etcd.enabled .Values.etcd.external.tls.clientCertificate }}
- --store-cert-file=/etc/baton/etcd/tls.crt
- --store-key-file=/etc/baton/etcd/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* Whether Baton speaks TLS to etcd: the release's (etcd.tls) or an external one. */}}
{{- define "baton.etcdTLS" -}}
{{- if .Values.etcd.enabled -}}
{{- .Values.etcd.tls.enabled -}}
{{- else -}}
{{- .Values.etcd.external.tls.enabled -}}
{{- end -}}
{{- end -}}

{{- define "baton.etcdVolumeMount" -}}
{{- if eq (include "baton.etcdTLS" .) "true" }}
- name: etcd-tls
  mountPath: /etc/baton/etcd
  readOnly: true
{{- end }}
{{- end -}}

{{/* The Secret with etcd's CA and Baton's client certificate (ca.crt, tls.crt, tls.key). */}}
{{- define "baton.etcdVolume" -}}
{{- if eq (include "baton.etcdTLS" .) "true" }}
{{- $secret := "" -}}
{{- if .Values.etcd.enabled -}}
{{- if and .Values.etcd.tls.serverSecretName (not .Values.etcd.tls.clientSecretName) -}}
{{- fail "etcd.tls.serverSecretName is given: give etcd.tls.clientSecretName too (a Secret with ca.crt, tls.crt, tls.key from the same CA)" -}}
{{- end -}}
{{- $secret = .Values.etcd.tls.clientSecretName | default (printf "%s-etcd-client" (include "baton.fullname" .)) -}}
{{- else -}}
{{- if not .Values.etcd.external.tls.secretName -}}
{{- fail "etcd.external.tls.enabled: give etcd.external.tls.secretName (a Secret with ca.crt, tls.crt, tls.key)" -}}
{{- end -}}
{{- $secret = .Values.etcd.external.tls.secretName -}}
{{- end }}
- name: etcd-tls
  secret:
    secretName: {{ $secret }}
{{- end }}
{{- end -}}

{{/* Liveness and readiness probes on a command's --metrics-listen port. */}}
{{- define "baton.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 5
{{- end -}}

{{- define "baton.metricsAnnotations" -}}
{{- if .root.Values.metrics.annotations }}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .port | quote }}
  prometheus.io/path: /metrics
{{- end }}
{{- end -}}
