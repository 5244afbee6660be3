package apicmd

import (
	"reflect"
	"testing"

	"github.com/satoru/satoru/shared/domain"
)

func TestParseWindowFlag(t *testing.T) {
	cases := []struct {
		name, in string
		want     domain.MaintenanceWindow
		err      bool
	}{
		{"times only", "22:00-02:00", domain.MaintenanceWindow{Start: "22:00", End: "02:00"}, false},
		{"name, days, zone", "night=mon,tue 22:00-02:00 Europe/Berlin",
			domain.MaintenanceWindow{Name: "night", Days: []string{"mon", "tue"}, Start: "22:00", End: "02:00", Timezone: "Europe/Berlin"}, false},
		{"name with spaces", "all day=00:00-00:00", domain.MaintenanceWindow{Name: "all day", Start: "00:00", End: "00:00"}, false},
		{"days apart", "sat sun 01:00-05:00", domain.MaintenanceWindow{Days: []string{"sat", "sun"}, Start: "01:00", End: "05:00"}, false},
		{"no times", "mon", domain.MaintenanceWindow{}, true},
		{"no dash", "22:00 UTC", domain.MaintenanceWindow{}, true},
		{"too much", "22:00-23:00 UTC extra", domain.MaintenanceWindow{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWindowFlag(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
