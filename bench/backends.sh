# Sourced by the balancer benchmarks (bench/lb.sh, bench/lb-strict-cost.sh): free loopback
# ports, waiting for a port, and three static HTTP backends — listeners of one nginx process
# serving the canonical user at /users/12 and 200 at /healthz, no access log.
#
# start_backends WORK NGINX: fills the array B with the three ports, appends nginx's pid to
# the array pids (which the caller's EXIT trap kills) and sets PID_BACKENDS; returns once every
# port accepts connections. Files go under WORK (www/, logs/, backends.conf).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

start_backends() {
  local work=$1 nginx=$2
  mkdir -p "$work/www/users" "$work/logs"
  printf '%s' '{"id":12,"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}' > "$work/www/users/12"
  B=($(free_port) $(free_port) $(free_port))
  cat > "$work/backends.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/logs/backend-error.log warn;
pid $work/backend.pid;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:${B[0]}; root $work/www; location = /healthz { return 200 ok; } }
  server { listen 127.0.0.1:${B[1]}; root $work/www; location = /healthz { return 200 ok; } }
  server { listen 127.0.0.1:${B[2]}; root $work/www; location = /healthz { return 200 ok; } }
}
CONF
  "$nginx" -c "$work/backends.conf" -p "$work" >/dev/null 2>&1 & pids+=($!); PID_BACKENDS=$!
  local p
  for p in "${B[@]}"; do wait_port "$p"; done
}
