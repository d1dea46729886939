//go:build tools

// Package tools pins helm, used by the chart tests (helm lint / template).
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
