//go:build tools

// Package promtool pins the upstream promtool that checks
// deploy/kubernetes/prometheus.yml: Debian's is built without
// Kubernetes service discovery, so it cannot parse kubernetes_sd_configs.
// bench/setup.sh builds it into .tools/ (once; it takes minutes).
package promtool

import _ "github.com/prometheus/prometheus/cmd/promtool"
