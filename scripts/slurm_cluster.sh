#!/usr/bin/env bash
# A single-node Slurm cluster with accounting on this machine: what the test suite runs gdexp's
# Slurm tests on, and a way to try `hydra/launcher=slurm` without a cluster.
#
#   sudo scripts/slurm_cluster.sh start [DIR]   # install (apt) if needed, start; prints SLURM_CONF
#   export SLURM_CONF=DIR/slurm.conf            # then sbatch, sinfo, sacct and gdexp use it
#   sudo scripts/slurm_cluster.sh stop [DIR]
#
# DIR (default /tmp/gdexp-slurm) holds everything the cluster writes: slurm.conf, slurmdbd.conf,
# the MariaDB database that slurmdbd keeps the accounting in, the daemons' state, logs and pids.
# munged is the machine's own (it uses /etc/munge/munge.key); it is started if it is not running.
# Every daemon listens on a free port of 127.0.0.1, picked at the first start and kept in DIR
# (ports.env), so clusters in two DIRs run side by side, and beside a Slurm the machine already runs.
#
# Why accounting: submitit learns that a job ended (CANCELLED, FAILED, TIMEOUT) from `sacct`.
# Without slurmdbd, `sacct` fails and a cancelled job looks pending forever.
set -euo pipefail

action=${1:?usage: slurm_cluster.sh start|stop|status [DIR]}
S=${2:-/tmp/gdexp-slurm}
export SLURM_CONF=$S/slurm.conf
KILL_WAIT=${GDEXP_SLURM_KILLWAIT:-10}  # seconds between a cancelled job's SIGTERM and SIGKILL
DB_PASS=gdexp-slurm-local              # the local slurm user's password (MariaDB on 127.0.0.1 only)

say() { echo "slurm_cluster: $*" >&2; }
die() { say "$*"; exit 1; }

install_packages() {
    local need=()
    for b in slurmctld slurmd slurmdbd sbatch munged mariadbd; do
        command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || need+=("$b")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${need[*]}; install as root: apt-get install slurmctld slurmd slurmdbd slurm-client munge mariadb-server"
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
    say "installing slurmctld slurmd slurmdbd slurm-client munge mariadb-server (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurmdbd slurm-client munge mariadb-server \
        >"$S/apt.log" 2>&1 || { apt-get update -q >>"$S/apt.log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurmdbd slurm-client munge mariadb-server \
            >>"$S/apt.log" 2>&1; } || die "apt-get install failed; see $S/apt.log"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local t=$1 what=$2; shift 2
    for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "$what did not come up in ${t} s (logs in $S)"
}

start_munge() {
    # A munged that answers is the machine's own (apt's postinst may have started it): use it.
    munge -n </dev/null >/dev/null 2>&1 && return 0
    [ -f /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || /usr/sbin/mungekey --create; chown munge:munge /etc/munge/munge.key; }
    install -d -o munge -g munge -m 0755 /run/munge
    # One that holds the socket but is still starting makes this one fail to lock it: then the
    # running one is waited for like a new one.
    runuser -u munge -- /usr/sbin/munged 2>"$S/munged.err" || say "munged: $(cat "$S/munged.err"); waiting for the one running"
    wait_for 10 munged munge -n
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pick_ports() {  # the cluster's ports: kept from its first start (its conf and its jobs name them)
    if [ ! -f "$S/ports.env" ]; then
        echo "CTLD_PORT=$(free_port) SLURMD_PORT=$(free_port) DBD_PORT=$(free_port)" >"$S/ports.env"
    fi
    # shellcheck disable=SC1091
    . "$S/ports.env"
}

start_mariadb() {
    local port
    if [ ! -d "$S/mysql/mysql" ]; then
        mariadb-install-db --no-defaults --user=root --datadir="$S/mysql" --auth-root-authentication-method=socket \
            >"$S/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $S/mariadb-install.log"
    fi
    port=$(free_port)
    echo "$port" >"$S/mariadb.port"
    (mariadbd --no-defaults --user=root --datadir="$S/mysql" --socket="$S/mariadb.sock" --port="$port" \
        --bind-address=127.0.0.1 --pid-file="$S/mariadb.pid" --log-error="$S/mariadb.log" \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &)
    wait_for 30 MariaDB mariadb --no-defaults --socket="$S/mariadb.sock" -uroot -e 'select 1'
    mariadb --no-defaults --socket="$S/mariadb.sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc --all)
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512))
    mkdir -p "$S/ctld" "$S/d" "$S/jobs"
    cat >"$S/slurm.conf" <<CONF
ClusterName=gdexp
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AccountingStoragePort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
KillWait=$KILL_WAIT
JobRequeue=1
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/d
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    cat >"$S/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$S/slurmdbd.log
PidFile=$S/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$(cat "$S/mariadb.port")
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$S/slurmdbd.conf"
}

stop_pid() {  # stop_pid FILE: TERM, then KILL after 10 s
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

case $action in
start)
    mkdir -p "$S"
    install_packages
    if [ -f "$S/slurmctld.pid" ] && kill -0 "$(cat "$S/slurmctld.pid")" 2>/dev/null && sinfo >/dev/null 2>&1; then
        say "already running"; echo "export SLURM_CONF=$SLURM_CONF"; exit 0
    fi
    start_munge
    pick_ports
    start_mariadb
    write_conf
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster gdexp >/dev/null 2>&1 || true
    slurmctld
    slurmd
    wait_for 30 "the node" bash -c "sinfo -h -o %t | grep -qx idle"
    wait_for 30 sacct sacct -n -X
    say "up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t'), slurmctld on 127.0.0.1:$CTLD_PORT, accounting in MariaDB on 127.0.0.1:$(cat "$S/mariadb.port")"
    echo "export SLURM_CONF=$SLURM_CONF"
    ;;
stop)
    scancel --full --signal=KILL --user="$(id -un)" >/dev/null 2>&1 || true
    stop_pid "$S/slurmd.pid"
    stop_pid "$S/slurmctld.pid"
    stop_pid "$S/slurmdbd.pid"
    stop_pid "$S/mariadb.pid"
    say "stopped (munged left running)"
    ;;
status)
    sinfo && sacct -n -X | tail -5
    ;;
*) die "usage: slurm_cluster.sh start|stop|status [DIR]" ;;
esac
