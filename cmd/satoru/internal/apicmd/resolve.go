package apicmd

import (
	"fmt"
	"sort"
	"strings"

	"github.com/satoru/satoru/shared/domain"
)

// maxNamesInError bounds the known site names an "unknown site" error lists.
const maxNamesInError = 10

// resolveSite finds the site that ref names: its uuid or its name. A ref
// that is one site's uuid and another's name is ambiguous (names may look
// like uuids), as is an empty ref.
func resolveSite(sites []domain.SiteView, ref string) (domain.SiteView, error) {
	if ref == "" {
		return domain.SiteView{}, fmt.Errorf("site: empty name or uuid")
	}
	var byUUID, byName []domain.SiteView
	for _, s := range sites {
		if s.UUID == ref {
			byUUID = append(byUUID, s)
		}
		if s.Name == ref {
			byName = append(byName, s)
		}
	}
	switch {
	case len(byUUID) == 1 && len(byName) == 0:
		return byUUID[0], nil
	case len(byName) == 1 && len(byUUID) == 0:
		return byName[0], nil
	case len(byUUID) == 1 && len(byName) == 1 && byUUID[0].UUID == byName[0].UUID:
		return byUUID[0], nil
	case len(byUUID)+len(byName) > 1:
		var which []string
		for _, s := range byUUID {
			which = append(which, fmt.Sprintf("uuid of site %q", s.Name))
		}
		for _, s := range byName {
			which = append(which, fmt.Sprintf("name of site %s", s.UUID))
		}
		return domain.SiteView{}, fmt.Errorf("site %q is ambiguous: it is the %s; use the uuid", ref, strings.Join(which, " and the "))
	}
	names := make([]string, 0, len(sites))
	for _, s := range sites {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	switch {
	case len(names) == 0:
		return domain.SiteView{}, fmt.Errorf("site %q not found: no sites are registered", ref)
	case len(names) > maxNamesInError:
		names = append(names[:maxNamesInError], fmt.Sprintf("... %d more", len(sites)-maxNamesInError))
	}
	return domain.SiteView{}, fmt.Errorf("site %q not found by name or uuid (sites: %s)", ref, clean(strings.Join(names, ", ")))
}

// siteNames maps uuids to names for display.
func siteNames(sites []domain.SiteView) map[string]string {
	m := make(map[string]string, len(sites))
	for _, s := range sites {
		m[s.UUID] = s.Name
	}
	return m
}
