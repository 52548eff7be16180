// Command validate decodes every object of a rendered Kubernetes layout (`kustomize build` on stdin) strictly
// into Kubernetes' and KEDA's own Go types: an unknown or misspelt field, a duplicate key or a wrong type is an
// error, as the API server would answer on apply. It also checks object and label names with apimachinery's
// validation, and a ScaledObject with KEDA's own rules for replica bounds and fallback (KEDA's admission webhook
// only logs a fallback it cannot apply, on a Value trigger, and accepts it: the fallback then never happens).
// tests/unit/test_k8s_render.py builds it with deploy/local/validate.sh and runs it on both layouts.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

func main() {
	if err := kedav1alpha1.AddToScheme(scheme.Scheme); err != nil {
		fmt.Fprintf(os.Stderr, "validate: registering KEDA types: %v\n", err)
		os.Exit(2)
	}
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	var problems []string
	count := 0
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "validate: reading the rendered YAML: %v\n", err)
			os.Exit(2)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		count++
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			where := "object"
			if gvk != nil {
				where = gvk.Kind
			}
			problems = append(problems, fmt.Sprintf("%s #%d: %v", where, count, err))
			continue
		}
		problems = append(problems, checkNames(obj, gvk.Kind)...)
		if scaled, ok := obj.(*kedav1alpha1.ScaledObject); ok {
			problems = append(problems, checkScaledObject(scaled)...)
		}
	}
	if count == 0 {
		problems = append(problems, "no objects on stdin")
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("%d objects decoded strictly\n", count)
}

// checkNames applies the API server's rules to the object's name, namespace and labels.
func checkNames(obj runtime.Object, kind string) []string {
	accessor, ok := obj.(metav1.Object)
	if !ok {
		return []string{fmt.Sprintf("%s: no object metadata", kind)}
	}
	where := kind + "/" + accessor.GetName()
	var problems []string
	for _, msg := range validation.IsDNS1123Subdomain(accessor.GetName()) {
		problems = append(problems, fmt.Sprintf("%s: name: %s", where, msg))
	}
	if ns := accessor.GetNamespace(); ns != "" {
		for _, msg := range validation.IsDNS1123Label(ns) {
			problems = append(problems, fmt.Sprintf("%s: namespace: %s", where, msg))
		}
	}
	for key, value := range accessor.GetLabels() {
		for _, msg := range append(validation.IsQualifiedName(key), validation.IsValidLabelValue(value)...) {
			problems = append(problems, fmt.Sprintf("%s: label %s=%s: %s", where, key, value, strings.TrimSpace(msg)))
		}
	}
	return problems
}

// checkScaledObject applies KEDA's checks of replica bounds and fallback to a ScaledObject.
func checkScaledObject(scaled *kedav1alpha1.ScaledObject) []string {
	where := "ScaledObject/" + scaled.Name
	var problems []string
	if err := kedav1alpha1.CheckReplicaCountBoundsAreValid(scaled); err != nil {
		problems = append(problems, fmt.Sprintf("%s: %v", where, err))
	}
	if err := kedav1alpha1.CheckFallbackValid(scaled); err != nil {
		problems = append(problems, fmt.Sprintf("%s: fallback: %v", where, err))
	}
	return problems
}
