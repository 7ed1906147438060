// Package deploy holds gxconf's Kubernetes packaging: the Helm chart in
// helm/gxconf, the CI scenarios in helm/gxconf/ci, the check script check.sh
// and, in tools/ (a Go module of its own), the programs that check them
// without Docker. This package's tests render the chart with helm and assert
// what must hold for every value set; they import only gxconf's config.
package deploy
