package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const chartDir = "helm/gxconf"

// obj is one rendered Kubernetes object.
type obj map[string]any

func (o obj) kind() string { return str(o, "kind") }
func (o obj) name() string { return str(o, "metadata", "name") }

// get walks nested maps (string keys) and lists (int keys).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				if o, ok2 := v.(obj); ok2 {
					m = o
				} else {
					return nil
				}
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func num(v any, path ...any) int {
	switch n := get(v, path...).(type) {
	case int:
		return n
	case float64:
		return int(n)
	}
	return -1
}

func list(v any, path ...any) []any {
	l, _ := get(v, path...).([]any)
	return l
}

func mapOf(v any, path ...any) map[string]any {
	m, _ := get(v, path...).(map[string]any)
	return m
}

// helmBin finds helm: $HELM, the deploy tools cache, or PATH. Without one
// the chart tests skip, unless GXTEST_DEPLOY_REQUIRE_TOOLS is set (CI).
func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	for _, c := range []string{"../.cache/deploy-tools/bin/helm"} {
		if _, err := os.Stat(c); err == nil {
			abs, _ := filepath.Abs(c)
			return abs
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if os.Getenv("GXTEST_DEPLOY_REQUIRE_TOOLS") != "" {
		t.Fatal("helm not found; run deploy/tools/build.sh helm")
	}
	t.Skip("helm not found (deploy/tools/build.sh helm builds it)")
	return ""
}

// valueSets lists the CI scenarios, ci/<name>-values.yaml.
func valueSets(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), "-values.yaml"))
	}
	sort.Strings(names)
	return names
}

// helmTemplate renders the chart with the value set's file plus extra --set
// arguments and returns helm's output and error.
func helmTemplate(t *testing.T, set string, extra ...string) ([]byte, error) {
	t.Helper()
	args := []string{"template", "gx", chartDir, "--namespace", "gxconf",
		"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"}
	if set != "" {
		args = append(args, "-f", filepath.Join(chartDir, "ci", set+"-values.yaml"))
	}
	args = append(args, extra...)
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New(strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// render renders a value set into its objects.
func render(t *testing.T, set string, extra ...string) []obj {
	t.Helper()
	out, err := helmTemplate(t, set, extra...)
	require.NoError(t, err, "helm template %s", set)
	objs := decode(t, out)
	require.NotEmpty(t, objs)
	return objs
}

func find(objs []obj, kind, name string) obj {
	for _, o := range objs {
		if o.kind() == kind && o.name() == name {
			return o
		}
	}
	return nil
}

func ofKind(objs []obj, kinds ...string) []obj {
	var out []obj
	for _, o := range objs {
		for _, k := range kinds {
			if o.kind() == k {
				out = append(out, o)
			}
		}
	}
	return out
}

// subset reports whether every label of sel is in labels.
func subset(sel, labels map[string]any) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
