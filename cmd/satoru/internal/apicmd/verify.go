package apicmd

import (
	"fmt"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/units"
)

// verifyLine is the last verify job's outcome in one line.
func verifyLine(v *domain.VerifyResult, now time.Time) string {
	if v == nil {
		return "-"
	}
	line := fmt.Sprintf("%s (%s, job %s): %d files, %s", v.Status, ago(v.At, now), v.JobID, v.Files, units.Bytes(v.Bytes))
	if v.Error != "" {
		line += "; " + v.Error
	}
	return line
}
