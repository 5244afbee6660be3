package httpapi

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
)

// fakeLiveness stands in for the SATORU_SERVICES bucket.
type fakeLiveness struct {
	instances []bus.Instance
	err       error
}

func (f fakeLiveness) Services(context.Context) ([]bus.Instance, error) { return f.instances, f.err }

func instance(service, name string, age time.Duration) bus.Instance {
	return bus.Instance{Service: service, Instance: name, Version: "v1.2.3",
		StartedAt: testNow.Add(-time.Hour), HeartbeatAt: testNow.Add(-age)}
}

func allUp() []bus.Instance {
	var out []bus.Instance
	for _, s := range domain.Services() {
		out = append(out, instance(s, "node-a", 5*time.Second))
	}
	return out
}

func TestLivenessOf(t *testing.T) {
	in := []bus.Instance{
		instance("puller", "node-b", 2*time.Second),
		instance("puller", "node-a", 12*time.Second),
		instance("api", "node-a", 0),
		instance("exporter", "node-z", time.Second),   // not expected: listed after
		instance("scheduler", "node-a", -time.Second), // clock skew: age 0
	}
	l := LivenessOf(in, nil, []string{"api", "puller", "snapshotter", "scheduler"}, testNow)
	if l.Error != "" {
		t.Fatalf("error = %q", l.Error)
	}
	var names, statuses []string
	for _, s := range l.Services {
		names = append(names, s.Service)
		statuses = append(statuses, s.Status)
	}
	if want := []string{"api", "puller", "snapshotter", "scheduler", "exporter"}; !reflect.DeepEqual(names, want) {
		t.Errorf("services = %q, want %q", names, want)
	}
	if want := []string{ServiceUp, ServiceUp, ServiceDown, ServiceUp, ServiceUp}; !reflect.DeepEqual(statuses, want) {
		t.Errorf("statuses = %q, want %q", statuses, want)
	}
	p := l.Services[1]
	if !p.Expected || len(p.Instances) != 2 || p.Instances[0].Instance != "node-a" || p.Instances[0].HeartbeatAgeSeconds != 12 ||
		p.Instances[1].HeartbeatAgeSeconds != 2 || p.Instances[0].Version != "v1.2.3" || !p.Instances[0].HeartbeatAt.Equal(testNow.Add(-12*time.Second)) {
		t.Errorf("puller = %+v", p)
	}
	if s := l.Services[2]; s.Instances == nil || len(s.Instances) != 0 {
		t.Errorf("snapshotter = %+v, want an empty list", s)
	}
	if s := l.Services[3]; s.Instances[0].HeartbeatAgeSeconds != 0 {
		t.Errorf("scheduler = %+v", s)
	}
	if s := l.Services[4]; s.Expected {
		t.Errorf("exporter = %+v, not expected", s)
	}

	failed := LivenessOf(in, errors.New("nats: timeout"), domain.Services(), testNow)
	if failed.Error != "nats: timeout" || len(failed.Services) != 5 || failed.Services[0].Status != ServiceDown {
		t.Errorf("read error = %+v", failed)
	}
}

func TestJudgeLiveness(t *testing.T) {
	tests := []struct {
		name string
		l    *LivenessHealth
		want []string
	}{
		{"no liveness source", nil, []string{}},
		{"all up", LivenessOf(allUp(), nil, domain.Services(), testNow), []string{}},
		{"syncer and scheduler down", LivenessOf(allUp()[:3], nil, domain.Services(), testNow),
			[]string{"service syncer has no live instance", "service scheduler has no live instance"}},
		{"an extra service down is not expected", &LivenessHealth{Services: []ServiceHealth{{Service: "x", Status: ServiceDown}}}, []string{}},
		{"unreadable", LivenessOf(nil, errors.New("bucket gone"), domain.Services(), testNow),
			[]string{"service liveness unknown: bucket gone"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := HealthReport{Liveness: tc.l, Sync: SyncHealth{Status: SyncNotConfigured}}
			Judge(&r)
			if !reflect.DeepEqual(r.Problems, tc.want) {
				t.Errorf("problems = %q, want %q", r.Problems, tc.want)
			}
			if wantStatus := map[bool]string{true: HealthOK, false: HealthDegraded}[len(tc.want) == 0]; r.Status != wantStatus {
				t.Errorf("status = %q, want %q", r.Status, wantStatus)
			}
		})
	}
}

func TestHealthLiveness(t *testing.T) {
	quiet := func(d *Deps) { d.Disks, d.OffsiteConfigured, d.Ready = nil, false, nil }
	t.Run("all services live", func(t *testing.T) {
		h := newHarness(t, quiet, func(d *Deps) { d.Services = fakeLiveness{instances: allUp()} })
		r := decode[HealthReport](t, h.do("GET", "/api/v1/health", ""))
		if r.Status != HealthOK || r.Liveness == nil || len(r.Liveness.Services) != 5 {
			t.Fatalf("report = %+v", r)
		}
		sv := r.Liveness.Services[1]
		if sv.Service != "puller" || sv.Status != ServiceUp || len(sv.Instances) != 1 ||
			sv.Instances[0].Instance != "node-a" || sv.Instances[0].HeartbeatAgeSeconds != 5 {
			t.Errorf("puller = %+v", sv)
		}
	})
	t.Run("a missing service degrades", func(t *testing.T) {
		var some []bus.Instance
		for _, in := range allUp() {
			if in.Service != "snapshotter" {
				some = append(some, in)
			}
		}
		h := newHarness(t, quiet, func(d *Deps) { d.Services = fakeLiveness{instances: some} })
		rec := h.do("GET", "/api/v1/health", "")
		r := decode[HealthReport](t, rec)
		if r.Status != HealthDegraded || !reflect.DeepEqual(r.Problems, []string{"service snapshotter has no live instance"}) {
			t.Errorf("report = %+v", r)
		}
		if !strings.Contains(rec.Body.String(), `"service":"snapshotter","status":"down","expected":true,"instances":[]`) {
			t.Errorf("body = %s", rec.Body)
		}
	})
	t.Run("expected services are configurable", func(t *testing.T) {
		h := newHarness(t, quiet, func(d *Deps) {
			d.Services = fakeLiveness{instances: []bus.Instance{instance("api", "hub", 0)}}
			d.ExpectedServices = []string{"api"}
		})
		r := decode[HealthReport](t, h.do("GET", "/api/v1/health", ""))
		if r.Status != HealthOK || len(r.Liveness.Services) != 1 {
			t.Errorf("report = %+v", r)
		}
	})
	t.Run("unreadable liveness degrades", func(t *testing.T) {
		h := newHarness(t, quiet, func(d *Deps) { d.Services = fakeLiveness{err: errors.New("nats: timeout")} })
		rec := h.do("GET", "/api/v1/health", "")
		if rec.Code != 200 {
			t.Fatalf("GET /health = %d %s", rec.Code, rec.Body)
		}
		r := decode[HealthReport](t, rec)
		if r.Status != HealthDegraded || r.Liveness.Error != "nats: timeout" {
			t.Errorf("report = %+v", r)
		}
	})
	t.Run("without a liveness source it is left out", func(t *testing.T) {
		h := newHarness(t, quiet)
		rec := h.do("GET", "/api/v1/health", "")
		if r := decode[HealthReport](t, rec); r.Liveness != nil || r.Status != HealthOK {
			t.Errorf("report = %+v", r)
		}
		if strings.Contains(rec.Body.String(), "liveness") {
			t.Errorf("body = %s", rec.Body)
		}
	})
}
