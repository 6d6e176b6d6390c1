#!/bin/busybox sh
# PID 1 of the initramfs. Loads the modules, assembles the session's root
# (the image's read-only erofs disk under an overlayfs whose upper layer is
# on the session's own disk), mounts the guest agent's bundle (its own
# Python, libraries and loader: vmimages/bundle.py) read-only at /.chaser in
# it, then hands PID 1 to the guest agent started from there: nothing of the
# image's runs before the tenant's own commands.
# Any failure ends this script, which panics the kernel (panic=-1 reboots,
# and QEMU runs with -no-reboot, so it exits): the host sees QEMU gone and
# reports the last console lines, where this script said what failed.
bb=/bin/busybox
fail() { echo "chaser-init: $*"; exit 1; }
echo "chaser-init: started"  # the benchmarks time the kernel's boot to here

$bb mount -t devtmpfs dev /dev || fail "cannot mount /dev"
$bb mount -t proc proc /proc || fail "cannot mount /proc"
$bb mount -t sysfs sys /sys || fail "cannot mount /sys"
while read -r module; do
  $bb insmod "/lib/modules/$module" || fail "cannot load $module"
done < /etc/chaser-modules

case " $($bb cat /proc/cmdline) " in
  *" chaser.probe "*) echo "chaser-probe: ok"; $bb poweroff -f ;;
esac

# Disks are found by the serial the host gives them, not by probe order.
disk_with_serial() {
  tries=0
  while [ $tries -lt 100 ]; do
    for dev in /sys/block/vd*; do
      [ "$($bb cat "$dev/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${dev##*/}"; return 0; }
    done
    tries=$((tries + 1))
    $bb usleep 50000
  done
  return 1
}
image=$(disk_with_serial chaser-image) || fail "no disk with serial chaser-image"
rw=$(disk_with_serial chaser-rw) || fail "no disk with serial chaser-rw"
agent=$(disk_with_serial chaser-agent) || fail "no disk with serial chaser-agent"

$bb mkdir -p /lower /rw /newroot
$bb mount -t erofs -o ro "$image" /lower || fail "cannot mount the image disk $image"
$bb mount -t ext4 -o noatime "$rw" /rw || fail "cannot mount the session disk $rw"
$bb mkdir -p /rw/upper /rw/work
$bb mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
  || fail "cannot mount the overlay"
# Made if the image lacks them (nothing of the image's is needed to boot).
$bb mkdir -p /newroot/.chaser /newroot/run /newroot/tmp /newroot/dev /newroot/proc /newroot/sys
$bb mount -t erofs -o ro,nosuid,nodev "$agent" /newroot/.chaser || fail "cannot mount the agent's disk $agent"

case " $($bb cat /proc/cmdline) " in
  *" chaser.workspace "*)
    workspace=$(disk_with_serial chaser-ws) || fail "no disk with serial chaser-ws"
    $bb mkdir -p /newroot/workspace
    $bb mount -t ext4 -o noatime "$workspace" /newroot/workspace || fail "cannot mount the workspace $workspace"
    ;;
esac

$bb mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run || fail "cannot mount /run"
$bb mkdir -p /newroot/run/chaser
$bb cp /bin/busybox /newroot/run/chaser/busybox || fail "cannot copy busybox"
$bb mount -t tmpfs -o mode=1777,nosuid,nodev tmp /newroot/tmp || fail "cannot mount /tmp"
for fs in dev proc sys; do
  $bb mount --move "/$fs" "/newroot/$fs" || fail "cannot move /$fs"
done
$bb mkdir -p /newroot/dev/pts /newroot/dev/shm
$bb mount -t devpts -o ptmxmode=0666,mode=0620,gid=5 devpts /newroot/dev/pts || fail "cannot mount devpts"
$bb mount -t tmpfs -o mode=1777,nosuid,nodev shm /newroot/dev/shm || fail "cannot mount /dev/shm"
$bb hostname sandbox
$bb ip link set lo up || fail "cannot bring up lo"

# As vmimages.bundle.guest_argv, which a VM's agent needs no --listen for (it
# finds its virtio port by name): the bundle's loader and libraries, never
# the image's; -S -P: nothing of the image's is imported.
export PYTHONPATH=/.chaser/site
exec $bb switch_root /newroot /.chaser/lib/ld-linux-x86-64.so.2 --library-path /.chaser/lib \
  /.chaser/bin/python3 -S -P -B -m vmimages.guest.agent
