package config_test

import (
	"errors"
	"fmt"

	"github.com/fleetgate/fleetgate/controlplane/config"
)

func ExampleValidate() {
	doc := []byte(`
name: example
httpListeners:
  - {name: web, port: 8080}
backendAddressPools:
  - {name: pool1, backendAddresses: [{ipAddress: 10.0.0.4}]}
backendHttpSettingsCollection:
  - {name: settings1, port: 70000}
requestRoutingRules:
  - {name: r1, ruleType: basic, priority: 100, httpListener: web, backendAddressPool: pool1, backendHttpSettings: settings1}
`)
	gw, err := config.Decode(doc)
	if err != nil {
		fmt.Println(err)
		return
	}
	config.Normalize(gw)
	err = config.Validate(gw)
	fmt.Println(err)

	var ve *config.ValidationError
	if errors.As(err, &ve) {
		for _, fe := range ve.Errors {
			fmt.Printf("field %s: %s\n", fe.Field, fe.Description)
		}
	}
	// Output:
	// invalid gateway: 1 error(s)
	//   backendHttpSettingsCollection[0].port: 70000 is out of range 1-65535
	// field backendHttpSettingsCollection[0].port: 70000 is out of range 1-65535
}
