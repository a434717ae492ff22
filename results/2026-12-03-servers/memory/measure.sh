#!/bin/bash
# One round: server RSS delta (tree) under 8192 held wrk connections,
# and client peak-RSS delta (-c8192 minus -c64), target/nginx, loadgen/wrk.
set -u
mkdir -p /tmp/memb # logs, nginx pid and error log
W=/work/wt-mem; N=${N:-8192}
treerss() { # KiB, sum over pid and descendants
  local p=$1 s=0; local all="$p $(pgrep -P $p | tr '\n' ' ')"
  for q in $all; do r=$(awk '/^VmRSS/{print $2}' /proc/$q/status 2>/dev/null); s=$((s+${r:-0})); done; echo $s; }
server() { # name cmd...
  local name=$1; shift
  taskset -c 0 "$@" >/tmp/memb/$name.log 2>&1 & local sp=$!
  sleep 1; local before=$(treerss $sp)
  taskset -c 1 wrk -t1 -c$N -d5s http://127.0.0.1:$PORT/ >/tmp/memb/wrk-$name.log 2>&1 & local wp=$!
  sleep 4; local during=$(treerss $sp); local est=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
  wait $wp; kill -TERM $sp; wait $sp 2>/dev/null
  echo "server $name before=$before during=$during established=$est KiB/conn=$(echo "scale=3;($during-$before)/$N" | bc)"
}
peak() { /usr/bin/time -f %M -o /tmp/memb/t "$@" >/dev/null 2>&1; cat /tmp/memb/t; }
client() { # name url
  local name=$1
  case $name in
   wrk) a=$(peak taskset -c 1 wrk -t1 -c64 -d3s $2); b=$(peak taskset -c 1 wrk -t1 -c$N -d3s $2);;
   loadgen) a=$(GOMAXPROCS=1 peak taskset -c 1 $W/bin/loadgen -c 64 -d 3s $2); b=$(GOMAXPROCS=1 peak taskset -c 1 $W/bin/loadgen -c $N -d 3s $2);;
  esac
  echo "client $name c64=$a c$N=$b KiB/conn=$(echo "scale=3;($b-$a)/($N-64)" | bc)"
}
PORT=18080 server target $W/bin/target -model reuseport -workers 2 -addr 127.0.0.1:18080 -metrics-addr off
PORT=18081 server nginx nginx -c $(dirname $0)/nginx.conf
taskset -c 0 nginx -c $(dirname $0)/nginx.conf >/dev/null 2>&1 & np=$!; sleep 1
client loadgen http://127.0.0.1:18081/
client wrk http://127.0.0.1:18081/
kill -TERM $np; wait $np 2>/dev/null
