// Package docs carries the documents the binary serves: the OpenAPI description of the REST
// API (openapi.yaml), embedded so that what is served is exactly what is documented here.
package docs

import _ "embed"

// OpenAPIYAML is docs/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte
