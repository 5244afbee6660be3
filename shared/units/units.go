// Package units formats quantities for people: log lines, error messages
// and the CLI's tables.
package units

import "fmt"

// Bytes is n in binary (IEC) units with one decimal: "1023 B", "1.5 KiB",
// "5.0 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
