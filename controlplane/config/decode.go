// Package config is Fleetgate's configuration model: decoding a gateway document (YAML or JSON),
// filling in defaults and validating every field. It runs once, when a configuration is applied (and
// again, defensively, when a data-plane worker receives one), never on the request path.
package config

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Decode parses a gateway document. YAML and JSON are both accepted (JSON is YAML). Field names are
// the Azure-style camelCase names of the proto's JSON mapping; unknown fields, fields given twice
// and an empty document are errors.
func Decode(data []byte) (*fgv1.Gateway, error) {
	// Strict: a key repeated in one mapping is an error rather than silently last-wins.
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("decode gateway: %w", err)
	}
	if string(js) == "null" {
		return nil, errors.New("decode gateway: empty document")
	}
	gw := &fgv1.Gateway{}
	if err := protojson.Unmarshal(js, gw); err != nil {
		return nil, fmt.Errorf("decode gateway: %w", err)
	}
	return gw, nil
}

// EncodeJSON renders a gateway as indented JSON with the document's field names.
func EncodeJSON(gw *fgv1.Gateway) ([]byte, error) {
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(gw)
}

// EncodeYAML renders a gateway as YAML with the document's field names.
func EncodeYAML(gw *fgv1.Gateway) ([]byte, error) {
	js, err := protojson.Marshal(gw)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}
