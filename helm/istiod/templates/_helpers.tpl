{{- define "istiod.labels" -}}
app: istiod
istio: pilot
app.kubernetes.io/name: istiod
app.kubernetes.io/part-of: skiff
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "istiod.image" -}}
{{ .Values.global.hub }}/{{ .Values.pilot.image }}:{{ .Values.global.tag }}
{{- end }}
