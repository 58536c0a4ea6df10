#!/usr/bin/env bash
# cluster.sh - a real, throw-away SLURM cluster on this one machine, for the tests and CI.
#
#   tests/slurm/cluster.sh start    install (apt-get) and start munge, slurmctld and N slurmd;
#                                   wait until every node is idle. Idempotent.
#   tests/slurm/cluster.sh stop     cancel jobs, stop the daemons (by pid file), keep the state
#   tests/slurm/cluster.sh purge    stop and delete the cluster directory
#   tests/slurm/cluster.sh env      print the environment clients need (eval "$(... env)")
#
# Debian's SLURM 22.05 as root, no systemd. Each emulated node is one `slurmd -N nodeX` with its
# own port, spool and TmpFS, in its own UTS namespace so its tasks see hostname nodeX.
# Knobs: MNIST_HPC_SLURM_DIR (default /tmp/mnist-hpc-slurm), MNIST_HPC_SLURM_NODES (default 2),
#        MNIST_HPC_SLURM_CPUS (CPUs per node, default nproc), MNIST_HPC_SLURM_PORT (default 6917).
#
# Pitfalls this script handles (learned on this kind of machine):
#  - Debian's Open MPI works under srun only with --mpi=pmix (pmi2: "OMPI was not built with
#    SLURM's PMI support"), hence MpiDefault=pmix.
#  - Two step daemons on one host collide on /tmp/spmix_appdir_*: per-node TmpFS fixes it.
#  - `scontrol requeue` waits for the credential lifetime (~121 s by default): cred_expire=10.
#  - saved controller state can show a node idle before its slurmd is up: wait until each node's
#    SlurmdStartTime is newer than this start.
#  - accounting_storage/none disables sacct: jobcomp/filetxt + a `sacct -c` shim first on PATH
#    lets submitit (and users) see COMPLETED/FAILED/CANCELLED/TIMEOUT of finished jobs.
#  - --signal=B:USR1@N may arrive up to a minute early: SLURM checks once a minute.
set -euo pipefail

DIR=${MNIST_HPC_SLURM_DIR:-/tmp/mnist-hpc-slurm}
NODES=${MNIST_HPC_SLURM_NODES:-2}
CPUS=${MNIST_HPC_SLURM_CPUS:-$(nproc)}
PORT=${MNIST_HPC_SLURM_PORT:-6917}
CONF=$DIR/etc/slurm.conf
RUN=$DIR/run
LOG=$DIR/log
SETTINGS="nodes=$NODES cpus=$CPUS port=$PORT"
export SLURM_CONF=$CONF
say() { echo "[slurm-cluster] $*"; }

node_names() { seq -f 'node%g' 1 "$NODES"; }

# is_running PIDFILE: the process exists and is not a zombie
is_running() {
  local state
  [ -s "$1" ] && state=$(ps -o stat= -p "$(cat "$1")" 2>/dev/null) && [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

idle_nodes_since() {  # count nodes IDLE whose slurmd started at or after $1
  { scontrol show node -o 2>/dev/null || true; } | awk -v since="$1" '{
      state = ""; started = ""
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^State=/) state = substr($i, 7)
        if ($i ~ /^SlurmdStartTime=/) started = substr($i, 17)
      }
      if (state == "IDLE" && started >= since) n++
    } END { print n + 0 }'
}

healthy() {
  [ "$(cat "$DIR/settings" 2>/dev/null)" = "$SETTINGS" ] || return 1
  is_running "$RUN/munged.pid" && is_running "$RUN/slurmctld.pid" || return 1
  local node
  for node in $(node_names); do is_running "$RUN/slurmd-$node.pid" || return 1; done
  [ "$(sinfo -h -N -o '%T' 2>/dev/null | grep -cE '^(idle|mixed|allocated|completing)')" -ge "$NODES" ]
}

install_packages() {
  local missing=() pkg
  for pkg in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_config() {
  local memory i=0 node
  memory=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
  cat > "$CONF" <<EOF
# written by tests/slurm/cluster.sh ($SETTINGS)
ClusterName=mnisthpc
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$RUN/munge.socket,cred_expire=10
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
TmpFS=$DIR/tmp/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=5
MpiDefault=pmix
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
EOF
  for node in $(node_names); do
    i=$((i + 1))
    echo "NodeName=$node NodeAddr=127.0.0.1 Port=$((PORT + 10 + i)) CPUs=$CPUS RealMemory=$memory State=UNKNOWN" >> "$CONF"
  done
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >> "$CONF"
}

start() {
  [ "$(id -u)" = 0 ] || { echo "cluster.sh: must run as root (slurmd runs as root)" >&2; exit 1; }
  install_packages
  if healthy; then say "already running ($SETTINGS)"; return; fi
  stop >/dev/null 2>&1 || true
  # a throw-away cluster: no jobs recovered from an earlier start, and no job-completion records of
  # one (job ids restart at 1, and submitit would read an old job's state for a new job of that id)
  rm -rf "$DIR/state" "$DIR/spool" "$LOG/jobcomp.txt"
  mkdir -p "$DIR/etc" "$RUN" "$LOG" "$DIR/state" "$DIR/bin" "$DIR/munge"
  chmod 700 "$DIR/munge"
  local node
  for node in $(node_names); do mkdir -p "$DIR/spool/$node" "$DIR/tmp/$node"; done
  [ -s "$DIR/munge/munge.key" ] || { head -c 1024 /dev/urandom > "$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"; }
  munged --force --socket="$RUN/munge.socket" --key-file="$DIR/munge/munge.key" --pid-file="$RUN/munged.pid" \
    --log-file="$LOG/munged.log" --seed-file="$DIR/munge/munged.seed"
  write_config
  # sacct reads the job-completion log (finished jobs only), which is what submitit asks for
  printf '#!/bin/sh\nexec /usr/bin/sacct -c "$@"\n' > "$DIR/bin/sacct"
  chmod 755 "$DIR/bin/sacct"
  local since
  since=$(date '+%Y-%m-%dT%H:%M:%S')
  slurmctld -i
  for node in $(node_names); do
    unshare --uts sh -c "hostname '$node' && exec slurmd -N '$node'"
  done
  for _ in $(seq 300); do
    [ "$(idle_nodes_since "$since")" -ge "$NODES" ] && break
    sleep 0.2
  done
  if [ "$(idle_nodes_since "$since")" -lt "$NODES" ]; then
    echo "cluster.sh: nodes did not become idle" >&2
    sinfo -N >&2 || true
    tail -n 20 "$LOG"/slurmctld.log "$LOG"/slurmd-*.log >&2 || true
    exit 1
  fi
  echo "$SETTINGS" > "$DIR/settings"
  say "up: $NODES nodes idle ($SETTINGS); clients: eval \"\$(tests/slurm/cluster.sh env)\""
}

stop_daemon() {  # PIDFILE NAME: TERM, wait up to 10 s, then KILL; only if the pid is still NAME
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  if is_running "$1" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then
    kill -TERM "$pid"
    for _ in $(seq 100); do is_running "$1" || break; sleep 0.1; done
    is_running "$1" && kill -KILL "$pid"
  fi
  rm -f "$1"
}

stop() {
  if is_running "$RUN/slurmctld.pid"; then
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 75); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  local pidfile
  for pidfile in "$RUN"/slurmd-*.pid; do [ -e "$pidfile" ] && stop_daemon "$pidfile" slurmd; done
  stop_daemon "$RUN/slurmctld.pid" slurmctld
  stop_daemon "$RUN/munged.pid" munged
  rm -f "$DIR/settings"
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  purge) stop; rm -rf "$DIR" ;;
  env) echo "export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH" ;;
  *) echo "usage: $0 start|stop|purge|env" >&2; exit 2 ;;
esac
