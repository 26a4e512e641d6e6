package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/custos-dev/custos/config"
)

// decoder decodes YAML into the Kubernetes API types, refusing unknown and
// duplicate fields as `kubectl apply --validate=strict` does.
func decoder() runtime.Decoder {
	s := runtime.NewScheme()
	_ = appsv1.AddToScheme(s)
	_ = corev1.AddToScheme(s)
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, s, s, json.SerializerOptions{Yaml: true, Strict: true})
}

func decodeAll(t *testing.T, b []byte) []runtime.Object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufioReader(b))
	var out []runtime.Object
	dec := decoder()
	for {
		doc, err := r.Read()
		if err != nil {
			break
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("strict decode: %v\n%s", err, doc)
		}
		out = append(out, obj)
	}
	return out
}

// The manifests for authority, gateway and detector decode strictly into
// the API types, run non-root on a read-only root with every capability
// dropped, probe /healthz and /readyz on a declared port, take secrets only
// by reference, route their Services to their pods, and carry a
// configuration custos accepts for each role.
func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) < 4 {
		t.Fatalf("manifests: %v", files)
	}
	var objs []runtime.Object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decodeAll(t, b)...)
	}
	var cm *corev1.ConfigMap
	pods := map[string]corev1.PodTemplateSpec{}
	var services []*corev1.Service
	for _, o := range objs {
		switch x := o.(type) {
		case *appsv1.Deployment:
			if !selects(x.Spec.Selector.MatchLabels, x.Spec.Template.Labels) {
				t.Errorf("%s: selector does not match its pods", x.Name)
			}
			pods[x.Name] = x.Spec.Template
		case *appsv1.StatefulSet:
			if !selects(x.Spec.Selector.MatchLabels, x.Spec.Template.Labels) {
				t.Errorf("%s: selector does not match its pods", x.Name)
			}
			pods[x.Name] = x.Spec.Template
		case *corev1.Service:
			services = append(services, x)
		case *corev1.ConfigMap:
			cm = x
		default:
			t.Errorf("unexpected %T", o)
		}
	}
	for _, want := range []string{"custos-authority", "custos-gateway", "custos-detector"} {
		if _, ok := pods[want]; !ok {
			t.Errorf("no workload %s", want)
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap")
	}
	for name, p := range pods {
		t.Run(name, func(t *testing.T) {
			checkPod(t, p, cm.Data["custos.yaml"])
		})
	}
	for _, s := range services {
		found := false
		for _, p := range pods {
			if selects(s.Spec.Selector, p.Labels) {
				found = true
				for _, sp := range s.Spec.Ports {
					if portOf(p.Spec.Containers[0], sp.TargetPort.String()) == 0 {
						t.Errorf("service %s: target port %s is not the pod's", s.Name, sp.TargetPort.String())
					}
				}
			}
		}
		if !found {
			t.Errorf("service %s selects no pod", s.Name)
		}
	}
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func portOf(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name || fmt.Sprint(p.ContainerPort) == name {
			return p.ContainerPort
		}
	}
	return 0
}

// secretKeys are the keys of the custos Secret that config.yaml documents.
var secretKeys = []string{"kek", "store", "gateway-token"}

func checkPod(t *testing.T, p corev1.PodTemplateSpec, cfgYAML string) {
	ps := p.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
		t.Error("pod may run as root")
	}
	if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
		t.Error("the API token is mounted; custos does not talk to the API server")
	}
	if len(p.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(p.Spec.Containers))
	}
	c := p.Spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil ||
		*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context %+v", sc)
	}
	for probe, path := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || portOf(c, probe.HTTPGet.Port.String()) == 0 {
			t.Errorf("probe for %s: %+v", path, probe)
		}
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Error("no memory limit")
	}
	// The environment as the pod sees it, with placeholders for secrets.
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != "custos" || !slices.Contains(secretKeys, ref.Key) {
				t.Errorf("%s: secret %s/%s is not documented", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = map[string]string{"kek": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", "store": "postgres://custos@postgres/custos", "gateway-token": "x"}[ref.Key]
		case e.ValueFrom.FieldRef != nil:
			if !strings.Contains(e.ValueFrom.FieldRef.FieldPath, "pod-index") {
				t.Errorf("%s: field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = "1"
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil && (strings.Contains(e.Name, "KEK") && e.Name != "CUSTOS_KEK_ENV" || strings.Contains(e.Name, "TOKEN")) {
			t.Errorf("%s is given in clear", e.Name)
		}
	}
	// The configuration, with the role and data directory of the args,
	// is one custos accepts.
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgFile, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	args := c.Args
	if len(args) == 0 || (args[0] != "serve" && args[0] != "gateway") {
		t.Fatalf("args %v", args)
	}
	cfg.Data = dir
	for i := 1; i+1 < len(args); i++ {
		switch args[i] {
		case "--role":
			cfg.Role = args[i+1]
		case "--listen":
			if args[0] == "serve" {
				cfg.Listen = args[i+1]
			}
		case "--admin-listen":
			cfg.Gateway.AdminListen = args[i+1]
		}
	}
	if args[0] == "gateway" {
		// The standalone gateway reads only its own section (and needs no
		// database): an upstream, the admin port for the probes and the
		// credential from the Secret.
		if cfg.Gateway.AdminListen == "" || !slices.Contains(args, "--upstream") || cfg.Gateway.AuthorityToken == "" {
			t.Errorf("gateway: admin %q, args %v, token set %v", cfg.Gateway.AdminListen, args, cfg.Gateway.AuthorityToken != "")
		}
		return
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("configuration refused: %v", err)
	}
}

// Strictness: a misspelt field is an error, not ignored.
func TestKubernetesStrictDecoding(t *testing.T) {
	b, err := os.ReadFile("kubernetes/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "readOnlyRootFilesystem", "readOnlyRootFileSystem", 1)
	doc, _, _ := strings.Cut(bad, "\n---")
	if _, _, err := decoder().Decode([]byte(doc), nil, nil); err == nil || !strings.Contains(err.Error(), "readOnlyRootFileSystem") {
		t.Fatalf("misspelt field accepted: %v", err)
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
