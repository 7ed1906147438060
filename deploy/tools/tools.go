//go:build tools

// Package tools pins the Kubernetes programs that deploy/check.sh builds from
// source: kube-apiserver and kubectl (a real API server for
// `kubectl apply --dry-run=server`), plus the libraries psacheck and schemagen use.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
