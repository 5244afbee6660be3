package node

import (
	"testing"
	"time"

	"github.com/satoru/satoru/shared/config"
)

// The scheduler (in `satoru up` and `satoru scheduler`) gets
// history_retention_days, the default and a configured value.
func TestSchedulerSettingsHistoryRetention(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want time.Duration
	}{
		{"default", nil, 90 * 24 * time.Hour},
		{"configured", []string{"SATORU_HISTORY_RETENTION_DAYS=7"}, 7 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Load("", tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := SchedulerSettings(cfg).HistoryRetention; got != tc.want {
				t.Fatalf("HistoryRetention = %s, want %s", got, tc.want)
			}
		})
	}
}
