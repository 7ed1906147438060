//go:build tools

// Package tools pins etcd, the storage of the throwaway kube-apiserver that
// deploy/check.sh starts on loopback. It is its own module because etcd's and
// Kubernetes' dependency graphs are kept apart.
package tools

import _ "go.etcd.io/etcd/server/v3"
