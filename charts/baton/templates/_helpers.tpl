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
- name: etcd-tls
  secret:
    secretName: {{ include "baton.etcdClientSecret" . }}
{{- end }}
{{- end -}}

{{/* The Secret a platform component ((list . "controller") or "apiserver") shows etcd: a
     certificate of its own (baton-controller, baton-apiserver) when the chart makes them,
     else Baton's client Secret. */}}
{{- define "baton.etcdComponentVolume" -}}
{{- $root := index . 0 -}}
{{- if eq (include "baton.etcdTLS" $root) "true" }}
- name: etcd-tls
  secret:
    secretName: {{ include "baton.etcdComponentSecret" . }}
{{- end }}
{{- end -}}

{{- define "baton.etcdComponentSecret" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $etcd := $root.Values.etcd -}}
{{- if and $etcd.enabled $etcd.tls.enabled (not $etcd.tls.serverSecretName) (not $etcd.tls.clientSecretName) -}}
{{- printf "%s-etcd-%s" (include "baton.fullname" $root) $component -}}
{{- else -}}
{{- include "baton.etcdClientSecret" $root -}}
{{- end -}}
{{- end -}}

{{/* The same Secret's CA alone: for agents, which join for an identity of their own. */}}
{{- define "baton.etcdCAVolume" -}}
- name: etcd-tls
  secret:
    secretName: {{ include "baton.etcdClientSecret" . }}
    items: [{key: ca.crt, path: ca.crt}]
{{- end -}}

{{/* The name of the Secret with etcd's CA and Baton's client certificate. */}}
{{- define "baton.etcdClientSecret" -}}
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
{{- end -}}
{{- $secret -}}
{{- end -}}

{{/* Whether agents join through the registrar, each for a store identity of its own
     (agent.storeIdentity): "true", or empty when they share Baton's client certificate. */}}
{{- define "baton.agentsJoin" -}}
{{- $mode := .Values.agent.storeIdentity -}}
{{- $tls := eq (include "baton.etcdTLS" .) "true" -}}
{{- $chartCA := and .Values.etcd.enabled .Values.etcd.tls.enabled (not .Values.etcd.tls.serverSecretName) -}}
{{- $ca := or .Values.registrar.caSecretName $chartCA -}}
{{- if eq $mode "join" -}}
{{- if not $tls -}}
{{- fail "agent.storeIdentity join: etcd must speak TLS (etcd.tls.enabled, or etcd.external.tls.enabled with a client certificate)" -}}
{{- end -}}
{{- if not $ca -}}
{{- fail "agent.storeIdentity join: give registrar.caSecretName (a Secret with etcd's ca.crt and ca.key): the chart did not make etcd's CA" -}}
{{- end -}}
true
{{- else if and (eq $mode "auto") $tls $ca -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret with etcd's CA certificate and key (ca.crt, ca.key): the registrar's alone. */}}
{{- define "baton.etcdCASecret" -}}
{{- .Values.registrar.caSecretName | default (printf "%s-etcd-ca" (include "baton.fullname" .)) -}}
{{- end -}}

{{/* The registrar's URL, as agents reach it. */}}
{{- define "baton.registrarURL" -}}
https://{{ include "baton.fullname" . }}-registrar.{{ .Release.Namespace }}.svc:{{ .Values.registrar.port }}
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
