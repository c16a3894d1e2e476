#!/usr/bin/env bash
# Single-node SLURM cluster for integration tests (Debian, run as root).
#
#   bash tests/cluster/slurm.sh up      # install (if missing), configure, start; idempotent
#   bash tests/cluster/slurm.sh down    # stop only the daemons this script started
#   bash tests/cluster/slurm.sh status  # sinfo / squeue / sacct health
#
# Brings up munged, MariaDB, slurmdbd (accounting, needed by `sacct`, which
# submitit uses to read job states), slurmctld and slurmd on this host, with
# one partition `debug`. No systemd needed: every daemon is started directly.
# Which daemons this script started (and their PIDs) is recorded in
# $MMA_SLURM_STATE_DIR/started, so `down` leaves alone what it did not start.
set -uo pipefail

CLUSTER="${MMA_SLURM_CLUSTER:-mma}"
PARTITION="${MMA_SLURM_PARTITION:-debug}"
STATE_DIR="${MMA_SLURM_STATE_DIR:-/run/mma-slurm}"
STARTED="$STATE_DIR/started"
WAIT_S="${MMA_SLURM_WAIT_S:-90}"
# optional: job credential lifetime in s; also the delay before a requeued
# job may start again (Slurm default 120)
# MMA_SLURM_CRED_EXPIRE=

ETC=/etc/slurm
LOG=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid
MYSQL_PID=/run/mysqld/mysqld.pid
MYSQL_SOCK=/run/mysqld/mysqld.sock
MYSQL_LOG=/var/log/mysql/mma-mariadbd.log
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS="${MMA_SLURM_DB_PASS:-mma-slurm-local}"

NODE="$(hostname -s)"
T0=$SECONDS
STARTED_NOW=""
CONFIG_CHANGED=""

say() { printf '[slurm.sh %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() {
    printf '[slurm.sh] ERROR: %s\n' "$1" >&2
    local f
    for f in "${@:2}"; do
        if [ -f "$f" ]; then
            printf -- '--- last lines of %s ---\n' "$f" >&2
            tail -n 25 "$f" >&2
        fi
    done
    exit 1
}

# --- process bookkeeping -----------------------------------------------------

# alive PID NAME: PID exists and its command name is NAME
alive() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

pid_from_file() { [ -r "$1" ] && tr -dc '0-9' <"$1"; }

pidfile_of() {
    case "$1" in
    munged) echo "$MUNGE_PID" ;;
    mariadbd) echo "$MYSQL_PID" ;;
    slurmdbd) echo "$DBD_PID" ;;
    slurmctld) echo "$CTLD_PID" ;;
    slurmd) echo "$SLURMD_PID" ;;
    esac
}

# running NAME: pid of a running process with that exact command name, if
# any (the one in its pid file when that is alive)
running() {
    local p
    p="$(pid_from_file "$(pidfile_of "$1")" 2>/dev/null)"
    if alive "$p" "$1"; then echo "$p"; else pgrep -x "$1" 2>/dev/null | head -n 1; fi
}

record() { # record NAME PID
    mkdir -p "$STATE_DIR"
    grep -v "^$1 " "$STARTED" 2>/dev/null >"$STARTED.tmp" || true
    echo "$1 $2" >>"$STARTED.tmp"
    mv "$STARTED.tmp" "$STARTED"
}

unrecord() {
    [ -f "$STARTED" ] || return 0
    grep -v "^$1 " "$STARTED" >"$STARTED.tmp" || true
    mv "$STARTED.tmp" "$STARTED"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
wait_for() {
    local limit=$1 what=$2 end=$((SECONDS + $1))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $end ]; then
            return 1
        fi
        sleep 1
    done
    return 0
}

# --- install -------------------------------------------------------------------

install_packages() {
    local missing=() p
    for p in slurm-wlm slurmdbd munge mariadb-server; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    : >/tmp/mma-slurm-apt.log
    # package lists may be absent or stale on a fresh machine
    if [ -n "${MMA_SLURM_APT_UPDATE:-}" ] || ! apt-cache policy "${missing[@]}" 2>/dev/null | grep -q 'Candidate: [0-9]' ||
        apt-cache policy "${missing[@]}" 2>/dev/null | grep -q 'Candidate: (none)'; then
        say "apt-get update"
        apt-get update -q >/tmp/mma-slurm-apt.log 2>&1 || die "apt-get update failed" /tmp/mma-slurm-apt.log
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/mma-slurm-apt.log 2>&1 ||
        die "apt-get install ${missing[*]} failed" /tmp/mma-slurm-apt.log
}

# --- configuration -------------------------------------------------------------

ensure_hosts() {
    if ! getent hosts "$NODE" >/dev/null 2>&1; then
        say "adding $NODE to /etc/hosts"
        echo "127.0.0.1 $NODE" >>/etc/hosts
    fi
}

# install_file MODE OWNER DEST < content ; prints "changed" if DEST changed
install_file() {
    local mode=$1 owner=$2 dest=$3 tmp
    tmp="$(mktemp)"
    cat >"$tmp"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
    else
        install -m "$mode" -o "$owner" -g "$owner" "$tmp" "$dest"
        rm -f "$tmp"
        echo changed
    fi
    chmod "$mode" "$dest"
    chown "$owner:$owner" "$dest"
}

write_configs() {
    local cpus mem_mb real_mb changed="" auth_info=""
    if [ -n "${MMA_SLURM_CRED_EXPIRE:-}" ]; then
        auth_info="AuthInfo=cred_expire=${MMA_SLURM_CRED_EXPIRE}
"
    fi
    cpus="$(nproc)"
    mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
    # leave ~5% (at least 512 MiB) for the OS: slurmd drains a node whose
    # RealMemory is above what it measures.
    real_mb=$((mem_mb - (mem_mb / 20 > 512 ? mem_mb / 20 : 512)))
    [ "$real_mb" -lt 256 ] && real_mb=256

    mkdir -p "$ETC" "$LOG" "$CTLD_SPOOL" "$SLURMD_SPOOL" /var/log/mysql

    changed+="$(install_file 644 root "$ETC/slurm.conf" <<EOF
# Generated by tests/cluster/slurm.sh for a single-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmdSpoolDir=$SLURMD_SPOOL
StateSaveLocation=$CTLD_SPOOL
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: works in containers without cgroup delegation
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# scheduling: fast (main loop every 2 s, so jobs whose BeginTime passes start
# promptly), simple, CPUs only (no memory tracking so jobs without
# --mem do not each claim the whole node)
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
PriorityType=priority/basic
# requeue support (preemption / node failure / scontrol requeue). A requeued
# job becomes eligible only after cred_expire+1 s (default 121 s) unless its
# StartTime is updated: scontrol update jobid=ID StartTime=now
JobRequeue=1
${auth_info}ReturnToService=2
# finished jobs leave squeue after MinJobAge seconds; sacct keeps them
MinJobAge=10
KillWait=1
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
# accounting through slurmdbd (sacct)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)"
    # Slurm 22.05 slurmd always loads a cgroup plugin (CgroupPlugin=disabled
    # only exists from 23.x) even with proctrack/linuxproc + task/none;
    # autodetect finds v1 or v2 and only reads it. IgnoreSystemd: no systemd.
    changed+="$(install_file 644 root "$ETC/cgroup.conf" <<EOF
# Generated by tests/cluster/slurm.sh (no cgroup enforcement is used).
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF
)"
    changed+="$(install_file 600 root "$ETC/slurmdbd.conf" <<EOF
# Generated by tests/cluster/slurm.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$DBD_PID
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF
)"
    CONFIG_CHANGED="$changed"
}

# --- daemons ---------------------------------------------------------------------

start_munge() {
    local pid
    install -d -m 0755 -o munge -g munge /run/munge
    install -d -m 0700 -o munge -g munge /etc/munge /var/log/munge
    install -d -m 0711 -o munge -g munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating munge key"
        if command -v mungekey >/dev/null 2>&1; then
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key ||
                dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    pid="$(running munged)"
    if [ -n "$pid" ]; then
        say "munged already running (pid $pid)"
    else
        say "starting munged"
        rm -f /run/munge/munge.socket.2.lock
        runuser -u munge -- /usr/sbin/munged --force >/dev/null 2>&1 ||
            die "munged did not start" /var/log/munge/munged.log
        wait_for 15 munged test -s "$MUNGE_PID" || die "munged wrote no pid file" /var/log/munge/munged.log
        pid="$(pid_from_file "$MUNGE_PID")"
        record munged "$pid"
    fi
    wait_for 15 munge sh -c 'munge -n | unmunge' || die "munge credential round-trip fails" /var/log/munge/munged.log
}

mysql_ok() { mariadb-admin --socket="$MYSQL_SOCK" ping 2>/dev/null | grep -q alive; }

start_mariadb() {
    local pid
    install -d -m 0755 -o mysql -g mysql /run/mysqld /var/log/mysql
    if [ ! -d /var/lib/mysql/mysql ]; then
        say "initialising MariaDB data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$MYSQL_LOG" 2>&1 ||
            die "mariadb-install-db failed" "$MYSQL_LOG"
    fi
    pid="$(running mariadbd)"
    [ -z "$pid" ] && pid="$(running mysqld)"
    if [ -n "$pid" ]; then
        say "MariaDB already running (pid $pid)"
    else
        say "starting MariaDB"
        setsid /usr/sbin/mariadbd --user=mysql --pid-file="$MYSQL_PID" --socket="$MYSQL_SOCK" \
            </dev/null >>"$MYSQL_LOG" 2>&1 &
        pid=$!
        record mariadbd "$pid"
    fi
    wait_for 60 mariadb mysql_ok || die "MariaDB does not answer" "$MYSQL_LOG"
    mariadb --socket="$MYSQL_SOCK" -u root >>"$MYSQL_LOG" 2>&1 <<EOF || die "could not create the accounting database/user" "$MYSQL_LOG"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

# start_slurm_daemon NAME PIDFILE LOGFILE: start a self-daemonising Slurm daemon
start_slurm_daemon() {
    local name=$1 pidfile=$2 logfile=$3 pid
    pid="$(running "$name")"
    if [ -n "$pid" ]; then
        say "$name already running (pid $pid)"
        return 0
    fi
    say "starting $name"
    "/usr/sbin/$name" </dev/null >>"$logfile" 2>&1 || die "$name failed to start" "$logfile"
    wait_for 15 "$name" sh -c "p=\$(tr -dc 0-9 <'$pidfile' 2>/dev/null); [ -n \"\$p\" ] && [ \"\$(cat /proc/\$p/comm 2>/dev/null)\" = '$name' ]" ||
        die "$name is not running" "$logfile"
    pid="$(pid_from_file "$pidfile")"
    record "$name" "$pid"
    STARTED_NOW+=" $name "
}

dbd_ok() { sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }
cluster_registered() { sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; }
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }
sacct_ok() { sacct -n -X -S now-1hours -o jobid >/dev/null 2>&1; }

wait_node_idle() {
    local end=$((SECONDS + WAIT_S)) st resumed=0
    while :; do
        st="$(node_state)"
        case "$st" in
        idle | mixed | allocated | completing) return 0 ;;
        down* | drain* | fail*)
            if [ $resumed -eq 0 ] || [ $((SECONDS % 10)) -eq 0 ]; then
                scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 && resumed=1
            fi
            ;;
        esac
        if [ $SECONDS -ge $end ]; then
            echo "node state: '${st:-?}'" >&2
            scontrol show node "$NODE" >&2 2>/dev/null
            return 1
        fi
        sleep 1
    done
}

cmd_up() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    say "bringing up single-node SLURM cluster '$CLUSTER' on $NODE"
    install_packages
    ensure_hosts
    write_configs
    start_munge
    start_mariadb
    start_slurm_daemon slurmdbd "$DBD_PID" "$LOG/slurmdbd.log"
    wait_for 60 slurmdbd dbd_ok || die "slurmdbd does not answer sacctmgr" "$LOG/slurmdbd.log"
    if ! cluster_registered; then
        say "registering cluster '$CLUSTER' in accounting"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || cluster_registered ||
            die "sacctmgr add cluster $CLUSTER failed" "$LOG/slurmdbd.log"
    fi
    start_slurm_daemon slurmctld "$CTLD_PID" "$LOG/slurmctld.log"
    wait_for 60 slurmctld ctld_ok || die "slurmctld does not answer 'scontrol ping'" "$LOG/slurmctld.log"
    if [ -n "$CONFIG_CHANGED" ] && [[ "$STARTED_NOW" != *" slurmctld "* ]]; then
        say "configuration changed: scontrol reconfigure"
        scontrol reconfigure >/dev/null 2>&1 || true
    fi
    start_slurm_daemon slurmd "$SLURMD_PID" "$LOG/slurmd.log"
    say "waiting for node $NODE to be idle"
    wait_node_idle || die "node $NODE did not become idle" "$LOG/slurmd.log" "$LOG/slurmctld.log"
    wait_for 60 sacct sacct_ok || die "sacct does not answer" "$LOG/slurmdbd.log"
    say "cluster up: partition '$PARTITION', node $NODE ($(sinfo -h -n "$NODE" -o '%c CPUs, %m MB, %T'))"
}

# stop NAME: stop the daemon if (and only if) this script started it
stop_one() {
    local name=$1 pid end
    pid="$(awk -v n="$name" '$1 == n {print $2}' "$STARTED" 2>/dev/null | tail -n 1)"
    if [ -z "$pid" ]; then
        if [ -n "$(running "$name")" ]; then
            say "$name: not started by this script, leaving it running"
        fi
        return 0
    fi
    if ! alive "$pid" "$name"; then
        say "$name (pid $pid) already gone"
        unrecord "$name"
        return 0
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    end=$((SECONDS + 30))
    while alive "$pid" "$name" && [ $SECONDS -lt $end ]; do sleep 0.5; done
    if alive "$pid" "$name"; then
        say "$name did not stop on SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 1
    fi
    unrecord "$name"
}

cmd_down() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    local n
    for n in slurmd slurmctld slurmdbd mariadbd munged; do
        stop_one "$n"
    done
    [ -f "$STARTED" ] && [ ! -s "$STARTED" ] && rm -f "$STARTED"
    say "down"
}

cmd_status() {
    local rc=0 n pid
    for n in munged mariadbd slurmdbd slurmctld slurmd; do
        pid="$(running "$n")"
        if [ -n "$pid" ]; then
            if grep -q "^$n $pid\$" "$STARTED" 2>/dev/null; then
                echo "$n: running (pid $pid, started by slurm.sh)"
            else
                echo "$n: running (pid $pid)"
            fi
        else
            echo "$n: not running"
            rc=1
        fi
    done
    echo "--- sinfo"
    sinfo 2>&1 || rc=1
    echo "--- squeue"
    squeue 2>&1 || rc=1
    echo "--- sacct (last hour)"
    sacct -X -S now-1hours -o jobid,jobname%20,state,exitcode,elapsed 2>&1 | tail -n 15
    sacct_ok || rc=1
    [ "$(node_state)" = idle ] || [ "$(node_state)" = mixed ] || [ "$(node_state)" = allocated ] || rc=1
    if [ $rc -eq 0 ]; then echo "status: healthy"; else echo "status: NOT healthy"; fi
    return $rc
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
