{{/* The release's resource name prefix: the release name, or
     <release>-dynaraft when the release name does not say dynaraft. */}}
{{- define "dynaraft.fullname" -}}
{{- if contains "dynaraft" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-dynaraft" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dynaraft.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "dynaraft.peers" -}}
{{ include "dynaraft.fullname" . }}-peers
{{- end -}}

{{/* Values that cannot make a working cluster fail the rendering. */}}
{{- define "dynaraft.validate" -}}
{{- if lt (len .Values.zones) 3 -}}
{{- fail (printf "zones: %d given, a dynaraft cluster needs at least three availability zones (every partition keeps a replica in each, and a quorum must survive the loss of one)" (len .Values.zones)) -}}
{{- end -}}
{{- if lt (int .Values.nodesPerZone) 1 -}}
{{- fail (printf "nodesPerZone: %v given, every zone needs at least one storage node" .Values.nodesPerZone) -}}
{{- end -}}
{{- if gt (int .Values.nodesPerZone) 99 -}}
{{- fail (printf "nodesPerZone: %v given, at most 99 (node ids are the zone's base, a multiple of 100, plus the pod ordinal)" .Values.nodesPerZone) -}}
{{- end -}}
{{- $seen := dict -}}
{{- range .Values.zones -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "zones: the zone name %q is given twice" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- if and .Values.storage.storageClass.create (not .Values.storage.storageClass.provisioner) -}}
{{- fail "storage.storageClass.provisioner: needed when storage.storageClass.create is true (your cluster's CSI driver)" -}}
{{- end -}}
{{- end -}}

{{/* id=address@zone of every control-plane member: pod 0 of each zone. */}}
{{- define "dynaraft.control" -}}
{{- $root := . -}}
{{- $members := list -}}
{{- range $i, $z := .Values.zones -}}
{{- $addr := printf "%s-%s-0.%s.%s.svc.%s:%v" (include "dynaraft.fullname" $root) $z.name (include "dynaraft.peers" $root) $root.Release.Namespace $root.Values.clusterDomain $root.Values.storage.grpcPort -}}
{{- $members = append $members (printf "%d=%s@%s" (mul (add $i 1) 100) $addr $z.name) -}}
{{- end -}}
{{- join "," $members -}}
{{- end -}}

{{- define "dynaraft.labels" -}}
app.kubernetes.io/name: dynaraft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dynaraft.selector" -}}
app.kubernetes.io/name: dynaraft
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Pod Security "restricted": the pod's part. */}}
{{- define "dynaraft.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Pod Security "restricted": each container's part. */}}
{{- define "dynaraft.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* The API's flags, one per line, for whoever serves it (a router's args,
     a storage node's command line with --api-listen). */}}
{{- define "dynaraft.apiFlags" -}}
--partitions-per-table={{ .Values.api.partitionsPerTable }}
{{- if .Values.auth.enabled }}
--auth-file=/etc/dynaraft/auth/{{ .Values.auth.key }}
{{- end }}
{{- if .Values.tls.api.enabled }}
--tls-cert=/tls/api/tls.crt
--tls-key=/tls/api/tls.key
{{- end }}
{{- if not .Values.api.console }}
--no-console
{{- end }}
{{- range .Values.api.extraArgs }}
{{ . }}
{{- end }}
{{- end -}}

{{/* The Secrets the API's flags read: volume mounts, then volumes. */}}
{{- define "dynaraft.apiMounts" -}}
{{- if .Values.auth.enabled }}
- name: auth
  mountPath: /etc/dynaraft/auth
  readOnly: true
{{- end }}
{{- if .Values.tls.api.enabled }}
- name: api-tls
  mountPath: /tls/api
  readOnly: true
{{- end }}
{{- end -}}

{{- define "dynaraft.apiVolumes" -}}
{{- if .Values.auth.enabled }}
- name: auth
  secret:
    secretName: {{ .Values.auth.secretName }}
    defaultMode: 0400
{{- end }}
{{- if .Values.tls.api.enabled }}
- name: api-tls
  secret:
    secretName: {{ .Values.tls.api.secretName }}
    defaultMode: 0400
{{- end }}
{{- end -}}
