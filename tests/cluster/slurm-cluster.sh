#!/bin/sh
# A real single-node Slurm cluster for the slurm launcher's tests: munged, slurmctld and
# slurmd from Debian's packages, configured for this machine under DIR.
#
#   tests/cluster/slurm-cluster.sh up DIR     -> DIR/slurm.conf (export SLURM_CONF=DIR/slurm.conf)
#   tests/cluster/slurm-cluster.sh down DIR
#
# The node is this machine (its hostname, all its CPUs and memory); the partition "debug"
# is the default. Ports 16817/16818 keep it apart from a cluster the machine may run.
# Needs root (the daemons run as root, as the test does).
set -eu
action=$1
dir=$(realpath -m "$2")

# Cancels every job first: the daemons' end would leave a running job's processes behind.
down() {
  if [ -f "$dir/run/slurmctld.pid" ]; then
    export SLURM_CONF="$dir/slurm.conf"
    scancel --user="$(id -un)" 2>/dev/null || true
    tries=0
    while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ $tries -lt 50 ]; do
      tries=$((tries + 1))
      sleep 0.2
    done
  fi
  for d in slurmd slurmctld munged; do
    [ -f "$dir/run/$d.pid" ] && kill "$(cat "$dir/run/$d.pid")" 2>/dev/null || true
  done
  sleep 0.5
  for d in slurmd slurmctld munged; do
    [ -f "$dir/run/$d.pid" ] && kill -9 "$(cat "$dir/run/$d.pid")" 2>/dev/null || true
    rm -f "$dir/run/$d.pid"
  done
}

up() {
  down
  for port in 16817 16818; do
    if ss -Hltn "sport = :$port" | grep -q .; then
      echo "port $port is taken: $(ss -Hltnp "sport = :$port" | sed 's/.*users://')" \
        "(a Slurm daemon left by an earlier run? stop it first)" >&2
      exit 1
    fi
  done
  node=$(hostname -s)
  if ! getent hosts "$node" >/dev/null; then  # MASTER_ADDR is the node's name, as on clusters
    echo "this machine's name '$node' does not resolve; add it to /etc/hosts" >&2
    exit 1
  fi
  # slurmd's step sockets are SPOOL/NODE_JOB.STEP; a longer path than a socket can have
  # makes every job "launch failed requeued held".
  longest_socket="$dir/spool/${node}_4294967294.4294967294"
  if [ ${#longest_socket} -gt 107 ]; then
    echo "$dir is too long a directory for Slurm's sockets (${#longest_socket} > 107 bytes)" >&2
    exit 1
  fi
  cpus=$(nproc)
  memory_mb=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  rm -rf "$dir/state" "$dir/spool"  # no job of an earlier cluster comes back
  mkdir -p "$dir/run" "$dir/log" "$dir/state" "$dir/spool"
  chmod 755 "$dir" "$dir/run"
  dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 2>/dev/null
  chmod 600 "$dir/munge.key"
  munged --force --socket="$dir/run/munge.sock" --key-file="$dir/munge.key" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/run/munged.seed" </dev/null >/dev/null 2>&1
  cat > "$dir/slurm.conf" <<EOF
ClusterName=dshost-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/run/munge.sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  export SLURM_CONF="$dir/slurm.conf"
  # Daemons keep the descriptors they start with: none of ours, or a caller reading this
  # script's output would wait for them.
  slurmctld -f "$SLURM_CONF" -i </dev/null >/dev/null 2>&1
  slurmd -f "$SLURM_CONF" -N "$node" </dev/null >/dev/null 2>&1
  tries=0
  until sinfo -h -N -o %t 2>/dev/null | grep -q idle; do
    tries=$((tries + 1))
    [ $tries -lt 100 ] || { echo "the Slurm node did not come up; see $dir/log/" >&2; exit 1; }
    sleep 0.2
  done
}

case $action in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down DIR" >&2; exit 2 ;;
esac
