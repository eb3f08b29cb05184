#!/usr/bin/env bash
# Leader failover time: two `sortie serve` on one PostgreSQL database (a
# throwaway cluster started here, as root through the postgres user, on a
# unix socket only), the leader killed, and the time until the other's
# /metrics says sortie_cluster_leader 1. Each trial starts both servers
# afresh. Usage: bench/failover/failover.sh [TRIALS] [SIGNAL]  (default 5 KILL;
# TERM measures a clean stop, which resigns).
set -euo pipefail
trials=${1:-5}
sig=${2:-KILL}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/sortie-failover.XXXXXX)
chown postgres:postgres "$work"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
runuser -u postgres -- "$pgbin/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w -t 60 \
	-o "-c listen_addresses='' -k $work -c fsync=off" start >/dev/null
(cd "$root" && go build -o "$work/sortie" ./cmd/sortie)
git init -q "$work/repo"
echo x >"$work/repo/README"
git -C "$work/repo" add README
git -C "$work/repo" -c user.email=bench@localhost -c user.name=bench commit -qm init
cat >"$work/sortie.yaml" <<YAML
source: {url: $work/repo}
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  hourly:
    trigger: {cron: "0 * * * *"}
    jobs: [boot, work]
YAML
leads() { curl -sf "http://$1/metrics" | grep -q '^sortie_cluster_leader 1$'; }
for n in $(seq "$trials"); do
	db="postgres:///t$n?host=$work&user=postgres"
	psql "postgres:///postgres?host=$work&user=postgres" -qAtc "CREATE DATABASE t$n"
	addrs=(127.0.0.1:18311 127.0.0.1:18312)
	pids=()
	for i in 0 1; do
		# A name each: two live servers may not share one (the host's).
		"$work/sortie" serve --config "$work/sortie.yaml" --database "$db" --state-dir "$work/s$n-$i" \
			--node "n$i" --listen "${addrs[$i]}" >"$work/serve$n-$i.log" 2>&1 &
		pids[i]=$!
		disown "$!" # killed on purpose: no "Killed" line from the shell
	done
	for _ in $(seq 200); do
		if leads "${addrs[0]}" || leads "${addrs[1]}"; then break; fi
		sleep 0.05
	done
	for i in 0 1; do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			echo "trial $n: server $i exited at start:" >&2
			tail -n 5 "$work/serve$n-$i.log" >&2
			exit 1
		fi
	done
	if leads "${addrs[0]}"; then l=0 f=1; else l=1 f=0; fi
	# Let the leader renew at least once, as a server that has run a while.
	sleep 4
	start=$(date +%s%N)
	kill -"$sig" "${pids[$l]}"
	until leads "${addrs[$f]}"; do
		if (($(date +%s%N) - start > 120000000000)); then
			echo "trial $n: no new leader 120 s after SIG$sig of the leader" >&2
			exit 1
		fi
		sleep 0.02
	done
	end=$(date +%s%N)
	echo "trial $n: SIG$sig of the leader -> the other leads after $(((end - start) / 1000000)) ms"
	kill -9 "${pids[@]}" 2>/dev/null || true
	for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
done
