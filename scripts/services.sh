#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1; install them with apt on a machine without them.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
need_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
  echo "installing postgresql and redis-server with apt"
  need_sudo apt-get update -qq
  need_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null
  # trust auth on loopback, as on the project's machines
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    need_sudo sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$hba"
  done
fi
if ! pg_up; then
  echo "starting postgresql"
  need_sudo pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis_up; then
  echo "starting redis"
  need_sudo mkdir -p /var/lib/redis
  need_sudo redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis
fi
for _ in $(seq 1 60); do pg_up && redis_up && exit 0; sleep 1; done
echo "PostgreSQL or Redis did not come up" >&2
exit 1
