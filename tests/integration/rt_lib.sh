# shellcheck shell=bash
# rt_lib.sh - shared helpers of the runtime integration tests (sourced, not run).
# Builds small OCI images at test time from host binaries and their libraries (busybox-static,
# redis-server, nginx, python3), encrypts them with `cista image pack`, generates policies, and
# starts/stops peers (swtpm, containerd) by pid. TAP output: ok/not_ok/check.
# Needs: CISTA (absolute path), TMP (scratch dir, removed by the caller's trap).

n=${n:-0}
failed=${failed:-0}
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP ${2:-}"; }
diag() { sed 's/^/# /' "$@" | head -${DIAG_LINES:-15}; }
check() {
  local name=$1; shift
  if "$@" >"$TMP/check.out" 2>&1; then ok "$name"; else not_ok "$name"; diag "$TMP/check.out"; fi
}
# expect_refused NAME WORDS CMD...: exit status 3 and WORDS (grep -E) in the output
expect_refused() {
  local name=$1 words=$2; shift 2
  "$@" >"$TMP/refused.out" 2>&1
  local rc=$?
  if [ "$rc" = 3 ] && grep -Eq -- "$words" "$TMP/refused.out"; then ok "$name"; else
    not_ok "$name (exit $rc)"; diag "$TMP/refused.out"; fi
}
# expect_fail NAME WORDS CMD...: non-zero exit and WORDS in the output
expect_fail() {
  local name=$1 words=$2; shift 2
  "$@" >"$TMP/fail.out" 2>&1
  local rc=$?
  if [ "$rc" != 0 ] && grep -Eq -- "$words" "$TMP/fail.out"; then ok "$name"; else
    not_ok "$name (exit $rc)"; diag "$TMP/fail.out"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # PORT [tries*0.1s]
  local i
  for i in $(seq "${2:-100}"); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# copy_bin ROOTFS FILE...: the files and every library ldd names, at the same paths
copy_bin() {
  local root=$1; shift
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

base_rootfs() { # ROOTFS: busybox + passwd + dirs
  local r=$1
  mkdir -p "$r"/{bin,etc,proc,sys,dev,tmp,run,root}
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  local a
  for a in sh cat echo ls id sleep ps env wc grep head test true false printf stat sha256sum; do
    ln -sf busybox "$r/bin/$a"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>"$r/etc/passwd"
  echo 'root:x:0:' >"$r/etc/group"
  echo 'nogroup:x:65534:' >>"$r/etc/group"
}

# make_image LAYOUT TAG ROOTFS ENV CMD...: an OCI image (one layer) with umoci
make_image() {
  local layout=$1 tag=$2 rootfs=$3 env=$4; shift 4
  local b=$TMP/umoci-bundle-$tag
  [ -d "$layout" ] || umoci init --layout "$layout" >/dev/null
  umoci new --image "$layout:$tag" >/dev/null
  rm -rf "$b"
  umoci unpack --image "$layout:$tag" "$b" >/dev/null 2>&1 || return 1
  cp -a "$rootfs/." "$b/rootfs/"
  umoci repack --image "$layout:$tag" "$b" >/dev/null || return 1
  local cfg=(--config.env "$env")
  local a
  for a in "$@"; do cfg+=(--config.cmd "$a"); done
  umoci config --image "$layout:$tag" "${cfg[@]}" >/dev/null || return 1
  rm -rf "$b"
}

# keys: RSA image key pair (the owner's recipient key)
make_keys() {
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/image-key.pem" 2>/dev/null
  openssl pkey -in "$TMP/image-key.pem" -pubout -out "$TMP/image-pub.pem" 2>/dev/null
}

# encrypt SRC-LAYOUT TAG DST-LAYOUT: pack with encryption to image-pub.pem
encrypt() {
  "$CISTA" -q image pack --encrypt "jwe:$TMP/image-pub.pem" "oci:$1:$2" "oci:$3:$2" >/dev/null
}

# build_bb LAYOUT TAG CMD...: busybox image
build_bb() {
  local layout=$1 tag=$2; shift 2
  local r=$TMP/rootfs-bb-$tag
  rm -rf "$r"; base_rootfs "$r"
  make_image "$layout" "$tag" "$r" "PATH=/bin" "$@"
  rm -rf "$r"
}

build_redis() { # LAYOUT TAG PORT
  local r=$TMP/rootfs-redis
  rm -rf "$r"; base_rootfs "$r"
  copy_bin "$r" /usr/bin/redis-server
  make_image "$1" "$2" "$r" "PATH=/usr/bin:/bin" /usr/bin/redis-server --port "$3" --bind 127.0.0.1 \
    --appendonly no --protected-mode no --dir /tmp
  rm -rf "$r"
}

build_nginx() { # LAYOUT TAG PORT [WRITABLE-DIR: pid file and temp paths, default /tmp]
  local r=$TMP/rootfs-nginx w=${4:-/tmp}
  rm -rf "$r"; base_rootfs "$r"
  copy_bin "$r" /usr/sbin/nginx
  mkdir -p "$r"/var/log/nginx "$r"/var/lib/nginx "$r"/www "$r"/etc/nginx
  echo "hello from nginx in a TEE" >"$r/www/index.html"
  cat >"$r/etc/nginx/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $w/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $w/cb; proxy_temp_path $w/px; fastcgi_temp_path $w/fc;
  uwsgi_temp_path $w/uw; scgi_temp_path $w/sc;
  server { listen 127.0.0.1:$3; location / { root /www; } }
}
EOF
  make_image "$1" "$2" "$r" "PATH=/usr/sbin:/bin" /usr/sbin/nginx -c /etc/nginx/nginx.conf
  rm -rf "$r"
}

build_python() { # LAYOUT TAG PORT
  local r=$TMP/rootfs-python
  rm -rf "$r"; base_rootfs "$r"
  local py sys_py=/usr/bin/python3
  py=$(readlink -f $sys_py)
  copy_bin "$r" "$py"
  ln -sf "$py" "$r/usr/bin/python3"
  mkdir -p "$r/app"
  cat >"$r/app/server.py" <<'EOF'
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from python in a TEE\n"
        try:
            with open("/run/secrets/greeting", "rb") as f:
                body += b"secret-sha-len=" + str(len(f.read())).encode() + b"\n"
        except OSError:
            pass
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
  # only the stdlib files this app loads (python3 -S: no site)
  $sys_py -S -c '
import sys, http.server, socketserver, email.parser, email.message, html, mimetypes, urllib.parse
import encodings.idna, encodings.ascii, encodings.latin_1
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f: print(f)
' | while read -r f; do
    mkdir -p "$r$(dirname "$f")"; cp -L "$f" "$r$f"
    case $f in *.so) for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
      [ -e "$r$lib" ] || { mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"; }; done ;; esac
  done
  local libdir
  libdir=$($sys_py -S -c 'import os; print(os.path.dirname(os.__file__))')
  cp -r "$libdir/encodings" "$r$libdir/" 2>/dev/null
  find "$r$libdir" -name '__pycache__' -prune -exec rm -rf {} + 2>/dev/null
  make_image "$1" "$2" "$r" "PATH=/usr/bin:/bin" /usr/bin/python3 -S /app/server.py "$3"
  rm -rf "$r"
}

# policy IMAGE-REF OUT [gen options...]
# policy IMAGE OUT [GEN-OPTIONS]: pinned to the test's KBS (unless POLICY_NO_KBS=1: the
# development key source needs a policy that pins no broker)
policy() {
  local img=$1 out=$2; shift 2
  local pin=()
  [ -n "${KBS_URL:-}" ] && [ -z "${POLICY_NO_KBS:-}" ] && pin=(--kbs "$KBS_URL")
  "$CISTA" -q policy gen --image "$img" -o "$out" "${pin[@]}" "$@" >/dev/null
}

# policy_edit FILE PYTHON-EXPR-ON-d: edit a policy (d = the document) and write it canonically
policy_edit() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
p, expr = sys.argv[1], sys.argv[2]
d = json.load(open(p))
c = d["containers"][0]
exec(expr)
open(p, "w").write(json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n")
EOF
}

start_swtpm() { # sets SWTPM_PID, TCTI
  local attempt port
  mkdir -p "$TMP/swtpm"
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$((20000 + (RANDOM % 20000) * 2))
    swtpm socket --tpm2 --tpmstate dir="$TMP/swtpm" \
      --server type=tcp,port=$port,bindaddr=127.0.0.1 \
      --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
      --flags not-need-init,startup-clear --log file="$TMP/swtpm.log" &
    SWTPM_PID=$!
    wait_port "$port" 50 && kill -0 "$SWTPM_PID" 2>/dev/null && break
    kill "$SWTPM_PID" 2>/dev/null; wait "$SWTPM_PID" 2>/dev/null; SWTPM_PID=
  done
  [ -n "$SWTPM_PID" ] || return 1
  TCTI="swtpm:host=127.0.0.1,port=$port"
}

# start_kbs: embedded KBS on SQLite on loopback; sets KBS_PID, KBS_URL, exports admin env
start_kbs() {
  "$CISTA" -q kbs init --dir "$TMP/kbs" >/dev/null || return 1
  python3 - "$TMP/kbs/kbs.json" "$@" <<'EOF2'
import json, sys
p = sys.argv[1]
d = json.load(open(p))
for a in sys.argv[2:]:
    k, v = a.split("=", 1)
    d.setdefault(k, []).append(v)
json.dump(d, open(p, "w"), indent=1)
EOF2
  local port attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    "$CISTA" kbs serve --config "$TMP/kbs/kbs.json" --listen "127.0.0.1:$port" >"$TMP/kbs.log" 2>&1 &
    KBS_PID=$!
    wait_port "$port" 50 && kill -0 "$KBS_PID" 2>/dev/null && break
    kill "$KBS_PID" 2>/dev/null; wait "$KBS_PID" 2>/dev/null; KBS_PID=
  done
  [ -n "$KBS_PID" ] || return 1
  KBS_URL=http://127.0.0.1:$port
  export CISTA_KBS_URL=$KBS_URL CISTA_KBS_ADMIN_KEY=$TMP/kbs/admin-key.pem
}

kbs_put() { # PATH FILE
  "$CISTA" -q kbs admin --file "$2" put-resource "$1" >/dev/null
}

kbs_policy() { # [KEY] FILE
  if [ $# = 2 ]; then "$CISTA" -q kbs admin --key "$1" set-policy "$2" >/dev/null
  else "$CISTA" -q kbs admin set-policy "$1" >/dev/null; fi
}

# tpm_ak_pem OUT: the swtpm's attestation key (registered with the KBS)
tpm_ak_pem() {
  "$CISTA" -q evidence get --tee tpm --tcti "$TCTI" --tpm-eventlog "$TMP/ak-probe.log" \
    --report-data "$(printf '00%.0s' $(seq 64))" -o "$TMP/ak-ev.json" >/dev/null || return 1
  python3 -c 'import json,sys,base64; sys.stdout.buffer.write(base64.b64decode(json.load(open(sys.argv[1]))["ak_spki"]))' \
    "$TMP/ak-ev.json" | openssl pkey -pubin -inform DER -out "$1" 2>/dev/null
}

# rt_setup APPS...: keys, sim, swtpm, KBS, and the encrypted images (bb always) with policies
# Layouts: $TMP/img/NAME (plain) -> $TMP/enc/NAME:1 (encrypted); policies $TMP/NAME.policy.json
rt_setup() {
  mkdir -p "$TMP/img" "$TMP/enc"
  make_keys || return 1
  export CISTA_SIM_DIR=$TMP/sim
  "$CISTA" -q sim init >/dev/null 2>&1 || return 1
  if command -v swtpm >/dev/null && start_swtpm; then
    export CISTA_TPM_EVENTLOG=$TMP/tpm-eventlog.jsonl
    tpm_ak_pem "$TMP/ak.pem" || return 1
    start_kbs "sim_platform_keys=$TMP/sim/platform-pub.pem" "tpm_aks=$TMP/ak.pem" || return 1
  else
    TCTI=
    start_kbs "sim_platform_keys=$TMP/sim/platform-pub.pem" || return 1
  fi
  echo "s3cr3t-greeting-from-the-kbs" >"$TMP/greeting.txt"
  kbs_put default/app/greeting "$TMP/greeting.txt" || return 1
  local app
  for app in "$@"; do
    case $app in
      bb) build_bb "$TMP/img/bb" 1 /bin/sh -c 'echo hello from bb; cat /run/secrets/greeting; echo; id' ;;
      redis) REDIS_PORT=$(free_port); build_redis "$TMP/img/redis" 1 "$REDIS_PORT" ;;
      nginx) NGINX_PORT=$(free_port); build_nginx "$TMP/img/nginx" 1 "$NGINX_PORT" ;;
      python) PY_PORT=$(free_port); build_python "$TMP/img/python" 1 "$PY_PORT" ;;
    esac || return 1
    mkdir -p "$TMP/enc/$app"
    "$CISTA" -q image pack --encrypt "jwe:$TMP/image-pub.pem" "oci:$TMP/img/$app:1" "oci:$TMP/enc/$app:1" >/dev/null || return 1
    policy "oci:$TMP/enc/$app:1" "$TMP/$app.policy.json" --secret "$app:kbs:///default/app/greeting=/run/secrets/greeting" || return 1
    kbs_put "default/image-key/$app" "$TMP/image-key.pem" || return 1
  done
  # release: sim and tpm evidence from this test's platforms (the KBS verified the keys)
  echo '{"version":"1.0.0","anyOf":[{"claim":"tee","equals":"sim"},{"claim":"tee","equals":"tpm"}]}' >"$TMP/release.json"
  kbs_policy "$TMP/release.json" && kbs_refvals
}

policy_hash() { "$CISTA" -q policy hash --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sha256"])'; }

# kbs_refvals: reference values: sim (explicitly allowed, insecure) and tpm, with the hash of
# every $TMP/*.policy.json as the accepted host_data (the launch-bound policies)
kbs_refvals() {
  local f hs=""
  for f in "$TMP"/*.policy.json; do
    hs="$hs\"$(policy_hash "$f")\","
  done
  hs="[${hs%,}]"
  echo "{\"version\":\"1.0.0\",\"tees\":{\"sim\":{\"allow_insecure\":true,\"host_data\":$hs},\"tpm\":{}}}" >"$TMP/refvals.json"
  "$CISTA" -q kbs admin set-reference-values "$TMP/refvals.json" >/dev/null
}

# http_get PORT: GET http://127.0.0.1:PORT/ to stdout (python3 stdlib; no curl needed)
http_get() {
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=5).read().decode())' "$1"
}
export -f http_get
