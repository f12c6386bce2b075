/**
 * The shell scripts packed into the initramfs images. They run under busybox `sh` (Debian's
 * busybox-static 1.35, whose applets include base64, stty, insmod, setsid, chroot and sysctl).
 * Their text is part of the image manifest's input hash, so editing them rebuilds the image.
 */

/**
 * Most characters the agent sends for one stream of one command. Every byte on the serial port
 * is an exit the main thread answers, about 1 ms each in the box, so a megabyte of output that
 * does not compress would hold the agent, and the guest CPU taking the port's interrupts, for
 * twenty minutes. Output whose payload would be longer is cut to what fits, with a note on
 * stderr.
 */
export const AGENT_PAYLOAD_LIMIT = 65536;
/** Raw bytes kept of a stream that is cut: their base64 is just within the limit. */
export const AGENT_CUT_BYTES = (AGENT_PAYLOAD_LIMIT / 4) * 3;

/**
 * The guest agent, see `agent-protocol.ts`. `$1` is the port it reads requests from and `$2`
 * (default `$1`) the one it answers on; separate paths let a unit test drive it through FIFOs.
 * The port is made raw with no echo, so bytes pass unchanged and requests are not echoed back.
 * Commands get /dev/null as stdin so that they cannot eat requests.
 */
export const AGENT_SCRIPT = `#!/bin/sh
in=\${1:-/dev/ttyS1}
out=\${2:-$in}
stty -F "$in" raw -echo 2>/dev/null
work=\${TMPDIR:-/tmp}/memvisor-agent
mkdir -p "$work"
exec <"$in" >"$out" 2>/dev/null
# Every byte on the port costs the VMM an exit, so output over 200 bytes goes gzip-compressed
# when that is shorter.
pack() {
  plain=$(base64 -w0 <"$1")
  if [ "\${#plain}" -gt 200 ]; then
    packed=$(gzip -c <"$1" | base64 -w0)
    if [ "\${#packed}" -lt "\${#plain}" ]; then printf 'z:%s' "$packed"; return; fi
  fi
  printf '%s' "$plain"
}
# Cuts file $1 (stream $2) to what fits AGENT_PAYLOAD_LIMIT, noting it on the command's stderr.
fit() {
  p=$(pack "$1")
  [ "\${#p}" -le ${AGENT_PAYLOAD_LIMIT} ] && return
  n=$(($(wc -c <"$1")))
  head -c ${AGENT_CUT_BYTES} "$1" >"$1.cut" && mv "$1.cut" "$1"
  echo "memvisor-agent: $2 cut to its first ${AGENT_CUT_BYTES} of $n bytes" >>"$work/err"
}
printf '#MV ready\\n'
while IFS=' ' read -r tag id len b64 rest; do
  case "$tag" in
  '') continue ;;
  '#MV') ;;
  *) printf '#MV 0 ERR not a frame\\n'; continue ;;
  esac
  case "$id" in ''|*[!0-9]*) printf '#MV 0 ERR bad id\\n'; continue ;; esac
  case "$len" in ''|*[!0-9]*) printf '#MV %s ERR bad length\\n' "$id"; continue ;; esac
  if [ -n "$rest" ] || [ "\${#b64}" -ne "$len" ]; then
    printf '#MV %s ERR length mismatch\\n' "$id"; continue
  fi
  case "$b64" in *[!A-Za-z0-9+/=]*) printf '#MV %s ERR bad base64\\n' "$id"; continue ;; esac
  if ! printf '%s' "$b64" | base64 -d >"$work/cmd" 2>/dev/null; then
    printf '#MV %s ERR bad base64\\n' "$id"; continue
  fi
  sh -c "$(cat "$work/cmd")" </dev/null >"$work/out" 2>"$work/err"
  rc=$?
  fit "$work/out" stdout
  fit "$work/err" stderr
  printf '#MV %s %s %s %s %s %s\\n' "$id" "$rc" $(($(wc -c <"$work/out"))) \\
    $(($(wc -c <"$work/err"))) "$(pack "$work/out")" "$(pack "$work/err")"
done
`;

/** The marker line the guest init prints on the console once modules are loaded. */
export const GUEST_READY_MARKER = 'memvisor-guest: ready';

/**
 * The guest's `/init`. It loads the modules listed in `/etc/modules.order` (dependency order,
 * written by the image builder), prints the ready marker, and keeps the agent running on ttyS1.
 * PID 1 must never exit, so the agent is restarted if it dies. Busybox `reboot`, `poweroff` and
 * `halt` without `-f` only signal PID 1 (TERM, USR2, USR1), which ignores what it does not trap,
 * so /init traps them and waits on the agent in the background, where a signal can reach it.
 */
export const GUEST_INIT = `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
while read -r m; do insmod "/lib/modules/$m" || echo "memvisor-guest: insmod $m failed"; done \\
  </etc/modules.order
echo '${GUEST_READY_MARKER}'
trap 'reboot -f' TERM
trap 'poweroff -f' USR2
trap 'halt -f' USR1
while :; do
  setsid /bin/memvisor-agent /dev/ttyS1 &
  wait $!
  sleep 1
done
`;

/**
 * The box's `/init`. Kernel messages stay on ttyS0 (a log file on the host); the command's
 * stdout and stderr go to the virtio-serial ports named `stdout` and `stderr`, which the host
 * streams live; a third, `heartbeat`, gets a line every 5 s for as long as the box runs. The
 * job (`job.sh`, written by the host) and the exit code (`rc`) travel through the `results`
 * export. Whatever happens, the box powers off at the end.
 */
export const BOX_INIT = `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" || echo "box: insmod $m failed"; done \\
  </etc/modules.order
sysctl -w vm.overcommit_memory=1 >/dev/null
opts=trans=virtio,version=9p2000.L,msize=524288
r=/newroot
mkdir -p $r /results
mount -t 9p -o "$opts,cache=none" results /results
mount -t 9p -o "$opts,ro,cache=loose" hostroot $r
work=$(cat /results/workdir)
# The chroot's own /tmp first, so that a work folder under /tmp is mounted on top of it.
mount -t tmpfs tmpfs $r/tmp
[ -d "$r$work" ] || mkdir -p "$r$work"
mount -t 9p -o "$opts,cache=none" work "$r$work"
for d in dev proc sys; do mount -o bind /$d $r/$d; done
port() {
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && echo "/dev/\${p##*/}" && return
  done
  echo /dev/null
}
cp /results/job.sh $r/tmp/.memvisor-job.sh
# The host counts the box as wedged when these stop (runInBox).
while :; do echo; sleep 5; done >"$(port heartbeat)" 2>/dev/null &
echo "box: running job"
chroot $r /bin/sh /tmp/.memvisor-job.sh >"$(port stdout)" 2>"$(port stderr)"
echo $? >/results/rc.tmp && mv /results/rc.tmp /results/rc
sync
echo "box: job done"
poweroff -f
`;
