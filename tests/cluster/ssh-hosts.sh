#!/bin/sh
# Two test hosts for the ssh launcher: network namespaces with their own addresses on a
# bridge, each running a real OpenSSH server that accepts a key made here for the test.
#
#   tests/cluster/ssh-hosts.sh up DIR     -> DIR/ssh_config, DIR/id_ed25519, DIR/hosts
#   tests/cluster/ssh-hosts.sh down DIR
#
# Hosts: 10.231.0.1 and 10.231.0.2 (namespaces dshost-a, dshost-b); this machine is
# 10.231.0.254 on bridge dshost-br. Needs root (ip netns, sshd).
set -eu
action=$1
dir=$2
subnet=10.231.0
names="a b"

# Ends every process in the namespaces (sshd, and anything a test left), then the network.
down() {
  for n in $names; do
    pids=$(ip netns pids "dshost-$n" 2>/dev/null || true)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    ip netns del "dshost-$n" 2>/dev/null || true
    ip link del "dshost-v$n" 2>/dev/null || true
  done
  ip link del dshost-br 2>/dev/null || true
}

up() {
  down
  mkdir -p "$dir" /run/sshd
  rm -f "$dir/host_key" "$dir/id_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C dshost-test-host -f "$dir/host_key"
  ssh-keygen -q -t ed25519 -N '' -C dshost-test-client -f "$dir/id_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys"
  : > "$dir/known_hosts"
  : > "$dir/hosts"
  ip link add dshost-br type bridge
  ip addr add "$subnet.254/24" dev dshost-br
  ip link set dshost-br up
  i=1
  for n in $names; do
    addr="$subnet.$i"
    ip netns add "dshost-$n"
    ip link add "dshost-v$n" type veth peer name eth0 netns "dshost-$n"
    ip link set "dshost-v$n" master dshost-br up
    ip -n "dshost-$n" addr add "$addr/24" dev eth0
    ip -n "dshost-$n" link set eth0 up
    ip -n "dshost-$n" link set lo up
    cat > "$dir/sshd-$n.conf" <<EOF
ListenAddress $addr
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd-$n.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
EOF
    ip netns exec "dshost-$n" /usr/sbin/sshd -f "$dir/sshd-$n.conf" -E "$dir/sshd-$n.log" </dev/null >/dev/null 2>&1
    echo "$addr $(cut -d' ' -f1,2 "$dir/host_key.pub")" >> "$dir/known_hosts"
    echo "$addr" >> "$dir/hosts"
    i=$((i + 1))
  done
  cat > "$dir/ssh_config" <<EOF
Host *
  User root
  IdentityFile $dir/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  StrictHostKeyChecking yes
  LogLevel ERROR
EOF
  for addr in $(cat "$dir/hosts"); do  # sshd is up when a login works
    tries=0
    until ssh -F "$dir/ssh_config" -o BatchMode=yes -o ConnectTimeout=2 "$addr" true 2>/dev/null; do
      tries=$((tries + 1))
      [ $tries -lt 50 ] || { echo "sshd on $addr did not come up; see $dir/sshd-*.log" >&2; exit 1; }
      sleep 0.1
    done
  done
}

case $action in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down DIR" >&2; exit 2 ;;
esac
