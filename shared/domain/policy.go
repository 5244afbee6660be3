package domain

// SitePolicy is how one site departs from the global settings. Only the
// API writes it (as part of the site document); the scheduler, the API's
// job creation and the snapshotter's retention read it. The zero value is
// "no override": the site follows the global config.
type SitePolicy struct {
	// Paused: the scheduler queues no job for the site. Jobs started by
	// hand still run and are marked (Job.Trigger, Job.PolicyNote).
	Paused bool `bson:"paused,omitempty" json:"paused"`
	// PausedReason is free text the operator gave, shown beside "paused".
	PausedReason string `bson:"paused_reason,omitempty" json:"paused_reason,omitempty"`
	// Schedule replaces site_scan_interval_hours for the site's backups.
	Schedule *BackupSchedule `bson:"schedule,omitempty" json:"schedule,omitempty"`
	// Retention replaces restic_retention_policy for the site's snapshots.
	Retention *RetentionKeep `bson:"retention,omitempty" json:"retention,omitempty"`
	// MaintenanceWindows are times in which no job of the site starts.
	MaintenanceWindows []MaintenanceWindow `bson:"maintenance_windows,omitempty" json:"maintenance_windows,omitempty"`
}

// IsZero reports whether p overrides nothing.
func (p *SitePolicy) IsZero() bool {
	return p == nil || (!p.Paused && p.PausedReason == "" && p.Schedule == nil && p.Retention == nil && len(p.MaintenanceWindows) == 0)
}

// BackupSchedule is exactly one of: a fixed interval, or a 5-field cron
// expression read in an IANA time zone (UTC when empty).
type BackupSchedule struct {
	IntervalMinutes int    `bson:"interval_minutes,omitempty" json:"interval_minutes,omitempty"`
	Cron            string `bson:"cron,omitempty" json:"cron,omitempty"`
	Timezone        string `bson:"timezone,omitempty" json:"timezone,omitempty"`
}

// RetentionKeep is a restic forget policy with the keys of the global
// restic_retention_policy.
type RetentionKeep struct {
	KeepLast    int    `bson:"keep_last,omitempty" json:"keep_last,omitempty"`
	KeepHourly  int    `bson:"keep_hourly,omitempty" json:"keep_hourly,omitempty"`
	KeepDaily   int    `bson:"keep_daily,omitempty" json:"keep_daily,omitempty"`
	KeepWeekly  int    `bson:"keep_weekly,omitempty" json:"keep_weekly,omitempty"`
	KeepMonthly int    `bson:"keep_monthly,omitempty" json:"keep_monthly,omitempty"`
	KeepYearly  int    `bson:"keep_yearly,omitempty" json:"keep_yearly,omitempty"`
	KeepWithin  string `bson:"keep_within,omitempty" json:"keep_within,omitempty"`
}

// MaintenanceWindow is a daily (or weekly) stretch of wall-clock time in
// a time zone. End at or before Start crosses midnight: the window ends
// on the next day. Days name the days a window starts on (mon..sun);
// empty is every day.
type MaintenanceWindow struct {
	Name     string   `bson:"name,omitempty" json:"name,omitempty"`
	Days     []string `bson:"days,omitempty" json:"days,omitempty"`
	Start    string   `bson:"start" json:"start"`
	End      string   `bson:"end" json:"end"`
	Timezone string   `bson:"timezone,omitempty" json:"timezone,omitempty"`
}

// Job triggers.
const (
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
)
