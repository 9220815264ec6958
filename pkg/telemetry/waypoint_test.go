package telemetry

import (
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func TestWaypointSeries(t *testing.T) {
	p, err := NewProvider(ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	w, err := NewWaypointMetrics(p.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	const echo, web = "echo.b.svc.cluster.local", "web.c.svc.cluster.local"
	ctx := context.Background()
	w.Retry(ctx, echo, RetryConnectFailure)
	w.Retry(ctx, echo, RetryConnectFailure)
	w.Retry(ctx, echo, RetryStatus)
	w.Retry(ctx, "", "")
	w.RetryBudgetExhausted(ctx, echo)
	w.OutlierEjection(ctx, echo, false)
	w.OutlierEjection(ctx, echo, true)
	w.OutlierEjection(ctx, echo, true)
	w.OutlierEjected(ctx, echo, 2)
	w.OutlierEjected(ctx, echo, 1) // a gauge keeps the last value
	w.OutlierEjected(ctx, web, 0)

	mfs := families(t, p)
	for _, tc := range []struct {
		name   string
		family string
		typ    dto.MetricType
		labels map[string]string
		value  float64
	}{
		{"retries by reason", "skiff_waypoint_retries_total", dto.MetricType_COUNTER,
			map[string]string{"destination_service": echo, "reason": "connect_failure"}, 2},
		{"another reason, another series", "skiff_waypoint_retries_total", dto.MetricType_COUNTER,
			map[string]string{"destination_service": echo, "reason": "status"}, 1},
		{"empty values are unknown", "skiff_waypoint_retries_total", dto.MetricType_COUNTER,
			map[string]string{"destination_service": "unknown", "reason": "unknown"}, 1},
		{"budget refusals", "skiff_waypoint_retry_budget_exhausted_total", dto.MetricType_COUNTER,
			map[string]string{"destination_service": echo}, 1},
		{"ejections", "skiff_waypoint_outlier_ejections_total", dto.MetricType_COUNTER,
			map[string]string{"destination_service": echo, "outcome": "ejected"}, 1},
		{"ejections the cap skipped", "skiff_waypoint_outlier_ejections_total", dto.MetricType_COUNTER,
			map[string]string{"destination_service": echo, "outcome": "skipped_by_cap"}, 2},
		{"ejected now", "skiff_waypoint_outlier_ejected", dto.MetricType_GAUGE,
			map[string]string{"destination_service": echo}, 1},
		{"ejected now, none", "skiff_waypoint_outlier_ejected", dto.MetricType_GAUGE,
			map[string]string{"destination_service": web}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := series(t, mfs, tc.family, tc.typ, tc.labels)
			got := m.GetCounter().GetValue()
			if tc.typ == dto.MetricType_GAUGE {
				got = m.GetGauge().GetValue()
			}
			if got != tc.value {
				t.Errorf("value %v, want %v", got, tc.value)
			}
		})
	}
	if n := len(mfs["skiff_waypoint_retries_total"].GetMetric()); n != 3 {
		t.Errorf("skiff_waypoint_retries_total has %d series, want 3", n)
	}
}
