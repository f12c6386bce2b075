#!/bin/sh
# Idempotent set-up run before `npm start`, `npm test` and `npm run bench`: Debian packages,
# node modules, the TypeScript build and the cached guest image.
set -eu
cd "$(dirname "$0")/.."

need=""
for pair in qemu-system-x86_64:qemu-system-x86 iasl:acpica-tools cpio:cpio xz:xz-utils \
  zstd:zstd modinfo:kmod; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
[ -x /bin/busybox ] || need="$need busybox-static"
if [ -n "$need" ]; then
  echo "setup: installing Debian packages:$need"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund >/dev/null
fi

npx tsc -p tsconfig.json
node scripts/bundle.mjs
node dist/bundle/cli/main.js image --quiet
