package server

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Every method of the API has an explicit place in the policy: a new method is a decision, not a
// default.
func TestPolicyCoversEveryMethod(t *testing.T) {
	n := 0
	for _, fd := range []protoreflect.FileDescriptor{fgv1.File_fleetgate_v1_config_service_proto, fgv1.File_fleetgate_v1_dataplane_service_proto} {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				m := fmt.Sprintf("/%s/%s", sd.FullName(), sd.Methods().Get(j).Name())
				n++
				if _, ok := methodRoles[m]; !ok {
					t.Errorf("%s is not in methodRoles", m)
				}
			}
		}
	}
	if n != len(methodRoles) {
		t.Errorf("methodRoles has %d entries for %d methods", len(methodRoles), n)
	}
	for m, want := range map[string]string{
		"/grpc.health.v1.Health/Check":                              "",
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "",
		"/fleetgate.v1.ConfigService/Unknown":                       pki.RoleAdmin,
		"/other.Service/Method":                                     pki.RoleAdmin,
		fgv1.ConfigService_ListGateways_FullMethodName:              pki.RoleReader,
		fgv1.ConfigService_ApplyGateway_FullMethodName:              pki.RoleAdmin,
		fgv1.DataPlaneService_Connect_FullMethodName:                pki.RoleDataPlane,
	} {
		if got := RequiredRole(m); got != want {
			t.Errorf("RequiredRole(%s) = %q, want %q", m, got, want)
		}
	}
}
