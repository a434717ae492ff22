#!/usr/bin/env bash
# Installs what the tests and benchmarks need when it is missing: Debian's
# nginx (with its Lua module, for the CPU-heavy handler), HAProxy, wrk, ab (apache2-utils: full TLS handshakes),
# Node.js (its cluster module), gunicorn and uvicorn (PyPI is not needed:
# Debian packages both, for its own python3),
# prometheus (with promtool) and curl, and the Go modules and
# tools (benchstat) through the module proxy. As root it installs; as
# anyone else it says what to install and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null || need+=(nginx-light)
[[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ]] || need+=(libnginx-mod-http-lua)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v ab >/dev/null || need+=(apache2-utils)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v curl >/dev/null || need+=(curl)
command -v node >/dev/null || need+=(nodejs)
command -v gunicorn >/dev/null || need+=(gunicorn)
/usr/bin/python3 -c 'import uvicorn' 2>/dev/null || need+=(python3-uvicorn)

if ((${#need[@]})); then
	mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
		echo "setup: missing ${need[*]}; install them (Debian: sudo apt-get install ${need[*]})" >&2
		exit 1
	fi
	echo "setup: installing ${need[*]} from Debian's packages" >&2
	# Keep the packages' services from starting: tests run their own
	# nginx and prometheus on loopback ports and leave nothing behind.
	created_policy=0
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		created_policy=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	((created_policy)) && rm -f /usr/sbin/policy-rc.d
fi

go mod download
go tool -n benchstat >/dev/null

# Upstream promtool, for the Kubernetes scrape config (Debian's promtool
# has no Kubernetes service discovery): pinned in tools/promtool, built
# once into .tools/ (a few minutes with a cold build cache).
if [[ ! -x .tools/promtool ]]; then
	echo "setup: building promtool (upstream, pinned in tools/promtool) into .tools/" >&2
	(cd tools/promtool && go build -o ../../.tools/promtool github.com/prometheus/prometheus/cmd/promtool)
fi
