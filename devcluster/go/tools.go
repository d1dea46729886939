//go:build tools

// Package tools pins the main packages of the control-plane components the
// devcluster runs. Nothing here is product code: `go build` of these import
// paths, at the versions in go.mod, yields the binaries.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
