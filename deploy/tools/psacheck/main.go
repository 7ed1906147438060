// Command psacheck evaluates every pod template in a multi-document YAML stream
// (the output of `helm template`) against a Pod Security Standards level, with
// the checks the API server's admission plugin runs, offline.
//
//	helm template ... | psacheck -level restricted
//
// It prints one line per violation and exits 1 if there is any.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

func main() {
	level := flag.String("level", "restricted", "Pod Security Standards level: privileged, baseline or restricted")
	flag.Parse()
	lvl, err := api.ParseLevel(*level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "psacheck:", err)
		os.Exit(2)
	}
	n, bad, err := check(os.Stdin, os.Stdout, lvl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "psacheck:", err)
		os.Exit(2)
	}
	fmt.Printf("psacheck: %d pod templates, %d violations of %s\n", n, bad, lvl)
	if bad > 0 {
		os.Exit(1)
	}
}

func check(in io.Reader, out io.Writer, lvl api.Level) (pods, bad int, err error) {
	eval, err := policy.NewEvaluator(policy.DefaultChecks())
	if err != nil {
		return 0, 0, err
	}
	lv := api.LevelVersion{Level: lvl, Version: api.LatestVersion()}
	r := utilyaml.NewYAMLReader(bufio.NewReader(in))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return pods, bad, nil
		}
		if err != nil {
			return pods, bad, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return pods, bad, err
		}
		var meta *metav1.ObjectMeta
		var spec *corev1.PodSpec
		var name string
		switch tm.Kind {
		case "Pod":
			var o corev1.Pod
			err = yaml.UnmarshalStrict(doc, &o)
			meta, spec, name = &o.ObjectMeta, &o.Spec, o.Name
		case "Deployment":
			var o appsv1.Deployment
			err = yaml.UnmarshalStrict(doc, &o)
			meta, spec, name = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name
		case "StatefulSet":
			var o appsv1.StatefulSet
			err = yaml.UnmarshalStrict(doc, &o)
			meta, spec, name = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name
		case "DaemonSet":
			var o appsv1.DaemonSet
			err = yaml.UnmarshalStrict(doc, &o)
			meta, spec, name = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name
		case "Job":
			var o batchv1.Job
			err = yaml.UnmarshalStrict(doc, &o)
			meta, spec, name = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name
		default:
			continue
		}
		if err != nil {
			return pods, bad, fmt.Errorf("%s: %w", tm.Kind, err)
		}
		pods++
		for _, res := range eval.EvaluatePod(lv, meta, spec) {
			if !res.Allowed {
				bad++
				fmt.Fprintf(out, "%s/%s: %s: %s\n", tm.Kind, name, res.ForbiddenReason, res.ForbiddenDetail)
			}
		}
	}
}
