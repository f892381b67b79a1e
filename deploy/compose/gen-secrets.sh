#!/usr/bin/env bash
# Throwaway secrets for the LOCAL TRIAL in this directory (README.md). Never use them for real data.
#
# Writes ./secrets/ (mode 0700; nothing in it is committed -- .gitignore):
#   ca/ca.crt, ca/ca.key          a CA valid for 30 days; the key is only used here and can be deleted after
#   kafka/kafka-{1,2,3}.p12       each node's TLS key and certificate (CN=kafka-N, SAN DNS:kafka-N), PKCS#12
#   kafka/keystore-password       the password of those keystores
#   kafka/admin-password          the admin's SCRAM-SHA-512 password (bootstrapped when the nodes format)
#   kafka/cluster-id              the KRaft cluster id
#   scram/xchg-<party>            each gateway's SCRAM-SHA-512 password; scram/xchg-notary for the notary;
#                                 scram/xchg-registry for the registry maintainers (gateway registry publish)
#   registry.json, registry-anchor.toml, maintainers/   the signed registry (2 of 3), its anchor, maintainer keys
#   parties/<party>/keys/         `gateway keys new` output: signing and sealing keys (0600, with their kids)
#   parties/<party>/signing.pem   copies under fixed names, mounted by compose.yaml
#   parties/<party>/sealing.pem
#   registry.toml                 ../registry.example.toml plus every party's new public keys
#
# Needs: bash, openssl (3.x), and the gateway installed in the repository's .venv (run `../../xchg gateway
# --help` once). File modes: the containers run as other users (Kafka uid 1000, gateway uid 10001), so the
# files they mount are 0644 inside directories that are 0755 -- but ./secrets itself is 0700, so no other
# user of this machine can reach any of it. The gateway logs kafka.secret_file_permissions for that; in
# production use a secret store with per-service ownership (Kubernetes Secrets, docs/OPERATIONS.md).
set -euo pipefail
cd "$(dirname "$0")"

repo="$(cd ../.. && pwd)"
gateway="${GATEWAY:-$repo/.venv/bin/gateway}"
python="${PYTHON:-$repo/.venv/bin/python}"
template="${REGISTRY_TEMPLATE:-../registry.example.toml}"
out=secrets
days=30

if [[ -e "$out" ]]; then
  echo "gen-secrets: ./$out exists; remove it (rm -rf $out, and docker compose down -v) to start over" >&2
  exit 1
fi
for tool in openssl "$gateway" "$python"; do
  if ! command -v "$tool" >/dev/null; then
    echo "gen-secrets: $tool not found (run ../../xchg gateway --help once to install the gateway)" >&2
    exit 1
  fi
done

umask 077
mkdir -p "$out/ca" "$out/kafka" "$out/scram" "$out/parties"
password() { openssl rand -hex 24; }   # 48 characters of 0-9a-f: safe in SCRAM configs and properties

echo "gen-secrets: CA"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$out/ca/ca.key" -out "$out/ca/ca.crt" -days "$days" -subj "/CN=xchg local trial CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

password >"$out/kafka/keystore-password"
password >"$out/kafka/admin-password"
openssl rand 16 | openssl base64 -A | tr '+/' '-_' | tr -d '=' >"$out/kafka/cluster-id"

for n in 1 2 3; do
  host="kafka-$n"
  echo "gen-secrets: TLS keystore of $host"
  work="$(mktemp -d)"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/key.pem" -out "$work/req.pem" -subj "/CN=$host" 2>/dev/null
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=DNS:$host" >"$work/ext.cnf"
  openssl x509 -req -in "$work/req.pem" -CA "$out/ca/ca.crt" -CAkey "$out/ca/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$work/ext.cnf" -out "$work/cert.pem" 2>/dev/null
  openssl pkcs12 -export -name kafka -inkey "$work/key.pem" -in "$work/cert.pem" -certfile "$out/ca/ca.crt" \
    -passout "file:$out/kafka/keystore-password" -out "$out/kafka/$host.p12"
  rm -rf "$work"
done

mapfile -t parties < <("$python" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as handle:
    print("\n".join(party["id"] for party in tomllib.load(handle)["parties"]))
' "$template")

password >"$out/scram/xchg-notary"
password >"$out/scram/xchg-registry"   # the registry maintainers' user: the only writer of xchg.registry.v1
echo "gen-secrets: the notary's checkpoint signing key (auditors trust secrets/notary/notary.vkey)"
mkdir -p "$out/notary"
"$gateway" audit keygen --notary local-trial --out "$out/notary/notary.pem" >/dev/null
for party in "${parties[@]}"; do
  echo "gen-secrets: keys and SCRAM password of $party"
  password >"$out/scram/xchg-$party"
  dir="$out/parties/$party"
  mkdir -p "$dir/keys"
  "$gateway" keys new --party "$party" --out "$dir/keys" --valid-days "$days" >"$dir/registry-entries.toml" 2>/dev/null
  cp "$dir/keys/$party"-sig-*.pem "$dir/signing.pem"
  cp "$dir/keys/$party"-seal-*.pem "$dir/sealing.pem"
done

echo "gen-secrets: registry.toml"
"$python" - "$template" "$out" <<'PYTHON'
import sys
import tomllib
from pathlib import Path

import tomli_w

template, out = Path(sys.argv[1]), Path(sys.argv[2])
with template.open("rb") as handle:
    registry = tomllib.load(handle)
for party in registry["parties"]:
    entries = tomllib.loads((out / "parties" / party["id"] / "registry-entries.toml").read_text())
    party["keys"] = entries["parties"]["keys"]
text = "# Local trial registry: generated by gen-secrets.sh with throwaway keys.\n" + tomli_w.dumps(registry)
(out / "registry.toml").write_text(text)
PYTHON
"$gateway" deploy render --registry "$out/registry.toml" --out "$(mktemp -d)" >/dev/null 2>&1 \
  || { echo "gen-secrets: the generated registry does not load" >&2; exit 1; }

# The signed registry (docs/REGISTRY.md): three throwaway maintainers, version 1 signed by two of them, and
# the trust anchor every gateway and the notary are configured with. The maintainers' private keys stay in
# secrets/maintainers/ (in production each maintainer keeps theirs on their own machine).
echo "gen-secrets: registry.json (signed 2 of 3) and registry-anchor.toml"
mkdir -p "$out/maintainers"
for name in kemensos kemlu independent; do
  "$gateway" registry keygen --name "$name" --out "$out/maintainers" >/dev/null
done
maintainer_args=()
for public in "$out"/maintainers/*.pub.toml; do maintainer_args+=(--maintainer "$public"); done
"$gateway" registry init --parties "$out/registry.toml" --threshold 2 --valid-days "$days" \
  "${maintainer_args[@]}" --out "$out/registry.json" >/dev/null
signed=0
for key in "$out"/maintainers/*.pem; do
  [ "$signed" -lt 2 ] || break
  "$gateway" registry sign "$out/registry.json" --key "$key" >/dev/null
  signed=$((signed + 1))
done
"$gateway" registry anchor "$out/registry.json" --out "$out/registry-anchor.toml" >/dev/null \
  || { echo "gen-secrets: the signed registry does not verify" >&2; exit 1; }

# Readable by the containers that mount them; unreachable for other users (see the header).
find "$out" -mindepth 1 -type d -exec chmod 0755 {} +
find "$out" -mindepth 1 -type f -exec chmod 0644 {} +
chmod 0600 "$out/ca/ca.key"
find "$out/parties" -path '*/keys/*' -type f -exec chmod 0600 {} +
find "$out/maintainers" -name '*.pem' -type f -exec chmod 0600 {} +
chmod 0700 "$out"

echo "gen-secrets: done. Next: docker compose up -d (README.md)"
