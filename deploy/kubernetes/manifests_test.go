// Package kubernetes holds lbbench's Kubernetes manifests; its test
// checks them offline against the official API types.
package kubernetes

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// strict decodes a manifest into an API type; an unknown or misspelt
// field is an error, as the API server's strict field validation has it.
func strict(t *testing.T, b []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatal(err)
	}
}

func caps(c corev1.Container) []string {
	var out []string
	if c.SecurityContext != nil && c.SecurityContext.Capabilities != nil {
		for _, k := range c.SecurityContext.Capabilities.Add {
			out = append(out, string(k))
		}
	}
	return out
}

func TestTarget(t *testing.T) {
	b, err := os.ReadFile("target.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	strict(t, b, &d)
	spec := d.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID || spec.NodeSelector["lbbench.dev/role"] != "target" {
		t.Errorf("the target must run on the labelled node's own network and pids: %+v", spec)
	}
	a := d.Spec.Template.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9100" || a["lbbench.dev/watch-port"] != "9102" {
		t.Errorf("scrape annotations %v", a)
	}
	if len(spec.Containers) != 2 {
		t.Fatalf("containers %d, want target and acceptwatch", len(spec.Containers))
	}
	for _, c := range spec.Containers {
		for _, want := range []string{"BPF", "PERFMON"} {
			if !slices.Contains(caps(c), want) {
				t.Errorf("%s: capabilities %v lack %s", c.Name, caps(c), want)
			}
		}
	}
	if args := strings.Join(spec.Containers[0].Args, " "); !strings.Contains(args, "-metrics-addr 0.0.0.0:9100") {
		t.Errorf("target args %q", args)
	}
}

func TestLoadgenJob(t *testing.T) {
	out, err := exec.Command("bash", "run.sh", "--render-job", "3", "2026-11-21T10:00:00Z", "10.0.0.7").Output()
	if err != nil {
		t.Fatalf("run.sh --render-job: %v", err)
	}
	var j batchv1.Job
	strict(t, out, &j)
	s := j.Spec
	if s.CompletionMode == nil || *s.CompletionMode != batchv1.IndexedCompletion {
		t.Errorf("completionMode %v, want Indexed", s.CompletionMode)
	}
	if s.Completions == nil || s.Parallelism == nil || *s.Completions != 3 || *s.Parallelism != 3 {
		t.Errorf("completions %v parallelism %v, want both 3 (run.sh's G)", s.Completions, s.Parallelism)
	}
	tpl := s.Template
	if got := tpl.Annotations["lbbench.dev/start-at"]; got != "2026-11-21T10:00:00Z" {
		t.Errorf("start-at annotation %q", got)
	}
	c := tpl.Spec.Containers[0]
	var startEnv, target string
	for _, e := range c.Env {
		switch {
		case e.Name == "START_AT" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			startEnv = e.ValueFrom.FieldRef.FieldPath
		case e.Name == "TARGET_ADDR":
			target = e.Value
		}
	}
	if startEnv != "metadata.annotations['lbbench.dev/start-at']" || target != "10.0.0.7:8080" {
		t.Errorf("START_AT from %q, TARGET_ADDR %q", startEnv, target)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"-start-at $(START_AT)", "-json -", "http://$(TARGET_ADDR)/", "-metrics-addr 0.0.0.0:9101"} {
		if !strings.Contains(args, want) {
			t.Errorf("loadgen args %q lack %q", args, want)
		}
	}
	aff := tpl.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) == 0 ||
		aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels["app.kubernetes.io/component"] != "target" ||
		len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		t.Errorf("anti-affinity %+v: want never beside the target, spread over nodes", aff)
	}
	if tpl.Spec.RestartPolicy != corev1.RestartPolicyNever || tpl.Annotations["prometheus.io/scrape"] != "true" {
		t.Errorf("restartPolicy %q, annotations %v", tpl.Spec.RestartPolicy, tpl.Annotations)
	}
}

// TestPrometheusConfig: promtool accepts the scrape config and rules,
// laid out as the documented ConfigMap mounts them.
func TestPrometheusConfig(t *testing.T) {
	// Upstream's: Debian's promtool is built without Kubernetes service
	// discovery and rejects kubernetes_sd_configs.
	promtool, _ := filepath.Abs("../../.tools/promtool")
	if _, err := os.Stat(promtool); err != nil {
		t.Fatal("upstream promtool missing: make setup builds it into .tools/")
	}
	dir := t.TempDir()
	for from, to := range map[string]string{"prometheus.yml": "prometheus.yml", "rules.yml": "rules.yml", "../prometheus/rules.yml": "target-rules.yml"} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, to), b, 0o644)
	}
	for _, args := range [][]string{{"check", "config", "prometheus.yml"}, {"check", "rules", "rules.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
