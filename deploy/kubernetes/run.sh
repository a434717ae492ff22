#!/usr/bin/env bash
# Runs G load generators (default 4) on Kubernetes against the target and
# merges their results into RESULTS (default results/k8s-<UTC time>):
#   deploy/kubernetes/run.sh [G] [RESULTS]
# Needs kubectl pointed at the cluster, the lbbench:dev image there
# (Dockerfile), a node labelled lbbench.dev/role=target, and bin/loadgen
# (make build) for the merge.
set -euo pipefail
here=$(dirname "$0")

# render_job G START_AT TARGET_IP prints the Job for G generators.
render_job() {
	sed -e "s/^  completions: .*/  completions: $1/" -e "s/^  parallelism: .*/  parallelism: $1/" \
		-e "s|lbbench.dev/start-at: .*|lbbench.dev/start-at: \"$2\"|" \
		-e "s|TARGET-NODE-IP|$3|" "$here/loadgen-job.yaml"
}
if [[ ${1:-} == --render-job ]]; then # for the manifest tests
	render_job "$2" "$3" "$4"
	exit
fi

G=${1:-4}
OUT=${2:-results/k8s-$(date -u +%Y%m%dT%H%M%SZ)}
[[ $G =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: G must be a positive number, not $G" >&2; exit 2; }
[[ -x bin/loadgen ]] || { echo "run.sh: bin/loadgen missing: run make build" >&2; exit 2; }

kubectl apply -f "$here/target.yaml"
kubectl rollout status deploy/lbbench-target --timeout=180s
target_ip=$(kubectl get pod -l app.kubernetes.io/component=target -o jsonpath='{.items[0].status.hostIP}')

# Far enough ahead for every pod to be scheduled and started; each
# generator waits for it, so all start within the nodes' clock skew.
start_at=$(date -u -d '+90 seconds' +%Y-%m-%dT%H:%M:%SZ)
kubectl delete job lbbench-loadgen --ignore-not-found --wait=true
render_job "$G" "$start_at" "$target_ip" | kubectl apply -f -
echo "run.sh: $G generators start at $start_at against $target_ip:8080" >&2
kubectl wait --for=condition=complete job/lbbench-loadgen --timeout=900s

mkdir -p "$OUT"
for i in $(seq 0 $((G - 1))); do
	pod=$(kubectl get pod -l "job-name=lbbench-loadgen,batch.kubernetes.io/job-completion-index=$i" \
		-o jsonpath='{.items[0].metadata.name}')
	# The JSON document is the part of the log from a line "{" to a line
	# "}"; loadgen's own remarks go to stderr, prefixed "loadgen:".
	kubectl logs "$pod" | sed -n '/^{$/,/^}$/p' >"$OUT/generator-$i.json"
done
bin/loadgen merge -json "$OUT/merged.json" -bench "$OUT/merged.txt" "$OUT"/generator-*.json
