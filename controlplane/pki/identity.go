package pki

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Identity is who a caller is: the holder of a verified client certificate or of a bearer token.
type Identity struct {
	// Name is the certificate's common name or the token's name.
	Name string
	// Via says how the caller authenticated: "certificate" or "token".
	Via string
	// Roles held, sorted, without repeats.
	Roles []string
	// DataPlaneIDs are the worker ids a data-plane identity may claim (AnyDataPlane: any).
	DataPlaneIDs []string
}

// IdentityOf reads the identity out of a client certificate that has already been verified: its
// roles from OU values and fleetgate://ROLE/NAME URIs (unknown ones ignored), and, for the data-plane
// role, the worker ids from fleetgate://dataplane/ID URIs, else the common name.
func IdentityOf(cert *x509.Certificate) Identity {
	id := Identity{Name: cert.Subject.CommonName, Via: "certificate"}
	for _, ou := range cert.Subject.OrganizationalUnit {
		if slices.Contains(Roles, ou) {
			id.Roles = append(id.Roles, ou)
		}
	}
	for _, u := range cert.URIs {
		role, name, ok := parseRoleURI(u)
		if !ok {
			continue
		}
		id.Roles = append(id.Roles, role)
		if role == RoleDataPlane && name != "" {
			id.DataPlaneIDs = append(id.DataPlaneIDs, name)
		}
	}
	slices.Sort(id.Roles)
	id.Roles = slices.Compact(id.Roles)
	if slices.Contains(id.Roles, RoleDataPlane) && len(id.DataPlaneIDs) == 0 && id.Name != "" {
		id.DataPlaneIDs = []string{id.Name}
	}
	slices.Sort(id.DataPlaneIDs)
	id.DataPlaneIDs = slices.Compact(id.DataPlaneIDs)
	return id
}

// parseRoleURI reads fleetgate://ROLE/NAME.
func parseRoleURI(u *url.URL) (role, name string, ok bool) {
	if u.Scheme != URIScheme || !slices.Contains(Roles, u.Host) {
		return "", "", false
	}
	return u.Host, strings.TrimPrefix(u.Path, "/"), true
}

// Has tells whether the identity holds role. An admin holds the reader role too.
func (id Identity) Has(role string) bool {
	if slices.Contains(id.Roles, role) {
		return true
	}
	return role == RoleReader && slices.Contains(id.Roles, RoleAdmin)
}

// MayClaim tells whether a data-plane identity may act as worker dataplaneID.
func (id Identity) MayClaim(dataplaneID string) bool {
	if !slices.Contains(id.Roles, RoleDataPlane) || dataplaneID == "" {
		return false
	}
	return slices.Contains(id.DataPlaneIDs, AnyDataPlane) || slices.Contains(id.DataPlaneIDs, dataplaneID)
}

// AnyID tells whether the identity may claim any worker id (the shared data-plane certificate).
func (id Identity) AnyID() bool { return slices.Contains(id.DataPlaneIDs, AnyDataPlane) }

// String is how the identity appears in logs and errors: `certificate "dp-1" (roles dataplane)`.
func (id Identity) String() string {
	roles := "no role"
	if len(id.Roles) > 0 {
		roles = "roles " + strings.Join(id.Roles, ",")
	}
	return fmt.Sprintf("%s %q (%s)", id.Via, id.Name, roles)
}
